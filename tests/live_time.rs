//! Live time across restarts and delays (SPEC section 3), with the wall clock on: a
//! followed file that grows while the service is down is applied in event time after
//! the restart, none of it `late`; an HTTP event delayed by less than the delivery
//! allowance across a restart is applied; an event older than the allowance after HTTP
//! has gone quiet is `late`, and its client is told so.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{ev, lines, Service};
use serde_json::Value;

fn stamp(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A conversation the reference definition decides as soon as its last event is
/// applied: it starts, the AI answers, it is escalated. Stamped now.
fn escalated_conversation(i: usize) -> String {
    let c = format!("live-{i}");
    let t = now();
    [
        ev(&format!("{c}-1"), "conversation.started", &c, &stamp(t), ""),
        ev(&format!("{c}-2"), "message.ai", &c, &stamp(t + Duration::from_millis(1)), ""),
        ev(&format!("{c}-3"), "escalated", &c, &stamp(t + Duration::from_millis(2)), ""),
    ]
    .join("\n")
        + "\n"
}

/// Appends an escalated conversation every 50 ms for `d`, as a platform writing live.
fn write_for(file: &mut std::fs::File, written: &mut usize, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        file.write_all(escalated_conversation(*written).as_bytes()).unwrap();
        *written += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn late_letters(svc: &Service) -> Vec<String> {
    lines(&svc.state().join("dead-letters.ndjson")).into_iter().filter(|l| l.contains(r#""reason":"late""#)).collect()
}

#[test]
fn a_followed_file_that_grows_while_the_service_is_down_is_applied_in_event_time() {
    // D (3s) is shorter than the downtime (6s): what the restart applies is held back
    // because the file has not caught up yet, not because the allowance covers it.
    let args = ["--input", "live.ndjson", "--delivery-allowance", "3s", "--idle-timeout", "500ms"];
    let mut svc = Service::start(&args);
    let path = svc.dir.path().join("live.ndjson");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let mut written = 0;
    write_for(&mut file, &mut written, Duration::from_secs(2));
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
    let before = written;
    write_for(&mut file, &mut written, Duration::from_secs(6));
    let during_downtime = written - before;
    svc.spawn(&[]);
    write_for(&mut file, &mut written, Duration::from_secs(1));
    let total = written;
    // Every conversation is decided once the watermark (now minus D) passes its events.
    let started = Instant::now();
    while lines(&svc.output()).len() < total {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {total} decided:\n{}",
            lines(&svc.output()).len(),
            svc.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let late = late_letters(&svc);
    assert!(
        late.is_empty(),
        "{} late events of {} written during the downtime, e.g. {}",
        late.len(),
        during_downtime * 3,
        late[0]
    );
    let reasons: Vec<Value> = common::ndjson(&svc.output()).into_iter().map(|v| v["reason"].clone()).collect();
    assert!(reasons.iter().all(|r| r == "escalated"), "{reasons:?}");
    assert_eq!(svc.stop(), Some(0));
}

#[test]
fn http_events_delayed_less_than_the_allowance_across_a_restart_are_applied() {
    let mut svc = Service::start(&["--delivery-allowance", "8s", "--idle-timeout", "500ms"]);
    let t = now();
    let body = [ev("h-1", "conversation.started", "h", &stamp(t), ""), ev("h-2", "message.ai", "h", &stamp(t), "")];
    let (status, answer) = svc.post("/v1/events", &body.join("\n"));
    assert_eq!((status, &answer["accepted"]), (200, &Value::from(2)), "{answer}");
    assert_eq!(svc.stop(), Some(0));
    // Down for 3 s (longer than the lateness); the platform's retry of an event stamped
    // during the downtime comes first after the restart.
    let during = now();
    std::thread::sleep(Duration::from_secs(3));
    svc.spawn(&[]);
    let (status, answer) = svc.post("/v1/events", &ev("h-3", "escalated", "h", &stamp(during), ""));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"], Value::Array(vec![]), "{answer}");
    // And its client can rely on it: the conversation is decided by it, as escalated.
    let v = svc.wait_for(&format!("/v1/usage?tenant=acme&period={}", &stamp(t)[..7]), |u| u["non_billable_count"] == 1);
    assert_eq!(v["outcomes"]["ai_resolution"]["not_billable"]["escalated"], 1, "{v}");
    assert!(late_letters(&svc).is_empty());
    assert_eq!(svc.stop(), Some(0));
}

#[test]
fn an_event_older_than_the_allowance_is_late_and_its_client_is_told() {
    let svc = Service::start(&["--delivery-allowance", "2s", "--idle-timeout", "500ms", "--tick-interval", "100ms"]);
    let (status, _) = svc.post("/v1/events", &ev("o-1", "conversation.started", "o", &stamp(now()), ""));
    assert_eq!(status, 200);
    // HTTP quiet for D: caught up; the wall clock moves the watermark to now minus D.
    svc.wait_for("/v1/sources", |s| s["wall_clock_advancing"] == true);
    let old = stamp(now() - Duration::from_secs(10));
    let body = [ev("o-2", "message.ai", "o", &old, ""), ev("o-3", "message.ai", "o", &stamp(now()), "")].join("\n");
    let (status, answer) = svc.post("/v1/events", &body);
    assert_eq!(status, 200, "one of the two was taken: {answer}");
    assert_eq!(
        (answer["accepted"].clone(), answer["duplicates"].clone()),
        (Value::from(1), Value::from(0)),
        "{answer}"
    );
    let rejected = &answer["rejected"][0];
    assert_eq!(
        (rejected["line"].clone(), rejected["reason"].clone()),
        (Value::from(1), Value::from("late")),
        "{answer}"
    );
    assert!(rejected["error"].as_str().unwrap().contains("before the watermark"), "{answer}");
    assert_eq!(late_letters(&svc).len(), 1, "dead-lettered as well");
    // Alone, a late record makes the whole request a 400.
    let (status, answer) = svc.post("/v1/events", &ev("o-4", "message.ai", "o", &old, ""));
    assert_eq!((status, answer["rejected"][0]["reason"].clone()), (400, Value::from("late")), "{answer}");
    // A retry of what was taken is a duplicate, not an error.
    let (status, answer) = svc.post("/v1/events", &ev("o-3", "message.ai", "o", &stamp(now()), ""));
    assert_eq!((status, answer["duplicates"].clone()), (200, Value::from(1)), "{answer}");
}

#[test]
fn after_a_restart_http_without_requests_stops_holding_the_watermark() {
    // HTTP delivered before the restart, so it starts over as a source; with no request
    // after it, it is left out once quiet for D, and the wall clock moves again.
    let mut svc =
        Service::start(&["--delivery-allowance", "2s", "--idle-timeout", "500ms", "--tick-interval", "100ms"]);
    let (status, _) = svc.post("/v1/events", &ev("r-1", "conversation.started", "r", &stamp(now()), ""));
    assert_eq!(status, 200);
    assert_eq!(svc.stop(), Some(0));
    svc.spawn(&[]);
    let s = svc.get("/v1/sources").1;
    let http = |s: &Value| s["sources"].as_array().unwrap().iter().find(|x| x["name"] == "http").cloned();
    assert!(http(&s).is_some_and(|h| h["idle"] == false), "http holds right after the restart: {s}");
    let s = svc.wait_for("/v1/sources", |s| s["wall_clock_advancing"] == true);
    assert_eq!(http(&s).unwrap()["idle"], true, "{s}");
    assert_eq!(svc.stop(), Some(0));
}
