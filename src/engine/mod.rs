//! The event-time engine: accepts decoded events, holds them until the watermark passes,
//! applies them per conversation in (`ts`, arrival) order interleaved with due timers,
//! keeps the standard counters natively, and calls rule handlers only for the event
//! types a definition subscribes to. Decisions become [`Verdict`]s.

pub mod idlist;
pub mod inspect;
pub mod prefetch;
pub mod reorder;
pub mod snapshot;
pub mod state;
pub mod timers;
pub mod watermark;

use std::cmp::Reverse;
use std::sync::Arc;

use rhai::ImmutableString;
use rust_decimal::Decimal;

use crate::decode::WireEvent;
use crate::kinds::{self, Kind};
use crate::margins::Margins;
use crate::rules::api::Decision;
use crate::rules::evaluator::{Call, Evaluator};
use crate::rules::{Outcome, RuleSet};
use crate::timestamp::{Nanos, Span, NANOS_PER_DAY};
use crate::verdicts::{verdict_id, Verdict, RULE_ERROR};
use reorder::{PendingEvent, Reorder};
use state::{ConvTable, Prefetch, NIL};
use timers::{TimerEntry, TimerKind, TimerQueue};
use watermark::Watermark;

/// Most timers of one outcome that may fire in one conversation with no event between
/// them; past it the rule is looping on its own timers and the decision is a rule error.
pub const MAX_TIMER_CHAIN: u16 = 1000;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Allowed lateness `L`: the watermark trails the largest `ts` seen by this much.
    pub lateness: Span,
    /// How long a decided conversation is remembered after its last event or its
    /// decision (whichever is later), so later events for it are ignored instead of
    /// starting it again.
    pub retain_decided: Span,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { lateness: Span::from_secs(5), retain_decided: Span(7 * NANOS_PER_DAY) }
    }
}

/// Counters of what the engine did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Events accepted (not late, not duplicate), including ignored ones.
    pub accepted: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Accepted events for conversations already decided.
    pub ignored_after_decision: u64,
    /// Events applied to an open conversation.
    pub applied: u64,
    pub rule_calls: u64,
    pub rule_errors: u64,
    pub timers_fired: u64,
    pub verdicts: u64,
}

/// What happened to one event handed to [`Engine::ingest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingest {
    Accepted,
    Duplicate,
    /// Below the watermark (carried here) on arrival.
    Late {
        watermark: Nanos,
    },
}

/// Open windows and conversations, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PendingReport {
    /// Conversations not yet decided for every outcome.
    pub open_conversations: u64,
    /// Decided conversations still remembered.
    pub decided_retained: u64,
    /// Open timers by name.
    pub timers: std::collections::BTreeMap<String, u64>,
    /// Events waiting for the watermark.
    pub buffered_events: u64,
}

pub struct Engine {
    cfg: EngineConfig,
    rhai: Arc<rhai::Engine>,
    rules: Arc<RuleSet>,
    /// Stable id of each outcome of `rules`, by position.
    outcome_ids: Vec<u16>,
    /// Outcome names by stable id; ids survive reloads so state keeps its owner.
    outcome_names: Vec<String>,
    wants_attrs: [bool; kinds::KNOWN.len()],
    wants_attrs_other: bool,
    eval: Evaluator,
    convs: ConvTable,
    pending: Reorder,
    timers: TimerQueue,
    wm: Watermark,
    seq: u64,
    out: Vec<Verdict>,
    /// Model costs for the margin view, when kept: fed the calls applied to open
    /// conversations and the verdicts, in the order the engine makes them. Not part of
    /// the engine's snapshot: its owner checkpoints it ([`Engine::margins`]).
    margins: Option<Margins>,
    stats: Stats,
}

impl Engine {
    pub fn new(cfg: EngineConfig, rhai: Arc<rhai::Engine>, rules: Arc<RuleSet>) -> Engine {
        let wm = Watermark::new(cfg.lateness.0);
        let mut e = Engine {
            cfg,
            rhai,
            rules: rules.clone(),
            outcome_ids: Vec::new(),
            outcome_names: Vec::new(),
            wants_attrs: [false; kinds::KNOWN.len()],
            wants_attrs_other: false,
            eval: Evaluator::default(),
            convs: ConvTable::default(),
            pending: Reorder::default(),
            timers: TimerQueue::default(),
            wm,
            seq: 0,
            out: Vec::new(),
            margins: None,
            stats: Stats::default(),
        };
        e.set_rules(rules);
        e
    }

