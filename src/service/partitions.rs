//! The Fluvio source: one task per owned partition of the events topic, each logging
//! its records with the partition's next offset (see `sources::fluvio` for the cursor
//! and the extent probe).
//!
//! Which partitions may be left out of the watermark is decided with the leaders' word
//! on where each partition ends. A quiet partition asks its extent and, read to its
//! end, says it is caught up; it is left out once it has also been quiet for the idle
//! timeout. Before a partition hands over a batch, each sibling that said it is caught
//! up is asked again, and one that has records now is brought back in first: records
//! produced to all partitions at once (a producer starting after a pause) reach the
//! consumers at slightly different moments, and the first batch must not make a
//! sibling's records late (Kafka Streams checks a partition's lag the same way before
//! it runs ahead of it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ::fluvio::consumer::ConsumerConfigExtBuilder;
use ::fluvio::Fluvio;
use crossbeam_channel::Sender;

use super::input::{Input, Records, Resume, SourceSet, SourceStart};
use super::sequencer::Append;
use super::shared::Shared;
use super::sources::Stop;
use crate::sources::fluvio::{self, ExtentProbe, FluvioSourceError, PartitionCursor, PartitionSet, StartAt, Taken};
use crate::telemetry;
use crate::timestamp::{now, Nanos};

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
const WAIT: Duration = Duration::from_millis(200);
/// How often a quiet partition asks its leader whether it has read to the end.
const EXTENT_EVERY: Duration = Duration::from_millis(500);
/// Most records per logged batch from one partition.
const BATCH: usize = 8192;

/// What the partitions of one instance know of each other.
struct Sibling {
    name: String,
    /// It said it is caught up, and has not delivered since.
    caught_up: bool,
    /// Its next offset, as of its last logged batch.
    next: Option<i64>,
    probe: ExtentProbe,
    /// When its leader last said it had nothing more (while `caught_up`).
    confirmed: Option<tokio::time::Instant>,
}

type Siblings = Arc<Vec<tokio::sync::Mutex<Sibling>>>;

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
                    let name = fluvio::topic_source(&input.topic);
                    metrics::counter!(telemetry::SOURCE_ERRORS, "source" => name).increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        tracing::info!("fluvio source {}: consuming partitions {owned:?}", input.topic);
        // Every owned partition holds the watermark back from now on, before any of them
        // delivers (the first to deliver cannot make another's records late), and the
        // partitions this instance no longer owns stop holding it.
        let start =
            |p: u32| SourceStart { name: fluvio::source_name(&input.topic, p), quiet: input.quiet, caught_up: false };
        let set = SourceSet {
            now: now(),
            scope: Some(fluvio::topic_source(&input.topic)),
            sources: owned.iter().map(|&p| start(p)).collect(),
            live: None,
        };
        if !hand_over(&log, &shared, Input::Sources(set), &stop).await {
            return;
        }
        let siblings: Siblings = Arc::new(
            owned
                .iter()
                .map(|&p| {
                    tokio::sync::Mutex::new(Sibling {
                        name: fluvio::source_name(&input.topic, p),
                        caught_up: false,
                        next: checkpointed.get(&p).copied(),
                        probe: ExtentProbe::new(&input.topic, p),
                        confirmed: None,
                    })
                })
                .collect(),
        );
        let mut tasks = Vec::new();
        for (me, &p) in owned.iter().enumerate() {
            let cursor = PartitionCursor::new(checkpointed.get(&p).copied());
            let task = Partition {
                input: input.clone(),
                partition: p,
                me,
                siblings: siblings.clone(),
                log: log.clone(),
                shared: shared.clone(),
                stop: stop.clone(),
            };
            tasks.push(tokio::spawn(task.consume(cursor)));
        }
        for t in tasks {
            let _ = t.await;
        }
    })
}

/// One partition's consuming task.
struct Partition {
    input: FluvioInput,
    partition: u32,
    /// Its index in `siblings`.
    me: usize,
    siblings: Siblings,
    log: Sender<Append>,
    shared: Arc<Shared>,
    stop: Stop,
}

impl Partition {
    fn cluster_error(&self, e: &dyn std::fmt::Display) -> FluvioSourceError {
        FluvioSourceError::Cluster { endpoint: self.input.endpoint.clone(), cause: format!("{e:#}") }
    }

    /// Logs `records` (maybe none: a change of caught-up state) as this partition's.
    async fn log(&self, records: Records) -> bool {
        hand_over(&self.log, &self.shared, Input::Records(records), &self.stop).await
    }

