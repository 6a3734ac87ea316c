//! `verdict gen`: the synthetic event stream for demos, tests and benchmarks.
//!
//! This module owns [`GenConfig`] (the options of `verdict gen`), [`generate`] and the
//! conversation scripts behind it. It writes NDJSON in the plain wire format of SPEC
//! section 1: AI support conversations of many tenants (Zipf-skewed sizes), starting as
//! a Poisson process over the configured span, each following a realistic script
//! (resolved, reopened by a follow-up within 24 h, escalated, abandoned, closed without
//! an AI answer), interleaved and sorted by `ts`, then perturbed by arrival jitter.
//! Optionally some events are written twice and some extra bad records are mixed in.
//!
//! Guarantees:
//! - The same options give byte-identical output (one ChaCha8 stream per concern:
//!   content, jitter, duplicates, bad records; so changing `--duplicates` or `--bad`
//!   only adds lines).
//! - Arrival order is by `ts + delay`, `delay` uniform in `[0, jitter)`: no event arrives
//!   `jitter` or more behind the largest `ts` written before it.
//! - Money is integer micro-dollars, written as decimal strings (sometimes as JSON numbers).
//! - Memory holds only the events of conversations still in progress (scheduled by emit
//!   time in a ring of one-second buckets plus a heap for the far future), never the
//!   whole stream.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::Write;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Options of `verdict gen`.
#[derive(Args, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GenConfig {
    /// Number of conversations.
    #[arg(long, default_value_t = 1000)]
    pub conversations: u64,
    /// Number of tenants.
    #[arg(long, default_value_t = 20)]
    pub tenants: u32,
    /// Seed: the same seed and options give byte-identical output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// First conversation start (RFC 3339).
    #[arg(long, default_value = "2026-06-12T00:00:00Z")]
    pub start: String,
    /// Span over which conversations start, like 24h.
    #[arg(long, default_value = "24h")]
    pub span: String,
    /// Max arrival jitter (events arrive out of ts order by less than this), like 2s. 0s for sorted output.
    #[arg(long, default_value = "2s")]
    pub jitter: String,
    /// Fraction of events written twice (0.0-1.0).
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Fraction of extra bad records (0.0-1.0).
    #[arg(long, default_value_t = 0.0)]
    pub bad: f64,
}

impl Default for GenConfig {
    /// The same defaults as the command line.
    fn default() -> Self {
        GenConfig {
            conversations: 1000,
            tenants: 20,
            seed: 42,
            start: "2026-06-12T00:00:00Z".to_string(),
            span: "24h".to_string(),
            jitter: "2s".to_string(),
            duplicates: 0.0,
            bad: 0.0,
        }
    }
}

/// What [`generate`] wrote. Lines written = `events + duplicates + bad`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GenStats {
    /// Conversations generated.
    pub conversations: u64,
    /// Distinct valid events (first copies).
    pub events: u64,
    /// Extra identical copies of valid events.
    pub duplicates: u64,
    /// Extra bad records (malformed, missing a field, bad `ts`, negative `cost_usd`).
    pub bad: u64,
}

/// Writes the stream to `out`.
pub fn generate(cfg: &GenConfig, out: &mut dyn std::io::Write) -> anyhow::Result<GenStats> {
    let params = Params::from_config(cfg)?;
    let mut gen = Generator::new(&params);
    let mut arrivals = Arrivals::new(params.conversations);
    for i in 0..params.conversations {
        let start_ms = params.start_ms + arrivals.next_offset(&mut gen.rng, params.span_ms);
        // Everything generated from here on has an emit key >= start_ms * 1000 and a larger
        // sequence number, so whatever is at or below that key is final and can be written.
        gen.drain(start_ms * 1000, out)?;
        gen.conversation(i, start_ms);
    }
    gen.drain(i64::MAX, out)?;
    gen.flush(out)?;
    out.flush().context("writing the generated stream")?;
    Ok(gen.stats)
}

// ---------------------------------------------------------------------------------------
// Options

const MAX_TENANTS: u32 = 1_000_000;
const MS_PER_SEC: i64 = 1_000;
const MS_PER_MIN: i64 = 60 * MS_PER_SEC;
const MS_PER_HOUR: i64 = 60 * MS_PER_MIN;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;
/// The longest `--span`: 100 years.
const MAX_SPAN_MS: i64 = 36_525 * MS_PER_DAY;
/// The longest `--jitter`: one day.
const MAX_JITTER_US: i64 = MS_PER_DAY * 1000;
/// A conversation's events lie within this of its start (the longest script is ~2 days).
const MAX_CONVERSATION_MS: i64 = 4 * MS_PER_DAY;

struct Params {
    conversations: u64,
    tenants: u32,
    seed: u64,
    start_ms: i64,
    span_ms: i64,
    jitter_us: i64,
    duplicates: f64,
    bad: f64,
}

impl Params {
    fn from_config(cfg: &GenConfig) -> anyhow::Result<Params> {
        if cfg.tenants == 0 || cfg.tenants > MAX_TENANTS {
            bail!("--tenants must be between 1 and {MAX_TENANTS}, got {}", cfg.tenants);
        }
        let start_ms = parse_start(&cfg.start)?;
        let span = humantime::parse_duration(cfg.span.trim())
            .map_err(|e| anyhow!("--span {:?} is not a duration like 24h: {e}", cfg.span))?;
        let span_ms = i64::try_from(span.as_millis())
            .ok()
            .filter(|ms| *ms <= MAX_SPAN_MS)
            .ok_or_else(|| anyhow!("--span {:?} is too long (at most 100 years)", cfg.span))?;
        let jitter = humantime::parse_duration(cfg.jitter.trim())
            .map_err(|e| anyhow!("--jitter {:?} is not a duration like 2s: {e}", cfg.jitter))?;
        let jitter_us = i64::try_from(jitter.as_micros())
            .ok()
            .filter(|us| *us <= MAX_JITTER_US)
            .ok_or_else(|| anyhow!("--jitter {:?} is too long (at most 1 day)", cfg.jitter))?;
        let duplicates = fraction("--duplicates", cfg.duplicates)?;
        let bad = fraction("--bad", cfg.bad)?;
        let end_ms = start_ms + span_ms + MAX_CONVERSATION_MS;
        match OffsetDateTime::from_unix_timestamp(end_ms.div_euclid(MS_PER_SEC)) {
            Ok(end) if end.year() <= 9999 => {}
            _ => bail!("--start {:?} plus --span {:?} runs past the year 9999", cfg.start, cfg.span),
        }
        Ok(Params {
            conversations: cfg.conversations,
            tenants: cfg.tenants,
            seed: cfg.seed,
            start_ms,
            span_ms,
            jitter_us,
            duplicates,
            bad,
        })
    }
}

/// `--start`: RFC 3339, or a bare `YYYY-MM-DD` meaning midnight UTC. Truncated to milliseconds.
fn parse_start(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let dt = match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(dt) => dt,
        Err(e) => match time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")) {
            Ok(date) => date.midnight().assume_utc(),
            Err(_) => bail!("--start {s:?} is not an RFC 3339 timestamp like 2026-06-12T00:00:00Z: {e}"),
        },
    };
    if dt.year() < 1 {
        bail!("--start {s:?} is before the year 1");
    }
    let ms = dt.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms).map_err(|_| anyhow!("--start {s:?} is out of range"))
}

fn fraction(name: &str, v: f64) -> anyhow::Result<f64> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        bail!("{name} must be a fraction between 0.0 and 1.0, got {v}")
    }
}

// ---------------------------------------------------------------------------------------
// Vocabulary

