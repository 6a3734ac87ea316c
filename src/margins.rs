//! What outcomes cost to produce, for the margin view: the cost of each model call
//! (`llm.call`: `model`, `cost_usd`, `input_tokens`, `cache_read_tokens`) as the engine
//! applies it to an open conversation, summed per conversation until its verdict, then
//! per tenant, period (the verdict's) and model: cost, calls, conversations, and the
//! prompt-cache hit rate where events carry token counts. Each period also keeps its
//! costliest conversations. Charged amounts come from the ledger; this module holds
//! only cost. The engine feeds it, calls and verdicts in the order it makes them, with
//! borrowed strings (nothing is allocated per call once a conversation and model are
//! known); its owner checkpoints it.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::timestamp::period_str;
use crate::verdicts::Verdict;

/// How many of a period's costliest conversations are kept.
pub const COSTLIEST: usize = 10;
/// The model of a call that names none.
pub const NO_MODEL: &str = "(none)";

/// The attributes of an `llm.call` this module reads; others are ignored.
struct CallAttrs<'a> {
    model: Option<std::borrow::Cow<'a, str>>,
    /// Raw JSON text.
    input_tokens: Option<&'a str>,
    cache_read_tokens: Option<&'a str>,
}

/// The same, the careful way.
#[derive(Deserialize)]
struct Careful<'a> {
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    input_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cache_read_tokens: Option<&'a RawValue>,
}

impl<'a> CallAttrs<'a> {
    /// The members read, picked out in one pass (a model name with an escape, or
    /// attributes that are not a plain object, take the careful way).
    fn read(attrs: &'a str) -> Option<CallAttrs<'a>> {
        let mut a = CallAttrs { model: None, input_tokens: None, cache_read_tokens: None };
        let mut plain = true;
        let picked = crate::decode::members::members(attrs, |key, value| match key {
            "model" => match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(m) if !m.contains('\\') => a.model = Some(std::borrow::Cow::Borrowed(m)),
                Some(_) => plain = false,
                None => a.model = None,
            },
            "input_tokens" => a.input_tokens = Some(value),
            "cache_read_tokens" => a.cache_read_tokens = Some(value),
            _ => {}
        });
        match picked {
            Some(()) if plain => Some(a),
            _ => serde_json::from_str::<Careful<'_>>(attrs).ok().map(|c| CallAttrs {
                model: c.model,
                input_tokens: c.input_tokens.map(RawValue::get),
                cache_read_tokens: c.cache_read_tokens.map(RawValue::get),
            }),
        }
    }
}

/// A token count: a non-negative integer (as a number or a string); anything else is
/// left out rather than guessed.
fn tokens(raw: Option<&str>) -> Option<u64> {
    let text = raw?;
    text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text).parse().ok()
}

/// A (tenant, conversation) key looked up without allocating.
#[derive(Hash)]
struct ConvRef<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(String, String)> for ConvRef<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
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
    fn add_call(&mut self, cost: Decimal, tokens: Option<(u64, u64)>) {
        self.calls += 1;
        self.cost = self.cost.checked_add(cost).unwrap_or(Decimal::MAX);
        if let Some((input, cached)) = tokens {
            self.input_tokens = self.input_tokens.saturating_add(input);
            self.cache_read_tokens = self.cache_read_tokens.saturating_add(cached);
        }
    }

    /// Adds a conversation's use of the model to a period's.
    fn absorb(&mut self, other: &ModelUse) {
        self.calls += other.calls;
        self.cost = self.cost.checked_add(other.cost).unwrap_or(Decimal::MAX);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(other.cache_read_tokens);
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
    open: hashbrown::HashMap<(String, String), BTreeMap<String, ModelUse>>,
    /// By tenant, then period.
    periods: BTreeMap<String, BTreeMap<String, PeriodCost>>,
}

impl Margins {
    /// An `llm.call` the engine applied to an open conversation: its cost and raw
    /// attributes (`model`, `input_tokens`, `cache_read_tokens`). Allocates only for a
    /// conversation's first call, and its first of each model.
    pub fn call(&mut self, tenant: &str, conversation: &str, cost: Option<Decimal>, attrs: Option<&str>) {
        let a = attrs.and_then(CallAttrs::read);
        let (model, tokens) = match &a {
            Some(a) => {
                let both = tokens(a.input_tokens).zip(tokens(a.cache_read_tokens));
                (a.model.as_deref().filter(|m| !m.is_empty()).unwrap_or(NO_MODEL), both)
            }
            None => (NO_MODEL, None),
        };
        let key = ConvRef(tenant, conversation);
        let models = match self.open.get_mut(&key) {
            Some(m) => m,
            None => self.open.entry((tenant.to_string(), conversation.to_string())).or_default(),
        };
        let cost = cost.unwrap_or_default();
        match models.get_mut(model) {
            Some(used) => used.add_call(cost, tokens),
            None => models.entry(model.to_string()).or_default().add_call(cost, tokens),
        }
    }

    /// A verdict: its conversation's calls so far count in its period.
    pub fn verdict(&mut self, v: &Verdict) {
        let mut buf = [0u8; 16];
        let period = period_str(v.decided_at, &mut buf);
        // Looked up before inserting: a tenant and period are allocated once, not per verdict.
        if !self.periods.contains_key(&v.tenant) {
            self.periods.insert(v.tenant.clone(), BTreeMap::new());
        }
        let periods = self.periods.get_mut(&v.tenant).expect("inserted above");
        if !periods.contains_key(period) {
            periods.insert(period.to_string(), PeriodCost::default());
        }
        let p = periods.get_mut(period).expect("inserted above");
        // A conversation with several outcomes brings its calls with its first verdict.
        if let Some(models) = self.open.remove(&ConvRef(&v.tenant, &v.conversation)) {
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

    fn call(m: &mut Margins, conv: &str, model: &str, cost: &str, attrs: &str) {
        let attrs = attrs.replace("MODEL", model);
        m.call("acme", conv, Some(cost.parse().unwrap()), Some(&attrs));
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
        let with_cache = r#"{"model":"MODEL","input_tokens":1000,"cache_read_tokens":"600","meta":{"model":"no"}}"#;
        call(&mut m, "c1", "gpt-x", "0.02", with_cache);
        call(&mut m, "c1", "gpt-x", "0.03", r#"{"model":"MODEL","input_tokens":500}"#);
        call(&mut m, "c1", "sm\\u0061ll", "0.001", with_cache);
        call(&mut m, "c2", "gpt-x", "0.05", r#"{"input_tokens":-3,"model":"MODEL"}"#);
        m.call("acme", "c3", None, None);
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
