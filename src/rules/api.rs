//! What a rule script sees: the `Conversation` (`c`) and `Event` (`e`) types, the time
//! helpers, and the decision methods. Documented for operators in `rules/README.md`.
//!
//! Both types are handles to one [`CallCtx`] that the evaluator fills before each call
//! and reads back after it; the buffers are reused, so a call allocates almost nothing.

use std::sync::{Arc, Mutex, MutexGuard};

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, INT};
use rust_decimal::Decimal;
use smallvec::SmallVec;

use crate::kinds::{self, KNOWN};
use crate::timestamp::{self, Nanos, NANOS_PER_DAY, NANOS_PER_HOUR, NANOS_PER_MILLI, NANOS_PER_SEC};

/// Named timers of one outcome in one conversation.
pub type Timers = SmallVec<[(ImmutableString, Nanos); 1]>;

/// Most timers one outcome may keep open in one conversation.
pub const MAX_TIMERS: usize = 8;
/// Most fields a script may keep with `c.set` in one conversation.
pub const MAX_VARS: usize = 16;
/// Most bytes one kept field may hold (strings, and the items of arrays and maps).
pub const MAX_VAR_BYTES: usize = 1024;
/// Longest reason code.
pub const MAX_REASON: usize = 64;

/// A decision made by a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub billable: bool,
    pub reason: ImmutableString,
    pub tier: Option<u8>,
}

/// Everything one call can read and write. Filled by the evaluator.
#[derive(Default)]
pub struct CallCtx {
    pub tenant: String,
    pub conversation: String,
    pub outcome: String,
    /// The event time of this call: the event's `ts` or the timer's deadline.
    pub now: Nanos,
    pub first_ts: Nanos,
    pub last_ts: Nanos,
    pub events: u32,
    pub counts: [u32; KNOWN.len()],
    pub other_counts: Vec<(Box<str>, u32)>,
    /// Shared with the script's `c.intent`; refilled only when it differs.
    pub intent: Option<ImmutableString>,
    pub cost: Decimal,
    pub timers: Timers,
    pub vars: Map,
    pub decision: Option<Decision>,
    /// The event being applied (empty for timer and idle calls).
    pub event_id: String,
    pub event_kind: String,
    pub event_ts: Nanos,
    pub event_attrs: Option<Box<str>>,
}

/// The script's `c`: a handle to the call context.
#[derive(Clone, Default)]
pub struct ConvRef(pub Arc<Mutex<CallCtx>>);

/// The script's `e`: the same context, seen as the event.
#[derive(Clone)]
pub struct EventRef(pub Arc<Mutex<CallCtx>>);

impl ConvRef {
    pub fn lock(&self) -> MutexGuard<'_, CallCtx> {
        // A panic inside a rule call is caught by the evaluator; the context is refilled
        // before every call, so a poisoned lock holds nothing worth refusing.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
impl EventRef {
    fn lock(&self) -> MutexGuard<'_, CallCtx> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn fail<T>(msg: impl Into<String>) -> RhaiResult<T> {
    Err(msg.into().into())
}

impl CallCtx {
    pub fn count(&self, kind: &str) -> u32 {
        match kinds::classify(kind) {
            kinds::OTHER => self.other_counts.iter().find(|(k, _)| &**k == kind).map_or(0, |(_, n)| *n),
            slot => self.counts[slot as usize],
        }
    }

    pub fn has_timer(&self, name: &str) -> bool {
        self.timers.iter().any(|(n, _)| n == name)
    }

    pub fn timer(&self, name: &str) -> Option<Nanos> {
        self.timers.iter().find(|(n, _)| n == name).map(|(_, d)| *d)
    }

    /// Starts (or restarts) a named timer; a deadline in the past fires at `now`.
    pub fn start_timer(&mut self, name: ImmutableString, at: INT) -> RhaiResult<()> {
        if name.is_empty() || name.len() > 64 {
            return fail("a timer name must be 1 to 64 characters");
        }
        let at = at.max(self.now);
        if let Some(t) = self.timers.iter_mut().find(|(n, _)| *n == name) {
            t.1 = at;
        } else if self.timers.len() >= MAX_TIMERS {
            return fail(format!("more than {MAX_TIMERS} open timers in one conversation"));
        } else {
            self.timers.push((name, at));
        }
        Ok(())
    }

    pub fn cancel_timer(&mut self, name: &str) {
        self.timers.retain(|(n, _)| n != name);
    }

