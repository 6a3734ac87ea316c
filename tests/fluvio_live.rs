//! Live time against a real Fluvio cluster (SPEC section 3): a partition whose
//! consumer is cut off while another runs ahead holds the watermark back instead of
//! having its records made late (the broker is killed and restarted mid-consumption;
//! needs `FLUVIO_RUN`, see `common/cluster.rs`); an instance stopped while the topic
//! grows with live events applies the whole backlog in event time after its restart
//! (needs `FLUVIO_SC_ADDR`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{cluster, produce_chunks, sentinels, tag, verdict, wait_until, OwnCluster};
use common::{diff, ev, lines, once, Service};

fn late_letters(svc: &Service) -> usize {
    lines(&svc.state().join("dead-letters.ndjson")).iter().filter(|l| l.contains(r#""reason":"late""#)).count()
}

#[test]
fn a_partition_cut_off_by_a_broker_restart_loses_nothing_to_a_faster_one() {
    let Some(mut c) = OwnCluster::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let topic = format!("spu-restart-{}", tag());
    verdict(&["fluvio-setup", "--endpoint", &c.sc, "--topic", &format!("{topic}:2")]);
    let file = tmp.path().join("gen.ndjson");
    verdict(&["gen", "--conversations", "3000", "--tenants", "6", "--seed", "20", "--output", file.to_str().unwrap()]);
    let events = lines(&file);
    produce_chunks(&c.sc, &topic, &events, 5000, Duration::ZERO);
    let s = sentinels(&c.sc, &topic, 2);
    let sent = tmp.path().join("sentinels.ndjson");
    std::fs::write(&sent, s.join("\n") + "\n").unwrap();
    let want_file = tmp.path().join("want.ndjson");
    verdict(&["replay", "--output", want_file.to_str().unwrap(), file.to_str().unwrap(), sent.to_str().unwrap()]);
    let want: BTreeSet<String> = lines(&want_file).into_iter().collect();

    let args =
        ["--fluvio-endpoint", &c.sc, "--fluvio-topic", &topic, "--wall-clock", "false", "--reject-future", "false"];
    let mut svc = Service::start(&args);
    // Kill the broker while the backlog is being consumed, and bring it back after the
    // idle timeout has passed several times over.
    let started = Instant::now();
    while lines(&svc.output()).is_empty() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    c.kill_spu();
    let at_kill = lines(&svc.output()).len();
    std::thread::sleep(Duration::from_secs(7));
    c.start_spu();
    wait_until("every verdict", || lines(&svc.output()).len() >= want.len(), &[&svc]);
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("{at_kill} of {} verdicts written when the broker was killed", want.len());
    assert_eq!(late_letters(&svc), 0, "records made late by the faster partition");
    diff("verdicts across a broker restart", &once(&svc.output()), &want);
    assert_eq!(svc.stop(), Some(0));
}

#[test]
fn an_instance_stopped_while_the_topic_grows_applies_the_backlog_in_event_time() {
    let Some(addr) = cluster() else { return };
    let topic = format!("live-{}", tag());
    verdict(&["fluvio-setup", "--endpoint", &addr, "--topic", &format!("{topic}:2")]);
    // Live events, stamped now; each conversation is decided by its escalation.
    let produce_for = |from: usize, d: Duration| -> usize {
        let until = Instant::now() + d;
        let mut i = from;
        while Instant::now() < until {
            let c = format!("c{i}");
            let t = time::OffsetDateTime::now_utc();
            let stamp = |ms: u64| {
                (t + Duration::from_millis(ms)).format(&time::format_description::well_known::Rfc3339).unwrap()
            };
            let batch = [
                ev(&format!("{c}-1"), "conversation.started", &c, &stamp(0), ""),
                ev(&format!("{c}-2"), "message.ai", &c, &stamp(1), ""),
                ev(&format!("{c}-3"), "escalated", &c, &stamp(2), ""),
            ];
            produce_chunks(&addr, &topic, &batch, 3, Duration::ZERO);
            i += 1;
            std::thread::sleep(Duration::from_millis(40));
        }
        i
    };
    let args = ["--fluvio-endpoint", &addr, "--fluvio-topic", &topic, "--delivery-allowance", "3s"];
    let mut svc = Service::start(&args);
    let n = produce_for(0, Duration::from_secs(3));
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
    let m = produce_for(n, Duration::from_secs(10));
    svc.spawn(&[]);
    let total = produce_for(m, Duration::from_secs(1));
    wait_until(&format!("{total} verdicts"), || lines(&svc.output()).len() >= total, &[&svc]);
    assert_eq!(late_letters(&svc), 0, "{} conversations were produced while the instance was down", m - n);
    let escalated = common::ndjson(&svc.output()).iter().filter(|v| v["reason"] == "escalated").count();
    assert_eq!(escalated, total);
    assert_eq!(svc.stop(), Some(0));
}
