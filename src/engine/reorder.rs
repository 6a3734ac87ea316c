//! The reorder buffer: accepted events wait here until the watermark passes their `ts`,
//! then leave in (`ts`, arrival) order. Each conversation links its waiting events so a
//! duplicate that is still waiting is found without scanning the whole buffer.
//!
//! Arrival is nearly in order (jitter within the allowed lateness), so the order is kept
//! in a sorted queue: most events go to its back, a few slightly early ones a short step
//! before it, and the next to leave is at its front, all without the sift of a heap. An
//! event that would land far from the back goes to a heap beside it instead, so a
//! badly ordered stream costs a heap's logarithm per event, never a long shift.
//!
//! The conversation lists live in a compact array beside the events (the next entry and
//! a fingerprint of the id): the dedupe check on every event and the unlink on every pop
//! walk those few bytes, and the check reads an event only when its fingerprint matches.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::state::{Conv, NIL};
use crate::kinds::Kind;
use crate::timestamp::Nanos;

/// An accepted event, owned, waiting to be applied.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PendingEvent {
    pub slot: u32,
    pub ts: Nanos,
    pub seq: u64,
    pub kind: Kind,
    /// The type name, kept only for types outside [`crate::kinds::KNOWN`].
    pub kind_name: Option<Box<str>>,
    /// Inline up to 24 bytes (typical ids): no allocation per buffered event.
    pub id: compact_str::CompactString,
    pub cost: Option<Decimal>,
    pub intent: Option<Box<str>>,
    /// Raw attributes, kept only when a rule reads this event.
    pub attrs: Option<Box<str>>,
}

/// The checkpoint's form of one entry (an event and the next of its conversation).
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    ev: PendingEvent,
    next: u32,
}

#[derive(Serialize)]
struct EntryRef<'a> {
    ev: &'a PendingEvent,
    next: u32,
}

/// Where an entry's conversation list goes next, and its id's fingerprint.
#[derive(Clone, Copy, Debug, Default)]
struct Link {
    next: u32,
    fp: u32,
}

/// (`ts`, seq, entry index): the order events leave in, then where the event is.
type Key = (Nanos, u64, u32);

/// How far before the back of the queue an event may be inserted; one earlier than
/// that goes to the heap.
const MAX_STEP_BACK: usize = 32;

#[derive(Default)]
pub struct Reorder {
    /// Fingerprints ids; they are never stored, so the seed may differ between runs.
    hasher: hashbrown::DefaultHashBuilder,
    entries: Vec<Option<PendingEvent>>,
    /// One per entry.
    links: Vec<Link>,
    free: Vec<u32>,
    /// Sorted ascending.
    queue: VecDeque<Key>,
    /// Events that arrived too far out of order for `queue`.
    heap: BinaryHeap<Reverse<Key>>,
}

/// The checkpoint's shape: the entries and one list of every waiting key (the shape
/// of the former heap-only buffer, so checkpoints stay readable both ways).
#[derive(Serialize)]
struct WireRef<'a> {
    entries: EntriesRef<'a>,
    free: &'a [u32],
    heap: Vec<Key>,
}

struct EntriesRef<'a>(&'a Reorder);

impl Serialize for EntriesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        s.collect_seq(r.entries.iter().zip(&r.links).map(|(e, l)| e.as_ref().map(|ev| EntryRef { ev, next: l.next })))
    }
}

#[derive(Deserialize)]
struct Wire {
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    heap: Vec<Key>,
}

impl Serialize for Reorder {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut keys: Vec<Key> = self.queue.iter().copied().chain(self.heap.iter().map(|r| r.0)).collect();
        keys.sort_unstable();
        WireRef { entries: EntriesRef(self), free: &self.free, heap: keys }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Reorder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let mut keys = w.heap;
        keys.sort_unstable();
        let mut r = Reorder { free: w.free, queue: keys.into(), ..Default::default() };
        (r.entries, r.links) = w
            .entries
            .into_iter()
            .map(|e| match e {
                Some(Entry { ev, next }) => {
                    let fp = r.fingerprint(&ev.id).0;
                    (Some(ev), Link { next, fp })
                }
                None => (None, Link { next: NIL, fp: 0 }),
            })
            .unzip();
        Ok(r)
    }
}

/// A hash of an event id, for the dedupe walk: computed once per event (for
/// [`Reorder::contains`], then [`Reorder::push`]) by [`Reorder::fingerprint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(u32);

impl Reorder {
    pub fn fingerprint(&self, id: &str) -> Fingerprint {
        Fingerprint(self.hasher.hash_one(id) as u32)
    }

