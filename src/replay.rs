//! `verdict replay`: finite NDJSON inputs through the engine, verdicts and dead letters
//! out, a summary at the end. The [`Pipeline`] (decode -> engine -> aggregates) is also
//! what rule fixtures run through.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::aggregates::Aggregates;
use crate::decode::{self, DeadLetter, RejectReason, WireEvent};
use crate::engine::{Engine, EngineConfig, Ingest};
use crate::kinds::{self, Kind};
use crate::ledger::billing::{self, BillingEvent};
use crate::ledger::rating::Rated;
use crate::ledger::store::{History, StoreError};
use crate::ledger::{Ledger, Taken as LedgerTaken};
use crate::rules::{sandbox, Limits, RuleSet};
use crate::sinks::NdjsonSink;
use crate::sources::{open_input, LineReader};
use crate::summary::Summary;
use crate::telemetry::EventResult;
use crate::timestamp::{format_rfc3339, Nanos, Span};
use crate::verdicts::Verdict;

/// Records a replay feeds before it applies what they made due and writes the verdicts:
/// decoding a run of records, then applying a run of events, keeps each step's code in
/// the instruction cache (per record, the two evicted each other). Event-time order is
/// unchanged by it.
pub const DRAIN_EVERY: u64 = 256;

/// Decode, engine and aggregates, and the ledger when billing is on, fed one record at
/// a time.
pub struct Pipeline {
    pub engine: Engine,
    pub summary: Summary,
    /// Rates verdicts and billing events into invoices; without it billing events are
    /// refused (rule fixtures do not bill).
    pub ledger: Option<Ledger>,
}

/// What became of one fed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    Blank,
    Rejected(RejectReason),
    Event(Kind, EventResult),
    /// A billing event, which went to the ledger.
    Billing(EventResult),
}

/// Where rejected records go.
type Dead<'a> = &'a mut dyn FnMut(DeadLetter<'_>);

/// Where a record came from.
#[derive(Clone, Copy, Debug)]
pub struct Position<'a> {
    pub source: &'a str,
    pub line: u64,
    pub offset: u64,
}

impl Pipeline {
    pub fn new(engine: Engine, inputs: Vec<String>) -> Self {
        Pipeline { engine, summary: Summary::new(inputs), ledger: None }
    }

    /// The same, rating into a ledger under the rules' plans, with its history in memory.
    pub fn billing(engine: Engine, inputs: Vec<String>) -> Result<Self, StoreError> {
        let rules = engine.rules().clone();
        let ledger = Ledger::new(rules.plans.clone(), rules.currency(), History::in_memory()?);
        Ok(Pipeline { ledger: Some(ledger), ..Pipeline::new(engine, inputs) })
    }

    /// Feeds one record. Rejections go to `dead`; what it makes due is applied by the
    /// next [`Self::drain`].
    /// `not_after` rejects events further ahead than the wall clock allows (live intake).
    #[allow(clippy::too_many_arguments)]
    pub fn feed(
        &mut self,
        record: &[u8],
        size: u64,
        truncated: bool,
        not_after: Option<Nanos>,
        at: Position<'_>,
        dead: Dead<'_>,
    ) -> Fed {
        if !truncated && record.iter().all(u8::is_ascii_whitespace) {
            self.summary.blank_lines += 1;
            return Fed::Blank;
        }
        self.summary.records += 1;
        let ev = match decode::admit(record, size, truncated, not_after) {
            Ok(ev) => ev,
            Err(e) => {
                self.summary.reject(e.reason);
                dead(DeadLetter::new(e.reason, e.message, at.source, at.line, at.offset, record, size));
                return Fed::Rejected(e.reason);
            }
        };
        let kind = kinds::classify(&ev.kind);
        if kind == kinds::OTHER && billing::is_billing(&ev.kind) {
            return self.feed_billing(&ev, record, size, at, dead);
        }
        match self.engine.admit(&ev, kind) {
            Ingest::Accepted => Fed::Event(kind, EventResult::Accepted),
            Ingest::Duplicate => Fed::Event(kind, EventResult::Duplicate),
            Ingest::Late { watermark } => {
                self.late(ev.ts, watermark, record, size, at, dead);
                Fed::Event(kind, EventResult::Late)
            }
        }
    }

