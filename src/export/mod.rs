//! Exports to billing platforms: billable verdicts become the usage events of Orb,
//! Metronome, Lago or Stripe, and the credits the ledger gives (an accepted dispute, a
//! retraction) become each platform's documented correction of that event. This module
//! is pure: [`Platform::requests`] turns items into HTTP requests (method, path, content
//! type, body, the idempotency keys inside), and [`usage_from_line`] reads one line of
//! the verdict NDJSON; `verdict export` ([`cli`]) and a push sink do the I/O.
//!
//! Every usage event's idempotency key is its `verdict_id` and every correction's is
//! `credit:<verdict_id>` (a verdict is credited at most once, SPEC 8.3): sending the
//! same export twice, or resuming one half sent, is harmless.
//!
//! Each platform's shape and its documentation are in its own module; the mapping is
//! summarised in docs/billing.md ("Exports").

pub mod cli;
mod encode;
mod lago;
mod line;
mod metronome;
mod orb;
mod stripe;

use std::borrow::Cow;

use rust_decimal::Decimal;

use crate::ledger::rating::CreditKind;
use crate::timestamp::Nanos;

pub use line::{correction_from_credit, correction_from_line, usage_from_line, LineError};

/// A billing platform verdict exports to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Orb,
    Metronome,
    Lago,
    Stripe,
}

/// One billable verdict, as a usage event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage<'a> {
    pub verdict_id: Cow<'a, str>,
    pub tenant: Cow<'a, str>,
    /// The tenant's id in the platform: the plans' `external_id`, else the tenant id.
    pub customer: Cow<'a, str>,
    pub outcome: Cow<'a, str>,
    pub tier: Option<u8>,
    /// The verdict's list amount (its own price, SPEC 2).
    pub amount: Decimal,
    pub currency: Cow<'a, str>,
    pub conversation: Cow<'a, str>,
    pub decided_at: Nanos,
}

/// A credit of the ledger: it undoes the usage event of `usage` (the verdict credited).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Correction<'a> {
    pub usage: Usage<'a>,
    pub kind: CreditKind,
    /// What the ledger credited: the verdict's charge under its plan (informational;
    /// the platform rates the usage event itself).
    pub credited: Decimal,
    /// When it was credited (the accept or the retraction).
    pub at: Nanos,
}

/// What is exported: a usage event, or the correction of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    Usage(Usage<'a>),
    Correction(Correction<'a>),
}

impl Item<'_> {
    /// The order exports take: by time, usages before corrections at equal time (as the
    /// ledger rates), then by verdict id.
    pub fn order_key(&self) -> (Nanos, u8, &str) {
        match self {
            Item::Usage(u) => (u.decided_at, 0, &u.verdict_id),
            Item::Correction(c) => (c.at, 1, &c.usage.verdict_id),
        }
    }
}

/// One HTTP request to a platform's API. `path` is relative to the API's base URL (the
/// push sink's `push_url`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub content_type: &'static str,
    /// The body; empty when the request has none (an Orb deprecation).
    pub body: String,
    /// The idempotency keys of what the request carries, in order: the events' own keys,
    /// or the correction's key (also usable as an `Idempotency-Key` header where the
    /// platform takes one).
    pub keys: Vec<String>,
}

pub(crate) const JSON: &str = "application/json";
pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

/// The idempotency key of a correction of the verdict `verdict_id`.
pub fn correction_key(verdict_id: &str) -> String {
    format!("credit:{verdict_id}")
}

impl Platform {
    pub const ALL: [Platform; 4] = [Platform::Orb, Platform::Metronome, Platform::Lago, Platform::Stripe];

