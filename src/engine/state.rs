//! Per-conversation state, keyed by tenant + conversation: a slab of conversations with
//! a hash index into it, so the per-event path hashes the key once and everything else
//! (pending events, timers) refers to a conversation by slot.

use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::hash_table::{Entry, HashTable};
use rhai::Map;
use rust_decimal::Decimal;
use smallvec::SmallVec;

use super::idlist::IdList;
use crate::bytes::same;
use crate::kinds::KNOWN;
use crate::rules::api::Timers;
use crate::timestamp::Nanos;

/// Marks the end of a slot list.
pub const NIL: u32 = u32::MAX;

/// One conversation. Once every outcome has decided it keeps only its key and times
/// (a tombstone), so later events are ignored, until it is purged.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Conv {
    /// Bumped on every reuse of the slot, so stale timer entries can be recognised.
    pub gen: u32,
    pub tenant: u32,
    /// A hash of the key with a fixed seed: a tie-break that is the same in every run.
    pub key_hash: u64,
    /// Inline up to 24 bytes (typical ids): the lookup of every event compares it, and
    /// a separate allocation would be one more cache miss there.
    pub conversation: compact_str::CompactString,
    pub last_ts: Nanos,
    /// Events that arrived after the conversation was decided.
    pub ignored: u32,
    /// Head of this conversation's list of events waiting in the reorder buffer.
    pub pending_head: u32,
    pub live: bool,
    pub open: Option<Box<OpenState>>,
}

/// Counts by type name, for types outside `KNOWN`.
pub type OtherCounts = Vec<(Box<str>, u32)>;

/// The state of a conversation that is not yet decided for every outcome.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OpenState {
    pub first_ts: Nanos,
    pub events: u32,
    pub counts: [u32; KNOWN.len()],
    /// Counts of types outside `KNOWN`; boxed because they are rare.
    pub other_counts: Option<Box<OtherCounts>>,
    pub cost: Decimal,
    pub intent: Option<Box<str>>,
    pub started_seen: bool,
    pub ids: IdList,
    pub outcomes: SmallVec<[OutcomeState; 1]>,
}

/// The state one outcome definition keeps for one conversation.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OutcomeState {
    /// Stable id of the outcome name (see `Engine::outcome_id`).
    pub outcome: u16,
    pub decided: bool,
    pub idle_armed: bool,
    /// Timers fired since the last event (see `MAX_TIMER_CHAIN`).
    pub timer_chain: u16,
    #[serde(with = "super::snapshot::timers")]
    pub timers: Timers,
    /// Fields the script keeps with `c.set`; boxed because most definitions keep none.
    #[serde(with = "super::snapshot::vars")]
    pub vars: Option<Box<Map>>,
}

impl OpenState {
    pub fn outcome_mut(&mut self, outcome: u16) -> &mut OutcomeState {
        let i = match self.outcomes.iter().position(|o| o.outcome == outcome) {
            Some(i) => i,
            None => {
                self.outcomes.push(OutcomeState { outcome, ..Default::default() });
                self.outcomes.len() - 1
            }
        };
        &mut self.outcomes[i]
    }

    pub fn outcome(&self, outcome: u16) -> Option<&OutcomeState> {
        self.outcomes.iter().find(|o| o.outcome == outcome)
    }

    /// Whether every one of these outcomes has decided.
    pub fn all_decided(&self, outcomes: &[u16]) -> bool {
        outcomes.iter().all(|&id| self.outcome(id).is_some_and(|s| s.decided))
    }
}

/// What [`ConvTable::prefetch`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefetch {
    /// The slot itself.
    Slot,
    /// The open state the slot points to.
    Open,
}

/// The conversation table.
pub struct ConvTable {
    slots: Vec<Conv>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    tenants: Vec<Box<str>>,
    tenant_index: hashbrown::HashMap<Box<str>, u32>,
    live: usize,
}

impl Default for ConvTable {
    fn default() -> Self {
        ConvTable {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: Default::default(),
            tenants: Vec::new(),
            tenant_index: Default::default(),
            live: 0,
        }
    }
}

