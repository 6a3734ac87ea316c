//! The ledger's history: closed periods, kept in an embedded SQLite database so memory
//! holds only the open periods however long the service runs. A period is written here
//! whole, in one transaction, when it closes: its final invoice, every verdict rated in
//! it, its charges and its credits. Lookups by verdict id, by tenant and period, by line
//! and by day are indexed.
//!
//! The checkpoint says how far periods are closed; rows of later periods (written by a
//! run that crashed before its next checkpoint) are removed at recovery and written
//! again by the replay, so the history is always the checkpoint's plus what the log
//! replays. SQLite was chosen over a hand-made index or a key-value store because the
//! lookups are relational (a line's verdicts are a range of charges by tenant, period,
//! kind, outcome and price; a statement is a range by day) and SQLite answers them from
//! indexes, with transactions, from one file, built from source with the crate.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use rust_decimal::Decimal;

use super::invoice::{Invoice, Line, LineKind};
use super::period::Period;
use super::rating::{Charge, ChargeKind, Credit, CreditKind};
use super::totals::Charged;
use crate::timestamp::Nanos;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the ledger history {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("the ledger history {path} holds a bad row: {what}")]
    Bad { path: String, what: String },
}

/// A verdict of a closed period, as disputes need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVerdict {
    pub billable: bool,
    pub decided_at: Nanos,
    /// What it was charged, if billable.
    pub charge: Option<Decimal>,
}

/// A verdict of a period being closed.
pub struct ClosedVerdict<'a> {
    pub verdict_id: &'a str,
    pub billable: bool,
    pub decided_at: Nanos,
    /// Where its line starts in the service's verdict file, when the service wrote it.
    pub line_at: Option<u64>,
}

pub struct Store {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS invoices (
    tenant TEXT NOT NULL, period INTEGER NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY (tenant, period));
CREATE TABLE IF NOT EXISTS verdicts (
    verdict_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, period INTEGER NOT NULL,
    billable INTEGER NOT NULL, decided_at INTEGER NOT NULL, line_at INTEGER, charge TEXT);
CREATE INDEX IF NOT EXISTS verdicts_by_period ON verdicts (period);
CREATE TABLE IF NOT EXISTS charges (
    tenant TEXT NOT NULL, period INTEGER NOT NULL, verdict_id TEXT NOT NULL, outcome TEXT NOT NULL,
    kind TEXT NOT NULL, unit_price TEXT NOT NULL, decided_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS charges_by_line ON charges (tenant, period, kind, outcome, unit_price, decided_at, verdict_id);
CREATE INDEX IF NOT EXISTS charges_by_time ON charges (tenant, decided_at);
CREATE TABLE IF NOT EXISTS credits (
    tenant TEXT NOT NULL, period INTEGER NOT NULL, verdict_id TEXT NOT NULL, kind TEXT NOT NULL,
    amount TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS credits_by_line ON credits (tenant, period, kind, at, verdict_id);
CREATE INDEX IF NOT EXISTS credits_by_time ON credits (tenant, at);
CREATE TABLE IF NOT EXISTS period_totals (
    tenant TEXT NOT NULL, period INTEGER NOT NULL, charges INTEGER NOT NULL, charged TEXT NOT NULL,
    credits INTEGER NOT NULL, credited TEXT NOT NULL, PRIMARY KEY (tenant, period));
";

fn charge_kind(k: ChargeKind) -> &'static str {
    match k {
        ChargeKind::Included => "included",
        ChargeKind::Usage => "usage",
        ChargeKind::Overage => "overage",
    }
}

fn credit_kind(k: CreditKind) -> &'static str {
    match k {
        CreditKind::Dispute => "dispute",
        CreditKind::Retraction => "retraction",
    }
}

impl Store {
    /// Opens (or creates) the history at `path`. Every commit is synced: periods close
    /// once a month, and a checkpoint must never say a period is closed that the
    /// history does not hold.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StoreError::Sqlite { path: name.clone(), source })?;
        Self::init(conn, name)
    }

