//! What rating will make of a dispute event that is logged but still waits for the
//! watermark: the answer an HTTP dispute call gives at once. It decides with the same
//! function rating uses ([`decide`]), on the verdict and dispute as they stand once
//! everything logged before the event is rated; only a record logged later with an
//! earlier time (within the lateness) could change it, and `GET /v1/disputes` then shows
//! what rating decided.

use rust_decimal::Decimal;

use super::billing::{Action, BillingEvent};
use super::rating::{decide, Decision, Dispute, DisputeStatus, Known};
use super::store::StoreError;
use super::{Ledger, Pending};
use crate::timestamp::Nanos;
use crate::verdicts::verdict_id;

/// A dispute event as rating decides, or decided, it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preview {
    /// Rated already: the dispute as the ledger keeps it (for an accept or reject,
    /// the dispute it closed).
    Rated(Dispute),
    /// Waiting for the watermark: what rating will decide.
    Pending {
        decision: Decision,
        verdict_id: String,
        /// When the dispute was (or will be) opened.
        opened_at: Option<Nanos>,
        /// An accept's credit: the verdict's charge (`None` while the verdict itself
        /// waits to be rated).
        credit: Option<Decimal>,
    },
}

/// The conversation and outcome a verdict id names, within a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub tenant: String,
    pub conversation: String,
    pub outcome: String,
}

fn outcome_of(a: &Action) -> Option<&str> {
    match a {
        Action::DisputeOpened { outcome, .. }
        | Action::DisputeAccepted { outcome, .. }
        | Action::DisputeRejected { outcome, .. } => Some(outcome),
        Action::CreditGranted { .. } => None,
    }
}

impl Ledger {
    /// What rating makes of the dispute event `e`, which the ledger has taken; `None`
    /// for a grant.
    pub fn preview(&self, e: &BillingEvent) -> Result<Option<Preview>, StoreError> {
        let Some(outcome) = outcome_of(&e.action) else { return Ok(None) };
        let vid = verdict_id(&e.tenant, &e.conversation, outcome);
        let book = self.books.get(&e.tenant);
        let waiting = self.pending.iter().any(|std::cmp::Reverse(p)| {
            matches!(p, Pending::Billing(b) if b.id == e.id && b.tenant == e.tenant && b.conversation == e.conversation)
        });
        if !waiting {
            // Rated: a refusal or an opening is its own dispute; an accept or reject
            // shows the dispute it closed.
            let Some(b) = book else { return Ok(None) };
            let own = b.disputes.iter().rev().find(|d| d.event_id == e.id);
            let shown = match own {
                Some(d) if d.status == DisputeStatus::Refused || matches!(e.action, Action::DisputeOpened { .. }) => {
                    Some(d)
                }
                _ => b.dispute_of(&vid),
            };
            return Ok(shown.cloned().map(Preview::Rated));
        }
        let mut known: Option<Known> = book.and_then(|b| b.known(&vid)).cloned();
        if known.is_none() {
            known = self.history.store().verdict(&vid)?.map(Known::from);
        }
        let mut current = book.and_then(|b| b.dispute_of(&vid)).map(|d| (d.event_id.clone(), d.status));
        let mut opened_at =
            book.and_then(|b| b.dispute_of(&vid)).and_then(|d| crate::timestamp::parse_rfc3339(&d.opened_at).ok());
        let key = (e.ts, 1u8, e.id.as_str(), e.tenant.as_str(), e.conversation.as_str());
        let mut before: Vec<&Pending> = self
            .pending
            .iter()
            .map(|std::cmp::Reverse(p)| p)
            .filter(|p| p.key() < key)
            .filter(|p| match p {
                Pending::Verdict(v) => v.verdict_id == vid,
                Pending::Billing(b) => {
                    b.tenant == e.tenant && b.conversation == e.conversation && outcome_of(&b.action) == Some(outcome)
                }
            })
            .collect();
        before.sort();
        for p in before {
            match p {
                Pending::Verdict(v) if known.is_none() => {
                    known = Some(Known { billable: v.billable, decided_at: v.decided_at, charge: None, line_at: None })
                }
                Pending::Verdict(_) => {}
                Pending::Billing(b) => {
                    let status =
                        match decide(&self.plans, b, known.as_ref(), current.as_ref().map(|(i, s)| (i.as_str(), *s))) {
                            Decision::Open => {
                                opened_at = Some(b.ts);
                                DisputeStatus::Open
                            }
                            Decision::Accept => DisputeStatus::Accepted,
                            Decision::Reject => DisputeStatus::Rejected,
                            Decision::Refuse(_) => continue,
                        };
                    let by = if status == DisputeStatus::Open {
                        b.id.clone()
                    } else {
                        current.map(|(i, _)| i).unwrap_or_default()
                    };
                    current = Some((by, status));
                }
            }
        }
        let decision = decide(&self.plans, e, known.as_ref(), current.as_ref().map(|(i, s)| (i.as_str(), *s)));
        if decision == Decision::Open {
            opened_at = Some(e.ts);
        }
        let credit = if decision == Decision::Accept { known.and_then(|k| k.charge) } else { None };
        Ok(Some(Preview::Pending { decision, verdict_id: vid, opened_at, credit }))
    }

