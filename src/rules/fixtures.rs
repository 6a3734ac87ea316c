//! Rule fixtures (`<outcome>.test.toml`): cases of events and the verdicts they must
//! give, run through the real decoder and engine by `verdict test` and before a reload
//! is accepted, like `promtool test rules`.
//!
//! ```toml
//! [[case]]
//! name = "resolved, no follow-up"
//! tenant = "acme"                  # default for the events below
//! conversation = "c1"              # default for the events below
//! until = "2026-06-20T00:00:00Z"   # then move event time here, firing timers
//! events = [
//!   { type = "conversation.started", ts = "2026-06-12T10:00:00Z", attrs = { intent = "faq" } },
//!   { type = "message.ai", ts = "2026-06-12T10:01:00Z" },
//! ]
//! expect = [ { billable = true, reason = "resolved", tier = 1, amount = "0.50" } ]
//! ```
//! `expect` lists every verdict of this outcome the case gives, in decision order; each
//! entry checks only the fields it names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::RuleSet;
use crate::engine::{Engine, EngineConfig};
use crate::replay::{Pipeline, Position};
use crate::timestamp::{format_rfc3339, parse_rfc3339, Span};
use crate::verdicts::Verdict;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFile {
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    tenant: Option<String>,
    conversation: Option<String>,
    until: Option<toml::Value>,
    lateness: Option<String>,
    #[serde(default)]
    events: Vec<toml::Table>,
    #[serde(default)]
    expect: Vec<Expect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    tenant: Option<String>,
    conversation: Option<String>,
    billable: Option<bool>,
    reason: Option<String>,
    tier: Option<i64>,
    amount: Option<String>,
    currency: Option<String>,
    cost: Option<String>,
    decided_at: Option<toml::Value>,
    events: Option<Vec<String>>,
    error_contains: Option<String>,
}