    fn late(&mut self, ts: Nanos, watermark: Nanos, record: &[u8], size: u64, at: Position<'_>, dead: Dead<'_>) {
        self.summary.reject(RejectReason::Late);
        let msg = format!(
            "ts {} is before the watermark {} (allowed lateness {})",
            format_rfc3339(ts),
            format_rfc3339(watermark),
            Span(self.engine.watermark().lateness())
        );
        dead(DeadLetter::new(RejectReason::Late, msg, at.source, at.line, at.offset, record, size));
    }

    /// A billing event goes to the ledger (validated, late like any event, deduplicated),
    /// never to conversation state or the watermark.
    fn feed_billing(&mut self, ev: &WireEvent<'_>, record: &[u8], size: u64, at: Position<'_>, dead: Dead<'_>) -> Fed {
        let mut reject = |summary: &mut Summary, reason: RejectReason, msg: String| {
            summary.reject(reason);
            dead(DeadLetter::new(reason, msg, at.source, at.line, at.offset, record, size));
            Fed::Rejected(reason)
        };
        let Some(ledger) = self.ledger.as_mut() else {
            let msg =
                format!("{} is a billing event, and `verdict run` does not bill yet (use `verdict invoice`)", ev.kind);
            return reject(&mut self.summary, RejectReason::Invalid, msg);
        };
        let event = match BillingEvent::from_wire(ev) {
            Ok(e) => e,
            Err(e) => return reject(&mut self.summary, e.reason, e.message),
        };
        // Late like any event; but it does not move the watermark, so a stream gives the
        // same verdicts whether or not billing events are taken (the service refuses them).
        let watermark = self.engine.watermark().current();
        if self.engine.watermark().is_late(ev.ts) {
            self.late(ev.ts, watermark, record, size, at, dead);
            return Fed::Billing(EventResult::Late);
        }
        match ledger.add_billing(event) {
            LedgerTaken::Accepted => {
                self.summary.billing_events += 1;
                Fed::Billing(EventResult::Accepted)
            }
            LedgerTaken::Duplicate => {
                self.summary.billing_duplicates += 1;
                Fed::Billing(EventResult::Duplicate)
            }
        }
    }

    /// Applies what the records fed so far made due, then hands each verdict decided to
    /// `f`, after counting and aggregating it.
    pub fn drain(&mut self, mut f: impl FnMut(&Verdict)) {
        self.drain_placed(|v| {
            f(v);
            None
        })
    }

    /// [`Pipeline::drain`] where `f` says where it wrote each verdict (the ledger's
    /// history keeps it, to find verdicts of closed periods).
    pub fn drain_placed(&mut self, mut f: impl FnMut(&Verdict) -> Option<u64>) {
        self.engine.catch_up();
        for v in self.engine.take_verdicts() {
            self.summary.count_verdict(&v.outcome, &v.reason);
            self.summary.usage.record(&v);
            let line_at = f(&v);
            if let Some(ledger) = &mut self.ledger {
                ledger.add_verdict(Rated { line_at, ..Rated::from(v) });
            }
        }
        if let Some(ledger) = &mut self.ledger {
            ledger.advance(self.engine.watermark().current());
        }
    }

    /// Ends the input and completes the summary.
    pub fn finish(&mut self, f: impl FnMut(&Verdict)) {
        self.engine.finish();
        self.drain(f);
        if let (Some(ledger), Some(end)) = (&mut self.ledger, self.engine.watermark().max_ts()) {
            ledger.finish(end);
        }
        self.summary.absorb_engine(self.engine.stats(), self.engine.pending_report());
        self.summary.watermark = self.engine.watermark().max_ts().map(format_rfc3339);
    }

