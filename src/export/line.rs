//! One line of verdict NDJSON (SPEC 2) read back as a [`Usage`], for a sink that ships
//! the service's verdict file: `None` for a verdict that is not billable, a
//! [`LineError`] naming the field for a line that is not a verdict; and a line of the
//! credit log as the [`Correction`] of its verdict's usage event. Strings are borrowed
//! from the line when they hold no escapes; nothing else is allocated.

use std::borrow::Cow;

use rust_decimal::Decimal;
use serde_json::value::RawValue;

use super::{Correction, Usage};
use crate::ledger::credit_log::CreditLine;
use crate::ledger::plans::PlanBook;
use crate::timestamp::parse_rfc3339;

/// Why a line is not a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("the verdict has no `{0}`")]
    Missing(&'static str),
    #[error("the verdict's `{field}` {why}")]
    Invalid { field: &'static str, why: String },
}

impl LineError {
    /// The field at fault, if it is one field.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            LineError::Json(_) => None,
            LineError::Missing(f) | LineError::Invalid { field: f, .. } => Some(f),
        }
    }
}

/// The fields of a verdict a usage event needs, undecoded.
#[derive(serde::Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    verdict_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    outcome: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tenant: Option<&'a RawValue>,
    #[serde(borrow, default)]
    conversation: Option<&'a RawValue>,
    #[serde(borrow, default)]
    billable: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tier: Option<&'a RawValue>,
    #[serde(borrow, default)]
    amount: Option<&'a RawValue>,
    #[serde(borrow, default)]
    currency: Option<&'a RawValue>,
    #[serde(borrow, default)]
    decided_at: Option<&'a RawValue>,
}

fn present<'a>(raw: Option<&'a RawValue>, field: &'static str) -> Result<&'a RawValue, LineError> {
    raw.filter(|r| r.get() != "null").ok_or(LineError::Missing(field))
}

/// A string field, borrowed from the line unless it holds escapes.
fn string<'a>(raw: Option<&'a RawValue>, field: &'static str) -> Result<Cow<'a, str>, LineError> {
    let raw = present(raw, field)?;
    let s: Cow<'a, str> = match serde_json::from_str::<&'a str>(raw.get()) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(
            serde_json::from_str::<String>(raw.get())
                .map_err(|_| LineError::Invalid { field, why: format!("is not a string: {}", raw.get()) })?,
        ),
    };
    if s.is_empty() {
        return Err(LineError::Invalid { field, why: "is empty".into() });
    }
    Ok(s)
}

/// Builds the usage event of one verdict line: `None` when the verdict is not billable.
/// The customer is the plans' `external_id` of the tenant, else the tenant id.
pub fn usage_from_line<'a>(line: &'a str, plans: &'a PlanBook) -> Result<Option<Usage<'a>>, LineError> {
    let f: Fields<'a> = serde_json::from_str(line.trim_end()).map_err(|e| LineError::Json(e.to_string()))?;
    let billable = present(f.billable, "billable")?;
    match billable.get() {
        "true" => {}
        "false" => return Ok(None),
        other => return Err(LineError::Invalid { field: "billable", why: format!("is not true or false: {other}") }),
    }
    let verdict_id = string(f.verdict_id, "verdict_id")?;
    let tenant = string(f.tenant, "tenant")?;
    let tier = match f.tier.map(RawValue::get) {
        None | Some("null") => None,
        Some(t) => Some(
            t.parse::<u8>()
                .map_err(|_| LineError::Invalid { field: "tier", why: format!("is not a tier (1 to 255): {t}") })?,
        ),
    };
    // A decimal string (SPEC 2); an exact JSON number is taken too, read from its text.
    let amount_raw = present(f.amount, "amount")?;
    let amount_text = serde_json::from_str::<&str>(amount_raw.get()).unwrap_or(amount_raw.get());
    let amount = Decimal::from_str_exact(amount_text).map_err(|e| LineError::Invalid {
        field: "amount",
        why: format!("is not an exact decimal ({e}): {}", amount_raw.get()),
    })?;
    let decided_at = string(f.decided_at, "decided_at")?;
    let decided_at =
        parse_rfc3339(&decided_at).map_err(|e| LineError::Invalid { field: "decided_at", why: e.to_string() })?;
    let customer = plans.external_id(&tenant).map_or_else(|| tenant.clone(), Cow::Borrowed);
    Ok(Some(Usage {
        verdict_id,
        customer,
        tenant,
        outcome: string(f.outcome, "outcome")?,
        tier,
        amount,
        currency: string(f.currency, "currency")?,
        conversation: string(f.conversation, "conversation")?,
        decided_at,
    }))
}

