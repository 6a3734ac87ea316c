//! The ledger: billing, a layer beside the engine. It takes verdicts (from the engine)
//! and billing events (from the stream), holds them until the watermark has passed their
//! time, then rates them in the order SPEC 8.3 fixes (time; verdicts before billing
//! events at equal time; then by id), so the result does not depend on arrival order.
//! Periods close when the watermark passes their end, in order, each with a final,
//! numbered invoice that drew on the prepaid balance; the open period has a draft.

pub mod billing;
pub mod credit_log;
pub mod gauges;
pub mod invoice;
pub mod period;
pub mod plans;
pub mod preview;
pub mod rating;
pub mod statement;
pub mod store;
pub mod totals;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::sync::Arc;

use rust_decimal::Decimal;

use billing::BillingEvent;
use invoice::{Invoice, Status, Terms};
use period::Period;
use plans::PlanBook;
use rating::{Dispute, Rated, TenantBook};
use store::{ClosedVerdict, History, StoreError};
use totals::{Charged, Totals};

use crate::timestamp::Nanos;

/// Something waiting for the watermark, ordered as rating takes it: by time, verdicts
/// before billing events, then by id (and tenant and conversation, which make it whole).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Pending {
    Verdict(Box<Rated>),
    Billing(Box<BillingEvent>),
}

impl Pending {
    fn key(&self) -> (Nanos, u8, &str, &str, &str) {
        match self {
            Pending::Verdict(v) => (v.decided_at, 0, &v.verdict_id, &v.tenant, &v.conversation),
            Pending::Billing(e) => (e.ts, 1, &e.id, &e.tenant, &e.conversation),
        }
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// How far a tenant's periods are closed (their invoices are in the history), and its
/// prepaid balance after the last.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Closed {
    through: Option<Period>,
    balance: Decimal,
}

/// What a checkpoint holds of the ledger. The plans in force are kept too, so that a
/// restart on edited plans can be checked against the periods already closed; the
/// currency comes from the rules.
#[derive(serde::Serialize)]
pub struct LedgerRef<'a> {
    plans: &'a PlanBook,
    pending: &'a BinaryHeap<Reverse<Pending>>,
    books: &'a BTreeMap<String, TenantBook>,
    closed: &'a BTreeMap<String, Closed>,
    seen: &'a HashSet<(String, String, String)>,
    closed_through: Option<Period>,
}

/// A ledger as read back from a checkpoint; [`Ledger::restore`] makes it run.
#[derive(Default, serde::Deserialize)]
pub struct LedgerSnapshot {
    plans: PlanBook,
    pending: BinaryHeap<Reverse<Pending>>,
    pub(crate) books: BTreeMap<String, TenantBook>,
    closed: BTreeMap<String, Closed>,
    seen: HashSet<(String, String, String)>,
    closed_through: Option<Period>,
}

pub struct Ledger {
    plans: Arc<PlanBook>,
    history: History,
    /// The first failure of the history; the ledger does nothing more after it.
    failed: Option<String>,
    currency: String,
    pending: BinaryHeap<Reverse<Pending>>,
    books: BTreeMap<String, TenantBook>,
    closed: BTreeMap<String, Closed>,
    /// Billing events taken, by (tenant, conversation, id): the first copy wins.
    seen: HashSet<(String, String, String)>,
    /// The last period closed for every tenant.
    closed_through: Option<Period>,
    totals: Totals,
    /// Ids of the verdicts whose periods closed since the last [`Ledger::take_released`],
    /// when someone asked to hear of them.
    released: Option<Vec<String>>,
    /// Where a verdict's line is in the service's verdict file, for those rated before a
    /// restore (the others carry it).
    line_of: Option<LineLookup>,
    /// The credits given since the last [`Ledger::take_credits`], with their tenants,
    /// when someone asked to hear of them.
    given: Option<Vec<(String, rating::Credit)>>,
}

/// Finds a verdict's line in the service's verdict file, by verdict id.
pub type LineLookup = Box<dyn Fn(&str) -> Option<u64> + Send>;

