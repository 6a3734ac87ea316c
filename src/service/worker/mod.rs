//! The worker: the one thread that owns the engine. It applies log entries in log order
//! (decode, engine, verdicts), writes verdicts and dead letters, publishes usage and the
//! verdict index, and writes checkpoints. Because it only ever sees logged input, its
//! output is a function of the log, which is what makes recovery exact.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{select, Receiver};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::input::{Input, Records, Resume, HTTP_SOURCE};
use super::shared::{verdict_key, Shared, SourcesStatus};
use crate::checkpoint::CheckpointStore;
use crate::engine::inspect::ConversationView;
use crate::ledger::credit_log::CreditRecord;
use crate::ledger::period::Period;
use crate::ledger::statement::{Day, Statement};
use crate::ledger::Ledger;
use crate::margin_view::MarginView;
use crate::replay::{Fed, Pipeline, Position};
use crate::rules::RuleSet;
use crate::sinks::append::AppendFile;
use crate::telemetry::{self, EventCounters, EventResult};
use crate::timestamp::{self, Nanos, Span};

/// The longest verdict line copied into the credit log.
const MAX_VERDICT_LINE: usize = 16 << 20;

/// A log entry handed to the worker once it is durable.
pub struct Logged {
    pub end: u64,
    pub input: Input,
    pub ack: Option<Ack>,
}

/// Hears what became of an input once it is durable and applied.
pub type Ack = oneshot::Sender<Result<Applied, String>>;

/// What applying one batch of records did with each of them.
#[derive(Debug, Default, Serialize)]
pub struct Applied {
    /// Events taken (new ids), now durable and applied in event time.
    pub accepted: usize,
    /// Events whose id was already taken for their conversation: skipped, not an error.
    pub duplicates: usize,
    /// Records dead-lettered, with where they are in the batch and why: invalid or
    /// malformed records, and events that arrived `late`.
    pub rejected: Vec<RecordError>,
}

#[derive(Debug, Serialize)]
pub struct RecordError {
    pub line: u64,
    pub offset: u64,
    pub reason: &'static str,
    pub error: String,
}

/// Requests to the worker that do not go through the log.
pub enum Control {
    /// New rules; the reply says the worker applies them to everything it takes next, or
    /// why it refused them (plans that would change a closed period).
    SetRules(Arc<RuleSet>, oneshot::Sender<Result<(), String>>),
    /// A tenant's invoices, disputes and prepaid balance, as of now.
    Billing {
        tenant: String,
        reply: oneshot::Sender<Result<BillingView, String>>,
    },
    /// A page of the verdicts behind a line of an invoice, and how many there are.
    LineVerdicts {
        tenant: String,
        period: Period,
        line: usize,
        offset: usize,
        limit: usize,
        reply: oneshot::Sender<Result<Option<VerdictPage>, String>>,
    },
    /// A tenant's statement of a day.
    Statement {
        tenant: String,
        day: Day,
        reply: oneshot::Sender<Result<Statement, String>>,
    },
    Conversation {
        tenant: String,
        conversation: String,
        reply: oneshot::Sender<Option<ConversationView>>,
    },
    /// Where the line of a verdict of a closed period is in the verdict file.
    VerdictLine {
        verdict_id: String,
        reply: oneshot::Sender<Result<Option<u64>, String>>,
    },
    Checkpoint(oneshot::Sender<Result<u64, String>>),
    /// What the dispute API asks of the ledger.
    Dispute(DisputeRequest),
    /// The margin view of a period, for one tenant or every tenant with usage in it.
    Margins {
        tenant: Option<String>,
        period: Period,
        reply: oneshot::Sender<Result<Vec<MarginView>, String>>,
    },
}

/// How many verdicts a line has, and a page of their ids.
pub type VerdictPage = (u64, Vec<String>);

/// How live time works (see `RunConfig`).
#[derive(Clone, Debug)]
pub struct LiveTime {
    pub wall_clock: bool,
    /// How long a caught-up file, stdin or partition is quiet before it is left out.
    pub idle_timeout: Span,
    /// The delivery allowance: the wall clock moves the watermark to now minus this, and
    /// HTTP is left out after this long without requests.
    pub delivery: Span,
    /// `Some(skew)`: events further than this ahead of their arrival are invalid.
    pub max_future_skew: Option<Span>,
}

