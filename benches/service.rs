//! End-to-end figures of `verdict run`, measured on the real binary over loopback:
//! HTTP ingest throughput, ingest-to-usage latency, reload time, restart time with many
//! open conversations, and, when a Fluvio cluster is reachable (`FLUVIO_SC_ADDR`),
//! Fluvio consume throughput and produce-to-verdict latency.
//!
//! `cargo bench --bench service` measures at full size; `cargo test --bench service`
//! runs every step at a tiny size, so CI keeps the harness working.
//! VERDICT_BENCH_OPEN sets the open conversations of the restart step (default 1000000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Service;
use serde_json::Value;

struct Size {
    http_events: u32,
    latency_samples: usize,
    reloads: usize,
    open: u64,
    fluvio_conversations: u32,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full {
        Size {
            http_events: 1_000_000,
            latency_samples: 300,
            reloads: 10,
            open: std::env::var("VERDICT_BENCH_OPEN").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000),
            fluvio_conversations: 50_000,
        }
    } else {
        Size { http_events: 5_000, latency_samples: 5, reloads: 2, open: 2_000, fluvio_conversations: 300 }
    };
    println!("verdict service benchmarks ({})", if full { "full size" } else { "test mode, tiny sizes" });
    http_ingest(size.http_events);
    ingest_to_usage(size.latency_samples);
    reload(size.reloads);
    restart(size.open);
    match std::env::var("FLUVIO_SC_ADDR") {
        Ok(addr) if !addr.is_empty() => {
            fluvio_consume(&addr, size.fluvio_conversations);
            fluvio_latency(&addr, size.latency_samples);
        }
        _ => println!("fluvio: SKIPPED (set FLUVIO_SC_ADDR to the SC of a running cluster)"),
    }
}

fn verdict(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict")).current_dir(common::root()).args(args).output().unwrap();
    assert!(out.status.success(), "verdict {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)", at(0.5), at(0.99), at(1.0), v.len())
}

/// Batched NDJSON bodies of 5,000 events from 4 concurrent clients.
fn http_ingest(events: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("gen.ndjson");
    let conversations = (events / 10).max(1).to_string();
    verdict(&["gen", "--conversations", &conversations, "--output", file.to_str().unwrap()]);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let bodies: Vec<String> = lines.chunks(5_000).map(|c| c.join("\n")).collect();
    // Four clients take the bodies in order from one queue, so the bodies in flight are
    // neighbours in the stream. The allowed lateness is set to the event-time spread of
    // any eight neighbouring bodies (near the stream's end, where events thin out, that
    // is hours), so every event is in time whichever client delivers first; each answer
    // must say so.
    let spread = bodies_spread(&lines, 5_000, 8);
    let lateness = format!("{}s", spread / 1_000_000_000 + 1);
    let mut svc = Service::start(&["--wall-clock", "false", "--lateness", &lateness]);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (svc, bodies, next) = (&svc, &bodies, &next);
            s.spawn(move || {
                while let Some(body) = bodies.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) {
                    loop {
                        match svc.post("/v1/events", body) {
                            (200, v) if v["rejected"].as_array().is_some_and(Vec::is_empty) => break,
                            (429 | 503, _) => std::thread::sleep(Duration::from_millis(50)),
                            (status, v) => {
                                let text = v.to_string();
                                panic!("POST /v1/events: {status} {}", &text[..500.min(text.len())])
                            }
                        }
                    }
                }
            });
        }
    });
    let took = started.elapsed();
    // Durable is not classified: the engine works through the log behind the 200s.
    let total = lines.len() as f64;
    loop {
        let m = svc.metrics();
        let seen = records_seen(&m);
        if seen >= total {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "classified {seen} of {total}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let classified = started.elapsed();
    let late = metric_sum(&svc.metrics(), "verdict_rejected_records_total{reason=\"late\"");
    assert_eq!(late, 0.0, "events made late in a throughput run");
    println!(
        "http ingest: {} events in {:.2} s = {:.0} events/s acknowledged (durable and applied); all classified after {:.2} s = {:.0} events/s (5,000-line bodies, 4 clients, lateness {lateness})",
        lines.len(),
        took.as_secs_f64(),
        total / took.as_secs_f64(),
        classified.as_secs_f64(),
        total / classified.as_secs_f64()
    );
    assert_eq!(svc.stop(), Some(0));
}

/// The largest event-time spread (nanoseconds) of `window` neighbouring bodies of `size`
/// lines each.
fn bodies_spread(lines: &[&str], size: usize, window: usize) -> i64 {
    let ts = |l: &str| -> i64 {
        let v: Value = serde_json::from_str(l).unwrap();
        verdict::timestamp::parse_rfc3339(v["ts"].as_str().unwrap()).unwrap()
    };
    let bounds: Vec<(i64, i64)> = lines
        .chunks(size)
        .map(|c| c.iter().map(|l| ts(l)).fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t))))
        .collect();
    bounds
        .windows(window.min(bounds.len()).max(1))
        .map(|w| w.iter().map(|b| b.1).max().unwrap_or(0) - w.iter().map(|b| b.0).min().unwrap_or(0))
        .max()
        .unwrap_or(0)
}

