//! What the ledger shows Prometheus of each tenant's current period (the watermark's):
//! charges and credits by kind, included outcomes left, the draft invoice's total, and
//! the prepaid balance; and its disputes: by status, overdue for review, and the
//! dispute rate of the period. Read from the books' line groups, so a tenant with a
//! million charges costs a few map entries, not a scan.

use rust_decimal::Decimal;

use super::period::Period;
use super::rating::{ChargeKind, CreditKind, DisputeStatus};
use super::Ledger;
use crate::timestamp::Nanos;

/// One tenant's current period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantGauges {
    pub tenant: String,
    /// Count and sum of the charges of each kind: included, usage, overage.
    pub charges: [(u64, Decimal); 3],
    /// Count and sum (positive) of the credits of each kind: dispute, retraction.
    pub credits: [(u64, Decimal); 2],
    /// Included outcomes of the plan not used yet, by outcome.
    pub included_left: Vec<(String, u64)>,
    /// The draft invoice's total, as if the period closed now.
    pub open_total: Decimal,
    pub balance: Decimal,
    /// Disputes by status (open, accepted, rejected, refused), all kept.
    pub disputes: [u64; 4],
    /// Open disputes past their review due time (by the wall clock).
    pub overdue: u64,
    /// Disputes opened in the period over its billable verdicts (0 with none billable).
    pub dispute_rate: Decimal,
    /// The plan's margin floor (alerting only).
    pub margin_floor: Option<Decimal>,
    /// The period's cost so far (filled by whoever keeps usage: the ledger keeps none).
    pub cost: Decimal,
}

impl TenantGauges {
    /// What was charged net of credits, less cost, over what was charged net of
    /// credits; `None` while nothing is charged.
    pub fn margin_ratio(&self) -> Option<Decimal> {
        let charged: Decimal = self.charges.iter().map(|(_, sum)| *sum).sum();
        let net = charged - self.credits.iter().map(|(_, sum)| *sum).sum::<Decimal>();
        (net > Decimal::ZERO).then(|| (net - self.cost) / net)
    }
}

pub const DISPUTE_STATUSES: [(DisputeStatus, &str); 4] = [
    (DisputeStatus::Open, "open"),
    (DisputeStatus::Accepted, "accepted"),
    (DisputeStatus::Rejected, "rejected"),
    (DisputeStatus::Refused, "refused"),
];

pub const CHARGE_KINDS: [(ChargeKind, &str); 3] =
    [(ChargeKind::Included, "included"), (ChargeKind::Usage, "usage"), (ChargeKind::Overage, "overage")];
pub const CREDIT_KINDS: [(CreditKind, &str); 2] =
    [(CreditKind::Dispute, "dispute"), (CreditKind::Retraction, "retraction")];

impl Ledger {
    /// Every tenant with an open book, as of the watermark `wm` (reviews are overdue by
    /// the wall clock `now`).
    pub fn gauges(&self, wm: Nanos, now: Nanos) -> Vec<TenantGauges> {
        if wm == Nanos::MIN {
            return Vec::new();
        }
        let p = Period::of(wm);
        self.books.keys().map(|tenant| self.tenant_gauges(tenant, p, wm, now)).collect()
    }

