//! Stripe: one billing meter event per request (v1, form-encoded); a correction is a
//! meter event adjustment of type `cancel` naming the event's identifier.
//!
//! - Meter events, https://docs.stripe.com/api/billing/meter-event/create: `POST
//!   /v1/billing/meter_events` with `event_name` (the meter's event name), `identifier`
//!   (unique; Stripe enforces it over a rolling period of at least 24 hours), `timestamp`
//!   (Unix seconds, within the past 35 calendar days) and `payload`: it must hold the
//!   meter's customer key (default `stripe_customer_id`) and value key (default `value`);
//!   payload values are strings. One event a request (the v1 API takes no batch).
//! - Adjustments, https://docs.stripe.com/api/billing/meter-event-adjustment/create:
//!   `POST /v1/billing/meter_event_adjustments` with `event_name`, `type=cancel` and
//!   `cancel[identifier]`, which "can only cancel events within 24 hours of Stripe
//!   receiving them" (that parameter's documentation, v1 and v2): a dispute accepted
//!   later is refused by Stripe, and needs a credit (a credit note or a customer balance
//!   transaction) made there by hand.
//!
//! `payload[value]` is 1: one outcome, priced per unit by the Stripe price of the meter
//! (`sum` aggregation). `tier`, `amount`, `currency`, `conversation` and `tenant` ride
//! along in the payload. Keys keep literal square brackets, as Stripe's own libraries
//! send them. The customer is `stripe_customer_id`: the plans' `external_id` should be
//! the tenant's Stripe customer id (`cus_...`).

use super::encode::{unix_seconds, Form};
use super::{Correction, Item, Request, FORM};

pub(super) const MAX_BATCH: usize = 1;

/// `POST /v1/billing/meter_events` for the one usage of `items` (corrections never come
/// here).
pub(super) fn meter_events(items: &[&Item<'_>]) -> Request {
    let mut f = Form::default();
    if let Some(Item::Usage(u)) = items.first() {
        f.pair("event_name", &u.outcome)
            .pair("identifier", &u.verdict_id)
            .pair("timestamp", itoa::Buffer::new().format(unix_seconds(u.decided_at)))
            .pair("payload[stripe_customer_id]", &u.customer)
            .pair("payload[value]", "1");
        if let Some(tier) = u.tier {
            f.pair("payload[tier]", itoa::Buffer::new().format(tier));
        }
        f.pair("payload[amount]", &u.amount.to_string())
            .pair("payload[currency]", &u.currency)
            .pair("payload[conversation]", &u.conversation)
            .pair("payload[tenant]", &u.tenant);
    }
    Request {
        method: "POST",
        path: "/v1/billing/meter_events".into(),
        content_type: FORM,
        body: f.into_body(),
        keys: Vec::new(),
    }
}

/// `POST /v1/billing/meter_event_adjustments`: cancel the event of the verdict.
pub(super) fn cancel(c: &Correction<'_>) -> Request {
    let mut f = Form::default();
    f.pair("event_name", &c.usage.outcome).pair("type", "cancel").pair("cancel[identifier]", &c.usage.verdict_id);
    Request {
        method: "POST",
        path: "/v1/billing/meter_event_adjustments".into(),
        content_type: FORM,
        body: f.into_body(),
        keys: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{correction, usage};
    use super::super::Platform;
    use super::*;

    #[test]
    fn a_meter_event_and_its_cancellation_are_form_encoded() {
        let mut u = usage(1, 0);
        u.decided_at += 999_000_000; // the second it falls in
        u.conversation = "c 1&x".into();
        let items = [Item::Usage(u), Item::Correction(correction(1, 0))];
        let reqs = Platform::Stripe.requests(&items);
        assert_eq!(reqs.len(), 2);
        let (event, adjustment) = (&reqs[0], &reqs[1]);
        assert_eq!(
            (event.method, event.path.as_str(), event.content_type),
            ("POST", "/v1/billing/meter_events", "application/x-www-form-urlencoded")
        );
        assert_eq!(
            event.body,
            "event_name=ai_resolution&identifier=v0001&timestamp=1781258400\
             &payload[stripe_customer_id]=cus_acme&payload[value]=1&payload[tier]=2&payload[amount]=1.50\
             &payload[currency]=USD&payload[conversation]=c%201%26x&payload[tenant]=acme"
        );
        assert_eq!(event.keys, ["v0001"]);
        assert_eq!((adjustment.method, adjustment.path.as_str()), ("POST", "/v1/billing/meter_event_adjustments"));
        assert_eq!(adjustment.body, "event_name=ai_resolution&type=cancel&cancel[identifier]=v0001");
        assert_eq!(adjustment.keys, ["credit:v0001"]);
    }
}