use crate::kinds::KNOWN as KINDS;
const K_STARTED: u8 = 0;
const K_CUSTOMER: u8 = 1;
const K_AI: u8 = 2;
const K_TOOL: u8 = 3;
const K_LLM: u8 = 4;
const K_ESCALATED: u8 = 5;
const K_RESOLVED: u8 = 6;
const K_CLOSED: u8 = 7;

/// Intents: name (empty = no intent attribute), weight, tier (0 = not a known intent).
const INTENTS: [(&str, u32, u8); 14] = [
    ("password_reset", 12, 1),
    ("order_status", 14, 1),
    ("account_lookup", 6, 1),
    ("faq", 12, 1),
    ("troubleshooting", 10, 2),
    ("returns", 6, 2),
    ("refund", 6, 2),
    ("shipping_issue", 8, 2),
    ("technical_investigation", 4, 3),
    ("billing_dispute", 4, 3),
    ("escalation_prevention", 2, 3),
    ("other", 3, 0),
    ("feedback", 1, 0),
    ("", 5, 0),
];
const INTENT_WEIGHT_TOTAL: u32 = {
    let mut sum = 0;
    let mut i = 0;
    while i < INTENTS.len() {
        sum += INTENTS[i].1;
        i += 1;
    }
    sum
};

/// Models: name, input and output price in US cents per million tokens
/// (1 cent per million tokens = 0.01 micro-dollar per token).
const MODELS: [(&str, u64, u64); 5] = [
    ("gpt-4o-mini", 15, 60),
    ("gpt-4.1", 200, 800),
    ("claude-haiku-4-5", 100, 500),
    ("claude-sonnet-4-5", 300, 1500),
    ("gemini-2.5-flash", 30, 250),
];

/// Tools: name, price per call in micro-dollars (0: the event carries no `cost_usd`).
const TOOLS: [(&str, u32); 9] = [
    ("kb_search", 0),
    ("order_lookup", 1_000),
    ("account_lookup", 500),
    ("password_reset_link", 0),
    ("refund_api", 5_000),
    ("shipping_tracker", 2_000),
    ("crm_update", 0),
    ("diagnostics", 20_000),
    ("billing_ledger", 3_000),
];
const T_KB: u8 = 0;
const T_ORDER: u8 = 1;
const T_ACCOUNT: u8 = 2;
const T_RESET: u8 = 3;
const T_REFUND: u8 = 4;
const T_SHIPPING: u8 = 5;
const T_CRM: u8 = 6;
const T_DIAG: u8 = 7;
const T_BILLING: u8 = 8;

/// The tools an intent mostly uses, by intent index (empty: any tool).
const INTENT_TOOLS: [&[u8]; 14] = [
    &[T_ACCOUNT, T_RESET],
    &[T_ORDER, T_SHIPPING],
    &[T_ACCOUNT, T_CRM],
    &[T_KB],
    &[T_KB, T_DIAG],
    &[T_ORDER, T_REFUND],
    &[T_ORDER, T_REFUND, T_BILLING],
    &[T_SHIPPING, T_ORDER],
    &[T_DIAG, T_KB, T_CRM],
    &[T_BILLING, T_ACCOUNT, T_REFUND],
    &[T_CRM, T_ACCOUNT, T_KB],
    &[],
    &[],
    &[],
];

const CHANNELS: [&str; 4] = ["web", "mobile", "email", "whatsapp"];
const ESCALATION_REASONS: [&str; 4] = ["customer_request", "low_confidence", "policy", "negative_sentiment"];
const CLOSED_BY: [&str; 4] = ["customer", "agent", "timeout", "ai"];
const BY_CUSTOMER: u8 = 0;
const BY_AGENT: u8 = 1;
const BY_TIMEOUT: u8 = 2;
const BY_AI: u8 = 3;

/// Lines that are not JSON objects at all.
const GARBAGE: [&str; 4] =
    ["<html><body><h1>502 Bad Gateway</h1></body></html>", "null", "[]", "{\"id\":\"evt-0\" \"type\":\"message.ai\"}"];

// Event flags.
/// Write `"attrs":{...}` even when it would be empty.
const F_ATTRS: u8 = 1;
/// The event carries `cost_usd`.
const F_COST: u8 = 2;
/// `cost_usd` as a JSON number instead of a string.
const F_COST_NUMBER: u8 = 4;
/// `cost_usd` with all six decimals (`"0.001000"`).
const F_COST_FIXED: u8 = 8;

// Bad record variants.
const BAD_NONE: u8 = 0;
const BAD_MALFORMED: u8 = 1;
const BAD_MISSING: u8 = 2;
const BAD_TS: u8 = 3;
const BAD_COST: u8 = 4;

// ---------------------------------------------------------------------------------------
// Generation

/// One event of a conversation script, before it is scheduled.
#[derive(Clone, Copy, Default)]
struct Raw {
    ts: i64,
    kind: u8,
    /// Intent, model, tool, escalation reason or closer, by kind.
    a: u8,
    /// Channel of `conversation.started`.
    b: u8,
    flags: u8,
    in_tok: u32,
    out_tok: u32,
    /// Micro-dollars.
    cost: u32,
}

/// A scheduled line: ordered by `(key, seq)`, smallest first in a `BinaryHeap`.
#[derive(Clone, Copy)]
struct Ev {
    /// Emit time: `ts` in microseconds plus the arrival delay.
    key: i64,
    seq: u64,
    id: u64,
    conv: u64,
    tenant: u32,
    bad: u8,
    /// Which variant of bad record.
    sub: u8,
    raw: Raw,
}

impl PartialEq for Ev {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.seq == other.seq
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ev {
    /// Reversed, so that `BinaryHeap` pops the smallest `(key, seq)` first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.key, other.seq).cmp(&(self.key, self.seq))
    }
}

/// The splitmix64 finalizer: a bijection on `u64`, so distinct counters give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Conversation start offsets: the sorted order statistics of `n` uniform points in the
/// span (a Poisson process conditioned on `n` arrivals), drawn one at a time.
struct Arrivals {
    n: u64,
    i: u64,
    cur: f64,
}

impl Arrivals {
    fn new(n: u64) -> Self {
        Arrivals { n, i: 0, cur: 0.0 }
    }
    fn next_offset(&mut self, rng: &mut ChaCha8Rng, span_ms: i64) -> i64 {
        let remaining = (self.n - self.i) as f64;
        self.i += 1;
        // The minimum of `remaining` uniforms on [cur, 1) is cur + (1 - cur) * (1 - u^(1/remaining)),
        // u uniform on (0, 1].
        let u = 1.0 - rng.random::<f64>();
        self.cur += (1.0 - self.cur) * -(u.ln() / remaining).exp_m1();
        let offset = (self.cur * span_ms as f64) as i64;
        offset.clamp(0, (span_ms - 1).max(0))
    }
}

struct TenantProfile {
    /// Model used for most calls.
    model: u8,
    /// Scales the escalation and abandonment rates (0.6 to 1.6).
    trouble: f64,
}

struct Generator {
    /// Conversation content: arrivals, tenants, scripts.
    rng: ChaCha8Rng,
    /// Arrival delays.
    jitter_rng: ChaCha8Rng,
    /// Duplicates.
    dup_rng: ChaCha8Rng,
    /// Bad records.
    bad_rng: ChaCha8Rng,
    jitter_us: i64,
    duplicates: f64,
    bad: f64,
    tenants: u32,
    /// Cumulative Zipf weights of the tenants.
    tenant_cdf: Vec<f64>,
    profiles: Vec<TenantProfile>,
    id_key: u64,
    bad_id_key: u64,
    event_counter: u64,
    bad_counter: u64,
    seq: u64,
    /// The previous conversation: number, tenant, and whether its id is its own.
    prev: Option<(u64, u32, bool)>,
    schedule: Schedule,
    raws: Vec<Raw>,
    writer: LineWriter,
    stats: GenStats,
}

