//! Plans: `plans.toml` in the rules directory (SPEC 8.1). A plan is a contract form
//! (platform fee, included outcomes, overage, committed minimum, price lock, outcome
//! guarantee, margin floor, dispute window); a tenant is assigned plans from given
//! periods on. A tenant with no assignment pays per outcome (`payg`, the built-in plan
//! with no keys). Parsed strictly: unknown keys, floats and negative amounts are refused
//! with the line they are on.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::period::Period;
use crate::money::Price;
use crate::timestamp::{Nanos, Span};

/// The name of the plans file in a rules directory.
pub const PLANS_FILE: &str = "plans.toml";
/// The built-in plan: pay per outcome at the verdict's price, nothing else.
pub const PAYG: &str = "payg";
/// How long after `decided_at` a verdict may be disputed when the plan does not say.
pub const DEFAULT_DISPUTE_WINDOW: Span = Span::from_hours(24 * 60);
/// How long an open dispute waits for its review before it is overdue, by default.
pub const DEFAULT_DISPUTE_REVIEW: Span = Span::from_hours(48);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansFile {
    #[serde(default)]
    plans: BTreeMap<String, PlanFile>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    platform_fee: Option<Price>,
    #[serde(default)]
    included: BTreeMap<String, u64>,
    #[serde(default)]
    overage: BTreeMap<String, Price>,
    minimum: Option<Price>,
    cap: Option<Price>,
    cap_periods: Option<u32>,
    #[serde(default)]
    sla: BTreeMap<String, SlaFile>,
    margin_floor: Option<Price>,
    dispute_window: Option<Span>,
    dispute_review: Option<Span>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlaFile {
    min_rate: Price,
    credit: Price,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    #[serde(default)]
    assignments: Vec<AssignmentFile>,
    /// The tenant's id in a billing platform, for exports.
    external_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignmentFile {
    plan: String,
    from: String,
}

/// An outcome guarantee: when billable verdicts of the outcome are fewer than
/// `min_rate` of all its verdicts in a period, `credit` of its charges is given back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Sla {
    pub min_rate: Decimal,
    pub credit: Decimal,
}

/// One plan; every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    /// Charged once per period, in full.
    pub platform_fee: Option<Decimal>,
    /// Billable outcomes per period at no charge, by outcome.
    pub included: BTreeMap<String, u64>,
    /// The price beyond `included`, by outcome; absent: the verdict's own amount.
    pub overage: BTreeMap<String, Decimal>,
    /// Committed spend per period.
    pub minimum: Option<Decimal>,
    /// Price lock: the subtotal never exceeds this...
    pub cap: Option<Decimal>,
    /// ...in the first this many periods of the assignment (every period when absent).
    pub cap_periods: Option<u32>,
    pub sla: BTreeMap<String, Sla>,
    /// For alerting only; no effect on amounts.
    pub margin_floor: Option<Decimal>,
    pub dispute_window: Span,
}

impl Plan {
    fn payg() -> Plan {
        Plan { name: PAYG.into(), dispute_window: DEFAULT_DISPUTE_WINDOW, ..Plan::default() }
    }

    /// Whether the tenant owes something for the period even with no verdict in it.
    pub fn bills_idle_periods(&self) -> bool {
        self.platform_fee.is_some() || self.minimum.is_some()
    }
}

/// A plan assigned from a period on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Assignment {
    pub plan: String,
    pub from: Period,
}

/// A tenant's contract: its assignments, by `from`, and its billing-platform id.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct TenantPlans {
    pub assignments: Vec<Assignment>,
    pub external_id: Option<String>,
}

/// Everything `plans.toml` says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct PlanBook {
    pub plans: BTreeMap<String, Plan>,
    pub tenants: BTreeMap<String, TenantPlans>,
    /// How long a dispute may stay open before its review is overdue, by plan (absent:
    /// [`DEFAULT_DISPUTE_REVIEW`]). It changes no amount, so it is kept outside the
    /// terms a checkpoint holds to check closed periods against.
    #[serde(skip)]
    pub reviews: BTreeMap<String, Span>,
}

impl Default for PlanBook {
    fn default() -> Self {
        PlanBook {
            plans: BTreeMap::from([(PAYG.to_string(), Plan::payg())]),
            tenants: BTreeMap::new(),
            reviews: BTreeMap::new(),
        }
    }
}

