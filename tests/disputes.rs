//! The dispute API on the real binary: every path over HTTP (opened, each refusal
//! cause, accepted with its credit and invoice, rejected, a retry, a late call, bad
//! bodies), answered at once with what rating will decide, and then held to what rating
//! did decide after a SIGKILL and a restart: the dispute list with its review clock, the
//! invoice's credit line, the credit log and the dispute metrics.

mod common;

use common::Service;
use serde_json::{json, Value};

const ARGS: [&str; 4] = ["--wall-clock", "false", "--reject-future", "false"];
use common::acme::{at, event, T0};

/// c1, c3, c4, c5 resolved with an AI answer (billable at 0.50, 24 h later); c2 escalated.
fn stream() -> String {
    let mut lines = Vec::new();
    for c in ["c1", "c2", "c3", "c4", "c5"] {
        lines.push((0, event(&format!("{c}-s"), "conversation.started", c, 0, json!({"intent": "faq"}))));
        lines.push((60, event(&format!("{c}-a"), "message.ai", c, 60, json!({}))));
        let end = if c == "c2" { "escalated" } else { "resolution.confirmed" };
        lines.push((120, event(&format!("{c}-e"), end, c, 120, json!({}))));
    }
    // Thirty hours on: every verdict is decided and rated.
    lines.push((T1, event("tick-1", "message.customer", "tick", T1, json!({}))));
    lines.sort_by_key(|(t, _)| *t);
    lines.into_iter().map(|(_, l)| l).collect::<Vec<_>>().join("\n")
}

const T1: i64 = 30 * 3600;

fn open(svc: &Service, conv: &str, minute: i64, extra: Value) -> (u16, Value) {
    let mut body = json!({"tenant": "acme", "conversation": conv, "outcome": "ai_resolution",
                          "reason": "the customer wrote back", "ts": at(T1 + minute * 60)});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    svc.post("/v1/disputes", &body.to_string())
}

fn close(svc: &Service, vid: &str, verb: &str, minute: i64, note: &str) -> (u16, Value) {
    svc.post(&format!("/v1/disputes/{vid}/{verb}"), &json!({"note": note, "ts": at(T1 + minute * 60)}).to_string())
}

fn gauge(metrics: &str, name: &str) -> Option<String> {
    metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).map(str::to_string)
}