    /// A history that lives as long as the process (`verdict invoice`, tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        let conn =
            Connection::open_in_memory().map_err(|source| StoreError::Sqlite { path: ":memory:".into(), source })?;
        Self::init(conn, ":memory:".into())
    }

    fn init(conn: Connection, path: String) -> Result<Store, StoreError> {
        let s = Store { conn, path };
        s.conn
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .and_then(|()| s.conn.execute_batch(SCHEMA))
            .map_err(|e| s.err(e))?;
        // Histories written before verdicts kept their place in the verdict file and their
        // charge (then found through an index of charges by verdict).
        for (column, ty) in [("line_at", "INTEGER"), ("charge", "TEXT")] {
            if s.conn.prepare(&format!("SELECT {column} FROM verdicts LIMIT 0")).is_err() {
                s.conn
                    .execute_batch(&format!("ALTER TABLE verdicts ADD COLUMN {column} {ty}"))
                    .map_err(|e| s.err(e))?;
            }
        }
        Ok(s)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn bad(&self, what: String) -> StoreError {
        StoreError::Bad { path: self.path.clone(), what }
    }

    /// Forgets every period after `through` (all of them for `None`): what a run wrote
    /// after the checkpoint recovery starts from. Returns the invoices removed.
    pub fn forget_after(&mut self, through: Option<Period>) -> Result<usize, StoreError> {
        let after = through.map_or(-1, |p| i64::from(p.0));
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        let mut removed = 0;
        for table in ["invoices", "verdicts", "charges", "credits", "period_totals"] {
            let n = tx
                .execute(&format!("DELETE FROM {table} WHERE period > ?1"), params![after])
                .map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
            if table == "invoices" {
                removed = n;
            }
        }
        tx.commit().map_err(|e| StoreError::Sqlite { path: self.path.clone(), source: e })?;
        Ok(removed)
    }

    /// Writes a tenant's closed period, whole.
    pub fn put_closed(
        &mut self,
        invoice: &Invoice,
        period: Period,
        verdicts: &[ClosedVerdict<'_>],
        charges: &[Charge],
        credits: &[Credit],
        totals: &Charged,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite { path: path.clone(), source };
        let p = i64::from(period.0);
        let tenant = invoice.tenant.as_str();
        // Lines lead to their verdicts through the charges and credits below.
        let mut slim = invoice.clone();
        for l in &mut slim.lines {
            l.verdicts.clear();
        }
        let json = serde_json::to_string(&slim).map_err(|e| self.bad(e.to_string()))?;
        let tx = self.conn.transaction().map_err(sql)?;
        tx.execute(
            "INSERT OR REPLACE INTO invoices (tenant, period, json) VALUES (?1, ?2, ?3)",
            params![tenant, p, json],
        )
        .map_err(sql)?;
        tx.execute(
            "INSERT OR REPLACE INTO period_totals (tenant, period, charges, charged, credits, credited) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                tenant,
                p,
                totals.charges as i64,
                totals.charged.to_string(),
                totals.credits as i64,
                totals.credited.to_string()
            ],
        )
        .map_err(sql)?;
        {
            let mut v = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO verdicts (verdict_id, tenant, period, billable, decided_at, line_at, charge) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql)?;
            let charged: HashMap<&str, String> =
                charges.iter().map(|c| (c.verdict_id.as_str(), c.unit_price.to_string())).collect();
            // In key order: the primary key's pages are filled one after another.
            let mut sorted: Vec<&ClosedVerdict<'_>> = verdicts.iter().collect();
            sorted.sort_unstable_by_key(|x| x.verdict_id);
            for x in sorted {
                let line_at = x.line_at.and_then(|a| i64::try_from(a).ok());
                let charge = charged.get(x.verdict_id);
                v.execute(params![x.verdict_id, tenant, p, x.billable, x.decided_at, line_at, charge]).map_err(sql)?;
            }
            let mut c = tx
                .prepare_cached(
                    "INSERT INTO charges (tenant, period, verdict_id, outcome, kind, unit_price, decided_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql)?;
            for x in charges {
                let price = x.unit_price.to_string();
                c.execute(params![tenant, p, x.verdict_id, x.outcome, charge_kind(x.kind), price, x.decided_at])
                    .map_err(sql)?;
            }
            let mut r = tx
                .prepare_cached(
                    "INSERT INTO credits (tenant, period, verdict_id, kind, amount, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            for x in credits {
                r.execute(params![tenant, p, x.verdict_id, credit_kind(x.kind), x.amount.to_string(), x.at])
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// The final invoices of `tenant`, by period.
    pub fn invoices(&self, tenant: &str) -> Result<Vec<Invoice>, StoreError> {
        let sql = "SELECT json FROM invoices WHERE tenant = ?1 ORDER BY period";
        let rows = self.rows(sql, params![tenant], |r| r.get::<_, String>(0))?;
        let parse =
            |json: &String| serde_json::from_str(json).map_err(|e| self.bad(format!("an invoice of {tenant}: {e}")));
        rows.iter().map(parse).collect()
    }

    /// The final invoice of `tenant` for `period`, if it is closed.
    pub fn invoice(&self, tenant: &str, period: Period) -> Result<Option<Invoice>, StoreError> {
        let sql = "SELECT json FROM invoices WHERE tenant = ?1 AND period = ?2";
        let rows = self.rows(sql, params![tenant, i64::from(period.0)], |r| r.get::<_, String>(0))?;
        let parse =
            |json: &String| serde_json::from_str(json).map_err(|e| self.bad(format!("an invoice of {tenant}: {e}")));
        rows.first().map(parse).transpose()
    }

    /// Every tenant with a final invoice.
    pub fn tenants(&self) -> Result<Vec<String>, StoreError> {
        self.rows("SELECT DISTINCT tenant FROM invoices ORDER BY tenant", [], |r| r.get(0))
    }

    /// A page of the verdicts behind `line` of the final invoice of `tenant` for
    /// `period`, in decision order, and how many there are.
    pub fn line_verdicts(
        &self,
        tenant: &str,
        period: Period,
        line: &Line,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let p = i64::from(period.0);
        // The line's count is the number of its charges (or credits): no need to count.
        let (page_sql, keys): (&str, Vec<String>) = match line.kind {
            LineKind::Included | LineKind::Usage | LineKind::Overage => {
                let kind = match line.kind {
                    LineKind::Included => "included",
                    LineKind::Usage => "usage",
                    _ => "overage",
                };
                (
                    "SELECT verdict_id FROM charges WHERE tenant = ?1 AND period = ?2 AND kind = ?3 AND outcome = ?4 \
                     AND unit_price = ?5 ORDER BY decided_at, verdict_id LIMIT ?6 OFFSET ?7",
                    vec![
                        kind.to_string(),
                        line.outcome.clone().unwrap_or_default(),
                        line.unit_price.map(|d| d.to_string()).unwrap_or_default(),
                    ],
                )
            }
            LineKind::DisputeCredit | LineKind::RetractionCredit => {
                let kind = if line.kind == LineKind::DisputeCredit { "dispute" } else { "retraction" };
                (
                    "SELECT verdict_id FROM credits WHERE tenant = ?1 AND period = ?2 AND kind = ?3 \
                     ORDER BY at, verdict_id LIMIT ?4 OFFSET ?5",
                    vec![kind.to_string()],
                )
            }
            _ => return Ok((0, Vec::new())),
        };
        let mut args: Vec<rusqlite::types::Value> = vec![tenant.to_string().into(), p.into()];
        args.extend(keys.into_iter().map(Into::into));
        args.push((limit as i64).into());
        args.push((offset as i64).into());
        let mut stmt = self.conn.prepare_cached(page_sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let page = rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        Ok((line.count, page))
    }

    /// A verdict of a closed period, by id.
    pub fn verdict(&self, verdict_id: &str) -> Result<Option<StoredVerdict>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT v.billable, v.decided_at, COALESCE(v.charge, \
                 (SELECT c.unit_price FROM charges c WHERE v.charge IS NULL AND v.billable AND c.verdict_id = v.verdict_id)) \
                 FROM verdicts v WHERE v.verdict_id = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![verdict_id], |r| {
                    Ok((r.get::<_, bool>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<String>>(2)?))
                })
                .optional()
            })
            .map_err(|e| self.err(e))?;
        let Some((billable, decided_at, price)) = row else { return Ok(None) };
        let charge = match price {
            Some(p) => {
                Some(Decimal::from_str_exact(&p).map_err(|e| self.bad(format!("a charge of {verdict_id}: {e}")))?)
            }
            None => None,
        };
        Ok(Some(StoredVerdict { billable, decided_at, charge }))
    }

    /// Where the line of a verdict of a closed period starts in the verdict file, if
    /// it was written by the service.
    pub fn verdict_line(&self, verdict_id: &str) -> Result<Option<u64>, StoreError> {
        let at = self
            .conn
            .prepare_cached("SELECT line_at FROM verdicts WHERE verdict_id = ?1")
            .and_then(|mut s| s.query_row(params![verdict_id], |r| r.get::<_, Option<i64>>(0)).optional())
            .map_err(|e| self.err(e))?;
        Ok(at.flatten().and_then(|a| u64::try_from(a).ok()))
    }

    /// Every verdict id of the history, for the filter that keeps a verdict from being
    /// charged twice.
    pub fn verdict_ids(&self, mut each: impl FnMut(&str)) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT verdict_id FROM verdicts").map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: String = r.get(0).map_err(|e| self.err(e))?;
            each(&id);
        }
        Ok(())
    }

    /// The charges of `tenant` decided in `[from, to)` in closed periods, in order.
    pub fn charges_between(&self, tenant: &str, from: Nanos, to: Nanos) -> Result<Vec<Charge>, StoreError> {
        let sql = "SELECT verdict_id, outcome, kind, unit_price, decided_at FROM charges \
                   WHERE tenant = ?1 AND decided_at >= ?2 AND decided_at < ?3 ORDER BY decided_at, verdict_id";
        let rows = self.rows(sql, params![tenant, from, to], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get(4)?))
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (verdict_id, outcome, kind, price, decided_at) in rows {
            let kind = match kind.as_str() {
                "included" => ChargeKind::Included,
                "usage" => ChargeKind::Usage,
                "overage" => ChargeKind::Overage,
                other => return Err(self.bad(format!("a charge of kind {other:?}"))),
            };
            let unit_price = self.decimal(&price, "a price")?;
            out.push(Charge { verdict_id, outcome, kind, unit_price, decided_at });
        }
        Ok(out)
    }

    /// The credits of `tenant` given in `[from, to)` in closed periods, in order.
    pub fn credits_between(&self, tenant: &str, from: Nanos, to: Nanos) -> Result<Vec<Credit>, StoreError> {
        let sql = "SELECT verdict_id, kind, amount, at FROM credits \
                   WHERE tenant = ?1 AND at >= ?2 AND at < ?3 ORDER BY at, verdict_id";
        let rows = self.rows(sql, params![tenant, from, to], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?))
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (verdict_id, kind, amount, at) in rows {
            let kind = match kind.as_str() {
                "dispute" => CreditKind::Dispute,
                "retraction" => CreditKind::Retraction,
                other => return Err(self.bad(format!("a credit of kind {other:?}"))),
            };
            out.push(Credit { verdict_id, kind, amount: self.decimal(&amount, "a credit")?, at });
        }
        Ok(out)
    }

    /// The final totals of every closed period, by tenant and period.
    pub fn totals(&self) -> Result<Vec<(String, Period, Charged)>, StoreError> {
        let sql =
            "SELECT tenant, period, charges, charged, credits, credited FROM period_totals ORDER BY tenant, period";
        let rows = self.rows(sql, [], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (tenant, period, charges, charged, credits, credited) in rows {
            let (charged, credited) = (self.decimal(&charged, "a total")?, self.decimal(&credited, "a total")?);
            let (charges, credits) = (charges.max(0) as u64, credits.max(0) as u64);
            out.push((tenant, Period(period), Charged { charges, charged, credits, credited }));
        }
        Ok(out)
    }

    fn rows<T>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(args, row).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    fn decimal(&self, s: &str, what: &str) -> Result<Decimal, StoreError> {
        Decimal::from_str_exact(s).map_err(|e| self.bad(format!("{what} {s:?}: {e}")))
    }
}

