//! Exactly-once under crashes: `verdict run` follows a growing file and is killed with
//! SIGKILL at random moments, then restarted; at the end its verdict file must hold
//! exactly the verdicts of an uninterrupted `verdict replay` of the same events, each
//! once; the same holds when the events come over HTTP and every acknowledged POST
//! counts. A corrupt newest checkpoint must be detected and the previous one used.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{diff, once, replayed_stream, wait_for_verdicts, Service};
use serde_json::Value;
use std::process::Command;

fn service_args(input: &Path, checkpoint: &str) -> Vec<String> {
    [
        "--input",
        input.to_str().unwrap(),
        "--wall-clock",
        "false",
        "--reject-future",
        "false",
        "--checkpoint-interval",
        checkpoint,
    ]
    .map(String::from)
    .to_vec()
}

struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, full, (want, want_dead)) = replayed_stream(tmp.path(), 2500, 11);
    assert!(want.len() > 2000, "{} verdicts", want.len());

    let input = tmp.path().join("in.ndjson");
    std::fs::write(&input, b"").unwrap();
    let args = service_args(&input, "150ms");
    let mut svc = Service::start(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // The platform keeps appending while the service is killed and restarted.
    let writer = {
        let (input, all) = (input.clone(), all.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
            for chunk in all.chunks(all.len() / 60 + 1) {
                f.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(60));
            }
        })
    };
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("kill schedule seed {seed}");
    let mut rng = Lcg(seed);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(20 + rng.below(250)));
        svc.kill9();
        svc.spawn(&[]);
    }
    writer.join().unwrap();
    wait_for_verdicts(&svc, want.len());
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
    for run in 1..=svc.runs {
        let log = std::fs::read_to_string(svc.dir.path().join(format!("stderr-{run}.log"))).unwrap_or_default();
        for l in log.lines().filter(|l| l.contains("recovered")) {
            eprintln!("run {run}: {l}");
        }
    }

    let got = once(&svc.output());
    diff("verdicts after 20 SIGKILLs", &got, &want);
    let got_dead = once(&svc.state().join("dead-letters.ndjson"));
    let rel = |s: &BTreeSet<String>| -> BTreeSet<String> {
        // Dead letters name their source; the service followed another path.
        s.iter().map(|l| l.replace(input.to_str().unwrap(), "IN").replace(full.to_str().unwrap(), "IN")).collect()
    };
    diff("dead letters after 20 SIGKILLs", &rel(&got_dead), &rel(&want_dead));
}

