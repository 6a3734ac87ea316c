//! What each tenant has been charged per period so far, beside the list amounts of
//! `/v1/usage`: the sum of the charges rated (included ones at zero) and of the credits
//! given. Kept up incrementally (each publication adds only what was rated since) so
//! that it can be published after every batch; a closed period's totals are final and
//! kept in the history.

use std::collections::{BTreeSet, HashMap};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::period::Period;
use super::rating::PeriodBook;

/// A tenant's charges and credits in one period, unrounded (invoices round per line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charged {
    /// How many charges (one per billable verdict rated).
    pub charges: u64,
    /// Their sum.
    pub charged: Decimal,
    pub credits: u64,
    /// The sum of the credits given, as a positive amount.
    pub credited: Decimal,
}

impl Charged {
    /// Adds what `book` holds beyond what is already counted (books only grow while open).
    fn catch_up(&mut self, book: &PeriodBook) {
        let (c, r) = (self.charges as usize, self.credits as usize);
        self.charged += book.charges.get(c..).unwrap_or_default().iter().map(|x| x.unit_price).sum::<Decimal>();
        self.credited += book.credits.get(r..).unwrap_or_default().iter().map(|x| x.amount).sum::<Decimal>();
        self.charges = book.charges.len() as u64;
        self.credits = book.credits.len() as u64;
    }

    /// The totals of a whole book.
    pub fn of(book: &PeriodBook) -> Charged {
        let mut c = Charged::default();
        c.catch_up(book);
        c
    }
}

/// The running totals of open periods, and what changed since the last publication.
/// Not checkpointed: after a restore every open book is counted again once.
#[derive(Default)]
pub struct Totals {
    open: HashMap<(String, Period), Charged>,
    /// Tenants rated since the last publication.
    touched: BTreeSet<String>,
    /// Periods closed since the last publication, with their final totals.
    closed: Vec<(String, Period, Charged)>,
}

impl Totals {
    pub fn touch(&mut self, tenant: &str) {
        if !self.touched.contains(tenant) {
            self.touched.insert(tenant.to_string());
        }
    }

    /// Every tenant of `tenants` is to be published (after a restore).
    pub fn touch_all<'a>(&mut self, tenants: impl IntoIterator<Item = &'a String>) {
        self.touched.extend(tenants.into_iter().cloned());
    }

    /// `tenant`'s period `p` closed with `book`: its totals are final.
    pub fn close(&mut self, tenant: &str, p: Period, book: &PeriodBook) -> Charged {
        let mut c = self.open.remove(&(tenant.to_string(), p)).unwrap_or_default();
        c.catch_up(book);
        self.closed.push((tenant.to_string(), p, c.clone()));
        c
    }

    /// What changed since the last call: the open periods of the tenants touched (from
    /// `books`), and the periods closed.
    pub fn take<'a>(
        &mut self,
        book_of: impl Fn(&str) -> Option<&'a std::collections::BTreeMap<Period, PeriodBook>>,
    ) -> Vec<(String, Period, Charged)> {
        let mut out = std::mem::take(&mut self.closed);
        for tenant in std::mem::take(&mut self.touched) {
            let Some(periods) = book_of(&tenant) else { continue };
            for (p, book) in periods {
                let c = self.open.entry((tenant.clone(), *p)).or_default();
                c.catch_up(book);
                out.push((tenant.clone(), *p, c.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::rating::{Charge, ChargeKind, Credit, CreditKind};
    use std::collections::BTreeMap;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn charge(id: &str, price: Decimal) -> Charge {
        Charge { verdict_id: id.into(), outcome: "o".into(), kind: ChargeKind::Usage, unit_price: price, decided_at: 0 }
    }

    #[test]
    fn totals_add_only_what_was_rated_since_and_close_final() {
        let p = Period(24_000);
        let mut books = BTreeMap::new();
        books.insert(p, PeriodBook::default());
        let mut t = Totals::default();
        books.get_mut(&p).unwrap().charges.push(charge("a", d("0.90")));
        t.touch("acme");
        let got = t.take(|_| Some(&books));
        assert_eq!(got, vec![("acme".into(), p, Charged { charges: 1, charged: d("0.90"), ..Default::default() })]);
        assert!(t.take(|_| Some(&books)).is_empty(), "nothing touched, nothing published");
        let book = books.get_mut(&p).unwrap();
        book.charges.push(charge("b", d("1.25")));
        book.credits.push(Credit { verdict_id: "a".into(), kind: CreditKind::Dispute, amount: d("0.90"), at: 1 });
        t.touch("acme");
        let want = Charged { charges: 2, charged: d("2.15"), credits: 1, credited: d("0.90") };
        assert_eq!(t.take(|_| Some(&books)), vec![("acme".into(), p, want.clone())]);
        assert_eq!(Charged::of(&books[&p]), want);
        assert_eq!(t.close("acme", p, &books[&p]), want);
        assert_eq!(t.take(|_| None), vec![("acme".into(), p, want)]);
    }
}
