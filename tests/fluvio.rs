//! Against a real Fluvio cluster (SC address in `FLUVIO_SC_ADDR`, e.g. 127.0.0.1:9003):
//! events produced to a 3-partition topic by `verdict gen`, classified by two instances
//! owning disjoint partitions (one of them killed with SIGKILL and restarted twice),
//! verdicts produced to a verdict topic. The files hold each verdict exactly once and
//! together equal a replay of the same events; the verdict topic holds every verdict,
//! with duplicates only of identical records; usage adds up across the instances.
//!
//! Without `FLUVIO_SC_ADDR` the tests say so and pass without running (see
//! `common/cluster.rs`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::{cluster, consume_all, sentinels, tag, verdict, wait_until};
use common::{diff, lines, once, Service};
use serde_json::Value;

fn verdict_ids(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["verdict_id"].as_str().unwrap().to_string())
        .collect()
}

fn reasons(path_lines: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in path_lines {
        let v: Value = serde_json::from_str(l).unwrap();
        *m.entry(v["reason"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    m
}

fn billable_count(usage: &Value) -> u64 {
    usage["billable_count"].as_u64().unwrap_or_else(|| panic!("no billable_count in {usage}"))
}

#[test]
fn two_instances_classify_a_topic_through_a_crash() {
    let Some(addr) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let tag = tag();
    let (events, verdicts, dead) = (format!("ev-{tag}"), format!("vd-{tag}"), format!("dl-{tag}"));
    verdict(&["fluvio-setup", "--endpoint", &addr, "--topic", &format!("{events}:3")]);
    verdict(&[
        "fluvio-setup",
        "--endpoint",
        &addr,
        "--topic",
        &format!("{verdicts}:2"),
        "--topic",
        &format!("{dead}:1"),
    ]);

    let gen =
        ["gen", "--conversations", "1500", "--tenants", "6", "--seed", "7", "--duplicates", "0.02", "--bad", "0.01"];
    let file = tmp.path().join("gen.ndjson");
    verdict(&[&gen[..], &["--output", file.to_str().unwrap()]].concat());
    let said = verdict(&[&gen[..], &["--fluvio-topic", &events, "--fluvio-endpoint", &addr]].concat());
    assert!(said.contains(&format!("produced {} records", lines(&file).len())), "{said}");
    let s = sentinels(&addr, &events, 3);
    let sent = tmp.path().join("sentinels.ndjson");
    std::fs::write(&sent, s.join("\n") + "\n").unwrap();

    let (want_out, want_dead) = (tmp.path().join("want.ndjson"), tmp.path().join("want-dead.ndjson"));
    verdict(&[
        "replay",
        "--output",
        want_out.to_str().unwrap(),
        "--dead-letter",
        want_dead.to_str().unwrap(),
        file.to_str().unwrap(),
        sent.to_str().unwrap(),
    ]);
    let want: BTreeSet<String> = lines(&want_out).into_iter().collect();
    let want_reasons = reasons(&lines(&want_dead));
    assert!(want.len() > 500, "the replay decides enough to be a test: {}", want.len());

    let args = |share: &str| {
        [
            "--fluvio-endpoint",
            &addr,
            "--fluvio-topic",
            &events,
            "--fluvio-partitions",
            share,
            "--fluvio-verdict-topic",
            &verdicts,
            "--fluvio-dead-letter-topic",
            &dead,
            "--wall-clock",
            "false",
            "--reject-future",
            "false",
            "--idle-timeout",
            "1h",
            "--checkpoint-interval",
            "300ms",
        ]
        .map(String::from)
    };
    let a_args = args("0/2");
    let b_args = args("1/2");
    let mut a = Service::start(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut b = Service::start(&b_args.iter().map(String::as_str).collect::<Vec<_>>());
    for _ in 0..2 {
        wait_until("instance B writes verdicts", || !lines(&b.output()).is_empty(), &[&a, &b]);
        std::thread::sleep(Duration::from_millis(150));
        b.kill9();
        b.spawn(&[]);
    }
    let total = || lines(&a.output()).len() + lines(&b.output()).len();
    // Short of the count the diff below shows what is missing.
    let started = Instant::now();
    while total() < want.len() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));

    // The files: each verdict exactly once, together exactly the replay's.
    let dead_lines: Vec<String> =
        [lines(&a.state().join("dead-letters.ndjson")), lines(&b.state().join("dead-letters.ndjson"))].concat();
    assert_eq!(reasons(&dead_lines), want_reasons, "dead letters by reason");
    let (got_a, got_b) = (once(&a.output()), once(&b.output()));
    assert!(got_a.is_disjoint(&got_b), "a verdict decided by both instances");
    diff("verdict files of both instances", &got_a.union(&got_b).cloned().collect(), &want);

    // The topic: every verdict, duplicates only as identical records.
    let want_ids = verdict_ids(&want.iter().cloned().collect::<Vec<_>>());
    let records = consume_all(&addr, &verdicts, 2, |got| verdict_ids(got).len() >= want_ids.len());
    let distinct: BTreeSet<String> = records.iter().cloned().collect();
    diff("records on the verdict topic", &distinct, &want);
    assert_eq!(verdict_ids(&records), want_ids);
    eprintln!("verdict topic: {} records for {} verdicts", records.len(), want.len());
    // Duplicates (at least once) are identical records: wait for every distinct one.
    let distinct_count = |got: &[String]| got.iter().collect::<BTreeSet<_>>().len();
    let dl = consume_all(&addr, &dead, 1, |got| distinct_count(got) >= dead_lines.len());
    assert_eq!(reasons(&dl.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>()), want_reasons);

    // Usage adds up across instances: per tenant, billable counts sum to the replay's.
    let mut by_tenant: BTreeMap<String, u64> = BTreeMap::new();
    for l in &want {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["billable"] == Value::Bool(true) && v["decided_at"].as_str().unwrap().starts_with("2026-06") {
            *by_tenant.entry(v["tenant"].as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    assert!(!by_tenant.is_empty());
    for (tenant, n) in &by_tenant {
        let q = format!("/v1/usage?tenant={tenant}&period=2026-06");
        let sum = billable_count(&a.get(&q).1) + billable_count(&b.get(&q).1);
        assert_eq!(sum, *n, "billable verdicts of {tenant} over both instances");
    }

    // Invoices: what both instances decided, rated together (from their files, and from
    // the verdict topic with its at-least-once duplicates), is what one instance gives.
    let (one_path, two_path) = (tmp.path().join("one.json"), tmp.path().join("two.json"));
    verdict(&["invoice", "--output", one_path.to_str().unwrap(), file.to_str().unwrap(), sent.to_str().unwrap()]);
    let one = std::fs::read_to_string(&one_path).unwrap();
    let until = lines(&file)
        .iter()
        .chain(&s)
        .filter_map(|l| verdict::timestamp::parse_rfc3339(serde_json::from_str::<Value>(l).ok()?["ts"].as_str()?).ok())
        .max()
        .map(verdict::timestamp::format_rfc3339)
        .unwrap();
    let (none, topic) = (tmp.path().join("none.ndjson"), tmp.path().join("topic.ndjson"));
    std::fs::write(&none, "").unwrap();
    std::fs::write(&topic, records.join("\n") + "\n").unwrap();
    for from in [vec![a.output(), b.output()], vec![topic]] {
        let mut args: Vec<String> = vec!["invoice".into(), "--output".into(), two_path.display().to_string()];
        for f in &from {
            args.extend(["--verdicts".to_string(), f.display().to_string()]);
        }
        args.extend(["--until".to_string(), until.clone(), none.display().to_string()]);
        verdict(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let two = std::fs::read_to_string(&two_path).unwrap();
        assert!(one == two, "invoices from {from:?} differ from one instance's:\n{two}\n---\n{one}");
    }
    assert!(one.contains("\"final\"") || one.contains("\"draft\""), "{one}");
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
}
