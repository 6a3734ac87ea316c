//! The service's own sources besides HTTP: followed files, stdin, Fluvio partitions and
//! the wall clock.
//! Each runs on its own and hands batches to the sequencer; re-readable sources put
//! their resume position into the batch itself, so the log says where to continue.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ::fluvio::consumer::ConsumerConfigExtBuilder;
use crossbeam_channel::Sender;

use super::input::{Input, Records, Resume, SourceSet};
use super::sequencer::Append;
use super::shared::Shared;
use crate::sources::fluvio::{self, ExtentProbe, PartitionCursor, PartitionSet, StartAt, Taken};
use crate::sources::tail::{Batch, FilePosition, Follower};
use crate::sources::LineReader;
use crate::telemetry;
use crate::timestamp::{now, Nanos, Span};

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

/// Reads the wall clock into the log every `every`.
pub fn spawn_clock(every: Span, log: Sender<Append>, shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.as_std().max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            // Never block the runtime; a tick dropped while the log is full is harmless.
            if let Err(e) = log.try_send(Append::new(Input::Tick { now: now() }, None, &shared)) {
                e.into_inner().withdraw(&shared);
            }
        }
    })
}

/// The Fluvio source settings.
#[derive(Clone, Debug)]
pub struct FluvioInput {
    pub endpoint: String,
    pub topic: String,
    pub partitions: PartitionSet,
    pub start: StartAt,
    /// How long a caught-up partition must be quiet before it is left out.
    pub quiet: Nanos,
}

/// How long a partition waits for records before it looks at `stop` again.
const FLUVIO_WAIT: Duration = Duration::from_millis(200);
/// How often a quiet partition asks its leader whether it has read to the end.
const EXTENT_EVERY: Duration = Duration::from_millis(500);
/// Most records per logged batch from one partition.
const FLUVIO_BATCH: usize = 8192;