/// Verdict ids the history holds, as a Bloom filter (2^26 bits, four probes: about 1%
/// false positives at 6.7 million ids, a year of 600,000 verdicts a month): a verdict
/// decided again (its conversation started anew after its retention) is looked up in
/// the history only when the filter says it may be there.
struct Seen {
    bits: Vec<u64>,
    /// Ids added: none (nothing closed yet, every replay) answers without probing.
    added: u64,
}

const SEEN_BITS: u32 = 26;

impl Seen {
    fn new() -> Seen {
        Seen { bits: vec![0; 1 << (SEEN_BITS - 6)], added: 0 }
    }

    fn probes(id: &str) -> [usize; 4] {
        // Verdict ids are SHA-256 prefixes in hex: their bits are already uniform.
        let h = crate::verdicts::hex_u128(id).unwrap_or_else(|| {
            use std::hash::{Hash, Hasher};
            let mut s = std::collections::hash_map::DefaultHasher::new();
            id.hash(&mut s);
            u128::from(s.finish()) * 0x9e37_79b9_7f4a_7c15
        });
        let mask = (1u128 << SEEN_BITS) - 1;
        std::array::from_fn(|i| ((h >> (i as u32 * SEEN_BITS)) & mask) as usize)
    }

    fn add(&mut self, id: &str) {
        self.added += 1;
        for b in Self::probes(id) {
            self.bits[b >> 6] |= 1 << (b & 63);
        }
    }

