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

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<TimerEntry>>,
}

impl TimerQueue {
    pub fn push(&mut self, e: TimerEntry) {
        self.heap.push(Reverse(e));
    }

    #[inline]
    pub fn peek_deadline(&self) -> Option<Nanos> {
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    pub fn pop(&mut self) -> Option<TimerEntry> {
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// Entries queued, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
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
        let order: Vec<_> = std::iter::from_fn(|| q.pop())
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
}
