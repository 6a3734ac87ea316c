//! Property: any arrival order within the allowed lateness gives exactly the verdicts of
//! the sorted stream (SPEC section 3), with the reference rules.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use verdict::engine::{Engine, EngineConfig};
use verdict::replay::{Pipeline, Position};
use verdict::rules::{sandbox, RuleSet};
use verdict::timestamp::{format_rfc3339, parse_rfc3339, Span, NANOS_PER_HOUR, NANOS_PER_MILLI};

use verdict::kinds::KNOWN as TYPES;
const LATENESS_MS: i64 = 5_000;

/// A gap between events: short, around the 24 h boundary, or long (abandonment).
fn gap() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 1..120_000i64,
        1 => 24 * 3_600_000i64 - 2..24 * 3_600_000i64 + 2,
        1 => 72 * 3_600_000i64 - 2..72 * 3_600_000i64 + 2,
        1 => 3_600_000..30 * 3_600_000i64,
    ]
}

fn conversation() -> impl Strategy<Value = Vec<(usize, i64)>> {
    prop::collection::vec((0..TYPES.len(), gap()), 1..12)
}

/// Events as (ts in ms, NDJSON line); timestamps are distinct so there are no ties.
fn stream(convs: &[Vec<(usize, i64)>], starts: &[i64]) -> Vec<(i64, String)> {
    let base = parse_rfc3339("2026-06-12T00:00:00Z").unwrap() / NANOS_PER_MILLI;
    let mut out = Vec::new();
    for (ci, events) in convs.iter().enumerate() {
        let mut t = base + starts[ci % starts.len()] + ci as i64; // distinct per conversation
        for (ei, (ty, gap)) in events.iter().enumerate() {
            t += gap * 16; // multiples of 16 ms plus the conversation index keep every ts distinct
            let attrs = match TYPES[*ty] {
                "conversation.started" => r#","attrs":{"intent":"refund"}"#.to_string(),
                "llm.call" | "tool.called" => format!(r#","attrs":{{"cost_usd":"0.00{ei}1"}}"#),
                _ => String::new(),
            };
            let line = format!(
                r#"{{"id":"c{ci}-e{ei}","type":"{}","tenant":"t{}","conversation":"c{ci}","ts":"{}"{attrs}}}"#,
                TYPES[*ty],
                ci % 2,
                format_rfc3339(t * NANOS_PER_MILLI)
            );
            out.push((t, line));
        }
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

fn replay(lines: &[&str]) -> Vec<String> {
    let rhai = Arc::new(sandbox::build(&Default::default()));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules = Arc::new(RuleSet::load(&rhai, &dir).unwrap());
    let cfg = EngineConfig { lateness: Span(LATENESS_MS * NANOS_PER_MILLI), ..Default::default() };
    let mut p = Pipeline::new(Engine::new(cfg, rhai, rules), vec![]);
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let at = Position { source: "prop", line: i as u64 + 1, offset: 0 };
        p.feed(l.as_bytes(), l.len() as u64, false, None, at, &mut |d| panic!("rejected {}: {}", d.error, l));
        p.drain(|v| out.push(serde_json::to_string(v).unwrap()));
    }
    p.finish(|v| out.push(serde_json::to_string(v).unwrap()));
    // Verdicts of different conversations decided by events at different instants may
    // come out in another order; each verdict itself must be identical.
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn arrival_order_within_lateness_never_changes_verdicts(
        convs in prop::collection::vec(conversation(), 1..8),
        starts in prop::collection::vec(0..(2 * NANOS_PER_HOUR / NANOS_PER_MILLI), 1..8),
        delays in prop::collection::vec(0..LATENESS_MS, 96),
    ) {
        let sorted = stream(&convs, &starts);
        // Arrive in order of ts + delay, delay < lateness: no event can be late.
        let mut shuffled: Vec<(i64, usize)> =
            sorted.iter().enumerate().map(|(i, (t, _))| (t + delays[i % delays.len()], i)).collect();
        shuffled.sort();
        let in_order: Vec<&str> = sorted.iter().map(|(_, l)| l.as_str()).collect();
        let reordered: Vec<&str> = shuffled.iter().map(|(_, i)| sorted[*i].1.as_str()).collect();
        let a = replay(&in_order);
        let b = replay(&reordered);
        prop_assert_eq!(a, b);
    }
}

/// Conversations resolved in groups at the same instants, so several verdicts are
/// decided at the same deadline (rating then orders them by id, not by arrival), and
/// billing events a few seconds around those deadlines: disputes of the conversations
/// (opened, then accepted or rejected) and prepaid grants. As (ts in ms, line).
fn billing_stream(convs: &[(u8, bool)], picks: &[(usize, u8, i64)]) -> Vec<(i64, String)> {
    let base = parse_rfc3339("2026-06-30T20:00:00Z").unwrap() / NANOS_PER_MILLI;
    let day = 24 * 3_600_000;
    let mut out = Vec::new();
    for (ci, (group, escalate)) in convs.iter().enumerate() {
        // The conversations of a group have their events at the same instants, so their
        // verdicts tie; only arrival order would tell them apart.
        let resolved = base + i64::from(*group) * 60_000;
        let ev = |n: usize, kind: &str, at: i64, attrs: &str| {
            format!(
                r#"{{"id":"c{ci}-e{n}","type":"{kind}","tenant":"t{}","conversation":"c{ci}","ts":"{}"{attrs}}}"#,
                ci % 2,
                format_rfc3339(at * NANOS_PER_MILLI)
            )
        };
        out.push((
            resolved - 9_000,
            ev(0, "conversation.started", resolved - 9_000, r#","attrs":{"intent":"refund"}"#),
        ));
        out.push((resolved - 5_000, ev(1, "message.ai", resolved - 5_000, "")));
        let last = if *escalate { "escalated" } else { "resolution.confirmed" };
        out.push((resolved, ev(2, last, resolved, "")));
    }
    for (i, (c, what, offset)) in picks.iter().enumerate() {
        let c = c % convs.len().max(1);
        let group = convs.get(c).map_or(0, |g| i64::from(g.0));
        let t = base + group * 60_000 + day + offset;
        let (kind, attrs) = match what % 4 {
            0 => ("dispute.opened", r#"{"outcome":"ai_resolution","reason":"no"}"#.to_string()),
            1 => ("dispute.accepted", r#"{"outcome":"ai_resolution"}"#.to_string()),
            2 => ("dispute.rejected", r#"{"outcome":"ai_resolution"}"#.to_string()),
            _ => ("credit.granted", format!(r#"{{"amount":"{}.25"}}"#, 1 + what / 4)),
        };
        let line = format!(
            r#"{{"id":"b{i}","type":"{kind}","tenant":"t{}","conversation":"c{c}","ts":"{}","attrs":{attrs}}}"#,
            c % 2,
            format_rfc3339(t * NANOS_PER_MILLI)
        );
        out.push((t, line));
    }
    // Something far later on, so every window closes and June closes.
    let end = base + 40 * day;
    out.push((
        end,
        format!(
            r#"{{"id":"end","type":"conversation.started","tenant":"t0","conversation":"z","ts":"{}"}}"#,
            format_rfc3339(end * NANOS_PER_MILLI)
        ),
    ));
    out.sort_by_key(|(t, _)| *t);
    out
}

const PLANS: &str = r#"
[plans.p]
platform_fee = "10.00"
included = { ai_resolution = 1 }
overage = { ai_resolution = "0.75" }
minimum = "12.00"
sla = { ai_resolution = { min_rate = "0.60", credit = "0.10" } }

[tenants.t0]
assignments = [ { plan = "p", from = "2026-06" } ]
"#;

/// Every invoice, as JSON, of `lines` replayed with the reference rules and `PLANS`.
fn invoices(rules: &Path, lines: &[&str]) -> String {
    let rhai = Arc::new(sandbox::build(&Default::default()));
    let rules = Arc::new(RuleSet::load(&rhai, rules).unwrap());
    let cfg = EngineConfig { lateness: Span(LATENESS_MS * NANOS_PER_MILLI), ..Default::default() };
    let mut p = Pipeline::billing(Engine::new(cfg, rhai, rules), vec![]).unwrap();
    for (i, l) in lines.iter().enumerate() {
        let at = Position { source: "prop", line: i as u64 + 1, offset: 0 };
        p.feed(l.as_bytes(), l.len() as u64, false, None, at, &mut |d| panic!("rejected {}: {}", d.error, l));
        p.drain(|_| {});
    }
    p.finish(|_| {});
    let end = p.engine.watermark().max_ts().unwrap();
    serde_json::to_string_pretty(&p.ledger.as_ref().unwrap().all_invoices(end).unwrap()).unwrap()
}

fn rules_with_plans() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for e in std::fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    std::fs::write(dir.path().join("plans.toml"), PLANS).unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arrival_order_within_lateness_never_changes_invoices(
        convs in prop::collection::vec((0..3u8, prop::bool::weighted(0.2)), 1..12),
        picks in prop::collection::vec((0..12usize, 0..12u8, -4_000..4_000i64), 0..16),
        delays in prop::collection::vec(0..LATENESS_MS, 96),
    ) {
        let rules = rules_with_plans();
        let sorted = billing_stream(&convs, &picks);
        let mut shuffled: Vec<(i64, usize)> =
            sorted.iter().enumerate().map(|(i, (t, _))| (t + delays[i % delays.len()], i)).collect();
        shuffled.sort();
        let in_order: Vec<&str> = sorted.iter().map(|(_, l)| l.as_str()).collect();
        let reordered: Vec<&str> = shuffled.iter().map(|(_, i)| sorted[*i].1.as_str()).collect();
        prop_assert_eq!(invoices(rules.path(), &in_order), invoices(rules.path(), &reordered));
    }
}