fn deciding(conv: &str, at: i64) -> String {
    let ts = |s: i64| verdict::timestamp::format_rfc3339(at + s * 1_000_000_000);
    [
        common::ev(&format!("{conv}-1"), "conversation.started", conv, &ts(0), ""),
        common::ev(&format!("{conv}-2"), "message.ai", conv, &ts(1), ""),
        common::ev(&format!("{conv}-3"), "escalated", conv, &ts(2), ""),
    ]
    .join("\n")
}

/// From a POST whose last event decides a conversation to `/v1/usage` showing it.
fn ingest_to_usage(samples: usize) {
    let mut svc = Service::start(&["--lateness", "0s", "--wall-clock", "false"]);
    let base = verdict::timestamp::parse_rfc3339("2026-06-12T00:00:00Z").unwrap();
    let mut took = Vec::new();
    for i in 0..samples {
        let started = Instant::now();
        let (status, v) = svc.post("/v1/events", &deciding(&format!("lat{i}"), base + i as i64 * 60_000_000_000));
        assert_eq!(status, 200, "{v}");
        svc.wait_for("/v1/usage?tenant=acme&period=2026-06", |u| {
            u["non_billable_count"].as_u64() == Some(i as u64 + 1)
        });
        took.push(started.elapsed());
    }
    println!("ingest to usage (lateness 0): {}", percentiles(took));
    assert_eq!(svc.stop(), Some(0));
}

/// `POST /v1/rules/reload` after an edit: compile, run the fixtures, swap.
fn reload(samples: usize) {
    let mut svc = Service::start(&["--watch-rules", "false"]);
    let rule = svc.dir.path().join("rules/ai_resolution.rhai");
    let text = std::fs::read_to_string(&rule).unwrap();
    let mut took = Vec::new();
    for i in 0..samples {
        std::fs::write(&rule, format!("{text}\n// edit {i}\n")).unwrap();
        let started = Instant::now();
        let (status, v) = svc.post("/v1/rules/reload", "");
        took.push(started.elapsed());
        assert_eq!(status, 200, "{v}");
    }
    println!("rule reload (compile + fixtures + swap): {}", percentiles(took));
    assert_eq!(svc.stop(), Some(0));
}

