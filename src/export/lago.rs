//! Lago: usage events in batches through the batch endpoint; a correction is a
//! compensating event with a negative quantity through the same endpoint.
//!
//! - Batch, https://getlago.com/docs/api-reference/events/batch: `POST
//!   /api/v1/events/batch` with `{"events":[...]}`, up to 100 events a request. Each event
//!   (https://getlago.com/docs/api-reference/events/usage): `transaction_id` (the
//!   idempotency key), `external_subscription_id` (required; `external_customer_id` is
//!   deprecated), `code` (the billable metric's code), `timestamp` (Unix seconds, "you can
//!   also provide milliseconds precision by appending decimals") and `properties`.
//! - Corrections: Lago's API has no call to void an ingested event. Its SUM aggregation
//!   adds a property's values (https://getlago.com/docs/guide/billable-metrics/aggregation-types/sum)
//!   and takes negative values (lago-api "Negative event values should not be flagged as
//!   invalid", https://github.com/getlago/lago-api/pull/1555), so a credit is a
//!   compensating event: the same `code` and properties, `quantity` -1 and the amount
//!   negated, its own key `credit:<verdict_id>`, at the time of the credit. Meter
//!   verdicts with a `sum_agg` metric on `quantity` (a `count_agg` would count it).
//!
//! The customer is `external_subscription_id`: for Lago the plans' `external_id` (else
//! the tenant id) must be the external id of the tenant's Lago subscription. `quantity`
//! is a JSON number (the aggregated field); the other properties are strings, as Lago's
//! metric filters match string values.

use super::encode::{unix_seconds_ms, Obj};
use super::{Item, Request, JSON};

pub(super) const MAX_BATCH: usize = 100;

/// `POST /api/v1/events/batch` with `items`: usage events and compensating events.
pub(super) fn batch(items: &[&Item<'_>]) -> Request {
    let body = super::json_batch("{\"events\":[", "]}", items, event);
    Request { method: "POST", path: "/api/v1/events/batch".into(), content_type: JSON, body, keys: Vec::new() }
}

fn event(out: &mut String, item: &Item<'_>) {
    let (u, credit, key) = super::parts(item);
    let mut e = Obj::open(out);
    e.str("transaction_id", &key)
        .str("external_subscription_id", &u.customer)
        .str("code", &u.outcome)
        .number("timestamp", unix_seconds_ms(credit.map_or(u.decided_at, |c| c.at)));
    let mut p = e.obj("properties");
    p.number("quantity", if credit.is_some() { -1 } else { 1 });
    super::string_properties(p, u, credit);
    e.close();
}

#[cfg(test)]
mod tests {
    use super::super::tests::{correction, usage};
    use super::super::Platform;
    use super::*;

    #[test]
    fn usage_and_compensating_events_are_written_with_lagos_field_names() {
        let mut first = usage(1, 0);
        first.decided_at += 27_900_000; // 27.9 ms: milliseconds kept, the rest dropped
        let items = [Item::Usage(first), Item::Correction(correction(1, 0))];
        let reqs = Platform::Lago.requests(&items);
        assert_eq!(reqs.len(), 1, "one endpoint for both");
        let r = &reqs[0];
        assert_eq!((r.method, r.path.as_str(), r.content_type), ("POST", "/api/v1/events/batch", "application/json"));
        let want = concat!(
            r#"{"events":["#,
            r#"{"transaction_id":"v0001","external_subscription_id":"cus_acme","code":"ai_resolution","#,
            r#""timestamp":1781258400.027,"properties":{"quantity":1,"tier":"2","amount":"1.50","#,
            r#""currency":"USD","conversation":"c1","tenant":"acme"}},"#,
            r#"{"transaction_id":"credit:v0001","external_subscription_id":"cus_acme","code":"ai_resolution","#,
            r#""timestamp":1781262000,"properties":{"quantity":-1,"tier":"2","amount":"-1.50","#,
            r#""currency":"USD","conversation":"c1","tenant":"acme","corrects":"v0001","credit_kind":"dispute"}}"#,
            "]}"
        );
        assert_eq!(r.body, want);
        assert_eq!(r.keys, ["v0001", "credit:v0001"]);
    }
}
