//! Memory per open conversation: a counting allocator measures what the engine holds
//! for N conversations that are all open (mid-conversation, nothing decided yet).
//!
//! `cargo bench --bench memory` (VERDICT_BENCH_OPEN sets N, default 200000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use verdict::engine::{Engine, EngineConfig};
use verdict::replay::{Pipeline, Position};
use verdict::rules::{sandbox, RuleSet};
use verdict::timestamp::{format_rfc3339, parse_rfc3339, NANOS_PER_MILLI};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// A typical conversation so far: started, a question, model and tool calls, an answer,
/// a second question and answer. Ids and keys shaped like `verdict gen`'s.
const SCRIPT: [(&str, &str); 8] = [
    ("conversation.started", r#","attrs":{"intent":"troubleshooting"}"#),
    ("message.customer", ""),
    ("llm.call", r#","attrs":{"model":"m-large","input_tokens":812,"output_tokens":164,"cost_usd":"0.0123"}"#),
    ("tool.called", r#","attrs":{"tool":"order_lookup","cost_usd":"0.002"}"#),
    ("message.ai", ""),
    ("message.customer", ""),
    ("llm.call", r#","attrs":{"model":"m-large","input_tokens":990,"output_tokens":120,"cost_usd":"0.0101"}"#),
    ("message.ai", ""),
];

fn main() {
    let n: u64 = std::env::var("VERDICT_BENCH_OPEN").ok().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let rhai = Arc::new(sandbox::build(&Default::default()));
    let rules = Arc::new(RuleSet::load(&rhai, &Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).expect("rules"));
    let base = parse_rfc3339("2026-06-12T00:00:00Z").expect("ts");

    let before = LIVE.load(Ordering::Relaxed);
    let mut p = Pipeline::new(Engine::new(EngineConfig::default(), rhai, rules), vec![]);
    let mut line = String::with_capacity(512);
    let mut k: u64 = 0;
    // Events of all conversations interleaved over one hour: every one stays open.
    for (step, (kind, attrs)) in SCRIPT.iter().enumerate() {
        for c in 0..n {
            k += 1;
            let ts = base + (step as i64 * n as i64 + c as i64) * (3_600_000 / (8 * n as i64)).max(1) * NANOS_PER_MILLI;
            line.clear();
            use std::fmt::Write;
            let _ = write!(
                line,
                r#"{{"id":"evt-{:016x}","type":"{kind}","tenant":"tenant-{:03}","conversation":"conv-{c:08}","ts":"{}"{attrs}}}"#,
                k.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                c % 50,
                format_rfc3339(ts)
            );
            let at = Position { source: "mem", line: k, offset: 0 };
            p.feed(line.as_bytes(), line.len() as u64, false, None, at, &mut |d| panic!("rejected: {}", d.error));
            p.drain(|_| panic!("nothing should be decided"));
        }
    }
    let report = p.engine.pending_report();
    let after = LIVE.load(Ordering::Relaxed);
    let held = after - before;
    assert_eq!(report.open_conversations, n);
    println!(
        "open conversations: {n}, events applied: {}, buffered: {}, engine heap: {} bytes, {:.0} bytes per open conversation",
        p.engine.stats().applied,
        report.buffered_events,
        held,
        held as f64 / n as f64
    );
    std::mem::drop(p);
}