impl Generator {
    fn new(p: &Params) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        rng.set_stream(0);
        let mut jitter_rng = ChaCha8Rng::seed_from_u64(p.seed);
        jitter_rng.set_stream(1);
        let mut dup_rng = ChaCha8Rng::seed_from_u64(p.seed);
        dup_rng.set_stream(2);
        let mut bad_rng = ChaCha8Rng::seed_from_u64(p.seed);
        bad_rng.set_stream(4);
        let mut keys = ChaCha8Rng::seed_from_u64(p.seed);
        keys.set_stream(3);
        let id_key: u64 = keys.random();
        let bad_id_key: u64 = keys.random();
        let profile_key: u64 = keys.random();

        let mut tenant_cdf = Vec::with_capacity(p.tenants as usize);
        let mut profiles = Vec::with_capacity(p.tenants as usize);
        let mut total = 0.0;
        for k in 0..p.tenants {
            total += 1.0 / f64::from(k + 1).powf(1.07);
            tenant_cdf.push(total);
            let h = mix(profile_key.wrapping_add(u64::from(k)));
            profiles.push(TenantProfile {
                model: (h % MODELS.len() as u64) as u8,
                trouble: 0.6 + ((h >> 32) % 1001) as f64 / 1000.0,
            });
        }
        Generator {
            rng,
            jitter_rng,
            dup_rng,
            bad_rng,
            jitter_us: p.jitter_us,
            duplicates: p.duplicates,
            bad: p.bad,
            tenants: p.tenants,
            tenant_cdf,
            profiles,
            id_key,
            bad_id_key,
            event_counter: 0,
            bad_counter: 0,
            seq: 0,
            prev: None,
            schedule: Schedule::new(p.start_ms * 1000),
            raws: Vec::with_capacity(64),
            writer: LineWriter { buf: Vec::with_capacity(BUF_FLUSH + 4096), ts_fmt: TsFmt::new() },
            stats: GenStats::default(),
        }
    }

    fn pick_tenant(&mut self) -> u32 {
        let total = *self.tenant_cdf.last().unwrap_or(&1.0);
        let x = self.rng.random::<f64>() * total;
        (self.tenant_cdf.partition_point(|c| *c <= x) as u32).min(self.tenants - 1)
    }

    /// Generates conversation number `i` (0-based) starting at `start_ms` and schedules its events.
    fn conversation(&mut self, i: u64, start_ms: i64) {
        let mut tenant = self.pick_tenant();
        let reuse = self.rng.random::<f64>() < 0.005;
        // Now and then a conversation reuses the id of the one before under another tenant:
        // the state key is tenant + conversation, so they must stay two conversations.
        let (conv, fresh) = match self.prev {
            Some((prev_conv, prev_tenant, true)) if reuse && self.tenants > 1 => {
                if tenant == prev_tenant {
                    tenant = (tenant + 1 + self.rng.random_range(0..self.tenants - 1)) % self.tenants;
                }
                (prev_conv, false)
            }
            _ => (i + 1, true),
        };
        self.prev = Some((conv, tenant, fresh));
        self.stats.conversations += 1;

        let profile = &self.profiles[tenant as usize];
        let mut raws = std::mem::take(&mut self.raws);
        raws.clear();
        Script { rng: &mut self.rng, raws: &mut raws, t: start_ms, model: profile.model, intent: 0, tier: 1 }
            .run(profile.trouble);
        for raw in &raws {
            self.schedule_event(raw, conv, tenant);
        }
        self.raws = raws;
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Schedules one event, with its arrival delay, and maybe a duplicate and a bad record.
    fn schedule_event(&mut self, raw: &Raw, conv: u64, tenant: u32) {
        let delay = if self.jitter_us > 0 { self.jitter_rng.random_range(0..self.jitter_us) } else { 0 };
        let base = raw.ts * 1000;
        let id = mix(self.event_counter.wrapping_add(self.id_key));
        self.event_counter += 1;
        let ev = Ev { key: base + delay, seq: self.next_seq(), id, conv, tenant, bad: BAD_NONE, sub: 0, raw: *raw };
        self.schedule.push(ev);
        self.stats.events += 1;

        if self.duplicates > 0.0 && self.dup_rng.random::<f64>() < self.duplicates {
            // A redelivery: the identical line, after the first copy, still within the jitter.
            let delay2 = if self.jitter_us > 0 { self.dup_rng.random_range(delay..self.jitter_us) } else { 0 };
            let dup = Ev { key: base + delay2, seq: self.next_seq(), ..ev };
            self.schedule.push(dup);
            self.stats.duplicates += 1;
        }
        if self.bad > 0.0 && self.bad_rng.random::<f64>() < self.bad {
            let bad = self.bad_record(ev);
            self.schedule.push(bad);
            self.stats.bad += 1;
        }
    }

    /// A bad record derived from `ev`, written right after it.
    fn bad_record(&mut self, ev: Ev) -> Ev {
        let r = self.bad_rng.random::<f64>();
        let bad = if r < 0.3 {
            BAD_MALFORMED
        } else if r < 0.6 {
            BAD_MISSING
        } else if r < 0.85 {
            BAD_TS
        } else {
            BAD_COST
        };
        let sub: u8 = self.bad_rng.random();
        let mut raw = ev.raw;
        if bad == BAD_COST && (raw.kind != K_LLM || raw.flags & F_COST == 0) {
            raw.kind = K_LLM;
            raw.a = self.bad_rng.random_range(0..MODELS.len() as u8);
            raw.in_tok = self.bad_rng.random_range(500..3000);
            raw.out_tok = self.bad_rng.random_range(20..400);
            raw.cost = self.bad_rng.random_range(100..20_000);
            raw.flags = F_COST;
        }
        let id = mix(self.bad_counter.wrapping_add(self.bad_id_key));
        self.bad_counter += 1;
        Ev { seq: self.next_seq(), id, bad, sub, raw, ..ev }
    }

    /// Writes scheduled lines in `(key, seq)` order: at least every line whose emit key is
    /// below `upto`, and none that a later [`Schedule::push`] of a key `>= upto` could precede.
    fn drain(&mut self, upto: i64, out: &mut dyn Write) -> anyhow::Result<()> {
        let writer = &mut self.writer;
        self.schedule.drain(upto, |ev| {
            writer.write_event(ev);
            if writer.buf.len() >= BUF_FLUSH {
                writer.flush(out)?;
            }
            Ok(())
        })
    }

    fn flush(&mut self, out: &mut dyn Write) -> anyhow::Result<()> {
        self.writer.flush(out)
    }
}

/// Scheduled lines, released in `(key, seq)` order: a ring of one-second buckets for the
/// near future (sorted when written), and a heap for events further ahead (follow-ups
/// hours later), moved into the ring as it comes near.
struct Schedule {
    ring: Vec<Vec<Ev>>,
    /// The first bucket not yet written; bucket `b` lives in `ring[b % RING]` while
    /// `base <= b < base + RING`.
    base: i64,
    /// Events in the ring.
    ring_len: usize,
    overflow: BinaryHeap<Ev>,
}

const BUCKET_US: i64 = 1_000_000;
const RING: i64 = 2048;

impl Schedule {
    fn new(first_key: i64) -> Self {
        Schedule {
            ring: (0..RING).map(|_| Vec::new()).collect(),
            base: first_key.div_euclid(BUCKET_US),
            ring_len: 0,
            overflow: BinaryHeap::new(),
        }
    }

    /// The bucket of a key. A key in a bucket already written (possible only for a key
    /// equal to the last `upto` of [`Schedule::drain`], so not below anything written)
    /// goes to the first open bucket, whose other keys are all larger.
    fn bucket(&self, key: i64) -> i64 {
        key.div_euclid(BUCKET_US).max(self.base)
    }

