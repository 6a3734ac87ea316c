//! Every Prometheus metric verdict exports, defined in one place: names (by Prometheus
//! conventions: a `verdict_` prefix, base units, `_total` on counters), help texts,
//! histogram buckets, and the recorder that `GET /metrics` renders. Code elsewhere
//! records through the functions and handles here, never by metric name.
//!
//! Labels are bounded: event types outside the known eight are counted as `other`;
//! tenants are labels (fine for a bounded tenant count; series idle for a day are dropped).
//! A conversation id is never a label.

use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::kinds::{self, Kind};

pub const EVENTS: &str = "verdict_events_total";
pub const REJECTED: &str = "verdict_rejected_records_total";
pub const DUPLICATES: &str = "verdict_duplicate_events_total";
pub const VERDICTS: &str = "verdict_verdicts_total";
pub const BILLED: &str = "verdict_billed_amount_micros_total";
pub const COST: &str = "verdict_cost_micros_total";
pub const OPEN: &str = "verdict_open_conversations";
pub const RETAINED: &str = "verdict_retained_conversations";
pub const TIMERS: &str = "verdict_pending_timers";
pub const BUFFERED: &str = "verdict_buffered_events";
pub const WATERMARK: &str = "verdict_watermark_timestamp_seconds";
pub const WATERMARK_LAG: &str = "verdict_watermark_lag_seconds";
pub const RELOADS: &str = "verdict_rule_reloads_total";
pub const RULES_OK: &str = "verdict_rules_last_reload_success";
pub const RULE_ERRORS: &str = "verdict_rule_errors_total";
pub const RULE_EVAL: &str = "verdict_rule_evaluation_seconds";
pub const CHECKPOINT_DURATION: &str = "verdict_checkpoint_duration_seconds";
pub const CHECKPOINT_AGE: &str = "verdict_checkpoint_age_seconds";
pub const CHECKPOINT_BYTES: &str = "verdict_checkpoint_size_bytes";
pub const CHECKPOINT_FAILURES: &str = "verdict_checkpoint_failures_total";
pub const CHECKPOINTS_REJECTED: &str = "verdict_checkpoints_rejected_total";
pub const RECOVERY_PROBLEMS: &str = "verdict_recovery_problems_total";
pub const WAL_SYNC: &str = "verdict_wal_sync_duration_seconds";
pub const WAL_BYTES: &str = "verdict_wal_written_bytes_total";
pub const BACKLOG: &str = "verdict_backlog_bytes";
pub const THROTTLED: &str = "verdict_ingest_throttled_total";
pub const HTTP_REQUESTS: &str = "verdict_http_requests_total";
pub const HTTP_DURATION: &str = "verdict_http_request_duration_seconds";
pub const UP_SINCE: &str = "verdict_start_time_seconds";
pub const SOURCE_WATERMARK: &str = "verdict_source_watermark_timestamp_seconds";
pub const SOURCE_IDLE: &str = "verdict_source_idle";
pub const SOURCE_CAUGHT_UP: &str = "verdict_source_caught_up";
pub const SOURCE_ERRORS: &str = "verdict_source_errors_total";
pub const SINK_RECORDS: &str = "verdict_sink_records_total";
pub const SINK_ERRORS: &str = "verdict_sink_errors_total";
pub const SINK_LAG: &str = "verdict_sink_lag_bytes";
pub const PUSH_REFUSED: &str = "verdict_push_refused_total";
pub const INDEXED: &str = "verdict_indexed_verdicts";
pub const CHARGES: &str = "verdict_period_charges";
pub const CHARGED: &str = "verdict_period_charged_amount";
pub const CREDITS: &str = "verdict_period_credits";
pub const CREDITED: &str = "verdict_period_credited_amount";
pub const INCLUDED_LEFT: &str = "verdict_included_outcomes_remaining";
pub const OPEN_INVOICE: &str = "verdict_open_invoice_total_amount";
pub const PREPAID: &str = "verdict_prepaid_balance_amount";
pub const DISPUTES: &str = "verdict_disputes";
pub const DISPUTES_OVERDUE: &str = "verdict_disputes_overdue";
pub const DISPUTE_RATE: &str = "verdict_dispute_rate";
pub const MARGIN_RATIO: &str = "verdict_margin_ratio";
pub const MARGIN_FLOOR: &str = "verdict_margin_floor";