    fn may_hold(&self, id: &str) -> bool {
        self.added > 0 && Self::probes(id).iter().all(|&b| self.bits[b >> 6] & (1 << (b & 63)) != 0)
    }
}

/// The history with its filter of verdict ids.
pub struct History {
    store: Store,
    seen: Seen,
}

impl History {
    pub fn new(store: Store) -> Result<History, StoreError> {
        let mut h = History { store, seen: Seen::new() };
        h.refilter()?;
        Ok(h)
    }

    /// A history in memory only (`verdict invoice`, tests).
    pub fn in_memory() -> Result<History, StoreError> {
        History::new(Store::in_memory()?)
    }

    fn refilter(&mut self) -> Result<(), StoreError> {
        let mut seen = Seen::new();
        self.store.verdict_ids(|id| seen.add(id))?;
        self.seen = seen;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether a verdict with this id was rated in a closed period.
    pub fn rated_before(&self, verdict_id: &str) -> Result<bool, StoreError> {
        if !self.seen.may_hold(verdict_id) {
            return Ok(false);
        }
        Ok(self.store.verdict(verdict_id)?.is_some())
    }

    /// Writes a closed period (see [`Store::put_closed`]).
    pub fn close(
        &mut self,
        invoice: &Invoice,
        period: Period,
        verdicts: &[ClosedVerdict<'_>],
        charges: &[Charge],
        credits: &[Credit],
        totals: &Charged,
    ) -> Result<(), StoreError> {
        self.store.put_closed(invoice, period, verdicts, charges, credits, totals)?;
        for v in verdicts {
            self.seen.add(v.verdict_id);
        }
        Ok(())
    }

    /// Forgets what was closed after `through` (see [`Store::forget_after`]).
    pub fn forget_after(&mut self, through: Option<Period>) -> Result<usize, StoreError> {
        let n = self.store.forget_after(through)?;
        self.refilter()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::invoice::Status;

    fn invoice(period: &str) -> Invoice {
        Invoice {
            number: format!("INV-acme-{period}"),
            tenant: "acme".into(),
            period: period.into(),
            status: Status::Final,
            currency: "USD".into(),
            plan: "payg".into(),
            lines: vec![Line {
                kind: LineKind::Usage,
                outcome: Some("o".into()),
                unit_price: Some(Decimal::new(150, 2)),
                count: 1,
                amount: Decimal::new(150, 2),
                verdicts: vec![format!("v-{period}")],
            }],
            total: Decimal::new(150, 2),
            prepaid_balance: Decimal::ZERO,
        }
    }

    #[test]
    fn a_period_written_after_the_checkpoint_is_forgotten_and_the_rest_kept() {
        let mut h = History::in_memory().unwrap();
        for (p, day) in [("2026-05", 1_000), ("2026-06", 2_000)] {
            let period: Period = p.parse().unwrap();
            let id = format!("v-{p}");
            let charge = Charge {
                verdict_id: id.clone(),
                outcome: "o".into(),
                kind: ChargeKind::Usage,
                unit_price: Decimal::new(150, 2),
                decided_at: day,
            };
            let v = [ClosedVerdict { verdict_id: &id, billable: true, decided_at: day, line_at: Some(day as u64 * 2) }];
            h.close(&invoice(p), period, &v, &[charge], &[], &Default::default()).unwrap();
        }
        assert!(h.rated_before("v-2026-06").unwrap());
        assert_eq!(h.store().verdict_line("v-2026-06").unwrap(), Some(4_000));
        assert_eq!(h.store().verdict_line("v-nope").unwrap(), None);
        let line = &invoice("2026-05").lines[0];
        assert_eq!(
            h.store().line_verdicts("acme", "2026-05".parse().unwrap(), line, 0, 10).unwrap(),
            (1, vec!["v-2026-05".into()])
        );
        assert_eq!(h.store().charges_between("acme", 0, 1_500).unwrap().len(), 1);
        assert_eq!(h.store().invoices("acme").unwrap()[0].lines[0].verdicts, Vec::<String>::new(), "kept slim");
        // The checkpoint closed May only: June goes, with its verdicts and charges.
        assert_eq!(h.forget_after(Some("2026-05".parse().unwrap())).unwrap(), 1);
        assert_eq!(h.store().invoices("acme").unwrap().len(), 1);
        assert!(!h.rated_before("v-2026-06").unwrap(), "the filter was rebuilt");
        assert_eq!(h.store().verdict_line("v-2026-06").unwrap(), None);
        assert_eq!(h.store().verdict("v-2026-05").unwrap().unwrap().charge, Some(Decimal::new(150, 2)));
        assert_eq!(h.forget_after(None).unwrap(), 1);
        assert!(h.store().tenants().unwrap().is_empty());
    }

    #[test]
    fn the_filter_finds_what_was_added_and_little_else() {
        let mut s = Seen::new();
        let id = |i: u32| crate::verdicts::verdict_id("t", &format!("c{i}"), "o");
        for i in 0..10_000 {
            s.add(&id(i));
        }
        assert!((0..10_000).all(|i| s.may_hold(&id(i))));
        let false_positives = (10_000..20_000).filter(|&i| s.may_hold(&id(i))).count();
        assert!(false_positives < 5, "{false_positives}");
        s.add("not-hex");
        assert!(s.may_hold("not-hex"));
    }
}
