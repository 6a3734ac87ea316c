//! Against a real Fluvio cluster (`FLUVIO_SC_ADDR`; `FLUVIO_RUN` for the test that
//! makes the topic before its broker is up): a topic is created and two
//! instances start on it at once, in the orders a deployment meets (the topic just
//! created; the producer at once or two seconds late; the instances before the topic,
//! as compose may start them; instances killed with SIGKILL while the producer runs),
//! while about 67,000 generated events are produced keyed by conversation, 2,000 at a
//! time. Every time, the two verdict files together equal `verdict replay` of the same
//! events, each verdict once: nothing produced is lost, the first records included.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use common::cluster::{cluster, produce_chunks, sentinels, tag, verdict, wait_until, OwnCluster};
use common::{diff, lines, once, Service};

/// One test at a time: each runs a cluster's worth of load on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy)]
struct Timing {
    /// Start the instances before the topic exists.
    instances_first: bool,
    /// The topic exists already (made by the test before `run`).
    topic_made: bool,
    /// Wait this long after starting the instances before producing.
    producer_delay: Duration,
    /// SIGKILL and restart an instance this many times while the producer runs.
    kills: u32,
}

const PARTITIONS: u32 = 4;

fn run(name: &str, timing: Timing) {
    let Some(addr) = cluster() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run_on(&addr, &format!("{name}-{}", tag()), timing);
}

fn run_on(addr: &str, topic: &str, timing: Timing) {
    let (addr, name) = (addr.to_string(), topic);
    let tmp = tempfile::tempdir().unwrap();

    let file = tmp.path().join("gen.ndjson");
    let gen = ["gen", "--conversations", "6000", "--tenants", "8", "--seed", "18", "--duplicates", "0.02"];
    verdict(&[&gen[..], &["--bad", "0.01", "--output", file.to_str().unwrap()]].concat());
    let events = lines(&file);
    assert!(events.len() > 60_000, "{} events", events.len());
    let sentinel_file = tmp.path().join("sentinels.ndjson");
    let sentinel_lines: Vec<String> = (0..PARTITIONS)
        .map(|p| {
            format!(
                r#"{{"id":"sentinel-{p}","type":"conversation.started","tenant":"zz-sentinel","conversation":"s{p}","ts":"2030-01-01T00:00:00Z"}}"#
            )
        })
        .collect();
    std::fs::write(&sentinel_file, sentinel_lines.join("\n") + "\n").unwrap();
    let want_file = tmp.path().join("want.ndjson");
    let dead = tmp.path().join("want-dead.ndjson");
    verdict(&[
        "replay",
        "--output",
        want_file.to_str().unwrap(),
        "--dead-letter",
        dead.to_str().unwrap(),
        file.to_str().unwrap(),
        sentinel_file.to_str().unwrap(),
    ]);
    let want: BTreeSet<String> = lines(&want_file).into_iter().collect();

    let setup = || verdict(&["fluvio-setup", "--endpoint", &addr, "--topic", &format!("{topic}:{PARTITIONS}")]);
    if !timing.instances_first && !timing.topic_made {
        setup();
    }
    let args = |share: &str| {
        ["--fluvio-endpoint", &addr, "--fluvio-topic", topic, "--fluvio-partitions", share]
            .into_iter()
            .chain(["--wall-clock", "false", "--reject-future", "false", "--checkpoint-interval", "300ms"])
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let (a_args, b_args) = (args("0/2"), args("1/2"));
    let mut a = Service::start(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut b = Service::start(&b_args.iter().map(String::as_str).collect::<Vec<_>>());
    if timing.instances_first {
        setup();
    }
    std::thread::sleep(timing.producer_delay);
    let producer = {
        let (addr, topic) = (addr.clone(), topic.to_string());
        std::thread::spawn(move || {
            let n = produce_chunks(&addr, &topic, &events, 2000, Duration::from_millis(20));
            sentinels(&addr, &topic, PARTITIONS);
            n
        })
    };
    for k in 0..timing.kills {
        std::thread::sleep(Duration::from_millis(700));
        let victim = if k % 2 == 0 { &mut b } else { &mut a };
        victim.kill9();
        victim.spawn(&[]);
    }
    let produced = producer.join().unwrap();
    eprintln!("{name}: produced {produced} events");
    // Done when every verdict is there, or when both watermarks have passed the
    // sentinels (everything produced was applied) and the files stopped growing.
    let total = || lines(&a.output()).len() + lines(&b.output()).len();
    let past_sentinels = |s: &Service| {
        s.metrics().lines().any(|l| {
            l.strip_prefix("verdict_watermark_timestamp_seconds ").and_then(|v| v.parse::<f64>().ok()) > Some(1.89e9)
        })
    };
    let settled = || {
        let before = total();
        past_sentinels(&a) && past_sentinels(&b) && {
            std::thread::sleep(Duration::from_secs(2));
            total() == before
        }
    };
    wait_until(&format!("{name}: {} verdicts", want.len()), || total() >= want.len() || settled(), &[&a, &b]);
    std::thread::sleep(Duration::from_millis(500));
    let late = |lines: Vec<String>| lines.iter().filter(|l| l.contains(r#""reason":"late""#)).count();
    let got_late =
        late(lines(&a.state().join("dead-letters.ndjson"))) + late(lines(&b.state().join("dead-letters.ndjson")));
    assert_eq!(got_late, late(lines(&dead)), "{name}: events dead-lettered as late, against the replay's");
    let (got_a, got_b) = (once(&a.output()), once(&b.output()));
    assert!(got_a.is_disjoint(&got_b), "a verdict decided by both instances");
    diff(&format!("{name}: verdict files of both instances"), &got_a.union(&got_b).cloned().collect(), &want);
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
}

#[test]
fn a_new_topic_consumed_at_once_loses_nothing() {
    run("new-at-once", Timing { instances_first: false, topic_made: false, producer_delay: Duration::ZERO, kills: 0 });
}

#[test]
fn a_new_topic_with_a_late_producer_loses_nothing() {
    run(
        "new-late",
        Timing { instances_first: false, topic_made: false, producer_delay: Duration::from_secs(2), kills: 0 },
    );
}

#[test]
fn instances_started_before_their_topic_lose_nothing() {
    run(
        "instances-first",
        Timing { instances_first: true, topic_made: false, producer_delay: Duration::ZERO, kills: 0 },
    );
}

#[test]
fn sigkills_while_a_new_topic_fills_lose_nothing() {
    run("new-killed", Timing { instances_first: false, topic_made: false, producer_delay: Duration::ZERO, kills: 3 });
}

#[test]
fn a_topic_created_before_its_broker_was_up_loses_nothing() {
    // The first run of the report: the topic made while the SPU is down, then the SPU,
    // then the instances, then the producer two seconds later.
    let Some(mut c) = OwnCluster::without_spu() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let topic = format!("before-broker-{}", tag());
    // The SC takes the topic and waits for a broker to place it on.
    let setup = {
        let (sc, topic) = (c.sc.clone(), topic.clone());
        std::thread::spawn(move || {
            verdict(&["fluvio-setup", "--endpoint", &sc, "--topic", &format!("{topic}:{PARTITIONS}")])
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    c.start_spu();
    setup.join().unwrap();
    let timing = Timing { instances_first: false, topic_made: true, producer_delay: Duration::from_secs(2), kills: 0 };
    run_on(&c.sc.clone(), &topic, timing);
}