/// Every metric with its kind and help, for `describe_*` and for the README's list.
pub const ALL: &[(&str, &str, &str)] = &[
    (EVENTS, "counter", "Events by type and result: accepted, duplicate, late."),
    (REJECTED, "counter", "Records dead-lettered, by reason: malformed, invalid, too_large, late."),
    (DUPLICATES, "counter", "Events skipped because their id was already accepted for the conversation."),
    (VERDICTS, "counter", "Verdicts by tenant, outcome, tier, billable and reason."),
    (BILLED, "counter", "Amount billed, in millionths of the currency unit, by tenant and currency."),
    (COST, "counter", "Cost of decided conversations, in millionths of the currency unit, by tenant and currency."),
    (OPEN, "gauge", "Conversations not yet decided for every outcome."),
    (RETAINED, "gauge", "Decided conversations remembered so later events are ignored."),
    (TIMERS, "gauge", "Open named timers of undecided conversations."),
    (BUFFERED, "gauge", "Accepted events waiting for the watermark."),
    (WATERMARK, "gauge", "The event-time watermark, as a Unix time."),
    (WATERMARK_LAG, "gauge", "Wall clock minus the watermark."),
    (RELOADS, "counter", "Rule reloads by result: ok, failed."),
    (RULES_OK, "gauge", "1 if the last rule reload succeeded, 0 if it was rejected."),
    (RULE_ERRORS, "counter", "Decisions that became rule_error verdicts, by outcome."),
    (RULE_EVAL, "histogram", "Time of one rule handler call."),
    (CHECKPOINT_DURATION, "histogram", "Time to write one checkpoint."),
    (CHECKPOINT_AGE, "gauge", "Time since the last good checkpoint."),
    (CHECKPOINT_BYTES, "gauge", "Size of the last checkpoint."),
    (CHECKPOINT_FAILURES, "counter", "Checkpoints that could not be written."),
    (CHECKPOINTS_REJECTED, "counter", "Torn or corrupt checkpoints skipped at startup."),
    (
        RECOVERY_PROBLEMS,
        "counter",
        "Problems recovery found and went on past, by problem: torn_tail, checkpoint_rejected, and with \
         --accept-loss log_damaged, log_short, log_missing, foreign_checkpoint, newer_checkpoint, no_checkpoint, \
         output_short.",
    ),
    (WAL_SYNC, "histogram", "Time of one write-ahead log group commit (write and fsync)."),
    (WAL_BYTES, "counter", "Bytes appended to the write-ahead log."),
    (BACKLOG, "gauge", "Bytes in the log not yet classified."),
    (THROTTLED, "counter", "Ingest requests answered 429 or 503 because the engine is behind."),
    (HTTP_REQUESTS, "counter", "HTTP requests by route, method and status."),
    (HTTP_DURATION, "histogram", "HTTP request time by route."),
    (UP_SINCE, "gauge", "When this process started, as a Unix time."),
    (SOURCE_WATERMARK, "gauge", "Each source's own watermark (file, http, Fluvio partition), as a Unix time."),
    (SOURCE_IDLE, "gauge", "1 while a source is caught up and quiet, and does not hold the watermark back."),
    (
        SOURCE_CAUGHT_UP,
        "gauge",
        "1 while a source has delivered all it has (a file or Fluvio partition read to its end; HTTP always).",
    ),
    (SOURCE_ERRORS, "counter", "Errors reading a source (Fluvio connection or consumer errors, unreadable files)."),
    (
        SINK_RECORDS,
        "counter",
        "Records a sink has had acknowledged: lines by Fluvio (verdicts, dead_letters), usage events by the billing platform (push).",
    ),
    (SINK_ERRORS, "counter", "Failed attempts of a sink (Fluvio or push); what failed is sent again."),
    (SINK_LAG, "gauge", "Bytes of the verdict or dead-letter file a sink has not had acknowledged yet."),
    (
        PUSH_REFUSED,
        "counter",
        "Usage events the billing platform refused for their content (a 4xx); kept in push-rejected.ndjson.",
    ),
    (
        INDEXED,
        "gauge",
        "Verdicts of open periods indexed in memory for GET /v1/verdicts/{id}; closed periods' are in the billing history.",
    ),
    (CHARGES, "gauge", "Charges rated so far in the tenant's current period, by tenant and kind (included, usage, overage)."),
    (CHARGED, "gauge", "Sum of the charges rated so far in the tenant's current period, by tenant, kind and currency."),
    (CREDITS, "gauge", "Credits given so far in the tenant's current period, by tenant and kind (dispute, retraction)."),
    (CREDITED, "gauge", "Sum of the credits given so far in the tenant's current period, by tenant, kind and currency."),
    (INCLUDED_LEFT, "gauge", "Included outcomes of the plan not yet used in the tenant's current period, by tenant and outcome."),
    (OPEN_INVOICE, "gauge", "Total of the tenant's draft invoice of the current period, as if it closed now, by tenant and currency."),
    (PREPAID, "gauge", "The tenant's prepaid balance now, by tenant and currency."),
    (DISPUTES, "gauge", "Disputes kept, by tenant and status (open, accepted, rejected, refused)."),
    (DISPUTES_OVERDUE, "gauge", "Open disputes past their review due time (dispute_review after opening), by tenant."),
    (
        DISPUTE_RATE,
        "gauge",
        "Disputes opened in the tenant's current period over its billable verdicts in that period (0 to 1), by tenant.",
    ),
    (
        MARGIN_RATIO,
        "gauge",
        "(Charged less credits less cost) over (charged less credits) in the tenant's current period, by tenant; absent while nothing is charged.",
    ),
    (MARGIN_FLOOR, "gauge", "The margin floor of the tenant's plan in the current period, by tenant; absent when the plan sets none."),
];

