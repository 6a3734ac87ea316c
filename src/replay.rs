//! `verdict replay`: finite NDJSON inputs through the engine, verdicts and dead letters
//! out, a summary at the end. The [`Pipeline`] (decode -> engine -> aggregates) is also
//! what rule fixtures run through.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::aggregates::Aggregates;
use crate::decode::{self, DeadLetter, RejectReason};
use crate::engine::{Engine, EngineConfig, Ingest};
use crate::kinds::{self, Kind};
use crate::rules::{sandbox, Limits, RuleSet};
use crate::sinks::NdjsonSink;
use crate::sources::{open_input, LineReader};
use crate::summary::Summary;
use crate::telemetry::EventResult;
use crate::timestamp::{format_rfc3339, Nanos, Span};
use crate::verdicts::Verdict;

/// Decode, engine and aggregates, fed one record at a time.
pub struct Pipeline {
    pub engine: Engine,
    pub summary: Summary,
}

/// What became of one fed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    Blank,
    Rejected(RejectReason),
    Event(Kind, EventResult),
}

/// Where a record came from.
#[derive(Clone, Copy, Debug)]
pub struct Position<'a> {
    pub source: &'a str,
    pub line: u64,
    pub offset: u64,
}

impl Pipeline {
    pub fn new(engine: Engine, inputs: Vec<String>) -> Self {
        Pipeline { engine, summary: Summary::new(inputs) }
    }

    /// Feeds one record. Rejections go to `dead`; verdicts are left in the engine.
    /// `not_after` rejects events further ahead than the wall clock allows (live intake).
    #[allow(clippy::too_many_arguments)]
    pub fn feed(
        &mut self,
        record: &[u8],
        size: u64,
        truncated: bool,
        not_after: Option<Nanos>,
        at: Position<'_>,
        dead: &mut dyn FnMut(DeadLetter<'_>),
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
        match self.engine.ingest_kind(&ev, kind) {
            Ingest::Accepted => Fed::Event(kind, EventResult::Accepted),
            Ingest::Duplicate => Fed::Event(kind, EventResult::Duplicate),
            Ingest::Late { watermark } => {
                self.summary.reject(RejectReason::Late);
                let msg = format!(
                    "ts {} is before the watermark {} (allowed lateness {})",
                    format_rfc3339(ev.ts),
                    format_rfc3339(watermark),
                    Span(self.engine.watermark().lateness())
                );
                dead(DeadLetter::new(RejectReason::Late, msg, at.source, at.line, at.offset, record, size));
                Fed::Event(kind, EventResult::Late)
            }
        }
    }

    /// Hands each verdict decided so far to `f`, after counting and aggregating it.
    pub fn drain(&mut self, mut f: impl FnMut(&Verdict)) {
        for v in self.engine.take_verdicts() {
            self.summary.count_verdict(&v.outcome, &v.reason);
            self.summary.usage.record(&v);
            f(&v);
        }
    }

    /// Ends the input and completes the summary.
    pub fn finish(&mut self, f: impl FnMut(&Verdict)) {
        self.engine.finish();
        self.drain(f);
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
    pub output: Option<PathBuf>,
    pub dead_letter: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    pub lateness: Span,
    pub limits: Limits,
    pub inputs: Vec<String>,
}

/// Sinks are written from callbacks; the first write error is kept and reported after.
fn keep_first(slot: &mut Option<std::io::Error>, result: std::io::Result<()>) {
    if let Err(e) = result {
        slot.get_or_insert(e);
    }
}

/// Runs a replay. Fails only when it cannot run (rules, unreadable input, output).
pub fn run(opts: &ReplayOptions) -> anyhow::Result<Summary> {
    let rhai = Arc::new(sandbox::build(&opts.limits));
    let rules = RuleSet::load(&rhai, &opts.rules)
        .map_err(|e| anyhow::anyhow!("rules in {} do not load:\n{e}", opts.rules.display()))?;
    let cfg = EngineConfig { lateness: opts.lateness, ..Default::default() };
    let engine = Engine::new(cfg, rhai, Arc::new(rules));
    let mut pipeline = Pipeline::new(engine, opts.inputs.clone());

    let mut out = NdjsonSink::open(opts.output.as_deref(), false)
        .with_context(|| format!("cannot open the output {:?}", opts.output))?;
    let mut dead = match &opts.dead_letter {
        Some(p) => NdjsonSink::open(Some(p), false).with_context(|| format!("cannot open the dead letters {p:?}"))?,
        None => NdjsonSink::stderr(),
    };
    let mut io_err: Option<std::io::Error> = None;
    for input in &opts.inputs {
        let reader = open_input(input).with_context(|| format!("cannot read input {input}"))?;
        let mut lines = LineReader::new(reader);
        let source = if input == "-" { "stdin" } else { input.as_str() };
        while let Some(line) = lines.next_line().with_context(|| format!("reading {input}"))? {
            let at = Position { source, line: line.line, offset: line.offset };
            pipeline.feed(line.bytes, line.size, line.truncated, None, at, &mut |d| {
                keep_first(&mut io_err, dead.write(&d))
            });
            pipeline.drain(|v| keep_first(&mut io_err, out.write(v)));
            if let Some(e) = io_err.take() {
                return Err(e).context("writing verdicts or dead letters");
            }
        }
    }
    pipeline.finish(|v| keep_first(&mut io_err, out.write(v)));
    if let Some(e) = io_err.take() {
        return Err(e).context("writing verdicts");
    }
    out.flush().context("writing verdicts")?;
    dead.flush().context("writing dead letters")?;
    let summary = pipeline.summary;
    if let Some(p) = &opts.summary {
        let json = serde_json::to_vec_pretty(&summary)?;
        std::fs::write(p, json).with_context(|| format!("cannot write the summary {}", p.display()))?;
    }
    Ok(summary)
}
