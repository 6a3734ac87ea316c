//! What outcomes cost to produce, for the margin view: the cost of each model call
//! (`llm.call`: `model`, `cost_usd`, `input_tokens`, `cache_read_tokens`) as the engine
//! applies it to an open conversation, summed per conversation until its verdict, then
//! per tenant, period (the verdict's) and model: cost, calls, conversations, and the
//! prompt-cache hit rate where events carry token counts. Each period also keeps its
//! costliest conversations. Charged amounts come from the ledger; this module holds
//! only cost, so it sits beside the aggregates, fed by the pipeline.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::timestamp::period_str;
use crate::verdicts::Verdict;

/// How many of a period's costliest conversations are kept.
pub const COSTLIEST: usize = 10;
/// The model of a call that names none.
pub const NO_MODEL: &str = "(none)";

/// One model call applied to an open conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelCall {
    pub tenant: String,
    pub conversation: String,
    pub model: String,
    pub cost: Decimal,
    pub input_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
}

/// The attributes of an `llm.call` this module reads; others are ignored.
#[derive(Deserialize)]
struct CallAttrs<'a> {
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    input_tokens: Option<serde_json::Value>,
    #[serde(default)]
    cache_read_tokens: Option<serde_json::Value>,
}

/// A token count: a non-negative integer (as a number or a string); anything else is
/// left out rather than guessed.
fn tokens(v: Option<serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl ModelCall {
    /// The call an `llm.call` event makes, from its raw attributes (`None`: no attributes).
    pub fn of(tenant: &str, conversation: &str, cost: Option<Decimal>, attrs: Option<&str>) -> ModelCall {
        let a = attrs.and_then(|t| serde_json::from_str::<CallAttrs<'_>>(t).ok());
        let (model, input, cached) = match a {
            Some(a) => (a.model.filter(|m| !m.is_empty()), tokens(a.input_tokens), tokens(a.cache_read_tokens)),
            None => (None, None, None),
        };
        ModelCall {
            tenant: tenant.to_string(),
            conversation: conversation.to_string(),
            model: model.map_or_else(|| NO_MODEL.to_string(), |m| m.into_owned()),
            cost: cost.unwrap_or_default(),
            input_tokens: input,
            cache_read_tokens: cached,
        }
    }
}

/// One model's use: in a conversation, or summed over a tenant's period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUse {
    pub calls: u64,
    pub cost: Decimal,
    /// Conversations that called it (in a period's sum).
    pub conversations: u64,
    /// Input tokens of the calls that gave both counts, and how many of them were read
    /// from the prompt cache.
    pub input_tokens: u64,
    pub cache_read_tokens: u64,
}

impl ModelUse {
    fn add_call(&mut self, c: &ModelCall) {
        self.calls += 1;
        self.cost = self.cost.checked_add(c.cost).unwrap_or(Decimal::MAX);
        if let (Some(input), Some(cached)) = (c.input_tokens, c.cache_read_tokens) {
            self.input_tokens = self.input_tokens.saturating_add(input);
            self.cache_read_tokens = self.cache_read_tokens.saturating_add(cached);
        }
    }

    /// Adds the calls counted in `one`.
    fn add_call_use(&mut self, one: &ModelUse) {
        self.calls += one.calls;
        self.cost = self.cost.checked_add(one.cost).unwrap_or(Decimal::MAX);
        self.input_tokens = self.input_tokens.saturating_add(one.input_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(one.cache_read_tokens);
    }

    /// Adds a conversation's use of the model to a period's.
    fn absorb(&mut self, other: &ModelUse) {
        self.add_call_use(other);
        self.conversations += 1;
    }

    /// Cached over input tokens, where calls gave both.
    pub fn cache_hit_rate(&self) -> Option<Decimal> {
        (self.input_tokens > 0).then(|| Decimal::from(self.cache_read_tokens) / Decimal::from(self.input_tokens))
    }
}

/// A conversation among a period's costliest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Costly {
    pub verdict_id: String,
    pub conversation: String,
    pub outcome: String,
    pub cost: Decimal,
    pub billable: bool,
    pub amount: Decimal,
}

/// A tenant's period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodCost {
    pub models: BTreeMap<String, ModelUse>,
    /// Costliest first.
    pub costliest: Vec<Costly>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Margins {
    /// Model use of each open conversation, by (tenant, conversation).
    open: HashMap<(String, String), BTreeMap<String, ModelUse>>,
    /// By tenant, then period.
    periods: BTreeMap<String, BTreeMap<String, PeriodCost>>,
}

impl Margins {
    /// A call the engine applied.
    pub fn call(&mut self, c: ModelCall) {
        let mut used = ModelUse::default();
        used.add_call(&c);
        let models = self.open.entry((c.tenant, c.conversation)).or_default();
        match models.get_mut(&c.model) {
            Some(m) => m.add_call_use(&used),
            None => {
                models.insert(c.model, used);
            }
        }
    }

    /// A verdict: its conversation's calls so far count in its period.
    pub fn verdict(&mut self, v: &Verdict) {
        let mut buf = [0u8; 16];
        let period = period_str(v.decided_at, &mut buf).to_string();
        let p = self.periods.entry(v.tenant.clone()).or_default().entry(period).or_default();
        // A conversation with several outcomes brings its calls with its first verdict.
        if let Some(models) = self.open.remove(&(v.tenant.clone(), v.conversation.clone())) {
            for (model, used) in models {
                p.models.entry(model).or_default().absorb(&used);
            }
        }
        let costlier = p.costliest.len() < COSTLIEST || p.costliest.last().is_some_and(|c| v.cost > c.cost);
        if costlier {
            let c = Costly {
                verdict_id: v.verdict_id.clone(),
                conversation: v.conversation.clone(),
                outcome: v.outcome.clone(),
                cost: v.cost,
                billable: v.billable,
                amount: v.amount,
            };
            let at = p.costliest.partition_point(|x| (x.cost, &x.verdict_id) > (c.cost, &c.verdict_id));
            p.costliest.insert(at, c);
            p.costliest.truncate(COSTLIEST);
        }
    }

    pub fn period(&self, tenant: &str, period: &str) -> Option<&PeriodCost> {
        self.periods.get(tenant)?.get(period)
    }

    /// Conversations with calls and no verdict yet.
    pub fn open_conversations(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(conv: &str, model: &str, cost: &str, attrs: &str) -> ModelCall {
        let attrs = attrs.replace("MODEL", model);
        ModelCall::of("acme", conv, Some(cost.parse().unwrap()), Some(&attrs))
    }

    fn verdict(conv: &str, cost: &str) -> Verdict {
        Verdict {
            verdict_id: format!("v-{conv}"),
            outcome: "ai_resolution".into(),
            tenant: "acme".into(),
            conversation: conv.into(),
            billable: true,
            reason: "resolved".into(),
            tier: Some(1),
            amount: Decimal::new(50, 2),
            currency: "USD".into(),
            cost: cost.parse().unwrap(),
            decided_at: crate::timestamp::parse_rfc3339("2026-06-12T10:00:00Z").unwrap(),
            rule_version: "r".into(),
            events: Default::default(),
            error: None,
        }
    }

    #[test]
    fn calls_count_by_model_in_the_period_of_their_verdict() {
        let mut m = Margins::default();
        let with_cache = r#"{"model":"MODEL","input_tokens":1000,"cache_read_tokens":"600"}"#;
        m.call(call("c1", "gpt-x", "0.02", with_cache));
        m.call(call("c1", "gpt-x", "0.03", r#"{"model":"MODEL","input_tokens":500}"#));
        m.call(call("c1", "small", "0.001", with_cache));
        m.call(call("c2", "gpt-x", "0.05", r#"{"input_tokens":-3,"model":"MODEL"}"#));
        m.call(ModelCall::of("acme", "c3", None, None));
        assert_eq!(m.open_conversations(), 3);
        m.verdict(&verdict("c1", "0.051"));
        m.verdict(&verdict("c2", "0.05"));
        let p = m.period("acme", "2026-06").unwrap();
        let gpt = &p.models["gpt-x"];
        assert_eq!((gpt.calls, gpt.conversations, gpt.cost), (3, 2, "0.10".parse().unwrap()));
        // Only the call with both counts: 600 of 1000 from the cache.
        assert_eq!((gpt.input_tokens, gpt.cache_read_tokens), (1000, 600));
        assert_eq!(gpt.cache_hit_rate(), Some(Decimal::new(6, 1)));
        assert_eq!(p.models["small"].calls, 1);
        assert!(!p.models.contains_key(NO_MODEL), "c3 is still open");
        assert_eq!(m.open_conversations(), 1);
        let ids: Vec<&str> = p.costliest.iter().map(|c| c.conversation.as_str()).collect();
        assert_eq!(ids, ["c1", "c2"]);
    }

    #[test]
    fn only_the_costliest_conversations_are_kept_in_order() {
        let mut m = Margins::default();
        for i in 0..30 {
            m.verdict(&verdict(&format!("c{i:02}"), &format!("0.{i:02}")));
        }
        let p = m.period("acme", "2026-06").unwrap();
        let costs: Vec<String> = p.costliest.iter().map(|c| c.cost.to_string()).collect();
        assert_eq!(costs, ["0.29", "0.28", "0.27", "0.26", "0.25", "0.24", "0.23", "0.22", "0.21", "0.20"]);
    }
}