/// Installs the global recorder (once per process) and returns the handle to render.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let fast = [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25];
    let slow = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RULE_EVAL.into()), &fast)?
        .set_buckets_for_metric(Matcher::Full(WAL_SYNC.into()), &slow)?
        .set_buckets_for_metric(Matcher::Full(CHECKPOINT_DURATION.into()), &slow)?
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &slow)?
        .idle_timeout(metrics_util::MetricKindMask::ALL, Some(Duration::from_secs(24 * 3600)))
        .install_recorder()?;
    for (name, kind, help) in ALL {
        let unit = if name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else if name.ends_with("_bytes") || name.ends_with("_bytes_total") {
            Some(Unit::Bytes)
        } else {
            None
        };
        let name = *name;
        match (*kind, unit) {
            ("counter", Some(u)) => describe_counter!(name, u, *help),
            ("counter", None) => describe_counter!(name, *help),
            ("gauge", Some(u)) => describe_gauge!(name, u, *help),
            ("gauge", None) => describe_gauge!(name, *help),
            (_, Some(u)) => describe_histogram!(name, u, *help),
            (_, None) => describe_histogram!(name, *help),
        }
    }
    metrics::gauge!(UP_SINCE).set(unix_seconds(crate::timestamp::now()));
    // Counters that alerts watch exist from the start, at zero, so `increase()` works
    // before the first failure.
    for result in ["ok", "failed"] {
        metrics::counter!(RELOADS, "result" => result).increment(0);
    }
    for name in [CHECKPOINT_FAILURES, CHECKPOINTS_REJECTED, THROTTLED, DUPLICATES, WAL_BYTES, PUSH_REFUSED] {
        metrics::counter!(name).increment(0);
    }
    for r in crate::decode::RejectReason::ALL {
        metrics::counter!(REJECTED, "reason" => r.as_str()).increment(0);
    }
    for p in crate::service::recovery::Problem::ALL {
        metrics::counter!(RECOVERY_PROBLEMS, "problem" => p.as_str()).increment(0);
    }
    Ok(handle)
}

pub fn unix_seconds(t: crate::timestamp::Nanos) -> f64 {
    t as f64 / 1e9
}

/// What one event came to, for [`EventCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventResult {
    Accepted = 0,
    Duplicate = 1,
    Late = 2,
}

const RESULTS: [&str; 3] = ["accepted", "duplicate", "late"];
const TYPES: usize = kinds::KNOWN.len() + 1;

/// Per-event counts kept in plain integers on the hot path and added to the registry
/// once per batch (a registry lookup per event would cost more than the event).
pub struct EventCounters {
    counts: [[u64; 3]; TYPES],
    handles: Vec<Counter>,
    rejected: [u64; 4],
    rejected_handles: Vec<Counter>,
    duplicates: Counter,
}

impl Default for EventCounters {
    fn default() -> Self {
        let mut handles = Vec::with_capacity(TYPES * 3);
        for t in 0..TYPES {
            let name = if t < kinds::KNOWN.len() { kinds::KNOWN[t] } else { "other" };
            for r in RESULTS {
                handles.push(metrics::counter!(EVENTS, "type" => name, "result" => r));
            }
        }
        let rejected_handles = crate::decode::RejectReason::ALL
            .iter()
            .map(|r| metrics::counter!(REJECTED, "reason" => r.as_str()))
            .collect();
        EventCounters {
            counts: [[0; 3]; TYPES],
            handles,
            rejected: [0; 4],
            rejected_handles,
            duplicates: metrics::counter!(DUPLICATES),
        }
    }
}

impl EventCounters {
    #[inline]
    pub fn event(&mut self, kind: Kind, result: EventResult) {
        let t = if kind == kinds::OTHER { TYPES - 1 } else { (kind as usize).min(TYPES - 1) };
        self.counts[t][result as usize] += 1;
    }

    #[inline]
    pub fn rejected(&mut self, reason: crate::decode::RejectReason) {
        let i = crate::decode::RejectReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.rejected[i] += 1;
    }