#[test]
fn disputes_over_http_are_answered_logged_and_rated_across_a_crash() {
    let mut svc = Service::start(&ARGS);
    let (s, v) = svc.post("/v1/events", &stream());
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(16)), "{v}");
    svc.wait_for("/v1/usage?tenant=acme&period=2026-06", |u| u["charges"] == 4);

    // Opened: its review is due 48 hours later (payg's default).
    let (s, a) = open(&svc, "c1", 1, json!({}));
    assert_eq!((s, a["status"].as_str()), (201, Some("open")), "{a}");
    assert_eq!(a["due_at"], at(T1 + 60 + 48 * 3600));
    assert_eq!(a["rated"], false, "the watermark has not passed it yet");
    let vid1 = a["verdict_id"].as_str().unwrap().to_string();

    // Each refusal, with its cause, kept by the ledger.
    let (s, a) = open(&svc, "c1", 2, json!({}));
    assert_eq!((s, a["cause_code"].as_str()), (409, Some("already_disputed")), "{a}");
    let (s, a) = open(&svc, "c2", 3, json!({}));
    assert_eq!((s, a["cause_code"].as_str()), (422, Some("not_billable")), "{a}");
    let (s, a) = open(&svc, "c-none", 4, json!({}));
    assert_eq!((s, a["cause_code"].as_str()), (404, Some("unknown_verdict")), "{a}");
    assert!(a["cause"].as_str().unwrap().contains("c-none"), "{a}");

    // Accepted: the credit is the charge, on the June invoice; a second accept is refused.
    let (s, a) = close(&svc, &vid1, "accept", 5, "agreed");
    assert_eq!((s, a["status"].as_str(), a["credit"].as_str()), (200, Some("accepted"), Some("0.50")), "{a}");
    assert_eq!((a["invoice"].as_str(), a["currency"].as_str()), (Some("INV-acme-2026-06"), Some("USD")));
    let (s, a) = close(&svc, &vid1, "accept", 6, "again");
    assert_eq!((s, a["cause_code"].as_str()), (409, Some("no_open_dispute")), "{a}");

    // Rejected.
    let (_, a) = open(&svc, "c4", 7, json!({}));
    let vid4 = a["verdict_id"].as_str().unwrap().to_string();
    let (s, a) = close(&svc, &vid4, "reject", 8, "works as designed");
    assert_eq!((s, a["status"].as_str(), a["credit"].clone()), (200, Some("rejected"), Value::Null), "{a}");

    // A client's retry with its own id is the same dispute, not a second one.
    let (s, first) = open(&svc, "c5", 9, json!({"id": "portal-req-1"}));
    assert_eq!((s, first["event"].as_str()), (201, Some("portal-req-1")), "{first}");
    let (s, again) = open(&svc, "c5", 9, json!({"id": "portal-req-1"}));
    assert_eq!((s, again["status"].clone()), (201, first["status"].clone()), "{again}");

    // Bad calls: a clear answer, nothing logged.
    let bad = [
        ("/v1/disputes", r#"{"tenant":"nobody","conversation":"c1","outcome":"ai_resolution"}"#, 404, "unknown tenant"),
        ("/v1/disputes", r#"{"tenant":"acme","conversation":"c1","outcome":"nope"}"#, 404, "unknown outcome"),
        ("/v1/disputes", r#"{"tenant":"acme","conversation":"c1"#, 400, "not a valid request"),
        ("/v1/disputes", r#"{"conversation":"c1","outcome":"ai_resolution"}"#, 400, "missing field `tenant`"),
        ("/v1/disputes", r#"{"tenant":"acme","conversation":"","outcome":"ai_resolution"}"#, 400, "`conversation`"),
        ("/v1/disputes", r#"{"tenant":"acme","conversation":"c1","outcome":"ai_resolution","ts":"June"}"#, 400, "`ts`"),
        ("/v1/disputes/0123/accept", "{}", 404, "unknown verdict 0123"),
        ("/v1/disputes/0123/reject", "", 404, "unknown verdict"),
    ];
    for (path, body, status, says) in bad {
        let (s, a) = svc.post(path, body);
        assert_eq!(s, status, "{path} {body}: {a}");
        assert!(a["error"].as_str().unwrap_or_default().contains(says), "{path} {body}: {a}");
    }
    // A dispute stamped before the watermark is late, and says so.
    let (s, a) = svc.post(
        "/v1/disputes",
        &json!({"tenant":"acme","conversation":"c3","outcome":"ai_resolution","ts": T0}).to_string(),
    );
    assert_eq!((s, a["reason"].as_str()), (422, Some("late")), "{a}");

    // Every call that was answered is in the log: a crash loses none.
    svc.kill9();
    svc.spawn(&[]);
    // Three days on: every dispute event is rated (June is still open).
    let (s, _) = svc.post("/v1/events", &event("tick-2", "message.customer", "tick", 72 * 3600, json!({})));
    assert_eq!(s, 200);
    let list = svc.wait_for("/v1/disputes?tenant=acme", |d| d.as_array().is_some_and(|a| a.len() == 7));
    let got: Vec<(String, String, Option<String>)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let cause = d["cause"].as_str().map(|c| verdict::ledger::rating::Refusal::code_of(c).to_string());
            (d["conversation"].as_str().unwrap().to_string(), d["status"].as_str().unwrap().to_string(), cause)
        })
        .collect();
    let want = [
        ("c1", "accepted", None),
        ("c1", "refused", Some("already_disputed")),
        ("c2", "refused", Some("not_billable")),
        ("c-none", "refused", Some("unknown_verdict")),
        ("c1", "refused", Some("no_open_dispute")),
        ("c4", "rejected", None),
        ("c5", "open", None),
    ];
    let want: Vec<(String, String, Option<String>)> =
        want.iter().map(|(c, s, k)| (c.to_string(), s.to_string(), k.map(str::to_string))).collect();
    assert_eq!(got, want, "{list:#}");
    let d1 = &list[0];
    assert_eq!((d1["credit"].as_str(), d1["credit_period"].as_str()), (Some("0.50"), Some("2026-06")));
    assert_eq!(d1["note"], "agreed");
    // The open one is months past its review (the wall clock is in December).
    let d5 = &list[6];
    assert_eq!((d5["overdue"].as_bool(), d5["due_at"].as_str()), (Some(true), Some(at(T1 + 540 + 48 * 3600).as_str())));
    assert!(d5["age_seconds"].as_i64().unwrap() > 48 * 3600, "{d5}");
    assert_eq!(svc.get("/v1/disputes?tenant=acme&status=open").1.as_array().unwrap().len(), 1);

    // The credit is on the invoice once, and in the credit log once.
    let inv = svc.get("/v1/invoices/acme/2026-06").1;
    let credit: Vec<&Value> =
        inv["lines"].as_array().unwrap().iter().filter(|l| l["kind"] == "dispute_credit").collect();
    assert_eq!(credit.len(), 1, "{inv:#}");
    assert_eq!((credit[0]["count"].as_u64(), credit[0]["amount"].as_str()), (Some(1), Some("-0.50")));
    let log = common::ndjson(&svc.state().join("credits.ndjson"));
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["verdict_id"], vid1.as_str());

    // Gauges: by status, overdue, and June's rate (3 opened of 4 billable).
    let m = svc.wait_for_metric("verdict_disputes_overdue{tenant=\"acme\"}", "1");
    assert_eq!(gauge(&m, "verdict_disputes{tenant=\"acme\",status=\"refused\"}").as_deref(), Some("4"), "{m}");
    assert_eq!(gauge(&m, "verdict_dispute_rate{tenant=\"acme\"}").as_deref(), Some("0.75"), "{m}");

    // Outside the window: c3 was decided on June 11th; sixty-one days on it is too late.
    let (s, a) = svc.post(
        "/v1/disputes",
        &json!({"tenant":"acme","conversation":"c3","outcome":"ai_resolution","ts": at(62 * 86_400)}).to_string(),
    );
    assert_eq!((s, a["cause_code"].as_str()), (422, Some("outside_window")), "{a}");
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
}
