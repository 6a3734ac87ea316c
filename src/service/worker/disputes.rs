//! What the dispute API asks of the worker, which owns the ledger: whether a tenant is
//! known, whose a verdict is, and what rating makes of a dispute event just logged.

use tokio::sync::oneshot;

use super::Worker;
use crate::ledger::billing::BillingEvent;
use crate::ledger::preview::{Preview, Subject};
use crate::service::shared::verdict_key;

pub enum DisputeRequest {
    /// Whether the tenant is known: it has a verdict, a billing event or a plan.
    KnowsTenant(String, oneshot::Sender<bool>),
    /// Whose the verdict is: from its dispute, else from its line in the verdict file.
    Subject(String, oneshot::Sender<Result<Option<Subject>, String>>),
    /// What rating makes (or made) of a dispute event already logged and applied, and
    /// the currency of its amounts.
    Preview(Box<BillingEvent>, oneshot::Sender<Result<Option<(Preview, String)>, String>>),
}

/// The fields of a verdict line that name its subject.
#[derive(serde::Deserialize)]
struct VerdictSubject {
    tenant: String,
    conversation: String,
    outcome: String,
}

impl Worker {
    pub(super) fn dispute(&self, request: DisputeRequest) {
        let ledger = self.ledger();
        match request {
            DisputeRequest::KnowsTenant(tenant, reply) => {
                let _ = reply.send(ledger.knows_tenant(&tenant));
            }
            DisputeRequest::Subject(verdict_id, reply) => {
                let _ = reply.send(match ledger.dispute_subject(&verdict_id) {
                    Some(s) => Ok(Some(s)),
                    None => self.verdict_subject(&verdict_id),
                });
            }
            DisputeRequest::Preview(event, reply) => {
                let currency = self.pipeline.engine.rules().currency().to_string();
                let _ = reply.send(ledger.preview(&event).map(|p| p.map(|p| (p, currency))).map_err(|e| e.to_string()));
            }
        }
    }

    /// The subject of a verdict this service decided, read from its line.
    fn verdict_subject(&self, verdict_id: &str) -> Result<Option<Subject>, String> {
        let indexed = verdict_key(verdict_id).and_then(|k| self.shared.verdicts.get(&k).map(|e| *e.value()));
        let at = match indexed {
            Some(at) => Some(at),
            None => self.ledger().history().store().verdict_line(verdict_id).map_err(|e| e.to_string())?,
        };
        let Some(at) = at else { return Ok(None) };
        let line = crate::sinks::append::read_line_at(self.out.path(), at, super::MAX_VERDICT_LINE)
            .map_err(|e| format!("reading verdict {verdict_id} in {}: {e}", self.out.path().display()))?;
        let v: VerdictSubject = serde_json::from_slice(&line).map_err(|e| {
            format!("the line of verdict {verdict_id} in {} is no verdict: {e}", self.out.path().display())
        })?;
        Ok(Some(Subject { tenant: v.tenant, conversation: v.conversation, outcome: v.outcome }))
    }
}
