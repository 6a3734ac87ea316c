//! A read-only view of one conversation's live state, for `GET /v1/conversations/..`:
//! what the engine counts, what each outcome's script keeps, and its open timers.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Engine;
use crate::kinds::KNOWN;
use crate::timestamp::format_rfc3339;

#[derive(Debug, Serialize)]
pub struct ConversationView {
    pub tenant: String,
    pub conversation: String,
    /// `open`, or `decided` (kept so later events are ignored).
    pub state: &'static str,
    pub last_ts: Option<String>,
    pub first_ts: Option<String>,
    pub events: u32,
    pub counts: BTreeMap<String, u32>,
    pub cost: Option<String>,
    pub intent: Option<String>,
    pub event_ids: Vec<String>,
    /// Events accepted after the decision (ignored).
    pub ignored_after_decision: u32,
    /// Accepted events still waiting for the watermark.
    pub buffered_events: usize,
    pub outcomes: Vec<OutcomeView>,
}

#[derive(Debug, Serialize)]
pub struct OutcomeView {
    pub outcome: String,
    pub decided: bool,
    pub timers: Vec<TimerView>,
    /// Fields kept with `c.set`, as Rhai prints them.
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct TimerView {
    pub name: String,
    pub deadline: String,
}

impl Engine {
    pub fn conversation_view(&self, tenant: &str, conversation: &str) -> Option<ConversationView> {
        let slot = self.convs.find(tenant, conversation)?;
        let c = self.convs.get(slot);
        let buffered_events = self.pending.count_for(c);
        let mut v = ConversationView {
            tenant: tenant.to_string(),
            conversation: conversation.to_string(),
            state: if c.open.is_some() { "open" } else { "decided" },
            last_ts: (c.last_ts != i64::MIN).then(|| format_rfc3339(c.last_ts)),
            first_ts: None,
            events: 0,
            counts: BTreeMap::new(),
            cost: None,
            intent: None,
            event_ids: Vec::new(),
            ignored_after_decision: c.ignored,
            buffered_events,
            outcomes: Vec::new(),
        };
        let Some(open) = &c.open else { return Some(v) };
        v.first_ts = (open.events > 0).then(|| format_rfc3339(open.first_ts));
        v.events = open.events;
        v.counts = KNOWN.iter().zip(open.counts).filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), n)).collect();
        for (k, n) in open.other_counts.iter().flat_map(|o| o.iter()) {
            v.counts.insert(k.to_string(), *n);
        }
        v.cost = Some(open.cost.to_string());
        v.intent = open.intent.as_deref().map(str::to_string);
        v.event_ids = open.ids.iter().map(str::to_string).collect();
        for o in &open.outcomes {
            v.outcomes.push(OutcomeView {
                outcome: self.outcome_names.get(o.outcome as usize).cloned().unwrap_or_default(),
                decided: o.decided,
                timers: o
                    .timers
                    .iter()
                    .map(|(n, d)| TimerView { name: n.to_string(), deadline: format_rfc3339(*d) })
                    .collect(),
                fields: o.vars.iter().flat_map(|m| m.iter()).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            });
        }
        Some(v)
    }
}