    pub fn billable(&mut self, reason: ImmutableString, tier: INT) -> RhaiResult<()> {
        let tier = u8::try_from(tier).ok().filter(|t| *t >= 1).ok_or_else(|| -> Box<EvalAltResult> {
            format!("tier must be a positive integer up to 255, got {tier}").into()
        })?;
        self.decide(Decision { billable: true, reason, tier: Some(tier) })
    }

    pub fn not_billable(&mut self, reason: ImmutableString) -> RhaiResult<()> {
        self.decide(Decision { billable: false, reason, tier: None })
    }

    fn decide(&mut self, d: Decision) -> RhaiResult<()> {
        if let Some(prev) = &self.decision {
            return fail(format!("decided twice in one call (first: {}, then: {})", prev.reason, d.reason));
        }
        if d.reason.is_empty() || d.reason.len() > MAX_REASON {
            return fail(format!("a reason must be 1 to {MAX_REASON} characters"));
        }
        self.decision = Some(d);
        Ok(())
    }
}

pub(crate) fn checked_span(n: INT, unit: i64, name: &str) -> RhaiResult<INT> {
    n.checked_mul(unit).ok_or_else(|| format!("{name}({n}) is out of range").into())
}

/// Checks that a value can be kept in conversation state: plain data, bounded size.
fn check_keepable(v: &Dynamic, budget: &mut usize) -> Result<(), String> {
    let cost = if v.is_unit() || v.is_bool() || v.is_int() || v.is_decimal() || v.is_char() {
        8
    } else if let Some(s) = v.read_lock::<ImmutableString>() {
        s.len()
    } else if let Some(a) = v.read_lock::<rhai::Array>() {
        for item in a.iter() {
            check_keepable(item, budget)?;
        }
        8
    } else if let Some(m) = v.read_lock::<Map>() {
        for (k, item) in m.iter() {
            *budget = budget.checked_sub(k.len()).ok_or("value too large to keep")?;
            check_keepable(item, budget)?;
        }
        8
    } else {
        return Err(format!("a value of type {} cannot be kept in conversation state", v.type_name()));
    };
    *budget =
        budget.checked_sub(cost).ok_or_else(|| format!("value too large to keep (over {MAX_VAR_BYTES} bytes)"))?;
    Ok(())
}

/// Converts an event's attributes (JSON) to a Rhai map. Numbers that are not integers
/// become exact decimals: rules never see binary floats.
pub fn json_to_dynamic(v: &serde_json::Value) -> Dynamic {
    use serde_json::Value;
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n
                .to_string()
                .parse::<Decimal>()
                .or_else(|_| Decimal::from_scientific(&n.to_string()))
                .map(Dynamic::from_decimal)
                .unwrap_or_else(|_| n.to_string().into()),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => Dynamic::from_array(a.iter().map(json_to_dynamic).collect()),
        Value::Object(o) => Dynamic::from_map(o.iter().map(|(k, v)| (k.as_str().into(), json_to_dynamic(v))).collect()),
    }
}

fn attrs_map(ctx: &CallCtx) -> Map {
    let Some(raw) = ctx.event_attrs.as_deref() else { return Map::new() };
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(o)) => o.iter().map(|(k, v)| (k.as_str().into(), json_to_dynamic(v))).collect(),
        _ => Map::new(),
    }
}