/// Why a plans file was refused: what, and the line when known.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    pub line: Option<usize>,
    pub message: String,
}

/// The first line of `text` at or after line `from` (1-based) that holds `needle`.
fn line_of(text: &str, needle: &str, from: Option<usize>) -> Option<usize> {
    let skip = from.unwrap_or(1).saturating_sub(1);
    text.lines().enumerate().skip(skip).find(|(_, l)| l.contains(needle)).map(|(i, _)| i + 1)
}

impl PlanBook {
    /// Parses the text of a plans file. `outcomes` are the outcome names the rules
    /// define: a plan that names another is refused.
    pub fn parse(text: &str, outcomes: &[&str]) -> Result<PlanBook, PlanError> {
        let raw: PlansFile = toml::from_str(text).map_err(|e| PlanError {
            line: crate::rules::toml_error_line(text, &e),
            message: e.message().to_string(),
        })?;
        let mut book = PlanBook::default();
        for (name, p) in raw.plans {
            let section = line_of(text, &format!("[plans.{name}"), None);
            let err =
                |needle: &str, message: String| PlanError { line: line_of(text, needle, section).or(section), message };
            if name == PAYG {
                return Err(err(
                    "[plans.",
                    format!("[plans.{PAYG}]: `{PAYG}` is the built-in plan with no keys; give yours another name"),
                ));
            }
            for outcome in p.included.keys().chain(p.overage.keys()).chain(p.sla.keys()) {
                if !outcomes.contains(&outcome.as_str()) {
                    return Err(err(
                        outcome,
                        format!("[plans.{name}]: no outcome `{outcome}` (the rules define {})", outcomes.join(", ")),
                    ));
                }
            }
            for (outcome, s) in &p.sla {
                for (key, v) in [("min_rate", s.min_rate.0), ("credit", s.credit.0)] {
                    if v > Decimal::ONE {
                        return Err(err(
                            key,
                            format!("[plans.{name}] sla.{outcome}.{key} = {v}: a fraction from 0 to 1"),
                        ));
                    }
                }
            }
            if p.cap_periods.is_some() && p.cap.is_none() {
                return Err(err("cap_periods", format!("[plans.{name}]: cap_periods without a cap")));
            }
            if p.cap_periods == Some(0) {
                return Err(err(
                    "cap_periods",
                    format!("[plans.{name}]: cap_periods = 0 locks no period; leave out the cap"),
                ));
            }
            let plan = Plan {
                name: name.clone(),
                platform_fee: p.platform_fee.map(|a| a.0),
                included: p.included,
                overage: p.overage.into_iter().map(|(k, v)| (k, v.0)).collect(),
                minimum: p.minimum.map(|a| a.0),
                cap: p.cap.map(|a| a.0),
                cap_periods: p.cap_periods,
                sla: p.sla.into_iter().map(|(k, s)| (k, Sla { min_rate: s.min_rate.0, credit: s.credit.0 })).collect(),
                margin_floor: p.margin_floor.map(|a| a.0),
                dispute_window: p.dispute_window.unwrap_or(DEFAULT_DISPUTE_WINDOW),
            };
            if let Some(review) = p.dispute_review {
                book.reviews.insert(name.clone(), review);
            }
            book.plans.insert(name, plan);
        }
        for (tenant, t) in raw.tenants {
            let section = line_of(text, &format!("[tenants.{tenant}]"), None);
            let err =
                |needle: &str, message: String| PlanError { line: line_of(text, needle, section).or(section), message };
            let mut assignments: Vec<Assignment> = Vec::new();
            for a in t.assignments {
                let from: Period = a.from.parse().map_err(|e: super::period::PeriodError| {
                    err(&format!("\"{}\"", a.from), format!("[tenants.{tenant}] assignment from: {e}"))
                })?;
                if !book.plans.contains_key(&a.plan) {
                    let known: Vec<&str> = book.plans.keys().map(String::as_str).collect();
                    return Err(err(
                        &format!("\"{}\"", a.plan),
                        format!("[tenants.{tenant}]: no plan `{}` (plans: {})", a.plan, known.join(", ")),
                    ));
                }
                if assignments.iter().any(|x| x.from == from) {
                    return Err(err(
                        &format!("\"{}\"", a.from),
                        format!("[tenants.{tenant}]: two assignments from {from}"),
                    ));
                }
                assignments.push(Assignment { plan: a.plan, from });
            }
            assignments.sort_by_key(|a| a.from);
            if t.external_id.as_deref().is_some_and(str::is_empty) {
                return Err(err("external_id", format!("[tenants.{tenant}]: external_id is empty")));
            }
            book.tenants.insert(tenant, TenantPlans { assignments, external_id: t.external_id });
        }
        Ok(book)
    }