    /// Adds an event to the buffer and to its conversation's list; `fp` is the
    /// fingerprint of its id.
    pub fn push(&mut self, conv: &mut Conv, ev: PendingEvent, fp: Fingerprint) {
        debug_assert_eq!(fp, self.fingerprint(&ev.id), "the fingerprint of another id");
        self.insert(conv, ev, fp);
    }

    fn insert(&mut self, conv: &mut Conv, ev: PendingEvent, fp: Fingerprint) {
        let key = (ev.ts, ev.seq);
        let link = Link { next: conv.pending_head, fp: fp.0 };
        let idx = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = Some(ev);
                self.links[i as usize] = link;
                i
            }
            None => {
                self.entries.push(Some(ev));
                self.links.push(link);
                (self.entries.len() - 1) as u32
            }
        };
        conv.pending_head = idx;
        self.enqueue((key.0, key.1, idx));
    }

    fn enqueue(&mut self, key: Key) {
        let back = self.queue.len();
        if self.queue.back().is_none_or(|&b| b < key) {
            self.queue.push_back(key);
            return;
        }
        let floor = back.saturating_sub(MAX_STEP_BACK);
        // queue[at] > key throughout; stop where the one before is smaller.
        let mut at = back - 1;
        while at > floor && self.queue[at - 1] > key {
            at -= 1;
        }
        if at == floor && floor > 0 && self.queue[floor - 1] > key {
            self.heap.push(Reverse(key));
        } else {
            self.queue.insert(at, key);
        }
    }

    /// Whether the next key to leave is the heap's top (smaller than the queue's front).
    #[inline]
    fn next_from_heap(&self) -> bool {
        match (self.queue.front(), self.heap.peek()) {
            (Some(q), Some(Reverse(h))) => h < q,
            (q, _) => q.is_none(),
        }
    }

    /// The next key to leave.
    #[inline]
    fn first(&self) -> Option<Key> {
        if self.next_from_heap() {
            self.heap.peek().map(|r| r.0)
        } else {
            self.queue.front().copied()
        }
    }

    /// The (`ts`, seq) of the next event to leave.
    #[inline]
    pub fn peek(&self) -> Option<(Nanos, u64)> {
        self.first().map(|(ts, seq, _)| (ts, seq))
    }

    /// The slot of the next event to leave.
    pub fn peek_slot(&self) -> Option<u32> {
        let (_, _, idx) = self.first()?;
        self.entries[idx as usize].as_ref().map(|e| e.slot)
    }

    /// Takes the next event out; `conv` must be the conversation of [`Self::peek_slot`].
    pub fn pop(&mut self, conv: &mut Conv) -> Option<PendingEvent> {
        let (_, _, idx) = if self.next_from_heap() { self.heap.pop()?.0 } else { self.queue.pop_front()? };
        let ev = self.entries[idx as usize].take()?;
        let next = self.links[idx as usize].next;
        // Unlink from the conversation's list (short: events of one conversation
        // waiting within the lateness bound; the oldest, usually the one leaving, is
        // last, as pushing puts the newest first).
        if conv.pending_head == idx {
            conv.pending_head = next;
        } else {
            let mut cur = conv.pending_head;
            while let Some(l) = self.links.get_mut(cur as usize) {
                if l.next == idx {
                    l.next = next;
                    break;
                }
                cur = l.next;
            }
        }
        self.free.push(idx);
        Some(ev)
    }

    /// Whether an event with this id (`fp` its fingerprint) is waiting for the
    /// conversation.
    pub fn contains(&self, conv: &Conv, id: &str, fp: Fingerprint) -> bool {
        let fp = fp.0;
        let mut cur = conv.pending_head;
        while let Some(l) = self.links.get(cur as usize) {
            if l.fp == fp
                && self.entries[cur as usize]
                    .as_ref()
                    .is_some_and(|e| crate::bytes::same(e.id.as_bytes(), id.as_bytes()))
            {
                return true;
            }
            cur = l.next;
        }
        false
    }

    /// Events waiting for one conversation.
    pub fn count_for(&self, conv: &Conv) -> usize {
        let (mut n, mut cur) = (0, conv.pending_head);
        while let (Some(l), Some(Some(_))) = (self.links.get(cur as usize), self.entries.get(cur as usize)) {
            n += 1;
            cur = l.next;
        }
        n
    }

    pub fn len(&self) -> usize {
        self.queue.len() + self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::ConvTable;

    fn ev(slot: u32, ts: Nanos, seq: u64, id: &str) -> PendingEvent {
        PendingEvent { slot, ts, seq, id: id.into(), ..Default::default() }
    }

    fn push(r: &mut Reorder, conv: &mut Conv, ev: PendingEvent) {
        let fp = r.fingerprint(&ev.id);
        r.push(conv, ev, fp);
    }

    fn is_waiting(r: &Reorder, conv: &Conv, id: &str) -> bool {
        r.contains(conv, id, r.fingerprint(id))
    }

    #[test]
    fn leaves_in_ts_then_arrival_order() {
        let mut t = ConvTable::default();
        let a = t.get_or_insert("t", "a");
        let b = t.get_or_insert("t", "b");
        let mut r = Reorder::default();
        push(&mut r, t.get_mut(a), ev(a, 30, 0, "a1"));
        push(&mut r, t.get_mut(b), ev(b, 10, 1, "b1"));
        push(&mut r, t.get_mut(a), ev(a, 10, 2, "a2"));
        push(&mut r, t.get_mut(a), ev(a, 20, 3, "a3"));
        assert!(is_waiting(&r, t.get(a), "a3") && is_waiting(&r, t.get(a), "a1"));
        assert!(!is_waiting(&r, t.get(b), "a3"));
        let mut out = vec![];
        while let Some(slot) = r.peek_slot() {
            let e = r.pop(t.get_mut(slot)).unwrap();
            assert!(!is_waiting(&r, t.get(slot), &e.id));
            out.push(e.id.to_string());
        }
        assert_eq!(out, ["b1", "a2", "a3", "a1"]);
        assert_eq!(t.get(a).pending_head, NIL);
        assert!(r.is_empty());
    }

    #[test]
    fn a_fingerprint_match_is_not_taken_for_the_same_id() {
        let mut t = ConvTable::default();
        let a = t.get_or_insert("t", "a");
        let mut r = Reorder::default();
        // Two ids that share a fingerprint (forced here; rare, but a real hash has them).
        let fp = Fingerprint(7);
        r.insert(t.get_mut(a), ev(a, 10, 0, "x"), fp);
        assert!(r.contains(t.get(a), "x", fp));
        assert!(!r.contains(t.get(a), "y", fp), "another id with the same fingerprint is no duplicate");
    }

    /// The bytes the derived `Serialize` of the former layout wrote, for any state:
    /// holes in the entries, reused slots, several conversations.
    #[test]
    fn writes_the_bytes_of_the_former_layout() {
        #[derive(serde::Serialize)]
        struct Former<'a> {
            entries: Vec<Option<Entry>>,
            free: &'a [u32],
            heap: Vec<Key>,
        }
        let mut t = ConvTable::default();
        let (a, b) = (t.get_or_insert("t", "a"), t.get_or_insert("t", "b"));
        let mut r = Reorder::default();
        for (seq, (slot, ts)) in [(a, 50), (b, 10), (a, 40), (b, 20), (a, 30), (b, 5)].into_iter().enumerate() {
            push(&mut r, t.get_mut(slot), ev(slot, ts, seq as u64, &format!("e{seq}")));
        }
        for _ in 0..3 {
            let slot = r.peek_slot().unwrap();
            r.pop(t.get_mut(slot)).unwrap();
        }
        push(&mut r, t.get_mut(a), ev(a, 45, 6, "e6"));
        assert!(r.entries.iter().any(Option::is_none) && !r.free.is_empty(), "holes and a reused slot");
        let mut heap: Vec<Key> = r.queue.iter().chain(r.heap.iter().map(|k| &k.0)).copied().collect();
        heap.sort_unstable();
        let entries =
            r.entries.iter().zip(&r.links).map(|(e, l)| e.clone().map(|ev| Entry { ev, next: l.next })).collect();
        let former = Former { entries, free: &r.free, heap };
        let cfg = bincode::config::standard();
        assert_eq!(
            bincode::serde::encode_to_vec(&r, cfg).unwrap(),
            bincode::serde::encode_to_vec(&former, cfg).unwrap()
        );
        assert_eq!(serde_json::to_string(&r).unwrap(), serde_json::to_string(&former).unwrap());
        // Read back, the lists find every waiting event and only those.
        let back: Reorder =
            bincode::serde::decode_from_slice(&bincode::serde::encode_to_vec(&r, cfg).unwrap(), cfg).unwrap().0;
        for seq in 0..7 {
            let id = format!("e{seq}");
            let waiting = r.entries.iter().flatten().any(|e| *e.id == id);
            assert_eq!(is_waiting(&back, t.get(a), &id) || is_waiting(&back, t.get(b), &id), waiting, "{id}");
        }
        assert_eq!(back.count_for(t.get(a)) + back.count_for(t.get(b)), 4);
    }

    #[test]
    fn reads_and_writes_the_checkpoint_shape_of_the_heap_only_buffer() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct HeapOnly {
            entries: Vec<Option<Entry>>,
            free: Vec<u32>,
            heap: BinaryHeap<Reverse<Key>>,
        }
        let mut t = ConvTable::default();
        let a = t.get_or_insert("t", "a");
        let mut old = Reorder::default();
        for (seq, ts) in [50, 10, 40, 20, 30].into_iter().enumerate() {
            push(&mut old, t.get_mut(a), ev(a, ts, seq as u64, &format!("e{seq}")));
        }
        let cfg = bincode::config::standard();
        // Written by the heap-only buffer, which pushed keys as they arrived: its list is
        // in the heap's own order, not sorted.
        let mut keys: Vec<Key> = old.queue.iter().chain(old.heap.iter().map(|r| &r.0)).copied().collect();
        keys.sort_by_key(|k| k.1);
        let mut heap = BinaryHeap::new();
        keys.into_iter().for_each(|k| heap.push(Reverse(k)));
        assert!(!heap.as_slice().is_sorted());
        let entries =
            old.entries.into_iter().zip(&old.links).map(|(e, l)| e.map(|ev| Entry { ev, next: l.next })).collect();
        let heap_only = HeapOnly { entries, free: old.free, heap };
        let bytes = bincode::serde::encode_to_vec(&heap_only, cfg).unwrap();
        let mut r: Reorder = bincode::serde::decode_from_slice(&bytes, cfg).unwrap().0;
        // And read back by it.
        let back: HeapOnly =
            bincode::serde::decode_from_slice(&bincode::serde::encode_to_vec(&r, cfg).unwrap(), cfg).unwrap().0;
        assert_eq!(back.heap.len(), 5);
        let mut out = vec![];
        // The lists came back too: every event is found as waiting for its conversation.
        assert_eq!(r.count_for(t.get(a)), 5);
        assert!((0..5).all(|i| is_waiting(&r, t.get(a), &format!("e{i}"))));
        while let Some(slot) = r.peek_slot() {
            out.push(r.pop(t.get_mut(slot)).unwrap().ts);
        }
        assert_eq!(out, [10, 20, 30, 40, 50]);
    }

    proptest::proptest! {
        /// Whatever the arrival order (near or far out of order, pops in between, a
        /// checkpoint round trip), events leave in (`ts`, seq) order.
        #[test]
        fn leaves_in_order_whatever_the_arrival(
            steps in proptest::collection::vec((0i64..4000, proptest::sample::select(vec![0u8, 0, 0, 0, 1, 2])), 1..300),
            spread in proptest::sample::select(vec![3i64, 40, 400, 4000]),
            round_trip_at in 0usize..300,
        ) {
            let mut t = ConvTable::default();
            let slots: Vec<u32> = (0..5).map(|i| t.get_or_insert("t", &format!("c{i}"))).collect();
            let mut r = Reorder::default();
            let mut popped = vec![];
            for (seq, (offset, pops)) in steps.iter().enumerate() {
                // Time moves forward; each event lands up to `spread` before it.
                let ts = seq as i64 * 10 - offset % spread;
                let slot = slots[seq % slots.len()];
                push(&mut r, t.get_mut(slot), ev(slot, ts, seq as u64, &format!("e{seq}")));
                if seq == round_trip_at {
                    let bytes = bincode::serde::encode_to_vec(&r, bincode::config::standard()).unwrap();
                    r = bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap().0;
                }
                for _ in 0..*pops {
                    let Some(slot) = r.peek_slot() else { break };
                    let key = r.peek().unwrap();
                    let e = r.pop(t.get_mut(slot)).unwrap();
                    proptest::prop_assert_eq!(key, (e.ts, e.seq));
                    popped.push((e.ts, e.seq));
                }
            }
            // Each pop took the smallest waiting at the time.
            let mut waiting = std::collections::BTreeSet::new();
            let mut expect = vec![];
            for (seq, (offset, pops)) in steps.iter().enumerate() {
                waiting.insert((seq as i64 * 10 - offset % spread, seq as u64));
                for _ in 0..*pops {
                    let Some(&first) = waiting.iter().next() else { break };
                    waiting.remove(&first);
                    expect.push(first);
                }
            }
            proptest::prop_assert_eq!(&popped, &expect);
            // The dedupe check finds exactly the events still waiting.
            for seq in 0..steps.len() {
                let still = waiting.iter().any(|&(_, s)| s == seq as u64);
                proptest::prop_assert_eq!(is_waiting(&r, t.get(slots[seq % slots.len()]), &format!("e{seq}")), still);
            }
            let mut got = vec![];
            while let Some(slot) = r.peek_slot() {
                let e = r.pop(t.get_mut(slot)).unwrap();
                got.push((e.ts, e.seq));
            }
            proptest::prop_assert_eq!(got, waiting.into_iter().collect::<Vec<_>>());
            proptest::prop_assert!(r.is_empty());
            for s in slots {
                proptest::prop_assert_eq!(t.get(s).pending_head, NIL);
            }
        }
    }
}
