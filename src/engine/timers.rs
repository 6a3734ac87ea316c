//! Event-time timers of all conversations in one queue ordered by deadline. Entries are
//! never removed when a timer is cancelled or restarted: the conversation's own timer
//! list is the truth, and a popped entry that no longer matches it is dropped. That keeps
//! cancel and restart O(1) on the per-event path.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use rhai::ImmutableString;

use crate::timestamp::Nanos;

/// What a queue entry stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// The inactivity check of an outcome (`on_idle`), re-armed lazily from `last_ts`.
    Idle,
    /// A timer a rule started by name.
    Named(ImmutableString),
    /// Drops a decided conversation's tombstone once its retention has passed.
    Purge,
}

impl TimerKind {
    fn rank(&self) -> (u8, &str) {
        match self {
            TimerKind::Named(n) => (0, n.as_str()),
            TimerKind::Idle => (1, ""),
            TimerKind::Purge => (2, ""),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerEntry {
    pub deadline: Nanos,
    /// Fixed-seed hash of the conversation key: equal deadlines fire in the same order
    /// in every run, whatever the arrival order was.
    pub key_hash: u64,
    pub slot: u32,
    pub gen: u32,
    pub outcome: u16,
    pub kind: TimerKind,
}

impl Ord for TimerEntry {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.deadline, self.key_hash, self.slot, self.outcome, self.kind.rank(), self.gen).cmp(&(
            o.deadline,
            o.key_hash,
            o.slot,
            o.outcome,
            o.kind.rank(),
            o.gen,
        ))
    }
}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Default)]
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
        let e = |deadline, key_hash, kind| TimerEntry { deadline, key_hash, slot: 0, gen: 0, outcome: 0, kind };
        q.push(e(20, 1, TimerKind::Idle));
        q.push(e(10, 9, TimerKind::Purge));
        q.push(e(10, 2, TimerKind::Named("b".into())));
        q.push(e(10, 2, TimerKind::Named("a".into())));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|e| (e.deadline, e.key_hash, e.kind)).collect();
        assert_eq!(
            order,
            vec![
                (10, 2, TimerKind::Named("a".into())),
                (10, 2, TimerKind::Named("b".into())),
                (10, 9, TimerKind::Purge),
                (20, 1, TimerKind::Idle)
            ]
        );
    }
}
