//! `verdict export --to PLATFORM`: replays the inputs exactly as `verdict invoice` does
//! (conversation and billing events, through the engine and the ledger), then writes the
//! requests that send every billable verdict as a usage event and every credit as its
//! correction, in time order: one NDJSON line per request,
//! `{"method","path","content_type","idempotency_keys","body"}`, the body as JSON (or, for
//! Stripe's form-encoded requests, as a string; `null` when there is none).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;

use super::encode::Obj;
use super::{Correction, Item, Platform, Request, Usage, JSON};
use crate::ledger::period::Period;
use crate::ledger::store::StoreError;
use crate::ledger::Ledger;
use crate::replay::{self, ReplayOptions};
use crate::timestamp::Span;
use crate::verdicts::Verdict;

/// The arguments of `verdict export`.
#[derive(Clone, Debug, clap::Args)]
pub struct ExportArgs {
    /// The billing platform whose API the requests are for.
    #[arg(long)]
    pub to: Platform,
    /// Outcome definitions, prices and plans directory (plans give each tenant's
    /// `external_id`, the customer id in the platform).
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// Allowed lateness, like 5s.
    #[arg(long, default_value = "5s")]
    pub lateness: Span,
    /// Only this tenant's verdicts and credits.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only the verdicts decided, and the credits given, in this period (YYYY-MM).
    #[arg(long)]
    pub period: Option<Period>,
    /// Where to write the requests (default: stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Dead-letter NDJSON output (default: stderr).
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// NDJSON inputs, read one after another; `-` is stdin.
    #[arg(required = true)]
    pub inputs: Vec<String>,
}

/// Why an export could not be made from a replay.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the ledger failed: {0}")]
    Ledger(String),
    #[error(transparent)]
    History(#[from] StoreError),
    #[error("the ledger credited verdict {0}, which the replay did not decide as billable")]
    UnknownVerdict(String),
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exported {
    pub platform: Platform,
    pub usages: usize,
    pub corrections: usize,
    pub requests: usize,
    pub records: u64,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} usage event(s) and {} correction(s) for {} in {} request(s), from {} records",
            self.usages, self.corrections, self.platform, self.requests, self.records
        )
    }
}

/// Runs `verdict export`.
pub fn run(args: &ExportArgs) -> anyhow::Result<Exported> {
    let opts = ReplayOptions::billing(args.rules.clone(), args.lateness, args.dead_letter.clone(), args.inputs.clone());
    let mut usages = Vec::new();
    let replayed = replay::run_with(&opts, |v| {
        if v.billable && args.tenant.as_ref().is_none_or(|t| *t == v.tenant) {
            usages.push(owned_usage(v));
        }
    })?;
    let items = items(&replayed.ledger, usages, args.period)?;
    let requests = args.to.requests(&items);
    let out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let name = args.output.as_deref().map_or_else(|| "stdout".to_string(), |p| p.display().to_string());
    write_lines(&requests, BufWriter::with_capacity(1 << 20, out)).with_context(|| format!("writing {name}"))?;
    let corrections = items.iter().filter(|i| matches!(i, Item::Correction(_))).count();
    Ok(Exported {
        platform: args.to,
        usages: items.len() - corrections,
        corrections,
        requests: requests.len(),
        records: replayed.summary.records,
    })
}

/// A verdict's usage, its strings copied; the customer is set from the plans later.
fn owned_usage(v: &Verdict) -> Usage<'static> {
    Usage {
        verdict_id: v.verdict_id.clone().into(),
        tenant: v.tenant.clone().into(),
        customer: v.tenant.clone().into(),
        outcome: v.outcome.clone().into(),
        tier: v.tier,
        amount: v.amount,
        currency: v.currency.clone().into(),
        conversation: v.conversation.clone().into(),
        decided_at: v.decided_at,
    }
}

/// The items of an export: the billable verdicts (each id once: the first in the order
/// the ledger rates them, as it charges only that one) and the ledger's credits, each
/// with the usage event it corrects, in [`Item::order_key`] order; with `period`, only
/// the verdicts decided and the credits given in it.
pub fn items(
    ledger: &Ledger,
    mut usages: Vec<Usage<'static>>,
    period: Option<Period>,
) -> Result<Vec<Item<'static>>, ExportError> {
    if let Some(why) = ledger.failed() {
        return Err(ExportError::Ledger(why.to_string()));
    }
    usages.sort_by(|a, b| (a.decided_at, &a.verdict_id).cmp(&(b.decided_at, &b.verdict_id)));
    let mut seen = HashSet::with_capacity(usages.len());
    usages.retain(|u| seen.insert(u.verdict_id.clone()));
    for u in &mut usages {
        if let Some(id) = ledger.plans().external_id(&u.tenant) {
            u.customer = Cow::Owned(id.to_string());
        }
    }
    let mut corrections = Vec::new();
    {
        let index: HashMap<&str, &Usage<'static>> = usages.iter().map(|u| (u.verdict_id.as_ref(), u)).collect();
        let tenants: BTreeSet<&str> = usages.iter().map(|u| u.tenant.as_ref()).collect();
        for tenant in tenants {
            for credit in ledger.credits(tenant)? {
                if period.is_some_and(|p| Period::of(credit.at) != p) {
                    continue;
                }
                let Some(&usage) = index.get(credit.verdict_id.as_str()) else {
                    return Err(ExportError::UnknownVerdict(credit.verdict_id));
                };
                let (kind, credited, at) = (credit.kind, credit.amount, credit.at);
                corrections.push(Item::Correction(Correction { usage: usage.clone(), kind, credited, at }));
            }
        }
    }
    let mut items: Vec<Item<'static>> = usages
        .into_iter()
        .filter(|u| period.is_none_or(|p| Period::of(u.decided_at) == p))
        .map(Item::Usage)
        .chain(corrections)
        .collect();
    items.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    Ok(items)
}

/// Writes one NDJSON line per request.
pub fn write_lines(requests: &[Request], mut out: impl Write) -> std::io::Result<()> {
    let mut line = String::with_capacity(1 << 16);
    for r in requests {
        line.clear();
        let mut o = Obj::open(&mut line);
        o.str("method", r.method)
            .str("path", &r.path)
            .str("content_type", r.content_type)
            .strs("idempotency_keys", &r.keys);
        if r.body.is_empty() {
            o.raw("body", "null");
        } else if r.content_type == JSON {
            o.raw("body", &r.body);
        } else {
            o.str("body", &r.body);
        }
        o.close();
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{correction, usage};
    use super::*;

    #[test]
    fn each_request_is_one_line_with_its_body_as_json_or_text() {
        let items = [Item::Usage(usage(1, 0)), Item::Correction(correction(1, 0))];
        for p in Platform::ALL {
            let reqs = p.requests(&items);
            let mut out = Vec::new();
            write_lines(&reqs, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(lines.len(), reqs.len(), "{p}");
            for (l, r) in lines.iter().zip(&reqs) {
                assert_eq!((l["method"].as_str(), l["path"].as_str()), (Some(r.method), Some(r.path.as_str())));
                assert_eq!(l["idempotency_keys"], serde_json::json!(r.keys));
                match (p, r.method) {
                    (Platform::Orb, "PUT") => assert!(l["body"].is_null()),
                    (Platform::Stripe, _) => assert_eq!(l["body"].as_str(), Some(r.body.as_str())),
                    _ => assert_eq!(l["body"], serde_json::from_str::<serde_json::Value>(&r.body).unwrap()),
                }
            }
        }
    }
}
