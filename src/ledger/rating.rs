//! Rating (SPEC 8.3): a tenant's verdicts and billing events, taken in order of time,
//! become charges and credits. The k-th billable verdict of an outcome in a period is
//! `included` while k is within the plan's allowance, else charged the plan's overage
//! price (`overage`) or its own amount (`usage`). Every billable verdict has exactly one
//! charge; an accepted dispute credits exactly that charge, once, in the period of the
//! accept. Disputes that cannot stand are kept as `refused`, with the cause.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::billing::{Action, BillingEvent};
use super::period::Period;
use super::plans::PlanBook;
use super::store::{History, StoreError, StoredVerdict};
use crate::timestamp::{format_rfc3339, Nanos};
use crate::verdicts::verdict_id;

/// What a verdict's ledger needs of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rated {
    pub verdict_id: String,
    pub tenant: String,
    pub conversation: String,
    pub outcome: String,
    pub billable: bool,
    pub amount: Decimal,
    pub cost: Decimal,
    pub decided_at: Nanos,
    /// Where its line starts in the service's verdict file, for the history. Not
    /// checkpointed: after a restore the service's index has it.
    #[serde(skip)]
    pub line_at: Option<u64>,
}

impl From<crate::verdicts::Verdict> for Rated {
    /// Takes what rating needs of a verdict already written (no copy of its strings).
    fn from(v: crate::verdicts::Verdict) -> Self {
        Rated {
            verdict_id: v.verdict_id,
            tenant: v.tenant,
            conversation: v.conversation,
            outcome: v.outcome,
            billable: v.billable,
            amount: v.amount,
            cost: v.cost,
            decided_at: v.decided_at,
            line_at: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeKind {
    Included,
    Usage,
    Overage,
}

/// The one charge of a billable verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub verdict_id: String,
    pub outcome: String,
    pub kind: ChargeKind,
    pub unit_price: Decimal,
    pub decided_at: Nanos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    Dispute,
    Retraction,
}

/// A charge given back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    pub verdict_id: String,
    pub kind: CreditKind,
    /// The charge credited (of the verdict's own period).
    pub amount: Decimal,
    pub at: Nanos,
}

/// What a tenant's period holds: counts per outcome, charges, credits, prepaid grants.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeriodBook {
    /// Per outcome: (all verdicts, billable verdicts).
    pub counts: BTreeMap<String, (u64, u64)>,
    pub charges: Vec<Charge>,
    pub credits: Vec<Credit>,
    /// `credit.granted` amounts with their `ts`.
    pub grants: Vec<(Nanos, Decimal)>,
    /// The charges grouped as invoice lines, kept as charges are added, so that an
    /// invoice of a million charges is read from a few groups. Not checkpointed:
    /// rebuilt after a restore ([`PeriodBook::regroup`]).
    #[serde(skip)]
    groups: Groups,
}

/// Charges by (kind, outcome, unit price): how many, and how many of `charges` counted.
#[derive(Clone, Debug, Default)]
pub struct Groups {
    upto: usize,
    pub counts: BTreeMap<(ChargeKind, String, Decimal), u64>,
}

impl Groups {
    fn add(&mut self, c: &Charge) {
        // Keyed lookups without an allocation once the group exists.
        match self.counts.iter_mut().find(|((k, o, u), _)| *k == c.kind && *o == c.outcome && *u == c.unit_price) {
            Some((_, n)) => *n += 1,
            None => {
                self.counts.insert((c.kind, c.outcome.clone(), c.unit_price), 1);
            }
        }
        self.upto += 1;
    }
}

impl PeriodBook {
    /// Adds a charge (and counts it in its group).
    pub fn add_charge(&mut self, c: Charge) {
        if self.groups.upto == self.charges.len() {
            self.groups.add(&c);
        }
        self.charges.push(c);
    }

    /// Counts every charge in its group again (after a restore).
    pub fn regroup(&mut self) {
        let mut g = Groups::default();
        self.charges.iter().for_each(|c| g.add(c));
        self.groups = g;
    }

