//! The push sink: billable verdicts, live, to a billing platform's API (Orb, Metronome,
//! Lago, Stripe) as usage events in its documented format ([`crate::export`]), and the
//! ledger's credits as each platform's correction of them. Like the Fluvio sinks it
//! ships files from a position (the verdict file and the credit log), so a slow or
//! failing platform never holds classification up and nothing written is lost. A credit
//! is sent only once its verdict's usage event was.
//!
//! Delivery is at-least-once: a request counts once the platform answered 2xx (or 409,
//! "already have it"), and the position after its last verdict is what the checkpoint
//! records; after a crash the requests since are sent again with the same idempotency
//! keys (the `verdict_id`), which the platform deduplicates. 429, 5xx, 401/403 and
//! network errors are retried with exponential backoff, honouring `Retry-After`. A
//! request the platform refuses for its content (another 4xx) is kept, whole, in
//! `push-rejected.ndjson` beside the verdicts for an operator, and the push goes on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::export::{correction_from_credit, usage_from_line, Item, Platform, Request};
use crate::ledger::credit_log::CreditLine;
use crate::ledger::plans::PlanBook;
use crate::telemetry;

const IDLE_POLL: Duration = Duration::from_millis(20);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured as given.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
const NAME: &str = "push";

pub struct PushSink {
    /// The verdict file.
    pub path: PathBuf,
    /// Where refused requests are kept.
    pub rejected_path: PathBuf,
    pub platform: Platform,
    /// The API's base URL, without a trailing slash.
    pub url: String,
    pub token: Option<String>,
    /// The plans in force, for each tenant's `external_id`.
    pub plans: Arc<dyn Fn() -> Arc<PlanBook> + Send + Sync>,
    /// Bytes of the verdict file delivered.
    pub acked: Arc<AtomicU64>,
    /// The credit log, whose credits go as each platform's correction.
    pub credits_path: PathBuf,
    /// Bytes of the credit log delivered.
    pub credits_acked: Arc<AtomicU64>,
}

/// What a line becomes.
enum Parsed<'a> {
    /// An event or correction to send, or nothing (a verdict that is not billable).
    Send(Option<Item<'a>>),
    /// A credit whose verdict is not delivered yet: it and what follows wait.
    Wait,
    /// Not a line of its file: logged, and skipped.
    Bad(String),
}

/// What became of one request.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Delivered,
    /// Refused for its content: kept aside, not sent again.
    Refused(u16, String),
    /// To be sent again, after the platform's `Retry-After` if it gave one.
    Retry(String, Option<Duration>),
}