/// A sink's name and how far it has been acknowledged, shared with the sink's task.
#[derive(Clone, Debug)]
pub struct SinkProgress {
    pub name: String,
    pub acked: Arc<std::sync::atomic::AtomicU64>,
    /// The file it ships.
    pub file: OutputFile,
}

/// The files the worker writes, which sinks ship.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFile {
    Verdicts,
    DeadLetters,
    /// The credit log ([`crate::ledger::credit_log`]).
    Credits,
}

mod disputes;
mod payload;
mod recover;
mod views;

pub use disputes::DisputeRequest;
pub use views::BillingView;

pub use payload::CHECKPOINT_FORMAT;
pub use recover::Recovered;

pub struct Worker {
    pipeline: Pipeline,
    out: AppendFile,
    dead: AppendFile,
    credits: AppendFile,
    shared: Arc<Shared>,
    store: CheckpointStore,
    live: LiveTime,
    /// This state directory's id, written into every checkpoint.
    dir_id: u128,
    wal_pos: u64,
    /// Where each re-readable source continues, as of `wal_pos`.
    sources: BTreeMap<String, Resume>,
    /// How far each sink has been acknowledged in the verdict or dead-letter file;
    /// what follows is sent again after a crash.
    sinks: Vec<SinkProgress>,
    /// Sink positions from the checkpoint, until the sinks start.
    recovered_sinks: BTreeMap<String, u64>,
    counters: EventCounters,
    /// WAL position of each kept checkpoint, oldest first.
    kept: Vec<u64>,
    index_batch: Vec<(u128, u64)>,
    /// Tenants and periods the current batch's verdicts counted in; their usage (kept
    /// by the pipeline) is published once those verdicts are written.
    usage_touched: BTreeMap<String, Vec<String>>,
}

impl Worker {
    /// The ledger; the worker's pipeline always has one.
    fn ledger(&self) -> &Ledger {
        self.pipeline.ledger.as_ref().expect("the worker's pipeline bills")
    }

    /// Swaps in new rules, unless their plans would change a closed period.
    fn set_rules(&mut self, rules: Arc<RuleSet>) -> Result<(), String> {
        if let Some(ledger) = &mut self.pipeline.ledger {
            if let Some(through) = ledger.closed_through() {
                if let Some(why) = ledger.plans().changes_closed(&rules.plans, through) {
                    return Err(why);
                }
            }
            ledger.set_plans(rules.plans.clone());
        }
        self.pipeline.engine.set_rules(rules);
        Ok(())
    }

    /// The sources the watermark knows (from the checkpoint and the log).
    pub fn source_names(&self) -> Vec<String> {
        self.pipeline.engine.watermark().sources().iter().map(|s| s.name.clone()).collect()
    }

    /// Where each re-readable source continues.
    pub fn sources(&self) -> &BTreeMap<String, Resume> {
        &self.sources
    }

    /// Where sink `name` resumes in `file`: its checkpointed position, never past what
    /// the file holds (a crash cut the file back to the checkpoint).
    pub fn sink_start(&self, name: &str, file_len: u64) -> u64 {
        self.recovered_sinks.get(name).copied().unwrap_or(0).min(file_len)
    }

    /// Length of one of the files the worker writes.
    pub fn output_len(&self, file: OutputFile) -> u64 {
        match file {
            OutputFile::Verdicts => self.out.len(),
            OutputFile::DeadLetters => self.dead.len(),
            OutputFile::Credits => self.credits.len(),
        }
    }

    /// Registers a running sink, whose acknowledged position goes into checkpoints.
    pub fn add_sink(&mut self, sink: SinkProgress) {
        self.sinks.push(sink);
    }

    /// How long source `name` must be caught up and quiet before it is left out.
    pub fn quiet_time(&self, name: &str) -> Nanos {
        if name == HTTP_SOURCE {
            self.live.delivery.0
        } else {
            self.live.idle_timeout.0
        }
    }

