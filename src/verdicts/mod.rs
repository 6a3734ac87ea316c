//! The verdict: one per conversation and outcome, the auditable output of SPEC
//! section 2, with its deterministic id.

mod json;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::idlist::IdList;
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
    /// Ids of the events behind the verdict, in the order they were applied.
    pub events: EventIds,
    /// The failure, for `rule_error` verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A verdict's event ids, packed as the engine keeps them (one allocation instead of one
/// per id); a JSON array of strings on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventIds(pub IdList);

impl EventIds {
    pub fn iter(&self) -> crate::engine::idlist::IdIter<'_> {
        self.0.iter()
    }
    /// The ids joined with `sep`, as fixtures compare them.
    pub fn join(&self, sep: &str) -> String {
        self.iter().collect::<Vec<_>>().join(sep)
    }
}

impl<S: AsRef<str>> FromIterator<S> for EventIds {
    fn from_iter<I: IntoIterator<Item = S>>(it: I) -> Self {
        let mut l = IdList::default();
        for id in it {
            l.push(id.as_ref());
        }
        EventIds(l)
    }
}

impl Serialize for EventIds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for EventIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let ids = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        if let Some(bad) = ids.iter().find(|id| id.is_empty() || id.len() > 256) {
            return Err(D::Error::custom(format!("event id of {} bytes: ids are 1 to 256 bytes", bad.len())));
        }
        Ok(ids.iter().collect())
    }
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in &digest[..16] {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Up to 32 lowercase or uppercase hex digits as a number (`from_str_radix` checks each
/// character the slow way, on every verdict rated or looked up).
pub fn hex_u128(s: &str) -> Option<u128> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    s.bytes().try_fold(0u128, |acc, c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_read_as_numbers_like_from_str_radix() {
        for id in [
            "0",
            "ff",
            "dcaa39eb45de2ba7528d29c6eedd1413",
            "DCAA39eb45de2ba7528d29c6eedd1413",
            "ffffffffffffffffffffffffffffffff",
        ] {
            assert_eq!(hex_u128(id), u128::from_str_radix(id, 16).ok(), "{id}");
        }
        for id in ["", "0x1", "g", "dcaa39eb45de2ba7528d29c6eedd14130"] {
            assert_eq!(hex_u128(id), None, "{id}");
        }
    }

    #[test]
    fn ids_are_deterministic_and_unambiguous() {
        let a = verdict_id("t", "c", "ai_resolution");
        assert_eq!(a, verdict_id("t", "c", "ai_resolution"));
        assert_eq!(a.len(), 32);
        let mut h = Sha256::new();
        for part in ["t", "c", "ai_resolution"] {
            h.update((part.len() as u32).to_le_bytes());
            h.update(part.as_bytes());
        }
        let want: String = h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(a, want, "the first 16 bytes of the digest, lower-case hex");
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
            events: ["e1"].into_iter().collect(),
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