/// Builds the correction of one line of the credit log
/// ([`crate::ledger::credit_log`]): the usage event of the verdict it carries, undone.
/// `None` when the credit carries no verdict (it could not be read when the credit was
/// given) or the verdict is not billable.
pub fn correction_from_line<'a>(line: &'a str, plans: &'a PlanBook) -> Result<Option<Correction<'a>>, LineError> {
    let c: CreditLine<'a> = serde_json::from_str(line).map_err(|e| LineError::Json(e.to_string()))?;
    correction_from_credit(c, plans)
}

/// [`correction_from_line`] of a line already read.
pub fn correction_from_credit<'a>(c: CreditLine<'a>, plans: &'a PlanBook) -> Result<Option<Correction<'a>>, LineError> {
    let Some(verdict) = c.verdict.filter(|v| v.get() != "null") else { return Ok(None) };
    let at = parse_rfc3339(&c.at).map_err(|e| LineError::Invalid { field: "at", why: e.to_string() })?;
    let usage = usage_from_line(verdict.get(), plans)?;
    Ok(usage.map(|usage| Correction { usage, kind: c.kind, credited: c.amount, at }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::rating::CreditKind;

    const LINE: &str = r#"{"verdict_id":"dcaa39eb45de2ba7528d29c6eedd1413","outcome":"ai_resolution","tenant":"acme","conversation":"c-\"1\"","billable":true,"reason":"resolved","tier":2,"amount":"1.50","currency":"USD","cost":"0.0123","decided_at":"2026-06-12T10:00:00.5Z","rule_version":"abc","events":["e1","e2"]}"#;

    fn plans() -> PlanBook {
        let text =
            "[tenants.acme]\nassignments = [ { plan = \"payg\", from = \"2026-01\" } ]\nexternal_id = \"cus_acme\"\n";
        PlanBook::parse(text, &["ai_resolution"]).unwrap()
    }

    #[test]
    fn a_credit_log_line_is_the_correction_of_its_verdict() {
        let plans = plans();
        let credit = format!(
            r#"{{"verdict_id":"dcaa39eb45de2ba7528d29c6eedd1413","tenant":"acme","kind":"retraction","amount":"0.75","at":"2026-06-20T00:00:00Z","verdict_line":7,"verdict":{LINE}}}"#
        );
        let c = correction_from_line(&credit, &plans).unwrap().unwrap();
        assert_eq!(
            (c.usage.verdict_id.as_ref(), c.usage.customer.as_ref()),
            ("dcaa39eb45de2ba7528d29c6eedd1413", "cus_acme")
        );
        assert_eq!(
            (c.kind, c.credited, c.at),
            (CreditKind::Retraction, Decimal::new(75, 2), 1_781_913_600_000_000_000)
        );
        let lost = credit.replace(LINE, "null");
        assert_eq!(correction_from_line(&lost, &plans).unwrap(), None, "no verdict: nothing to correct");
        let bad = credit.replace(r#""at":"2026-06-20T00:00:00Z""#, r#""at":"June""#);
        assert_eq!(correction_from_line(&bad, &plans).unwrap_err().field(), Some("at"));
    }

    #[test]
    fn a_billable_verdict_line_is_a_usage_with_its_customer() {
        let plans = plans();
        let u = usage_from_line(LINE, &plans).unwrap().unwrap();
        assert_eq!(u.verdict_id, "dcaa39eb45de2ba7528d29c6eedd1413");
        assert!(matches!(u.verdict_id, Cow::Borrowed(_)), "no escapes: borrowed");
        assert_eq!((u.tenant.as_ref(), u.customer.as_ref(), u.outcome.as_ref()), ("acme", "cus_acme", "ai_resolution"));
        assert_eq!((u.conversation.as_ref(), u.tier, u.amount), ("c-\"1\"", Some(2), Decimal::new(150, 2)));
        assert_eq!((u.currency.as_ref(), u.decided_at), ("USD", 1_781_258_400_500_000_000));
        // Another tenant has no external id: the tenant id is the customer.
        let other = LINE.replace(r#""tenant":"acme""#, r#""tenant":"zeta""#);
        assert_eq!(usage_from_line(&other, &plans).unwrap().unwrap().customer, "zeta");
        // A verdict written by the engine reads back.
        let v = crate::verdicts::Verdict {
            verdict_id: "v1".into(),
            outcome: "ai_resolution".into(),
            tenant: "acme".into(),
            conversation: "c".into(),
            billable: true,
            reason: "resolved".into(),
            tier: None,
            amount: Decimal::new(3, 0),
            currency: "EUR".into(),
            cost: Decimal::ZERO,
            decided_at: 7,
            rule_version: "r".into(),
            events: ["e"].into_iter().collect(),
            error: None,
        };
        let mut bytes = Vec::new();
        v.write_json(&mut bytes);
        let text = String::from_utf8(bytes).unwrap();
        let u = usage_from_line(&text, &plans).unwrap().unwrap();
        assert_eq!((u.tier, u.amount, u.decided_at, u.currency.as_ref()), (None, Decimal::new(3, 0), 7, "EUR"));
    }

    #[test]
    fn a_verdict_that_is_not_billable_is_none() {
        let line =
            LINE.replace(r#""billable":true"#, r#""billable":false"#).replace(r#""amount":"1.50""#, r#""amount":"0""#);
        assert_eq!(usage_from_line(&line, &plans()), Ok(None));
    }

    #[test]
    fn a_malformed_line_names_the_field() {
        let plans = plans();
        let cases = [
            (r#""verdict_id":"dcaa39eb45de2ba7528d29c6eedd1413","#, "", "verdict_id"),
            (r#""amount":"1.50""#, r#""amount":"1.5x""#, "amount"),
            (r#""amount":"1.50""#, r#""amount":1.5e3"#, "amount"),
            (r#""tier":2"#, r#""tier":"two""#, "tier"),
            (r#""decided_at":"2026-06-12T10:00:00.5Z""#, r#""decided_at":"yesterday""#, "decided_at"),
            (r#""billable":true"#, r#""billable":"yes""#, "billable"),
            (r#""tenant":"acme""#, r#""tenant":7"#, "tenant"),
            (r#""currency":"USD""#, r#""currency":null"#, "currency"),
            (r#""outcome":"ai_resolution""#, r#""outcome":"""#, "outcome"),
        ];
        for (from, to, field) in cases {
            let line = LINE.replace(from, to);
            assert_ne!(line, LINE);
            let err = usage_from_line(&line, &plans).unwrap_err();
            assert_eq!(err.field(), Some(field), "{line}: {err}");
            assert!(err.to_string().contains(field), "{err}");
        }
        let err = usage_from_line("{\"verdict_id\":", &plans).unwrap_err();
        assert!(matches!(err, LineError::Json(_)) && err.field().is_none(), "{err}");
        // An exact number is taken as the amount.
        let number = LINE.replace(r#""amount":"1.50""#, r#""amount":1.50"#);
        assert_eq!(usage_from_line(&number, &plans).unwrap().unwrap().amount, Decimal::new(150, 2));
    }
}
