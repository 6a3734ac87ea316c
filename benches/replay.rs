//! Replay throughput with the default rules, beside the parse-only baseline measured in
//! the same run: deserialize each line into a borrowed struct, parse `ts`, touch one
//! hash-map entry (the least work any implementation must do).
//!
//! `cargo bench --bench replay` (set VERDICT_BENCH_CONVERSATIONS to change the size).
//!
//! `VERDICT_BENCH_ALTERNATE=N cargo bench --bench replay` instead runs them N times
//! each, alternately, and prints the quickest of each and their ratios: on a shared
//! machine, load that comes and goes then weighs on all alike. `replay_with_invoices`
//! is the replay with the ledger rating every verdict and every invoice computed at the
//! end, as `verdict replay` and `verdict invoice` run; `replay_with_margins` adds the
//! model costs of every `llm.call` kept for the margin view, as the service keeps them.

use std::borrow::Cow;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, Criterion, Throughput};
use serde::Deserialize;
use serde_json::value::RawValue;
use verdict::engine::{Engine, EngineConfig};
use verdict::gen::{generate, GenConfig};
use verdict::replay::{Pipeline, Position, DRAIN_EVERY};
use verdict::rules::{sandbox, RuleSet};

/// The allocator of the `verdict` binary, so the figures are the binary's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
struct Borrowed<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    conversation: Cow<'a, str>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow, default)]
    attrs: Option<&'a RawValue>,
}

fn input() -> Vec<u8> {
    let conversations =
        std::env::var("VERDICT_BENCH_CONVERSATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let cfg = GenConfig {
        conversations,
        tenants: 50,
        seed: 7,
        start: "2026-06-12T00:00:00Z".into(),
        span: "24h".into(),
        jitter: "2s".into(),
        duplicates: 0.0,
        bad: 0.0,
    };
    let mut buf = Vec::new();
    generate(&cfg, &mut buf).expect("generate");
    buf
}

/// Lines found with memchr, as the replay reader finds them; shared by both benches.
fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', buf)
        .chain(std::iter::once(buf.len()))
        .map(move |end| {
            let line = &buf[start.min(end)..end];
            start = end + 1;
            line
        })
        .filter(|l| !l.is_empty())
}

/// The baseline: returns a checksum so nothing is optimised away.
fn parse_only(buf: &[u8]) -> u64 {
    let mut map: hashbrown::HashMap<String, u64> = hashbrown::HashMap::new();
    let mut sum = 0u64;
    for line in lines(buf) {
        let text = std::str::from_utf8(line).expect("utf8");
        let ev: Borrowed<'_> = serde_json::from_str(text).expect("parse");
        let ts = time::OffsetDateTime::parse(&ev.ts, &time::format_description::well_known::Rfc3339).expect("ts");
        let n = map.entry_ref(ev.conversation.as_ref()).or_insert(0);
        *n += 1;
        sum = sum.wrapping_add(ts.unix_timestamp() as u64 + ev.id.len() as u64 + ev.kind.len() as u64);
        sum = sum.wrapping_add(ev.tenant.len() as u64 + ev.attrs.map_or(0, |a| a.get().len() as u64));
    }
    sum + map.len() as u64
}

/// Verdict lines go to a buffer emptied whenever it passes 64 KiB, as the replay's
/// buffered writer does; returns the records and the bytes written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Invoices,
    /// Invoices and model costs, as the service runs.
    Margins,
}

