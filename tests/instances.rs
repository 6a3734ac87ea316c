//! Rating across instances, on the real binary: two instances each classify half of the
//! conversations (as each would own half of the partitions), and `verdict invoice
//! --verdicts` rates what both decided, with the billing events, to exactly the invoices
//! one instance gives for the whole stream; verdicts delivered twice (at-least-once) are
//! charged once.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn verdict(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict")).current_dir(common::root()).args(args).output().unwrap();
    assert!(out.status.success(), "verdict {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn ts_of(line: &str) -> String {
    serde_json::from_str::<Value>(line).unwrap()["ts"].as_str().unwrap().to_string()
}

fn write(path: &Path, lines: &[String]) -> String {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_string()
}

fn billing(id: &str, kind: &str, tenant: &str, conv: &str, at: i64, attrs: &str) -> String {
    let ts = verdict::timestamp::format_rfc3339(at);
    format!(
        r#"{{"id":"{id}","type":"{kind}","tenant":"{tenant}","conversation":"{conv}","ts":"{ts}","attrs":{attrs}}}"#
    )
}

#[test]
fn two_instances_give_the_invoices_of_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let gen = dir.join("gen.ndjson");
    verdict(&["gen", "--conversations", "1500", "--tenants", "12", "--seed", "11", "--output", gen.to_str().unwrap()]);
    let mut events: Vec<String> = std::fs::read_to_string(&gen).unwrap().lines().map(str::to_string).collect();
    // Every instance's clock reaches the same point (a partition's last event, or the
    // wall clock): an event two days after the stream, which each instance gets.
    let last = events.iter().map(|e| ts_of(e)).max().unwrap();
    let end = verdict::timestamp::parse_rfc3339(&last).unwrap() + 48 * 3_600_000_000_000;
    let until = verdict::timestamp::format_rfc3339(end);
    let sentinel = format!(
        r#"{{"id":"end","type":"conversation.started","tenant":"zz-end","conversation":"end","ts":"{until}"}}"#
    );

    // Disputes of three billable verdicts (two accepted, one rejected) and a grant.
    let replayed = verdict(&["replay", "--dead-letter", "/dev/null", gen.to_str().unwrap()]);
    let billable: Vec<Value> =
        replayed.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["billable"] == true).collect();
    assert!(billable.len() > 100, "{} billable verdicts", billable.len());
    let hour = 3_600_000_000_000i64;
    let mut bills = Vec::new();
    for (i, v) in billable.iter().take(3).enumerate() {
        let (tenant, conv) = (v["tenant"].as_str().unwrap(), v["conversation"].as_str().unwrap());
        let at = verdict::timestamp::parse_rfc3339(v["decided_at"].as_str().unwrap()).unwrap();
        let outcome = r#"{"outcome":"ai_resolution","reason":"came back"}"#;
        bills.push(billing(&format!("d{i}"), "dispute.opened", tenant, conv, at + hour, outcome));
        let close = if i < 2 { "dispute.accepted" } else { "dispute.rejected" };
        bills.push(billing(&format!("d{i}-c"), close, tenant, conv, at + 2 * hour, r#"{"outcome":"ai_resolution"}"#));
    }
    let june = verdict::timestamp::parse_rfc3339("2026-06-12T00:00:00Z").unwrap();
    bills.push(billing("g1", "credit.granted", "tenant-001", "-", june, r#"{"amount":"25.00"}"#));
    bills.sort_by_key(|l| ts_of(l));

    // One instance: every event, billing ones in time among them.
    events.push(sentinel.clone());
    let mut all: Vec<String> = events.iter().chain(&bills).cloned().collect();
    all.sort_by_key(|l| ts_of(l));
    let all_path = write(&dir.join("all.ndjson"), &all);
    let one: Value = serde_json::from_str(&verdict(&["invoice", &all_path])).unwrap();

    // Two instances, conversations split between them as partitions would be.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for e in &events {
        let conv = serde_json::from_str::<Value>(e).unwrap()["conversation"].as_str().unwrap_or("").to_string();
        let shard = conv.bytes().map(u32::from).sum::<u32>() % 2;
        if shard == 0 { &mut a } else { &mut b }.push(e.clone());
    }
    assert!(a.len() > 1000 && b.len() > 1000, "{} and {}", a.len(), b.len());
    if a.last() != Some(&sentinel) {
        a.push(sentinel.clone());
    }
    if b.last() != Some(&sentinel) {
        b.push(sentinel.clone());
    }
    let (va, vb) = (dir.join("va.ndjson"), dir.join("vb.ndjson"));
    for (shard, out) in [(&a, &va), (&b, &vb)] {
        let input = write(&dir.join("shard.ndjson"), shard);
        verdict(&["replay", "--output", out.to_str().unwrap(), "--dead-letter", "/dev/null", &input]);
    }
    // At-least-once delivery: some of the first instance's verdicts arrive twice.
    let again: Vec<String> = std::fs::read_to_string(&va).unwrap().lines().take(200).map(str::to_string).collect();
    let mut vb_lines: Vec<String> = std::fs::read_to_string(&vb).unwrap().lines().map(str::to_string).collect();
    vb_lines.extend(again);
    write(&vb, &vb_lines);
    let bills_path = write(&dir.join("billing.ndjson"), &bills);
    let two: Value = serde_json::from_str(&verdict(&[
        "invoice",
        "--verdicts",
        va.to_str().unwrap(),
        "--verdicts",
        vb.to_str().unwrap(),
        "--until",
        &until,
        &bills_path,
    ]))
    .unwrap();

    let invoices = one.as_array().unwrap();
    assert!(invoices.len() >= 12, "{} invoices", invoices.len());
    let credits = invoices
        .iter()
        .flat_map(|i| i["lines"].as_array().unwrap())
        .filter(|l| l["kind"] == "dispute_credit")
        .map(|l| l["count"].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(credits, 2, "the two accepted disputes are credited");
    let brief = |v: &Value| -> Vec<String> {
        let lines = |i: &Value| -> String {
            i["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| format!("{} {} {}", l["kind"], l["count"], l["amount"]))
                .collect::<Vec<_>>()
                .join("; ")
        };
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{} {} {}: {}", i["number"], i["status"], i["total"], lines(i)))
            .collect()
    };
    assert_eq!(brief(&one), brief(&two), "two instances' verdicts rate to the invoices of one");
    assert!(one == two, "the same invoices, down to the verdicts of every line");

    // A verdict file with a broken line is refused with its place, not skipped.
    std::fs::write(dir.join("bad.ndjson"), "{\"verdict_id\":\"x\"}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(common::root())
        .args(["invoice", "--verdicts", dir.join("bad.ndjson").to_str().unwrap(), &bills_path])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.ndjson:1: not a verdict"), "{err}");
}
