//! The margin view of a tenant's period (`GET /v1/margins`): what was charged (the
//! invoice's lines), credited and spent (the cost of its decided conversations), the
//! margin and its ratio against the plan's `margin_floor`, per outcome; the cost by
//! model with the prompt-cache hit rate; and the costliest conversations.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::aggregates::Usage;
use crate::ledger::invoice::{Invoice, LineKind, Status};
use crate::margins::{Costly, PeriodCost};

#[derive(Debug, Serialize)]
pub struct MarginView {
    pub tenant: String,
    pub period: String,
    pub currency: String,
    /// The invoice's status (`draft`, `final`), `null` with no invoice.
    pub invoice: Option<String>,
    pub invoice_total: Option<Decimal>,
    /// Charged for outcomes (usage and overage lines).
    pub charged: Decimal,
    /// Given back (dispute and retraction credits), as a positive amount.
    pub credited: Decimal,
    pub cost: Decimal,
    /// `charged - credited - cost`.
    pub margin: Decimal,
    /// `margin / (charged - credited)`; `null` while nothing is charged.
    pub margin_ratio: Option<Decimal>,
    pub margin_floor: Option<Decimal>,
    pub below_floor: bool,
    pub outcomes: Vec<OutcomeMargin>,
    pub models: Vec<ModelCost>,
    pub costliest: Vec<Costly>,
}

#[derive(Debug, Serialize)]
pub struct OutcomeMargin {
    pub outcome: String,
    pub billable: u64,
    pub charged: Decimal,
    pub cost: Decimal,
    pub margin: Decimal,
    pub margin_ratio: Option<Decimal>,
}

#[derive(Debug, Serialize)]
pub struct ModelCost {
    pub model: String,
    pub conversations: u64,
    pub calls: u64,
    pub cost: Decimal,
    pub input_tokens: u64,
    pub cache_read_tokens: u64,
    /// Cached over input tokens of the calls that gave both; `null` without them.
    pub cache_hit_rate: Option<Decimal>,
}

fn ratio(margin: Decimal, over: Decimal) -> Option<Decimal> {
    (over > Decimal::ZERO).then(|| (margin / over).round_dp(4))
}

/// Builds the view from the period's invoice, usage and model costs.
pub fn margin_view(
    tenant: &str,
    period: &str,
    invoice: Option<&Invoice>,
    usage: Option<&Usage>,
    costs: Option<&PeriodCost>,
    margin_floor: Option<Decimal>,
    currency: &str,
) -> MarginView {
    let mut outcomes: Vec<OutcomeMargin> = Vec::new();
    let mut credited = Decimal::ZERO;
    let outcome = |name: &str, outcomes: &mut Vec<OutcomeMargin>| -> usize {
        match outcomes.iter().position(|o| o.outcome == name) {
            Some(i) => i,
            None => {
                let zero = Decimal::ZERO;
                let o = OutcomeMargin {
                    outcome: name.to_string(),
                    billable: 0,
                    charged: zero,
                    cost: zero,
                    margin: zero,
                    margin_ratio: None,
                };
                outcomes.push(o);
                outcomes.len() - 1
            }
        }
    };
    for line in invoice.map(|i| i.lines.as_slice()).unwrap_or_default() {
        match (line.kind, &line.outcome) {
            (LineKind::Usage | LineKind::Overage, Some(o)) => {
                let i = outcome(o, &mut outcomes);
                outcomes[i].charged += line.amount;
            }
            (LineKind::DisputeCredit | LineKind::RetractionCredit, _) => credited -= line.amount,
            _ => {}
        }
    }
    for (name, u) in usage.map(|u| &u.outcomes).into_iter().flatten() {
        let i = outcome(name, &mut outcomes);
        outcomes[i].cost = u.cost;
        outcomes[i].billable = u.billable.values().map(|t| t.count).sum();
    }
    for o in &mut outcomes {
        o.margin = o.charged - o.cost;
        o.margin_ratio = ratio(o.margin, o.charged);
    }
    let charged: Decimal = outcomes.iter().map(|o| o.charged).sum();
    let cost = usage.map_or(Decimal::ZERO, |u| u.cost);
    let margin = charged - credited - cost;
    let margin_ratio = ratio(margin, charged - credited);
    let models = costs
        .map(|c| &c.models)
        .into_iter()
        .flatten()
        .map(|(model, u)| ModelCost {
            model: model.clone(),
            conversations: u.conversations,
            calls: u.calls,
            cost: u.cost,
            input_tokens: u.input_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_hit_rate: u.cache_hit_rate().map(|r| r.round_dp(4)),
        })
        .collect();
    MarginView {
        tenant: tenant.to_string(),
        period: period.to_string(),
        currency: currency.to_string(),
        invoice: invoice.map(|i| if i.status == Status::Final { "final" } else { "draft" }.to_string()),
        invoice_total: invoice.map(|i| i.total),
        charged,
        credited,
        cost,
        margin,
        margin_ratio,
        margin_floor,
        below_floor: matches!((margin_ratio, margin_floor), (Some(r), Some(f)) if r < f),
        outcomes,
        models,
        costliest: costs.map(|c| c.costliest.clone()).unwrap_or_default(),
    }
}
