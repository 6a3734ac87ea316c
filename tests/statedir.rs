//! One process per state directory, and recovery that says what it finds: a second
//! `verdict run` on a live directory is refused with the holder named and changes
//! nothing; a SIGKILLed owner's directory is taken over at once; a cut log, a
//! checkpoint from another directory and a shortened verdict file each stop recovery
//! with a message naming the file, the position and the way out, and `--accept-loss`
//! goes on past them, counted.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use common::{diff, once, replayed_stream, wait_for_verdicts, Service};

const ARGS: [&str; 6] = ["--wall-clock", "false", "--reject-future", "false", "--checkpoint-interval", "1h"];

/// Every file under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    for e in walk(dir) {
        let m = std::fs::metadata(&e).unwrap();
        out.insert(e.strip_prefix(dir).unwrap().display().to_string(), (m.len(), m.modified().unwrap()));
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

fn post_all(svc: &Service, stream: &[u8]) {
    let text = String::from_utf8_lossy(stream);
    let lines: Vec<&str> = text.lines().collect();
    for chunk in lines.chunks(400) {
        let (status, body) = svc.post("/v1/events", &chunk.join("\n"));
        assert!(status == 200 || status == 400, "{status}: {body}");
    }
}

#[test]
fn a_second_instance_is_refused_by_name_and_the_first_goes_on_unharmed() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, _, (want, _)) = replayed_stream(tmp.path(), 600, 21);
    let mut first = Service::start(&ARGS);
    let half = all[..all.len() / 2].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    post_all(&first, &all[..half]);

    // Once the first has applied what it acknowledged, nothing in its directory moves.
    let mut before = snapshot(&first.state());
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = snapshot(&first.state());
        if now == before {
            break;
        }
        before = now;
    }
    let (code, err) = first.start_fails(&[]);
    assert_eq!(code, Some(2), "refused with a non-zero exit:\n{err}");
    let pid = first.child.as_ref().unwrap().id();
    for needle in [
        "state directory state is in use".to_string(),
        format!("pid {pid}"),
        format!("listening on 127.0.0.1:{}", first.port),
        "started 20".to_string(),
    ] {
        assert!(err.contains(&needle), "the refusal names {needle:?}:\n{err}");
    }
    assert_eq!(snapshot(&first.state()), before, "the refused process changed nothing in the directory");

    post_all(&first, &all[half..]);
    wait_for_verdicts(&first, want.len());
    assert_eq!(first.stop(), Some(0), "{}", first.stderr());
    diff("the first instance's verdicts", &once(&first.output()), &want);
}

#[test]
fn a_sigkilled_owners_directory_is_taken_over_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, _, (want, _)) = replayed_stream(tmp.path(), 400, 22);
    let mut svc = Service::start(&ARGS);
    let half = all[..all.len() / 2].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    post_all(&svc, &all[..half]);
    svc.kill9();
    let started = std::time::Instant::now();
    svc.spawn(&[]);
    assert!(started.elapsed().as_secs() < 20, "took over in {:?}", started.elapsed());
    post_all(&svc, &all[half..]);
    wait_for_verdicts(&svc, want.len());
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
    diff("verdicts across the takeover", &once(&svc.output()), &want);
}

/// A service that took `stream` and stopped cleanly (its last checkpoint is at the end
/// of its log).
fn stopped_with(stream: &[u8]) -> Service {
    let mut svc = Service::start(&ARGS);
    post_all(&svc, stream);
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
    svc
}

fn problems(svc: &Service, problem: &str) -> String {
    let text = svc.metrics();
    let line = format!("verdict_recovery_problems_total{{problem=\"{problem}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(line.as_str()).map(str::to_string)).unwrap_or_default()
}

#[test]
fn a_hand_truncated_log_is_reported_with_the_way_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, _, _) = replayed_stream(tmp.path(), 200, 23);
    let mut svc = stopped_with(&all);
    let segment = svc.state().join("wal").join(format!("{:020}.wal", 0));
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(len / 2).unwrap();

    let (code, err) = svc.start_fails(&[]);
    assert_eq!(code, Some(2), "{err}");
    for needle in
        ["write-ahead log in state/wal ends at position", "checkpoint-", &format!("position {len}"), "--accept-loss"]
    {
        assert!(err.contains(needle), "the message names {needle:?}:\n{err}");
    }
    assert!(err.contains("The safe way out"), "{err}");

    let (code, again) = svc.start_fails(&[]);
    assert_eq!((code, again.contains("ends at position")), (Some(2), true), "a refusal changes nothing:\n{again}");
    svc.args.push("--accept-loss".into());
    svc.spawn(&[]);
    assert!(svc.stderr().contains("going on as --accept-loss asks"), "{}", svc.stderr());
    assert_eq!(problems(&svc, "log_short"), "1");
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
}

