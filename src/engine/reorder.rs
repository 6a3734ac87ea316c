//! The reorder buffer: accepted events wait here until the watermark passes their `ts`,
//! then leave in (`ts`, arrival) order. Each conversation links its waiting events so a
//! duplicate that is still waiting is found without scanning the whole buffer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rust_decimal::Decimal;

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

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    ev: PendingEvent,
    next: u32,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Reorder {
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(Nanos, u64, u32)>>,
}

impl Reorder {
    /// Adds an event to the buffer and to its conversation's list.
    pub fn push(&mut self, conv: &mut Conv, ev: PendingEvent) {
        let key = (ev.ts, ev.seq);
        let entry = Entry { ev, next: conv.pending_head };
        let idx = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = Some(entry);
                i
            }
            None => {
                self.entries.push(Some(entry));
                (self.entries.len() - 1) as u32
            }
        };
        conv.pending_head = idx;
        self.heap.push(Reverse((key.0, key.1, idx)));
    }

    /// The (`ts`, seq) of the next event to leave.
    #[inline]
    pub fn peek(&self) -> Option<(Nanos, u64)> {
        self.heap.peek().map(|Reverse((ts, seq, _))| (*ts, *seq))
    }

    /// The slot of the next event to leave.
    pub fn peek_slot(&self) -> Option<u32> {
        let Reverse((_, _, idx)) = self.heap.peek()?;
        self.entries[*idx as usize].as_ref().map(|e| e.ev.slot)
    }

    /// Takes the next event out; `conv` must be the conversation of [`Self::peek_slot`].
    pub fn pop(&mut self, conv: &mut Conv) -> Option<PendingEvent> {
        let Reverse((_, _, idx)) = self.heap.pop()?;
        let entry = self.entries[idx as usize].take()?;
        // Unlink from the conversation's list (short: events of one conversation
        // waiting within the lateness bound).
        if conv.pending_head == idx {
            conv.pending_head = entry.next;
        } else {
            let mut cur = conv.pending_head;
            while cur != NIL {
                let Some(e) = self.entries[cur as usize].as_mut() else { break };
                if e.next == idx {
                    e.next = entry.next;
                    break;
                }
                cur = e.next;
            }
        }
        self.free.push(idx);
        Some(entry.ev)
    }

    /// Whether an event with this id is waiting for the conversation.
    pub fn contains(&self, conv: &Conv, id: &str) -> bool {
        let mut cur = conv.pending_head;
        while cur != NIL {
            let Some(e) = self.entries[cur as usize].as_ref() else { return false };
            if crate::bytes::same(e.ev.id.as_bytes(), id.as_bytes()) {
                return true;
            }
            cur = e.next;
        }
        false
    }

    /// Events waiting for one conversation.
    pub fn count_for(&self, conv: &Conv) -> usize {
        let (mut n, mut cur) = (0, conv.pending_head);
        while let Some(e) = self.entries.get(cur as usize).and_then(Option::as_ref) {
            n += 1;
            cur = e.next;
        }
        n
    }

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
    use crate::engine::state::ConvTable;

    fn ev(slot: u32, ts: Nanos, seq: u64, id: &str) -> PendingEvent {
        PendingEvent { slot, ts, seq, id: id.into(), ..Default::default() }
    }

    #[test]
    fn leaves_in_ts_then_arrival_order() {
        let mut t = ConvTable::default();
        let a = t.get_or_insert("t", "a");
        let b = t.get_or_insert("t", "b");
        let mut r = Reorder::default();
        r.push(t.get_mut(a), ev(a, 30, 0, "a1"));
        r.push(t.get_mut(b), ev(b, 10, 1, "b1"));
        r.push(t.get_mut(a), ev(a, 10, 2, "a2"));
        r.push(t.get_mut(a), ev(a, 20, 3, "a3"));
        assert!(r.contains(t.get(a), "a3"));
        assert!(!r.contains(t.get(b), "a3"));
        let mut out = vec![];
        while let Some(slot) = r.peek_slot() {
            let e = r.pop(t.get_mut(slot)).unwrap();
            assert!(!r.contains(t.get(slot), &e.id));
            out.push(e.id.to_string());
        }
        assert_eq!(out, ["b1", "a2", "a3", "a1"]);
        assert_eq!(t.get(a).pending_head, NIL);
        assert!(r.is_empty());
    }
}
