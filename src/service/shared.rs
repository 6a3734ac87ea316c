//! What the service's threads share: the published usage and verdict index (written by
//! the worker, read by HTTP), the rule status, the backlog bound, and readiness.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use serde::Serialize;

use super::worker::LiveTime;
use crate::aggregates::Usage;
use crate::engine::watermark::Watermark;
use crate::ledger::period::Period;
use crate::ledger::totals::Charged;
use crate::timestamp::{self, Nanos, Span};

/// The outcome definitions in force and how the last reload went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RuleStatus {
    pub dir: String,
    pub outcomes: Vec<ActiveOutcome>,
    /// When the running definitions were loaded (RFC 3339).
    pub loaded_at: Option<String>,
    pub last_reload: Option<ReloadResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ActiveOutcome {
    pub name: String,
    pub file: String,
    pub version: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReloadResult {
    pub at: String,
    /// `startup`, `file change`, `SIGHUP` or `http`.
    pub trigger: String,
    /// `ok`, `unchanged` or `rejected`.
    pub result: &'static str,
    /// Why it was rejected: file, line and cause, one per line.
    pub error: Option<String>,
}

/// How live time stands: the watermark and each source, for `GET /v1/sources`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SourcesStatus {
    /// RFC 3339; null before the first event.
    pub watermark: Option<String>,
    pub wall_clock: bool,
    pub delivery_allowance: String,
    /// Whether the wall clock may move the watermark now (every source caught up and quiet).
    pub wall_clock_advancing: bool,
    pub sources: Vec<SourceStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SourceStatus {
    pub name: String,
    /// Its own watermark: the largest `ts` it delivered minus the lateness.
    pub watermark: Option<String>,
    /// It has delivered all it has (a file or partition read to its end; HTTP always).
    pub caught_up: bool,
    /// Caught up and quiet for `quiet`: it does not hold the watermark back.
    pub idle: bool,
    pub last_input: String,
    pub quiet: String,
}

impl SourcesStatus {
    pub fn of(wm: &Watermark, live: &LiveTime) -> SourcesStatus {
        let time = |t: Nanos| (t != Nanos::MIN).then(|| timestamp::format_rfc3339(t));
        SourcesStatus {
            watermark: time(wm.current()),
            wall_clock: live.wall_clock,
            delivery_allowance: live.delivery.to_string(),
            wall_clock_advancing: live.wall_clock && wm.all_idle(),
            sources: wm
                .sources()
                .iter()
                .map(|s| SourceStatus {
                    name: s.name.clone(),
                    watermark: s.watermark(wm.lateness()).and_then(time),
                    caught_up: s.caught_up,
                    idle: s.idle,
                    last_input: timestamp::format_rfc3339(s.last_arrival),
                    quiet: Span(s.quiet).to_string(),
                })
                .collect(),
        }
    }
}

pub struct Shared {
    /// Usage by tenant, then period: exact, updated as each verdict is written.
    pub usage: DashMap<String, BTreeMap<String, Usage>>,
    /// What the ledger has charged by tenant, then period, once rated (the watermark
    /// has passed the verdicts).
    pub charged: DashMap<String, BTreeMap<String, Charged>>,
    /// Where each verdict's line starts in the output file, by verdict id.
    pub verdicts: DashMap<u128, u64>,
    pub output_path: PathBuf,
    pub rules: ArcSwap<RuleStatus>,
    /// The plans in force (the push sink maps tenants to their `external_id` by them).
    pub plans: ArcSwap<crate::ledger::plans::PlanBook>,
    pub sources: ArcSwap<SourcesStatus>,
    /// Bytes logged but not yet applied by the worker.
    pub backlog: AtomicU64,
    pub max_backlog: u64,
    /// Set once recovery is done; cleared when shutdown starts.
    pub ready: AtomicBool,
    /// WAL segments wholly before this position may be removed (every kept checkpoint
    /// is past it).
    pub removable_wal: AtomicU64,
    /// Unix nanos of the last good checkpoint.
    pub last_checkpoint: AtomicI64,
    /// The wall clock needs to be logged from this time on (a source may go idle then,
    /// or the wall clock moves the watermark); before it, a tick would change nothing.
    pub tick_from: AtomicI64,
    /// Signalled when the log or the worker fails: the service must stop.
    pub fatal: tokio::sync::Notify,
}

impl Shared {
    /// Publishes the ledger's totals.
    pub fn publish_charged(&self, totals: Vec<(String, Period, Charged)>) {
        for (tenant, p, c) in totals {
            self.charged.entry(tenant).or_default().insert(p.to_string(), c);
        }
    }

    pub fn new(output_path: PathBuf, max_backlog: u64) -> Self {
        Shared {
            usage: DashMap::new(),
            charged: DashMap::new(),
            verdicts: DashMap::new(),
            output_path,
            rules: ArcSwap::from_pointee(RuleStatus::default()),
            plans: ArcSwap::from_pointee(Default::default()),
            sources: ArcSwap::from_pointee(SourcesStatus::default()),
            backlog: AtomicU64::new(0),
            max_backlog,
            ready: AtomicBool::new(false),
            removable_wal: AtomicU64::new(0),
            last_checkpoint: AtomicI64::new(0),
            tick_from: AtomicI64::new(0),
            fatal: tokio::sync::Notify::new(),
        }
    }

    pub fn over_backlog(&self) -> bool {
        self.backlog.load(Ordering::Relaxed) > self.max_backlog
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// A verdict id (32 hex digits) as the index key.
pub fn verdict_key(id: &str) -> Option<u128> {
    if id.len() != 32 {
        return None;
    }
    crate::verdicts::hex_u128(id)
}
