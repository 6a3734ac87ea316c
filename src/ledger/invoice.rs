//! Invoices (SPEC 8.4): a tenant's period as lines, in the spec's order, each rounded to
//! the currency's minor unit half to even, the total the sum of the rounded lines. A
//! line is left out when it is 0 and nothing was counted. Every line that comes from
//! verdicts leads to them: [`Invoice::compute`] counts them, and the ledger lists them
//! (a page at a time, or all for `verdict invoice`).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::period::Period;
use super::plans::Plan;
use super::rating::{ChargeKind, CreditKind, PeriodBook};
use crate::money::round_minor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The period is open: every line as if it closed now.
    Draft,
    /// Closed (the watermark passed its end): numbered and immutable.
    Final,
}

/// The kinds of invoice lines, in the order they appear (SPEC 8.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    PlatformFee,
    Included,
    Usage,
    Overage,
    MinimumTrueUp,
    PriceLock,
    SlaCredit,
    DisputeCredit,
    RetractionCredit,
    PrepaidCredit,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::PlatformFee => "platform_fee",
            LineKind::Included => "included",
            LineKind::Usage => "usage",
            LineKind::Overage => "overage",
            LineKind::MinimumTrueUp => "minimum_true_up",
            LineKind::PriceLock => "price_lock",
            LineKind::SlaCredit => "sla_credit",
            LineKind::DisputeCredit => "dispute_credit",
            LineKind::RetractionCredit => "retraction_credit",
            LineKind::PrepaidCredit => "prepaid_credit",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub kind: LineKind,
    pub outcome: Option<String>,
    pub unit_price: Option<Decimal>,
    pub count: u64,
    pub amount: Decimal,
    /// The verdicts behind the line (charges, or the charges credited), where listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<String>,
}

/// An invoice as SPEC 8.4 writes it (JSON: a closed one is kept as its JSON text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub number: String,
    pub tenant: String,
    pub period: String,
    pub status: Status,
    pub currency: String,
    pub plan: String,
    pub lines: Vec<Line>,
    pub total: Decimal,
    /// The prepaid balance after this invoice (drawn and topped up at the close).
    pub prepaid_balance: Decimal,
}

/// What an invoice needs besides the period's book.
pub struct Terms<'a> {
    pub tenant: &'a str,
    pub period: Period,
    pub plan: &'a Plan,
    /// The period the plan's assignment started, for the price lock.
    pub assigned_from: Option<Period>,
    pub currency: &'a str,
    /// The prepaid balance at the close: every grant before the period's end, less what
    /// earlier invoices drew.
    pub balance: Decimal,
    pub status: Status,
}

