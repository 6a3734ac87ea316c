//! What a checkpoint holds of the engine, and how an engine is rebuilt from it: every
//! conversation (open or tombstone) with its script fields and timers, the events still
//! waiting for the watermark, the timer queue, the watermark, the counters and the
//! stable outcome ids. Settings (lateness, retention) and rules come from the restarted
//! process, so a restart may change them.
//!
//! Script values are stored as a closed set of plain data ([`Kept`]), the only kinds
//! `c.set` accepts, so nothing Rhai-internal reaches the file.

use std::sync::Arc;

use rhai::{Dynamic, ImmutableString, Map};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::reorder::Reorder;
use super::state::ConvTable;
use super::timers::TimerQueue;
use super::watermark::{Watermark, WatermarkV2};
use super::{Engine, EngineConfig, Stats};
use crate::rules::api::Timers;
use crate::rules::RuleSet;
use crate::timestamp::Nanos;

#[derive(Serialize)]
struct SnapshotRef<'a> {
    outcome_names: &'a [String],
    seq: u64,
    stats: &'a Stats,
    wm: &'a Watermark,
    convs: &'a ConvTable,
    pending: &'a Reorder,
    timers: &'a TimerQueue,
}

/// An engine's state as loaded from a checkpoint; [`Engine::restore`] makes it run.
#[derive(Deserialize)]
pub struct EngineSnapshot {
    outcome_names: Vec<String>,
    seq: u64,
    stats: Stats,
    wm: Watermark,
    convs: ConvTable,
    pending: Reorder,
    timers: TimerQueue,
}

/// An engine snapshot of checkpoint format 2, before sources said whether they were
/// caught up.
#[derive(Deserialize)]
pub struct EngineSnapshotV2 {
    outcome_names: Vec<String>,
    seq: u64,
    stats: Stats,
    wm: WatermarkV2,
    convs: ConvTable,
    pending: Reorder,
    timers: TimerQueue,
}

impl From<EngineSnapshotV2> for EngineSnapshot {
    fn from(s: EngineSnapshotV2) -> Self {
        let EngineSnapshotV2 { outcome_names, seq, stats, wm, convs, pending, timers } = s;
        EngineSnapshot { outcome_names, seq, stats, wm: wm.into(), convs, pending, timers }
    }
}

impl Serialize for Engine {
    /// The engine's state, as [`EngineSnapshot`] reads it back.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SnapshotRef {
            outcome_names: &self.outcome_names,
            seq: self.seq,
            stats: &self.stats,
            wm: &self.wm,
            convs: &self.convs,
            pending: &self.pending,
            timers: &self.timers,
        }
        .serialize(s)
    }
}

impl Engine {
    /// An engine that continues from `snap` with the given settings and rules. Verdicts
    /// decided but not taken before the checkpoint are not in it: take them first.
    pub fn restore(cfg: EngineConfig, rhai: Arc<rhai::Engine>, rules: Arc<RuleSet>, snap: EngineSnapshot) -> Engine {
        let mut e = Engine::new(cfg, rhai, rules.clone());
        e.outcome_names = snap.outcome_names;
        e.seq = snap.seq;
        e.stats = snap.stats;
        e.wm = snap.wm;
        // The restarted process's lateness applies from here; the watermark never goes back.
        e.wm.set_lateness(e.cfg.lateness.0);
        e.convs = snap.convs;
        e.pending = snap.pending;
        e.timers = snap.timers;
        e.set_rules(rules);
        e
    }
}

/// A value a script keeps with `c.set`.
#[derive(Serialize, Deserialize)]
enum Kept {
    Unit,
    Bool(bool),
    Int(i64),
    Decimal(Decimal),
    Char(char),
    Str(String),
    Array(Vec<Kept>),
    Map(Vec<(String, Kept)>),
}

impl Kept {
    fn from_dynamic(v: &Dynamic) -> Kept {
        if let Ok(b) = v.as_bool() {
            Kept::Bool(b)
        } else if let Ok(i) = v.as_int() {
            Kept::Int(i)
        } else if let Ok(d) = v.as_decimal() {
            Kept::Decimal(d)
        } else if let Ok(c) = v.as_char() {
            Kept::Char(c)
        } else if let Some(s) = v.read_lock::<ImmutableString>() {
            Kept::Str(s.to_string())
        } else if let Some(a) = v.read_lock::<rhai::Array>() {
            Kept::Array(a.iter().map(Kept::from_dynamic).collect())
        } else if let Some(m) = v.read_lock::<Map>() {
            Kept::Map(m.iter().map(|(k, v)| (k.to_string(), Kept::from_dynamic(v))).collect())
        } else {
            // `c.set` refuses every other type, so only unit is left.
            Kept::Unit
        }
    }

    fn into_dynamic(self) -> Dynamic {
        match self {
            Kept::Unit => Dynamic::UNIT,
            Kept::Bool(b) => b.into(),
            Kept::Int(i) => i.into(),
            Kept::Decimal(d) => Dynamic::from_decimal(d),
            Kept::Char(c) => c.into(),
            Kept::Str(s) => s.into(),
            Kept::Array(a) => Dynamic::from_array(a.into_iter().map(Kept::into_dynamic).collect()),
            Kept::Map(m) => Dynamic::from_map(m.into_iter().map(|(k, v)| (k.into(), v.into_dynamic())).collect()),
        }
    }
}