fn replay(buf: &[u8], rhai: &Arc<rhai::Engine>, rules: &Arc<RuleSet>, mode: Mode) -> (u64, usize) {
    const FLUSH_AT: usize = 64 << 10;
    let drain_every =
        std::env::var("VERDICT_BENCH_DRAIN_EVERY").ok().and_then(|s| s.parse().ok()).unwrap_or(DRAIN_EVERY).max(1);
    let mut engine = Engine::new(EngineConfig::default(), rhai.clone(), rules.clone());
    if mode == Mode::Margins {
        engine.keep_margins(Default::default());
    }
    let mut p = if mode == Mode::Plain {
        Pipeline::new(engine, vec![])
    } else {
        Pipeline::billing(engine, vec![]).expect("a ledger in memory")
    };
    let mut out = Vec::with_capacity(2 * FLUSH_AT);
    let mut written = 0;
    let mut rejected = 0u64;
    let mut write = |v: &verdict::verdicts::Verdict| {
        v.write_json(&mut out);
        out.push(b'\n');
        if out.len() >= FLUSH_AT {
            written += black_box(&out).len();
            out.clear();
        }
    };
    for (i, line) in lines(buf).enumerate() {
        let at = Position { source: "bench", line: i as u64 + 1, offset: 0 };
        p.feed(line, line.len() as u64, false, None, at, &mut |_| rejected += 1);
        if at.line.is_multiple_of(drain_every) {
            p.drain(&mut write);
        }
    }
    p.finish(&mut write);
    assert_eq!(rejected, 0);
    if let (Some(ledger), Some(end)) = (&p.ledger, p.engine.watermark().max_ts()) {
        written += black_box(ledger.all_invoices(end).expect("invoices")).len();
    }
    (p.summary.records, written + out.len())
}

fn bench(c: &mut Criterion) {
    let buf = input();
    let events = lines(&buf).count() as u64;
    let rhai = Arc::new(sandbox::build(&Default::default()));
    let rules =
        Arc::new(RuleSet::load(&rhai, &Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).expect("rules load"));
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(events));
    g.sample_size(10);
    g.bench_function("parse_only_baseline", |b| b.iter(|| black_box(parse_only(black_box(&buf)))));
    for (name, mode) in [
        ("replay_default_rules", Mode::Plain),
        ("replay_with_invoices", Mode::Invoices),
        ("replay_with_margins", Mode::Margins),
    ] {
        g.bench_function(name, |b| b.iter(|| black_box(replay(black_box(&buf), &rhai, &rules, mode))));
    }
    g.finish();
}

/// The alternating comparison; see the module header.
fn alternate(rounds: u32) {
    let buf = input();
    let events = lines(&buf).count() as f64;
    let rhai = Arc::new(sandbox::build(&Default::default()));
    let rules =
        Arc::new(RuleSet::load(&rhai, &Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).expect("rules load"));
    let time = |f: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let (mut base, mut full, mut billed, mut margins) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let rounds = rounds.max(1);
    for _ in 0..rounds {
        base = base.min(time(&mut || {
            black_box(parse_only(black_box(&buf)));
        }));
        full = full.min(time(&mut || {
            black_box(replay(black_box(&buf), &rhai, &rules, Mode::Plain));
        }));
        billed = billed.min(time(&mut || {
            black_box(replay(black_box(&buf), &rhai, &rules, Mode::Invoices));
        }));
        margins = margins.min(time(&mut || {
            black_box(replay(black_box(&buf), &rhai, &rules, Mode::Margins));
        }));
    }
    println!(
        "{events} events, quickest of {rounds} alternate runs: parse_only_baseline {:.1} ms, \
         replay_default_rules {:.1} ms ({:.2} M events/s), ratio {:.2}; replay_with_invoices {:.1} ms \
         ({:.2} M events/s), {:+.1}% against the replay; replay_with_margins {:.1} ms, {:+.1}% against \
         the replay with invoices",
        base * 1e3,
        full * 1e3,
        events / full / 1e6,
        full / base,
        billed * 1e3,
        events / billed / 1e6,
        (billed / full - 1.0) * 100.0,
        margins * 1e3,
        (margins / billed - 1.0) * 100.0
    );
}

criterion_group!(benches, bench);

fn main() {
    if let Some(rounds) = std::env::var("VERDICT_BENCH_ALTERNATE").ok().and_then(|s| s.parse().ok()) {
        alternate(rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