/// Restart time from a checkpoint holding `open` open conversations.
fn restart(open: u64) {
    let mut svc = Service::start(&["--wall-clock", "false", "--checkpoint-interval", "1h"]);
    let base = verdict::timestamp::parse_rfc3339("2026-06-12T00:00:00Z").unwrap();
    let mut next = 0u64;
    while next < open {
        let n = (open - next).min(20_000);
        let body: Vec<String> = (next..next + n)
            .map(|i| {
                let ts = verdict::timestamp::format_rfc3339(base + i as i64 * 1_000_000);
                common::ev(&format!("o{i}"), "conversation.started", &format!("o{i}"), &ts, "")
            })
            .collect();
        match svc.post("/v1/events", &body.join("\n")) {
            (200, _) => next += n,
            (429 | 503, _) => std::thread::sleep(Duration::from_millis(50)),
            (status, v) => panic!("POST /v1/events: {status} {v}"),
        }
    }
    let started = Instant::now();
    loop {
        let m = svc.metrics();
        let line = m.lines().find(|l| l.starts_with("verdict_open_conversations ")).unwrap_or("");
        if line.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok()) == Some(open as f64) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "open conversations never reached {open}: {line}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopping = Instant::now();
    assert_eq!(svc.stop(), Some(0));
    let stop_took = stopping.elapsed();
    let bytes: u64 = std::fs::read_dir(svc.state().join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    let starting = Instant::now();
    svc.spawn(&[]);
    let start_took = starting.elapsed();
    println!(
        "restart with {open} open conversations: ready in {:.2} s (stop with final checkpoint {:.2} s, checkpoint {:.1} MB)",
        start_took.as_secs_f64(),
        stop_took.as_secs_f64(),
        bytes as f64 / 1e6
    );
    assert_eq!(svc.stop(), Some(0));
}

/// Records the engine has taken in: events of every result plus rejects (late events
/// count as both).
fn records_seen(m: &str) -> f64 {
    metric_sum(m, "verdict_events_total{") + metric_sum(m, "verdict_rejected_records_total{")
        - metric_sum(m, "verdict_rejected_records_total{reason=\"late\"")
}

fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Events already in a 4-partition topic, consumed and classified by one instance.
fn fluvio_consume(addr: &str, conversations: u32) {
    let tag = format!("bench-{}-{}", std::process::id(), verdict::timestamp::now() % 1_000_000_007);
    let topic = format!("ev-{tag}");
    verdict(&["fluvio-setup", "--endpoint", addr, "--topic", &format!("{topic}:4")]);
    let c = conversations.to_string();
    verdict(&["gen", "--conversations", &c, "--fluvio-topic", &topic, "--fluvio-endpoint", addr]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("gen.ndjson");
    verdict(&["gen", "--conversations", &c, "--output", file.to_str().unwrap()]);
    let total = std::fs::read_to_string(&file).unwrap().lines().count() as f64;
    let started = Instant::now();
    let mut svc = Service::start(&[
        "--wall-clock",
        "false",
        "--fluvio-endpoint",
        addr,
        "--fluvio-topic",
        &topic,
        "--http-ingest",
        "false",
    ]);
    loop {
        let m = svc.metrics();
        let seen = records_seen(&m);
        if seen >= total {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "consumed {seen} of {total}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let late = metric_sum(&svc.metrics(), "verdict_rejected_records_total{reason=\"late\"");
    assert_eq!(late, 0.0, "events made late while consuming a backlog");
    println!(
        "fluvio consume: {total} events from 4 partitions in {:.2} s = {:.0} events/s (from process start, WAL included)",
        took.as_secs_f64(),
        total / took.as_secs_f64()
    );
    assert_eq!(svc.stop(), Some(0));
}

/// From producing a conversation's deciding event to its verdict on the verdict topic,
/// through one instance (lateness 0, a 1-partition events topic).
fn fluvio_latency(addr: &str, samples: usize) {
    use fluvio::consumer::ConsumerConfigExtBuilder;
    use fluvio::dataplane::record::RecordData;
    use fluvio::{Fluvio, FluvioClusterConfig, Offset, RecordKey};
    use futures_util::StreamExt;
    let tag = format!("lat-{}-{}", std::process::id(), verdict::timestamp::now() % 1_000_000_007);
    let (events, verdicts) = (format!("ev-{tag}"), format!("vd-{tag}"));
    verdict(&[
        "fluvio-setup",
        "--endpoint",
        addr,
        "--topic",
        &format!("{events}:1"),
        "--topic",
        &format!("{verdicts}:1"),
    ]);
    let mut svc = Service::start(&[
        "--lateness",
        "0s",
        "--wall-clock",
        "false",
        "--fluvio-endpoint",
        addr,
        "--fluvio-topic",
        &events,
        "--fluvio-verdict-topic",
        &verdicts,
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let took = rt.block_on(async {
        let f = Fluvio::connect_with_config(&FluvioClusterConfig::new(addr)).await.unwrap();
        let producer = f.topic_producer(events.clone()).await.unwrap();
        let cfg = ConsumerConfigExtBuilder::default()
            .topic(verdicts.clone())
            .partition(0)
            .offset_start(Offset::beginning())
            .build()
            .unwrap();
        let mut out = f.consumer_with_config(cfg).await.unwrap();
        let base = verdict::timestamp::parse_rfc3339("2026-06-12T00:00:00Z").unwrap();
        let mut took = Vec::new();
        for i in 0..samples {
            let conv = format!("lat{i}");
            let started = Instant::now();
            for line in deciding(&conv, base + i as i64 * 60_000_000_000).lines() {
                producer.send(RecordKey::from(RecordData::from(conv.clone())), line.to_string()).await.unwrap();
            }
            producer.flush().await.unwrap();
            loop {
                let r = tokio::time::timeout(Duration::from_secs(30), out.next()).await.unwrap().unwrap().unwrap();
                let v: Value = serde_json::from_slice(r.value()).unwrap();
                if v["conversation"] == conv.as_str() {
                    break;
                }
            }
            took.push(started.elapsed());
        }
        took
    });
    println!("fluvio produce to verdict on the verdict topic (lateness 0, 1 partition): {}", percentiles(took));
    assert_eq!(svc.stop(), Some(0));
}
