//! The sequencer: the one thread that writes the log. Every source hands it inputs; it
//! appends as many as are waiting, makes them durable with one fsync (group commit),
//! then passes them to the worker in log order. An input's acknowledgement travels with
//! it: the worker answers once it has applied it, so an HTTP client gets its 2xx only
//! after that fsync, with what became of each record.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::input::Input;
use super::shared::Shared;
use super::worker::{Ack, Logged};
use crate::telemetry;
use crate::wal::Wal;

/// Most inputs written per group commit.
const MAX_GROUP: usize = 4096;

/// An input to log; `ack` hears once it is durable and applied (or why it is not).
pub struct Append {
    pub input: Input,
    pub ack: Option<Ack>,
}

impl Append {
    /// An input to hand to the sequencer, counted in the backlog from now until the
    /// worker has applied it (the worker subtracts the same weight).
    pub fn new(input: Input, ack: Option<Ack>, shared: &Shared) -> Append {
        shared.backlog.fetch_add(input.weight(), Ordering::Relaxed);
        Append { input, ack }
    }

    /// Takes an input that could not be handed over back out of the backlog.
    pub fn withdraw(self, shared: &Shared) {
        shared.backlog.fetch_sub(self.input.weight(), Ordering::Relaxed);
    }
}

/// Runs until every sender is gone. A log write or fsync failure stops it (and with it
/// the service): acknowledging input that may not be durable would break the promise.
pub fn run(mut wal: Wal, inputs: Receiver<Append>, worker: Sender<Logged>, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut group: Vec<Append> = Vec::with_capacity(64);
    let mut ends: Vec<u64> = Vec::with_capacity(64);
    let mut removed_before = 0;
    let written = metrics::counter!(telemetry::WAL_BYTES);
    let sync_time = metrics::histogram!(telemetry::WAL_SYNC);
    while let Ok(first) = inputs.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match inputs.try_recv() {
                Ok(a) => group.push(a),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let before = wal.end();
        let result = (|| {
            for a in &group {
                let (_, end) = wal.append(&a.input.encode())?;
                ends.push(end);
            }
            wal.sync()
        })();
        if let Err(e) = result {
            let msg = format!("the write-ahead log failed: {e}");
            for a in group.drain(..) {
                if let Some(ack) = a.ack {
                    let _ = ack.send(Err(msg.clone()));
                }
            }
            shared.ready.store(false, Ordering::Release);
            return Err(anyhow::anyhow!(msg));
        }
        sync_time.record(started.elapsed().as_secs_f64());
        written.increment(wal.end() - before);
        for (a, end) in group.drain(..).zip(ends.drain(..)) {
            if worker.send(Logged { end, input: a.input, ack: a.ack }).is_err() {
                return Err(anyhow::anyhow!("the worker stopped"));
            }
        }
        metrics::gauge!(telemetry::BACKLOG).set(shared.backlog.load(Ordering::Relaxed) as f64);
        let removable = shared.removable_wal.load(Ordering::Acquire);
        if removable > removed_before {
            match wal.remove_before(removable) {
                Ok(_) => removed_before = removable,
                Err(e) => tracing::warn!("cannot remove old log segments: {e}"),
            }
        }
    }
    Ok(())
}
