//! The live push to a billing platform, on the real binary: a receiver started here on
//! 127.0.0.1 checks every request against the platform's format (path, auth, body,
//! batch limit), answers 500 and 429 (with `Retry-After`) at times, sometimes after
//! keeping the events (a lost answer), and restarts once; the service is killed with
//! SIGKILL mid-stream and started again. The stream carries disputes, some accepted:
//! every billable verdict must arrive, and every credit as the platform's correction
//! after its verdict's event, nothing else, and duplicates only as the same idempotency
//! key. What must arrive is what `verdict export` makes of the same stream.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Service;
use serde_json::Value;

#[derive(Default)]
struct Got {
    requests: u64,
    /// Idempotency key -> how many times the platform kept it.
    keys: BTreeMap<String, u32>,
    /// Idempotency keys in the order they were first kept.
    order: Vec<String>,
    /// Tenant -> the customer ids its events carried.
    customers: BTreeMap<String, BTreeSet<String>>,
    /// Requests that broke the format, with why.
    bad: Vec<String>,
}

struct Receiver {
    port: u16,
    got: Arc<Mutex<Got>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What the receiver does with request number `n` (from 1): answer 2xx, fail before
/// keeping the events, or keep them and then fail (the answer is lost to the sender).
fn fault(n: u64) -> Option<(u16, bool)> {
    match n {
        2 => Some((429, false)),
        _ if n.is_multiple_of(11) => Some((500, n.is_multiple_of(22))),
        _ if n.is_multiple_of(17) => Some((429, false)),
        _ if n.is_multiple_of(13) => Some((503, true)),
        _ => None,
    }
}

impl Receiver {
    fn start(platform: &'static str) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (got, stop) = (Arc::new(Mutex::new(Got::default())), Arc::new(AtomicBool::new(false)));
        let (g, s) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            let mut restarted = false;
            while !s.load(Ordering::SeqCst) {
                let Some(l) = &listener else { break };
                l.set_nonblocking(true).unwrap();
                let conn = match l.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                conn.set_nonblocking(false).unwrap();
                let n = {
                    let mut g = g.lock().unwrap();
                    g.requests += 1;
                    g.requests
                };
                serve(conn, n, platform, &g);
                // Once, the platform goes away for a while, and comes back on its port.
                if n == 4 && !restarted {
                    restarted = true;
                    drop(listener.take());
                    std::thread::sleep(Duration::from_millis(1500));
                    listener = Some(TcpListener::bind(("127.0.0.1", port)).expect("rebind the receiver's port"));
                }
            }
        });
        Receiver { port, got, stop }
    }
}

fn serve(conn: TcpStream, n: u64, platform: &str, got: &Mutex<Got>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut head = String::new();
    let mut headers = BTreeMap::new();
    if r.read_line(&mut head).is_err() {
        return;
    }
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
            break;
        }
        if let Some((k, v)) = l.trim_end().split_once(':') {
            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let answer = |status: u16, extra: &str| {
        let text = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n{extra}\r\n{{}}");
        let _ = (&conn).write_all(text.as_bytes());
    };
    // Stripe takes one event per request: as many faults per event would only slow it.
    let fail = if platform == "stripe" { fault(n / 6).filter(|_| n.is_multiple_of(6)) } else { fault(n) };
    if let Some((status, false)) = fail {
        return answer(status, if status == 429 { "Retry-After: 1\r\n" } else { "" });
    }
    let events = match check(platform, method, path, &headers, &body) {
        Ok(events) => events,
        Err(why) => {
            got.lock().unwrap().bad.push(format!("request {n}: {why}\n{method} {path}\n{body}"));
            return answer(400, "");
        }
    };
    {
        let mut g = got.lock().unwrap();
        for (key, tenant, customer) in events {
            let n = g.keys.entry(key.clone()).or_default();
            *n += 1;
            if *n == 1 {
                g.order.push(key);
            }
            if !tenant.is_empty() {
                g.customers.entry(tenant).or_default().insert(customer);
            }
        }
    }
    match fail {
        Some((status, _)) => answer(status, ""),
        None => answer(200, ""),
    }
}

