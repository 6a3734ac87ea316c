//! Billing figures of `verdict run`, measured on the real binary over loopback:
//!
//! - an invoice, and the first page of the verdicts behind its usage line, for a tenant
//!   with N billable verdicts in the period: p50 and p99 while the period is open (a
//!   draft, rated in memory) and once it is closed (final, read from the history);
//! - the service's resident memory after 1 and after 6 simulated months of M
//!   conversations a month (20 tenants): with closed periods in the history, it should
//!   stay flat.
//!
//! `cargo bench --bench billing` measures at full size (N = 1,000,000, M = 600,000);
//! `cargo test --bench billing` runs every step at a tiny size, so CI keeps the harness
//! working. VERDICT_BENCH_VERDICTS and VERDICT_BENCH_MONTHLY set N and M.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::Service;
use verdict::timestamp::{format_rfc3339, parse_rfc3339, NANOS_PER_MILLI};

const PLANS: &str = r#"
[plans.growth]
platform_fee = "500.00"
included = { ai_resolution = 1000 }
overage = { ai_resolution = "0.80" }

[tenants.big]
assignments = [{ plan = "growth", from = "2026-01" }]
"#;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (verdicts, monthly) = if full {
        (env_or("VERDICT_BENCH_VERDICTS", 1_000_000), env_or("VERDICT_BENCH_MONTHLY", 600_000))
    } else {
        (2_000, 3_000)
    };
    println!("verdict billing benchmarks ({})", if full { "full size" } else { "test mode, tiny sizes" });
    invoice_lookup(verdicts, if full { 200 } else { 5 });
    memory_over_months(monthly);
}

