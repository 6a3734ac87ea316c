//! Metronome: usage events in batches through the ingest endpoint; a correction is a
//! compensating event through the same endpoint.
//!
//! - Ingest, https://docs.metronome.com/api-reference/usage/ingest-events: `POST
//!   /v1/ingest`, the body a JSON array of 1 to 100 events, each `transaction_id` (the
//!   idempotency key: duplicates within 34 days are ignored), `customer_id` (a Metronome
//!   customer id or one of its ingest aliases), `event_type`, `timestamp` (RFC 3339) and
//!   `properties`. Events may be backdated 34 days at most.
//! - Properties, https://docs.metronome.com/guides/events/send-usage-events: values
//!   "should be represented as strings, even though the values are often numeric",
//!   so that no float loses precision; every property here is a string.
//!
//! Corrections: the ingest API documents no way to delete or void an event, so a credit
//! is a compensating event (our choice, not a documented Metronome recommendation): the
//! same `event_type` and properties as the usage event, with `quantity` "-1" and the
//! amount negated, its own key `credit:<verdict_id>`, at the time of the credit (so it
//! lands in the period the ledger credits it in, and within the 34 days). It nets out in
//! a billable metric that SUMs `quantity` or `amount`; a COUNT metric would count it, so
//! meter verdicts with SUM(quantity). `corrects` names the verdict, `credit_kind` why.

use super::encode::Obj;
use super::{Item, Request, JSON};

pub(super) const MAX_BATCH: usize = 100;

/// `POST /v1/ingest` with `items`: usage events and compensating events.
pub(super) fn ingest(items: &[&Item<'_>]) -> Request {
    let body = super::json_batch("[", "]", items, event);
    Request { method: "POST", path: "/v1/ingest".into(), content_type: JSON, body, keys: Vec::new() }
}

fn event(out: &mut String, item: &Item<'_>) {
    let (u, credit, key) = super::parts(item);
    let mut e = Obj::open(out);
    e.str("transaction_id", &key)
        .str("customer_id", &u.customer)
        .str("event_type", &u.outcome)
        .rfc3339("timestamp", credit.map_or(u.decided_at, |c| c.at));
    let mut p = e.obj("properties");
    p.str("quantity", if credit.is_some() { "-1" } else { "1" });
    super::string_properties(p, u, credit);
    e.close();
}

#[cfg(test)]
mod tests {
    use super::super::tests::{correction, usage};
    use super::super::Platform;
    use super::*;

    #[test]
    fn usage_and_compensating_events_are_written_with_metronomes_field_names() {
        let items = [Item::Usage(usage(1, 0)), Item::Correction(correction(1, 0))];
        let reqs = Platform::Metronome.requests(&items);
        assert_eq!(reqs.len(), 1, "one endpoint for both");
        let r = &reqs[0];
        assert_eq!((r.method, r.path.as_str(), r.content_type), ("POST", "/v1/ingest", "application/json"));
        let want = concat!(
            "[",
            r#"{"transaction_id":"v0001","customer_id":"cus_acme","event_type":"ai_resolution","#,
            r#""timestamp":"2026-06-12T10:00:00Z","properties":{"quantity":"1","tier":"2","amount":"1.50","#,
            r#""currency":"USD","conversation":"c1","tenant":"acme"}},"#,
            r#"{"transaction_id":"credit:v0001","customer_id":"cus_acme","event_type":"ai_resolution","#,
            r#""timestamp":"2026-06-12T11:00:00Z","properties":{"quantity":"-1","tier":"2","amount":"-1.50","#,
            r#""currency":"USD","conversation":"c1","tenant":"acme","corrects":"v0001","credit_kind":"dispute"}}"#,
            "]"
        );
        assert_eq!(r.body, want);
        assert_eq!(r.keys, ["v0001", "credit:v0001"]);
    }
}