    /// Adds the counts to the registry and clears them.
    pub fn publish(&mut self) {
        for (t, row) in self.counts.iter_mut().enumerate() {
            for (r, n) in row.iter_mut().enumerate() {
                if *n > 0 {
                    self.handles[t * 3 + r].increment(*n);
                    if r == EventResult::Duplicate as usize {
                        self.duplicates.increment(*n);
                    }
                    *n = 0;
                }
            }
        }
        for (i, n) in self.rejected.iter_mut().enumerate() {
            if *n > 0 {
                self.rejected_handles[i].increment(*n);
                *n = 0;
            }
        }
    }
}

/// Records one verdict.
pub fn verdict(v: &crate::verdicts::Verdict) {
    let tier = v.tier.map_or_else(|| "none".to_string(), |t| t.to_string());
    metrics::counter!(
        VERDICTS,
        "tenant" => v.tenant.clone(),
        "outcome" => v.outcome.clone(),
        "tier" => tier,
        "billable" => if v.billable { "true" } else { "false" },
        "reason" => v.reason.clone()
    )
    .increment(1);
    if v.billable {
        metrics::counter!(BILLED, "tenant" => v.tenant.clone(), "currency" => v.currency.clone())
            .increment(micros(v.amount));
    }
    if !v.cost.is_zero() {
        metrics::counter!(COST, "tenant" => v.tenant.clone(), "currency" => v.currency.clone())
            .increment(micros(v.cost));
    }
    if v.error.is_some() {
        metrics::counter!(RULE_ERRORS, "outcome" => v.outcome.clone()).increment(1);
    }
}

/// Whole millionths of a non-negative amount (counters are integers; the exact decimal
/// is in `/v1/usage`).
pub fn micros(d: rust_decimal::Decimal) -> u64 {
    use rust_decimal::prelude::ToPrimitive;
    d.checked_mul(rust_decimal::Decimal::from(1_000_000)).and_then(|m| m.trunc().to_u64()).unwrap_or(u64::MAX)
}

/// Handles the engine's rule evaluator records into.
pub fn rule_eval() -> Histogram {
    metrics::histogram!(RULE_EVAL)
}

pub fn gauge(name: &'static str) -> Gauge {
    metrics::gauge!(name)
}

/// Publishes the billing gauges of each tenant's current period.
pub fn billing(all: &[crate::ledger::gauges::TenantGauges], currency: &str) {
    use crate::ledger::gauges::{CHARGE_KINDS, CREDIT_KINDS, DISPUTE_STATUSES};
    use rust_decimal::prelude::ToPrimitive;
    let f = |d: rust_decimal::Decimal| d.to_f64().unwrap_or(0.0);
    for g in all {
        let (tenant, currency) = (g.tenant.clone(), currency.to_string());
        for ((_, kind), (n, sum)) in CHARGE_KINDS.iter().zip(&g.charges) {
            metrics::gauge!(CHARGES, "tenant" => tenant.clone(), "kind" => *kind).set(*n as f64);
            metrics::gauge!(CHARGED, "tenant" => tenant.clone(), "kind" => *kind, "currency" => currency.clone())
                .set(f(*sum));
        }
        for ((_, kind), (n, sum)) in CREDIT_KINDS.iter().zip(&g.credits) {
            metrics::gauge!(CREDITS, "tenant" => tenant.clone(), "kind" => *kind).set(*n as f64);
            metrics::gauge!(CREDITED, "tenant" => tenant.clone(), "kind" => *kind, "currency" => currency.clone())
                .set(f(*sum));
        }
        for (outcome, left) in &g.included_left {
            metrics::gauge!(INCLUDED_LEFT, "tenant" => tenant.clone(), "outcome" => outcome.clone()).set(*left as f64);
        }
        for ((_, status), n) in DISPUTE_STATUSES.iter().zip(&g.disputes) {
            metrics::gauge!(DISPUTES, "tenant" => tenant.clone(), "status" => *status).set(*n as f64);
        }
        metrics::gauge!(DISPUTES_OVERDUE, "tenant" => tenant.clone()).set(g.overdue as f64);
        metrics::gauge!(DISPUTE_RATE, "tenant" => tenant.clone()).set(f(g.dispute_rate));
        if let Some(ratio) = g.margin_ratio() {
            metrics::gauge!(MARGIN_RATIO, "tenant" => tenant.clone()).set(f(ratio));
        }
        if let Some(floor) = g.margin_floor {
            metrics::gauge!(MARGIN_FLOOR, "tenant" => tenant.clone()).set(f(floor));
        }
        metrics::gauge!(OPEN_INVOICE, "tenant" => tenant.clone(), "currency" => currency.clone()).set(f(g.open_total));
        metrics::gauge!(PREPAID, "tenant" => tenant, "currency" => currency).set(f(g.balance));
    }
}
