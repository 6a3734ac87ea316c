//! The HTTP API of SPEC section 7: ingest, usage, the audit view of a verdict, live
//! conversation state, rule status and reload, metrics, health and readiness.
//! Ingest and admin routes take an optional bearer token.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crossbeam_channel::{Sender, TrySendError};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

use super::dispute_api;
use super::input::{Input, Records, HTTP_SOURCE};
use super::reload::Reloader;
use super::sequencer::Append;
use super::shared::{verdict_key, Shared};
use super::worker::{Applied, BillingView, Control};
use crate::aggregates::Usage;
use crate::ledger::invoice::Invoice;
use crate::ledger::period::Period;
use crate::ledger::totals::Charged;
use crate::sources::body;
use crate::telemetry;
use crate::timestamp;

#[derive(Clone)]
pub struct Api {
    pub shared: Arc<Shared>,
    /// `None` when HTTP ingest is turned off.
    pub log: Option<Sender<Append>>,
    pub worker: Sender<Control>,
    pub reloader: Arc<Reloader>,
    pub metrics: PrometheusHandle,
    pub token: Option<Arc<str>>,
}

pub fn router(api: Api, max_body: usize) -> Router {
    let guarded = Router::new()
        .route("/v1/events", post(ingest))
        .route("/v1/rules/reload", post(reload))
        .route("/v1/conversations/{tenant}/{conversation}", get(conversation))
        .route("/v1/disputes", post(dispute_api::open))
        .route("/v1/disputes/{verdict_id}/accept", post(dispute_api::accept))
        .route("/v1/disputes/{verdict_id}/reject", post(dispute_api::reject))
        .route_layer(middleware::from_fn_with_state(api.clone(), auth));
    Router::new()
        .merge(guarded)
        .route("/v1/usage", get(usage))
        .route("/v1/verdicts/{id}", get(verdict))
        .route("/v1/rules", get(rules))
        .route("/v1/sources", get(sources))
        .route("/v1/invoices", get(invoices))
        .route("/v1/invoices/{tenant}/{period}", get(invoice))
        .route("/v1/invoices/{tenant}/{period}/lines/{line}/verdicts", get(line_verdicts))
        .route("/v1/statements/{tenant}/{day}", get(statement))
        .route("/v1/disputes", get(dispute_api::list))
        .route("/v1/balance", get(balance))
        .route("/v1/margins", get(margins))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(observe))
        .with_state(api)
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub(super) fn busy(status: StatusCode, message: &str) -> Response {
    metrics::counter!(telemetry::THROTTLED).increment(1);
    let mut r = error(status, message);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub(super) async fn auth(State(api): State<Api>, headers: HeaderMap, req: Request, next: Next) -> Response {
    if let Some(token) = &api.token {
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        // Compare without an early exit, so timing does not tell how much matched.
        let ok = given.is_some_and(|g| {
            g.len() == token.len() && g.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if !ok {
            let mut r = error(StatusCode::UNAUTHORIZED, "this endpoint needs `Authorization: Bearer <token>`");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    metrics::counter!(telemetry::HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => resp.status().as_u16().to_string())
        .increment(1);
    metrics::histogram!(telemetry::HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    resp
}

/// `POST /v1/events`: answers once the records are durable and applied, with what
/// became of each: `accepted` (new events), `duplicates` (ids already taken, skipped),
/// and `rejected` with line, offset, reason and error (invalid, malformed, too large,
/// or `late`: below the watermark when applied). 400 when no record was taken.
async fn ingest(State(api): State<Api>, body: Bytes) -> Response {
    let records = match body::split(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut batch = Records::new(HTTP_SOURCE, timestamp::now());
    for r in &records {
        batch.push(r.bytes, r.line, r.offset, r.size, r.truncated);
    }
    let applied = match log_and_apply(&api, batch).await {
        Ok(applied) => applied,
        Err(r) => return r,
    };
    let taken = applied.accepted + applied.duplicates;
    let status = if taken == 0 && !applied.rejected.is_empty() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    (status, Json(applied)).into_response()
}

/// Writes `batch` (records from HTTP) to the log and waits until the worker applied it:
/// what became of each record, or the answer to give instead (busy, not ready, failed).
pub(super) async fn log_and_apply(api: &Api, mut batch: Records) -> Result<Applied, Response> {
    let Some(log) = &api.log else {
        return Err(error(StatusCode::NOT_FOUND, "HTTP ingest is turned off (http_ingest = false)"));
    };
    if !api.shared.is_ready() {
        return Err(busy(StatusCode::SERVICE_UNAVAILABLE, "not ready (recovering or shutting down)"));
    }
    if api.shared.over_backlog() {
        return Err(busy(StatusCode::TOO_MANY_REQUESTS, "the engine is behind; retry shortly"));
    }
    // HTTP has nothing it has not delivered; its backlog is the clients' retries, which
    // the delivery allowance waits for.
    batch.caught_up = true;
    if batch.is_empty() {
        return Ok(Applied::default());
    }
    let (ack, done) = oneshot::channel();
    match log.try_send(Append::new(Input::Records(batch), Some(ack), &api.shared)) {
        Ok(()) => {}
        Err(TrySendError::Full(a)) => {
            a.withdraw(&api.shared);
            return Err(busy(StatusCode::SERVICE_UNAVAILABLE, "the log is busy; retry shortly"));
        }
        Err(TrySendError::Disconnected(a)) => {
            a.withdraw(&api.shared);
            return Err(busy(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
        }
    }
    match done.await {
        Ok(Ok(applied)) => Ok(applied),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "the service stopped before the events were applied")),
    }
}

#[derive(Deserialize)]
struct UsageQuery {
    tenant: Option<String>,
    period: Option<String>,
}

#[derive(Serialize)]
struct UsageReply<'a> {
    tenant: &'a str,
    period: &'a str,
    #[serde(flatten)]
    usage: Usage,
    /// What the ledger charged (the list `amount` less included outcomes, with credits).
    #[serde(flatten)]
    charged: Charged,
}

async fn usage(State(api): State<Api>, Query(q): Query<UsageQuery>) -> Response {
    let Some(tenant) = q.tenant.filter(|t| !t.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "query parameter `tenant` is required");
    };
    let period = q.period.unwrap_or_else(|| timestamp::period_of(timestamp::now()));
    if period.parse::<crate::ledger::period::Period>().is_err() {
        return error(StatusCode::BAD_REQUEST, format!("`period` must be YYYY-MM, not {period:?}"));
    }
    let usage = api.shared.usage.get(&tenant).and_then(|p| p.get(&period).cloned()).unwrap_or_default();
    let charged = api.shared.charged.get(&tenant).and_then(|p| p.get(&period).cloned()).unwrap_or_default();
    Json(UsageReply { tenant: &tenant, period: &period, usage, charged }).into_response()
}

async fn verdict(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let Some(key) = verdict_key(&id) else {
        return error(StatusCode::BAD_REQUEST, "a verdict id is 32 hex digits");
    };
    let at = match api.shared.verdicts.get(&key).map(|e| *e.value()) {
        Some(at) => at,
        // Verdicts of closed periods are kept in the billing history, not in memory.
        None => {
            let (reply, found) = oneshot::channel();
            if api.worker.send(Control::VerdictLine { verdict_id: id.to_ascii_lowercase(), reply }).is_err() {
                return busy(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
            }
            match tokio::time::timeout(Duration::from_secs(10), found).await {
                Ok(Ok(Ok(Some(at)))) => at,
                Ok(Ok(Ok(None))) => return error(StatusCode::NOT_FOUND, format!("no verdict {id}")),
                Ok(Ok(Err(e))) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("the billing history: {e}")),
                _ => return busy(StatusCode::SERVICE_UNAVAILABLE, "the worker did not answer in time"),
            }
        }
    };
    let path = api.shared.output_path.clone();
    let line = tokio::task::spawn_blocking(move || {
        crate::sinks::append::read_line_at(&path, at, crate::decode::MAX_RECORD_BYTES * 64)
    })
    .await;
    match line {
        Ok(Ok(line)) => match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(v) if v.get("verdict_id").and_then(|x| x.as_str()) == Some(id.as_str()) => Json(json!({
                "verdict": v,
                "output": api.shared.output_path.display().to_string(),
                "offset": at,
            }))
            .into_response(),
            _ => error(StatusCode::CONFLICT, format!("the output no longer holds verdict {id} at offset {at}")),
        },
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the output: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn conversation(State(api): State<Api>, Path((tenant, conversation)): Path<(String, String)>) -> Response {
    let (reply, view) = oneshot::channel();
    let missing = format!("no conversation {conversation:?} for tenant {tenant:?}");
    if api.worker.send(Control::Conversation { tenant, conversation, reply }).is_err() {
        return busy(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match tokio::time::timeout(Duration::from_secs(10), view).await {
        Ok(Ok(Some(v))) => Json(v).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, missing),
        _ => busy(StatusCode::SERVICE_UNAVAILABLE, "the worker did not answer in time"),
    }
}

async fn rules(State(api): State<Api>) -> Response {
    Json((**api.shared.rules.load()).clone()).into_response()
}

async fn sources(State(api): State<Api>) -> Response {
    Json((**api.shared.sources.load()).clone()).into_response()
}

#[derive(Deserialize)]
struct TenantQuery {
    tenant: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// A tenant's billing view from the worker, or the answer to give instead.
pub(super) async fn billing(api: &Api, tenant: Option<String>) -> Result<(String, BillingView), Response> {
    let Some(tenant) = tenant.filter(|t| !t.is_empty()) else {
        return Err(error(StatusCode::BAD_REQUEST, "query parameter `tenant` is required"));
    };
    match ask(api, |reply| Control::Billing { tenant: tenant.clone(), reply }).await? {
        Ok(v) => Ok((tenant, v)),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

/// Sends the worker a request made with a reply channel and waits (10 s at most) for
/// its answer, or the answer to give instead (shutting down, the worker too slow).
pub(super) async fn ask<T>(api: &Api, request: impl FnOnce(oneshot::Sender<T>) -> Control) -> Result<T, Response> {
    let (reply, answer) = oneshot::channel();
    if api.worker.send(request(reply)).is_err() {
        return Err(busy(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
    }
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(busy(StatusCode::SERVICE_UNAVAILABLE, "the worker did not answer in time")),
    }
}

/// An invoice as the API shows it: each line that comes from verdicts with their count
/// and a link to their pages, instead of the whole list.
fn invoice_json(inv: &Invoice) -> serde_json::Value {
    use crate::ledger::invoice::LineKind;
    let mut v = serde_json::to_value(inv).unwrap_or_default();
    if let Some(lines) = v["lines"].as_array_mut() {
        for (i, (line, l)) in lines.iter_mut().zip(&inv.lines).enumerate() {
            let Some(obj) = line.as_object_mut() else { continue };
            obj.remove("verdicts");
            let from_verdicts = matches!(
                l.kind,
                LineKind::Included
                    | LineKind::Usage
                    | LineKind::Overage
                    | LineKind::DisputeCredit
                    | LineKind::RetractionCredit
            );
            if from_verdicts && l.count > 0 {
                obj.insert("verdict_count".into(), json!(l.count));
                let url = format!("/v1/invoices/{}/{}/lines/{i}/verdicts", inv.tenant, inv.period);
                obj.insert("verdicts".into(), json!(url));
            }
        }
    }
    v
}

/// `GET /v1/invoices?tenant=T`: every invoice of the tenant, final and draft.
async fn invoices(State(api): State<Api>, Query(q): Query<TenantQuery>) -> Response {
    match billing(&api, q.tenant).await {
        Ok((_, view)) => Json(view.invoices.iter().map(invoice_json).collect::<Vec<_>>()).into_response(),
        Err(r) => r,
    }
}

/// `GET /v1/invoices/{tenant}/{period}`: SPEC 8.4 JSON, or CSV with `Accept: text/csv`.
async fn invoice(
    State(api): State<Api>,
    Path((tenant, period)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (_, view) = match billing(&api, Some(tenant.clone())).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(inv) = view.invoices.iter().find(|i| i.period == period) else {
        return error(StatusCode::NOT_FOUND, format!("no invoice of {tenant:?} for {period:?}"));
    };
    let csv = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    if csv {
        let body = crate::ledger::invoice::to_csv(std::slice::from_ref(inv));
        return ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
    }
    Json(invoice_json(inv)).into_response()
}

/// `GET /v1/invoices/{tenant}/{period}/lines/{line}/verdicts?offset=&limit=`: a page of
/// the verdicts behind a line (each one at `/v1/verdicts/{id}`, with its events).
async fn line_verdicts(
    State(api): State<Api>,
    Path((tenant, period, line)): Path<(String, String, usize)>,
    Query(q): Query<TenantQuery>,
) -> Response {
    let Ok(p) = period.parse::<crate::ledger::period::Period>() else {
        return error(StatusCode::BAD_REQUEST, format!("`period` must be YYYY-MM, not {period:?}"));
    };
    let (offset, limit) = (q.offset.unwrap_or(0), q.limit.unwrap_or(100).clamp(1, 1000));
    let (reply, page) = oneshot::channel();
    let ask = Control::LineVerdicts { tenant: tenant.clone(), period: p, line, offset, limit, reply };
    if api.worker.send(ask).is_err() {
        return busy(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match tokio::time::timeout(Duration::from_secs(10), page).await {
        Ok(Ok(Ok(Some((total, verdicts))))) => {
            Json(json!({ "total": total, "offset": offset, "limit": limit, "verdicts": verdicts })).into_response()
        }
        Ok(Ok(Ok(None))) => {
            error(StatusCode::NOT_FOUND, format!("no line {line} on the invoice of {tenant:?} for {period:?}"))
        }
        Ok(Ok(Err(e))) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        _ => busy(StatusCode::SERVICE_UNAVAILABLE, "the worker did not answer in time"),
    }
}

/// `GET /v1/statements/{tenant}/{YYYY-MM-DD}`: the charges rated that day (by their
/// verdict's `decided_at`) and the credits given, each with its verdict.
async fn statement(State(api): State<Api>, Path((tenant, day)): Path<(String, String)>) -> Response {
    let day = match day.parse::<crate::ledger::statement::Day>() {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (reply, answer) = oneshot::channel();
    if api.worker.send(Control::Statement { tenant, day, reply }).is_err() {
        return busy(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok(Ok(s))) => Json(s).into_response(),
        Ok(Ok(Err(e))) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        _ => busy(StatusCode::SERVICE_UNAVAILABLE, "the worker did not answer in time"),
    }
}

/// `GET /v1/margins?[tenant=T][&period=YYYY-MM]`: charged, credited, cost and margin
/// against the plan's floor, per outcome, with cost by model and the costliest
/// conversations; every tenant with usage in the period when none is named. The period
/// defaults to the current month.
async fn margins(State(api): State<Api>, Query(q): Query<UsageQuery>) -> Response {
    let period = match q.period.as_deref().map(str::parse::<Period>) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("query parameter `period`: {e}")),
        None => Period::of(timestamp::now()),
    };
    let tenant = q.tenant.filter(|t| !t.is_empty());
    match ask(&api, |reply| Control::Margins { tenant: tenant.clone(), period, reply }).await {
        Ok(Ok(mut all)) => match tenant {
            Some(_) => Json(all.pop()).into_response(),
            None => Json(all).into_response(),
        },
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(r) => r,
    }
}

/// `GET /v1/balance?tenant=T`: the prepaid balance now.
async fn balance(State(api): State<Api>, Query(q): Query<TenantQuery>) -> Response {
    match billing(&api, q.tenant).await {
        Ok((tenant, view)) => {
            Json(json!({ "tenant": tenant, "currency": view.currency, "balance": view.balance })).into_response()
        }
        Err(r) => r,
    }
}

async fn reload(State(api): State<Api>) -> Response {
    let result = api.reloader.reload("http").await;
    let status = if result.result == "rejected" { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    (status, Json(result)).into_response()
}

async fn metrics_text(State(api): State<Api>) -> Response {
    let age = timestamp::now().saturating_sub(api.shared.last_checkpoint.load(Ordering::Acquire));
    if api.shared.last_checkpoint.load(Ordering::Acquire) > 0 {
        metrics::gauge!(telemetry::CHECKPOINT_AGE).set(telemetry::unix_seconds(age));
    }
    let body = api.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn readyz(State(api): State<Api>) -> Response {
    if api.shared.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// GETs `path` from `addr`, each step within `timeout`; true on status 200.
pub fn probe(addr: &str, path: &str, timeout: std::time::Duration) -> bool {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let Some(sa) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else { return false };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&sa, timeout) else { return false };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}
