//! The event-time watermark: the largest `ts` seen minus the allowed lateness, never
//! moving back. End of input and the wall clock can push it further.
//!
//! When several sources feed one engine (files, HTTP, Fluvio partitions in the
//! service), each source keeps its own progress and the watermark is the minimum over
//! the sources that are not idle, so a partition that lags behind is not made late by
//! one that runs ahead. A source is idle once no input has arrived from it for the idle
//! timeout (arrival times are logged values, so recovery replays this exactly); an idle
//! source holds nothing back until it sends again.

use crate::timestamp::Nanos;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    lateness: Nanos,
    max_ts: Option<Nanos>,
    current: Nanos,
    /// Per-source progress; empty for a single stream (`verdict replay`).
    sources: Vec<SourceClock>,
    /// The source events now come from, an index into `sources`.
    from: usize,
}

/// One source's progress.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceClock {
    pub name: String,
    /// Largest `ts` accepted from it.
    pub max_ts: Option<Nanos>,
    /// Arrival time of its last input.
    pub last_arrival: Nanos,
    pub idle: bool,
}

impl SourceClock {
    /// This source's own watermark.
    pub fn watermark(&self, lateness: Nanos) -> Option<Nanos> {
        self.max_ts.map(|t| t.saturating_sub(lateness))
    }
}

impl Watermark {
    pub fn new(lateness: Nanos) -> Self {
        Watermark { lateness, max_ts: None, current: Nanos::MIN, sources: Vec::new(), from: 0 }
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
        if self.max_ts.is_none_or(|m| m < ts) {
            self.max_ts = Some(ts);
        }
        let Some(src) = self.sources.get_mut(self.from) else {
            // A single stream: its own progress is the watermark.
            return self.max_ts == Some(ts) && self.advance_to(ts.saturating_sub(self.lateness));
        };
        if src.max_ts.is_some_and(|m| m >= ts) {
            return false;
        }
        src.max_ts = Some(ts);
        self.merge()
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

    /// Input from `name` arrived at `arrival`: later events are observed as that
    /// source's, and it is active again. A new source holds the watermark back from
    /// now on, until its first event or until it goes idle.
    pub fn from_source(&mut self, name: &str, arrival: Nanos) {
        let i = match self.sources.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.sources.push(SourceClock {
                    name: name.to_string(),
                    max_ts: None,
                    last_arrival: arrival,
                    idle: false,
                });
                self.sources.len() - 1
            }
        };
        let s = &mut self.sources[i];
        s.last_arrival = s.last_arrival.max(arrival);
        s.idle = false;
        self.from = i;
    }

    /// Marks the sources with no input for `timeout` before `now` idle; returns whether
    /// the watermark moved because they no longer hold it back.
    pub fn mark_idle(&mut self, now: Nanos, timeout: Nanos) -> bool {
        let mut changed = false;
        for s in &mut self.sources {
            if !s.idle && now.saturating_sub(s.last_arrival) >= timeout {
                s.idle = true;
                changed = true;
            }
        }
        changed && self.merge()
    }

    /// Whether every source is idle (or there is none yet): only then may the wall
    /// clock move the watermark.
    pub fn all_idle(&self) -> bool {
        self.sources.iter().all(|s| s.idle)
    }

    pub fn sources(&self) -> &[SourceClock] {
        &self.sources
    }

    /// Moves the watermark to the least progress of the active sources.
    fn merge(&mut self) -> bool {
        let mut least: Option<Nanos> = None;
        for s in self.sources.iter().filter(|s| !s.idle) {
            // An active source that has sent no event yet holds everything back.
            let t = match s.max_ts {
                Some(t) => t,
                None => return false,
            };
            least = Some(least.map_or(t, |l| l.min(t)));
        }
        match least {
            Some(t) => self.advance_to(t.saturating_sub(self.lateness)),
            None => false,
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

    #[test]
    fn one_named_source_behaves_like_a_single_stream() {
        let (mut a, mut b) = (Watermark::new(5), Watermark::new(5));
        b.from_source("http", 0);
        for ts in [100, 90, 130, 131, 120] {
            assert_eq!(a.observe(ts), b.observe(ts), "at {ts}");
            assert_eq!(a.current(), b.current());
        }
    }

    #[test]
    fn the_slowest_active_source_holds_the_watermark() {
        let mut w = Watermark::new(10);
        w.from_source("p0", 0);
        assert!(w.observe(1_000), "p0 alone is the minimum");
        assert_eq!(w.current(), 990);
        w.from_source("p1", 1);
        // p1 has sent nothing yet: it holds the watermark where it is.
        w.from_source("p0", 2);
        assert!(!w.observe(2_000));
        assert_eq!(w.current(), 990);
        w.from_source("p1", 3);
        assert!(w.observe(1_500));
        assert_eq!(w.current(), 1_490);
        // An event p1 sends at 1_495 is not late although p0 is far ahead.
        assert!(!w.is_late(1_495));
        assert!(w.is_late(1_489));
        assert!(!w.all_idle());
    }

    #[test]
    fn an_idle_source_stops_holding_back_until_it_sends_again() {
        let mut w = Watermark::new(10);
        w.from_source("p0", 0);
        w.from_source("p1", 0);
        w.from_source("p0", 0);
        assert!(!w.observe(1_000), "p1 has sent nothing yet");
        w.from_source("p1", 0);
        assert!(w.observe(500));
        w.from_source("p0", 50);
        assert!(!w.observe(3_000));
        assert_eq!(w.current(), 490);
        assert!(!w.mark_idle(99, 100), "p1 is quiet for 99 only");
        assert!(w.mark_idle(100, 100), "p1 idle: p0 alone counts");
        assert_eq!(w.current(), 2_990);
        assert!(!w.all_idle());
        // p1 back: it holds from here on, and what it sends below the watermark is late.
        w.from_source("p1", 200);
        assert!(w.is_late(600));
        assert!(!w.observe(3_100));
        w.from_source("p0", 201);
        assert!(w.observe(3_500));
        assert_eq!(w.current(), 3_090);
        assert!(!w.mark_idle(1_000, 100), "nothing active: nothing moves");
        assert!(w.all_idle());
        assert_eq!(w.current(), 3_090, "with every source idle only the wall clock moves it");
    }

    #[test]
    fn survives_a_checkpoint() {
        let mut w = Watermark::new(7);
        w.from_source("a", 1);
        w.observe(70);
        w.from_source("b", 2);
        let bytes = bincode::serde::encode_to_vec(&w, bincode::config::standard()).unwrap();
        let (back, _): (Watermark, _) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, w);
    }
}