    pub fn usage(&self) -> &Aggregates {
        &self.summary.usage
    }
}

/// Options of `verdict replay`.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub rules: PathBuf,
    /// Where verdicts go: a file, stdout (`None`), or nowhere (`verdict invoice`).
    pub output: Option<PathBuf>,
    pub write_verdicts: bool,
    pub dead_letter: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    pub lateness: Span,
    pub limits: Limits,
    pub inputs: Vec<String>,
    /// Verdict NDJSON files of classifier instances, rated beside the verdicts the
    /// inputs give (each verdict once by its id, whichever instance decided it).
    pub verdicts: Vec<PathBuf>,
    /// With `verdicts`: how far the instances' watermarks have come (the least of them);
    /// periods that ended by then close. Default: the latest verdict's `decided_at`.
    pub until: Option<Nanos>,
}

impl ReplayOptions {
    /// What `verdict invoice` and `verdict export` replay with: the inputs through the
    /// engine and the ledger, verdicts written nowhere.
    pub fn billing(rules: PathBuf, lateness: Span, dead_letter: Option<PathBuf>, inputs: Vec<String>) -> Self {
        ReplayOptions {
            rules,
            output: None,
            write_verdicts: false,
            dead_letter,
            summary: None,
            lateness,
            limits: Limits::default(),
            inputs,
            verdicts: Vec::new(),
            until: None,
        }
    }
}

/// Sinks are written from callbacks; the first write error is kept and reported after.
fn keep_first(slot: &mut Option<std::io::Error>, result: std::io::Result<()>) {
    if let Err(e) = result {
        slot.get_or_insert(e);
    }
}

/// What a replay leaves: its summary, and the ledger with every invoice up to the end.
pub struct Replayed {
    pub summary: Summary,
    pub ledger: Ledger,
    /// The watermark at the end (the largest `ts`), if any event was taken.
    pub watermark: Option<Nanos>,
}

impl Replayed {
    /// Every invoice, all tenants and periods: final ones and the drafts of open periods.
    pub fn invoices(&self) -> anyhow::Result<Vec<crate::ledger::invoice::Invoice>> {
        if let Some(why) = self.ledger.failed() {
            anyhow::bail!("the ledger failed: {why}");
        }
        Ok(match self.watermark {
            Some(wm) => self.ledger.all_invoices(wm)?,
            None => Vec::new(),
        })
    }
}

/// Hands the verdicts of `files` to the ledger; returns the latest `decided_at`. A line
/// that is not a verdict stops the run, named by file and line: a charge must not be
/// skipped.
fn rate_verdict_files(pipeline: &mut Pipeline, files: &[PathBuf]) -> anyhow::Result<Option<Nanos>> {
    let mut latest = None;
    let Some(ledger) = pipeline.ledger.as_mut() else { return Ok(None) };
    for path in files {
        let name = path.display().to_string();
        let reader = open_input(&name).with_context(|| format!("cannot read verdicts {name}"))?;
        let mut lines = LineReader::new(reader);
        while let Some(line) = lines.next_line().with_context(|| format!("reading {name}"))? {
            if line.bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Verdict =
                serde_json::from_slice(line.bytes).with_context(|| format!("{name}:{}: not a verdict", line.line))?;
            latest = latest.max(Some(v.decided_at));
            ledger.add_verdict(Rated::from(v));
        }
    }
    Ok(latest)
}

/// Runs a replay. Fails only when it cannot run (rules, unreadable input, output).
pub fn run(opts: &ReplayOptions) -> anyhow::Result<Replayed> {
    run_with(opts, |_| {})
}