/// Registers the types and functions of the rule API on a sandboxed engine.
pub fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<ConvRef>("Conversation")
        .register_get("tenant", |c: &mut ConvRef| -> ImmutableString { c.lock().tenant.as_str().into() })
        .register_get("conversation", |c: &mut ConvRef| -> ImmutableString { c.lock().conversation.as_str().into() })
        .register_get("outcome", |c: &mut ConvRef| -> ImmutableString { c.lock().outcome.as_str().into() })
        .register_get("now", |c: &mut ConvRef| -> INT { c.lock().now })
        .register_get("first_ts", |c: &mut ConvRef| -> INT { c.lock().first_ts })
        .register_get("last_ts", |c: &mut ConvRef| -> INT { c.lock().last_ts })
        .register_get("events", |c: &mut ConvRef| -> INT { c.lock().events as INT })
        .register_get("cost", |c: &mut ConvRef| -> Decimal { c.lock().cost })
        .register_get("intent", |c: &mut ConvRef| -> Dynamic {
            c.lock().intent.clone().map_or(Dynamic::UNIT, Dynamic::from)
        })
        .register_fn("count", |c: &mut ConvRef, kind: &str| -> INT { c.lock().count(kind) as INT })
        .register_fn("has_timer", |c: &mut ConvRef, name: &str| -> bool { c.lock().has_timer(name) })
        .register_fn("timer", |c: &mut ConvRef, name: &str| -> Dynamic {
            c.lock().timer(name).map_or(Dynamic::UNIT, Dynamic::from)
        })
        .register_fn("start_timer", |c: &mut ConvRef, name: ImmutableString, at: INT| -> RhaiResult<()> {
            c.lock().start_timer(name, at)
        })
        .register_fn("cancel_timer", |c: &mut ConvRef, name: &str| c.lock().cancel_timer(name))
        .register_fn("get", |c: &mut ConvRef, name: &str| -> Dynamic {
            c.lock().vars.get(name).cloned().unwrap_or(Dynamic::UNIT)
        })
        .register_fn("set", |c: &mut ConvRef, name: &str, value: Dynamic| -> RhaiResult<()> {
            let mut ctx = c.lock();
            if value.is_unit() {
                ctx.vars.remove(name);
                return Ok(());
            }
            if name.is_empty() || name.len() > 64 {
                return fail("a field name must be 1 to 64 characters");
            }
            let mut budget = MAX_VAR_BYTES;
            check_keepable(&value, &mut budget).map_err(|e| format!("c.set(\"{name}\"): {e}"))?;
            if !ctx.vars.contains_key(name) && ctx.vars.len() >= MAX_VARS {
                return fail(format!("more than {MAX_VARS} fields kept in one conversation"));
            }
            ctx.vars.insert(name.into(), value);
            Ok(())
        })
        .register_fn("billable", |c: &mut ConvRef, reason: ImmutableString, tier: INT| -> RhaiResult<()> {
            c.lock().billable(reason, tier)
        })
        .register_fn("not_billable", |c: &mut ConvRef, reason: ImmutableString| -> RhaiResult<()> {
            c.lock().not_billable(reason)
        });

    engine
        .register_type_with_name::<EventRef>("Event")
        .register_get("id", |e: &mut EventRef| -> ImmutableString { e.lock().event_id.as_str().into() })
        .register_get("type", |e: &mut EventRef| -> ImmutableString { e.lock().event_kind.as_str().into() })
        .register_get("ts", |e: &mut EventRef| -> INT { e.lock().event_ts })
        .register_get("attrs", |e: &mut EventRef| -> Map { attrs_map(&e.lock()) })
        .register_fn("attr", |e: &mut EventRef, name: &str| -> Dynamic {
            attrs_map(&e.lock()).remove(name).unwrap_or(Dynamic::UNIT)
        });

    engine
        .register_fn("millis", |n: INT| checked_span(n, NANOS_PER_MILLI, "millis"))
        .register_fn("seconds", |n: INT| checked_span(n, NANOS_PER_SEC, "seconds"))
        .register_fn("minutes", |n: INT| checked_span(n, 60 * NANOS_PER_SEC, "minutes"))
        .register_fn("hours", |n: INT| checked_span(n, NANOS_PER_HOUR, "hours"))
        .register_fn("days", |n: INT| checked_span(n, NANOS_PER_DAY, "days"))
        .register_fn("duration", |s: &str| -> RhaiResult<INT> {
            s.parse::<timestamp::Span>().map(|d| d.0).map_err(|e| e.to_string().into())
        })
        .register_fn("time", |s: &str| -> RhaiResult<INT> {
            timestamp::parse_rfc3339(s).map_err(|e| e.to_string().into())
        })
        .register_fn("fmt_time", |t: INT| -> String { timestamp::format_rfc3339(t) });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepable_values() {
        let mut b = MAX_VAR_BYTES;
        assert!(check_keepable(&Dynamic::from(5_i64), &mut b).is_ok());
        let mut b = MAX_VAR_BYTES;
        assert!(check_keepable(&Dynamic::from("x".repeat(2000)), &mut b).is_err());
        let mut b = MAX_VAR_BYTES;
        assert!(check_keepable(&Dynamic::from(ConvRef::default()), &mut b).is_err());
    }

    #[test]
    fn json_numbers_are_exact() {
        let v: serde_json::Value = serde_json::from_str(r#"{"a":0.1,"b":3,"c":"s"}"#).unwrap();
        let d = json_to_dynamic(&v);
        let m = d.cast::<Map>();
        assert_eq!(m["a"].clone().as_decimal().unwrap().to_string(), "0.1");
        assert_eq!(m["b"].as_int().unwrap(), 3);
    }
}