/// The events of a request as (idempotency key, tenant, customer), or why it is not in
/// the platform's documented format. A correction is `credit:<verdict_id>` with no
/// tenant.
fn check(
    platform: &str,
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    body: &str,
) -> Result<Vec<(String, String, String)>, String> {
    if headers.get("authorization").map(String::as_str) != Some("Bearer test-key") {
        return Err(format!("authorization {:?}", headers.get("authorization")));
    }
    match platform {
        "orb" if method == "PUT" => {
            let id = path.strip_prefix("/v1/events/").and_then(|p| p.strip_suffix("/deprecate"));
            match id {
                Some(id) if body.is_empty() && !id.is_empty() => {
                    Ok(vec![(format!("credit:{}", decode(id)), String::new(), String::new())])
                }
                _ => Err("not PUT /v1/events/{id}/deprecate without a body".into()),
            }
        }
        "stripe" if path == "/v1/billing/meter_event_adjustments" => {
            let form: BTreeMap<String, String> =
                body.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect();
            let f = |k: &str| form.get(k).cloned().ok_or(format!("no {k}"));
            let key = format!("credit:{}", f("cancel[identifier]")?);
            if method != "POST" || f("type")? != "cancel" || f("event_name")? != "ai_resolution" {
                return Err("not a POST of a cancel of ai_resolution".into());
            }
            if headers.get("idempotency-key") != Some(&key) {
                return Err(format!("Idempotency-Key {:?}, not {key}", headers.get("idempotency-key")));
            }
            Ok(vec![(key, String::new(), String::new())])
        }
        "orb" => {
            if (method, path) != ("POST", "/v1/ingest") {
                return Err("not POST /v1/ingest".into());
            }
            let v: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
            let events = v["events"].as_array().ok_or("no events array")?;
            if events.is_empty() || events.len() > 500 {
                return Err(format!("{} events in one request (Orb takes 1 to 500)", events.len()));
            }
            events
                .iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().map(str::to_string).ok_or(format!("no string {k}: {e}"));
                    let (key, customer, name, ts) =
                        (s("idempotency_key")?, s("external_customer_id")?, s("event_name")?, s("timestamp")?);
                    if name != "ai_resolution" || !ts.ends_with('Z') || !e["properties"].is_object() {
                        return Err(format!("event_name, timestamp or properties: {e}"));
                    }
                    let tenant = e["properties"]["tenant"].as_str().ok_or("no properties.tenant")?.to_string();
                    Ok((key, tenant, customer))
                })
                .collect()
        }
        "stripe" => {
            if (method, path) != ("POST", "/v1/billing/meter_events") {
                return Err("not POST /v1/billing/meter_events".into());
            }
            if headers.get("content-type").map(String::as_str) != Some("application/x-www-form-urlencoded") {
                return Err("not form-encoded".into());
            }
            let form: BTreeMap<String, String> =
                body.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect();
            let f = |k: &str| form.get(k).cloned().ok_or(format!("no {k}"));
            let key = f("identifier")?;
            if headers.get("idempotency-key") != Some(&key) || f("event_name")? != "ai_resolution" {
                return Err("Idempotency-Key or event_name".into());
            }
            if f("payload[value]")? != "1" || f("timestamp")?.parse::<i64>().is_err() {
                return Err("payload[value] or timestamp".into());
            }
            Ok(vec![(key, f("payload[tenant]")?, f("payload[stripe_customer_id]")?)])
        }
        other => Err(format!("no check for {other}")),
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `verdict export` sends of `input`: the idempotency keys of the usage events and
/// of the corrections.
fn exported(dir: &std::path::Path, platform: &str, input: &std::path::Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = dir.join(format!("export-{platform}.ndjson"));
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(common::root())
        .args(["export", "--to", platform, "--dead-letter", "/dev/null", "--output"])
        .arg(&out)
        .arg(input)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let keys = common::ndjson(&out)
        .iter()
        .flat_map(|r| r["idempotency_keys"].as_array().unwrap().clone())
        .map(|k| k.as_str().unwrap().to_string())
        .collect::<BTreeSet<String>>();
    keys.into_iter().partition(|k| !k.starts_with("credit:"))
}