    /// Swaps in a new rule set. State and timers stay; each outcome keeps its state by name.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        self.outcome_ids = rules.outcomes.iter().map(|o| self.outcome_id(&o.name)).collect();
        // Attributes are kept for every type a handler subscribes to, compiled or not:
        // a compiled handler cannot read them, but the event waits for the watermark, and
        // a reload (or a restart on edited rules) may bring a handler that does.
        self.wants_attrs =
            std::array::from_fn(|k| rules.outcomes.iter().any(|o| o.handler_for(k as Kind, kinds::KNOWN[k]).is_some()));
        // Model calls carry the model and token counts the margin view reads.
        self.wants_attrs[kinds::LLM_CALL as usize] |= self.margins.is_some();
        self.wants_attrs_other = rules.outcomes.iter().any(|o| o.on_event.is_some() || !o.on_other.is_empty());
        // Outcomes that gained `on_idle` need their idle check armed on the next event.
        self.rules = rules;
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    fn outcome_id(&mut self, name: &str) -> u16 {
        match self.outcome_names.iter().position(|n| n == name) {
            Some(i) => i as u16,
            None => {
                self.outcome_names.push(name.to_string());
                (self.outcome_names.len() - 1) as u16
            }
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn watermark(&self) -> &Watermark {
        &self.wm
    }

    /// Takes the verdicts decided so far, in decision order.
    pub fn take_verdicts(&mut self) -> std::vec::Drain<'_, Verdict> {
        self.out.drain(..)
    }

    /// From now on, keeps model costs for the margin view in `margins` (restored from
    /// a checkpoint, or empty).
    pub fn keep_margins(&mut self, margins: Margins) {
        self.margins = Some(margins);
        self.wants_attrs[kinds::LLM_CALL as usize] = true;
    }

    pub fn margins(&self) -> Option<&Margins> {
        self.margins.as_ref()
    }

    /// Accepts one decoded event and applies whatever the watermark now allows.
    pub fn ingest(&mut self, ev: &WireEvent<'_>) -> Ingest {
        self.ingest_kind(ev, kinds::classify(&ev.kind))
    }

    /// [`Self::ingest`] for a caller that has classified the type already.
    pub fn ingest_kind(&mut self, ev: &WireEvent<'_>, kind: Kind) -> Ingest {
        let r = self.admit(ev, kind);
        self.catch_up();
        r
    }

    /// Applies what the watermark allows since the last events were admitted (a look
    /// at the two queues' heads when nothing is due).
    pub fn catch_up(&mut self) {
        self.run();
    }

    /// Accepts one classified event without applying anything: the caller admits a
    /// batch, then calls [`Self::catch_up`]. Events are applied in event-time order
    /// either way; batching keeps each step's code hot.
    pub fn admit(&mut self, ev: &WireEvent<'_>, kind: Kind) -> Ingest {
        if self.wm.is_late(ev.ts) {
            self.stats.late += 1;
            let watermark = self.wm.current();
            // Still progress of its source: a source whose first events are all late
            // must not hold the watermark back for ever.
            self.wm.observe(ev.ts);
            return Ingest::Late { watermark };
        }
        let slot = self.convs.get_or_insert(&ev.tenant, &ev.conversation);
        let conv = self.convs.get_mut(slot);
        // A decided conversation's events wait like any other: whether one is ignored or
        // starts the conversation anew (after the tombstone's retention) is decided when
        // it is applied, in event-time order, so arrival order cannot change it.
        let fp = self.pending.fingerprint(&ev.id);
        let applied_dup = conv.open.as_ref().is_some_and(|open| open.ids.contains(&ev.id));
        if applied_dup || self.pending.contains(conv, &ev.id, fp) {
            self.stats.duplicates += 1;
            return Ingest::Duplicate;
        }
        let wants_attrs = if kind == kinds::OTHER { self.wants_attrs_other } else { self.wants_attrs[kind as usize] };
        let pe = PendingEvent {
            slot,
            ts: ev.ts,
            seq: self.seq,
            kind,
            kind_name: (kind == kinds::OTHER).then(|| ev.kind.as_ref().into()),
            id: ev.id.as_ref().into(),
            cost: if kinds::carries_cost(kind) { ev.cost_usd } else { None },
            intent: if kind == kinds::CONVERSATION_STARTED { ev.intent.as_deref().map(Into::into) } else { None },
            attrs: if wants_attrs { ev.attrs.map(Into::into) } else { None },
        };
        self.seq += 1;
        self.pending.push(conv, pe, fp);
        self.stats.accepted += 1;
        self.wm.observe(ev.ts);
        Ingest::Accepted
    }

    /// Moves the watermark to `t` (wall clock, or a fixture's end time) and runs what is due.
    pub fn advance_to(&mut self, t: Nanos) {
        self.wm.advance_to(t);
        self.run();
    }

    /// Input from source `name` arrived at `arrival` (logged time): the events that
    /// follow count toward that source's watermark. A caught-up source that has been
    /// quiet for `quiet` stops holding the watermark back.
    pub fn from_source(&mut self, name: &str, arrival: Nanos, quiet: Nanos) {
        self.wm.from_source(name, arrival, quiet);
    }

    /// The source of the last input has (or has not) delivered everything it has.
    pub fn set_caught_up(&mut self, caught_up: bool) {
        self.wm.set_caught_up(caught_up);
    }

    /// Sets the sources in force at `now` (a start, or a Fluvio source that learned its
    /// partitions): of the sources `in_scope` says are this set's, those not among
    /// `sources` (name, quiet time, caught up) are forgotten; those among them start
    /// over. Runs what that makes due.
    pub fn set_sources<'a>(
        &mut self,
        now: Nanos,
        in_scope: impl Fn(&str) -> bool,
        sources: impl Iterator<Item = (&'a str, Nanos, bool)> + Clone,
    ) {
        for (name, quiet, caught_up) in sources.clone() {
            self.wm.restart_source(name, now, quiet, caught_up);
        }
        if self.wm.retain_sources(|n| !in_scope(n) || sources.clone().any(|(s, _, _)| s == n)) {
            self.run();
        }
    }

    /// Caught-up sources quiet for their quiet time before `now` stop holding the
    /// watermark back; runs what that makes due.
    pub fn mark_idle(&mut self, now: Nanos) {
        if self.wm.mark_idle(now) {
            self.run();
        }
    }

    /// End of a finite input: the watermark goes to the largest `ts` seen; timers up to
    /// it fire, later ones stay pending.
    pub fn finish(&mut self) {
        if let Some(max) = self.wm.max_ts() {
            self.advance_to(max);
        }
    }

    /// Applies events and fires timers up to the watermark, in time order; at equal
    /// times a timer fires before the event.
    fn run(&mut self) {
        let wm = self.wm.current();
        loop {
            let next_event = self.pending.peek().map(|(ts, _)| ts);
            match self.timers.peek_due(wm) {
                Some(d) if next_event.is_none_or(|ts| d <= ts) => {
                    if let Some(t) = self.timers.pop() {
                        // A pipeline over the coming timers: the open state of the next
                        // (whose slot was asked for one fire ago), the slots of the two
                        // that may follow it.
                        for (i, Reverse(next)) in self.timers.soon().iter().enumerate() {
                            self.convs.prefetch(next.slot, if i == 0 { Prefetch::Open } else { Prefetch::Slot });
                        }
                        self.fire(t);
                    }
                    continue;
                }
                _ => {}
            }
            match next_event {
                Some(ts) if ts <= wm => {
                    let Some(slot) = self.pending.peek_slot() else { break };
                    if let Some(pe) = self.pending.pop(self.convs.get_mut(slot)) {
                        self.apply(pe);
                    }
                }
                _ => break,
            }
        }
    }

    fn apply(&mut self, mut pe: PendingEvent) {
        let slot = pe.slot;
        let retain = self.cfg.retain_decided.0;
        let conv = self.convs.get_mut(slot);
        if conv.open.is_none() && pe.ts >= conv.last_ts.saturating_add(retain) {
            // Past the tombstone's retention: in event-time order it was purged before
            // this event, which starts the conversation anew. The new generation makes
            // the old purge entry stale.
            conv.gen = conv.gen.wrapping_add(1);
            conv.ignored = 0;
            conv.open = Some(Box::default());
        }
        conv.last_ts = conv.last_ts.max(pe.ts);
        let Some(open) = conv.open.as_mut() else {
            conv.ignored = conv.ignored.saturating_add(1);
            self.stats.ignored_after_decision += 1;
            if conv.pending_head == NIL {
                let purge = Self::purge_entry(conv, slot, self.cfg.retain_decided.0);
                self.timers.push(purge);
            }
            return;
        };
        self.stats.applied += 1;
        if open.events == 0 {
            open.first_ts = pe.ts;
        }
        open.events = open.events.saturating_add(1);
        match pe.kind {
            kinds::OTHER => {
                let name = pe.kind_name.as_deref().unwrap_or("");
                let others = open.other_counts.get_or_insert_with(Default::default);
                match others.iter_mut().find(|(k, _)| &**k == name) {
                    Some((_, n)) => *n = n.saturating_add(1),
                    None => others.push((name.into(), 1)),
                }
            }
            k => open.counts[k as usize] = open.counts[k as usize].saturating_add(1),
        }
        if let Some(c) = pe.cost {
            open.cost = open.cost.checked_add(c).unwrap_or(Decimal::MAX);
        }
        if pe.kind == kinds::CONVERSATION_STARTED && !open.started_seen {
            open.started_seen = true;
            open.intent = pe.intent.take();
        }
        open.ids.push(&pe.id);

        let (conv_gen, key_hash) = (conv.gen, conv.key_hash);
        if let (Some(m), kinds::LLM_CALL) = (self.margins.as_mut(), pe.kind) {
            let conv = self.convs.get(slot);
            m.call(self.convs.tenant_name(conv.tenant), &conv.conversation, pe.cost, pe.attrs.as_deref());
        }
        let kind_name = pe.kind_name.as_deref().unwrap_or_else(|| kinds::KNOWN[pe.kind as usize]);
        // First the bookkeeping of every outcome, then the handler calls: outcomes keep
        // separate state, so the order between them does not matter, and most events
        // call no handler at all (then the rule set is not even cloned).
        let mut calls = smallvec::SmallVec::<[(usize, ImmutableString); 2]>::new();
        for (i, outcome) in self.rules.outcomes.iter().enumerate() {
            let oid = self.outcome_ids[i];
            let Some(open) = self.convs.get_mut(slot).open.as_mut() else { break };
            let state = open.outcome_mut(oid);
            if state.decided {
                continue;
            }
            state.timer_chain = 0;
            if let (Some(idle), false) = (outcome.idle_after, state.idle_armed) {
                state.idle_armed = true;
                self.timers.push(TimerEntry {
                    deadline: pe.ts.saturating_add(idle),
                    key_hash,
                    slot,
                    gen: conv_gen,
                    name: None,
                    outcome: oid,
                    kind: TimerKind::Idle,
                });
            }
            if let Some(h) = outcome.handler_for(pe.kind, kind_name) {
                if h.during.as_ref().is_none_or(|t| state.timers.iter().any(|(n, _)| n == t)) {
                    calls.push((i, h.func.clone()));
                }
            }
        }
        if !calls.is_empty() {
            let rules = self.rules.clone();
            for (i, func) in calls {
                self.invoke(slot, &rules.outcomes[i], self.outcome_ids[i], &func, Call::Event, pe.ts, Some(&mut pe));
            }
        }
        self.close_if_decided(slot, pe.ts);
    }

    fn fire(&mut self, t: TimerEntry) {
        if !self.convs.is_current(t.slot, t.gen) {
            return;
        }
        let retain = self.cfg.retain_decided.0;
        let conv = self.convs.get_mut(t.slot);
        if t.kind == TimerKind::Purge {
            if conv.open.is_some() {
                return;
            }
            if conv.pending_head != NIL {
                // Its waiting events re-arm the purge when the last one is applied.
                return;
            }
            let due = conv.last_ts.saturating_add(retain);
            if due > t.deadline {
                self.timers.push(TimerEntry { deadline: due, ..t });
            } else {
                self.convs.remove(t.slot);
            }
            return;
        }
        let Some(i) = self.outcome_ids.iter().position(|&id| id == t.outcome) else { return };
        let rules = self.rules.clone();
        let outcome = &rules.outcomes[i];
        let last_ts = conv.last_ts;
        let Some(open) = conv.open.as_mut() else { return };
        let state = open.outcome_mut(t.outcome);
        if state.decided {
            return;
        }
        match t.kind {
            TimerKind::Idle => {
                let Some(idle) = outcome.idle_after else {
                    state.idle_armed = false;
                    return;
                };
                let due = last_ts.saturating_add(idle);
                if due > t.deadline {
                    self.timers.push(TimerEntry { deadline: due, ..t });
                    return;
                }
                state.idle_armed = false;
                self.stats.timers_fired += 1;
                if let Some(func) = &outcome.on_idle {
                    self.invoke(t.slot, outcome, t.outcome, func, Call::Idle, t.deadline, None);
                }
            }
            TimerKind::Named => {
                let Some(name) = &t.name else { return };
                let Some(pos) = state.timers.iter().position(|(n, d)| n == name && *d == t.deadline) else {
                    return;
                };
                state.timers.remove(pos);
                state.timer_chain = state.timer_chain.saturating_add(1);
                self.stats.timers_fired += 1;
                if state.timer_chain > MAX_TIMER_CHAIN {
                    let msg = format!(
                        "{}: more than {MAX_TIMER_CHAIN} timers fired in a row with no event between them \
                         (a timer that keeps restarting itself?)",
                        outcome.file_name()
                    );
                    self.decide(t.slot, outcome, t.outcome, t.deadline, Err(msg));
                    self.close_if_decided(t.slot, t.deadline);
                    return;
                }
                if let Some(func) = &outcome.on_timer {
                    self.invoke(t.slot, outcome, t.outcome, func, Call::Timer(name), t.deadline, None);
                }
            }
            TimerKind::Purge => {}
        }
        self.close_if_decided(t.slot, t.deadline);
    }

    /// Calls one handler with the conversation's state and applies what it did.
    #[allow(clippy::too_many_arguments)]
    fn invoke(
        &mut self,
        slot: u32,
        outcome: &Outcome,
        oid: u16,
        func: &ImmutableString,
        how: Call<'_>,
        now: Nanos,
        mut event: Option<&mut PendingEvent>,
    ) {
        {
            let (conv, tenant) = self.convs.get_mut_with_tenant(slot);
            let Some(open) = conv.open.as_mut() else { return };
            let mut ctx = self.eval.ctx();
            ctx.tenant.clear();
            ctx.tenant.push_str(tenant);
            ctx.conversation.clear();
            ctx.conversation.push_str(&conv.conversation);
            ctx.outcome.clear();
            ctx.outcome.push_str(&outcome.name);
            ctx.now = now;
            ctx.first_ts = open.first_ts;
            ctx.last_ts = conv.last_ts;
            ctx.events = open.events;
            ctx.counts = open.counts;
            match &open.other_counts {
                Some(o) => ctx.other_counts.clone_from(o),
                None => ctx.other_counts.clear(),
            }
            if ctx.intent.as_deref() != open.intent.as_deref() {
                ctx.intent = open.intent.as_deref().map(Into::into);
            }
            ctx.cost = open.cost;
            ctx.decision = None;
            let state = open.outcome_mut(oid);
            ctx.timers.clone_from(&state.timers);
            ctx.vars = state.vars.take().map(|b| *b).unwrap_or_default();
            ctx.event_id.clear();
            ctx.event_kind.clear();
            ctx.event_attrs = None;
            if let Some(ev) = event.as_deref_mut() {
                ctx.event_id.push_str(&ev.id);
                ctx.event_kind.push_str(ev.kind_name.as_deref().unwrap_or_else(|| kinds::KNOWN[ev.kind as usize]));
                ctx.event_ts = ev.ts;
                ctx.event_attrs = ev.attrs.take();
            }
        }
        self.stats.rule_calls += 1;
        let result = self.eval.call(&self.rhai, outcome, func, how);

        let decision = {
            let mut ctx = self.eval.ctx();
            // Back to the event: another outcome's handler may read the same attributes.
            if let Some(ev) = event {
                ev.attrs = ctx.event_attrs.take();
            }
            let conv = self.convs.get_mut(slot);
            let (gen, key_hash) = (conv.gen, conv.key_hash);
            let Some(open) = conv.open.as_mut() else { return };
            let state = open.outcome_mut(oid);
            let vars = std::mem::take(&mut ctx.vars);
            state.vars = (!vars.is_empty()).then(|| Box::new(vars));
            match result {
                Err(message) => Err(message),
                Ok(()) => {
                    for (name, deadline) in &ctx.timers {
                        if !state.timers.iter().any(|(n, d)| n == name && d == deadline) {
                            self.timers.push(TimerEntry {
                                deadline: *deadline,
                                key_hash,
                                slot,
                                gen,
                                name: Some(name.clone()),
                                outcome: oid,
                                kind: TimerKind::Named,
                            });
                        }
                    }
                    std::mem::swap(&mut state.timers, &mut ctx.timers);
                    Ok(ctx.decision.take())
                }
            }
        };
        match decision {
            Ok(None) => {}
            Ok(Some(d)) => self.decide(slot, outcome, oid, now, Ok(d)),
            Err(message) => self.decide(slot, outcome, oid, now, Err(message)),
        }
    }

    /// Records a decision (or a rule failure) as the outcome's one verdict.
    fn decide(&mut self, slot: u32, outcome: &Outcome, oid: u16, now: Nanos, d: Result<Decision, String>) {
        let conv = self.convs.get(slot);
        let tenant = self.convs.tenant_name(conv.tenant).to_string();
        let conversation = conv.conversation.as_str().to_owned();
        let conv = self.convs.get_mut(slot);
        let Some(open) = conv.open.as_mut() else { return };
        let state = open.outcome_mut(oid);
        state.decided = true;
        state.timers.clear();
        state.vars = None;
        // The last decision closes the conversation, which then needs its ids no more:
        // the verdict takes them instead of a copy.
        let last = open.all_decided(&self.outcome_ids);
        let events = if last { std::mem::take(&mut open.ids) } else { open.ids.clone() };

        let priced = d.and_then(|d| match (d.billable, d.tier) {
            (true, Some(tier)) => match outcome.prices.price(&tenant, tier) {
                Some(p) => Ok((d, p)),
                None => Err(format!(
                    "{}: no price for tier {tier} (tenant {tenant}) in prices.toml [{}]",
                    outcome.file_name(),
                    outcome.name
                )),
            },
            _ => Ok((d, Decimal::ZERO)),
        });
        let (billable, reason, tier, amount, error) = match priced {
            Ok((d, amount)) => (d.billable, d.reason.as_str().to_owned(), d.tier, amount, None),
            Err(message) => {
                self.stats.rule_errors += 1;
                tracing::warn!(outcome = %outcome.name, %tenant, %conversation, "rule error: {message}");
                (false, RULE_ERROR.to_string(), None, Decimal::ZERO, Some(message))
            }
        };
        self.stats.verdicts += 1;
        let v = Verdict {
            verdict_id: verdict_id(&tenant, &conversation, &outcome.name),
            outcome: outcome.name.clone(),
            tenant,
            conversation,
            billable,
            reason,
            tier,
            amount,
            currency: outcome.prices.currency.clone(),
            cost: open.cost,
            decided_at: now,
            rule_version: outcome.version.clone(),
            events: crate::verdicts::EventIds(events),
            error,
        };
        if let Some(m) = self.margins.as_mut() {
            m.verdict(&v);
        }
        self.out.push(v);
    }

    /// Turns a conversation decided for every outcome into a tombstone, kept for the
    /// retention after its last event or its decision (`now`), whichever is later.
    fn close_if_decided(&mut self, slot: u32, now: Nanos) {
        let conv = self.convs.get_mut(slot);
        let Some(open) = conv.open.as_ref() else { return };
        if !open.all_decided(&self.outcome_ids) {
            return;
        }
        conv.open = None;
        conv.last_ts = conv.last_ts.max(now);
        let purge = Self::purge_entry(conv, slot, self.cfg.retain_decided.0);
        self.timers.push(purge);
    }

    fn purge_entry(conv: &state::Conv, slot: u32, retain: Nanos) -> TimerEntry {
        TimerEntry {
            deadline: conv.last_ts.saturating_add(retain),
            key_hash: conv.key_hash,
            slot,
            gen: conv.gen,
            name: None,
            outcome: 0,
            kind: TimerKind::Purge,
        }
    }

    /// Open conversations, pending timers and buffered events.
    pub fn pending_report(&self) -> PendingReport {
        let mut r = PendingReport { buffered_events: self.pending.len() as u64, ..Default::default() };
        for (_, c) in self.convs.iter() {
            match &c.open {
                None => r.decided_retained += 1,
                Some(open) => {
                    r.open_conversations += 1;
                    for o in &open.outcomes {
                        for (name, _) in &o.timers {
                            *r.timers.entry(name.to_string()).or_default() += 1;
                        }
                    }
                }
            }
        }
        r
    }

    /// Conversations held (open and decided-retained).
    pub fn conversations(&self) -> usize {
        self.convs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::rules::{sandbox, PriceBook};

    fn engine_with(rule: &str) -> Engine {
        let rhai = Arc::new(sandbox::build(&Default::default()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("o.rhai"), rule).unwrap();
        std::fs::write(dir.path().join("prices.toml"), "[o]\ncurrency = \"USD\"\ntiers = { 1 = \"1.00\" }\n").unwrap();
        let rules = RuleSet::load(&rhai, dir.path()).unwrap();
        assert!(PriceBook::parse("").is_ok());
        Engine::new(EngineConfig { lateness: Span(0), ..Default::default() }, rhai, Arc::new(rules))
    }

    fn feed(e: &mut Engine, id: &str, kind: &str, ts: &str) -> Ingest {
        feed_to(e, "c", id, kind, ts)
    }

    fn feed_to(e: &mut Engine, conv: &str, id: &str, kind: &str, ts: &str) -> Ingest {
        let line = format!(r#"{{"id":"{id}","type":"{kind}","tenant":"t","conversation":"{conv}","ts":"{ts}"}}"#);
        e.ingest(&decode(line.as_bytes()).unwrap())
    }

    #[test]
    fn a_timer_that_restarts_itself_forever_is_a_rule_error() {
        let mut e = engine_with(
            r#"fn on_go(c, e) { c.start_timer("t", c.now) }
               fn on_timer(c, name) { c.start_timer("t", c.now + 1) }"#,
        );
        feed(&mut e, "a", "go", "2026-06-12T00:00:00Z");
        feed(&mut e, "b", "other", "2026-06-13T00:00:00Z");
        let v: Vec<_> = e.take_verdicts().collect();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].reason, RULE_ERROR);
        assert!(v[0].error.as_deref().unwrap().contains("in a row"), "{:?}", v[0].error);
    }

    #[test]
    fn decided_conversations_are_purged_after_retention_even_with_late_buffered_events() {
        let mut e = engine_with(r#"fn on_done(c, e) { c.not_billable("done") }"#);
        e.cfg.retain_decided = Span::from_hours(1);
        feed(&mut e, "a", "done", "2026-06-12T00:00:00Z");
        assert_eq!(e.take_verdicts().count(), 1);
        assert_eq!(feed(&mut e, "b", "x", "2026-06-12T00:30:00Z"), Ingest::Accepted);
        assert_eq!(e.stats().ignored_after_decision, 1);
        assert_eq!(e.conversations(), 1);
        // Far past the retention: the tombstone goes, and the conversation id is new again.
        feed_to(&mut e, "other", "z", "x", "2026-06-20T00:00:00Z");
        assert_eq!(e.pending_report().decided_retained, 0);
        assert_eq!(feed(&mut e, "c", "done", "2026-06-20T00:00:01Z"), Ingest::Accepted);
        assert_eq!(e.take_verdicts().count(), 1);
    }

    #[test]
    fn an_event_past_the_retention_starts_anew_whatever_the_arrival_order() {
        // Two arrival orders of the same events within the lateness bound must agree:
        // the late event of "c" comes after the tombstone's retention in event time.
        let mut verdicts = Vec::new();
        for other_first in [true, false] {
            let mut e = engine_with(r#"fn on_done(c, e) { c.not_billable("done") }"#);
            e.cfg.retain_decided = Span::from_hours(1);
            e.cfg.lateness = Span::from_secs(5);
            e.wm = Watermark::new(Span::from_secs(5).0);
            feed(&mut e, "a", "done", "2026-06-12T00:00:00Z");
            let (first, second) = if other_first { (("other", "z"), ("c", "b")) } else { (("c", "b"), ("other", "z")) };
            feed_to(&mut e, first.0, first.1, "done", "2026-06-12T05:00:00Z");
            feed_to(&mut e, second.0, second.1, "done", "2026-06-12T05:00:01Z");
            e.finish();
            let mut v: Vec<String> =
                e.take_verdicts().map(|v| format!("{} {}", v.conversation, v.events.join(","))).collect();
            v.sort();
            verdicts.push(v);
        }
        assert_eq!(verdicts[0], verdicts[1]);
        assert!(verdicts[0].contains(&"c b".to_string()), "{:?}", verdicts[0]);
    }

    #[test]
    fn every_outcome_sees_the_attributes_of_an_event() {
        let rhai = Arc::new(sandbox::build(&Default::default()));
        let dir = tempfile::tempdir().unwrap();
        let rule =
            r#"fn on_x(c, e) { if e.attr("k") == "v" { c.not_billable("seen") } else { c.not_billable("missing") } }"#;
        let mut prices = String::new();
        for name in ["a", "b"] {
            std::fs::write(dir.path().join(format!("{name}.rhai")), rule).unwrap();
            prices.push_str(&format!("[{name}]\ncurrency = \"USD\"\ntiers = {{ 1 = \"1.00\" }}\n"));
        }
        std::fs::write(dir.path().join("prices.toml"), prices).unwrap();
        let rules = RuleSet::load(&rhai, dir.path()).unwrap();
        let mut e = Engine::new(EngineConfig { lateness: Span(0), ..Default::default() }, rhai, Arc::new(rules));
        let line =
            r#"{"id":"a","type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T00:00:00Z","attrs":{"k":"v"}}"#;
        e.ingest(&decode(line.as_bytes()).unwrap());
        let reasons: Vec<_> = e.take_verdicts().map(|v| (v.outcome, v.reason)).collect();
        assert_eq!(reasons, [("a".to_string(), "seen".to_string()), ("b".to_string(), "seen".to_string())]);
    }

    #[test]
    fn a_reloaded_handler_sees_the_attributes_of_events_still_waiting() {
        let mut e = engine_with(r#"fn on_x(c, e) { c.start_timer("t", c.now + 1000) }"#);
        e.cfg.lateness = Span::from_secs(5);
        e.wm = Watermark::new(Span::from_secs(5).0);
        let line =
            r#"{"id":"a","type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T00:00:00Z","attrs":{"k":"v"}}"#;
        assert_eq!(e.ingest(&decode(line.as_bytes()).unwrap()), Ingest::Accepted);
        let reading = engine_with(
            r#"fn on_x(c, e) { if e.attr("k") == "v" { c.not_billable("seen") } else { c.not_billable("missing") } }"#,
        );
        e.set_rules(reading.rules().clone());
        e.finish();
        let reasons: Vec<_> = e.take_verdicts().map(|v| v.reason).collect();
        assert_eq!(reasons, ["seen"]);
    }

    #[test]
    fn duplicates_are_found_while_waiting_and_after_applied() {
        let mut e = engine_with(r#"fn on_done(c, e) { c.not_billable("done") }"#);
        e.cfg.lateness = Span::from_secs(5);
        e.wm = Watermark::new(Span::from_secs(5).0);
        assert_eq!(feed(&mut e, "a", "x", "2026-06-12T00:00:00Z"), Ingest::Accepted);
        assert_eq!(feed(&mut e, "a", "x", "2026-06-12T00:00:00Z"), Ingest::Duplicate, "waiting in the buffer");
        feed(&mut e, "b", "x", "2026-06-12T00:01:00Z");
        assert_eq!(feed(&mut e, "a", "x", "2026-06-12T00:00:58Z"), Ingest::Duplicate, "already applied");
        assert_eq!(e.stats().duplicates, 2);
    }
}
