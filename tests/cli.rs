//! End-to-end tests of the `verdict` binary on real files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_verdict"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    bin().current_dir(root()).args(args).output().expect("run verdict")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ev(id: &str, kind: &str, conv: &str, ts: &str, attrs: &str) -> String {
    let attrs = if attrs.is_empty() { String::new() } else { format!(r#","attrs":{attrs}"#) };
    format!(r#"{{"id":"{id}","type":"{kind}","tenant":"acme","conversation":"{conv}","ts":"{ts}"{attrs}}}"#)
}

#[test]
fn replay_sample_writes_verdicts_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.ndjson");
    let summary = dir.path().join("s.json");
    let o = run(&[
        "replay",
        "--output",
        out.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
        "examples/sample.ndjson",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    assert!(stderr.contains("verdicts ai_resolution:"), "{stderr}");
    let verdicts = ndjson(&out);
    assert!(verdicts.len() > 50, "only {} verdicts", verdicts.len());
    let ids: HashSet<_> = verdicts.iter().map(|v| v["verdict_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), verdicts.len(), "a verdict id appears twice");
    for v in &verdicts {
        for field in ["outcome", "tenant", "conversation", "reason", "amount", "currency", "cost", "decided_at"] {
            assert!(v[field].is_string(), "{field} in {v}");
        }
        assert!(v["rule_version"].as_str().unwrap().starts_with("sha256:"));
        assert!(!v["events"].as_array().unwrap().is_empty());
        if v["billable"] == true {
            assert!(matches!(v["tier"].as_u64(), Some(1..=3)), "{v}");
            assert_ne!(v["amount"], "0");
        } else {
            assert!(v["tier"].is_null());
            assert_eq!(v["amount"], "0");
        }
    }
    let reasons: HashSet<_> = verdicts.iter().map(|v| v["reason"].as_str().unwrap()).collect();
    for r in ["resolved", "escalated", "abandoned", "no_ai_answer"] {
        assert!(reasons.contains(r), "no {r} verdict in the sample: {reasons:?}");
    }
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let counted: u64 = s["verdicts"]["ai_resolution"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(counted as usize, verdicts.len());
    // The usage aggregates are the sums of the verdict lines.
    let mut amount_by_tenant: BTreeMap<String, rust_decimal::Decimal> = BTreeMap::new();
    for v in &verdicts {
        *amount_by_tenant.entry(v["tenant"].as_str().unwrap().into()).or_default() +=
            v["amount"].as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap();
    }
    for (tenant, amount) in amount_by_tenant {
        let periods = s["usage"][&tenant].as_object().unwrap();
        let total: rust_decimal::Decimal =
            periods.values().map(|u| u["amount"].as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap()).sum();
        assert_eq!(total, amount, "usage of {tenant}");
        for u in periods.values() {
            let amount: rust_decimal::Decimal = u["amount"].as_str().unwrap().parse().unwrap();
            let cost: rust_decimal::Decimal = u["cost"].as_str().unwrap().parse().unwrap();
            let margin: rust_decimal::Decimal = u["margin"].as_str().unwrap().parse().unwrap();
            assert_eq!(margin, amount - cost);
        }
    }
}

#[test]
fn bad_input_is_dead_lettered_with_positions_and_never_stops_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let mut f = std::fs::File::create(&input).unwrap();
    let good = |id: &str, kind: &str, ts: &str| ev(id, kind, "c1", ts, "");
    writeln!(f, "{}", ev("e1", "conversation.started", "c1", "2026-06-12T10:00:00Z", r#"{"intent":"faq"}"#)).unwrap();
    writeln!(f, "not json at all").unwrap(); // line 2: malformed
    f.write_all(&[0xff, 0xfe, 0x00, b'{', b'\n']).unwrap(); // line 3: malformed (not UTF-8)
    writeln!(f, r#"{{"id":"x","type":"message.ai","tenant":"acme","ts":"2026-06-12T10:00:01Z"}}"#).unwrap(); // 4: invalid
    writeln!(f, "{}", good("e2", "message.ai", "2026-06-12T10:00:02Z")).unwrap(); // 5
    let big = format!(r#"{{"id":"big","pad":"{}"}}"#, "x".repeat(2 << 20));
    writeln!(f, "{big}").unwrap(); // 6: too_large (2 MiB)
    writeln!(f, "{}", good("e2", "message.ai", "2026-06-12T10:00:02Z")).unwrap(); // 7: duplicate
    writeln!(f, "{}", good("e3", "resolution.confirmed", "2026-06-12T10:10:00Z")).unwrap(); // 8
    writeln!(f, "{}", good("e4", "message.customer", "2026-06-12T10:00:03Z")).unwrap(); // 9: late
    writeln!(f).unwrap(); // 10: blank, skipped
    writeln!(f, "{}", good("e5", "llm.call", "2026-06-13T11:00:00Z")).unwrap(); // 11: after the deadline
    let mut random = vec![0u8; 4096];
    let mut x: u32 = 12345;
    for b in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    f.write_all(&random).unwrap();
    drop(f);

    let out = dir.path().join("v.ndjson");
    let dl = dir.path().join("dl.ndjson");
    let summary = dir.path().join("s.json");
    let o = run(&[
        "replay",
        "--output",
        out.to_str().unwrap(),
        "--dead-letter",
        dl.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let dead = ndjson(&dl);
    let by_line: HashMap<u64, &Value> = dead.iter().map(|d| (d["line"].as_u64().unwrap(), d)).collect();
    assert_eq!(by_line[&2]["reason"], "malformed");
    assert_eq!(by_line[&3]["reason"], "malformed");
    assert!(by_line[&3]["record_base64"].is_string());
    assert_eq!(by_line[&4]["reason"], "invalid");
    assert_eq!(by_line[&4]["error"], "field `conversation` is missing");
    assert_eq!(by_line[&6]["reason"], "too_large");
    assert!(by_line[&6]["size"].as_u64().unwrap() > 2 << 20);
    assert_eq!(by_line[&9]["reason"], "late");
    assert!(by_line[&9]["error"].as_str().unwrap().contains("watermark"));
    for d in &dead {
        assert_eq!(d["source"], input.to_str().unwrap());
        assert!(d["offset"].is_u64());
    }
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["duplicates"], 1);
    assert_eq!(s["rejected"]["late"], 1);
    assert_eq!(s["rejected"]["too_large"], 1);
    let rejected: u64 = s["rejected"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(rejected as usize, dead.len(), "every rejection is dead-lettered");
    // The conversation still decides: resolved at confirmation + 24h, e5 came after and is ignored.
    let v = ndjson(&out);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["reason"], "resolved");
    assert_eq!(v[0]["decided_at"], "2026-06-13T10:10:00Z");
    assert_eq!(v[0]["events"], serde_json::json!(["e1", "e2", "e3"]));
    assert_eq!(s["ignored_after_decision"], 1);
}

#[test]
fn empty_input_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, b"").unwrap();
    let o = run(&["replay", empty.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty());

    let mut child = bin()
        .current_dir(root())
        .args(["replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = [
        ev("a", "conversation.started", "c", "2026-06-12T10:00:00Z", ""),
        ev("b", "escalated", "c", "2026-06-12T10:01:00Z", ""),
    ];
    child.stdin.take().unwrap().write_all(lines.join("\n").as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reason"], "escalated");
    assert_eq!(v["decided_at"], "2026-06-12T10:01:00Z");
}

#[test]
fn cannot_run_exits_non_zero_with_a_clear_message() {
    let o = run(&["replay", "/nonexistent/input.ndjson"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("cannot read input /nonexistent/input.ndjson"), "{}", text(&o.stderr));

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("rules/prices.toml"), dir.path().join("prices.toml")).unwrap();
    std::fs::write(dir.path().join("ai_resolution.rhai"), "fn on_escalated(c, e) {\n  c.not_billable(\"x\"\n}\n")
        .unwrap();
    let o = run(&["replay", "--rules", dir.path().to_str().unwrap(), "examples/sample.ndjson"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("ai_resolution.rhai:3:"), "{err}");
    let o = run(&["check", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("ai_resolution.rhai:3:"));
}

#[test]
fn an_input_that_cannot_be_read_keeps_the_verdicts_decided_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (full, part) = (dir.path().join("full.ndjson"), dir.path().join("part.ndjson"));
    let o = run(&["replay", "--output", full.to_str().unwrap(), "examples/sample.ndjson"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(&["replay", "--output", part.to_str().unwrap(), "examples/sample.ndjson", "/nonexistent/next.ndjson"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("cannot read input /nonexistent/next.ndjson"), "{}", text(&o.stderr));
    // Everything the first input decided, its last records included, is written. The
    // sample's windows all close before its last event, so that is its whole output.
    let (full, part) = (std::fs::read(full).unwrap(), std::fs::read(part).unwrap());
    assert_eq!(part.iter().filter(|&&b| b == b'\n').count(), 369);
    assert!(part == full);
}

#[test]
fn check_and_test_the_shipped_rules() {
    let o = run(&["check", "rules"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("ok ai_resolution sha256:"));
    assert!(text(&o.stdout).contains("; 6 of 6 compiled;"), "{}", text(&o.stdout));
    let o = run(&["test", "rules"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains(" 0 failed"));
}

#[test]
fn a_failing_fixture_fails_verdict_test() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ai_resolution.rhai", "prices.toml"] {
        std::fs::copy(root().join("rules").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("ai_resolution.test.toml"),
        r#"[[case]]
name = "wrong on purpose"
tenant = "t"
conversation = "c"
events = [ { type = "escalated", ts = "2026-06-12T10:00:00Z" } ]
expect = [ { billable = true } ]
"#,
    )
    .unwrap();
    let o = run(&["test", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(out.contains("FAIL") && out.contains("billable expected true, got false"), "{out}");
}

#[test]
fn an_endless_loop_rule_becomes_a_rule_error_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("rules/prices.toml"), dir.path().join("prices.toml")).unwrap();
    std::fs::write(
        dir.path().join("ai_resolution.rhai"),
        r#"
fn on_escalated(c, e) { if e.attr("loop") == true { loop {} } c.not_billable("escalated"); }
"#,
    )
    .unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(
        &input,
        [
            ev("a", "escalated", "c1", "2026-06-12T10:00:00Z", r#"{"loop":true}"#),
            ev("b", "escalated", "c2", "2026-06-12T10:00:01Z", ""),
        ]
        .join("\n"),
    )
    .unwrap();
    let o = run(&["replay", "--rules", dir.path().to_str().unwrap(), input.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: Vec<Value> = text(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["reason"], "rule_error");
    assert!(v[0]["error"].as_str().unwrap().contains("operations"), "{}", v[0]);
    assert_eq!(v[0]["billable"], false);
    assert_eq!(v[1]["reason"], "escalated");
}

fn gen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut full = vec!["gen", "--output", path.to_str().unwrap()];
    full.extend_from_slice(args);
    let o = run(&full);
    assert!(o.status.success(), "{}", text(&o.stderr));
    path
}

#[test]
fn a_generated_day_replays_byte_identically_with_one_verdict_per_decidable_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let input = gen(
        dir.path(),
        "day.ndjson",
        &["--conversations", "3000", "--seed", "11", "--duplicates", "0.01", "--span", "120h"],
    );
    let again = gen(
        dir.path(),
        "day2.ndjson",
        &["--conversations", "3000", "--seed", "11", "--duplicates", "0.01", "--span", "120h"],
    );
    assert_eq!(std::fs::read(&input).unwrap(), std::fs::read(&again).unwrap(), "gen is not reproducible");

    let mut outs = Vec::new();
    for i in 0..2 {
        let out = dir.path().join(format!("v{i}.ndjson"));
        let o = run(&["replay", "--output", out.to_str().unwrap(), input.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        outs.push(std::fs::read(&out).unwrap());
    }
    assert!(!outs[0].is_empty());
    assert_eq!(outs[0], outs[1], "two replays of the same input differ");

    // Every conversation whose last event is 72 h before the end is decidable: exactly one verdict.
    let mut last: HashMap<(String, String), i64> = HashMap::new();
    let mut max_ts = i64::MIN;
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let ts = verdict::timestamp::parse_rfc3339(e["ts"].as_str().unwrap()).unwrap();
        let key = (e["tenant"].as_str().unwrap().to_string(), e["conversation"].as_str().unwrap().to_string());
        let l = last.entry(key).or_insert(ts);
        *l = (*l).max(ts);
        max_ts = max_ts.max(ts);
    }
    let mut verdicts: HashMap<(String, String), usize> = HashMap::new();
    for line in text(&outs[0]).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        *verdicts
            .entry((v["tenant"].as_str().unwrap().into(), v["conversation"].as_str().unwrap().into()))
            .or_default() += 1;
    }
    let horizon = 72 * verdict::timestamp::NANOS_PER_HOUR;
    let mut decidable = 0;
    for (key, l) in &last {
        let n = verdicts.get(key).copied().unwrap_or(0);
        assert!(n <= 1, "{key:?} has {n} verdicts");
        if l + horizon <= max_ts {
            decidable += 1;
            assert_eq!(n, 1, "{key:?} is decidable but has no verdict");
        }
    }
    assert!(verdicts.keys().all(|k| last.contains_key(k)));
    assert!(decidable > 0 || last.len() < 10);
}

#[test]
fn cloudevents_input_and_zero_lateness() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ce.ndjson");
    let ce = |id: &str, kind: &str, time: &str, data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/platform","type":"{kind}","time":"{time}","subject":"c7","data":{data}}}"#
        )
    };
    std::fs::write(
        &input,
        [
            ce(
                "a",
                "conversation.started",
                "2026-06-12T10:00:00Z",
                r#"{"tenant":"flatrate","intent":"billing_dispute"}"#,
            ),
            ce("b", "llm.call", "2026-06-12T10:00:01Z", r#"{"tenant":"flatrate","cost_usd":0.25}"#),
            ce("c", "message.ai", "2026-06-12T10:00:02Z", r#"{"tenant":"flatrate"}"#),
            ce("d", "conversation.closed", "2026-06-12T10:00:02Z", r#"{"tenant":"flatrate"}"#),
            ce("e", "message.customer", "2026-06-13T10:00:03Z", r#"{"tenant":"flatrate"}"#),
        ]
        .join("\n"),
    )
    .unwrap();
    let o = run(&["replay", "--lateness", "0s", input.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tenant"], "flatrate");
    assert_eq!(v["conversation"], "c7");
    assert_eq!(v["reason"], "resolved");
    assert_eq!(v["tier"], 3);
    assert_eq!(v["amount"], "0.99", "flat per-tenant price");
    assert_eq!(v["cost"], "0.25");
    assert_eq!(v["decided_at"], "2026-06-13T10:00:02Z");
    assert_eq!(v["events"], serde_json::json!(["a", "b", "c", "d"]));
}
