//! `verdict invoice` and `verdict replay --invoices` on the real binary: a month of a
//! tenant on a hybrid plan, worked out by hand (fee, included, overage, a dispute opened
//! a second after its verdict's deadline, before the verdict is even decided, then
//! accepted, a prepaid grant), as JSON and CSV; bad plans refused by `verdict check`
//! with their line; bad and late billing events dead-lettered; the service refusing
//! billing events until it bills.

mod common;

use std::path::Path;
use std::process::Command;

use common::{copy_dir, ev, root, Service};
use serde_json::Value;

const PLANS: &str = r#"
[plans.hybrid]
platform_fee = "5.00"
included = { ai_resolution = 1 }
overage = { ai_resolution = "0.75" }

[tenants.acme]
assignments = [ { plan = "hybrid", from = "2026-06" } ]
external_id = "cus_acme"
"#;

fn rules_with(dir: &Path, plans: &str) -> std::path::PathBuf {
    let rules = dir.join("rules");
    copy_dir(&root().join("rules"), &rules);
    std::fs::write(rules.join("plans.toml"), plans).unwrap();
    rules
}

fn verdict(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn resolved(c: &str, intent: &str, resolved_at: &str) -> Vec<String> {
    // Started, answered, confirmed: billable at the confirmation plus 24 h.
    let at = |s: &str| format!("2026-06-{s}Z");
    vec![
        ev(
            &format!("{c}-1"),
            "conversation.started",
            c,
            &at(&format!("{resolved_at}:00:00")),
            &format!(r#"{{"intent":"{intent}"}}"#),
        ),
        ev(&format!("{c}-2"), "message.ai", c, &at(&format!("{resolved_at}:00:01")), ""),
        ev(&format!("{c}-3"), "resolution.confirmed", c, &at(&format!("{resolved_at}:00:02")), ""),
    ]
}

fn billing(id: &str, kind: &str, conv: &str, ts: &str, attrs: &str) -> String {
    ev(id, kind, conv, ts, attrs)
}

/// The month: c1, c2 (tier 1), c3 (tier 2) resolved; c4 escalated; a grant of 1.00; c2
/// disputed a second after its deadline and accepted; a July event so June closes.
fn month(dir: &Path) -> std::path::PathBuf {
    let mut lines = Vec::new();
    lines.extend(resolved("c1", "password_reset", "10T10"));
    lines.extend(resolved("c2", "faq", "10T11"));
    lines.extend(resolved("c3", "refund", "12T09"));
    lines.push(ev("c4-1", "conversation.started", "c4", "2026-06-12T10:00:00Z", ""));
    lines.push(ev("c4-2", "escalated", "c4", "2026-06-12T10:05:00Z", ""));
    lines.push(billing("g1", "credit.granted", "-", "2026-06-01T00:00:00Z", r#"{"amount":"1.00","note":"welcome"}"#));
    lines.push(billing(
        "d1",
        "dispute.opened",
        "c2",
        "2026-06-11T11:00:03Z",
        r#"{"outcome":"ai_resolution","reason":"came back"}"#,
    ));
    lines.push(billing("d2", "dispute.accepted", "c2", "2026-06-15T09:00:00Z", r#"{"outcome":"ai_resolution"}"#));
    lines.push(ev("z-1", "conversation.started", "z", "2026-07-02T00:00:00Z", ""));
    // As the platform sends them: in time order.
    lines.sort_by_key(|l| serde_json::from_str::<Value>(l).unwrap()["ts"].as_str().unwrap().to_string());
    let file = dir.join("month.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    file
}

#[test]
fn a_hybrid_month_worked_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = rules_with(tmp.path(), PLANS);
    let input = month(tmp.path());
    let (ok, out, err) = verdict(&["invoice", "--rules", rules.to_str().unwrap(), input.to_str().unwrap()]);
    assert!(ok, "{err}");
    let invoices: Value = serde_json::from_str(&out).unwrap();
    let acme: Vec<&Value> = invoices.as_array().unwrap().iter().filter(|i| i["tenant"] == "acme").collect();
    assert_eq!(acme.len(), 2, "{out}");
    let june = acme[0];
    assert_eq!((june["number"].as_str(), june["status"].as_str()), (Some("INV-acme-2026-06"), Some("final")));
    let lines: Vec<(String, u64, String)> = june["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (l["kind"].as_str().unwrap().into(), l["count"].as_u64().unwrap(), l["amount"].as_str().unwrap().into())
        })
        .collect();
    let want = [
        ("platform_fee", 1, "5.00"),
        // c1 is the first billable of the month: included.
        ("included", 1, "0.00"),
        // c2 and c3 beyond the allowance: 2 x 0.75, whatever their tier price.
        ("overage", 2, "1.50"),
        // c2's charge given back.
        ("dispute_credit", 1, "-0.75"),
        // 5.75 owed, the 1.00 granted drawn.
        ("prepaid_credit", 0, "-1.00"),
    ];
    let want: Vec<(String, u64, String)> = want.iter().map(|(k, n, a)| (k.to_string(), *n, a.to_string())).collect();
    assert_eq!(lines, want, "{june}");
    assert_eq!(june["total"], "4.75");
    assert_eq!(june["prepaid_balance"], "0.00");
    // Each line leads to its verdicts.
    let c2 = verdict_id("acme", "c2");
    assert_eq!(june["lines"][3]["verdicts"], serde_json::json!([c2]));
    assert_eq!(june["lines"][1]["verdicts"], serde_json::json!([verdict_id("acme", "c1")]));
    // July is open: a draft with the fee.
    assert_eq!((acme[1]["status"].as_str(), acme[1]["total"].as_str()), (Some("draft"), Some("5.00")));

    // CSV, and the filters.
    let (ok, csv, err) = verdict(&[
        "invoice",
        "--rules",
        rules.to_str().unwrap(),
        "--tenant",
        "acme",
        "--period",
        "2026-06",
        "--format",
        "csv",
        input.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "number,tenant,period,status,currency,plan,kind,outcome,unit_price,count,amount,total");
    assert_eq!(rows[3], "INV-acme-2026-06,acme,2026-06,final,USD,hybrid,overage,ai_resolution,0.75,2,1.50,4.75");
    assert_eq!(rows.len(), 6, "{csv}");

    // replay --invoices writes the same beside the verdicts.
    let file = tmp.path().join("invoices.json");
    let (ok, verdicts, err) = verdict(&[
        "replay",
        "--rules",
        rules.to_str().unwrap(),
        "--invoices",
        file.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(verdicts.lines().count(), 4, "c1, c2, c3 and c4 decided");
    assert_eq!(serde_json::from_str::<Value>(&std::fs::read_to_string(file).unwrap()).unwrap(), invoices);
}

fn verdict_id(tenant: &str, conv: &str) -> String {
    verdict::verdicts::verdict_id(tenant, conv, "ai_resolution")
}

#[test]
fn bad_plans_are_refused_by_check_with_their_line() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = rules_with(tmp.path(), "[plans.gold]\nplatform_fee = \"10\"\nminimum = 2000.0\n");
    let (ok, _, err) = verdict(&["check", rules.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("plans.toml:3") && err.contains("not exact"), "{err}");
    std::fs::write(
        rules.join("plans.toml"),
        "[tenants.acme]\nassignments = [ { plan = \"gold\", from = \"2026-06\" } ]\n",
    )
    .unwrap();
    let (ok, _, err) = verdict(&["check", rules.to_str().unwrap()]);
    assert!(!ok && err.contains("plans.toml:2") && err.contains("no plan `gold`"), "{err}");
}

#[test]
fn bad_and_late_billing_events_are_dead_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = rules_with(tmp.path(), PLANS);
    let lines = [
        ev("c-1", "conversation.started", "c", "2026-06-12T10:00:00Z", ""),
        billing("b1", "dispute.opened", "c", "2026-06-12T10:00:01Z", r#"{"reason":"no outcome"}"#),
        billing("b2", "credit.granted", "-", "2026-06-12T10:00:02Z", r#"{"amount":-5}"#),
        ev("c-2", "message.ai", "c", "2026-06-12T11:00:00Z", ""),
        billing("b3", "credit.granted", "-", "2026-06-12T10:00:03Z", r#"{"amount":"5.00"}"#),
        billing("b4", "credit.granted", "-", "2026-06-12T11:00:04Z", r#"{"amount":"5.00"}"#),
        billing("b4", "credit.granted", "-", "2026-06-12T11:00:04Z", r#"{"amount":"5.00"}"#),
    ];
    let input = tmp.path().join("in.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let dead = tmp.path().join("dead.ndjson");
    let summary = tmp.path().join("summary.json");
    let (ok, _, err) = verdict(&[
        "replay",
        "--rules",
        rules.to_str().unwrap(),
        "--dead-letter",
        dead.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let dead: Vec<Value> = common::ndjson(&dead);
    let got: Vec<(u64, &str)> =
        dead.iter().map(|d| (d["line"].as_u64().unwrap(), d["reason"].as_str().unwrap())).collect();
    assert_eq!(got, [(2, "invalid"), (3, "invalid"), (5, "late")], "{dead:?}");
    assert!(dead[0]["error"].as_str().unwrap().contains("attrs.outcome"));
    assert!(dead[1]["error"].as_str().unwrap().contains("attrs.amount"));
    let s: Value = serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    assert_eq!((s["billing_events"].as_u64(), s["billing_duplicates"].as_u64()), (Some(1), Some(1)), "{s}");
    assert_eq!(s["events_accepted"], 2, "billing events are not conversation events");
}

#[test]
fn the_service_bills_live_and_keeps_its_invoices_across_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--wall-clock",
        "false",
        "--reject-future",
        "false",
        "--watch-rules",
        "false",
        "--checkpoint-interval",
        "100ms",
    ];
    let mut svc = Service::start(&args);
    std::fs::write(svc.dir.path().join("rules/plans.toml"), PLANS).unwrap();
    assert_eq!(svc.post("/v1/rules/reload", "").0, 200);
    let input = month(tmp.path());
    let body = std::fs::read_to_string(&input).unwrap();
    let (status, answer) = svc.post("/v1/events", &body);
    assert_eq!((status, answer["rejected"].clone()), (200, serde_json::json!([])), "{answer}");

    // The same June as `verdict invoice` gives, worked out above.
    let all = svc.wait_for("/v1/invoices?tenant=acme", |v| v[0]["status"] == "final");
    assert_eq!(all[0]["total"], "4.75", "{all}");
    assert_eq!(all[0]["lines"][2]["kind"], "overage");
    assert_eq!(all[0]["lines"][2]["verdict_count"], 2);
    let page = svc.get("/v1/invoices/acme/2026-06/lines/2/verdicts?limit=1").1;
    assert_eq!((page["total"].as_u64(), page["verdicts"].as_array().map(Vec::len)), (Some(2), Some(1)), "{page}");
    let one = svc.get(&format!("/v1/verdicts/{}", page["verdicts"][0].as_str().unwrap())).1;
    assert_eq!(one["verdict"]["billable"], true, "each verdict with its events: {one}");
    let csv = ureq::get(&format!("http://127.0.0.1:{}/v1/invoices/acme/2026-06", svc.port))
        .set("Accept", "text/csv")
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        csv.contains("INV-acme-2026-06,acme,2026-06,final,USD,hybrid,overage,ai_resolution,0.75,2,1.50,4.75"),
        "{csv}"
    );
    let disputes = svc.get("/v1/disputes?tenant=acme&status=accepted").1;
    assert_eq!(
        (disputes[0]["conversation"].as_str(), disputes[0]["credit"].as_str()),
        (Some("c2"), Some("0.75")),
        "{disputes}"
    );
    assert_eq!(svc.get("/v1/balance?tenant=acme").1["balance"], "0.00");
    assert_eq!(svc.get("/v1/invoices").0, 400, "the tenant is required");
    let statements = june_statements(&svc);
    let usage = svc.get("/v1/usage?tenant=acme&period=2026-06").1;
    let charged: Vec<_> =
        ["charges", "charged", "credits", "credited", "amount"].iter().map(|k| usage[k].clone()).collect();
    // Listed at 0.50 + 0.50 + 1.50 by tier; charged 0 + 0.75 + 0.75 under the plan.
    assert_eq!(charged, serde_json::json!([3, "1.50", 1, "0.75", "2.50"]).as_array().unwrap().clone(), "{usage}");
    assert_eq!(svc.get("/v1/statements/acme/2026-06-31").0, 400, "no such day");
    // June is closed: its verdicts are looked up in the history (none left in memory),
    // and the gauges show July's draft: the fee, one outcome still included.
    metrics_show(
        &svc,
        &[
            "verdict_indexed_verdicts 0",
            r#"verdict_included_outcomes_remaining{tenant="acme",outcome="ai_resolution"} 1"#,
            r#"verdict_open_invoice_total_amount{tenant="acme",currency="USD"} 5"#,
            r#"verdict_period_charges{tenant="acme",kind="overage"} 0"#,
            r#"verdict_prepaid_balance_amount{tenant="acme",currency="USD"} 0"#,
        ],
    );

    // Closed June may not change: moving acme's plan is refused, and nothing changes.
    std::fs::write(svc.dir.path().join("rules/plans.toml"), PLANS.replace("2026-06", "2026-07")).unwrap();
    let (status, r) = svc.post("/v1/rules/reload", "");
    assert_eq!(status, 422, "{r}");
    assert!(r["error"].as_str().unwrap().contains("closed period"), "{r}");

    // A crash after a checkpoint has closed June: the edit still on disk is refused at
    // the restart too; with the plans put back, the invoices come back the same.
    std::thread::sleep(std::time::Duration::from_millis(500));
    svc.kill9();
    let (code, err) = svc.start_fails(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("a closed period, would change"), "{err}");
    std::fs::write(svc.dir.path().join("rules/plans.toml"), PLANS).unwrap();
    svc.spawn(&[]);
    assert_eq!(svc.get("/v1/invoices?tenant=acme").1, all);
    assert_eq!(june_statements(&svc), statements);
    assert_eq!(svc.get("/v1/usage?tenant=acme&period=2026-06").1, usage);
}

/// Waits (gauges are published on a timer) until `/metrics` has every line of `want`.
fn metrics_show(svc: &Service, want: &[&str]) {
    let started = std::time::Instant::now();
    loop {
        let m = svc.metrics();
        let missing: Vec<&&str> = want.iter().filter(|w| !m.lines().any(|l| l == **w)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(started.elapsed().as_secs() < 20, "/metrics lacks {missing:?}:\n{m}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Every June statement of acme, checked against the invoice: each charge and credit
/// of the month on the day of its verdict or accept.
fn june_statements(svc: &Service) -> Vec<Value> {
    let days: Vec<Value> = (1..=30).map(|d| svc.get(&format!("/v1/statements/acme/2026-06-{d:02}")).1).collect();
    let charges: Vec<(String, String, String)> = days
        .iter()
        .flat_map(|s| s["charges"].as_array().unwrap().iter())
        .map(|c| {
            (
                c["verdict_id"].as_str().unwrap().into(),
                c["kind"].as_str().unwrap().into(),
                c["price"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [("c1", "included", "0"), ("c2", "overage", "0.75"), ("c3", "overage", "0.75")];
    let want: Vec<(String, String, String)> =
        want.iter().map(|(c, k, p)| (verdict_id("acme", c), k.to_string(), p.to_string())).collect();
    assert_eq!(charges, want, "{days:?}");
    let credits: Vec<&Value> = days.iter().filter(|s| s["credits"].as_array().is_some_and(|c| !c.is_empty())).collect();
    assert_eq!(credits.len(), 1);
    assert_eq!((credits[0]["day"].as_str(), credits[0]["total"].as_str()), (Some("2026-06-15"), Some("-0.75")));
    assert!(days.iter().all(|d| d["complete"] == true && d["currency"] == "USD"));
    days
}
