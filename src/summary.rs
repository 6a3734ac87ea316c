//! The replay summary: what was read, accepted, rejected (by reason), decided (by
//! outcome and reason), what is still pending, and usage per tenant and month.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::aggregates::{get_or_insert, Aggregates};
use crate::decode::RejectReason;
use crate::engine::{PendingReport, Stats};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub inputs: Vec<String>,
    /// Records read (blank lines excluded).
    pub records: u64,
    pub blank_lines: u64,
    pub events_accepted: u64,
    pub duplicates: u64,
    pub ignored_after_decision: u64,
    /// Billing events taken by the ledger (disputes, credits), duplicates excluded.
    pub billing_events: u64,
    pub billing_duplicates: u64,
    /// Rejected records by reason (every reason listed).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Verdicts by outcome, then reason.
    pub verdicts: BTreeMap<String, BTreeMap<String, u64>>,
    pub rule_errors: u64,
    pub pending: PendingReport,
    /// The final watermark (RFC 3339), if any event was accepted.
    pub watermark: Option<String>,
    /// Usage by tenant, then period.
    pub usage: Aggregates,
}

impl Summary {
    pub fn new(inputs: Vec<String>) -> Self {
        let rejected = RejectReason::ALL.iter().map(|r| (r.as_str(), 0)).collect();
        Summary { inputs, rejected, ..Default::default() }
    }

    pub fn count_verdict(&mut self, outcome: &str, reason: &str) {
        *get_or_insert(get_or_insert(&mut self.verdicts, outcome), reason) += 1;
    }

    pub fn reject(&mut self, reason: RejectReason) {
        *self.rejected.entry(reason.as_str()).or_default() += 1;
    }

    pub fn absorb_engine(&mut self, stats: &Stats, pending: PendingReport) {
        self.events_accepted = stats.accepted;
        self.duplicates = stats.duplicates;
        self.ignored_after_decision = stats.ignored_after_decision;
        self.rule_errors = stats.rule_errors;
        self.pending = pending;
    }

    /// The short human summary printed on stderr.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let rejected: u64 = self.rejected.values().sum();
        let _ = writeln!(
            s,
            "records {}  accepted {}  duplicates {}  ignored after decision {}  rejected {}",
            self.records, self.events_accepted, self.duplicates, self.ignored_after_decision, rejected
        );
        if rejected > 0 {
            let parts: Vec<String> =
                self.rejected.iter().filter(|(_, n)| **n > 0).map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(s, "  rejected by reason: {}", parts.join(", "));
        }
        for (outcome, reasons) in &self.verdicts {
            let total: u64 = reasons.values().sum();
            let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(s, "verdicts {outcome}: {total} ({})", parts.join(", "));
        }
        let timers: Vec<String> = self.pending.timers.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let _ = writeln!(
            s,
            "pending: {} open conversations, timers: {}",
            self.pending.open_conversations,
            if timers.is_empty() { "none".to_string() } else { timers.join(", ") }
        );
        for (tenant, periods) in &self.usage.tenants {
            for (period, u) in periods {
                let _ = writeln!(
                    s,
                    "usage {tenant} {period}: billable {} amount {} {} cost {} margin {} not billable {}",
                    u.billable_count, u.amount, u.currency, u.cost, u.margin, u.non_billable_count
                );
            }
        }
        s
    }
}
