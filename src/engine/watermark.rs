//! The event-time watermark: the largest `ts` seen minus the allowed lateness, never
//! moving back. End of input and the wall clock can push it further.

use crate::timestamp::Nanos;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    lateness: Nanos,
    max_ts: Option<Nanos>,
    current: Nanos,
}

impl Watermark {
    pub fn new(lateness: Nanos) -> Self {
        Watermark { lateness, max_ts: None, current: Nanos::MIN }
    }

    /// The watermark now; `Nanos::MIN` before the first event.
    #[inline]
    pub fn current(&self) -> Nanos {
        self.current
    }

    pub fn max_ts(&self) -> Option<Nanos> {
        self.max_ts
    }

    pub fn lateness(&self) -> Nanos {
        self.lateness
    }

    /// Changes the allowed lateness from now on (a restart with a new setting); the
    /// watermark itself stays where it is.
    pub fn set_lateness(&mut self, lateness: Nanos) {
        self.lateness = lateness;
    }

    /// Whether an event with this `ts` arrives too late to be applied.
    #[inline]
    pub fn is_late(&self, ts: Nanos) -> bool {
        ts < self.current
    }

    /// Records an accepted event's `ts`; returns whether the watermark moved.
    #[inline]
    pub fn observe(&mut self, ts: Nanos) -> bool {
        if self.max_ts.is_some_and(|m| m >= ts) {
            return false;
        }
        self.max_ts = Some(ts);
        self.advance_to(ts.saturating_sub(self.lateness))
    }

    /// Moves the watermark up to `t` (end of input, wall clock); returns whether it moved.
    pub fn advance_to(&mut self, t: Nanos) -> bool {
        if t > self.current {
            self.current = t;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_and_monotonic() {
        let mut w = Watermark::new(5);
        assert!(!w.is_late(i64::MIN + 1));
        assert!(w.observe(100));
        assert_eq!(w.current(), 95);
        assert!(!w.observe(90));
        assert!(w.is_late(94));
        assert!(!w.is_late(95));
        assert!(w.advance_to(200));
        assert!(!w.observe(150));
        assert_eq!(w.current(), 200);
    }
}