    fn push(&mut self, ev: Ev) {
        let b = self.bucket(ev.key);
        if b < self.base + RING {
            self.ring[b.rem_euclid(RING) as usize].push(ev);
            self.ring_len += 1;
        } else {
            self.overflow.push(ev);
        }
    }

    /// Moves the overflow events that are now within the ring into it.
    fn refill(&mut self) {
        while let Some(top) = self.overflow.peek() {
            let b = self.bucket(top.key);
            if b >= self.base + RING {
                break;
            }
            let ev = self.overflow.pop().expect("peeked");
            self.ring[b.rem_euclid(RING) as usize].push(ev);
            self.ring_len += 1;
        }
    }

    /// Passes to `emit`, in `(key, seq)` order, the events of every bucket whose keys are
    /// all `<= upto` (`i64::MAX`: everything).
    fn drain(&mut self, upto: i64, mut emit: impl FnMut(&Ev) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let last = if upto == i64::MAX { i64::MAX } else { (upto + 1).div_euclid(BUCKET_US) - 1 };
        while self.base <= last {
            if self.ring_len == 0 {
                // Skip empty buckets at once (long quiet stretches of a wide span).
                match self.overflow.peek() {
                    Some(top) if top.key.div_euclid(BUCKET_US) <= last => {
                        self.base = self.base.max(top.key.div_euclid(BUCKET_US));
                    }
                    _ => break,
                }
            }
            self.refill();
            let slot = &mut self.ring[self.base.rem_euclid(RING) as usize];
            if !slot.is_empty() {
                slot.sort_unstable_by_key(|e| (e.key, e.seq));
                for ev in slot.iter() {
                    emit(ev)?;
                }
                self.ring_len -= slot.len();
                if slot.capacity() > 1 << 14 {
                    *slot = Vec::new();
                } else {
                    slot.clear();
                }
            }
            self.base += 1;
        }
        Ok(())
    }
}

const BUF_FLUSH: usize = 1 << 16;

/// Formats lines into a buffer written out in large chunks.
struct LineWriter {
    buf: Vec<u8>,
    ts_fmt: TsFmt,
}

impl LineWriter {
    fn flush(&mut self, out: &mut dyn Write) -> anyhow::Result<()> {
        out.write_all(&self.buf).context("writing the generated stream")?;
        self.buf.clear();
        Ok(())
    }

    fn write_event(&mut self, ev: &Ev) {
        match ev.bad {
            BAD_MALFORMED if (ev.sub as usize) < 40 => {
                self.buf.extend_from_slice(GARBAGE[ev.sub as usize % GARBAGE.len()].as_bytes());
            }
            BAD_MALFORMED => {
                // A line cut short: a proper prefix of a JSON object is never valid JSON.
                let start = self.buf.len();
                self.write_line(ev, None, None, false);
                let len = self.buf.len() - start;
                let cut = 1 + (len - 2) * ev.sub as usize / 256;
                self.buf.truncate(start + cut);
            }
            BAD_MISSING => self.write_line(ev, Some(ev.sub % 5), None, false),
            BAD_TS => self.write_line(ev, None, Some(ev.sub % 6), false),
            BAD_COST => self.write_line(ev, None, None, true),
            _ => self.write_line(ev, None, None, false),
        }
        self.buf.push(b'\n');
    }

    /// One event as JSON, without the newline. `omit`: the index of a required field to
    /// leave out (id, type, tenant, conversation, ts); `bad_ts`: which broken `ts` to write.
    fn write_line(&mut self, ev: &Ev, omit: Option<u8>, bad_ts: Option<u8>, negative_cost: bool) {
        let raw = &ev.raw;
        let b = &mut self.buf;
        b.push(b'{');
        let mut sep = false;
        if omit != Some(0) {
            key(b, &mut sep, b"\"id\":");
            b.extend_from_slice(b"\"evt-");
            push_hex16(b, ev.id);
            b.push(b'"');
        }
        if omit != Some(1) {
            key(b, &mut sep, b"\"type\":");
            push_str(b, KINDS[raw.kind as usize]);
        }
        if omit != Some(2) {
            key(b, &mut sep, b"\"tenant\":");
            b.extend_from_slice(b"\"tenant-");
            let n = u64::from(ev.tenant) + 1;
            if n < 1_000 {
                b.extend_from_slice(&fixed_digits::<3>(n));
            } else {
                push_u64(b, n);
            }
            b.push(b'"');
        }
        if omit != Some(3) {
            key(b, &mut sep, b"\"conversation\":");
            b.extend_from_slice(b"\"conv-");
            if ev.conv < 100_000_000 {
                b.extend_from_slice(&fixed_digits::<8>(ev.conv));
            } else {
                push_u64(b, ev.conv);
            }
            b.push(b'"');
        }
        if omit != Some(4) {
            key(b, &mut sep, b"\"ts\":");
            match bad_ts {
                None => {
                    b.push(b'"');
                    self.ts_fmt.push(b, raw.ts);
                    b.push(b'"');
                }
                Some(variant) => bad_timestamp(b, &mut self.ts_fmt, raw.ts, variant),
            }
        }
        match raw.kind {
            K_STARTED => {
                let intent = INTENTS[raw.a as usize].0;
                if !intent.is_empty() || raw.flags & F_ATTRS != 0 {
                    b.extend_from_slice(b",\"attrs\":{");
                    if !intent.is_empty() {
                        b.extend_from_slice(b"\"intent\":");
                        push_str(b, intent);
                        b.push(b',');
                    }
                    b.extend_from_slice(b"\"channel\":");
                    push_str(b, CHANNELS[raw.b as usize]);
                    b.push(b'}');
                }
            }
            K_LLM => {
                b.extend_from_slice(b",\"attrs\":{\"model\":");
                push_str(b, MODELS[raw.a as usize].0);
                b.extend_from_slice(b",\"input_tokens\":");
                push_u64(b, u64::from(raw.in_tok));
                b.extend_from_slice(b",\"output_tokens\":");
                push_u64(b, u64::from(raw.out_tok));
                push_cost(b, raw, negative_cost);
                b.push(b'}');
            }
            K_TOOL => {
                b.extend_from_slice(b",\"attrs\":{\"tool\":");
                push_str(b, TOOLS[raw.a as usize].0);
                push_cost(b, raw, negative_cost);
                b.push(b'}');
            }
            K_ESCALATED => {
                b.extend_from_slice(b",\"attrs\":{\"reason\":");
                push_str(b, ESCALATION_REASONS[raw.a as usize]);
                b.push(b'}');
            }
            K_CLOSED => {
                b.extend_from_slice(b",\"attrs\":{\"by\":");
                push_str(b, CLOSED_BY[raw.a as usize]);
                b.push(b'}');
            }
            _ => {
                if raw.flags & F_ATTRS != 0 {
                    b.extend_from_slice(b",\"attrs\":{}");
                }
            }
        }
        b.push(b'}');
    }
}

/// A conversation script, appending events to `raws` at the advancing clock `t` (ms).
struct Script<'a> {
    rng: &'a mut ChaCha8Rng,
    raws: &'a mut Vec<Raw>,
    t: i64,
    model: u8,
    intent: u8,
    /// Complexity 1 to 3: turns and tools.
    tier: u8,
}