    /// The charges grouped as invoice lines: kept, or counted now if the book was
    /// filled some other way.
    pub fn groups(&self) -> std::borrow::Cow<'_, Groups> {
        if self.groups.upto == self.charges.len() {
            return std::borrow::Cow::Borrowed(&self.groups);
        }
        let mut g = Groups::default();
        self.charges.iter().for_each(|c| g.add(c));
        std::borrow::Cow::Owned(g)
    }

    /// A page of the verdicts charged as (kind, outcome, unit price), in rating order.
    pub fn charged_verdicts(&self, group: (ChargeKind, &str, Decimal), offset: usize, limit: usize) -> Vec<String> {
        let (kind, outcome, unit) = group;
        self.charges
            .iter()
            .filter(|c| c.kind == kind && c.outcome == outcome && c.unit_price == unit)
            .skip(offset)
            .take(limit)
            .map(|c| c.verdict_id.clone())
            .collect()
    }

    /// A page of the verdicts credited as `kind`, in order.
    pub fn credited_verdicts(&self, kind: CreditKind, offset: usize, limit: usize) -> Vec<String> {
        self.credits.iter().filter(|c| c.kind == kind).skip(offset).take(limit).map(|c| c.verdict_id.clone()).collect()
    }
}

/// Where a dispute stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatus {
    Open,
    /// The verdict's charge was credited.
    Accepted,
    Rejected,
    /// It could not stand; `cause` says why.
    Refused,
}

/// A dispute as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    /// The `dispute.opened` event (or the accept or reject that was refused).
    pub event_id: String,
    pub tenant: String,
    pub conversation: String,
    pub outcome: String,
    pub verdict_id: String,
    pub opened_at: String,
    pub reason: String,
    pub status: DisputeStatus,
    /// Why it was refused.
    pub cause: Option<String>,
    /// The note of the accept or reject that closed it.
    pub note: Option<String>,
    /// When it was closed (accepted or rejected).
    pub closed_at: Option<String>,
    /// The charge credited, and the period it was credited in.
    pub credit: Option<Decimal>,
    pub credit_period: Option<String>,
}

/// A verdict of an open period as a tenant's book remembers it, for disputes and for
/// the history when its period closes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Known {
    pub billable: bool,
    pub decided_at: Nanos,
    /// What it was charged, if billable (`None` too while it waits to be rated).
    pub charge: Option<Decimal>,
    #[serde(skip)]
    pub line_at: Option<u64>,
}

impl From<StoredVerdict> for Known {
    fn from(v: StoredVerdict) -> Self {
        Known { billable: v.billable, decided_at: v.decided_at, charge: v.charge, line_at: None }
    }
}

/// One tenant's open periods, its disputes and its verdicts of open periods; closed
/// periods are in the history.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TenantBook {
    pub periods: BTreeMap<Period, PeriodBook>,
    pub disputes: Vec<Dispute>,
    /// hashbrown's hasher: every verdict rated is looked up and inserted here, and
    /// SipHash of its id was a tenth of rating. Serialized as any map.
    verdicts: hashbrown::HashMap<String, Known>,
    /// The dispute of each verdict disputed, by verdict id.
    disputed: HashMap<String, usize>,
}

/// What a closed period takes out of a tenant's book for the history.
pub struct ClosedPeriod {
    pub book: PeriodBook,
    /// Its verdicts: id, billable, decided_at, where its line is (if known here).
    pub verdicts: Vec<(String, bool, Nanos, Option<u64>)>,
}

impl TenantBook {
    /// The book of a period, which then has an invoice.
    fn period(&mut self, p: Period) -> &mut PeriodBook {
        self.periods.entry(p).or_default()
    }

    /// Rates one verdict: counts it, and charges it if billable. A verdict id seen before
    /// (a conversation decided again after its retention ran out) is charged once only,
    /// as every consumer of verdicts deduplicates by id.
    pub fn rate(&mut self, plans: &PlanBook, v: Rated, history: &History) -> Result<(), StoreError> {
        if self.verdicts.contains_key(&v.verdict_id) || history.rated_before(&v.verdict_id)? {
            return Ok(());
        }
        let p = Period::of(v.decided_at);
        let (plan, _) = plans.plan_for(&v.tenant, p);
        let book = self.period(p);
        if !book.counts.contains_key(&v.outcome) {
            book.counts.insert(v.outcome.clone(), (0, 0));
        }
        let counts = book.counts.get_mut(&v.outcome).expect("inserted above");
        counts.0 += 1;
        let mut charge = None;
        if v.billable {
            counts.1 += 1;
            let k = counts.1;
            let (kind, unit_price) = if k <= plan.included.get(&v.outcome).copied().unwrap_or(0) {
                (ChargeKind::Included, Decimal::ZERO)
            } else if let Some(price) = plan.overage.get(&v.outcome) {
                (ChargeKind::Overage, *price)
            } else {
                (ChargeKind::Usage, v.amount)
            };
            let (verdict_id, outcome, decided_at) = (v.verdict_id.clone(), v.outcome, v.decided_at);
            book.add_charge(Charge { verdict_id, outcome, kind, unit_price, decided_at });
            charge = Some(unit_price);
        }
        let known = Known { billable: v.billable, decided_at: v.decided_at, charge, line_at: v.line_at };
        self.verdicts.insert(v.verdict_id, known);
        Ok(())
    }