impl Invoice {
    /// The invoice of one period, with the prepaid balance after it.
    pub fn compute(book: &PeriodBook, t: &Terms<'_>) -> Invoice {
        let round = |d: Decimal| round_minor(d, t.currency);
        let mut lines: Vec<Line> = Vec::new();
        let push = |lines: &mut Vec<Line>,
                    kind: LineKind,
                    outcome: Option<&str>,
                    unit: Option<Decimal>,
                    count: u64,
                    amount: Decimal| {
            let amount = round(amount);
            if count > 0 || !amount.is_zero() {
                lines.push(Line {
                    kind,
                    outcome: outcome.map(str::to_string),
                    unit_price: unit,
                    count,
                    amount,
                    verdicts: Vec::new(),
                });
            }
        };
        if let Some(fee) = t.plan.platform_fee {
            push(&mut lines, LineKind::PlatformFee, None, Some(fee), 1, fee);
        }
        // Charges grouped: included and overage per outcome, usage per outcome and price.
        let groups = book.groups();
        for wanted in [ChargeKind::Included, ChargeKind::Usage, ChargeKind::Overage] {
            for ((kind, outcome, unit), n) in groups.counts.iter().filter(|((k, _, _), _)| *k == wanted) {
                let name = match kind {
                    ChargeKind::Included => LineKind::Included,
                    ChargeKind::Usage => LineKind::Usage,
                    ChargeKind::Overage => LineKind::Overage,
                };
                push(&mut lines, name, Some(outcome), Some(*unit), *n, *unit * Decimal::from(*n));
            }
        }
        let sum = |lines: &[Line]| lines.iter().map(|l| l.amount).sum::<Decimal>();
        let s = sum(&lines);
        let true_up = t.plan.minimum.map_or(Decimal::ZERO, |m| (m - s).max(Decimal::ZERO));
        if t.plan.minimum.is_some() {
            push(&mut lines, LineKind::MinimumTrueUp, None, None, 0, true_up);
        }
        if let (Some(cap), Some(from)) = (t.plan.cap, t.assigned_from) {
            let locked = t.plan.cap_periods.is_none_or(|n| t.period.0 < from.0.saturating_add(n));
            if locked {
                let over = (s + round(true_up) - cap).max(Decimal::ZERO);
                push(&mut lines, LineKind::PriceLock, None, None, 0, -over);
            }
        }
        for (outcome, sla) in &t.plan.sla {
            let (all, billable) = book.counts.get(outcome).copied().unwrap_or((0, 0));
            if all == 0 || Decimal::from(billable) >= sla.min_rate * Decimal::from(all) {
                continue;
            }
            let charged: Decimal = groups
                .counts
                .iter()
                .filter(|((_, o, _), _)| o == outcome)
                .map(|((_, _, unit), n)| *unit * Decimal::from(*n))
                .sum();
            push(&mut lines, LineKind::SlaCredit, Some(outcome), None, 0, -(sla.credit * charged));
        }
        for (kind, name) in
            [(CreditKind::Dispute, LineKind::DisputeCredit), (CreditKind::Retraction, LineKind::RetractionCredit)]
        {
            let credited = book.credits.iter().filter(|c| c.kind == kind);
            let (n, amount) = credited.fold((0u64, Decimal::ZERO), |(n, a), c| (n + 1, a + c.amount));
            push(&mut lines, name, None, None, n, -amount);
        }
        let total_before = sum(&lines);
        let mut balance = t.balance;
        if total_before > Decimal::ZERO {
            let drawn = balance.min(total_before);
            push(&mut lines, LineKind::PrepaidCredit, None, None, 0, -drawn);
            balance -= round(drawn);
        } else {
            // A negative total is owed to the tenant: it goes to the prepaid balance.
            balance -= total_before;
        }
        let total = round(sum(&lines).max(Decimal::ZERO));
        Invoice {
            number: format!("INV-{}-{}", t.tenant, t.period),
            tenant: t.tenant.to_string(),
            period: t.period.to_string(),
            status: t.status,
            currency: t.currency.to_string(),
            plan: t.plan.name.clone(),
            lines,
            total,
            prepaid_balance: balance,
        }
    }
}

/// How invoices are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A JSON array of invoices (SPEC 8.4).
    Json,
    /// One row per line, with the invoice's number, tenant, period, status and total.
    Csv,
}

/// Writes `invoices` to `path` (stdout when `None`).
pub fn write(invoices: &[Invoice], format: Format, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut out: Box<dyn Write> = match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, invoices)?;
            writeln!(out)?;
        }
        Format::Csv => out.write_all(to_csv(invoices).as_bytes())?,
    }
    out.flush().context("writing invoices")
}

/// Invoices as CSV: one row per line, the invoice's fields repeated on each.
pub fn to_csv(invoices: &[Invoice]) -> String {
    let mut s = String::from("number,tenant,period,status,currency,plan,kind,outcome,unit_price,count,amount,total\n");
    let field = |v: &str| {
        if v.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_string()
        }
    };
    for i in invoices {
        let status = match i.status {
            Status::Draft => "draft",
            Status::Final => "final",
        };
        for l in &i.lines {
            let row = [
                field(&i.number),
                field(&i.tenant),
                i.period.clone(),
                status.to_string(),
                field(&i.currency),
                field(&i.plan),
                l.kind.as_str().to_string(),
                field(l.outcome.as_deref().unwrap_or("")),
                l.unit_price.map(|d| d.to_string()).unwrap_or_default(),
                l.count.to_string(),
                l.amount.to_string(),
                i.total.to_string(),
            ];
            s.push_str(&row.join(","));
            s.push('\n');
        }
    }
    s
}
