//! Billing events (SPEC 8.2): disputes and prepaid credits, in the same stream as
//! conversation events, so they are durable, deduplicated, replayable and audited like
//! any other. They go to the ledger and touch no conversation state. A missing
//! `outcome` or a bad `amount` makes the record `invalid`; a dispute that cannot stand
//! is valid input, kept by the ledger as `refused` with its cause.

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::decode::event::{DecodeError, WireEvent};
use crate::timestamp::Nanos;

pub const DISPUTE_OPENED: &str = "dispute.opened";
pub const DISPUTE_ACCEPTED: &str = "dispute.accepted";
pub const DISPUTE_REJECTED: &str = "dispute.rejected";
pub const CREDIT_GRANTED: &str = "credit.granted";

/// Whether events of this type are billing events.
pub fn is_billing(kind: &str) -> bool {
    matches!(kind, DISPUTE_OPENED | DISPUTE_ACCEPTED | DISPUTE_REJECTED | CREDIT_GRANTED)
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// The tenant flags the verdict of (tenant, conversation, outcome).
    DisputeOpened { outcome: String, reason: String },
    /// The dispute stands: that verdict's charge is credited.
    DisputeAccepted { outcome: String, note: String },
    /// The dispute is closed, nothing credited.
    DisputeRejected { outcome: String, note: String },
    /// The tenant's prepaid balance grows by `amount`.
    CreditGranted { amount: Decimal, note: String },
}

/// A validated billing event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BillingEvent {
    pub id: String,
    pub tenant: String,
    /// The disputed conversation (any string for `credit.granted`).
    pub conversation: String,
    pub ts: Nanos,
    pub action: Action,
}

#[derive(Deserialize)]
struct Attrs {
    outcome: Option<String>,
    reason: Option<String>,
    note: Option<String>,
    amount: Option<serde_json::Value>,
}

impl BillingEvent {
    /// Validates a decoded event of a billing type.
    pub fn from_wire(ev: &WireEvent<'_>) -> Result<BillingEvent, DecodeError> {
        let attrs: Attrs = match ev.attrs {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| DecodeError::invalid(format!("field `attrs` of a {} event: {e}", ev.kind)))?,
            None => Attrs { outcome: None, reason: None, note: None, amount: None },
        };
        let text = |v: Option<String>| v.unwrap_or_default();
        let outcome = || match attrs.outcome.clone() {
            Some(o) if !o.is_empty() && o.len() <= 256 => Ok(o),
            Some(_) => {
                Err(DecodeError::invalid(format!("field `attrs.outcome` of a {} event: 1 to 256 bytes", ev.kind)))
            }
            None => Err(DecodeError::invalid(format!(
                "field `attrs.outcome` is missing: a {} event names the outcome",
                ev.kind
            ))),
        };
        let action = match ev.kind.as_ref() {
            DISPUTE_OPENED => Action::DisputeOpened { outcome: outcome()?, reason: text(attrs.reason) },
            DISPUTE_ACCEPTED => Action::DisputeAccepted { outcome: outcome()?, note: text(attrs.note) },
            DISPUTE_REJECTED => Action::DisputeRejected { outcome: outcome()?, note: text(attrs.note) },
            CREDIT_GRANTED => Action::CreditGranted { amount: amount(attrs.amount)?, note: text(attrs.note) },
            other => return Err(DecodeError::invalid(format!("{other} is not a billing event type"))),
        };
        Ok(BillingEvent {
            id: ev.id.to_string(),
            tenant: ev.tenant.to_string(),
            conversation: ev.conversation.to_string(),
            ts: ev.ts,
            action,
        })
    }
}

/// `attrs.amount` of `credit.granted`: a decimal string above zero.
fn amount(v: Option<serde_json::Value>) -> Result<Decimal, DecodeError> {
    let bad = |why: String| DecodeError::invalid(format!("field `attrs.amount`: {why}"));
    let s = match v {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => return Err(bad(format!("{other} is not a decimal string like \"100.00\""))),
        None => return Err(bad("missing: a credit.granted event says how much".into())),
    };
    let d = Decimal::from_str_exact(s.trim()).map_err(|e| bad(format!("{s:?} is not a decimal amount ({e})")))?;
    if d <= Decimal::ZERO {
        return Err(bad(format!("{s:?} is not above zero")));
    }
    crate::money::within_limits(d).map_err(bad)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::event::decode;
    use crate::decode::RejectReason;

    fn parse(line: &str) -> Result<BillingEvent, DecodeError> {
        BillingEvent::from_wire(&decode(line.as_bytes()).unwrap())
    }

    #[test]
    fn billing_events_validate_their_attributes() {
        let base = r#""tenant":"acme","conversation":"c1","ts":"2026-06-12T10:00:00Z""#;
        let ok = parse(&format!(r#"{{"id":"d1","type":"dispute.opened",{base},"attrs":{{"outcome":"ai_resolution","reason":"not resolved"}}}}"#)).unwrap();
        assert_eq!(ok.action, Action::DisputeOpened { outcome: "ai_resolution".into(), reason: "not resolved".into() });
        let c =
            parse(&format!(r#"{{"id":"g1","type":"credit.granted",{base},"attrs":{{"amount":"250.00"}}}}"#)).unwrap();
        assert_eq!(c.action, Action::CreditGranted { amount: Decimal::new(25000, 2), note: String::new() });
        for (attrs, cause) in [
            (r#"{"type":"dispute.accepted""#, "attrs.outcome` is missing"),
            (r#"{"type":"credit.granted","attrs":{"amount":250}"#, "not a decimal string"),
            (r#"{"type":"credit.granted","attrs":{"amount":"-5"}"#, "not above zero"),
            (r#"{"type":"credit.granted","attrs":{"amount":"lots"}"#, "not a decimal amount"),
            (r#"{"type":"credit.granted""#, "missing"),
        ] {
            let e = parse(&format!(r#"{attrs},"id":"x",{base}}}"#)).unwrap_err();
            assert_eq!(e.reason, RejectReason::Invalid);
            assert!(e.message.contains(cause), "{attrs}: {}", e.message);
        }
        assert!(is_billing("dispute.opened") && is_billing("credit.granted"));
        assert!(!is_billing("conversation.started") && !is_billing("dispute") && !is_billing("credit.granted.x"));
    }
}