/// What [`Ledger::add_billing`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    Accepted,
    Duplicate,
}

impl Ledger {
    pub fn new(plans: Arc<PlanBook>, currency: &str, history: History) -> Ledger {
        Ledger {
            plans,
            history,
            failed: None,
            currency: currency.to_string(),
            pending: BinaryHeap::new(),
            books: BTreeMap::new(),
            closed: BTreeMap::new(),
            seen: HashSet::new(),
            closed_through: None,
            totals: Totals::default(),
            released: None,
            line_of: None,
            given: None,
        }
    }

    pub fn plans(&self) -> &PlanBook {
        &self.plans
    }

    /// New plans (a reload): what is not closed yet is rated and invoiced by them.
    pub fn set_plans(&mut self, plans: Arc<PlanBook>) {
        self.plans = plans;
    }

    /// The last period closed (for every tenant), if any.
    pub fn closed_through(&self) -> Option<Period> {
        self.closed_through
    }

    /// Its state, for a checkpoint.
    pub fn state(&self) -> LedgerRef<'_> {
        LedgerRef {
            plans: &self.plans,
            pending: &self.pending,
            books: &self.books,
            closed: &self.closed,
            seen: &self.seen,
            closed_through: self.closed_through,
        }
    }

    /// A ledger that continues from `snap` under `plans`, unless they would change a
    /// period `snap` has closed (then why). The history forgets the periods closed
    /// after the snapshot (the replay of the log closes them again).
    pub fn restore(
        plans: Arc<PlanBook>,
        currency: &str,
        snap: LedgerSnapshot,
        mut history: History,
    ) -> Result<Ledger, String> {
        let LedgerSnapshot { plans: before, pending, books, closed, seen, closed_through } = snap;
        if let Some(why) = closed_through.and_then(|through| before.changes_closed(&plans, through)) {
            return Err(why);
        }
        history.forget_after(closed_through).map_err(|e| e.to_string())?;
        let currency = currency.to_string();
        let mut books = books;
        books.values_mut().flat_map(|b| b.periods.values_mut()).for_each(rating::PeriodBook::regroup);
        let mut totals = Totals::default();
        totals.touch_all(books.keys());
        let released = None;
        Ok(Ledger {
            plans,
            history,
            failed: None,
            currency,
            pending,
            books,
            closed,
            seen,
            closed_through,
            totals,
            released,
            line_of: None,
            given: None,
        })
    }

    /// Why the ledger stopped, if its history failed (the service must stop: its
    /// recovery starts again from the last checkpoint).
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// The prepaid balance of `tenant` now: after the last close, with the grants since.
    pub fn balance(&self, tenant: &str) -> Decimal {
        let closed = self.closed.get(tenant);
        let since: Decimal = self
            .books
            .get(tenant)
            .map(|b| {
                b.periods
                    .iter()
                    .filter(|(p, _)| closed.and_then(|c| c.through).is_none_or(|t| **p > t))
                    .flat_map(|(_, book)| book.grants.iter().map(|(_, a)| *a))
                    .sum()
            })
            .unwrap_or_default();
        closed.map_or(Decimal::ZERO, |c| c.balance) + since
    }

    /// A verdict decided by the engine.
    pub fn add_verdict(&mut self, v: Rated) {
        self.pending.push(Reverse(Pending::Verdict(Box::new(v))));
    }

    /// A billing event that was not late; a second copy of an id is a duplicate.
    pub fn add_billing(&mut self, e: BillingEvent) -> Taken {
        if !self.seen.insert((e.tenant.clone(), e.conversation.clone(), e.id.clone())) {
            return Taken::Duplicate;
        }
        self.pending.push(Reverse(Pending::Billing(Box::new(e))));
        Taken::Accepted
    }

    /// The watermark is at `wm`: rates everything before it (what is at `wm` may still
    /// be joined by more at the same time) and closes the periods that ended by then.
    pub fn advance(&mut self, wm: Nanos) {
        self.rate_before(wm);
        self.close_through(wm);
    }

    /// End of a finite input at `wm` (its largest `ts`): everything is rated.
    pub fn finish(&mut self, wm: Nanos) {
        self.rate_before(Nanos::MAX);
        self.close_through(wm);
    }

    fn rate_before(&mut self, limit: Nanos) {
        while self.failed.is_none() && self.pending.peek().is_some_and(|Reverse(p)| p.key().0 < limit) {
            let Some(Reverse(p)) = self.pending.pop() else { break };
            let (plans, history) = (&self.plans, &self.history);
            self.totals.touch(p.key().3);
            let done = match p {
                Pending::Verdict(v) => book_of(&mut self.books, &v.tenant).rate(plans, *v, history),
                Pending::Billing(e) => {
                    let book = book_of(&mut self.books, &e.tenant);
                    let credits = |b: &TenantBook| b.periods.get(&Period::of(e.ts)).map_or(0, |p| p.credits.len());
                    let before = credits(book);
                    let done = book.apply(plans, &e, history);
                    if let Some(given) = self.given.as_mut().filter(|_| credits(book) > before) {
                        let period = &book.periods[&Period::of(e.ts)];
                        given.extend(period.credits[before..].iter().map(|c| (e.tenant.clone(), c.clone())));
                    }
                    done
                }
            };
            self.fail_on(done);
        }
    }

    fn fail_on(&mut self, r: Result<(), StoreError>) {
        if let Err(e) = r {
            tracing::error!("the ledger history failed; billing stops: {e}");
            self.failed.get_or_insert(e.to_string());
        }
    }

    /// The periods of `tenant` that get an invoice, up to `last`: those with a verdict
    /// or billing event, and every period of an assignment that bills idle periods.
    fn invoiced_periods(&self, tenant: &str, last: Period) -> BTreeSet<Period> {
        let mut ps: BTreeSet<Period> = self
            .books
            .get(tenant)
            .map(|b| b.periods.keys().copied().filter(|p| *p <= last).collect())
            .unwrap_or_default();
        if let Some(mut p) = self.plans.first_billed_period(tenant) {
            while p <= last {
                if self.plans.plan_for(tenant, p).0.bills_idle_periods() {
                    ps.insert(p);
                }
                p = p.next();
            }
        }
        ps
    }

    fn tenants(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.books.keys().chain(self.plans.tenants.keys()).cloned().collect();
        match self.history.store().tenants() {
            Ok(closed) => all.extend(closed),
            Err(e) => tracing::error!("{e}"),
        }
        all
    }

    /// Closes, in order, each tenant's periods that ended by `wm`.
    fn close_through(&mut self, wm: Nanos) {
        if wm == Nanos::MIN {
            return;
        }
        // A period closes once the watermark has reached its end: every period before
        // the watermark's own. Nothing new closes until the watermark's period changes.
        let Some(last_closed) = Period::of(wm).0.checked_sub(1).map(Period) else { return };
        if self.closed_through == Some(last_closed) {
            return;
        }
        self.closed_through = Some(last_closed);
        for tenant in self.tenants() {
            let done = self.closed.get(&tenant).and_then(|c| c.through);
            let periods: Vec<Period> = self
                .invoiced_periods(&tenant, last_closed)
                .into_iter()
                .filter(|p| done.is_none_or(|d| *p > d))
                .collect();
            for p in periods {
                if self.failed.is_some() {
                    return;
                }
                let balance = self.closed.get(&tenant).map_or(Decimal::ZERO, |c| c.balance);
                let inv = self.invoice_with(&tenant, p, balance, Status::Final);
                let closed = book_of(&mut self.books, &tenant).close(p);
                let verdicts: Vec<ClosedVerdict<'_>> = closed
                    .verdicts
                    .iter()
                    .map(|(id, billable, at, line_at)| ClosedVerdict {
                        verdict_id: id,
                        billable: *billable,
                        decided_at: *at,
                        line_at: line_at.or_else(|| self.line_of.as_ref().and_then(|f| f(id))),
                    })
                    .collect();
                let totals = self.totals.close(&tenant, p, &closed.book);
                let book = &closed.book;
                let written = self.history.close(&inv, p, &verdicts, &book.charges, &book.credits, &totals);
                self.fail_on(written);
                if let Some(released) = &mut self.released {
                    released.extend(closed.verdicts.iter().map(|v| v.0.clone()));
                }
                let c = self.closed.entry(tenant.clone()).or_default();
                c.balance = inv.prepaid_balance;
                c.through = Some(p);
            }
        }
    }

    fn invoice_with(&self, tenant: &str, p: Period, closed_balance: Decimal, status: Status) -> Invoice {
        let empty = rating::PeriodBook::default();
        let book = self.books.get(tenant).and_then(|b| b.periods.get(&p)).unwrap_or(&empty);
        let balance = closed_balance + book.grants.iter().map(|(_, a)| *a).sum::<Decimal>();
        let (plan, assigned_from) = self.plans.plan_for(tenant, p);
        let terms = Terms { tenant, period: p, plan, assigned_from, currency: &self.currency, balance, status };
        Invoice::compute(book, &terms)
    }

    /// Every invoice of `tenant`: the final ones, then the draft of each open period
    /// up to `wm`'s, as if it closed now.
    pub fn invoices(&self, tenant: &str, wm: Nanos) -> Result<Vec<Invoice>, StoreError> {
        let mut out = self.history.store().invoices(tenant)?;
        out.extend(self.drafts(tenant, wm));
        Ok(out)
    }

    /// The drafts of `tenant`'s open periods up to `wm`'s, each drawing on the prepaid
    /// balance the one before left.
    pub fn drafts(&self, tenant: &str, wm: Nanos) -> Vec<Invoice> {
        if wm == Nanos::MIN {
            return Vec::new();
        }
        let closed = self.closed.get(tenant).cloned().unwrap_or_default();
        let mut balance = closed.balance;
        let open =
            self.invoiced_periods(tenant, Period::of(wm)).into_iter().filter(|p| closed.through.is_none_or(|d| *p > d));
        open.map(|p| {
            let inv = self.invoice_with(tenant, p, balance, Status::Draft);
            balance = inv.prepaid_balance;
            inv
        })
        .collect()
    }

    /// Every tenant's invoices, by tenant then period, each line with all its verdicts
    /// (final invoices keep theirs in the history: they are read back here).
    pub fn all_invoices(&self, wm: Nanos) -> Result<Vec<Invoice>, StoreError> {
        let mut all = Vec::new();
        for t in self.tenants() {
            for mut inv in self.invoices(&t, wm)? {
                let p: Period = inv.period.parse().map_err(|e: period::PeriodError| StoreError::Bad {
                    path: "invoices".into(),
                    what: e.to_string(),
                })?;
                for line in &mut inv.lines {
                    let (_, ids) = self.page_of(&t, p, inv.status, line, 0, usize::MAX >> 1)?;
                    line.verdicts = ids;
                }
                all.push(inv);
            }
        }
        Ok(all)
    }

    /// A page of the verdicts behind `line` of the invoice of `tenant` for
    /// `period`, and how many there are; `None` when there is no such line.
    pub fn line_verdicts(
        &self,
        tenant: &str,
        period: Period,
        line: usize,
        offset: usize,
        limit: usize,
        wm: Nanos,
    ) -> Result<Option<(u64, Vec<String>)>, StoreError> {
        let Some(inv) = self.invoice(tenant, period, wm)? else { return Ok(None) };
        let Some(l) = inv.lines.get(line) else { return Ok(None) };
        self.page_of(tenant, period, inv.status, l, offset, limit).map(Some)
    }

    /// The invoice of `tenant` for `period` (final, or the draft as of `wm`), if any.
    pub fn invoice(&self, tenant: &str, period: Period, wm: Nanos) -> Result<Option<Invoice>, StoreError> {
        let name = period.to_string();
        let closed = self.closed.get(tenant).and_then(|c| c.through);
        if closed.is_some_and(|c| period <= c) {
            return self.history.store().invoice(tenant, period);
        }
        // An open period: its draft (the finals in the history are all of closed ones).
        Ok(self.drafts(tenant, wm).into_iter().find(|i| i.period == name))
    }

    fn page_of(
        &self,
        tenant: &str,
        period: Period,
        status: Status,
        line: &invoice::Line,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        use invoice::LineKind;
        if status == Status::Final {
            return self.history.store().line_verdicts(tenant, period, line, offset, limit);
        }
        let Some(book) = self.books.get(tenant).and_then(|b| b.periods.get(&period)) else {
            return Ok((0, Vec::new()));
        };
        let charged = |kind| {
            let (outcome, unit) = (line.outcome.as_deref().unwrap_or(""), line.unit_price.unwrap_or_default());
            book.charged_verdicts((kind, outcome, unit), offset, limit)
        };
        let page = match line.kind {
            LineKind::Included => charged(rating::ChargeKind::Included),
            LineKind::Usage => charged(rating::ChargeKind::Usage),
            LineKind::Overage => charged(rating::ChargeKind::Overage),
            LineKind::DisputeCredit => book.credited_verdicts(rating::CreditKind::Dispute, offset, limit),
            LineKind::RetractionCredit => book.credited_verdicts(rating::CreditKind::Retraction, offset, limit),
            _ => return Ok((0, Vec::new())),
        };
        Ok((line.count, page))
    }

    /// What each tenant was charged per period, for the periods rated or closed since
    /// the last call (all open ones after a restore).
    pub fn take_charged(&mut self) -> Vec<(String, Period, Charged)> {
        let books = &self.books;
        self.totals.take(|t| books.get(t).map(|b| &b.periods))
    }

    /// From now on, keeps the ids of the verdicts whose periods close (the service
    /// drops them from its in-memory index: the history has them, with their lines,
    /// which `line_of` finds for verdicts that do not carry theirs).
    pub fn track_released(&mut self, line_of: LineLookup) {
        self.released.get_or_insert_with(Vec::new);
        self.line_of = Some(line_of);
    }

    /// The verdicts whose periods closed since the last call.
    pub fn take_released(&mut self) -> Vec<String> {
        self.released.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// From now on, keeps every credit given, for [`Ledger::take_credits`].
    pub fn track_credits(&mut self) {
        self.given.get_or_insert_with(Vec::new);
    }

    /// The credits given since the last call, in the order they were given, with their
    /// tenants.
    pub fn take_credits(&mut self) -> Vec<(String, rating::Credit)> {
        self.given.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The disputes of `tenant`, in the order they were taken.
    pub fn disputes(&self, tenant: &str) -> &[Dispute] {
        self.books.get(tenant).map_or(&[], |b| &b.disputes)
    }

    /// Every credit given to `tenant` (closed periods from the history, open ones from
    /// the books), by time then verdict id.
    pub fn credits(&self, tenant: &str) -> Result<Vec<rating::Credit>, StoreError> {
        let mut all = self.history.store().credits_between(tenant, Nanos::MIN, Nanos::MAX)?;
        all.extend(self.books.get(tenant).into_iter().flat_map(|b| b.periods.values()).flat_map(|p| p.credits.clone()));
        all.sort_by(|a, b| (a.at, &a.verdict_id).cmp(&(b.at, &b.verdict_id)));
        Ok(all)
    }
}

/// The book of `tenant`, made on first use (without a key allocation after that).
fn book_of<'a>(books: &'a mut BTreeMap<String, TenantBook>, tenant: &str) -> &'a mut TenantBook {
    if !books.contains_key(tenant) {
        books.insert(tenant.to_string(), TenantBook::default());
    }
    books.get_mut(tenant).expect("inserted above")
}

#[cfg(test)]
mod tests;
