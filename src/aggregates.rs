//! Per-tenant spend aggregates by billing period (`YYYY-MM`, UTC, by `decided_at`):
//! billable count and amount by outcome and tier, non-billable count by reason, cost,
//! and margin. Totals are sums of verdict lines, exact.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::timestamp::period_str;
use crate::verdicts::Verdict;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierUsage {
    pub count: u64,
    pub amount: Decimal,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeUsage {
    /// By tier (`"1"`, `"2"`, ...).
    pub billable: BTreeMap<String, TierUsage>,
    /// Count by reason.
    pub not_billable: BTreeMap<String, u64>,
    pub amount: Decimal,
    pub cost: Decimal,
}

/// One tenant in one period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub currency: String,
    pub billable_count: u64,
    pub non_billable_count: u64,
    pub amount: Decimal,
    /// Summed `cost_usd` of decided conversations.
    pub cost: Decimal,
    /// `amount - cost`.
    pub margin: Decimal,
    pub outcomes: BTreeMap<String, OutcomeUsage>,
}

impl Usage {
    pub fn record(&mut self, v: &Verdict) {
        if self.currency.is_empty() {
            self.currency.clone_from(&v.currency);
        }
        let o = get_or_insert(&mut self.outcomes, &v.outcome);
        if v.billable {
            self.billable_count += 1;
            self.amount += v.amount;
            o.amount += v.amount;
            let mut digits = itoa::Buffer::new();
            let t = get_or_insert(&mut o.billable, v.tier.map_or("none", |t| digits.format(t)));
            t.count += 1;
            t.amount += v.amount;
        } else {
            self.non_billable_count += 1;
            *get_or_insert(&mut o.not_billable, &v.reason) += 1;
        }
        self.cost += v.cost;
        o.cost += v.cost;
        self.margin = self.amount - self.cost;
    }

    /// Adds another instance's usage for the same tenant and period.
    pub fn merge(&mut self, other: &Usage) {
        if self.currency.is_empty() {
            self.currency.clone_from(&other.currency);
        }
        self.billable_count += other.billable_count;
        self.non_billable_count += other.non_billable_count;
        self.amount += other.amount;
        self.cost += other.cost;
        self.margin = self.amount - self.cost;
        for (name, ou) in &other.outcomes {
            let o = self.outcomes.entry(name.clone()).or_default();
            o.amount += ou.amount;
            o.cost += ou.cost;
            for (tier, tu) in &ou.billable {
                let t = o.billable.entry(tier.clone()).or_default();
                t.count += tu.count;
                t.amount += tu.amount;
            }
            for (reason, n) in &ou.not_billable {
                *o.not_billable.entry(reason.clone()).or_default() += n;
            }
        }
    }
}

/// Usage by tenant, then period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Aggregates {
    pub tenants: BTreeMap<String, BTreeMap<String, Usage>>,
}

impl Aggregates {
    pub fn record(&mut self, v: &Verdict) {
        let periods = get_or_insert(&mut self.tenants, &v.tenant);
        let mut buf = [0u8; 16];
        get_or_insert(periods, period_str(v.decided_at, &mut buf)).record(v);
    }

    pub fn get(&self, tenant: &str, period: &str) -> Option<&Usage> {
        self.tenants.get(tenant)?.get(period)
    }
}

/// The entry for `key`, created if absent; allocates the key only then.
pub(crate) fn get_or_insert<'m, V: Default>(m: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !m.contains_key(key) {
        m.insert(key.to_string(), V::default());
    }
    m.get_mut(key).expect("inserted above")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::parse_rfc3339;

    fn v(tenant: &str, at: &str, billable: bool, reason: &str, tier: Option<u8>, amount: &str, cost: &str) -> Verdict {
        Verdict {
            verdict_id: String::new(),
            outcome: "ai_resolution".into(),
            tenant: tenant.into(),
            conversation: "c".into(),
            billable,
            reason: reason.into(),
            tier,
            amount: amount.parse().unwrap(),
            currency: "USD".into(),
            cost: cost.parse().unwrap(),
            decided_at: parse_rfc3339(at).unwrap(),
            rule_version: String::new(),
            events: Default::default(),
            error: None,
        }
    }

    #[test]
    fn sums_exactly_by_period() {
        let mut a = Aggregates::default();
        for _ in 0..10 {
            a.record(&v("t", "2026-06-30T23:59:59Z", true, "resolved", Some(1), "0.10", "0.01"));
        }
        a.record(&v("t", "2026-06-01T00:00:00Z", false, "escalated", None, "0", "0.2"));
        a.record(&v("t", "2026-07-01T00:00:00Z", true, "resolved", Some(3), "3.00", "0"));
        let june = a.get("t", "2026-06").unwrap();
        assert_eq!(june.billable_count, 10);
        assert_eq!(june.amount.to_string(), "1.00");
        assert_eq!(june.cost.to_string(), "0.30");
        assert_eq!(june.margin.to_string(), "0.70");
        assert_eq!(june.outcomes["ai_resolution"].not_billable["escalated"], 1);
        assert_eq!(june.outcomes["ai_resolution"].billable["1"].count, 10);
        assert_eq!(a.get("t", "2026-07").unwrap().amount.to_string(), "3.00");
        let mut merged = june.clone();
        merged.merge(june);
        assert_eq!(merged.amount.to_string(), "2.00");
        assert_eq!(merged.outcomes["ai_resolution"].not_billable["escalated"], 2);
    }
}
