//! What the worker answers about billing: a tenant's invoices, disputes and balance, a
//! day's statement, and the margin view of a period. The worker owns the ledger and the
//! usage, so these are built on its thread, between batches.

use super::Worker;
use crate::ledger::invoice::Invoice;
use crate::ledger::period::Period;
use crate::ledger::rating::Dispute;
use crate::ledger::statement::{Day, Statement};
use crate::margin_view::{margin_view, MarginView};

/// What the billing endpoints show of a tenant.
#[derive(Debug, Default)]
pub struct BillingView {
    pub invoices: Vec<Invoice>,
    pub disputes: Vec<Dispute>,
    pub balance: rust_decimal::Decimal,
    pub currency: String,
}

impl Worker {
    pub(super) fn billing_view(&self, tenant: &str) -> Result<BillingView, String> {
        let ledger = self.ledger();
        let wm = self.pipeline.engine.watermark().current();
        Ok(BillingView {
            invoices: ledger.invoices(tenant, wm).map_err(|e| e.to_string())?,
            disputes: ledger.disputes(tenant).to_vec(),
            balance: crate::money::with_minor(ledger.balance(tenant), self.pipeline.engine.rules().currency()),
            currency: self.pipeline.engine.rules().currency().to_string(),
        })
    }

    pub(super) fn margins(&self, tenant: Option<&str>, period: Period) -> Result<Vec<MarginView>, String> {
        let (ledger, usage) = (self.ledger(), &self.pipeline.summary.usage);
        let wm = self.pipeline.engine.watermark().current();
        let p = period.to_string();
        let tenants: Vec<&str> = match tenant {
            Some(t) => vec![t],
            None => usage.tenants.iter().filter(|(_, ps)| ps.contains_key(&p)).map(|(t, _)| t.as_str()).collect(),
        };
        let currency = self.pipeline.engine.rules().currency();
        tenants
            .into_iter()
            .map(|t| {
                let invoice = ledger.invoice(t, period, wm).map_err(|e| e.to_string())?;
                let costs = self.pipeline.engine.margins().and_then(|m| m.period(t, &p));
                let floor = ledger.plans().plan_for(t, period).0.margin_floor;
                Ok(margin_view(t, &p, invoice.as_ref(), usage.get(t, &p), costs, floor, currency))
            })
            .collect()
    }

    pub(super) fn statement(&self, tenant: &str, day: Day) -> Result<Statement, String> {
        let wm = self.pipeline.engine.watermark().current();
        self.ledger().statement(tenant, day, wm).map_err(|e| e.to_string())
    }
}