#[test]
fn sigkill_during_http_ingest_loses_nothing_acknowledged() {
    // A client posts the stream, billing events among the conversation events, in order,
    // retrying each body until it gets 200, as a platform would; the service is killed
    // at random moments in between. A 200 means durable, so the verdicts must still be
    // exactly those of one replay, each once, and the invoices those of `verdict invoice`.
    let tmp = tempfile::tempdir().unwrap();
    let all = common::with_billing(&common::events(tmp.path(), 1500, 12));
    let full = tmp.path().join("full.ndjson");
    std::fs::write(&full, &all).unwrap();
    let (want, _) = common::expected(tmp.path(), &full);
    assert!(want.len() > 1000, "{} verdicts", want.len());

    // Kills come faster than checkpoints, so most runs die before their first one.
    let args = ["--wall-clock", "false", "--reject-future", "false", "--checkpoint-interval", "400ms"];
    let mut svc = Service::start(&args);
    let port = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(svc.port));
    let poster = {
        let port = port.clone();
        let body_lines: Vec<Vec<u8>> = all.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
            let mut refused = 0u32;
            for body in body_lines.chunks(150).map(|c| c.join(&b'\n')) {
                loop {
                    let url = format!("http://127.0.0.1:{}/v1/events", port.load(std::sync::atomic::Ordering::SeqCst));
                    match agent.post(&url).send_bytes(&body) {
                        Ok(r) if r.status() == 200 => break,
                        Ok(r) => panic!("POST answered {}", r.status()),
                        // 503 while recovering, or no one listening: not acknowledged, so resend.
                        Err(ureq::Error::Status(503, _)) | Err(ureq::Error::Transport(_)) => {
                            refused += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("POST failed: {e}"),
                    }
                }
            }
            refused
        })
    };
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("kill schedule seed {seed}");
    let mut rng = Lcg(seed);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(20 + rng.below(150)));
        // Port 0 until the new one is known: posts in between are refused and resent,
        // never sent to whatever else takes the old port.
        port.store(0, std::sync::atomic::Ordering::SeqCst);
        svc.kill9();
        svc.spawn(&[]);
        port.store(svc.port, std::sync::atomic::Ordering::SeqCst);
    }
    let refused = poster.join().unwrap();
    eprintln!("{refused} posts were refused or cut by a kill and resent");
    wait_for_verdicts(&svc, want.len());
    diff("verdicts after SIGKILLs during HTTP ingest", &once(&svc.output()), &want);

    // The invoices: every tenant's, as the clean run of `verdict invoice` gives them.
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(common::root())
        .args(["invoice", "--lateness", "5s"])
        .arg(&full)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let clean: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let tenants: std::collections::BTreeSet<&str> = clean.iter().map(|i| i["tenant"].as_str().unwrap()).collect();
    assert!(clean.iter().any(|i| i["lines"].as_array().unwrap().iter().any(|l| l["kind"] == "dispute_credit")));
    for tenant in tenants {
        let want: Vec<Value> = clean.iter().filter(|i| i["tenant"] == tenant).map(summary).collect();
        let got: Vec<Value> =
            svc.get(&format!("/v1/invoices?tenant={tenant}")).1.as_array().unwrap().iter().map(summary).collect();
        assert_eq!(got, want, "invoices of {tenant} after 20 SIGKILLs");
    }
    // The credit log: each credit of the invoices once, with its verdict's line whole.
    let credited: u64 = clean
        .iter()
        .flat_map(|i| i["lines"].as_array().unwrap())
        .filter(|l| l["kind"] == "dispute_credit")
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    let log = common::ndjson(&svc.state().join("credits.ndjson"));
    let ids: std::collections::BTreeSet<&str> = log.iter().map(|c| c["verdict_id"].as_str().unwrap()).collect();
    assert_eq!((log.len() as u64, ids.len() as u64), (credited, credited), "credit log after 20 SIGKILLs");
    let verdicts: std::collections::HashMap<String, Value> = want
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["verdict_id"].as_str().unwrap().to_string(), v))
        .collect();
    for c in &log {
        let id = c["verdict_id"].as_str().unwrap();
        assert_eq!(Some(&c["verdict"]), verdicts.get(id), "the credit log carries its verdict whole: {c}");
    }
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
}

/// An invoice without its verdict lists (the API links to them instead).
fn summary(i: &Value) -> Value {
    let lines: Vec<Value> = i["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| serde_json::json!([l["kind"], l["outcome"], l["unit_price"], l["count"], l["amount"]]))
        .collect();
    serde_json::json!([i["number"], i["status"], i["plan"], lines, i["total"], i["prepaid_balance"]])
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, _, (want, _)) = replayed_stream(tmp.path(), 800, 5);

    let input = tmp.path().join("in.ndjson");
    let half = all[..all.len() / 2].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    std::fs::write(&input, &all[..half]).unwrap();
    let args = service_args(&input, "1h");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut svc = Service::start(&argv);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());

    svc.spawn(&[]);
    std::fs::OpenOptions::new().append(true).open(&input).unwrap().write_all(&all[half..]).unwrap();
    wait_for_verdicts(&svc, want.len());
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());

    let dir = svc.state().join("checkpoints");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let newest = files.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(newest, &bytes).unwrap();

    svc.spawn(&[]);
    let log = svc.stderr();
    assert!(log.contains("unusable") && log.contains("checksum"), "the corrupt checkpoint is reported:\n{log}");
    assert!(svc.metrics().contains("verdict_checkpoints_rejected_total 1"));
    wait_for_verdicts(&svc, want.len());
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
    diff("verdicts after a corrupt checkpoint", &once(&svc.output()), &want);
}