/// One conversation resolved and confirmed at `at`: billable 24 hours later.
fn conversation(out: &mut String, tenant: &str, c: u64, at: i64) {
    for (i, kind) in ["conversation.started", "message.ai", "resolution.confirmed"].iter().enumerate() {
        let ts = format_rfc3339(at + i as i64 * 1_000 * NANOS_PER_MILLI);
        let attrs = if i == 0 { r#","attrs":{"intent":"faq"}"# } else { "" };
        let _ = writeln!(
            out,
            r#"{{"id":"{c}-{i}","type":"{kind}","tenant":"{tenant}","conversation":"c{c}","ts":"{ts}"{attrs}}}"#
        );
    }
}

/// Posts `n` conversations of `tenants` evenly over `[from, from + span)`, in time
/// order, in bodies of about 6,000 events; returns how many events were posted.
fn post_conversations(svc: &Service, tenants: &[String], first: u64, n: u64, from: i64, span: i64) -> u64 {
    let step = span / n.max(1) as i64;
    let mut body = String::with_capacity(1 << 20);
    let mut events = 0;
    for k in 0..n {
        let c = first + k;
        conversation(&mut body, &tenants[(c % tenants.len() as u64) as usize], c, from + k as i64 * step);
        events += 3;
        if events % 6_000 == 0 || k + 1 == n {
            post(svc, &body);
            body.clear();
        }
    }
    events
}

/// The slowest answer to a POST so far, in milliseconds.
static SLOWEST_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn post(svc: &Service, body: &str) {
    let mut timeouts = 0;
    loop {
        let t = Instant::now();
        let answer = svc.post("/v1/events", body);
        SLOWEST_MS.fetch_max(t.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
        match answer {
            (200, v) if v["rejected"].as_array().is_some_and(Vec::is_empty) => return,
            // Sent again after no answer: the first copy was taken (late or duplicate now).
            (200, _) if timeouts > 0 => return,
            (429 | 503, _) => std::thread::sleep(Duration::from_millis(20)),
            // No answer in 30 s (the service is busy): sent again, its events are
            // duplicates if they were taken.
            (0, v) if timeouts < 5 => {
                timeouts += 1;
                eprintln!("  POST /v1/events had no answer ({v}); sending it again");
            }
            (status, v) => {
                let text = v.to_string();
                panic!("POST /v1/events: {status} {}", &text[..500.min(text.len())])
            }
        }
    }
}

fn metric(svc: &Service, name: &str) -> f64 {
    svc.metrics()
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the engine has taken in `events` events.
fn wait_applied(svc: &Service, events: u64) {
    let started = Instant::now();
    while metric(svc, "verdict_events_total") < events as f64 {
        assert!(started.elapsed() < Duration::from_secs(900), "not applied in 15 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", at(0.5), at(0.99), at(1.0))
}

/// Times `samples` rounds of: the invoice, then the first page of its usage line.
fn time_invoice(svc: &Service, period: &str, samples: usize, want_status: &str) -> (String, String) {
    let (mut invoice, mut page) = (Vec::new(), Vec::new());
    let inv = svc.get(&format!("/v1/invoices/big/{period}")).1;
    assert_eq!(inv["status"], want_status, "{inv}");
    let line = inv["lines"].as_array().unwrap().iter().position(|l| l["kind"] == "overage").expect("an overage line");
    for _ in 0..samples {
        let t = Instant::now();
        let (status, v) = svc.get(&format!("/v1/invoices/big/{period}"));
        invoice.push(t.elapsed());
        assert_eq!((status, &v["status"]), (200, &serde_json::json!(want_status)), "{v}");
        let t = Instant::now();
        let (status, v) = svc.get(&format!("/v1/invoices/big/{period}/lines/{line}/verdicts?limit=100"));
        page.push(t.elapsed());
        assert_eq!((status, v["verdicts"].as_array().map(Vec::len)), (200, Some(100)), "{v}");
    }
    (percentiles(invoice), percentiles(page))
}

fn invoice_lookup(n: u64, samples: usize) {
    let mut svc = Service::start(&["--wall-clock", "false", "--watch-rules", "false", "--lateness", "1m"]);
    std::fs::write(svc.dir.path().join("rules/plans.toml"), PLANS).unwrap();
    assert_eq!(svc.post("/v1/rules/reload", "").0, 200);
    let june = parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
    let started = Instant::now();
    let mut events = post_conversations(&svc, &["big".to_string()], 0, n, june, 20 * 24 * 3_600_000 * NANOS_PER_MILLI);
    // A late-June event decides every conversation (24 hours after its confirmation).
    let mut tail = String::new();
    conversation(&mut tail, "other", u64::MAX, parse_rfc3339("2026-06-25T00:00:00Z").unwrap());
    post(&svc, &tail);
    events += 3;
    wait_applied(&svc, events);
    let inv = svc.wait_for("/v1/invoices/big/2026-06", |v| {
        v["lines"]
            .as_array()
            .is_some_and(|ls| ls.iter().map(|l| l["verdict_count"].as_u64().unwrap_or(0)).sum::<u64>() == n)
    });
    println!(
        "billing: {n} verdicts of one tenant in June rated in {:.1} s; draft total {}",
        started.elapsed().as_secs_f64(),
        inv["total"]
    );
    let (invoice, page) = time_invoice(&svc, "2026-06", samples, "draft");
    println!("  open period (draft, {samples} samples): invoice {invoice}; first page of 100 verdicts {page}");
    // July: June closes and its invoice is final, in the history.
    let mut july = String::new();
    conversation(&mut july, "other", u64::MAX - 1, parse_rfc3339("2026-07-03T00:00:00Z").unwrap());
    post(&svc, &july);
    svc.wait_for("/v1/invoices/big/2026-06", |v| v["status"] == "final");
    let (invoice, page) = time_invoice(&svc, "2026-06", samples, "final");
    println!("  closed period (final, {samples} samples): invoice {invoice}; first page of 100 verdicts {page}");
    assert_eq!(svc.stop(), Some(0));
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn memory_over_months(monthly: u64) {
    SLOWEST_MS.store(0, std::sync::atomic::Ordering::Relaxed);
    let mut svc = Service::start(&["--wall-clock", "false", "--watch-rules", "false", "--lateness", "1m"]);
    let pid = svc.child.as_ref().unwrap().id();
    let tenants: Vec<String> = (0..20).map(|t| format!("tenant-{t:02}")).collect();
    let mut events = 0;
    let mut after = Vec::new();
    let started = Instant::now();
    for month in 1..=6u32 {
        let from = parse_rfc3339(&format!("2026-{month:02}-01T00:00:00Z")).unwrap();
        let to = parse_rfc3339(&format!("2026-{:02}-01T00:00:00Z", month + 1)).unwrap();
        events += post_conversations(&svc, &tenants, u64::from(month) * monthly, monthly, from, to - from);
        wait_applied(&svc, events);
        let indexed = metric(&svc, "verdict_indexed_verdicts");
        after.push((rss(pid), indexed));
        println!(
            "  after month {month}: {:.1} MiB resident, {indexed} verdicts indexed in memory ({:.0} s in)",
            rss(pid) as f64 / (1 << 20) as f64,
            started.elapsed().as_secs_f64()
        );
    }
    let slowest = SLOWEST_MS.load(std::sync::atomic::Ordering::Relaxed);
    println!("  slowest ingest answer {slowest} ms (a month's close is written to the history meanwhile)");
    let (one, six) = (after[0].0 as f64, after[5].0 as f64);
    println!(
        "memory: {monthly} conversations a month, 20 tenants: {:.1} MiB after 1 month, {:.1} MiB after 6 ({:+.1}%)",
        one / (1 << 20) as f64,
        six / (1 << 20) as f64,
        (six / one - 1.0) * 100.0
    );
    assert_eq!(svc.stop(), Some(0));
}