    /// Applies one log entry ending at `end`; `report`, when given, hears what became
    /// of each record.
    pub fn apply(&mut self, end: u64, input: &Input, report: Option<&mut Applied>) -> anyhow::Result<()> {
        // Whatever a failed call left is not published (nor counted twice).
        self.index_batch.clear();
        self.usage_touched.clear();
        let mut io_err: Option<std::io::Error> = None;
        match input {
            Input::Records(r) => self.apply_records(r, &mut io_err, report),
            Input::Tick { now } => {
                let engine = &mut self.pipeline.engine;
                engine.mark_idle(*now);
                if self.live.wall_clock && engine.watermark().all_idle() {
                    engine.advance_to(now.saturating_sub(self.live.delivery.0));
                }
            }
            Input::Sources(set) => {
                if let Some(l) = set.live {
                    self.live.wall_clock = l.wall_clock;
                    self.live.idle_timeout = Span(l.idle_timeout);
                    self.live.delivery = Span(l.delivery);
                    self.live.max_future_skew = l.max_future_skew.map(Span);
                }
                let starts = set.sources.iter().map(|s| (s.name.as_str(), s.quiet, s.caught_up));
                self.pipeline.engine.set_sources(set.now, |n| set.in_scope(n), starts);
            }
        }
        let (out, index, touched) = (&mut self.out, &mut self.index_batch, &mut self.usage_touched);
        self.pipeline.drain_placed(|v| match out.write(v) {
            Ok(at) => {
                if let Some(k) = verdict_key(&v.verdict_id) {
                    index.push((k, at));
                }
                let mut buf = [0u8; 16];
                let period = timestamp::period_str(v.decided_at, &mut buf);
                match touched.get_mut(v.tenant.as_str()) {
                    Some(periods) if periods.iter().any(|p| p == period) => {}
                    Some(periods) => periods.push(period.to_owned()),
                    None => {
                        touched.insert(v.tenant.clone(), vec![period.to_owned()]);
                    }
                }
                telemetry::verdict(v);
                Some(at)
            }
            Err(e) => {
                io_err.get_or_insert(e);
                None
            }
        });
        if let Some(e) = io_err {
            return Err(e).context("writing verdicts or dead letters");
        }
        self.out.flush().context("writing verdicts")?;
        self.dead.flush().context("writing dead letters")?;
        // Published only now: whatever usage shows, its verdicts are in the file and the
        // audit index already.
        for (k, at) in self.index_batch.drain(..) {
            self.shared.verdicts.insert(k, at);
        }
        // After the index: a credit's verdict may have been decided in this batch.
        self.write_credits().context("writing the credit log")?;
        for (tenant, periods) in std::mem::take(&mut self.usage_touched) {
            let Some(kept) = self.pipeline.summary.usage.tenants.get(&tenant) else { continue };
            let mut published = self.shared.usage.entry(tenant).or_default();
            for period in periods {
                if let Some(usage) = kept.get(&period) {
                    published.insert(period, usage.clone());
                }
            }
        }
        if let Some(ledger) = self.pipeline.ledger.as_mut() {
            // Closed periods' verdicts are found through the history from now on.
            for id in ledger.take_released() {
                if let Some(k) = verdict_key(&id) {
                    self.shared.verdicts.remove(&k);
                }
            }
            self.shared.publish_charged(ledger.take_charged());
        }
        self.counters.publish();
        let wm = self.pipeline.engine.watermark();
        let tick_from = if self.live.wall_clock && wm.all_idle() { 0 } else { wm.next_idle_at().unwrap_or(Nanos::MAX) };
        self.shared.tick_from.store(tick_from, Ordering::Release);
        if let Some(why) = self.pipeline.ledger.as_ref().and_then(Ledger::failed) {
            anyhow::bail!("the ledger history failed: {why}");
        }
        self.wal_pos = end;
        Ok(())
    }

