//! Daily statements: the charges a tenant's verdicts were rated on one UTC day (by
//! `decided_at`) and the credits given that day, each with its verdict and price. It
//! answers "why was acme charged $47.52 on June 12th": the total, then every charge that
//! makes it, each leading to its verdict and that verdict to its events.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;

use super::period::Period;
use super::rating::{Charge, ChargeKind, Credit, CreditKind};
use super::store::StoreError;
use super::Ledger;
use crate::timestamp::{format_rfc3339, parse_rfc3339, Nanos, NANOS_PER_SEC};

/// A UTC day, written `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Day {
    start: Nanos,
}

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_rfc3339(self.start)[..10])
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a day: write it YYYY-MM-DD, like 2026-06-12")]
pub struct DayError(pub String);

impl Day {
    pub fn start(self) -> Nanos {
        self.start
    }

    pub fn end(self) -> Nanos {
        self.start.saturating_add(86_400 * NANOS_PER_SEC)
    }
}

impl FromStr for Day {
    type Err = DayError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let shaped = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shaped {
            return Err(DayError(s.to_string()));
        }
        let start = parse_rfc3339(&format!("{s}T00:00:00Z")).map_err(|_| DayError(s.to_string()))?;
        Ok(Day { start })
    }
}

/// One charge on a statement.
#[derive(Debug, Serialize)]
pub struct StatementCharge {
    pub verdict_id: String,
    pub outcome: String,
    pub kind: ChargeKind,
    pub price: Decimal,
    pub decided_at: String,
}

/// One credit on a statement (its amount is negative, as on the invoice).
#[derive(Debug, Serialize)]
pub struct StatementCredit {
    pub verdict_id: String,
    pub kind: CreditKind,
    pub amount: Decimal,
    pub at: String,
}

/// A tenant's day.
#[derive(Debug, Serialize)]
pub struct Statement {
    pub tenant: String,
    pub day: String,
    pub currency: String,
    /// The sum of the day's charges and credits, unrounded (invoices round per line).
    pub total: Decimal,
    pub charged: Decimal,
    pub credited: Decimal,
    /// Whether the watermark has passed the day's end: until then more may be rated.
    pub complete: bool,
    pub charges: Vec<StatementCharge>,
    pub credits: Vec<StatementCredit>,
}

impl Ledger {
    /// The statement of `tenant` for `day`, as far as the watermark `wm` has rated it:
    /// closed periods from the history, open ones from memory.
    pub fn statement(&self, tenant: &str, day: Day, wm: Nanos) -> Result<Statement, StoreError> {
        let (from, to) = (day.start(), day.end());
        let closed_through = self.closed.get(tenant).and_then(|c| c.through);
        let in_history = |p: Period| closed_through.is_some_and(|c| p <= c);
        let (mut charges, mut credits) = (Vec::new(), Vec::new());
        // A day lies in one period; credits of the day sit in the period of their `at`.
        let p = Period::of(from);
        if in_history(p) {
            charges = self.history.store().charges_between(tenant, from, to)?;
            credits = self.history.store().credits_between(tenant, from, to)?;
        } else if let Some(book) = self.books.get(tenant).and_then(|b| b.periods.get(&p)) {
            charges = book.charges.iter().filter(|c| (from..to).contains(&c.decided_at)).cloned().collect();
            credits = book.credits.iter().filter(|c| (from..to).contains(&c.at)).cloned().collect();
            charges.sort_by(|a, b| (a.decided_at, &a.verdict_id).cmp(&(b.decided_at, &b.verdict_id)));
        }
        Ok(assemble(tenant, &day.to_string(), &self.currency, wm >= to, charges, credits))
    }
}

fn assemble(
    tenant: &str,
    day: &str,
    currency: &str,
    complete: bool,
    charges: Vec<Charge>,
    credits: Vec<Credit>,
) -> Statement {
    let charged: Decimal = charges.iter().map(|c| c.unit_price).sum();
    let credited: Decimal = credits.iter().map(|c| -c.amount).sum();
    Statement {
        tenant: tenant.to_string(),
        day: day.to_string(),
        currency: currency.to_string(),
        total: charged + credited,
        charged,
        credited,
        complete,
        charges: charges
            .into_iter()
            .map(|c| StatementCharge {
                verdict_id: c.verdict_id,
                outcome: c.outcome,
                kind: c.kind,
                price: c.unit_price,
                decided_at: format_rfc3339(c.decided_at),
            })
            .collect(),
        credits: credits
            .into_iter()
            .map(|c| StatementCredit {
                verdict_id: c.verdict_id,
                kind: c.kind,
                amount: -c.amount,
                at: format_rfc3339(c.at),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse_strictly_and_span_24_hours() {
        let d: Day = "2026-06-12".parse().unwrap();
        assert_eq!(d.start(), parse_rfc3339("2026-06-12T00:00:00Z").unwrap());
        assert_eq!(d.end(), parse_rfc3339("2026-06-13T00:00:00Z").unwrap());
        assert_eq!(d.to_string(), "2026-06-12");
        for bad in ["2026-06-31", "2026-13-01", "2026-6-12", "2026/06/12", "2026-06-12T00", "", "abcd-ef-gh"] {
            assert!(bad.parse::<Day>().is_err(), "{bad}");
        }
    }
}