    /// The plan of `tenant` in `period` and the period its assignment started (`None`
    /// for the built-in `payg` of a tenant with no assignment in force).
    pub fn plan_for(&self, tenant: &str, period: Period) -> (&Plan, Option<Period>) {
        let assigned = self.tenants.get(tenant).and_then(|t| t.assignments.iter().rev().find(|a| a.from <= period));
        match assigned.and_then(|a| self.plans.get(&a.plan).map(|p| (p, a.from))) {
            Some((p, from)) => (p, Some(from)),
            None => (&self.plans[PAYG], None),
        }
    }

    /// The first period `tenant` is assigned a plan that bills idle periods, if any.
    pub fn first_billed_period(&self, tenant: &str) -> Option<Period> {
        let t = self.tenants.get(tenant)?;
        t.assignments.iter().find(|a| self.plans.get(&a.plan).is_some_and(Plan::bills_idle_periods)).map(|a| a.from)
    }

    /// Why `new` cannot replace these plans when every period up to `through` is closed:
    /// some tenant's plan, or its terms, would differ in a closed period. `None` when it can.
    pub fn changes_closed(&self, new: &PlanBook, through: Period) -> Option<String> {
        let tenants: std::collections::BTreeSet<&String> = self.tenants.keys().chain(new.tenants.keys()).collect();
        for tenant in tenants {
            let first = [self, new]
                .iter()
                .filter_map(|b| b.tenants.get(tenant.as_str())?.assignments.first().map(|a| a.from))
                .min();
            let Some(mut p) = first else { continue };
            while p <= through {
                let (was, now) = (self.plan_for(tenant, p), new.plan_for(tenant, p));
                if was != now {
                    return Some(format!(
                        "{PLANS_FILE}: tenant {tenant}'s plan for {p}, a closed period, would change ({} to {}); \
                         invoices of closed periods are final: assign a new plan from an open period instead",
                        was.0.name, now.0.name
                    ));
                }
                p = p.next();
            }
        }
        None
    }

    pub fn external_id(&self, tenant: &str) -> Option<&str> {
        self.tenants.get(tenant)?.external_id.as_deref()
    }

    /// When the review of a dispute opened at `opened_at` is due: the plan of that
    /// period's `dispute_review` after it.
    pub fn review_due(&self, tenant: &str, opened_at: Nanos) -> Nanos {
        let (plan, _) = self.plan_for(tenant, Period::of(opened_at));
        opened_at.saturating_add(self.reviews.get(&plan.name).unwrap_or(&DEFAULT_DISPUTE_REVIEW).0)
    }