#[test]
fn a_checkpoint_from_another_directory_is_named_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, _, _) = replayed_stream(tmp.path(), 200, 24);
    let (other, mut svc) = (stopped_with(&all[..all.len() / 3]), stopped_with(&all));
    let newest = |s: &Service| {
        let mut files = walk(&s.state().join("checkpoints"));
        files.sort();
        files.pop().unwrap()
    };
    let ours = newest(&svc);
    let written = once(&svc.output());
    let foreign = ours.with_file_name("checkpoint-00000000000000000099.bin");
    std::fs::copy(newest(&other), &foreign).unwrap();

    let (code, err) = svc.start_fails(&[]);
    assert_eq!(code, Some(2), "{err}");
    for needle in ["checkpoint-00000000000000000099.bin", "was written in another state directory", "--accept-loss"] {
        assert!(err.contains(needle), "the message names {needle:?}:\n{err}");
    }
    svc.args.push("--accept-loss".into());
    svc.spawn(&[]);
    assert_eq!(problems(&svc, "foreign_checkpoint"), "1");
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
    // Its own checkpoint was used: the foreign one's shorter output length would have cut the file.
    diff("verdicts after skipping the foreign checkpoint", &once(&svc.output()), &written);
}

#[test]
fn a_shortened_verdict_file_is_reported_not_appended_to() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, _, _) = replayed_stream(tmp.path(), 200, 25);
    let mut svc = stopped_with(&all);
    let len = std::fs::metadata(svc.output()).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(svc.output()).unwrap().set_len(len / 3).unwrap();
    let (code, err) = svc.start_fails(&[]);
    assert_eq!(code, Some(2), "{err}");
    for needle in [
        format!("state/verdicts.ndjson is {} bytes", len / 3),
        format!("recorded {len} bytes"),
        "--accept-loss".to_string(),
    ] {
        assert!(err.contains(&needle), "the message names {needle:?}:\n{err}");
    }
    assert_eq!(std::fs::metadata(svc.output()).unwrap().len(), len / 3, "nothing written");
    svc.args.push("--accept-loss".into());
    svc.spawn(&[]);
    assert_eq!(problems(&svc, "output_short"), "1");
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
}

/// A state directory written by an earlier release (checkpoint `format`): the first
/// 400 events of the sample posted, a clean stop, 200 more posted, then SIGKILL, so the
/// log holds entries after the checkpoint. It must be recovered and go on as if it had
/// been this release's all along.
fn upgrade_from(fixture: &str, format: u32) {
    let fixture = common::root().join("tests/fixtures").join(fixture);
    let tmp = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(common::root().join("examples/sample.ndjson")).unwrap();
    let sentinel = r#"{"id":"sentinel","type":"conversation.started","tenant":"zz","conversation":"s","ts":"2030-01-01T00:00:00Z"}"#;
    let all: Vec<&str> = sample.lines().chain([sentinel]).collect();
    let input = tmp.path().join("all.ndjson");
    std::fs::write(&input, all.join("\n") + "\n").unwrap();
    let (want, _) = common::expected(tmp.path(), &input);
    let mut svc = Service::start_on(&ARGS, &fixture);
    assert!(svc.stderr().contains(&format!("of format {format} (an upgrade)")), "{}", svc.stderr());
    post_all(&svc, all[600..].join("\n").as_bytes());
    wait_for_verdicts(&svc, want.len());
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
    diff("verdicts across the upgrade", &once(&svc.output()), &want);
    assert!(svc.state().join("credits.ndjson").exists(), "the credit log is started");
}

#[test]
fn a_state_directory_of_format_2_is_recovered_and_goes_on() {
    // Format 2: no state directory id, log entries from before sources said they were
    // caught up, no billing in the service.
    upgrade_from("state-v2", 2);
}

#[test]
fn a_state_directory_of_format_3_is_recovered_and_goes_on() {
    // Format 3: billing in the service, no credit log.
    upgrade_from("state-v3", 3);
}

#[test]
fn a_log_with_no_usable_checkpoint_is_not_replayed_onto_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, _, _) = replayed_stream(tmp.path(), 200, 26);
    let mut svc = stopped_with(&all);
    let written = once(&svc.output());
    for f in walk(&svc.state().join("checkpoints")) {
        std::fs::remove_file(f).unwrap();
    }
    let (code, err) = svc.start_fails(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no usable checkpoint") && err.contains("--accept-loss"), "{err}");
    svc.args.push("--accept-loss".into());
    svc.spawn(&[]);
    assert_eq!(problems(&svc, "no_checkpoint"), "1");
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
    diff("verdicts written anew from the whole log", &once(&svc.output()), &written);
}

#[test]
fn a_checkpoint_of_a_newer_build_is_not_passed_over_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let (all, _, _) = replayed_stream(tmp.path(), 100, 27);
    let svc = stopped_with(&all);
    let mut files = walk(&svc.state().join("checkpoints"));
    files.sort();
    let mut bytes = std::fs::read(files.last().unwrap()).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes()); // the format version in the header
    std::fs::write(files[0].with_file_name("checkpoint-00000000000000000099.bin"), bytes).unwrap();
    let (code, err) = svc.start_fails(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("written by a newer verdict (format 99"), "{err}");
}