    pub fn name(self) -> &'static str {
        match self {
            Platform::Orb => "orb",
            Platform::Metronome => "metronome",
            Platform::Lago => "lago",
            Platform::Stripe => "stripe",
        }
    }

    /// The most events one ingestion request may carry (documented in each module).
    pub fn max_batch(self) -> usize {
        match self {
            Platform::Orb => orb::MAX_BATCH,
            Platform::Metronome => metronome::MAX_BATCH,
            Platform::Lago => lago::MAX_BATCH,
            Platform::Stripe => stripe::MAX_BATCH,
        }
    }

    /// The idempotency key of an item: a usage's `verdict_id`, a correction's
    /// `credit:<verdict_id>`. The same for every platform, so an item keeps its key
    /// whichever platform it goes to.
    pub fn key_of<'i>(self, item: &'i Item<'_>) -> Cow<'i, str> {
        match item {
            Item::Usage(u) => Cow::Borrowed(&u.verdict_id),
            Item::Correction(c) => Cow::Owned(correction_key(&c.usage.verdict_id)),
        }
    }

    /// The requests that send `items`, in their order: consecutive events share a request
    /// up to [`Self::max_batch`]; a correction the platform takes at another endpoint
    /// (Orb, Stripe) is a request of its own, between the batches before and after it.
    pub fn requests(self, items: &[Item<'_>]) -> Vec<Request> {
        let mut out = Vec::with_capacity(items.len() / self.max_batch() + 1);
        let mut batch: Vec<&Item<'_>> = Vec::with_capacity(self.max_batch().min(items.len()));
        for item in items {
            if let Item::Correction(c) = item {
                if let Some(own) = self.correction_request(c) {
                    self.flush(&mut batch, &mut out);
                    out.push(own);
                    continue;
                }
            }
            batch.push(item);
            if batch.len() == self.max_batch() {
                self.flush(&mut batch, &mut out);
            }
        }
        self.flush(&mut batch, &mut out);
        out
    }

    fn flush(self, batch: &mut Vec<&Item<'_>>, out: &mut Vec<Request>) {
        if batch.is_empty() {
            return;
        }
        // Orb and Stripe take corrections at their own endpoints (`correction_request`).
        debug_assert!(
            matches!(self, Platform::Metronome | Platform::Lago) || batch.iter().all(|i| matches!(i, Item::Usage(_)))
        );
        let mut r = match self {
            Platform::Orb => orb::ingest(batch),
            Platform::Metronome => metronome::ingest(batch),
            Platform::Lago => lago::batch(batch),
            Platform::Stripe => stripe::meter_events(batch),
        };
        r.keys = batch.iter().map(|i| self.key_of(i).into_owned()).collect();
        out.push(r);
        batch.clear();
    }

    /// The request of a correction made at its own endpoint; `None` when the platform
    /// takes it as an event like any other (a compensating event).
    fn correction_request(self, c: &Correction<'_>) -> Option<Request> {
        let mut r = match self {
            Platform::Orb => orb::deprecate(c),
            Platform::Stripe => stripe::cancel(c),
            Platform::Metronome | Platform::Lago => return None,
        };
        r.keys = vec![correction_key(&c.usage.verdict_id)];
        Some(r)
    }
}

/// How a credit is named in exports: `dispute` or `retraction`.
pub fn credit_kind(k: CreditKind) -> &'static str {
    match k {
        CreditKind::Dispute => "dispute",
        CreditKind::Retraction => "retraction",
    }
}

/// The events of `items`, each written by `event`, comma-separated between `open` and
/// `close`: a batch body.
fn json_batch(open: &str, close: &str, items: &[&Item<'_>], mut event: impl FnMut(&mut String, &Item<'_>)) -> String {
    let mut body = String::with_capacity(open.len() + close.len() + items.len() * 256);
    body.push_str(open);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        event(&mut body, item);
    }
    body.push_str(close);
    body
}

/// The usage an item is about, the correction if it is one, and its idempotency key.
fn parts<'i, 'a>(item: &'i Item<'a>) -> (&'i Usage<'a>, Option<&'i Correction<'a>>, Cow<'i, str>) {
    match item {
        Item::Usage(u) => (u, None, Cow::Borrowed(&*u.verdict_id)),
        Item::Correction(c) => (&c.usage, Some(c), Cow::Owned(correction_key(&c.usage.verdict_id))),
    }
}