/// `serde(with)` for a script's kept fields.
pub mod vars {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Box<Map>>, s: S) -> Result<S::Ok, S::Error> {
        let kept: Option<Vec<(String, Kept)>> =
            v.as_ref().map(|m| m.iter().map(|(k, v)| (k.to_string(), Kept::from_dynamic(v))).collect());
        kept.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<Map>>, D::Error> {
        let kept = Option::<Vec<(String, Kept)>>::deserialize(d)?;
        Ok(kept.map(|m| Box::new(m.into_iter().map(|(k, v)| (k.into(), v.into_dynamic())).collect())))
    }
}

/// `serde(with)` for an outcome's named timers.
pub mod timers {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Timers, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(t.iter().map(|(n, d)| (n.as_str(), *d)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timers, D::Error> {
        let v = Vec::<(String, Nanos)>::deserialize(d)?;
        Ok(v.into_iter().map(|(n, d)| (ImmutableString::from(n), d)).collect())
    }
}

/// `serde(with)` for a timer entry's name.
pub mod opt_name {
    use super::*;

    pub fn serialize<S: Serializer>(n: &Option<ImmutableString>, s: S) -> Result<S::Ok, S::Error> {
        n.as_ref().map(|n| n.as_str()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ImmutableString>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(ImmutableString::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::rules::sandbox;
    use crate::timestamp::Span;

    const RULE: &str = r#"
        fn on_start(c, e) { c.set("seen", [1, "two", 3.5, #{ k: true }]); c.start_timer("w", e.ts + hours(1)) }
        fn on_timer(c, name) { c.billable("done:" + c.get("seen").len(), 1) }
    "#;

    fn engine() -> (Arc<rhai::Engine>, Arc<RuleSet>, Engine) {
        let rhai = Arc::new(sandbox::build(&Default::default()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("o.rhai"), RULE).unwrap();
        std::fs::write(dir.path().join("prices.toml"), "[o]\ncurrency = \"USD\"\ntiers = { 1 = \"1.00\" }\n").unwrap();
        let rules = Arc::new(RuleSet::load(&rhai, dir.path()).unwrap());
        let cfg = EngineConfig { lateness: Span::from_secs(5), ..Default::default() };
        let e = Engine::new(cfg, rhai.clone(), rules.clone());
        (rhai, rules, e)
    }

    fn feed(e: &mut Engine, conv: &str, id: &str, kind: &str, ts: &str) {
        let line = format!(r#"{{"id":"{id}","type":"{kind}","tenant":"t","conversation":"{conv}","ts":"{ts}"}}"#);
        e.ingest(&decode(line.as_bytes()).unwrap());
    }

    fn roundtrip(e: &Engine, rhai: &Arc<rhai::Engine>, rules: &Arc<RuleSet>) -> Engine {
        let bytes = bincode::serde::encode_to_vec(e, bincode::config::standard()).unwrap();
        let (snap, _): (EngineSnapshot, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        Engine::restore(e.cfg.clone(), rhai.clone(), rules.clone(), snap)
    }

    /// Stopping at any point and continuing from a snapshot gives exactly the verdicts of
    /// an uninterrupted run: kept fields, named timers, buffered events and tombstones all
    /// survive.
    #[test]
    fn a_restored_engine_continues_exactly() {
        let script = [
            ("a", "a1", "start", "2026-06-12T00:00:00Z"),
            ("b", "b1", "start", "2026-06-12T00:10:00Z"),
            ("a", "a2", "msg", "2026-06-12T00:10:03Z"),
            ("c", "c1", "start", "2026-06-12T00:30:00Z"),
            ("a", "a3", "msg", "2026-06-12T01:20:00Z"),
            ("b", "b2", "msg", "2026-06-12T01:30:00Z"),
            ("a", "a2", "msg", "2026-06-12T01:30:01Z"),
            ("d", "d1", "start", "2026-06-12T03:00:00Z"),
        ];
        let run = |cut: Option<usize>| {
            let (rhai, rules, mut e) = engine();
            let mut out = Vec::new();
            for (i, (c, id, k, ts)) in script.iter().enumerate() {
                if cut == Some(i) {
                    out.extend(e.take_verdicts().map(|v| serde_json::to_string(&v).unwrap()));
                    e = roundtrip(&e, &rhai, &rules);
                }
                feed(&mut e, c, id, k, ts);
            }
            e.finish();
            out.extend(e.take_verdicts().map(|v| serde_json::to_string(&v).unwrap()));
            (out, e.stats().clone(), e.pending_report())
        };
        let whole = run(None);
        assert_eq!(whole.0.len(), 3, "{:?}", whole.0);
        assert!(whole.0[0].contains("done:4"), "kept fields reach the decision: {}", whole.0[0]);
        for cut in 0..script.len() {
            assert_eq!(run(Some(cut)), whole, "cut before event {cut}");
        }
    }

    #[test]
    fn kept_values_round_trip() {
        let mut m = Map::new();
        m.insert("k".into(), Dynamic::from_decimal(Decimal::new(1234, 3)));
        let v = Dynamic::from_array(vec![Dynamic::UNIT, 'x'.into(), "s".into(), Dynamic::from_map(m), 7_i64.into()]);
        let back = Kept::from_dynamic(&v).into_dynamic();
        assert_eq!(back.to_string(), v.to_string());
    }
}