/// [`run`], handing each verdict decided to `each` too, in the order they are written.
pub fn run_with(opts: &ReplayOptions, mut each: impl FnMut(&Verdict)) -> anyhow::Result<Replayed> {
    let rhai = Arc::new(sandbox::build(&opts.limits));
    let rules = RuleSet::load(&rhai, &opts.rules)
        .map_err(|e| anyhow::anyhow!("rules in {} do not load:\n{e}", opts.rules.display()))?;
    let cfg = EngineConfig { lateness: opts.lateness, ..Default::default() };
    let engine = Engine::new(cfg, rhai, Arc::new(rules));
    let mut pipeline = Pipeline::billing(engine, opts.inputs.clone())?;

    let mut out = if opts.write_verdicts {
        NdjsonSink::open(opts.output.as_deref(), false)
            .with_context(|| format!("cannot open the output {:?}", opts.output))?
    } else {
        NdjsonSink::new(Box::new(std::io::sink()))
    };
    let mut dead = match &opts.dead_letter {
        Some(p) => NdjsonSink::open(Some(p), false).with_context(|| format!("cannot open the dead letters {p:?}"))?,
        None => NdjsonSink::stderr(),
    };
    let mut io_err: Option<std::io::Error> = None;
    // Records of all inputs so far: the drain cadence does not restart with each input.
    let mut records = 0u64;
    let read = (|| -> anyhow::Result<()> {
        for input in &opts.inputs {
            let reader = open_input(input).with_context(|| format!("cannot read input {input}"))?;
            let mut lines = LineReader::new(reader);
            let source = if input == "-" { "stdin" } else { input.as_str() };
            while let Some(line) = lines.next_line().with_context(|| format!("reading {input}"))? {
                let at = Position { source, line: line.line, offset: line.offset };
                pipeline.feed(line.bytes, line.size, line.truncated, None, at, &mut |d| {
                    keep_first(&mut io_err, dead.write(&d))
                });
                records += 1;
                if records.is_multiple_of(DRAIN_EVERY) {
                    pipeline.drain(|v| {
                        each(v);
                        keep_first(&mut io_err, out.write(v))
                    });
                }
                if let Some(e) = io_err.take() {
                    return Err(e).context("writing verdicts or dead letters");
                }
            }
            // Many short inputs must not hold their events and verdicts until the end.
            pipeline.drain(|v| {
                each(v);
                keep_first(&mut io_err, out.write(v))
            });
        }
        Ok(())
    })();
    if let Err(e) = read {
        // What was decided before the failure is still written (best effort: the
        // failure may be the output itself).
        pipeline.drain(|v| {
            each(v);
            keep_first(&mut io_err, out.write(v))
        });
        let _ = out.flush();
        return Err(e);
    }
    let decided = rate_verdict_files(&mut pipeline, &opts.verdicts)?;
    pipeline.finish(|v| {
        each(v);
        keep_first(&mut io_err, out.write(v))
    });
    if let Some(e) = io_err.take() {
        return Err(e).context("writing verdicts");
    }
    out.flush().context("writing verdicts")?;
    dead.flush().context("writing dead letters")?;
    let mut watermark = pipeline.engine.watermark().max_ts();
    // The instances have decided up to their last verdict: periods before it close.
    if let (Some(d), Some(ledger)) = (opts.until.or(decided), pipeline.ledger.as_mut()) {
        if watermark.is_none_or(|w| d > w) {
            ledger.finish(d);
            watermark = Some(d);
        }
    }
    let Pipeline { summary, ledger, .. } = pipeline;
    if let Some(p) = &opts.summary {
        let json = serde_json::to_vec_pretty(&summary)?;
        std::fs::write(p, json).with_context(|| format!("cannot write the summary {}", p.display()))?;
    }
    let ledger = ledger.ok_or_else(|| anyhow::anyhow!("the replay's pipeline has no ledger"))?;
    Ok(Replayed { summary, ledger, watermark })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::gen::{generate, GenConfig};

    /// The sandbox and the shipped rules (`rules/`).
    pub(crate) fn shipped_rules() -> (Arc<rhai::Engine>, RuleSet) {
        let rhai = Arc::new(sandbox::build(&Limits::default()));
        let rules = RuleSet::load(&rhai, &Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
        (rhai, rules)
    }

    fn engine() -> Engine {
        let (rhai, rules) = shipped_rules();
        Engine::new(EngineConfig::default(), rhai, Arc::new(rules))
    }

    fn records(input: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
        input.split(|&b| b == b'\n').filter(|l| !l.is_empty()).zip(1..).map(|(l, n)| (n, l))
    }

    fn write(out: &mut Vec<u8>, v: &Verdict) {
        v.write_json(out);
        out.push(b'\n');
    }

    /// Verdict bytes and summary of `input` through the pipeline with `rules`,
    /// draining every `every` records, and the output's length after each drain, by
    /// record.
    pub(crate) fn run_draining_every(
        (rhai, rules): (Arc<rhai::Engine>, RuleSet),
        input: &[u8],
        every: u64,
    ) -> (Vec<u8>, Summary, Vec<(u64, usize)>) {
        let mut p = Pipeline::new(Engine::new(EngineConfig::default(), rhai, Arc::new(rules)), vec![]);
        let (mut out, mut drained) = (Vec::new(), Vec::new());
        for (n, line) in records(input) {
            p.feed(line, line.len() as u64, false, None, Position { source: "t", line: n, offset: 0 }, &mut |_| {});
            if n % every == 0 {
                p.drain(|v| write(&mut out, v));
                drained.push((n, out.len()));
            }
        }
        p.finish(|v| write(&mut out, v));
        (out, p.summary, drained)
    }

    /// The reference: each event through `Engine::ingest`, which applies what it makes
    /// due at once; the output's length after each record.
    fn run_ingesting(input: &[u8]) -> (Vec<u8>, HashMap<u64, usize>) {
        let mut e = engine();
        let (mut out, mut after) = (Vec::new(), HashMap::new());
        for (n, line) in records(input) {
            if let Ok(ev) = decode::decode(line) {
                e.ingest(&ev);
            }
            e.take_verdicts().for_each(|v| write(&mut out, &v));
            after.insert(n, out.len());
        }
        e.finish();
        e.take_verdicts().for_each(|v| write(&mut out, &v));
        (out, after)
    }

    #[test]
    fn draining_in_batches_gives_the_verdicts_of_draining_every_record() {
        let cfg = GenConfig {
            conversations: 400,
            tenants: 5,
            seed: 9,
            span: "30m".into(),
            jitter: "4s".into(),
            duplicates: 0.05,
            bad: 0.02,
            ..GenConfig::default()
        };
        let mut input = Vec::new();
        generate(&cfg, &mut input).unwrap();
        let (want, want_at) = run_ingesting(&input);
        assert!(want.split(|&b| b == b'\n').count() > 300);
        let (_, want_summary, _) = run_draining_every(shipped_rules(), &input, 1);
        for every in [1, 7, DRAIN_EVERY, u64::MAX] {
            let (got, summary, drained) = run_draining_every(shipped_rules(), &input, every);
            assert!(got == want, "verdicts differ when draining every {every} records");
            // Each drain writes everything decided by then, as draining every record does.
            for (line, len) in drained {
                assert_eq!(len, want_at[&line], "after record {line}, draining every {every}");
            }
            assert_eq!(summary.usage, want_summary.usage);
            assert_eq!(summary.rejected, want_summary.rejected);
            assert_eq!(summary.pending, want_summary.pending);
            // A duplicate of an event that decided its conversation is counted as a
            // duplicate while the original waits, as ignored once it has been applied;
            // batching can move it from the second to the first.
            let skipped =
                |s: &Summary| (s.duplicates + s.ignored_after_decision, s.events_accepted - s.ignored_after_decision);
            assert_eq!(skipped(&summary), skipped(&want_summary));
        }
    }
}