    fn tenant_gauges(&self, tenant: &str, p: Period, wm: Nanos, now: Nanos) -> TenantGauges {
        let mut g = TenantGauges { tenant: tenant.to_string(), balance: self.balance(tenant), ..Default::default() };
        let (plan, _) = self.plans.plan_for(tenant, p);
        g.margin_floor = plan.margin_floor;
        let book = self.books.get(tenant).and_then(|b| b.periods.get(&p));
        let mut used = std::collections::BTreeMap::new();
        if let Some(book) = book {
            for ((kind, outcome, unit), n) in &book.groups().counts {
                let i = CHARGE_KINDS.iter().position(|(k, _)| k == kind).unwrap_or(0);
                g.charges[i].0 += n;
                g.charges[i].1 += *unit * Decimal::from(*n);
                if *kind == ChargeKind::Included {
                    *used.entry(outcome.clone()).or_insert(0u64) += n;
                }
            }
            for c in &book.credits {
                let i = CREDIT_KINDS.iter().position(|(k, _)| *k == c.kind).unwrap_or(0);
                g.credits[i].0 += 1;
                g.credits[i].1 += c.amount;
            }
        }
        g.included_left = plan
            .included
            .iter()
            .map(|(outcome, n)| (outcome.clone(), n.saturating_sub(used.get(outcome).copied().unwrap_or(0))))
            .collect();
        let current = p.to_string();
        g.open_total = self.drafts(tenant, wm).iter().find(|i| i.period == current).map_or(Decimal::ZERO, |i| i.total);
        let mut opened_in_period = 0u64;
        for d in self.disputes(tenant) {
            let i = DISPUTE_STATUSES.iter().position(|(s, _)| *s == d.status).unwrap_or(0);
            g.disputes[i] += 1;
            if d.status == DisputeStatus::Refused {
                continue;
            }
            let Ok(opened) = crate::timestamp::parse_rfc3339(&d.opened_at) else { continue };
            if d.status == DisputeStatus::Open && now > self.plans.review_due(tenant, opened) {
                g.overdue += 1;
            }
            if Period::of(opened) == p {
                opened_in_period += 1;
            }
        }
        let billable: u64 = book.map_or(0, |b| b.counts.values().map(|(_, billable)| billable).sum());
        if billable > 0 {
            g.dispute_rate = Decimal::from(opened_in_period) / Decimal::from(billable);
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ledger::plans::PlanBook;
    use crate::ledger::rating::Rated;
    use crate::ledger::store::History;
    use crate::timestamp::parse_rfc3339;

    #[test]
    fn a_tenants_current_period_by_kind_with_what_is_left() {
        let plans = "[plans.p]\nplatform_fee = \"10.00\"\nincluded = { o = 2 }\noverage = { o = \"0.75\" }\n\
                     [tenants.acme]\nassignments = [{ plan = \"p\", from = \"2026-06\" }]\n";
        let mut l =
            Ledger::new(Arc::new(PlanBook::parse(plans, &["o"]).unwrap()), "USD", History::in_memory().unwrap());
        let at = parse_rfc3339("2026-06-12T10:00:00Z").unwrap();
        for i in 0..3 {
            let id = crate::verdicts::verdict_id("acme", &format!("c{i}"), "o");
            l.add_verdict(Rated {
                verdict_id: id,
                tenant: "acme".into(),
                conversation: format!("c{i}"),
                outcome: "o".into(),
                billable: true,
                amount: Decimal::new(50, 2),
                cost: Decimal::ZERO,
                decided_at: at + i,
                line_at: None,
            });
        }
        let wm = parse_rfc3339("2026-06-13T00:00:00Z").unwrap();
        assert!(l.gauges(wm, wm).is_empty(), "nothing rated yet");
        l.advance(wm);
        let g = &l.gauges(wm, wm)[0];
        assert_eq!(g.tenant, "acme");
        // Two included at 0, the third over at 0.75; the fee makes the draft 10.75.
        assert_eq!(g.charges, [(2, Decimal::ZERO), (0, Decimal::ZERO), (1, Decimal::new(75, 2))]);
        assert_eq!(g.included_left, [("o".to_string(), 0)]);
        assert_eq!(g.open_total, Decimal::new(1075, 2));
        assert_eq!(g.credits, [(0, Decimal::ZERO), (0, Decimal::ZERO)]);
        assert_eq!(g.balance, Decimal::ZERO);
        assert_eq!((g.disputes, g.overdue, g.dispute_rate), ([0; 4], 0, Decimal::ZERO));
        // One of the three disputed, opened at wm: a rate of 1/3, overdue after 48 hours.
        let c0 = crate::verdicts::verdict_id("acme", "c0", "o");
        let opened = crate::ledger::billing::BillingEvent {
            id: "d".into(),
            tenant: "acme".into(),
            conversation: "c0".into(),
            ts: wm,
            action: crate::ledger::billing::Action::DisputeOpened { outcome: "o".into(), reason: String::new() },
        };
        l.add_billing(opened);
        l.advance(wm + 1);
        assert_eq!(l.disputes("acme")[0].verdict_id, c0);
        let g = &l.gauges(wm + 1, wm + 1)[0];
        assert_eq!((g.disputes, g.overdue), ([1, 0, 0, 0], 0));
        assert_eq!(g.dispute_rate, Decimal::ONE / Decimal::from(3));
        let later = wm + 49 * 3_600_000_000_000;
        assert_eq!(l.gauges(wm + 1, later)[0].overdue, 1);
        // Charged 0.75 at a cost of 0.15: a margin of 80%; nothing charged, no ratio.
        let g = TenantGauges { cost: Decimal::new(15, 2), ..g.clone() };
        assert_eq!(g.margin_ratio(), Some(Decimal::new(8, 1)));
        assert_eq!(TenantGauges::default().margin_ratio(), None);
    }
}
