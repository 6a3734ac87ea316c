//! The credit log: every credit the ledger gives (an accepted dispute, a retraction),
//! one JSON line each in `STATE_DIR/credits.ndjson`, with the verdict line it undoes
//! copied whole. It is an audit record an operator can read, and what the push sink
//! ships as each platform's correction: written by the worker in log order, its length
//! checkpointed like the verdict file, so after a crash it ends up exactly as if the
//! service had never stopped.
//!
//! A line: `{"verdict_id","tenant","kind","amount","at","verdict_line","verdict"}`, where
//! `verdict_line` is where the verdict's line starts in the verdict file and `verdict` is
//! that line (`null` if it could not be read: logged, and not pushed).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::rating::{Credit, CreditKind};
use crate::timestamp::format_rfc3339;

/// A line of the credit log, as written.
#[derive(Serialize)]
pub struct CreditRecord<'a> {
    pub verdict_id: &'a str,
    pub tenant: &'a str,
    pub kind: CreditKind,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub at: String,
    pub verdict_line: Option<u64>,
    pub verdict: Option<&'a RawValue>,
}

impl<'a> CreditRecord<'a> {
    pub fn new(tenant: &'a str, c: &'a Credit, verdict_line: Option<u64>, verdict: Option<&'a RawValue>) -> Self {
        CreditRecord {
            verdict_id: &c.verdict_id,
            tenant,
            kind: c.kind,
            amount: c.amount,
            at: format_rfc3339(c.at),
            verdict_line,
            verdict,
        }
    }
}

impl crate::sinks::JsonLine for CreditRecord<'_> {}

/// A line of the credit log, as read back (strings borrowed from the line).
#[derive(Debug, Deserialize)]
pub struct CreditLine<'a> {
    #[serde(borrow)]
    pub verdict_id: std::borrow::Cow<'a, str>,
    pub kind: CreditKind,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    #[serde(borrow)]
    pub at: std::borrow::Cow<'a, str>,
    #[serde(default)]
    pub verdict_line: Option<u64>,
    #[serde(borrow, default)]
    pub verdict: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_with_its_verdict_whole() {
        let credit =
            Credit { verdict_id: "v1".into(), kind: CreditKind::Dispute, amount: "0.50".parse().unwrap(), at: 0 };
        let verdict = RawValue::from_string(r#"{"verdict_id":"v1","billable":true}"#.into()).unwrap();
        let mut line = Vec::new();
        crate::sinks::JsonLine::write_json(&CreditRecord::new("acme", &credit, Some(42), Some(&verdict)), &mut line)
            .unwrap();
        let text = String::from_utf8(line).unwrap();
        assert_eq!(
            text,
            r#"{"verdict_id":"v1","tenant":"acme","kind":"dispute","amount":"0.50","at":"1970-01-01T00:00:00Z","verdict_line":42,"verdict":{"verdict_id":"v1","billable":true}}"#
        );
        let back: CreditLine<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!((back.verdict_id.as_ref(), back.kind, back.verdict_line), ("v1", CreditKind::Dispute, Some(42)));
        assert_eq!(back.verdict.unwrap().get(), r#"{"verdict_id":"v1","billable":true}"#);
    }
}