    fn apply_records(&mut self, r: &Records, io_err: &mut Option<std::io::Error>, mut report: Option<&mut Applied>) {
        let not_after = self.live.max_future_skew.map(|s| r.received_at.saturating_add(s.0));
        let quiet = self.quiet_time(&r.source);
        let engine = &mut self.pipeline.engine;
        engine.mark_idle(r.received_at);
        engine.from_source(&r.source, r.received_at, quiet);
        let dead = &mut self.dead;
        for at in &r.records {
            let pos = Position { source: &r.source, line: at.line, offset: at.offset };
            let fed = self.pipeline.feed(r.bytes(at), at.size, at.truncated, not_after, pos, &mut |d| {
                if let Err(e) = dead.write(&d) {
                    io_err.get_or_insert(e);
                }
                if let Some(rep) = report.as_deref_mut() {
                    let error = d.error.into_owned();
                    rep.rejected.push(RecordError { line: d.line, offset: d.offset, reason: d.reason.as_str(), error });
                }
            });
            match fed {
                Fed::Blank => {}
                Fed::Rejected(reason) => self.counters.rejected(reason),
                // Billing events count as events taken (or duplicates); a late one was
                // reported as rejected on its way to the dead letters.
                Fed::Billing(EventResult::Accepted) => report.iter_mut().for_each(|rep| rep.accepted += 1),
                Fed::Billing(EventResult::Duplicate) => report.iter_mut().for_each(|rep| rep.duplicates += 1),
                Fed::Billing(EventResult::Late) => {}
                Fed::Event(kind, result) => {
                    self.counters.event(kind, result);
                    match result {
                        EventResult::Late => self.counters.rejected(crate::decode::RejectReason::Late),
                        EventResult::Accepted => report.iter_mut().for_each(|rep| rep.accepted += 1),
                        EventResult::Duplicate => report.iter_mut().for_each(|rep| rep.duplicates += 1),
                    }
                }
            }
        }
        self.pipeline.engine.set_caught_up(r.caught_up);
        if let Some(pos) = &r.resume {
            self.sources.insert(r.source.clone(), pos.clone());
        }
    }

    /// Appends the credits the ledger gave in this batch to the credit log, each with
    /// its verdict's line (already written: a verdict is rated before any credit of it).
    fn write_credits(&mut self) -> anyhow::Result<()> {
        let Some(ledger) = self.pipeline.ledger.as_mut() else { return Ok(()) };
        let given = ledger.take_credits();
        if given.is_empty() {
            return Ok(());
        }
        for (tenant, credit) in &given {
            let indexed =
                verdict_key(&credit.verdict_id).and_then(|k| self.shared.verdicts.get(&k).map(|e| *e.value()));
            let at = match indexed {
                Some(at) => Some(at),
                None => ledger.history().store().verdict_line(&credit.verdict_id)?,
            };
            let line = at.map(|at| crate::sinks::append::read_line_at(self.out.path(), at, MAX_VERDICT_LINE));
            let verdict = match line {
                Some(Ok(bytes)) => String::from_utf8(bytes).ok().and_then(|l| RawValue::from_string(l).ok()),
                Some(Err(e)) => {
                    tracing::error!("cannot read verdict {} for its credit: {e}", credit.verdict_id);
                    None
                }
                None => None,
            };
            if verdict.is_none() {
                tracing::error!(
                    "the credit of verdict {} is logged without its verdict (its line was not found); it is not pushed",
                    credit.verdict_id
                );
            }
            self.credits.write(&CreditRecord::new(tenant, credit, at, verdict.as_deref()))?;
        }
        self.credits.flush()?;
        Ok(())
    }

