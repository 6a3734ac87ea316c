//! The event-time watermark: the largest `ts` seen minus the allowed lateness, never
//! moving back. End of input and the wall clock can push it further.
//!
//! When several sources feed one engine (files, HTTP, Fluvio partitions in the
//! service), each source keeps its own progress and the watermark is the minimum over
//! the sources that are not idle, so a partition that lags behind is not made late by
//! one that runs ahead. A source is idle, and left out, only while it is caught up (it
//! has delivered everything it has: a file read to its end, a partition read to its
//! end; HTTP always, since its backlog is the clients' retries) and has been quiet for
//! its own quiet time (the idle timeout; for HTTP the delivery allowance). A source
//! that is reconnecting, stalled or behind holds the watermark back however long it is
//! quiet. Every input to this (arrivals, caught-up reports, the sources in force) is a
//! logged value, so recovery replays it exactly.

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
    /// It said it has delivered everything it has (as of its last input).
    pub caught_up: bool,
    /// How long it must be caught up and quiet before it is left out.
    pub quiet: Nanos,
    /// Left out of the watermark now.
    pub idle: bool,
}

/// The watermark as checkpoint format 2 held it: a source was idle after the idle
/// timeout, whether caught up or not.
#[derive(serde::Deserialize)]
pub struct WatermarkV2 {
    lateness: Nanos,
    max_ts: Option<Nanos>,
    current: Nanos,
    sources: Vec<SourceClockV2>,
    from: usize,
}

#[derive(serde::Deserialize)]
struct SourceClockV2 {
    name: String,
    max_ts: Option<Nanos>,
    last_arrival: Nanos,
    idle: bool,
}

impl From<WatermarkV2> for Watermark {
    /// Every source starts over anyway when the service starts (its quiet time comes
    /// from the configuration then); until then each is as it was.
    fn from(w: WatermarkV2) -> Self {
        let sources = w
            .sources
            .into_iter()
            .map(|s| SourceClock {
                name: s.name,
                max_ts: s.max_ts,
                last_arrival: s.last_arrival,
                caught_up: s.idle,
                quiet: 0,
                idle: s.idle,
            })
            .collect();
        Watermark { lateness: w.lateness, max_ts: w.max_ts, current: w.current, sources, from: w.from }
    }
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
    /// source's, and it is active again. A new source (left out after `quiet` once
    /// caught up) holds the watermark back from now on, until its first event or until
    /// it is idle. If every source was idle, the others come back in too.
    pub fn from_source(&mut self, name: &str, arrival: Nanos, quiet: Nanos) {
        let i = self.index_or_add(name, arrival, quiet);
        if self.sources[i].idle && self.all_idle() {
            // A pause ends: sources that went quiet together (one producer writing to all
            // partitions, say) come back together, and the first to deliver must not make
            // the others' records late. Each left out for no longer than this one must go
            // quiet again before it is left out again.
            let q = self.sources[i].quiet;
            for s in self.sources.iter_mut().filter(|s| s.quiet <= q) {
                (s.idle, s.last_arrival) = (false, s.last_arrival.max(arrival));
            }
        }
        let s = &mut self.sources[i];
        s.last_arrival = s.last_arrival.max(arrival);
        s.idle = false;
        self.from = i;
    }

    /// The source events now come from says whether it has delivered all it has.
    pub fn set_caught_up(&mut self, caught_up: bool) {
        if let Some(s) = self.sources.get_mut(self.from) {
            s.caught_up = caught_up;
        }
    }

    /// (Re)starts source `name` at `now`: active, caught up or not, left out once
    /// caught up and quiet for `quiet`. Its progress so far stays.
    pub fn restart_source(&mut self, name: &str, now: Nanos, quiet: Nanos, caught_up: bool) {
        let i = self.index_or_add(name, now, quiet);
        let s = &mut self.sources[i];
        (s.last_arrival, s.caught_up, s.quiet, s.idle) = (now, caught_up, quiet, false);
    }

    /// Forgets the sources for which `keep` is false (no longer configured or owned);
    /// returns whether the watermark moved because they no longer hold it back.
    pub fn retain_sources(&mut self, mut keep: impl FnMut(&str) -> bool) -> bool {
        let before = self.sources.len();
        self.sources.retain(|s| keep(&s.name));
        self.from = 0;
        self.sources.len() != before && self.merge()
    }

