//! Event-time timers of all conversations in one queue ordered by deadline. Entries are
//! never removed when a timer is cancelled or restarted: the conversation's own timer
//! list is the truth, and a popped entry that no longer matches it is dropped. That keeps
//! cancel and restart O(1) on the per-event path.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use rhai::ImmutableString;

use crate::timestamp::Nanos;

/// What a queue entry stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum TimerKind {
    /// A timer a rule started by name (the entry's `name`).
    Named = 0,
    /// The inactivity check of an outcome (`on_idle`), re-armed lazily from `last_ts`.
    Idle = 1,
    /// Drops a decided conversation's tombstone once its retention has passed.
    Purge = 2,
}

/// One queue entry (40 bytes: there is one per open conversation and outcome).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimerEntry {
    pub deadline: Nanos,
    /// Fixed-seed hash of the conversation key: equal deadlines fire in the same order
    /// in every run, whatever the arrival order was.
    pub key_hash: u64,
    /// The timer's name, for `Named`.
    #[serde(with = "super::snapshot::opt_name")]
    pub name: Option<ImmutableString>,
    pub slot: u32,
    pub gen: u32,
    pub outcome: u16,
    pub kind: TimerKind,
}

impl Ord for TimerEntry {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.deadline, self.key_hash, self.slot, self.outcome, self.kind, self.gen)
            .cmp(&(o.deadline, o.key_hash, o.slot, o.outcome, o.kind, o.gen))
            .then_with(|| self.name.as_ref().map(|n| n.as_str()).cmp(&o.name.as_ref().map(|n| n.as_str())))
    }
}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Width of the buckets far timers wait in (event time).
const BUCKET: Nanos = 60 * crate::timestamp::NANOS_PER_SEC;

/// Timers that may soon be due sit in a heap; later ones wait unsorted in buckets of one
/// minute of event time, moved into the heap a bucket at a time as the watermark reaches
/// them. Most timers are windows of hours or days (follow-ups, idle checks, purges), so
/// the heap keeps only the current minute's few entries, not one per open conversation:
/// popping from a heap of every timer walked a cache-cold path from the root each time.
pub struct TimerQueue {
    /// Every entry with a deadline before `horizon`.
    near: BinaryHeap<Reverse<TimerEntry>>,
    /// By bucket (deadline div [`BUCKET`]); every deadline here is at or after `horizon`.
    far: hashbrown::HashMap<i64, Vec<TimerEntry>>,
    /// The buckets of `far`, earliest first.
    far_order: BinaryHeap<Reverse<i64>>,
    /// The end of the last bucket moved into `near`.
    horizon: Nanos,
}

impl Default for TimerQueue {
    fn default() -> Self {
        TimerQueue {
            near: BinaryHeap::new(),
            far: Default::default(),
            far_order: BinaryHeap::new(),
            horizon: Nanos::MIN,
        }
    }
}

impl TimerQueue {
    pub fn push(&mut self, e: TimerEntry) {
        if e.deadline < self.horizon {
            self.near.push(Reverse(e));
            return;
        }
        let bucket = e.deadline.div_euclid(BUCKET);
        let list = self.far.entry(bucket).or_insert_with(|| {
            self.far_order.push(Reverse(bucket));
            Vec::new()
        });
        list.push(e);
    }

    /// The earliest deadline if it is at or before `until`; buckets that start by then
    /// join the heap first, so nothing waiting in them can be earlier than its top.
    #[inline]
    pub fn peek_due(&mut self, until: Nanos) -> Option<Nanos> {
        while let Some(&Reverse(bucket)) = self.far_order.peek() {
            if bucket.saturating_mul(BUCKET) > until {
                break;
            }
            self.far_order.pop();
            self.horizon = bucket.saturating_add(1).saturating_mul(BUCKET);
            if let Some(list) = self.far.remove(&bucket) {
                self.near.extend(list.into_iter().map(Reverse));
            }
        }
        self.near.peek().map(|Reverse(e)| e.deadline).filter(|&d| d <= until)
    }

    /// Takes the earliest entry of the heap (after [`Self::peek_due`] said it is due).
    pub fn pop(&mut self) -> Option<TimerEntry> {
        self.near.pop().map(|Reverse(e)| e)
    }