/// Consumes the owned partitions of the events topic, each into the log with its next
/// offset; reconnects with backoff when the cluster goes away.
pub fn spawn_fluvio(
    input: FluvioInput,
    positions: &BTreeMap<String, Resume>,
    log: Sender<Append>,
    shared: Arc<Shared>,
    stop: Stop,
) -> tokio::task::JoinHandle<()> {
    let checkpointed: BTreeMap<u32, i64> = positions
        .iter()
        .filter_map(|(name, r)| match (fluvio::partition_of(&input.topic, name), r) {
            (Some(p), Resume::Fluvio { offset }) => Some((p, *offset)),
            _ => None,
        })
        .collect();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        let owned = loop {
            if stop.stopped() {
                return;
            }
            let resolved = async {
                let client = fluvio::connect(&input.endpoint).await?;
                let count = fluvio::partition_count(&client, &input.endpoint, &input.topic).await?;
                input.partitions.resolve(&input.topic, count)
            };
            match resolved.await {
                Ok(owned) => break owned,
                Err(e) => {
                    tracing::warn!("fluvio source {}: {e}; retrying in {backoff:?}", input.topic);
                    metrics::counter!(telemetry::SOURCE_ERRORS, "source" => format!("fluvio:{}", input.topic))
                        .increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        tracing::info!("fluvio source {}: consuming partitions {owned:?}", input.topic);
        // Every owned partition holds the watermark back from now on, before any of them
        // delivers (the first to deliver cannot make another's records late), and the
        // partitions this instance no longer owns stop holding it.
        let set = SourceSet {
            now: now(),
            scope: Some(fluvio::topic_source(&input.topic)),
            sources: owned.iter().map(|&p| (fluvio::source_name(&input.topic, p), input.quiet)).collect(),
        };
        if !hand_over_input(&log, &shared, Input::Sources(set), &stop).await {
            return;
        }
        let mut tasks = Vec::new();
        for p in owned {
            let cursor = PartitionCursor::new(checkpointed.get(&p).copied());
            let (input, log, shared, stop) = (input.clone(), log.clone(), shared.clone(), stop.clone());
            tasks.push(tokio::spawn(consume_partition(input, p, cursor, log, shared, stop)));
        }
        for t in tasks {
            let _ = t.await;
        }
    })
}

async fn consume_partition(
    input: FluvioInput,
    partition: u32,
    mut cursor: PartitionCursor,
    log: Sender<Append>,
    shared: Arc<Shared>,
    stop: Stop,
) {
    use futures_util::StreamExt;
    let name = fluvio::source_name(&input.topic, partition);
    let cluster = |e: &dyn std::fmt::Display| fluvio::FluvioSourceError::Cluster {
        endpoint: input.endpoint.clone(),
        cause: format!("{e:#}"),
    };
    let mut probe = ExtentProbe::new(&input.topic, partition);
    let mut backoff = Duration::from_millis(200);
    // The last gap seen, as (expected, got): seen twice, it is real.
    let mut last_gap: Option<(i64, i64)> = None;
    // Whether the log last heard this partition is caught up (the Sources entry says no).
    let mut caught_up = false;
    while !stop.stopped() {
        // Reconnecting: whatever the partition holds now has not come yet.
        if caught_up {
            caught_up = false;
            if !hand_over_async(&log, &shared, Records::new(name.clone(), now()), &stop).await {
                return;
            }
        }
        let opened = async {
            let client = fluvio::connect(&input.endpoint).await?;
            // Also tells that the leader is ready for the partition.
            let extent = probe.ask(&client, &input.endpoint).await?;
            let fresh = cursor.next().is_none();
            let from = cursor.start_at(extent, input.start);
            let config = ConsumerConfigExtBuilder::default()
                .topic(input.topic.clone())
                .partition(partition)
                .offset_start(fluvio::start_offset(Some(from), input.start))
                .build()
                .map_err(|e| cluster(&e))?;
            let stream = client.consumer_with_config(config).await.map_err(|e| cluster(&e))?;
            // The client must live as long as its stream.
            Ok::<_, fluvio::FluvioSourceError>((client, stream, fresh.then_some(from)))
        };
        let (client, stream, fresh) = match opened.await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{name}: {e}; retrying in {backoff:?}");
                metrics::counter!(telemetry::SOURCE_ERRORS, "source" => name.clone()).increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        if let Some(from) = fresh {
            // The position a new partition starts at is logged before any record, so a
            // restart continues there even if nothing arrives before it.
            tracing::info!("{name}: no checkpointed position; starting at offset {from} ({:?})", input.start);
            let mut start = Records::new(name.clone(), now());
            start.resume = Some(Resume::Fluvio { offset: from });
            if !hand_over_async(&log, &shared, start, &stop).await {
                return;
            }
        }
        let mut chunks = stream.ready_chunks(FLUVIO_BATCH);
        let mut next_ask = tokio::time::Instant::now();
        loop {
            if stop.stopped() {
                return;
            }
            let chunk = match tokio::time::timeout(FLUVIO_WAIT, chunks.next()).await {
                Err(_) => {
                    // Quiet: is there nothing more, or is it not coming?
                    if !caught_up && tokio::time::Instant::now() >= next_ask {
                        next_ask = tokio::time::Instant::now() + EXTENT_EVERY;
                        match probe.ask(&client, &input.endpoint).await {
                            Ok(extent) if cursor.next().is_some_and(|n| n >= extent.end) => {
                                caught_up = true;
                                let mut at_end = Records::new(name.clone(), now());
                                at_end.caught_up = true;
                                if !hand_over_async(&log, &shared, at_end, &stop).await {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!("{name}: {e}"),
                        }
                    }
                    continue;
                }
                Ok(None) => break,
                Ok(Some(c)) => c,
            };
            caught_up = false;
            let mut records = Records::new(name.clone(), now());
            let mut failed = None;
            let mut reread = false;
            for r in chunk {
                let rec = match r {
                    Ok(rec) => rec,
                    Err(code) => {
                        failed = Some(format!("consumer error {code:?}"));
                        break;
                    }
                };
                if let Taken::Gap { expected } = cursor.take(&mut records, rec.offset(), rec.value()) {
                    if last_gap == Some((expected, rec.offset())) {
                        // Read again from `expected` and still past it: those records are gone.
                        tracing::error!(
                            "{name}: records {expected}..{} are no longer in the partition (retention?); \
                             they cannot be classified",
                            rec.offset()
                        );
                        metrics::counter!(telemetry::SOURCE_ERRORS, "source" => name.clone()).increment(1);
                        cursor.take_past_gap(&mut records, rec.offset(), rec.value());
                    } else {
                        last_gap = Some((expected, rec.offset()));
                        reread = true;
                        break;
                    }
                }
            }
            if let Some(next) = cursor.next() {
                records.resume = Some(Resume::Fluvio { offset: next });
            }
            if !records.is_empty() && !hand_over_async(&log, &shared, records, &stop).await {
                return;
            }
            if let Some(why) = failed {
                tracing::warn!("{name}: {why}; reconnecting");
                metrics::counter!(telemetry::SOURCE_ERRORS, "source" => name.clone()).increment(1);
                break;
            }
            if reread {
                tracing::warn!("{name}: offsets skipped past {:?}; reading again from there", cursor.next());
                metrics::counter!(telemetry::SOURCE_ERRORS, "source" => name.clone()).increment(1);
                break;
            }
        }
    }
}

/// Hands a batch to the log from async code: waits (without blocking the runtime)
/// while the worker is behind or the log queue is full.
async fn hand_over_async(log: &Sender<Append>, shared: &Shared, records: Records, stop: &Stop) -> bool {
    hand_over_input(log, shared, Input::Records(records), stop).await
}

async fn hand_over_input(log: &Sender<Append>, shared: &Shared, input: Input, stop: &Stop) -> bool {
    while shared.over_backlog() && !stop.stopped() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut append = Append::new(input, None, shared);
    loop {
        match log.try_send(append) {
            Ok(()) => return true,
            Err(crossbeam_channel::TrySendError::Full(a)) => {
                append = a;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(crossbeam_channel::TrySendError::Disconnected(a)) => {
                a.withdraw(shared);
                return false;
            }
        }
    }
}