    /// Writes a checkpoint of everything applied so far; returns its size.
    pub fn checkpoint(&mut self) -> anyhow::Result<u64> {
        let started = Instant::now();
        self.out.sync().context("syncing the verdict output")?;
        self.dead.sync().context("syncing the dead letters")?;
        self.credits.sync().context("syncing the credit log")?;
        let verdicts: Vec<(u128, u64)> = self.shared.verdicts.iter().map(|e| (*e.key(), *e.value())).collect();
        let payload = payload::CheckpointRef {
            dir_id: self.dir_id,
            wal_pos: self.wal_pos,
            output_len: self.out.len(),
            dead_len: self.dead.len(),
            credits_len: self.credits.len(),
            sources: &self.sources,
            sinks: self.sink_positions(),
            usage: &self.pipeline.summary.usage,
            verdicts,
            engine: &self.pipeline.engine,
            ledger: self.ledger().state(),
            margins: self.pipeline.engine.margins().expect("the worker keeps model costs (recover)"),
        };
        let bytes =
            bincode::serde::encode_to_vec(&payload, bincode::config::standard()).context("encoding the checkpoint")?;
        let written = self.store.write(CHECKPOINT_FORMAT, &bytes).context("writing the checkpoint")?;
        self.kept.push(self.wal_pos);
        let keep = 2;
        if self.kept.len() > keep {
            self.kept.drain(..self.kept.len() - keep);
        }
        // The log must still hold what the oldest kept checkpoint needs, in case the
        // newest turns out torn.
        if let Some(&oldest) = self.kept.first() {
            self.shared.removable_wal.store(oldest, Ordering::Release);
        }
        self.shared.last_checkpoint.store(timestamp::now(), Ordering::Release);
        metrics::histogram!(telemetry::CHECKPOINT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::gauge!(telemetry::CHECKPOINT_BYTES).set(written.bytes as f64);
        tracing::debug!(seq = written.seq, bytes = written.bytes, wal = self.wal_pos, "checkpoint written");
        Ok(written.bytes)
    }

    /// Every sink's acknowledged position; a sink turned off keeps its last one.
    fn sink_positions(&self) -> BTreeMap<String, u64> {
        let mut all = self.recovered_sinks.clone();
        for s in &self.sinks {
            all.insert(s.name.clone(), s.acked.load(Ordering::Acquire));
        }
        all
    }

    /// Waits up to `limit` for the sinks to ship everything written, so the checkpoint
    /// that follows leaves nothing to send twice.
    fn wait_for_sinks(&self, limit: Duration) {
        let until = Instant::now() + limit;
        let acked = || self.sinks.iter().map(|s| s.acked.load(Ordering::Acquire)).collect::<Vec<_>>();
        let behind = |s: &SinkProgress| s.acked.load(Ordering::Acquire) < self.output_len(s.file);
        // A sink that moves nothing for a second is not reaching its cluster.
        let (mut last, mut moved_at) = (acked(), Instant::now());
        while self.sinks.iter().any(behind) {
            let now = Instant::now();
            if now >= until || now.duration_since(moved_at) > Duration::from_secs(1) {
                tracing::warn!("sinks are behind; the rest is shipped after the restart");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
            let a = acked();
            if a != last {
                (last, moved_at) = (a, Instant::now());
            }
        }
    }

    /// Engine gauges, published after each batch of work.
    fn publish_gauges(&self) {
        let e = &self.pipeline.engine;
        let report = e.pending_report();
        metrics::gauge!(telemetry::OPEN).set(report.open_conversations as f64);
        metrics::gauge!(telemetry::RETAINED).set(report.decided_retained as f64);
        metrics::gauge!(telemetry::TIMERS).set(report.timers.values().sum::<u64>() as f64);
        metrics::gauge!(telemetry::BUFFERED).set(report.buffered_events as f64);
        metrics::gauge!(telemetry::BACKLOG).set(self.shared.backlog.load(Ordering::Relaxed) as f64);
        metrics::gauge!(telemetry::INDEXED).set(self.shared.verdicts.len() as f64);
        let lateness = e.watermark().lateness();
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        for src in e.watermark().sources() {
            if let Some(t) = src.watermark(lateness) {
                metrics::gauge!(telemetry::SOURCE_WATERMARK, "source" => src.name.clone())
                    .set(telemetry::unix_seconds(t));
            }
            metrics::gauge!(telemetry::SOURCE_IDLE, "source" => src.name.clone()).set(flag(src.idle));
            metrics::gauge!(telemetry::SOURCE_CAUGHT_UP, "source" => src.name.clone()).set(flag(src.caught_up));
        }
        self.shared.sources.store(Arc::new(SourcesStatus::of(e.watermark(), &self.live)));
        let wm = e.watermark().current();
        if let Some(ledger) = &self.pipeline.ledger {
            let mut gauges = ledger.gauges(wm, timestamp::now());
            let mut buf = [0u8; 16];
            let period = timestamp::period_str(wm, &mut buf);
            for g in &mut gauges {
                g.cost = self.pipeline.summary.usage.get(&g.tenant, period).map_or(Default::default(), |u| u.cost);
            }
            telemetry::billing(&gauges, e.rules().currency());
        }
        if wm != Nanos::MIN {
            metrics::gauge!(telemetry::WATERMARK).set(telemetry::unix_seconds(wm));
            let lag = timestamp::now().saturating_sub(wm);
            metrics::gauge!(telemetry::WATERMARK_LAG).set(telemetry::unix_seconds(lag));
        }
    }

    /// Runs until the log channel closes (shutdown), then writes a final checkpoint.
    pub fn run(
        mut self,
        logged: Receiver<Logged>,
        mut control: Receiver<Control>,
        every: Duration,
    ) -> anyhow::Result<()> {
        let mut next_checkpoint = Instant::now() + every;
        let mut next_gauges = Instant::now();
        loop {
            // Wake for the gauges too, so they stay current while no input arrives.
            let wait = next_checkpoint.min(next_gauges).saturating_duration_since(Instant::now());
            select! {
                recv(logged) -> msg => match msg {
                    Ok(l) => {
                        let weight = l.input.weight();
                        let mut applied = l.ack.is_some().then(Applied::default);
                        let r = self.apply(l.end, &l.input, applied.as_mut());
                        if let Some(ack) = l.ack {
                            let _ = ack.send(match &r {
                                Ok(()) => Ok(applied.unwrap_or_default()),
                                Err(e) => Err(format!("logged, but applying it failed: {e:#}")),
                            });
                        }
                        r?;
                        self.shared.backlog.fetch_sub(weight, Ordering::Relaxed);
                    }
                    Err(_) => break,
                },
                recv(control) -> msg => match msg {
                    Ok(Control::SetRules(rules, applied)) => {
                        let _ = applied.send(self.set_rules(rules));
                    }
                    Ok(Control::Billing { tenant, reply }) => {
                        let _ = reply.send(self.billing_view(&tenant));
                    }
                    Ok(Control::LineVerdicts { tenant, period, line, offset, limit, reply }) => {
                        let wm = self.pipeline.engine.watermark().current();
                        let page = self.ledger().line_verdicts(&tenant, period, line, offset, limit, wm);
                        let _ = reply.send(page.map_err(|e| e.to_string()));
                    }
                    Ok(Control::Statement { tenant, day, reply }) => {
                        let _ = reply.send(self.statement(&tenant, day));
                    }
                    Ok(Control::Conversation { tenant, conversation, reply }) => {
                        let _ = reply.send(self.pipeline.engine.conversation_view(&tenant, &conversation));
                    }
                    Ok(Control::VerdictLine { verdict_id, reply }) => {
                        let at = self.ledger().history().store().verdict_line(&verdict_id);
                        let _ = reply.send(at.map_err(|e| e.to_string()));
                    }
                    Ok(Control::Dispute(request)) => self.dispute(request),
                    Ok(Control::Margins { tenant, period, reply }) => {
                        let _ = reply.send(self.margins(tenant.as_deref(), period));
                    }
                    Ok(Control::Checkpoint(reply)) => {
                        let r = self.checkpoint().map_err(|e| format!("{e:#}"));
                        if r.is_ok() {
                            next_checkpoint = Instant::now() + every;
                        }
                        let _ = reply.send(r);
                    }
                    // Every requester is gone (shutdown): stop listening.
                    Err(_) => control = crossbeam_channel::never(),
                },
                default(wait) => {}
            }
            let now = Instant::now();
            if now >= next_gauges {
                self.publish_gauges();
                next_gauges = now + Duration::from_millis(500);
            }
            if now >= next_checkpoint {
                if let Err(e) = self.checkpoint() {
                    tracing::error!("checkpoint failed: {e:#}");
                    metrics::counter!(telemetry::CHECKPOINT_FAILURES).increment(1);
                }
                next_checkpoint = Instant::now() + every;
            }
        }
        self.publish_gauges();
        self.wait_for_sinks(Duration::from_secs(10));
        self.checkpoint().context("the final checkpoint")?;
        Ok(())
    }
}
