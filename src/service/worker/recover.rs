//! Starting a worker from a state directory: the newest good checkpoint of this
//! directory (or nothing), the outputs cut back to it, the log replayed after it, and
//! whatever is found wrong on the way reported through the recovery policy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::payload::{self, Payload};
use super::Worker;
use crate::aggregates::Aggregates;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::engine::{Engine, EngineConfig};
use crate::ledger::store::{History, Store};
use crate::ledger::Ledger;
use crate::margins::Margins;
use crate::replay::Pipeline;
use crate::rules::RuleSet;
use crate::service::input::Input;
use crate::service::recovery::{Policy, Problem};
use crate::service::shared::Shared;
use crate::service::worker::LiveTime;
use crate::sinks::append::{AppendFile, Reopened};
use crate::statedir::StateDir;
use crate::telemetry::{self, EventCounters};
use crate::wal::{Wal, WalError, WalReader};

/// What recovery found, for the log.
#[derive(Debug, Default)]
pub struct Recovered {
    pub checkpoint: Option<(u64, u64)>,
    pub checkpoint_path: Option<std::path::PathBuf>,
    pub rejected_checkpoints: Vec<String>,
    pub replayed_entries: u64,
    pub output_cut: u64,
    pub wal_pos: u64,
}

impl Worker {
    /// Loads the newest good checkpoint of this state directory (or starts empty), cuts
    /// the outputs (verdicts, dead letters, credit log) back to it and replays the log
    /// after it. What it finds wrong is
    /// reported through `policy` (see [`recovery`](super::recovery)).
    #[allow(clippy::too_many_arguments)]
    pub fn recover(
        cfg: EngineConfig,
        live: LiveTime,
        rhai: Arc<rhai::Engine>,
        rules: Arc<RuleSet>,
        shared: Arc<Shared>,
        dir: &mut StateDir,
        [output, dead_letter, credit_log]: [&Path; 3],
        wal: &mut Wal,
        policy: Policy,
    ) -> anyhow::Result<(Worker, Recovered)> {
        let state_dir = dir.path().to_path_buf();
        let store = CheckpointStore::open(&state_dir.join("checkpoints"))
            .with_context(|| format!("cannot open the checkpoint store in {}", state_dir.display()))?;
        let mut rec = Recovered::default();
        let known_id = dir.id()?;
        let mut chosen = None;
        for seq in store.newest_first().context("cannot list checkpoints")? {
            let good = match store.load(seq, payload::READS) {
                Ok(g) => g,
                Err(r) => {
                    metrics::counter!(telemetry::CHECKPOINTS_REJECTED).increment(1);
                    if let CheckpointError::Version { found, reads } = &r.cause {
                        if found > reads.end() {
                            let what = format!(
                                "checkpoint {} was written by a newer verdict (format {found}; this build reads up \
                                 to {}): its state is ahead of any older checkpoint",
                                r.path.display(),
                                reads.end()
                            );
                            let way_out = "run the newer verdict on this directory; --accept-loss skips the \
                                           checkpoint, and what the newer build did after the older one is lost";
                            policy.found(Problem::NewerCheckpoint, &what, way_out)?;
                        }
                    }
                    let what = format!("checkpoint {} is unusable and was skipped: {}", r.path.display(), r.cause);
                    policy.found(Problem::CheckpointRejected, &what, "")?;
                    rec.rejected_checkpoints.push(format!("{}: {}", r.path.display(), r.cause));
                    continue;
                }
            };
            let ckpt_id = payload::dir_id(good.version, &good.payload)
                .with_context(|| format!("checkpoint {} does not decode", good.path.display()))?;
            match (known_id, ckpt_id) {
                (Some(id), Some(theirs)) if id != theirs => {
                    let what = format!(
                        "checkpoint {} was written in another state directory (id {theirs:032x}; {} has id \
                         {id:032x}): its log positions and output lengths are another directory's",
                        good.path.display(),
                        state_dir.display()
                    );
                    let way_out = "move that checkpoint out of the checkpoints directory (recovery then uses the \
                                   one before it, or replays the log from its start), or put it back in the state \
                                   directory it came from; --accept-loss skips it";
                    policy.found(Problem::ForeignCheckpoint, &what, way_out)?;
                    continue;
                }
                (None, Some(theirs)) => {
                    tracing::warn!(
                        "{} had no state-id file; it takes the id of its checkpoint {}",
                        state_dir.display(),
                        good.path.display()
                    );
                    dir.set_id(theirs)?;
                }
                // This directory's, or written before directories had ids (an upgrade).
                _ => {}
            }
            chosen = Some(good);
            break;
        }
        let dir_id = match dir.id()? {
            Some(id) => id,
            None => {
                let id = crate::statedir::new_id();
                dir.set_id(id)?;
                id
            }
        };
        // The ledger's closed periods; what a crashed run closed after the checkpoint is
        // forgotten and closed again by the replay.
        let history_path = state_dir.join("ledger.sqlite");
        let history = || {
            Store::open(&history_path)
                .and_then(History::new)
                .with_context(|| format!("cannot open the ledger history {}", history_path.display()))
        };
        let mut kept = Vec::new();
        let snap = match &chosen {
            Some(good) => {
                let snap = payload::decode(good.version, &good.payload, dir_id)
                    .with_context(|| format!("checkpoint {} does not decode", good.path.display()))?;
                debug_assert_eq!(snap.dir_id, dir_id, "the chosen checkpoint is this directory's");
                if good.version < payload::CHECKPOINT_FORMAT {
                    tracing::info!("read checkpoint {} of format {} (an upgrade)", good.path.display(), good.version);
                }
                rec.checkpoint = Some((good.seq, snap.wal_pos));
                rec.checkpoint_path = Some(good.path.clone());
                kept.push(snap.wal_pos);
                Some(snap)
            }
            None => None,
        };
        let (engine, mut ledger, wal_pos, mut lens, sources, recovered_sinks, usage, mut verdicts, margins) = match snap
        {
            Some(Payload {
                dir_id: _,
                wal_pos,
                output_len,
                dead_len,
                credits_len,
                sources,
                sinks,
                usage,
                verdicts,
                engine,
                ledger,
                margins,
            }) => {
                let ledger =
                    Ledger::restore(rules.plans.clone(), rules.currency(), ledger, history()?).map_err(|why| {
                        anyhow::anyhow!(
                            "rules in {} do not load:\n{why}\n(the plans in force when the periods closed are in the \
                         checkpoint; put back the plans of closed periods and assign changes from an open one)",
                            rules.dir.display()
                        )
                    })?;
                let engine = Engine::restore(cfg, rhai, rules, engine);
                let lens = [Some(output_len), Some(dead_len), Some(credits_len)];
                (engine, ledger, wal_pos, lens, sources, sinks, usage, verdicts, margins)
            }
            None => {
                let mut fresh = history()?;
                fresh.forget_after(None).context("clearing the ledger history")?;
                let ledger = Ledger::new(rules.plans.clone(), rules.currency(), fresh);
                let engine = Engine::new(cfg, rhai, rules);
                let (sources, sinks) = (BTreeMap::new(), BTreeMap::new());
                (engine, ledger, 0, [None; 3], sources, sinks, Aggregates::default(), Vec::new(), Margins::default())
            }
        };
        let checkpoint_name = rec.checkpoint_path.as_ref().map_or_else(String::new, |p| p.display().to_string());
        let wal_dir = wal.dir().to_path_buf();
        let mut from = wal_pos;
        if wal_pos > wal.end() {
            let what = format!(
                "the write-ahead log in {} ends at position {}, but checkpoint {checkpoint_name} was written at \
                 position {wal_pos}: the log is not the one the checkpoint was written with (restored from an \
                 older copy, or cut)",
                wal_dir.display(),
                wal.end()
            );
            let way_out = format!(
                "put back the log that goes with the checkpoint (its segments reach position {wal_pos}); \
                 --accept-loss continues from the checkpoint, whose state already holds everything up to that \
                 position, and starts the log there; input logged after it but missing from the log is lost"
            );
            policy.found(Problem::LogShort, &what, &way_out)?;
            wal.skip_to(wal_pos).context("continuing the write-ahead log at the checkpoint's position")?;
        }
        let mut reader = match WalReader::open(&wal_dir, from) {
            Err(WalError::Missing { wanted, first }) => {
                let what = format!(
                    "the write-ahead log in {} starts at position {first}, but checkpoint {checkpoint_name} needs it \
                     from position {wanted}: segments it needs were removed",
                    wal_dir.display()
                );
                let way_out = "put back the removed segments (files named by their start position); \
                               --accept-loss replays what the log still holds, and the input in the removed \
                               segments is lost";
                policy.found(Problem::LogMissing, &what, way_out)?;
                from = first;
                WalReader::open(&wal_dir, from)
            }
            other => other,
        }
        .with_context(|| format!("the write-ahead log in {} cannot be read from position {from}", wal_dir.display()))?;
        // Nothing in the directory is touched before the log checks below have passed.
        if chosen.is_none() && wal.end() > 0 {
            let what = format!(
                "no usable checkpoint in {}, but the write-ahead log holds {} bytes: replaying it from its start \
                 would write its verdicts again after those already in the outputs",
                state_dir.display(),
                wal.end()
            );
            let way_out = "put back a checkpoint of this directory; --accept-loss empties the verdict, \
                           dead-letter and credit files and writes them anew from the whole log";
            policy.found(Problem::NoCheckpoint, &what, way_out)?;
            lens = [Some(0); 3];
        }
        let open =
            |path: &Path, len| AppendFile::open(path, len).with_context(|| format!("cannot open {}", path.display()));
        let ((out, o), (dead, d), (credits, c)) =
            (open(output, lens[0])?, open(dead_letter, lens[1])?, open(credit_log, lens[2])?);
        let files = [(output, o, lens[0]), (dead_letter, d, lens[1]), (credit_log, c, lens[2])];
        for (path, state, recorded) in files {
            match state {
                Reopened::Intact => {}
                Reopened::Cut(n) => {
                    tracing::info!("cut {n} bytes written after the checkpoint from {}", path.display());
                    rec.output_cut += n;
                }
                Reopened::Shorter { found } => {
                    let what = format!(
                        "{} is {found} bytes, but checkpoint {checkpoint_name} recorded {} bytes: what was written \
                         between is gone (the file was truncated or replaced)",
                        path.display(),
                        recorded.unwrap_or(0)
                    );
                    let way_out = format!(
                        "restore {} from a copy that is at least {} bytes long; --accept-loss appends to it as it \
                         is, and the lost lines stay lost",
                        path.display(),
                        recorded.unwrap_or(0)
                    );
                    policy.found(Problem::OutputShort, &what, &way_out)?;
                    if path == output {
                        // The audit index must not point past the file or into new lines.
                        verdicts.retain(|&(_, at)| at < found);
                    }
                }
            }
        }
        for (tenant, periods) in &usage.tenants {
            shared.usage.insert(tenant.clone(), periods.clone());
        }
        for (id, at) in verdicts {
            shared.verdicts.insert(id, at);
        }
        let closed_totals = ledger.history().store().totals().context("reading the billing history")?;
        shared.publish_charged(closed_totals);
        shared.publish_charged(ledger.take_charged());
        let index = shared.clone();
        ledger.track_released(Box::new(move |id| {
            crate::service::shared::verdict_key(id).and_then(|k| index.verdicts.get(&k).map(|e| *e.value()))
        }));
        ledger.track_credits();
        let mut engine = engine;
        engine.keep_margins(margins);
        let mut pipeline = Pipeline::new(engine, Vec::new());
        pipeline.summary.usage = usage;
        pipeline.ledger = Some(ledger);
        let mut w = Worker {
            pipeline,
            out,
            dead,
            credits,
            shared,
            store,
            live,
            dir_id,
            wal_pos: from,
            sources,
            sinks: Vec::new(),
            recovered_sinks,
            counters: EventCounters::default(),
            kept,
            index_batch: Vec::new(),
            usage_touched: BTreeMap::new(),
        };
        while let Some(entry) = reader.next_entry().with_context(|| {
            format!(
                "reading the write-ahead log in {}; a damaged segment before the last one cannot be cut off: \
                 restore it, or move the state directory aside and rebuild from the sources",
                wal_dir.display()
            )
        })? {
            let input = Input::decode(&entry.payload).with_context(|| {
                format!("write-ahead log entry at {} of {} does not decode", entry.start, wal_dir.display())
            })?;
            w.apply(entry.end, &input, None)?;
            rec.replayed_entries += 1;
        }
        rec.wal_pos = w.wal_pos;
        Ok((w, rec))
    }
}