impl Script<'_> {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    /// Advances the clock by a uniform gap in `[lo, hi)` ms (`lo >= 1`).
    fn gap(&mut self, lo: i64, hi: i64) {
        self.t += self.rng.random_range(lo..hi);
    }

    /// Advances the clock at human pace: `min` plus an exponential of mean `mean`, at most `max`.
    fn human(&mut self, min: i64, mean: f64, max: i64) {
        let u = 1.0 - self.rng.random::<f64>();
        let extra = (-mean * u.ln()) as i64;
        self.t += (min + extra).min(max);
    }

    fn push(&mut self, kind: u8, a: u8, flags: u8) -> &mut Raw {
        self.raws.push(Raw { ts: self.t, kind, a, flags, ..Raw::default() });
        self.raws.last_mut().expect("just pushed")
    }

    /// An event without attributes of its own: `attrs` omitted or `{}`.
    fn plain(&mut self, kind: u8) {
        let flags = if self.chance(0.3) { F_ATTRS } else { 0 };
        self.push(kind, 0, flags);
    }

    fn cost_flags(&mut self) -> u8 {
        let r = self.rng.random::<f64>();
        if r < 0.08 {
            F_COST | F_COST_NUMBER
        } else if r < 0.13 {
            F_COST | F_COST_FIXED
        } else {
            F_COST
        }
    }

    fn run(mut self, trouble: f64) {
        let mut pick = self.rng.random_range(0..INTENT_WEIGHT_TOTAL);
        let mut intent = 0;
        while pick >= INTENTS[intent].1 {
            pick -= INTENTS[intent].1;
            intent += 1;
        }
        self.intent = intent as u8;
        self.tier = match INTENTS[intent].2 {
            0 => {
                let r = self.rng.random::<f64>();
                if r < 0.55 {
                    1
                } else if r < 0.85 {
                    2
                } else {
                    3
                }
            }
            tier => tier,
        };
        let channel = {
            let r = self.rng.random::<f64>();
            if r < 0.5 {
                0
            } else if r < 0.75 {
                1
            } else if r < 0.9 {
                2
            } else {
                3
            }
        };
        let flags = if self.chance(0.5) { F_ATTRS } else { 0 };
        self.push(K_STARTED, self.intent, flags).b = channel;

        self.gap(200, 4_000);
        self.plain(K_CUSTOMER);
        if self.chance(0.12) {
            // A second message before the AI answers.
            self.human(1_500, 6_000.0, 60_000);
            self.plain(K_CUSTOMER);
        }

        let p_no_ai = 0.05;
        let p_escalate = 0.10 * trouble;
        let p_abandon = 0.13 * trouble;
        let r = self.rng.random::<f64>();
        if r < p_no_ai {
            self.no_ai_answer();
        } else if r < p_no_ai + p_escalate {
            let n = if self.chance(0.25) { 0 } else { self.turn_count() };
            self.turns(n);
            self.escalate(n > 0);
        } else if r < p_no_ai + p_escalate + p_abandon {
            let n = self.turn_count();
            self.abandon(n);
        } else {
            self.resolve();
        }
    }

    fn turn_count(&mut self) -> u32 {
        match self.tier {
            1 => {
                if self.chance(0.3) {
                    2
                } else {
                    1
                }
            }
            2 => self.rng.random_range(1..=3),
            _ => self.rng.random_range(2..=5),
        }
    }

    fn tool_count(&mut self) -> u32 {
        let r = self.rng.random::<f64>();
        match self.tier {
            1 => u32::from(r < 0.25),
            2 => {
                if r < 0.4 {
                    0
                } else if r < 0.85 {
                    1
                } else {
                    2
                }
            }
            _ => {
                if r < 0.5 {
                    1
                } else if r < 0.85 {
                    2
                } else {
                    3
                }
            }
        }
    }

    /// `n` AI answers, each but the first after a customer message.
    fn turns(&mut self, n: u32) {
        for k in 0..n {
            if k > 0 {
                self.human(4_000, 35_000.0, 10 * MS_PER_MIN);
                self.plain(K_CUSTOMER);
            }
            self.ai_turn(k);
        }
    }

    /// llm.call, then (tool.called, llm.call) per tool, then message.ai.
    fn ai_turn(&mut self, turn: u32) {
        self.gap(150, 1_200);
        let tools = self.tool_count();
        self.llm(turn, 0);
        for k in 0..tools {
            self.gap(50, 1_500);
            self.tool();
            self.llm(turn, k + 1);
        }
        self.gap(50, 600);
        self.plain(K_AI);
    }

    fn llm(&mut self, turn: u32, tools_so_far: u32) {
        self.gap(400, 5_000); // model latency
        let model = if self.chance(0.85) { self.model } else { self.rng.random_range(0..MODELS.len() as u8) };
        let in_tok = self.rng.random_range(600..1_800)
            + turn * self.rng.random_range(250..600)
            + tools_so_far * self.rng.random_range(150..500);
        let out_tok = self.rng.random_range(30..450);
        let (_, in_price, out_price) = MODELS[model as usize];
        let cents = u64::from(in_tok) * in_price + u64::from(out_tok) * out_price;
        let cost = cents.div_ceil(100) as u32; // micro-dollars
        let flags = if self.chance(0.02) { 0 } else { self.cost_flags() };
        let raw = self.push(K_LLM, model, flags);
        raw.in_tok = in_tok;
        raw.out_tok = out_tok;
        raw.cost = cost;
    }

    fn tool(&mut self) {
        let preferred = INTENT_TOOLS[self.intent as usize];
        let tool = if !preferred.is_empty() && self.chance(0.8) {
            preferred[self.rng.random_range(0..preferred.len())]
        } else {
            self.rng.random_range(0..TOOLS.len() as u8)
        };
        let price = TOOLS[tool as usize].1;
        let flags = if price > 0 { self.cost_flags() } else { 0 };
        self.push(K_TOOL, tool, flags).cost = price;
    }

    fn closed(&mut self, by: u8) {
        self.push(K_CLOSED, by, 0);
    }

    /// The customer is satisfied: resolution.confirmed and/or conversation.closed.
    fn ending(&mut self) {
        let r = self.rng.random::<f64>();
        if r < 0.45 {
            self.human(8_000, 60_000.0, 15 * MS_PER_MIN);
            self.plain(K_RESOLVED);
            self.gap(1_000, 120_000);
            self.closed(BY_CUSTOMER);
        } else if r < 0.65 {
            self.human(8_000, 60_000.0, 15 * MS_PER_MIN);
            self.plain(K_RESOLVED);
        } else if r < 0.85 {
            self.human(8_000, 60_000.0, 15 * MS_PER_MIN);
            let by = if self.chance(0.7) { BY_CUSTOMER } else { BY_AI };
            self.closed(by);
        } else {
            self.human(5 * MS_PER_MIN, 10.0 * MS_PER_MIN as f64, 60 * MS_PER_MIN);
            self.closed(BY_TIMEOUT);
        }
    }

    fn resolve(&mut self) {
        let n = self.turn_count();
        self.turns(n);
        self.ending();
        if self.chance(0.12) {
            // The customer comes back within 24 hours: the conversation reopens.
            self.human(5 * MS_PER_MIN, 3.0 * MS_PER_HOUR as f64, 23 * MS_PER_HOUR);
            self.plain(K_CUSTOMER);
            let more = self.rng.random_range(1..=2);
            self.turns(more);
            let r = self.rng.random::<f64>();
            if r < 0.6 {
                self.ending();
            } else if r < 0.85 {
                self.human(4_000, 35_000.0, 10 * MS_PER_MIN);
                self.plain(K_CUSTOMER);
                self.escalate(false);
            }
            // else: abandoned after the reopening.
        } else if self.chance(0.02) {
            // A message long after the 24-hour window, when the verdict is already final.
            self.gap(25 * MS_PER_HOUR, 40 * MS_PER_HOUR);
            self.plain(K_CUSTOMER);
        }
    }

    /// Handed to a human agent, after `answered` (whether the AI replied and the customer
    /// wrote back unsatisfied) or straight after the first message.
    fn escalate(&mut self, answered: bool) {
        if answered {
            self.human(4_000, 35_000.0, 10 * MS_PER_MIN);
            self.plain(K_CUSTOMER);
        }
        self.gap(1_000, 20_000);
        let reason = self.rng.random_range(0..ESCALATION_REASONS.len() as u8);
        self.push(K_ESCALATED, reason, 0);
        if self.chance(0.6) {
            self.human(10 * MS_PER_MIN, 40.0 * MS_PER_MIN as f64, 4 * MS_PER_HOUR);
            self.closed(BY_AGENT);
        } else if self.chance(0.15) {
            self.human(30_000, 5.0 * MS_PER_MIN as f64, 30 * MS_PER_MIN);
            self.plain(K_CUSTOMER);
        }
    }

    /// The customer stops answering; sometimes the AI is the one that never answered.
    fn abandon(&mut self, n: u32) {
        self.turns(n);
        if self.chance(0.2) {
            self.human(4_000, 35_000.0, 10 * MS_PER_MIN);
            self.plain(K_CUSTOMER);
        }
    }

    /// Closed (or confirmed) without any message.ai.
    fn no_ai_answer(&mut self) {
        if self.chance(0.4) {
            // The AI tried, but the answer never went out.
            self.gap(150, 1_200);
            self.llm(0, 0);
        }
        self.human(20_000, 2.0 * MS_PER_MIN as f64, 15 * MS_PER_MIN);
        if self.chance(0.2) {
            self.plain(K_RESOLVED);
            if self.chance(0.5) {
                self.gap(1_000, 60_000);
                self.closed(BY_CUSTOMER);
            }
        } else {
            let by = if self.chance(0.6) { BY_CUSTOMER } else { BY_TIMEOUT };
            self.closed(by);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Formatting

/// `,"name":` (`name` given quoted, with its colon; no comma before the first field).
#[inline(always)]
fn key<const N: usize>(b: &mut Vec<u8>, sep: &mut bool, name: &[u8; N]) {
    if *sep {
        b.push(b',');
    }
    *sep = true;
    b.extend_from_slice(name);
}

/// A JSON string of characters that need no escaping.
fn push_str(b: &mut Vec<u8>, s: &str) {
    b.push(b'"');
    b.extend_from_slice(s.as_bytes());
    b.push(b'"');
}

fn push_u64(b: &mut Vec<u8>, v: u64) {
    push_padded(b, v, 1);
}

/// `v` in decimal, zero-padded to at least `width` digits.
fn push_padded(b: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let i = i.min(tmp.len() - width.min(tmp.len()));
    // Byte by byte: these are short, and a variable-length copy costs a call.
    for &d in &tmp[i..] {
        b.push(d);
    }
}

/// The last `N` decimal digits of `v`, zero-padded.
#[inline(always)]
fn fixed_digits<const N: usize>(mut v: u64) -> [u8; N] {
    let mut out = [b'0'; N];
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out
}

fn push_hex16(b: &mut Vec<u8>, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, d) in out.iter_mut().enumerate() {
        *d = HEX[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
    b.extend_from_slice(&out);
}

/// `,"cost_usd":"0.0123"` from integer micro-dollars, if the event has a cost.
fn push_cost(b: &mut Vec<u8>, raw: &Raw, negative: bool) {
    if raw.flags & F_COST == 0 {
        return;
    }
    let number = raw.flags & F_COST_NUMBER != 0;
    b.extend_from_slice(b",\"cost_usd\":");
    if !number {
        b.push(b'"');
    }
    if negative {
        b.push(b'-');
    }
    push_micros(b, raw.cost, raw.flags & F_COST_FIXED != 0);
    if !number {
        b.push(b'"');
    }
}

/// Micro-dollars as a decimal: `1234` -> `0.001234`, `1000` -> `0.001` (or `0.001000` if `fixed`).
fn push_micros(b: &mut Vec<u8>, micros: u32, fixed: bool) {
    let whole = micros / 1_000_000;
    let mut frac = micros % 1_000_000;
    push_u64(b, u64::from(whole));
    if frac == 0 && !fixed {
        return;
    }
    b.push(b'.');
    let mut digits = 6;
    if !fixed {
        while frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
    }
    push_padded(b, u64::from(frac), digits);
}

/// A `ts` value that is not a valid RFC 3339 timestamp.
fn bad_timestamp(b: &mut Vec<u8>, ts_fmt: &mut TsFmt, ts: i64, variant: u8) {
    match variant {
        0..=2 => {
            b.push(b'"');
            let at = b.len();
            ts_fmt.push(b, ts);
            match variant {
                // "2026-06-12 10:00:00.123": a space and no offset.
                0 => {
                    b[at + 10] = b' ';
                    b.pop();
                }
                // "2026-06-12T10:00:00.123": no offset.
                1 => {
                    b.pop();
                }
                // "2026-06-12T25:00:00.123Z": no such hour.
                _ => b[at + 11..at + 13].copy_from_slice(b"25"),
            }
            b.push(b'"');
        }
        3 => b.extend_from_slice(b"\"yesterday\""),
        // Epoch milliseconds as a number.
        4 => push_u64(b, ts.max(0) as u64),
        _ => b.extend_from_slice(b"\"\""),
    }
}

/// RFC 3339 UTC with milliseconds (`2026-06-12T10:00:00.123Z`), the date cached per day.
struct TsFmt {
    day: i64,
    /// `YYYY-MM-DDT`
    date: [u8; 11],
}

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

impl TsFmt {
    fn new() -> Self {
        TsFmt { day: i64::MIN, date: *b"1970-01-01T" }
    }

    fn push(&mut self, b: &mut Vec<u8>, ms: i64) {
        let day = ms.div_euclid(MS_PER_DAY);
        if day != self.day {
            self.set_day(day);
        }
        let rem = ms.rem_euclid(MS_PER_DAY) as u64;
        let (h, rem) = (rem / MS_PER_HOUR as u64, rem % MS_PER_HOUR as u64);
        let (m, rem) = (rem / MS_PER_MIN as u64, rem % MS_PER_MIN as u64);
        let (s, milli) = (rem / 1_000, rem % 1_000);
        let mut out = *b"YYYY-MM-DDT00:00:00.000Z";
        out[..11].copy_from_slice(&self.date);
        out[11..13].copy_from_slice(&fixed_digits::<2>(h));
        out[14..16].copy_from_slice(&fixed_digits::<2>(m));
        out[17..19].copy_from_slice(&fixed_digits::<2>(s));
        out[20..23].copy_from_slice(&fixed_digits::<3>(milli));
        b.extend_from_slice(&out);
    }

    fn set_day(&mut self, day: i64) {
        self.day = day;
        // The range was checked with the options, so the fallback is never used.
        let date = i32::try_from(day + UNIX_EPOCH_JULIAN_DAY)
            .ok()
            .and_then(|jd| time::Date::from_julian_day(jd).ok())
            .unwrap_or(time::macros::date!(1970 - 01 - 01));
        let mut v = Vec::with_capacity(11);
        push_padded(&mut v, date.year().max(0) as u64, 4);
        v.push(b'-');
        push_padded(&mut v, u64::from(u8::from(date.month())), 2);
        v.push(b'-');
        push_padded(&mut v, u64::from(date.day()), 2);
        v.push(b'T');
        if let Ok(date) = <[u8; 11]>::try_from(v.as_slice()) {
            self.date = date;
        }
    }
}

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use serde_json::Value;
    use std::collections::{HashMap, HashSet};

    fn run(cfg: &GenConfig) -> (String, GenStats) {
        let mut out = Vec::new();
        let stats = generate(cfg, &mut out).expect("generate");
        (String::from_utf8(out).expect("utf-8"), stats)
    }

    fn cfg(conversations: u64, seed: u64) -> GenConfig {
        GenConfig { conversations, seed, ..GenConfig::default() }
    }

    fn parse_ts(s: &str) -> Option<i64> {
        let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        i64::try_from(dt.unix_timestamp_nanos() / 1_000_000).ok()
    }

    /// A valid event as the engine sees it: (id, type, tenant, conversation, ts ms, attrs).
    struct Valid {
        kind: String,
        tenant: String,
        conversation: String,
        ts: i64,
        attrs: Option<Value>,
    }

    /// Checks a line against the wire contract; `None` if it is a bad record.
    fn validate(line: &str) -> Option<Valid> {
        let v: Value = serde_json::from_str(line).ok()?;
        let obj = v.as_object()?;
        let field = |name: &str| obj.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
        let id = field("id")?;
        let kind = field("type")?;
        let tenant = field("tenant")?;
        let conversation = field("conversation")?;
        let ts = parse_ts(field("ts")?)?;
        assert!(id.len() <= 24, "{line}");
        let attrs = obj.get("attrs").cloned();
        if let Some(a) = &attrs {
            let a = a.as_object()?;
            if let Some(cost) = a.get("cost_usd") {
                let text = match cost {
                    Value::String(s) => s.clone(),
                    Value::Number(_) => cost.to_string(),
                    _ => return None,
                };
                let d = Decimal::from_str_exact(&text).ok()?;
                if d.is_sign_negative() {
                    return None;
                }
                assert!(d.scale() <= 6, "{line}");
            }
        }
        Some(Valid {
            kind: kind.to_string(),
            tenant: tenant.to_string(),
            conversation: conversation.to_string(),
            ts,
            attrs,
        })
    }

    fn assert_same_lines(lines: &[&str], expected: &str) {
        let expected: Vec<&str> = expected.lines().collect();
        if let Some(i) = (0..lines.len().min(expected.len())).find(|i| lines[*i] != expected[*i]) {
            panic!("line {i} differs:\n{}\n{}", lines[i], expected[i]);
        }
        assert_eq!(lines.len(), expected.len());
    }

    #[test]
    fn same_seed_same_bytes_and_different_seed_differs() {
        let (a, sa) = run(&cfg(300, 7));
        let (b, sb) = run(&cfg(300, 7));
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        let (c, _) = run(&cfg(300, 8));
        assert_ne!(a, c);
    }

    #[test]
    fn every_line_is_a_valid_event_and_counts_match() {
        let (text, stats) = run(&cfg(2_000, 1));
        assert_eq!(stats.conversations, 2_000);
        assert_eq!(stats.duplicates, 0);
        assert_eq!(stats.bad, 0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, stats.events);
        let per_conv = stats.events as f64 / stats.conversations as f64;
        assert!((6.0..16.0).contains(&per_conv), "{per_conv} events per conversation");
        let mut ids = HashSet::new();
        for line in &lines {
            let ev = validate(line).unwrap_or_else(|| panic!("invalid line {line}"));
            assert!(KINDS.contains(&ev.kind.as_str()), "{line}");
            assert!(ids.insert(serde_json::from_str::<Value>(line).unwrap()["id"].as_str().unwrap().to_string()));
            // Millisecond precision, UTC.
            let ts = serde_json::from_str::<Value>(line).unwrap()["ts"].as_str().unwrap().to_string();
            assert_eq!(ts.len(), 24, "{ts}");
            assert!(ts.ends_with('Z'));
        }
        // All conversations start within the span.
        let start = parse_ts("2026-06-12T00:00:00Z").unwrap();
        for line in &lines {
            let ev = validate(line).unwrap();
            if ev.kind == "conversation.started" {
                assert!(ev.ts >= start && ev.ts < start + MS_PER_DAY, "{line}");
            }
        }
    }

    #[test]
    fn jitter_bounds_lateness() {
        for (jitter, jitter_ms) in [("2s", 2_000), ("0s", 0), ("250ms", 250)] {
            let c = GenConfig { jitter: jitter.into(), ..cfg(3_000, 3) };
            let (text, _) = run(&c);
            let mut max = i64::MIN;
            let mut out_of_order = 0;
            for line in text.lines() {
                let ev = validate(line).unwrap();
                if ev.ts < max {
                    out_of_order += 1;
                    assert!(max - ev.ts < jitter_ms.max(1), "jitter {jitter}: {} behind", max - ev.ts);
                }
                max = max.max(ev.ts);
            }
            if jitter_ms == 0 {
                assert_eq!(out_of_order, 0);
            } else {
                assert!(out_of_order > 0, "jitter {jitter} gave sorted output");
            }
        }
    }

    #[test]
    fn duplicates_are_identical_lines_within_the_jitter() {
        let c = GenConfig { duplicates: 0.05, ..cfg(1_000, 5) };
        let (text, stats) = run(&c);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, stats.events + stats.duplicates);
        let expected = stats.events as f64 * 0.05;
        assert!((stats.duplicates as f64 - expected).abs() < expected * 0.3, "{stats:?}");
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut repeats = 0;
        let mut max_ts = i64::MIN;
        for line in &lines {
            let ev = validate(line).unwrap();
            if seen.contains_key(line) {
                repeats += 1;
                assert!(max_ts - ev.ts < 2_000);
            }
            *seen.entry(line).or_default() += 1;
            max_ts = max_ts.max(ev.ts);
        }
        assert_eq!(repeats, stats.duplicates);
        assert!(seen.values().all(|n| *n <= 2));

        // Without the repeated lines, the stream is the one without duplicates.
        let (base, base_stats) = run(&cfg(1_000, 5));
        assert_eq!(base_stats.events, stats.events);
        let mut once = HashSet::new();
        let dedup: Vec<&str> = lines.iter().copied().filter(|l| once.insert(*l)).collect();
        assert_same_lines(&dedup, &base);
    }

    #[test]
    fn bad_records_exist_and_are_all_rejected() {
        let c = GenConfig { bad: 0.05, duplicates: 0.02, ..cfg(2_000, 9) };
        let (text, stats) = run(&c);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, stats.events + stats.duplicates + stats.bad);
        assert!(stats.bad > 0);
        let mut invalid = 0;
        let (mut malformed, mut missing, mut bad_ts, mut negative) = (0, 0, 0, 0);
        for line in &lines {
            assert!(!line.is_empty());
            if validate(line).is_some() {
                continue;
            }
            invalid += 1;
            match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(o)) => {
                    if ["id", "type", "tenant", "conversation", "ts"].iter().any(|f| !o.contains_key(*f)) {
                        missing += 1;
                    } else if o["ts"].as_str().and_then(parse_ts).is_none() {
                        bad_ts += 1;
                    } else {
                        let cost = o["attrs"]["cost_usd"].to_string();
                        assert!(cost.contains('-'), "{line}");
                        negative += 1;
                    }
                }
                _ => malformed += 1,
            }
        }
        assert_eq!(invalid, stats.bad);
        assert!(malformed > 0 && missing > 0 && bad_ts > 0 && negative > 0);

        // Without the bad lines, the stream is the one without bad records.
        let (base, _) = run(&GenConfig { bad: 0.0, ..c });
        let good: Vec<&str> = lines.iter().copied().filter(|l| validate(l).is_some()).collect();
        assert_same_lines(&good, &base);
    }

    #[test]
    fn conversations_follow_the_scripts() {
        let (text, _) = run(&GenConfig { jitter: "0s".into(), ..cfg(4_000, 11) });
        let mut convs: HashMap<(String, String), Vec<Valid>> = HashMap::new();
        for line in text.lines() {
            let ev = validate(line).unwrap();
            convs.entry((ev.tenant.clone(), ev.conversation.clone())).or_default().push(ev);
        }
        let mut ids_by_conv: HashMap<&str, HashSet<&str>> = HashMap::new();
        let (mut escalated, mut no_ai, mut reopened, mut abandoned, mut resolved) = (0, 0, 0, 0, 0);
        let mut no_intent = 0;
        let mut tenants: HashMap<&str, usize> = HashMap::new();
        for ((tenant, conv), evs) in &convs {
            ids_by_conv.entry(conv).or_default().insert(tenant);
            *tenants.entry(tenant).or_default() += 1;
            assert_eq!(evs[0].kind, "conversation.started");
            assert_eq!(evs.iter().filter(|e| e.kind == "conversation.started").count(), 1);
            assert!(evs.windows(2).all(|w| w[0].ts < w[1].ts));
            assert!(evs.last().unwrap().ts - evs[0].ts < MAX_CONVERSATION_MS);
            if evs[0].attrs.as_ref().and_then(|a| a.get("intent")).is_none() {
                no_intent += 1;
            }
            let has = |k: &str| evs.iter().any(|e| e.kind == k);
            let last = evs.last().unwrap().kind.as_str();
            if has("escalated") {
                escalated += 1;
            } else if !has("message.ai") && (has("conversation.closed") || has("resolution.confirmed")) {
                no_ai += 1;
            } else if let Some(close) = evs.iter().position(|e| e.kind == "conversation.closed") {
                let follow = evs[close + 1..].iter().find(|e| e.kind == "message.customer");
                if follow.is_some_and(|f| f.ts - evs[close].ts < MS_PER_DAY) {
                    reopened += 1;
                } else {
                    resolved += 1;
                }
            } else if last == "message.ai" || last == "message.customer" {
                abandoned += 1;
            } else {
                resolved += 1;
            }
        }
        let n = convs.len();
        assert_eq!(n, 4_000);
        for (name, count, lo, hi) in [
            ("escalated", escalated, 0.05, 0.25),
            ("no_ai", no_ai, 0.02, 0.10),
            ("reopened", reopened, 0.02, 0.15),
            ("abandoned", abandoned, 0.05, 0.30),
            ("resolved", resolved, 0.40, 0.80),
            ("no intent", no_intent, 0.02, 0.15),
        ] {
            let share = count as f64 / n as f64;
            assert!(share > lo && share < hi, "{name}: {share}");
        }
        // The same conversation id under two tenants happens.
        assert!(ids_by_conv.values().any(|t| t.len() == 2));
        // Skewed tenants: the biggest has several times the median.
        let mut sizes: Vec<usize> = tenants.values().copied().collect();
        sizes.sort_unstable();
        assert!(sizes[sizes.len() - 1] > 4 * sizes[sizes.len() / 2], "{sizes:?}");
    }

    /// The whole stream generated first, then sorted by `(key, seq)` and written.
    fn reference(cfg: &GenConfig) -> Vec<u8> {
        let params = Params::from_config(cfg).unwrap();
        let mut gen = Generator::new(&params);
        let mut arrivals = Arrivals::new(params.conversations);
        for i in 0..params.conversations {
            let start_ms = params.start_ms + arrivals.next_offset(&mut gen.rng, params.span_ms);
            gen.conversation(i, start_ms);
        }
        let mut all: Vec<Ev> = gen.schedule.overflow.drain().collect();
        for slot in &mut gen.schedule.ring {
            all.append(slot);
        }
        all.sort_unstable_by_key(|e| (e.key, e.seq));
        for ev in &all {
            gen.writer.write_event(ev);
        }
        gen.writer.buf
    }

    #[test]
    fn streaming_order_is_the_global_sort() {
        let cases = [
            GenConfig { duplicates: 0.1, bad: 0.05, ..cfg(3_000, 21) },
            GenConfig { span: "0s".into(), ..cfg(500, 22) },
            GenConfig { span: "3h".into(), jitter: "0s".into(), duplicates: 0.2, ..cfg(2_000, 23) },
            GenConfig { span: "3650days".into(), jitter: "10s".into(), ..cfg(300, 24) },
            GenConfig { start: "1969-12-31T23:00:00.5Z".into(), span: "2h".into(), ..cfg(200, 25) },
        ];
        for c in cases {
            let mut out = Vec::new();
            generate(&c, &mut out).unwrap();
            let expected = reference(&c);
            assert!(out == expected, "{c:?}");
        }
    }

    #[test]
    fn command_line_defaults_match_default() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            gen: GenConfig,
        }
        use clap::Parser;
        let parsed = Cli::try_parse_from(["gen"]).unwrap().gen;
        let json = |c: &GenConfig| serde_json::to_string(c).unwrap();
        assert_eq!(json(&parsed), json(&GenConfig::default()));
        let parsed = Cli::try_parse_from([
            "gen",
            "--conversations",
            "5",
            "--jitter",
            "0s",
            "--duplicates",
            "0.5",
            "--bad",
            "0.1",
        ])
        .unwrap()
        .gen;
        assert_eq!((parsed.conversations, parsed.jitter.as_str(), parsed.duplicates, parsed.bad), (5, "0s", 0.5, 0.1));
    }

    #[test]
    fn bad_options_name_the_option() {
        let cases = [
            (GenConfig { start: "June 12th".into(), ..GenConfig::default() }, "--start"),
            (GenConfig { span: "a day".into(), ..GenConfig::default() }, "--span"),
            (GenConfig { jitter: "-2s".into(), ..GenConfig::default() }, "--jitter"),
            (GenConfig { duplicates: 1.5, ..GenConfig::default() }, "--duplicates"),
            (GenConfig { bad: -0.1, ..GenConfig::default() }, "--bad"),
            (GenConfig { bad: f64::NAN, ..GenConfig::default() }, "--bad"),
            (GenConfig { tenants: 0, ..GenConfig::default() }, "--tenants"),
            (GenConfig { start: "9999-12-31T00:00:00Z".into(), ..GenConfig::default() }, "--start"),
        ];
        for (c, name) in cases {
            let err = generate(&c, &mut Vec::new()).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        // A bare date is midnight UTC.
        assert_eq!(parse_start("2026-06-12").unwrap(), parse_ts("2026-06-12T00:00:00Z").unwrap());
    }

    #[test]
    fn edge_sizes() {
        let (text, stats) = run(&cfg(0, 1));
        assert!(text.is_empty());
        assert_eq!(stats, GenStats::default());
        let (text, stats) = run(&GenConfig { tenants: 1, span: "0s".into(), ..cfg(50, 1) });
        assert_eq!(text.lines().count() as u64, stats.events);
        assert!(text.lines().all(|l| validate(l).is_some_and(|e| e.tenant == "tenant-001")));
    }

    #[test]
    fn formatting() {
        let mut fmt = TsFmt::new();
        for ms in [0i64, 1_781_222_400_123, 1_781_308_799_999, 951_782_400_000, -1, 253_402_300_799_999] {
            let mut b = Vec::new();
            fmt.push(&mut b, ms);
            let s = String::from_utf8(b).unwrap();
            assert_eq!(parse_ts(&s), Some(ms), "{s}");
        }
        let micros = |m: u32, fixed: bool| {
            let mut b = Vec::new();
            push_micros(&mut b, m, fixed);
            String::from_utf8(b).unwrap()
        };
        assert_eq!(micros(12_300, false), "0.0123");
        assert_eq!(micros(1_000, true), "0.001000");
        assert_eq!(micros(2_500_000, false), "2.5");
        assert_eq!(micros(3_000_000, false), "3");
        assert_eq!(micros(1, false), "0.000001");
        let mut b = Vec::new();
        push_padded(&mut b, 7, 3);
        push_padded(&mut b, 123_456_789, 8);
        assert_eq!(b, b"007123456789");
    }
}
