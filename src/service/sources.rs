//! The service's own sources besides HTTP and Fluvio (`partitions`): followed files,
//! stdin and the wall clock.
//! Each runs on its own and hands batches to the sequencer; re-readable sources put
//! their resume position into the batch itself, so the log says where to continue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::input::{Input, Records, Resume};
use super::sequencer::Append;
use super::shared::Shared;
use crate::sources::tail::{Batch, FilePosition, Follower};
use crate::sources::LineReader;
use crate::telemetry;
use crate::timestamp::{now, Span};

/// Most record bytes per batch from a file or stdin.
const BATCH_BYTES: usize = 1 << 20;
/// How often an idle followed file is polled.
const POLL: Duration = Duration::from_millis(100);

/// Tells source threads to finish.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Waits while the worker is behind, so a fast file cannot grow memory without bound.
fn wait_for_room(shared: &Shared, stop: &Stop) {
    while shared.over_backlog() && !stop.stopped() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hand_over(log: &Sender<Append>, shared: &Shared, input: Input) -> bool {
    log.send(Append::new(input, None, shared)).map_err(|e| e.0.withdraw(shared)).is_ok()
}

/// Follows `path` like `tail -F`, from `start` (a checkpointed position) or its start.
/// Each batch says whether the file was read to its end; reaching the end with nothing
/// new is reported once, so the file can stop holding the watermark back.
pub fn spawn_follower(
    path: String,
    start: Option<FilePosition>,
    log: Sender<Append>,
    shared: Arc<Shared>,
    stop: Stop,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("verdict-tail-{path}")).spawn(move || {
        let mut follower = Follower::new(path.clone().into(), start);
        let mut batch = Batch::default();
        // As logged at the start: not caught up.
        let mut reported = false;
        while !stop.stopped() {
            wait_for_room(&shared, &stop);
            batch.clear();
            let at_end = match follower.poll(BATCH_BYTES, &mut batch) {
                Ok(at_end) => at_end,
                Err(e) => {
                    tracing::warn!("{e}; retrying");
                    metrics::counter!(telemetry::SOURCE_ERRORS, "source" => path.clone()).increment(1);
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            if batch.is_empty() && reported == at_end {
                std::thread::sleep(POLL);
                continue;
            }
            let mut records = Records::new(path.clone(), now());
            for l in batch.lines() {
                records.push(l.bytes, l.line, l.offset, l.size, l.truncated);
            }
            records.resume = follower.position().map(Resume::File);
            records.caught_up = at_end;
            reported = at_end;
            if !hand_over(&log, &shared, Input::Records(records)) {
                return;
            }
        }
    })
}

/// Reads stdin to its end; stdin cannot be re-read, so a restart does not resume it.
pub fn spawn_stdin(log: Sender<Append>, shared: Arc<Shared>, stop: Stop) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("verdict-stdin".into()).spawn(move || {
        let mut reader = LineReader::new(std::io::stdin());
        let mut records = Records::new("stdin", now());
        loop {
            if stop.stopped() {
                return;
            }
            let line = match reader.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("reading stdin: {e}");
                    break;
                }
            };
            records.push(line.bytes, line.line, line.offset, line.size, line.truncated);
            // Send when nothing more is waiting, so a slow writer's lines are not held back.
            if records.data.len() >= BATCH_BYTES || !reader.has_buffered() {
                wait_for_room(&shared, &stop);
                records.received_at = now();
                records.caught_up = !reader.has_buffered();
                let full = std::mem::replace(&mut records, Records::new("stdin", now()));
                if !hand_over(&log, &shared, Input::Records(full)) {
                    return;
                }
            }
        }
        // Ended: nothing more will come.
        records.received_at = now();
        records.caught_up = true;
        hand_over(&log, &shared, Input::Records(records));
        tracing::info!("stdin ended");
    })
}

/// Reads the wall clock into the log every `every`, when it can change something.
pub fn spawn_clock(every: Span, log: Sender<Append>, shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.as_std().max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let at = now();
            // Only what can change something is logged (each entry waits for an fsync).
            if at < shared.tick_from.load(Ordering::Acquire) {
                continue;
            }
            // Never block the runtime; a tick dropped while the log is full is harmless.
            if let Err(e) = log.try_send(Append::new(Input::Tick { now: at }, None, &shared)) {
                e.into_inner().withdraw(&shared);
            }
        }
    })
}