    /// The tenant, conversation and outcome of the verdict `verdict_id`, if a dispute of
    /// it was taken (rated or waiting).
    pub fn dispute_subject(&self, verdict_id_: &str) -> Option<Subject> {
        for (tenant, b) in &self.books {
            if let Some(d) = b.dispute_of(verdict_id_) {
                return Some(Subject {
                    tenant: tenant.clone(),
                    conversation: d.conversation.clone(),
                    outcome: d.outcome.clone(),
                });
            }
        }
        self.pending.iter().find_map(|std::cmp::Reverse(p)| match p {
            Pending::Billing(b) => match &b.action {
                Action::DisputeOpened { outcome, .. }
                    if verdict_id(&b.tenant, &b.conversation, outcome) == verdict_id_ =>
                {
                    Some(Subject {
                        tenant: b.tenant.clone(),
                        conversation: b.conversation.clone(),
                        outcome: outcome.clone(),
                    })
                }
                _ => None,
            },
            Pending::Verdict(_) => None,
        })
    }

    /// Whether the ledger knows `tenant`: it has a book (a verdict or billing event,
    /// rated or waiting) or a plan assignment.
    pub fn knows_tenant(&self, tenant: &str) -> bool {
        self.books.contains_key(tenant)
            || self.plans.tenants.contains_key(tenant)
            || self.pending.iter().any(|std::cmp::Reverse(p)| p.key().3 == tenant)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ledger::plans::PlanBook;
    use crate::ledger::rating::{Rated, Refusal};
    use crate::ledger::store::History;
    use crate::timestamp::parse_rfc3339;

    fn t(s: &str) -> Nanos {
        parse_rfc3339(s).unwrap()
    }

    fn event(id: &str, at: &str, action: Action) -> BillingEvent {
        BillingEvent { id: id.into(), tenant: "acme".into(), conversation: "c1".into(), ts: t(at), action }
    }

    #[test]
    fn a_waiting_event_is_decided_as_rating_will_and_a_rated_one_as_it_was() {
        let mut l = Ledger::new(Arc::new(PlanBook::default()), "USD", History::in_memory().unwrap());
        let o = || "ai_resolution".to_string();
        l.add_verdict(Rated {
            verdict_id: verdict_id("acme", "c1", "ai_resolution"),
            tenant: "acme".into(),
            conversation: "c1".into(),
            outcome: o(),
            billable: true,
            amount: Decimal::new(150, 2),
            cost: Decimal::ZERO,
            decided_at: t("2026-06-12T10:00:00Z"),
            line_at: None,
        });
        l.advance(t("2026-06-12T11:00:00Z"));
        assert!(l.knows_tenant("acme") && !l.knows_tenant("zeta"));
        let open = event("o1", "2026-06-13T00:00:00Z", Action::DisputeOpened { outcome: o(), reason: String::new() });
        let accept = event("a1", "2026-06-13T01:00:00Z", Action::DisputeAccepted { outcome: o(), note: String::new() });
        let again = event("a2", "2026-06-13T02:00:00Z", Action::DisputeAccepted { outcome: o(), note: String::new() });
        for e in [&open, &accept, &again] {
            l.add_billing(e.clone());
        }
        let waiting = |l: &Ledger, e: &BillingEvent| match l.preview(e).unwrap() {
            Some(Preview::Pending { decision, credit, .. }) => (decision, credit),
            other => panic!("{other:?}"),
        };
        assert_eq!(waiting(&l, &open), (Decision::Open, None));
        assert_eq!(waiting(&l, &accept), (Decision::Accept, Some(Decimal::new(150, 2))), "the charge, known");
        let refused = Decision::Refuse(Refusal::NoOpenDispute { verb: "accept" });
        assert_eq!(waiting(&l, &again), (refused, None), "the first accept closed it");
        assert_eq!(l.dispute_subject(&verdict_id("acme", "c1", "ai_resolution")).unwrap().conversation, "c1");
        l.advance(t("2026-06-14T00:00:00Z"));
        let rated = |e: &BillingEvent| match l.preview(e).unwrap() {
            Some(Preview::Rated(d)) => (d.status, d.credit),
            other => panic!("{other:?}"),
        };
        let credited = (DisputeStatus::Accepted, Some(Decimal::new(150, 2)));
        assert_eq!(rated(&open), credited, "the dispute it opened, closed since");
        assert_eq!(rated(&accept), credited);
        assert_eq!(rated(&again).0, DisputeStatus::Refused);
    }
}