/// Pushes a generated stream with disputes to a receiver speaking `platform`, killing
/// the service once mid-stream; checks what arrived.
fn pushes_every_billable_verdict(platform: &'static str, conversations: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let all = common::with_billing(&common::events(tmp.path(), conversations, 7));
    let full = tmp.path().join("full.ndjson");
    std::fs::write(&full, &all).unwrap();
    let (billable, credits) = exported(tmp.path(), platform, &full);
    assert!(billable.len() > 50, "{} billable verdicts", billable.len());
    assert!(credits.len() > 3, "{} credits", credits.len());
    let rx = Receiver::start(platform);
    let url = format!("http://127.0.0.1:{}/", rx.port);
    let args = [
        "--wall-clock",
        "false",
        "--reject-future",
        "false",
        "--checkpoint-interval",
        "200ms",
        "--push-url",
        &url,
        "--push-platform",
        platform,
    ];
    let mut svc = Service::start_env(&args, &[("VERDICT_PUSH_TOKEN", "test-key")]);
    let text = String::from_utf8(all).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let chunks: Vec<String> = lines.chunks(lines.len() / 12 + 1).map(|c| c.join("\n")).collect();
    for (i, body) in chunks.iter().enumerate() {
        assert_eq!(svc.post("/v1/events", body).0, 200);
        std::thread::sleep(Duration::from_millis(100));
        if i == 6 {
            // Mid-push: verdicts pushed since the last checkpoint are pushed again.
            std::thread::sleep(Duration::from_millis(300));
            svc.kill9();
            svc.spawn(&[("VERDICT_PUSH_TOKEN", "test-key")]);
        }
    }
    let want: BTreeSet<String> = billable.union(&credits).cloned().collect();
    // Stripe takes one event per request, and the faults slow it: what counts is that
    // the push keeps moving.
    let (mut moved_at, mut had) = (Instant::now(), 0);
    loop {
        let got: BTreeSet<String> = rx.got.lock().unwrap().keys.keys().cloned().collect();
        if want.is_subset(&got) {
            break;
        }
        if got.len() > had {
            (moved_at, had) = (Instant::now(), got.len());
        }
        let missing: Vec<&String> = want.difference(&got).take(5).collect();
        assert!(
            moved_at.elapsed() < Duration::from_secs(30),
            "{} billable verdicts or credits never arrived (first: {missing:?}); nothing new for 30 s:\n{}",
            want.difference(&got).count(),
            svc.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let g = rx.got.lock().unwrap();
    assert!(g.bad.is_empty(), "requests out of format:\n{}", g.bad.join("\n---\n"));
    let extra: Vec<&String> = g.keys.keys().filter(|k| !want.contains(*k)).collect();
    assert!(extra.is_empty(), "pushed but neither billable verdicts nor credits: {extra:?}");
    // A platform can only correct an event it has: each credit came after its verdict.
    let first: BTreeMap<&String, usize> = g.order.iter().enumerate().map(|(i, k)| (k, i)).collect();
    for c in &credits {
        let usage = c.strip_prefix("credit:").unwrap().to_string();
        assert!(first[&usage] < first[c], "the correction {c} arrived before its usage event");
    }
    let again = g.keys.values().filter(|n| **n > 1).count();
    assert!(g.requests > 4, "the receiver's restart was reached ({} requests)", g.requests);
    // The plans map tenant-001 to its id in the platform; the others go by tenant id.
    for (tenant, customers) in &g.customers {
        let want = if tenant == "tenant-001" { "cus_tenant001" } else { tenant.as_str() };
        assert_eq!(customers.iter().collect::<Vec<_>>(), [want], "{tenant}");
    }
    assert!(g.customers.contains_key("tenant-001"));
    eprintln!(
        "{platform}: {} billable verdicts and {} credits arrived in {} requests; {again} sent more than once (same key)",
        billable.len(),
        credits.len(),
        g.requests
    );
    drop(g);
    assert!(!svc.state().join("push-rejected.ndjson").exists(), "nothing was refused");
    assert_eq!(svc.stop(), Some(0));
}

#[test]
fn orb_gets_every_billable_verdict_through_faults_a_restart_and_a_crash() {
    pushes_every_billable_verdict("orb", 3_000);
}

#[test]
fn stripe_gets_every_billable_verdict_one_request_each() {
    pushes_every_billable_verdict("stripe", 1_500);
}
