//! The dispute API: a customer opens a dispute, an operator accepts or rejects it, over
//! HTTP. Each call becomes the SPEC 8.2 billing event, written to the log and applied
//! before it is answered (stamped with the wall clock, or the body's `ts` for
//! backfills), so disputes are replayed, checkpointed and exactly-once like every other
//! event. The answer says what rating makes of it: opened (with its review due time),
//! refused with its cause, or accepted with the credit and the invoice it lands on.
//! `GET /v1/disputes` lists a tenant's disputes with their age and due time.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

use super::http::{error, log_and_apply, Api};
use super::input::{Records, HTTP_SOURCE};
use super::worker::{Control, DisputeRequest};
use crate::ledger::billing::{self, Action, BillingEvent};
use crate::ledger::period::Period;
use crate::ledger::preview::{Preview, Subject};
use crate::ledger::rating::{Decision, Dispute, DisputeStatus, Refusal};
use crate::timestamp::{self, format_rfc3339, parse_rfc3339, Nanos};

/// The body of `POST /v1/disputes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    tenant: String,
    conversation: String,
    outcome: String,
    #[serde(default)]
    reason: String,
    /// When it was opened (RFC 3339); the wall clock by default.
    ts: Option<String>,
    /// The event id, for a client that retries; made from the verdict and time by default.
    id: Option<String>,
}

/// The body of `POST /v1/disputes/{verdict_id}/accept` and `/reject` (may be empty).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default)]
    note: String,
    ts: Option<String>,
    id: Option<String>,
}

/// Why a body is not a valid request (400).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not a valid request: {e}"))
}

/// The call's time: the body's `ts`, else the wall clock; or why `ts` is bad (400).
fn stamp(ts: Option<&str>) -> Result<Nanos, String> {
    match ts {
        None => Ok(timestamp::now()),
        Some(t) => parse_rfc3339(t).map_err(|e| format!("field `ts` {t:?}: {e}")),
    }
}

async fn ask<T>(api: &Api, request: impl FnOnce(oneshot::Sender<T>) -> DisputeRequest) -> Result<T, Response> {
    super::http::ask(api, |reply| Control::Dispute(request(reply))).await
}

/// `POST /v1/disputes`: opens a dispute of the verdict of (tenant, conversation, outcome).
pub(super) async fn open(State(api): State<Api>, body: Bytes) -> Response {
    let b: OpenBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    for (field, v) in [("tenant", &b.tenant), ("conversation", &b.conversation), ("outcome", &b.outcome)] {
        if v.is_empty() {
            return error(StatusCode::BAD_REQUEST, format!("field `{field}` must not be empty"));
        }
    }
    let outcomes: Vec<String> = api.shared.rules.load().outcomes.iter().map(|o| o.name.clone()).collect();
    if !outcomes.contains(&b.outcome) {
        let known = outcomes.join(", ");
        return error(StatusCode::NOT_FOUND, format!("unknown outcome {:?}: the definitions are {known}", b.outcome));
    }
    let ts = match stamp(b.ts.as_deref()) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match ask(&api, |r| DisputeRequest::KnowsTenant(b.tenant.clone(), r)).await {
        Ok(true) => {}
        Ok(false) => {
            let why = format!("unknown tenant {:?}: it has no verdict, billing event or plan here", b.tenant);
            return error(StatusCode::NOT_FOUND, why);
        }
        Err(r) => return r,
    }
    let vid = crate::verdicts::verdict_id(&b.tenant, &b.conversation, &b.outcome);
    let event = BillingEvent {
        id: b.id.unwrap_or_else(|| format!("http-dispute-{vid}-{ts}")),
        tenant: b.tenant,
        conversation: b.conversation,
        ts,
        action: Action::DisputeOpened { outcome: b.outcome, reason: b.reason },
    };
    answer(&api, event).await
}

/// `POST /v1/disputes/{verdict_id}/accept`: credits the verdict's charge.
pub(super) async fn accept(State(api): State<Api>, Path(verdict_id): Path<String>, body: Bytes) -> Response {
    close(api, verdict_id, body, true).await
}