fn fixed_key_hash(tenant: &str, conversation: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    tenant.hash(&mut h);
    conversation.hash(&mut h);
    h.finish()
}

impl ConvTable {
    #[inline]
    fn hash(&self, tenant: &str, conversation: &str) -> u64 {
        self.hasher.hash_one((tenant, conversation))
    }

    /// The slot of a conversation, created (open, empty) if absent.
    pub fn get_or_insert(&mut self, tenant: &str, conversation: &str) -> u32 {
        let hash = self.hash(tenant, conversation);
        let (slots, tenants) = (&self.slots, &self.tenants);
        let eq = |&s: &u32| {
            let c = &slots[s as usize];
            same(c.conversation.as_bytes(), conversation.as_bytes())
                && same(tenants[c.tenant as usize].as_bytes(), tenant.as_bytes())
        };
        let hasher = |&s: &u32| {
            let c = &slots[s as usize];
            self.hasher.hash_one((&*tenants[c.tenant as usize], &*c.conversation))
        };
        match self.index.entry(hash, eq, hasher) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(v) => {
                let tenant_id = match self.tenant_index.get(tenant) {
                    Some(&t) => t,
                    None => {
                        let t = self.tenants.len() as u32;
                        self.tenants.push(tenant.into());
                        self.tenant_index.insert(tenant.into(), t);
                        t
                    }
                };
                let fresh = Conv {
                    gen: 0,
                    tenant: tenant_id,
                    key_hash: fixed_key_hash(tenant, conversation),
                    conversation: conversation.into(),
                    last_ts: Nanos::MIN,
                    ignored: 0,
                    pending_head: NIL,
                    live: true,
                    open: Some(Box::default()),
                };
                let slot = match self.free.pop() {
                    Some(s) => {
                        let gen = self.slots[s as usize].gen.wrapping_add(1);
                        self.slots[s as usize] = Conv { gen, ..fresh };
                        s
                    }
                    None => {
                        self.slots.push(fresh);
                        (self.slots.len() - 1) as u32
                    }
                };
                v.insert(slot);
                self.live += 1;
                slot
            }
        }
    }

    /// The slot of a conversation, if present.
    pub fn find(&self, tenant: &str, conversation: &str) -> Option<u32> {
        let hash = self.hash(tenant, conversation);
        self.index
            .find(hash, |&s| {
                let c = &self.slots[s as usize];
                same(c.conversation.as_bytes(), conversation.as_bytes())
                    && same(self.tenants[c.tenant as usize].as_bytes(), tenant.as_bytes())
            })
            .copied()
    }

    /// Removes a conversation and frees its slot.
    pub fn remove(&mut self, slot: u32) {
        let c = &self.slots[slot as usize];
        if !c.live {
            return;
        }
        let hash = self.hash(&self.tenants[c.tenant as usize], &c.conversation);
        if let Ok(e) = self.index.find_entry(hash, |&s| s == slot) {
            e.remove();
        }
        let c = &mut self.slots[slot as usize];
        c.live = false;
        c.open = None;
        c.conversation = compact_str::CompactString::default();
        self.free.push(slot);
        self.live -= 1;
    }

    #[inline]
    pub fn get(&self, slot: u32) -> &Conv {
        &self.slots[slot as usize]
    }

    /// A conversation with its tenant's name.
    #[inline]
    pub fn get_mut_with_tenant(&mut self, slot: u32) -> (&mut Conv, &str) {
        let c = &mut self.slots[slot as usize];
        let t = &self.tenants[c.tenant as usize];
        (c, t)
    }

    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> &mut Conv {
        &mut self.slots[slot as usize]
    }

    /// Prefetches what a timer of the conversation in `slot` is about to read, a step
    /// at a time: each step reads what the one before brought into the cache.
    #[inline]
    pub fn prefetch(&self, slot: u32, step: Prefetch) {
        let Some(c) = self.slots.get(slot as usize) else { return };
        match (step, &c.open) {
            (Prefetch::Slot, _) => super::prefetch::prefetch(c),
            (Prefetch::Open, Some(o)) => super::prefetch::prefetch::<OpenState>(o),
            _ => {}
        }
    }

    /// Whether `slot` still holds the conversation of generation `gen`.
    #[inline]
    pub fn is_current(&self, slot: u32, gen: u32) -> bool {
        self.slots.get(slot as usize).is_some_and(|c| c.live && c.gen == gen)
    }

    pub fn tenant_name(&self, tenant: u32) -> &str {
        &self.tenants[tenant as usize]
    }

    /// Conversations present (open or tombstone).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Live conversations with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Conv)> {
        self.slots.iter().enumerate().filter(|(_, c)| c.live).map(|(i, c)| (i as u32, c))
    }
}