    async fn consume(self, mut cursor: PartitionCursor) {
        use futures_util::StreamExt;
        let name = fluvio::source_name(&self.input.topic, self.partition);
        let mut backoff = Duration::from_millis(200);
        // The last gap seen, as (expected, got): seen twice, it is real.
        let mut last_gap: Option<(i64, i64)> = None;
        while !self.stop.stopped() {
            {
                // Reconnecting: whatever the partition holds now has not come yet.
                let mut me = self.siblings[self.me].lock().await;
                if std::mem::take(&mut me.caught_up) && !self.log(Records::new(name.clone(), now())).await {
                    return;
                }
            }
            let opened = async {
                let client = fluvio::connect(&self.input.endpoint).await?;
                // Also tells that the leader is ready for the partition.
                let extent = self.siblings[self.me].lock().await.probe.ask(&client, &self.input.endpoint).await?;
                let fresh = cursor.next().is_none();
                let from = cursor.start_at(extent, self.input.start);
                let config = ConsumerConfigExtBuilder::default()
                    .topic(self.input.topic.clone())
                    .partition(self.partition)
                    .offset_start(fluvio::start_offset(Some(from), self.input.start))
                    .build()
                    .map_err(|e| self.cluster_error(&e))?;
                let stream = client.consumer_with_config(config).await.map_err(|e| self.cluster_error(&e))?;
                // The client must live as long as its stream.
                Ok::<_, FluvioSourceError>((client, stream, fresh.then_some(from)))
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
                tracing::info!("{name}: no checkpointed position; starting at offset {from} ({:?})", self.input.start);
                let mut start = Records::new(name.clone(), now());
                start.resume = Some(Resume::Fluvio { offset: from });
                self.siblings[self.me].lock().await.next = Some(from);
                if !self.log(start).await {
                    return;
                }
            }
            let mut chunks = stream.ready_chunks(BATCH);
            let mut next_ask = tokio::time::Instant::now();
            loop {
                if self.stop.stopped() {
                    return;
                }
                let chunk = match tokio::time::timeout(WAIT, chunks.next()).await {
                    Err(_) => {
                        if tokio::time::Instant::now() >= next_ask {
                            next_ask = tokio::time::Instant::now() + EXTENT_EVERY;
                            if !self.say_if_caught_up(&client, &cursor).await {
                                return;
                            }
                        }
                        continue;
                    }
                    Ok(None) => break,
                    Ok(Some(c)) => c,
                };
                let fetched = tokio::time::Instant::now();
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
                if !records.is_empty() {
                    if !self.recall_siblings(&client, fetched).await {
                        return;
                    }
                    let mut me = self.siblings[self.me].lock().await;
                    (me.caught_up, me.next) = (false, cursor.next());
                    if !self.log(records).await {
                        return;
                    }
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

    /// Quiet: asks the leader whether the partition has been read to its end, and says
    /// so in the log if it has. False when the log is gone (shutdown).
    async fn say_if_caught_up(&self, client: &Fluvio, cursor: &PartitionCursor) -> bool {
        let mut me = self.siblings[self.me].lock().await;
        if me.caught_up {
            return true;
        }
        match me.probe.ask(client, &self.input.endpoint).await {
            Ok(extent) if cursor.next().is_some_and(|n| n >= extent.end) => {
                me.caught_up = true;
                me.confirmed = Some(tokio::time::Instant::now());
                let mut at_end = Records::new(me.name.clone(), now());
                at_end.caught_up = true;
                self.log(at_end).await
            }
            Ok(_) => true,
            Err(e) => {
                tracing::debug!("{}: {e}", me.name);
                true
            }
        }
    }

    /// Before a batch fetched at `fetched` can move the watermark: each sibling that said
    /// it is caught up is asked again, unless its leader said so after the batch was
    /// fetched (it would have seen records produced before), and one that has records
    /// now (or cannot tell) is logged as not caught up, so it holds the watermark back
    /// until its records come.
    async fn recall_siblings(&self, client: &Fluvio, fetched: tokio::time::Instant) -> bool {
        for (i, cell) in self.siblings.iter().enumerate() {
            if i == self.me {
                continue;
            }
            let mut s = cell.lock().await;
            if !s.caught_up || s.confirmed.is_some_and(|at| at >= fetched) {
                continue;
            }
            let more = match s.probe.ask(client, &self.input.endpoint).await {
                Ok(extent) => s.next.is_none_or(|n| n < extent.end),
                Err(_) => true,
            };
            if more {
                s.caught_up = false;
                let back = Input::Records(Records::new(s.name.clone(), now()));
                if !hand_over(&self.log, &self.shared, back, &self.stop).await {
                    return false;
                }
            } else {
                s.confirmed = Some(tokio::time::Instant::now());
            }
        }
        true
    }
}

/// Hands an input to the log from async code: waits (without blocking the runtime)
/// while the worker is behind or the log queue is full.
async fn hand_over(log: &Sender<Append>, shared: &Shared, input: Input, stop: &Stop) -> bool {
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