    fn index_or_add(&mut self, name: &str, arrival: Nanos, quiet: Nanos) -> usize {
        match self.sources.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.sources.push(SourceClock {
                    name: name.to_string(),
                    max_ts: None,
                    last_arrival: arrival,
                    caught_up: false,
                    quiet,
                    idle: false,
                });
                self.sources.len() - 1
            }
        }
    }

    /// Leaves out the sources that are caught up and have been quiet for their quiet
    /// time before `now`; returns whether the watermark moved because of it.
    pub fn mark_idle(&mut self, now: Nanos) -> bool {
        let mut changed = false;
        for s in &mut self.sources {
            if !s.idle && s.caught_up && now.saturating_sub(s.last_arrival) >= s.quiet {
                s.idle = true;
                changed = true;
            }
        }
        changed && self.merge()
    }

    /// The earliest time a source could become idle (a caught-up source quiet for its
    /// quiet time), if any: until then the clock has nothing to tell.
    pub fn next_idle_at(&self) -> Option<Nanos> {
        self.sources.iter().filter(|s| s.caught_up && !s.idle).map(|s| s.last_arrival.saturating_add(s.quiet)).min()
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
        b.from_source("http", 0, 100);
        for ts in [100, 90, 130, 131, 120] {
            assert_eq!(a.observe(ts), b.observe(ts), "at {ts}");
            assert_eq!(a.current(), b.current());
        }
    }

    #[test]
    fn the_slowest_active_source_holds_the_watermark() {
        let mut w = Watermark::new(10);
        w.from_source("p0", 0, 100);
        assert!(w.observe(1_000), "p0 alone is the minimum");
        assert_eq!(w.current(), 990);
        w.from_source("p1", 1, 100);
        // p1 has sent nothing yet: it holds the watermark where it is.
        w.from_source("p0", 2, 100);
        assert!(!w.observe(2_000));
        assert_eq!(w.current(), 990);
        w.from_source("p1", 3, 100);
        assert!(w.observe(1_500));
        assert_eq!(w.current(), 1_490);
        // An event p1 sends at 1_495 is not late although p0 is far ahead.
        assert!(!w.is_late(1_495));
        assert!(w.is_late(1_489));
        assert!(!w.all_idle());
    }

    #[test]
    fn only_a_caught_up_quiet_source_stops_holding_back() {
        let mut w = Watermark::new(10);
        w.from_source("p0", 0, 100);
        w.from_source("p1", 0, 100);
        w.from_source("p0", 0, 100);
        assert!(!w.observe(1_000), "p1 has sent nothing yet");
        w.from_source("p1", 0, 100);
        assert!(w.observe(500));
        w.from_source("p0", 50, 100);
        assert!(!w.observe(3_000));
        assert_eq!(w.current(), 490);
        // p1 is quiet for long, but it has not said it is caught up (reconnecting,
        // stalled, behind): it still holds the watermark.
        assert!(!w.mark_idle(10_000));
        assert_eq!(w.current(), 490);
        w.from_source("p1", 10_000, 100);
        w.set_caught_up(true);
        assert!(!w.mark_idle(10_099), "p1 is caught up but quiet for 99 only");
        assert!(w.mark_idle(10_100), "p1 caught up and quiet: p0 alone counts");
        assert_eq!(w.current(), 2_990);
        assert!(!w.all_idle());
        // p1 back: it holds from here on, and what it sends below the watermark is late.
        w.from_source("p1", 10_200, 100);
        assert!(w.is_late(600));
        assert!(!w.observe(3_100));
        w.from_source("p0", 10_201, 100);
        assert!(w.observe(3_500));
        assert_eq!(w.current(), 3_090);
        w.set_caught_up(true);
        w.from_source("p1", 10_202, 100);
        w.set_caught_up(true);
        assert!(!w.mark_idle(20_000), "nothing active: nothing moves");
        assert!(w.all_idle());
        assert_eq!(w.current(), 3_090, "with every source idle only the wall clock moves it");
    }

    #[test]
    fn a_restart_holds_every_source_until_it_catches_up_again_and_drops_the_unknown() {
        let mut w = Watermark::new(10);
        for (name, ts) in [("old", 100), ("file", 800), ("http", 1_000)] {
            w.from_source(name, 0, 50);
            w.observe(ts);
            w.set_caught_up(true);
        }
        assert_eq!(w.current(), 90);
        assert!(!w.mark_idle(50), "every source idle: only the wall clock moves it");
        assert!(w.all_idle());
        // Restarted with http and the file as before; "old" is no longer configured.
        w.restart_source("http", 5_000, 500, false);
        w.restart_source("file", 5_000, 50, false);
        assert!(!w.all_idle());
        assert!(w.retain_sources(|n| n != "old"));
        assert_eq!(w.current(), 790, "the file is the slowest source left");
        assert!(!w.mark_idle(1_000_000), "neither has caught up since the restart, however long it takes");
        w.from_source("file", 1_000_001, 50);
        w.set_caught_up(true);
        assert!(w.mark_idle(1_000_051));
        assert_eq!(w.current(), 990, "the file caught up and went quiet; http still holds");
        assert!(!w.all_idle());
        w.from_source("http", 1_000_100, 500);
        w.set_caught_up(true);
        assert!(!w.mark_idle(1_000_599));
        assert!(!w.all_idle(), "http waits for its own quiet time");
        w.mark_idle(1_000_600);
        assert!(w.all_idle());
    }

    #[test]
    fn when_a_pause_ends_the_first_source_back_does_not_run_ahead_of_the_others() {
        let mut w = Watermark::new(10);
        for (p, ts) in [("p0", 1_000), ("p1", 1_000)] {
            w.from_source(p, 0, 100);
            w.observe(ts);
            w.set_caught_up(true);
        }
        w.from_source("http", 0, 5_000);
        w.set_caught_up(true);
        w.mark_idle(5_000);
        assert!(w.all_idle(), "a pause: every source caught up and quiet");
        // The producer writes to both partitions again; p0's records arrive first.
        w.from_source("p0", 6_000, 100);
        assert!(!w.observe(90_000), "p1 is back in: p0 alone does not move the watermark");
        assert!(!w.is_late(1_500), "p1's records of the same stretch are not late");
        w.from_source("p1", 6_050, 100);
        assert!(w.observe(80_000));
        assert_eq!(w.current(), 79_990);
        assert!(w.sources().iter().find(|s| s.name == "http").unwrap().idle, "a longer quiet time stays out");
        // A source with nothing to deliver goes quiet again and stops holding back.
        w.set_caught_up(true);
        w.from_source("p0", 6_100, 100);
        assert!(!w.mark_idle(6_149));
        assert!(w.mark_idle(6_150), "p1 quiet again while p0 runs on");
        assert_eq!(w.current(), 89_990);
    }

    #[test]
    fn survives_a_checkpoint() {
        let mut w = Watermark::new(7);
        w.from_source("a", 1, 3);
        w.observe(70);
        w.set_caught_up(true);
        w.from_source("b", 2, 3);
        let bytes = bincode::serde::encode_to_vec(&w, bincode::config::standard()).unwrap();
        let (back, _): (Watermark, _) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, w);
    }
}