/// What a checkpoint keeps of the table: the slots as they are (timer and buffer entries
/// refer to slots), the free list and the tenant names. The indexes are rebuilt on load.
#[derive(serde::Serialize)]
struct TableRef<'a> {
    slots: &'a [Conv],
    free: &'a [u32],
    tenants: &'a [Box<str>],
}

#[derive(serde::Deserialize)]
struct TableOwned {
    slots: Vec<Conv>,
    free: Vec<u32>,
    tenants: Vec<Box<str>>,
}

impl serde::Serialize for ConvTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TableRef { slots: &self.slots, free: &self.free, tenants: &self.tenants }.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for ConvTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let t = TableOwned::deserialize(d)?;
        let mut table = ConvTable { slots: Vec::new(), free: t.free, tenants: t.tenants, ..Default::default() };
        for (i, name) in table.tenants.iter().enumerate() {
            table.tenant_index.insert(name.clone(), i as u32);
        }
        if let Some(&bad) = table.free.iter().find(|&&f| f as usize >= t.slots.len()) {
            return Err(D::Error::custom(format!("free slot {bad} is outside the table of {}", t.slots.len())));
        }
        table.index.reserve(t.slots.len(), |_| 0);
        for (i, c) in t.slots.iter().enumerate() {
            if !c.live {
                continue;
            }
            let Some(tenant) = table.tenants.get(c.tenant as usize) else {
                return Err(D::Error::custom(format!("slot {i} names tenant {} of {}", c.tenant, table.tenants.len())));
            };
            let hash = table.hasher.hash_one((&**tenant, &*c.conversation));
            let (slots, tenants, hasher) = (&t.slots, &table.tenants, &table.hasher);
            table.index.insert_unique(hash, i as u32, |&s| {
                let c = &slots[s as usize];
                hasher.hash_one((&*tenants[c.tenant as usize], &*c.conversation))
            });
            table.live += 1;
        }
        table.slots = t.slots;
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_reuse() {
        let mut t = ConvTable::default();
        let a = t.get_or_insert("t1", "c1");
        let b = t.get_or_insert("t2", "c1");
        assert_ne!(a, b, "same conversation id under two tenants is two conversations");
        assert_eq!(t.get_or_insert("t1", "c1"), a);
        assert_eq!(t.find("t2", "c1"), Some(b));
        assert_eq!(t.len(), 2);
        let gen = t.get(a).gen;
        t.remove(a);
        assert_eq!(t.find("t1", "c1"), None);
        assert!(!t.is_current(a, gen));
        let c = t.get_or_insert("t3", "c9");
        assert_eq!(c, a, "slot reused");
        assert!(t.is_current(c, gen + 1));
        assert_eq!(t.tenant_name(t.get(c).tenant), "t3");
        assert_eq!(t.get(c).key_hash, fixed_key_hash("t3", "c9"));
    }
}

#[cfg(test)]
mod size_report {
    #[test]
    fn print_sizes() {
        use std::mem::size_of;
        println!(
            "Conv {} OpenState {} OutcomeState {} Timers {} Map {} TimerEntry {} PendingEvent {}",
            size_of::<super::Conv>(),
            size_of::<super::OpenState>(),
            size_of::<super::OutcomeState>(),
            size_of::<crate::rules::api::Timers>(),
            size_of::<rhai::Map>(),
            size_of::<crate::engine::timers::TimerEntry>(),
            size_of::<crate::engine::reorder::PendingEvent>()
        );
    }
}