/// The result of one case.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CaseResult {
    pub file: PathBuf,
    pub name: String,
    /// Empty when the case passed.
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Why fixtures could not run at all.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FixtureError {
    pub file: String,
    pub message: String,
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        // Only attributes that are not money can be TOML floats; keep the TOML text.
        toml::Value::Float(f) => serde_json::from_str(&f.to_string()).unwrap_or(J::Null),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

fn time_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs the fixture file of one outcome against a rule set.
pub fn run_file(rhai: &Arc<rhai::Engine>, rules: &Arc<RuleSet>, path: &Path) -> Result<Vec<CaseResult>, FixtureError> {
    let err = |message: String| FixtureError { file: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let file: FixtureFile = toml::from_str(&text).map_err(|e| {
        let line = super::toml_error_line(&text, &e);
        err(format!("line {}: {}", line.unwrap_or(0), e.message()))
    })?;
    let fname = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let outcome = fname.strip_suffix(super::FIXTURE_SUFFIX).unwrap_or(&fname).to_string();
    if !rules.outcomes.iter().any(|o| o.name == outcome) {
        return Err(err(format!("fixtures for `{outcome}`, but there is no {outcome}.rhai")));
    }
    let mut results = Vec::new();
    for (ci, case) in file.case.iter().enumerate() {
        let failures = run_case(rhai, rules, &outcome, ci, case);
        results.push(CaseResult { file: path.to_path_buf(), name: case.name.clone(), failures });
    }
    Ok(results)
}

/// Runs every fixture file of a rule set.
pub fn run_all(rhai: &Arc<rhai::Engine>, rules: &Arc<RuleSet>) -> Result<Vec<CaseResult>, FixtureError> {
    let mut all = Vec::new();
    for f in &rules.fixtures {
        all.extend(run_file(rhai, rules, f)?);
    }
    Ok(all)
}

fn run_case(rhai: &Arc<rhai::Engine>, rules: &Arc<RuleSet>, outcome: &str, ci: usize, case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    let lateness = match case.lateness.as_deref().map(str::parse::<Span>) {
        None => Span(0),
        Some(Ok(s)) => s,
        Some(Err(e)) => return vec![format!("lateness: {e}")],
    };
    let engine = Engine::new(EngineConfig { lateness, ..Default::default() }, rhai.clone(), rules.clone());
    let mut pipeline = Pipeline::new(engine, vec![]);
    let source = format!("case {}", ci + 1);
    let mut got: Vec<Verdict> = Vec::new();
    for (i, table) in case.events.iter().enumerate() {
        let mut obj = match toml_to_json(&toml::Value::Table(table.clone())) {
            serde_json::Value::Object(o) => o,
            _ => unreachable!("a table converts to an object"),
        };
        obj.entry("id").or_insert_with(|| format!("c{}-e{}", ci + 1, i + 1).into());
        if let Some(t) = &case.tenant {
            obj.entry("tenant").or_insert_with(|| t.clone().into());
        }
        if let Some(c) = &case.conversation {
            obj.entry("conversation").or_insert_with(|| c.clone().into());
        }
        let line = serde_json::Value::Object(obj).to_string();
        let at = Position { source: &source, line: i as u64 + 1, offset: 0 };
        let mut rejected = None;
        pipeline.feed(line.as_bytes(), line.len() as u64, false, None, at, &mut |d| {
            rejected = Some(format!("{}: {}", d.reason.as_str(), d.error));
        });
        if let Some(r) = rejected {
            failures.push(format!("event {} was rejected ({r}): {line}", i + 1));
        }
        pipeline.drain(|v| got.push(v.clone()));
    }
    pipeline.finish(|v| got.push(v.clone()));
    if let Some(until) = &case.until {
        match parse_rfc3339(&time_text(until)) {
            Ok(t) => {
                pipeline.engine.advance_to(t);
                pipeline.drain(|v| got.push(v.clone()));
            }
            Err(e) => failures.push(format!("until: {e}")),
        }
    }
    got.retain(|v| v.outcome == outcome);
    if got.len() != case.expect.len() {
        failures.push(format!(
            "expected {} verdict(s), got {}: {}",
            case.expect.len(),
            got.len(),
            got.iter().map(describe).collect::<Vec<_>>().join("; ")
        ));
        return failures;
    }
    for (i, (want, v)) in case.expect.iter().zip(&got).enumerate() {
        let mut check = |field: &str, want: Option<String>, have: String| {
            if let Some(w) = want {
                if w != have {
                    failures.push(format!("verdict {} ({}): {field} expected {w}, got {have}", i + 1, describe(v)));
                }
            }
        };
        check("tenant", want.tenant.clone(), v.tenant.clone());
        check("conversation", want.conversation.clone(), v.conversation.clone());
        check("billable", want.billable.map(|b| b.to_string()), v.billable.to_string());
        check("reason", want.reason.clone(), v.reason.clone());
        check("tier", want.tier.map(|t| t.to_string()), v.tier.map_or("null".into(), |t| t.to_string()));
        check("amount", want.amount.clone(), v.amount.to_string());
        check("currency", want.currency.clone(), v.currency.clone());
        check("cost", want.cost.clone(), v.cost.to_string());
        let want_at = want.decided_at.as_ref().map(|t| match parse_rfc3339(&time_text(t)) {
            Ok(n) => format_rfc3339(n),
            Err(e) => format!("(invalid: {e})"),
        });
        check("decided_at", want_at, format_rfc3339(v.decided_at));
        check("events", want.events.as_ref().map(|e| e.join(",")), v.events.join(","));
        if let Some(needle) = &want.error_contains {
            if !v.error.as_deref().unwrap_or("").contains(needle.as_str()) {
                failures.push(format!("verdict {}: error should contain {needle:?}, got {:?}", i + 1, v.error));
            }
        }
    }
    failures
}

fn describe(v: &Verdict) -> String {
    format!(
        "{}/{} {} {}{} at {}",
        v.tenant,
        v.conversation,
        if v.billable { "billable" } else { "not billable" },
        v.reason,
        v.tier.map_or(String::new(), |t| format!(" tier {t} {}", v.amount)),
        format_rfc3339(v.decided_at)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::sandbox;

    fn run_dir(dir: &Path) -> usize {
        let rhai = Arc::new(sandbox::build(&Default::default()));
        let rules = Arc::new(RuleSet::load(&rhai, dir).unwrap_or_else(|e| panic!("{e}")));
        let results = run_all(&rhai, &rules).unwrap();
        let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        results.len()
    }

    #[test]
    fn shipped_rules_pass_their_fixtures() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(run_dir(&root.join("rules")) > 0);
        let examples = root.join("examples/rules");
        if examples.exists() {
            assert!(run_dir(&examples) > 0);
        }
    }
}