/// `POST /v1/disputes/{verdict_id}/reject`: closes the dispute, nothing credited.
pub(super) async fn reject(State(api): State<Api>, Path(verdict_id): Path<String>, body: Bytes) -> Response {
    close(api, verdict_id, body, false).await
}

async fn close(api: Api, verdict_id: String, body: Bytes, accept: bool) -> Response {
    let b: CloseBody = if body.iter().all(u8::is_ascii_whitespace) {
        CloseBody::default()
    } else {
        match parse(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        }
    };
    let ts = match stamp(b.ts.as_deref()) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Subject { tenant, conversation, outcome } =
        match ask(&api, |r| DisputeRequest::Subject(verdict_id.clone(), r)).await {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("unknown verdict {verdict_id}: no such verdict was decided here"),
                )
            }
            Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
            Err(r) => return r,
        };
    let verb = if accept { "accept" } else { "reject" };
    let action = if accept {
        Action::DisputeAccepted { outcome, note: b.note }
    } else {
        Action::DisputeRejected { outcome, note: b.note }
    };
    let id = b.id.unwrap_or_else(|| format!("http-{verb}-{verdict_id}-{ts}"));
    answer(&api, BillingEvent { id, tenant, conversation, ts, action }).await
}

/// The billing event as one line of the event stream.
fn event_line(e: &BillingEvent) -> Vec<u8> {
    let (kind, attrs) = match &e.action {
        Action::DisputeOpened { outcome, reason } => {
            (billing::DISPUTE_OPENED, json!({"outcome": outcome, "reason": reason}))
        }
        Action::DisputeAccepted { outcome, note } => {
            (billing::DISPUTE_ACCEPTED, json!({"outcome": outcome, "note": note}))
        }
        Action::DisputeRejected { outcome, note } => {
            (billing::DISPUTE_REJECTED, json!({"outcome": outcome, "note": note}))
        }
        Action::CreditGranted { amount, note } => (billing::CREDIT_GRANTED, json!({"amount": amount, "note": note})),
    };
    let line = json!({"id": e.id, "type": kind, "tenant": e.tenant, "conversation": e.conversation,
                      "ts": format_rfc3339(e.ts), "attrs": attrs});
    line.to_string().into_bytes()
}

