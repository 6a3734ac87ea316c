//! Orb: usage events in batches through the ingest endpoint; a correction deprecates
//! the event by its idempotency key.
//!
//! - Ingest, https://docs.withorb.com/api-reference/event/ingest-events (and the event
//!   shape at https://docs.withorb.com/reference/ingest): `POST /v1/ingest` with
//!   `{"events":[...]}`, each event `idempotency_key`, `external_customer_id` (or
//!   `customer_id`: exactly one), `event_name`, `timestamp` (ISO 8601 in UTC) and
//!   `properties` (numbers, booleans or strings; no nesting). Up to 500 events a request.
//! - Deprecate, https://docs.withorb.com/api-reference/event/deprecate-event:
//!   `PUT /v1/events/{event_id}/deprecate`, no body, where `event_id` is the idempotency
//!   key given at ingestion. The event is kept but ignored for billing; the request is
//!   idempotent by design (Orb takes no idempotency key on it). Orb refuses it once the
//!   event's billing period has been invoiced (beyond the grace period), and by default
//!   deprecates at most 100 events of a customer in 100 days (more through its backfill
//!   API); those cases need a credit note in Orb, which this export does not make.
//!
//! The customer is `external_customer_id`: Orb's alias for a customer, "usually set to
//! an identifier native to your system", so the plans' `external_id` (else the tenant
//! id) must be set as the Orb customer's external id. `tier` is a number (Orb aggregates
//! numbers); `amount` is a decimal string, exact (a metric that sums it casts it).

use super::encode::{percent, Obj};
use super::{Correction, Item, Request, Usage, JSON};

pub(super) const MAX_BATCH: usize = 500;

/// `POST /v1/ingest` with the usage events of `items` (corrections never come here).
pub(super) fn ingest(items: &[&Item<'_>]) -> Request {
    let body = super::json_batch("{\"events\":[", "]}", items, |out, item| {
        if let Item::Usage(u) = item {
            event(out, u);
        }
    });
    Request { method: "POST", path: "/v1/ingest".into(), content_type: JSON, body, keys: Vec::new() }
}

fn event(out: &mut String, u: &Usage<'_>) {
    let mut e = Obj::open(out);
    e.str("idempotency_key", &u.verdict_id)
        .str("external_customer_id", &u.customer)
        .str("event_name", &u.outcome)
        .rfc3339("timestamp", u.decided_at);
    let mut p = e.obj("properties");
    if let Some(tier) = u.tier {
        p.number("tier", tier);
    }
    p.decimal("amount", u.amount)
        .str("currency", &u.currency)
        .str("conversation", &u.conversation)
        .str("tenant", &u.tenant);
    p.close();
    e.close();
}

/// `PUT /v1/events/{verdict_id}/deprecate`, no body.
pub(super) fn deprecate(c: &Correction<'_>) -> Request {
    let mut path = String::from("/v1/events/");
    percent(&mut path, &c.usage.verdict_id);
    path.push_str("/deprecate");
    Request { method: "PUT", path, content_type: JSON, body: String::new(), keys: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{correction, usage};
    use super::super::Platform;
    use super::*;

    #[test]
    fn a_batch_is_written_with_orbs_field_names() {
        let mut second = usage(2, 1);
        second.tier = None;
        second.conversation = "quote \" here".into();
        let items = [Item::Usage(usage(1, 0)), Item::Usage(second)];
        let reqs = Platform::Orb.requests(&items);
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!((r.method, r.path.as_str(), r.content_type), ("POST", "/v1/ingest", "application/json"));
        let want = concat!(
            r#"{"events":["#,
            r#"{"idempotency_key":"v0001","external_customer_id":"cus_acme","event_name":"ai_resolution","#,
            r#""timestamp":"2026-06-12T10:00:00Z","properties":{"tier":2,"amount":"1.50","currency":"USD","#,
            r#""conversation":"c1","tenant":"acme"}},"#,
            r#"{"idempotency_key":"v0002","external_customer_id":"cus_acme","event_name":"ai_resolution","#,
            r#""timestamp":"2026-06-12T10:00:01Z","properties":{"amount":"1.50","currency":"USD","#,
            r#""conversation":"quote \" here","tenant":"acme"}}"#,
            "]}"
        );
        assert_eq!(r.body, want);
        assert_eq!(r.keys, ["v0001", "v0002"]);
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap();
    }

    #[test]
    fn a_correction_deprecates_the_event_by_its_key() {
        let mut c = correction(3, 0);
        c.usage.verdict_id = "odd/id".into();
        let r = &Platform::Orb.requests(&[Item::Correction(c)])[0];
        assert_eq!((r.method, r.path.as_str(), r.body.as_str()), ("PUT", "/v1/events/odd%2Fid/deprecate", ""));
        assert_eq!(r.keys, ["credit:odd/id"]);
    }
}
