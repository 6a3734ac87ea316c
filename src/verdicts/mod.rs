//! The verdict: one per conversation and outcome, the auditable output of SPEC
//! section 2, with its deterministic id.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::timestamp::{self, Nanos};

/// Reason of a verdict whose rule failed.
pub const RULE_ERROR: &str = "rule_error";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub verdict_id: String,
    pub outcome: String,
    pub tenant: String,
    pub conversation: String,
    pub billable: bool,
    pub reason: String,
    pub tier: Option<u8>,
    /// Exact; written as a decimal string.
    pub amount: Decimal,
    pub currency: String,
    /// Summed `cost_usd` of the conversation's `llm.call` and `tool.called` events.
    pub cost: Decimal,
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub decided_at: Nanos,
    pub rule_version: String,
    pub events: Vec<String>,
    /// The failure, for `rule_error` verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn ser_time<S: serde::Serializer>(t: &Nanos, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&timestamp::format_rfc3339(*t))
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Nanos, D::Error> {
    let s = String::deserialize(d)?;
    timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
}

/// The id of the verdict of `outcome` for a conversation: the same in every run,
/// replay and restart, so any consumer can deduplicate by it.
pub fn verdict_id(tenant: &str, conversation: &str, outcome: &str) -> String {
    let mut h = Sha256::new();
    // Length prefixes make the encoding unambiguous whatever the strings hold.
    for part in [tenant, conversation, outcome] {
        h.update((part.len() as u32).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut s = String::with_capacity(32);
    for b in &digest[..16] {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_unambiguous() {
        let a = verdict_id("t", "c", "ai_resolution");
        assert_eq!(a, verdict_id("t", "c", "ai_resolution"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, verdict_id("t", "c", "other"));
        assert_ne!(verdict_id("ab", "c", "o"), verdict_id("a", "bc", "o"));
    }

    #[test]
    fn json_shape() {
        let v = Verdict {
            verdict_id: "x".into(),
            outcome: "ai_resolution".into(),
            tenant: "t".into(),
            conversation: "c".into(),
            billable: true,
            reason: "resolved".into(),
            tier: Some(2),
            amount: "1.50".parse().unwrap(),
            currency: "USD".into(),
            cost: "0.0123".parse().unwrap(),
            decided_at: timestamp::parse_rfc3339("2026-06-13T10:00:00Z").unwrap(),
            rule_version: "sha256:00".into(),
            events: vec!["e1".into()],
            error: None,
        };
        let s = serde_json::to_string(&v).unwrap();
        assert_eq!(
            s,
            r#"{"verdict_id":"x","outcome":"ai_resolution","tenant":"t","conversation":"c","billable":true,"reason":"resolved","tier":2,"amount":"1.50","currency":"USD","cost":"0.0123","decided_at":"2026-06-13T10:00:00Z","rule_version":"sha256:00","events":["e1"]}"#
        );
        assert_eq!(serde_json::from_str::<Verdict>(&s).unwrap(), v);
    }
}