    /// How long after `decided_at` a verdict decided then may be disputed.
    pub fn dispute_deadline(&self, tenant: &str, decided_at: Nanos) -> Nanos {
        let (plan, _) = self.plan_for(tenant, Period::of(decided_at));
        decided_at.saturating_add(plan.dispute_window.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const EXAMPLE: &str = r#"
[plans.growth]
platform_fee = "1500.00"
included = { ai_resolution = 1000 }
overage = { ai_resolution = "0.75" }
minimum = "2000.00"
cap = "1800.00"
cap_periods = 3
sla = { ai_resolution = { min_rate = "0.50", credit = "0.10" } }
margin_floor = "0.60"
dispute_window = "30d"
dispute_review = "24h"

[tenants.acme]
assignments = [ { plan = "payg", from = "2026-01" }, { plan = "growth", from = "2026-06" } ]
external_id = "cus_acme"
"#;

    fn p(s: &str) -> Period {
        s.parse().unwrap()
    }

    #[test]
    fn every_key_of_the_spec_example_and_assignments_by_period() {
        let book = PlanBook::parse(EXAMPLE, &["ai_resolution"]).unwrap();
        let g = &book.plans["growth"];
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        assert_eq!(g.platform_fee, Some(d("1500.00")));
        assert_eq!(g.included["ai_resolution"], 1000);
        assert_eq!(g.overage["ai_resolution"], d("0.75"));
        assert_eq!((g.minimum, g.cap, g.cap_periods), (Some(d("2000.00")), Some(d("1800.00")), Some(3)));
        assert_eq!(g.sla["ai_resolution"], Sla { min_rate: d("0.50"), credit: d("0.10") });
        assert_eq!(g.margin_floor, Some(d("0.60")));
        assert_eq!(g.dispute_window, "30d".parse().unwrap());
        assert_eq!(book.plan_for("acme", p("2025-12")).0.name, PAYG);
        assert_eq!(book.plan_for("acme", p("2026-05")), (&book.plans[PAYG], Some(p("2026-01"))));
        assert_eq!(book.plan_for("acme", p("2026-06")), (g, Some(p("2026-06"))));
        assert_eq!(book.plan_for("acme", p("2027-06")).0.name, "growth");
        assert_eq!(book.plan_for("other", p("2026-06")), (&book.plans[PAYG], None));
        assert_eq!(book.first_billed_period("acme"), Some(p("2026-06")));
        assert_eq!(book.external_id("acme"), Some("cus_acme"));
        assert_eq!(book.plans[PAYG].dispute_window, DEFAULT_DISPUTE_WINDOW);
        let june = crate::timestamp::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
        let hours = |h: i64| h * 3_600_000_000_000;
        assert_eq!(book.review_due("acme", june), june + hours(24), "growth reviews within 24h");
        assert_eq!(book.review_due("acme", june - hours(48)), june, "payg in May: the default 48h");
    }

    #[test]
    fn an_edit_that_changes_a_closed_period_is_found() {
        let old = PlanBook::parse(EXAMPLE, &["ai_resolution"]).unwrap();
        let later = EXAMPLE.replace("from = \"2026-06\"", "from = \"2026-08\"");
        let moved = PlanBook::parse(&later, &["ai_resolution"]).unwrap();
        assert_eq!(old.changes_closed(&moved, p("2026-05")), None, "June and July are still open");
        let e = old.changes_closed(&moved, p("2026-06")).unwrap();
        assert!(e.contains("tenant acme's plan for 2026-06") && e.contains("growth to payg"), "{e}");
        let pricier = PlanBook::parse(&EXAMPLE.replace("\"0.75\"", "\"0.80\""), &["ai_resolution"]).unwrap();
        assert!(old.changes_closed(&pricier, p("2026-06")).is_some(), "its terms changed in a closed period");
        assert_eq!(old.changes_closed(&pricier, p("2026-05")), None);
    }

    #[test]
    fn bad_plans_are_refused_with_their_line() {
        let cases = [
            ("[plans.a]\nplatform_fee = 1500.0\n", 2, "not exact"),
            ("[plans.a]\nplatform_fee = \"-1\"\n", 2, "negative"),
            ("[plans.a]\nplatfrom_fee = \"1\"\n", 2, "unknown field"),
            ("[plans.a]\nincluded = { ai_resolution = -3 }\n", 2, "invalid value"),
            ("[plans.a]\n\noverage = { lead = \"1\" }\n", 3, "no outcome `lead`"),
            ("[plans.a]\ncap_periods = 2\n", 2, "without a cap"),
            ("[plans.a]\nsla = { ai_resolution = { min_rate = \"1.5\", credit = \"0.1\" } }\n", 2, "fraction"),
            ("[plans.payg]\nminimum = \"1\"\n", 1, "built-in"),
            ("[tenants.acme]\nassignments = [ { plan = \"gold\", from = \"2026-01\" } ]\n", 2, "no plan `gold`"),
            ("[tenants.acme]\nassignments = [ { plan = \"payg\", from = \"2026-13\" } ]\n", 2, "YYYY-MM"),
            ("[plans.a]\ndispute_window = \"sixty days\"\n", 2, "invalid duration"),
        ];
        for (text, line, cause) in cases {
            let e = PlanBook::parse(text, &["ai_resolution"]).unwrap_err();
            assert!(e.message.contains(cause), "{text:?}: {}", e.message);
            assert_eq!(e.line, Some(line), "{text:?}: {}", e.message);
        }
    }
}