    /// A verdict of an open period, as rating knows it.
    pub fn known(&self, verdict_id: &str) -> Option<&Known> {
        self.verdicts.get(verdict_id)
    }

    /// The dispute of a verdict (open or closed), if one was opened.
    pub fn dispute_of(&self, verdict_id: &str) -> Option<&Dispute> {
        self.disputed.get(verdict_id).and_then(|&i| self.disputes.get(i))
    }

    /// Takes a closed period out of the book (its verdicts too), for the history.
    pub fn close(&mut self, p: Period) -> ClosedPeriod {
        let book = self.periods.remove(&p).unwrap_or_default();
        let ids: Vec<String> =
            self.verdicts.iter().filter(|(_, k)| Period::of(k.decided_at) == p).map(|(id, _)| id.clone()).collect();
        let verdicts = ids
            .into_iter()
            .filter_map(|id| self.verdicts.remove(&id).map(|k| (id, k.billable, k.decided_at, k.line_at)))
            .collect();
        ClosedPeriod { book, verdicts }
    }

    /// Applies one billing event.
    pub fn apply(&mut self, plans: &PlanBook, e: &BillingEvent, history: &History) -> Result<(), StoreError> {
        let p = Period::of(e.ts);
        self.period(p);
        let outcome = match &e.action {
            Action::CreditGranted { amount, .. } => {
                self.period(p).grants.push((e.ts, *amount));
                return Ok(());
            }
            Action::DisputeOpened { outcome, .. }
            | Action::DisputeAccepted { outcome, .. }
            | Action::DisputeRejected { outcome, .. } => outcome,
        };
        let vid = verdict_id(&e.tenant, &e.conversation, outcome);
        let known = match self.verdicts.get(&vid) {
            Some(k) => Some(k.clone()),
            None => history.store().verdict(&vid)?.map(Known::from),
        };
        let disputed = self.disputed.get(&vid).copied();
        let dispute = |status: DisputeStatus, cause: Option<String>, reason: &str| Dispute {
            event_id: e.id.clone(),
            tenant: e.tenant.clone(),
            conversation: e.conversation.clone(),
            outcome: outcome.clone(),
            verdict_id: vid.clone(),
            opened_at: format_rfc3339(e.ts),
            reason: reason.to_string(),
            status,
            cause,
            note: None,
            closed_at: None,
            credit: None,
            credit_period: None,
        };
        let current = disputed.map(|i| (self.disputes[i].event_id.as_str(), self.disputes[i].status));
        let decision = decide(plans, e, known.as_ref(), current);
        match (&e.action, decision) {
            (Action::DisputeOpened { reason, .. }, Decision::Open) => {
                self.disputes.push(dispute(DisputeStatus::Open, None, reason));
                self.disputed.insert(vid, self.disputes.len() - 1);
            }
            (Action::DisputeOpened { reason, .. }, Decision::Refuse(why)) => {
                self.disputes.push(dispute(DisputeStatus::Refused, Some(why.to_string()), reason));
            }
            (Action::DisputeAccepted { note, .. } | Action::DisputeRejected { note, .. }, Decision::Refuse(why)) => {
                self.disputes.push(dispute(DisputeStatus::Refused, Some(why.to_string()), note));
            }
            (Action::DisputeAccepted { note, .. } | Action::DisputeRejected { note, .. }, decision) => {
                let Some(i) = disputed else { return Ok(()) };
                let d = &mut self.disputes[i];
                (d.note, d.closed_at) = (Some(note.clone()), Some(format_rfc3339(e.ts)));
                if decision == Decision::Accept {
                    let amount = known.and_then(|k| k.charge).unwrap_or(Decimal::ZERO);
                    (d.status, d.credit, d.credit_period) =
                        (DisputeStatus::Accepted, Some(amount), Some(p.to_string()));
                    self.period(p).credits.push(Credit {
                        verdict_id: vid,
                        kind: CreditKind::Dispute,
                        amount,
                        at: e.ts,
                    });
                } else {
                    d.status = DisputeStatus::Rejected;
                }
            }
            (Action::DisputeOpened { .. } | Action::CreditGranted { .. }, _) => {}
        }
        Ok(())
    }
}