    /// The next entry to pop and the two that may follow it (the heap's top and its
    /// children), for prefetching.
    pub fn soon(&self) -> &[Reverse<TimerEntry>] {
        let s = self.near.as_slice();
        &s[..s.len().min(3)]
    }

    /// Entries queued, stale ones included.
    pub fn len(&self) -> usize {
        self.entries().count()
    }

    pub fn is_empty(&self) -> bool {
        self.near.is_empty() && self.far.is_empty()
    }

    fn entries(&self) -> impl Iterator<Item = &TimerEntry> {
        self.near.iter().map(|Reverse(e)| e).chain(self.far.values().flatten())
    }
}

/// A checkpoint keeps the entries as one list (as the single heap it replaced wrote them).
#[derive(serde::Serialize)]
struct Flat<'a> {
    heap: Vec<&'a TimerEntry>,
}

#[derive(serde::Deserialize)]
struct FlatOwned {
    heap: Vec<TimerEntry>,
}

impl serde::Serialize for TimerQueue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut heap: Vec<&TimerEntry> = self.entries().collect();
        // In order, so the same state always writes the same bytes.
        heap.sort();
        Flat { heap }.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for TimerQueue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut q = TimerQueue::default();
        for e in FlatOwned::deserialize(d)?.heap {
            q.push(e);
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_deadline_then_key() {
        let mut q = TimerQueue::default();
        let e = |deadline, key_hash, kind, name: Option<&str>| TimerEntry {
            deadline,
            key_hash,
            name: name.map(Into::into),
            slot: 0,
            gen: 0,
            outcome: 0,
            kind,
        };
        q.push(e(20, 1, TimerKind::Idle, None));
        q.push(e(10, 9, TimerKind::Purge, None));
        q.push(e(10, 2, TimerKind::Named, Some("b")));
        q.push(e(10, 2, TimerKind::Named, Some("a")));
        let order: Vec<_> = std::iter::from_fn(|| q.peek_due(Nanos::MAX).and_then(|_| q.pop()))
            .map(|e| (e.deadline, e.key_hash, e.kind, e.name.map(|n| n.to_string())))
            .collect();
        assert_eq!(
            order,
            vec![
                (10, 2, TimerKind::Named, Some("a".into())),
                (10, 2, TimerKind::Named, Some("b".into())),
                (10, 9, TimerKind::Purge, None),
                (20, 1, TimerKind::Idle, None)
            ]
        );
        assert_eq!(std::mem::size_of::<TimerEntry>(), 40);
    }

    proptest::proptest! {
        /// Pushes and pops as the engine makes them (a watermark that only goes up)
        /// come out exactly as from one heap of every entry.
        #[test]
        fn buckets_pop_as_one_heap_would(
            steps in proptest::collection::vec((0i64..400, 0u64..3, proptest::bool::ANY), 1..200),
        ) {
            let mut q = TimerQueue::default();
            let mut reference = BinaryHeap::new();
            let mut wm = 0i64;
            for (i, (offset, key_hash, advance)) in steps.into_iter().enumerate() {
                // Deadlines from the watermark up to several buckets past it.
                let e = TimerEntry {
                    deadline: wm + offset * BUCKET / 50,
                    key_hash,
                    name: None,
                    slot: i as u32,
                    gen: 0,
                    outcome: 0,
                    kind: TimerKind::Idle,
                };
                q.push(e.clone());
                reference.push(Reverse(e));
                if advance {
                    wm += BUCKET / 3;
                    loop {
                        let want = reference.peek().map(|Reverse(e)| e.deadline).filter(|&d| d <= wm);
                        proptest::prop_assert_eq!(q.peek_due(wm), want);
                        if want.is_none() {
                            break;
                        }
                        // The engine's prefetch pipeline: `soon` starts with the entry
                        // popped next, and the heap's next top is among the rest.
                        let soon: Vec<TimerEntry> = q.soon().iter().map(|Reverse(e)| e.clone()).collect();
                        let popped = q.pop();
                        proptest::prop_assert_eq!(soon.first(), popped.as_ref());
                        if let Some(Reverse(next)) = q.soon().first() {
                            proptest::prop_assert!(soon[1..].contains(next));
                        }
                        proptest::prop_assert_eq!(popped, reference.pop().map(|Reverse(e)| e));
                    }
                }
                proptest::prop_assert_eq!(q.len(), reference.len());
            }
        }
    }
}