/// The properties Metronome and Lago events share, all strings: `tier`, `amount`
/// (negated for a compensating event), `currency`, `conversation`, `tenant`.
/// A compensating event also names the verdict it `corrects` and the `credit_kind`;
/// the properties object is closed, then the event.
fn string_properties(mut p: encode::Obj<'_>, u: &Usage<'_>, credit: Option<&Correction<'_>>) {
    if let Some(tier) = u.tier {
        p.str("tier", itoa::Buffer::new().format(tier));
    }
    p.decimal("amount", if credit.is_some() { encode::negated(u.amount) } else { u.amount })
        .str("currency", &u.currency)
        .str("conversation", &u.conversation)
        .str("tenant", &u.tenant);
    if let Some(c) = credit {
        p.str("corrects", &u.verdict_id).str("credit_kind", credit_kind(c.kind));
    }
    p.close();
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A billable verdict of `tenant`, decided `secs` after 2026-06-12T10:00:00Z.
    pub(crate) fn usage(n: u32, secs: i64) -> Usage<'static> {
        Usage {
            verdict_id: format!("v{n:04}").into(),
            tenant: "acme".into(),
            customer: "cus_acme".into(),
            outcome: "ai_resolution".into(),
            tier: Some(2),
            amount: Decimal::new(150, 2),
            currency: "USD".into(),
            conversation: format!("c{n}").into(),
            decided_at: 1_781_258_400_000_000_000 + secs * 1_000_000_000,
        }
    }

    pub(crate) fn correction(n: u32, secs: i64) -> Correction<'static> {
        Correction {
            usage: usage(n, secs),
            kind: CreditKind::Dispute,
            credited: Decimal::new(75, 2),
            at: 1_781_258_400_000_000_000 + (secs + 3_600) * 1_000_000_000,
        }
    }

    fn usages(n: u32) -> Vec<Item<'static>> {
        (0..n).map(|i| Item::Usage(usage(i, i64::from(i)))).collect()
    }

    #[test]
    fn usages_are_batched_up_to_the_limit_of_each_platform() {
        let limits: Vec<usize> = Platform::ALL.iter().map(|p| p.max_batch()).collect();
        assert_eq!(limits, [500, 100, 100, 1]);
        for p in Platform::ALL {
            let n = p.max_batch() as u32 + 1;
            let reqs = p.requests(&usages(n));
            let sizes: Vec<usize> = reqs.iter().map(|r| r.keys.len()).collect();
            assert_eq!(sizes, [p.max_batch(), 1], "{p}");
            // Every key once, in order.
            let keys: Vec<String> = reqs.iter().flat_map(|r| r.keys.clone()).collect();
            assert_eq!(keys, (0..n).map(|i| format!("v{i:04}")).collect::<Vec<_>>(), "{p}");
            assert!(reqs.iter().all(|r| r.method == "POST"), "{p}");
        }
        let orb = Platform::Orb.requests(&usages(1001));
        assert_eq!(orb.iter().map(|r| r.keys.len()).collect::<Vec<_>>(), [500, 500, 1]);
        assert!(Platform::Orb.requests(&[]).is_empty());
    }

    #[test]
    fn corrections_go_alone_where_the_platform_has_an_endpoint_for_them() {
        let mut items = usages(3);
        items.insert(2, Item::Correction(correction(0, 0)));
        let shape = |p: Platform| -> Vec<(String, Vec<String>)> {
            p.requests(&items).into_iter().map(|r| (r.path, r.keys)).collect()
        };
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shape(Platform::Orb),
            [
                ("/v1/ingest".into(), k(&["v0000", "v0001"])),
                ("/v1/events/v0000/deprecate".into(), k(&["credit:v0000"])),
                ("/v1/ingest".into(), k(&["v0002"])),
            ]
        );
        assert_eq!(
            shape(Platform::Metronome),
            [("/v1/ingest".into(), k(&["v0000", "v0001", "credit:v0000", "v0002"]))]
        );
        assert_eq!(
            shape(Platform::Lago),
            [("/api/v1/events/batch".into(), k(&["v0000", "v0001", "credit:v0000", "v0002"]))]
        );
        let stripe = shape(Platform::Stripe);
        assert_eq!(stripe.len(), 4);
        assert_eq!(stripe[2], ("/v1/billing/meter_event_adjustments".into(), k(&["credit:v0000"])));
    }

    #[test]
    fn keys_are_deterministic_and_items_order_by_time_then_kind() {
        let (u, c) = (Item::Usage(usage(7, 0)), Item::Correction(correction(7, 0)));
        for p in Platform::ALL {
            assert_eq!((p.key_of(&u), p.key_of(&c)), (Cow::from("v0007"), Cow::from("credit:v0007")));
        }
        let same_time = Item::Correction(Correction { at: usage(8, 0).decided_at, ..correction(8, 0) });
        let mut items = [c.clone(), same_time.clone(), u.clone()];
        items.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        assert_eq!(items, [u, same_time, c]);
        // The same input gives the same bytes.
        let all = [Item::Usage(usage(1, 0)), Item::Correction(correction(1, 0))];
        for p in Platform::ALL {
            assert_eq!(p.requests(&all), p.requests(&all));
        }
    }

    #[test]
    fn platforms_read_and_print_lowercase() {
        for p in Platform::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
            assert_eq!(serde_json::from_str::<Platform>(&json).unwrap(), p);
            assert_eq!(<Platform as clap::ValueEnum>::from_str(p.name(), false).unwrap(), p);
        }
    }
}