/// What rating does with a dispute event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Open,
    Accept,
    Reject,
    Refuse(Refusal),
}

/// Why a dispute event cannot stand (SPEC 8.2): it is kept as `refused` with this cause.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no {outcome} verdict for conversation {conversation:?} was decided by {by}")]
    UnknownVerdict { outcome: String, conversation: String, by: String },
    #[error("the verdict is not billable: there is no charge to dispute")]
    NotBillable,
    #[error("already disputed (by event {by}, {status})")]
    AlreadyDisputed { by: String, status: &'static str },
    #[error("outside the dispute window: the verdict was decided at {decided_at} and could be disputed until {until}")]
    OutsideWindow { decided_at: String, until: String },
    #[error("nothing to {verb}: no open dispute of this verdict")]
    NoOpenDispute { verb: &'static str },
}

impl Refusal {
    /// The short name of a cause as the ledger keeps it (its text).
    pub fn code_of(cause: &str) -> &'static str {
        if cause.starts_with("no ") {
            "unknown_verdict"
        } else if cause.starts_with("the verdict is not billable") {
            "not_billable"
        } else if cause.starts_with("already disputed") {
            "already_disputed"
        } else if cause.starts_with("outside the dispute window") {
            "outside_window"
        } else if cause.starts_with("nothing to ") {
            "no_open_dispute"
        } else {
            "refused"
        }
    }

    /// A short name of the cause, for programs.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownVerdict { .. } => "unknown_verdict",
            Refusal::NotBillable => "not_billable",
            Refusal::AlreadyDisputed { .. } => "already_disputed",
            Refusal::OutsideWindow { .. } => "outside_window",
            Refusal::NoOpenDispute { .. } => "no_open_dispute",
        }
    }
}

/// Decides a dispute event `e` (not a grant) on the verdict it names, `known` as rating
/// knows it then, and `current`, the dispute of that verdict so far (its event id and
/// status). Rating and the preview of an HTTP dispute both decide here.
pub fn decide(
    plans: &PlanBook,
    e: &BillingEvent,
    known: Option<&Known>,
    current: Option<(&str, DisputeStatus)>,
) -> Decision {
    match &e.action {
        Action::DisputeOpened { outcome, .. } => {
            let refusal = match known {
                None => Some(Refusal::UnknownVerdict {
                    outcome: outcome.clone(),
                    conversation: e.conversation.clone(),
                    by: format_rfc3339(e.ts),
                }),
                Some(k) if !k.billable => Some(Refusal::NotBillable),
                Some(_) if current.is_some() => {
                    current.map(|(by, status)| Refusal::AlreadyDisputed { by: by.to_string(), status: status.word() })
                }
                Some(k) if e.ts > plans.dispute_deadline(&e.tenant, k.decided_at) => Some(Refusal::OutsideWindow {
                    decided_at: format_rfc3339(k.decided_at),
                    until: format_rfc3339(plans.dispute_deadline(&e.tenant, k.decided_at)),
                }),
                Some(_) => None,
            };
            refusal.map_or(Decision::Open, Decision::Refuse)
        }
        Action::DisputeAccepted { .. } | Action::DisputeRejected { .. } => {
            let accept = matches!(e.action, Action::DisputeAccepted { .. });
            match current {
                Some((_, DisputeStatus::Open)) if accept => Decision::Accept,
                Some((_, DisputeStatus::Open)) => Decision::Reject,
                _ => Decision::Refuse(Refusal::NoOpenDispute { verb: if accept { "accept" } else { "reject" } }),
            }
        }
        Action::CreditGranted { .. } => Decision::Open,
    }
}

#[cfg(test)]
#[test]
fn every_cause_is_named_again_from_its_text() {
    let all = [
        Refusal::UnknownVerdict { outcome: "o".into(), conversation: "c".into(), by: "t".into() },
        Refusal::NotBillable,
        Refusal::AlreadyDisputed { by: "e".into(), status: "open" },
        Refusal::OutsideWindow { decided_at: "a".into(), until: "b".into() },
        Refusal::NoOpenDispute { verb: "accept" },
    ];
    for r in all {
        assert_eq!(Refusal::code_of(&r.to_string()), r.code(), "{r}");
    }
}

impl DisputeStatus {
    pub fn word(self) -> &'static str {
        match self {
            DisputeStatus::Open => "open",
            DisputeStatus::Accepted => "accepted",
            DisputeStatus::Rejected => "rejected",
            DisputeStatus::Refused => "refused",
        }
    }
}