impl PushSink {
    /// Pushes from `acked` and `credits_acked` on until `stop` is set and everything
    /// written is delivered (or, while the platform fails, at once: the next start sends
    /// the rest). Blocking: run it on its own thread.
    pub fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("verdict/", env!("CARGO_PKG_VERSION")))
            .build();
        let mut buf = Vec::with_capacity(super::CHUNK);
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        let grace = Duration::from_secs(10);
        let mut stopping_since: Option<Instant> = None;
        let file_len = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        loop {
            let (pos, len) = (self.acked.load(Ordering::Acquire), file_len(&self.path));
            let (cpos, clen) = (self.credits_acked.load(Ordering::Acquire), file_len(&self.credits_path));
            let behind = len.saturating_sub(pos) + clen.saturating_sub(cpos);
            metrics::gauge!(telemetry::SINK_LAG, "sink" => NAME).set(behind as f64);
            if *stop.borrow() {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if behind == 0 || failing || since.elapsed() > grace {
                    if behind > 0 {
                        tracing::warn!(
                            "push: stopping with {behind} bytes undelivered; they are sent after the restart"
                        );
                    }
                    return;
                }
            }
            if behind == 0 {
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            // Verdicts first: a credit waits for its verdict's usage event.
            let mut done = Ok(());
            for (path, acked, from, to) in
                [(&self.path, &self.acked, pos, len), (&self.credits_path, &self.credits_acked, cpos, clen)]
            {
                if from >= to || done.is_err() {
                    continue;
                }
                if let Err(e) = super::read_at(path, from, &mut buf) {
                    tracing::warn!("push: cannot read {}: {e}", path.display());
                    done = Err((e.to_string(), None, false));
                    continue;
                }
                done = self.push_chunk(&agent, path, acked, from, &buf);
            }
            match done {
                Ok(()) => {
                    failing = false;
                    backoff = FIRST_BACKOFF;
                }
                Err((why, after, progressed)) => {
                    failing = true;
                    // Backoff grows with failures in a row, not with failures among successes.
                    if progressed {
                        backoff = FIRST_BACKOFF;
                    }
                    let wait = after.unwrap_or(backoff);
                    tracing::warn!("push to {}: {why}; retrying in {wait:?}", self.url);
                    metrics::counter!(telemetry::SINK_ERRORS, "sink" => NAME).increment(1);
                    sleep_unless_stopping(wait, &stop);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// What a line of the verdict file, or of the credit log, becomes.
    fn parse<'a>(&self, credits: bool, line: &'a str, plans: &'a PlanBook) -> Parsed<'a> {
        let item = if credits {
            let credit = match serde_json::from_str::<CreditLine<'_>>(line) {
                Ok(c) => c,
                Err(e) => return Parsed::Bad(e.to_string()),
            };
            if credit.verdict_line.is_some_and(|at| at >= self.acked.load(Ordering::Acquire)) {
                return Parsed::Wait;
            }
            correction_from_credit(credit, plans).map(|c| c.map(Item::Correction))
        } else {
            usage_from_line(line, plans).map(|u| u.map(Item::Usage))
        };
        match item {
            Ok(item) => Parsed::Send(item),
            Err(e) => Parsed::Bad(e.to_string()),
        }
    }

    /// Sends what the complete lines of `buf` (read at `pos` of `path`) carry, advancing
    /// `acked` after each request delivered. On failure: why, the platform's
    /// `Retry-After`, and whether requests before the failing one were delivered.
    fn push_chunk(
        &self,
        agent: &ureq::Agent,
        path: &Path,
        acked: &AtomicU64,
        pos: u64,
        buf: &[u8],
    ) -> Result<(), (String, Option<Duration>, bool)> {
        let (_, mut used) = super::complete_lines(buf);
        let credits = path == self.credits_path;
        let plans = (self.plans)();
        let (mut items, mut ends) = (Vec::new(), Vec::new());
        let mut end = 0;
        for line in buf[..used].split_inclusive(|&b| b == b'\n') {
            let Ok(text) = std::str::from_utf8(line) else {
                end += line.len();
                continue;
            };
            if text.trim().is_empty() {
                end += line.len();
                continue;
            }
            match self.parse(credits, text, &plans) {
                Parsed::Wait => {
                    used = end;
                    break;
                }
                Parsed::Send(Some(item)) => {
                    items.push(item);
                    ends.push(end + line.len());
                }
                Parsed::Send(None) => {}
                Parsed::Bad(e) => {
                    tracing::error!("push: the line of {} at {} cannot be sent: {e}", path.display(), pos + end as u64)
                }
            }
            end += line.len();
        }
        if used == 0 {
            std::thread::sleep(IDLE_POLL);
            return Ok(());
        }
        let mut done = 0;
        for r in self.platform.requests(&items) {
            let carried = r.keys.len();
            match self.send(agent, &r) {
                Sent::Delivered => metrics::counter!(telemetry::SINK_RECORDS, "sink" => NAME).increment(carried as u64),
                Sent::Refused(status, body) => self.refused(&r, status, &body),
                Sent::Retry(why, after) => return Err((why, after, done > 0)),
            }
            done += carried;
            acked.store(pos + ends[done - 1] as u64, Ordering::Release);
        }
        // Lines after the last one sent need nothing sent.
        acked.store(pos + used as u64, Ordering::Release);
        Ok(())
    }

    fn send(&self, agent: &ureq::Agent, r: &Request) -> Sent {
        let mut req = agent.request(r.method, &format!("{}{}", self.url, r.path)).set("Content-Type", r.content_type);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        if let (Platform::Stripe, [key]) = (self.platform, r.keys.as_slice()) {
            req = req.set("Idempotency-Key", key);
        }
        let answer = if r.body.is_empty() { req.call() } else { req.send_string(&r.body) };
        match answer {
            Ok(_) => Sent::Delivered,
            Err(ureq::Error::Status(status, resp)) => {
                let after = resp.header("Retry-After").and_then(retry_after);
                let body = resp.into_string().unwrap_or_default();
                classify(status, after, body)
            }
            Err(e) => Sent::Retry(e.to_string(), None),
        }
    }

    fn refused(&self, r: &Request, status: u16, body: &str) {
        tracing::error!(
            "push: {} {} refused with {status} ({}); kept in {}",
            r.method,
            r.path,
            snippet(body),
            self.rejected_path.display()
        );
        metrics::counter!(telemetry::PUSH_REFUSED).increment(r.keys.len() as u64);
        let record = serde_json::json!({
            "at": crate::timestamp::format_rfc3339(crate::timestamp::now()),
            "status": status,
            "answer": body,
            "method": r.method,
            "path": r.path,
            "content_type": r.content_type,
            "idempotency_keys": r.keys,
            "body": r.body,
        });
        let kept = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.rejected_path)
            .and_then(|mut f| writeln!(f, "{record}").and_then(|()| f.sync_data()));
        if let Err(e) = kept {
            tracing::error!("push: cannot keep a refused request in {}: {e}", self.rejected_path.display());
        }
    }
}

/// What an error status means for a request.
fn classify(status: u16, after: Option<Duration>, body: String) -> Sent {
    match status {
        // The platform has it already (an idempotency key it has seen).
        409 => Sent::Delivered,
        // Limits, outages, and credentials an operator can fix: never given up.
        401 | 403 | 408 | 425 | 429 | 500..=599 => Sent::Retry(format!("{status}: {}", snippet(&body)), after),
        _ => Sent::Refused(status, body),
    }
}

fn snippet(s: &str) -> &str {
    let end = s.char_indices().nth(300).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

/// A `Retry-After` value: seconds, or an HTTP date; at most [`MAX_RETRY_AFTER`].
fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let format = time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            );
            let at = time::PrimitiveDateTime::parse(v, &format).ok()?.assume_utc();
            let secs = (at - time::OffsetDateTime::now_utc()).whole_milliseconds().max(0);
            Duration::from_millis(u64::try_from(secs).unwrap_or(0))
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Sleeps `d`, waking early when the service stops (the rest is sent after the restart).
fn sleep_unless_stopping(d: Duration, stop: &tokio::sync::watch::Receiver<bool>) {
    let until = Instant::now() + d;
    while Instant::now() < until && !*stop.borrow() {
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates_and_is_bounded() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO), "a date passed");
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let d = retry_after(&later.format(&format).unwrap()).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30), "{d:?}");
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn statuses_are_retried_kept_aside_or_taken_as_delivered() {
        let retried = |s| matches!(classify(s, None, String::new()), Sent::Retry(..));
        assert!([429, 500, 502, 503, 504, 401, 403, 408].into_iter().all(retried));
        assert_eq!(classify(409, None, String::new()), Sent::Delivered);
        assert_eq!(classify(400, None, "bad".into()), Sent::Refused(400, "bad".into()));
        assert_eq!(classify(422, None, String::new()), Sent::Refused(422, String::new()));
        let with = classify(429, Some(Duration::from_secs(2)), "slow down".into());
        assert_eq!(with, Sent::Retry("429: slow down".into(), Some(Duration::from_secs(2))));
    }
}