/// Logs the event, waits for it to be applied, and answers with what rating makes of it.
async fn answer(api: &Api, event: BillingEvent) -> Response {
    let mut batch = Records::new(HTTP_SOURCE, timestamp::now());
    let line = event_line(&event);
    batch.push(&line, 1, 0, line.len() as u64, false);
    let applied = match log_and_apply(api, batch).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if let Some(r) = applied.rejected.first() {
        // Late (before the watermark) or invalid: a dead letter, with why.
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": r.error, "reason": r.reason}))).into_response();
    }
    let (preview, currency) = match ask(api, |r| DisputeRequest::Preview(Box::new(event.clone()), r)).await {
        Ok(Ok(Some(p))) => p,
        Ok(Ok(None)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the ledger does not hold the dispute event"),
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(r) => return r,
    };
    let plans = api.shared.plans.load();
    let mut a = Answer { event: event.id.clone(), tenant: event.tenant.clone(), currency, ..Answer::default() };
    match preview {
        Preview::Rated(d) => {
            a.rated = true;
            a.verdict_id = d.verdict_id.clone();
            a.status = d.status.word();
            a.cause_code = d.cause.as_deref().map(Refusal::code_of);
            a.cause = d.cause.clone();
            a.credit = d.credit.map(|c| c.to_string());
            a.invoice = d.credit_period.as_ref().map(|p| invoice_number(&d.tenant, p));
            if d.status != DisputeStatus::Refused {
                a.opened_at = Some(d.opened_at.clone());
                a.due_at = parse_rfc3339(&d.opened_at).ok().map(|t| format_rfc3339(plans.review_due(&d.tenant, t)));
            }
            a.closed_at = d.closed_at;
        }
        Preview::Pending { decision, verdict_id, opened_at, credit } => {
            a.verdict_id = verdict_id;
            a.status = match &decision {
                Decision::Open => "open",
                Decision::Accept => "accepted",
                Decision::Reject => "rejected",
                Decision::Refuse(r) => {
                    (a.cause, a.cause_code) = (Some(r.to_string()), Some(r.code()));
                    "refused"
                }
            };
            if !matches!(decision, Decision::Refuse(_)) {
                a.opened_at = opened_at.map(format_rfc3339);
                a.due_at = opened_at.map(|t| format_rfc3339(plans.review_due(&event.tenant, t)));
            }
            if matches!(decision, Decision::Accept | Decision::Reject) {
                a.closed_at = Some(format_rfc3339(event.ts));
            }
            if decision == Decision::Accept {
                a.credit = credit.map(|c| c.to_string());
                a.invoice = Some(invoice_number(&event.tenant, &Period::of(event.ts).to_string()));
            }
        }
    }
    let status = match (a.status, a.cause_code) {
        ("open", _) => StatusCode::CREATED,
        ("refused", Some("unknown_verdict")) => StatusCode::NOT_FOUND,
        ("refused", Some("already_disputed" | "no_open_dispute")) => StatusCode::CONFLICT,
        ("refused", _) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (status, Json(a)).into_response()
}

fn invoice_number(tenant: &str, period: &str) -> String {
    format!("INV-{tenant}-{period}")
}

/// What a dispute call did.
#[derive(Serialize, Default)]
struct Answer {
    /// The billing event the call became.
    event: String,
    tenant: String,
    verdict_id: String,
    /// `open`, `accepted`, `rejected` or `refused`.
    status: &'static str,
    cause: Option<String>,
    /// `unknown_verdict`, `not_billable`, `already_disputed`, `outside_window`, `no_open_dispute`.
    cause_code: Option<&'static str>,
    opened_at: Option<String>,
    /// When the review of the dispute is due.
    due_at: Option<String>,
    closed_at: Option<String>,
    /// An accept's credit: the verdict's charge (null while the verdict waits to be rated).
    credit: Option<String>,
    currency: String,
    /// The invoice the credit lands on.
    invoice: Option<String>,
    /// Whether rating has taken it already (else this is what rating will do once the
    /// watermark passes it; `GET /v1/disputes` shows it then).
    rated: bool,
}

#[derive(Deserialize)]
pub(super) struct DisputeQuery {
    tenant: Option<String>,
    status: Option<String>,
}

/// A dispute with its review clock.
#[derive(Serialize)]
struct DisputeView {
    #[serde(flatten)]
    dispute: Dispute,
    /// When its review is due (open, accepted or rejected disputes).
    due_at: Option<String>,
    /// Seconds since it opened, by the wall clock, while it is open.
    age_seconds: Option<i64>,
    /// Open past its due time.
    overdue: bool,
}

/// `GET /v1/disputes?tenant=T[&status=S]`: the tenant's disputes with their age and due time.
pub(super) async fn list(State(api): State<Api>, Query(q): Query<DisputeQuery>) -> Response {
    let status = q.status.clone();
    let (tenant, view) = match super::http::billing(&api, q.tenant).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let plans = api.shared.plans.load();
    let now = timestamp::now();
    let all: Vec<DisputeView> = view
        .disputes
        .into_iter()
        .filter(|d| status.as_deref().is_none_or(|s| d.status.word() == s))
        .map(|d| {
            let opened = (d.status != DisputeStatus::Refused).then(|| parse_rfc3339(&d.opened_at).ok()).flatten();
            let due = opened.map(|t| plans.review_due(&tenant, t));
            let open = d.status == DisputeStatus::Open;
            DisputeView {
                due_at: due.map(format_rfc3339),
                age_seconds: opened.filter(|_| open).map(|t| now.saturating_sub(t) / 1_000_000_000),
                overdue: open && due.is_some_and(|due| now > due),
                dispute: d,
            }
        })
        .collect();
    Json::<Vec<DisputeView>>(all).into_response()
}
