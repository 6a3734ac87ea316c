//! Worked examples, one per plan feature, each computed by hand here: the invoice lines
//! a ledger gives must be exactly these.

use std::sync::Arc;

use rust_decimal::Decimal;

use super::billing::{Action, BillingEvent};
use super::invoice::{Invoice, Status};
use super::plans::PlanBook;
use super::rating::{DisputeStatus, Rated};
use super::store::History;
use super::Ledger;
use crate::timestamp::{parse_rfc3339, Nanos};
use crate::verdicts::verdict_id;

const OUTCOME: &str = "ai_resolution";

fn t(s: &str) -> Nanos {
    parse_rfc3339(s).unwrap()
}

fn d(s: &str) -> Decimal {
    Decimal::from_str_exact(s).unwrap()
}

fn ledger(plans: &str) -> Ledger {
    Ledger::new(Arc::new(PlanBook::parse(plans, &[OUTCOME]).unwrap()), "USD", History::in_memory().unwrap())
}

/// A verdict of tenant `acme`, conversation `conv`, decided at `at`.
fn verdict(conv: &str, billable: bool, amount: &str, at: &str) -> Rated {
    Rated {
        verdict_id: verdict_id("acme", conv, OUTCOME),
        tenant: "acme".into(),
        conversation: conv.into(),
        outcome: OUTCOME.into(),
        billable,
        amount: if billable { d(amount) } else { Decimal::ZERO },
        cost: Decimal::ZERO,
        decided_at: t(at),
        line_at: None,
    }
}

fn event(id: &str, conv: &str, at: &str, action: Action) -> BillingEvent {
    BillingEvent { id: id.into(), tenant: "acme".into(), conversation: conv.into(), ts: t(at), action }
}

fn opened(id: &str, conv: &str, at: &str) -> BillingEvent {
    event(id, conv, at, Action::DisputeOpened { outcome: OUTCOME.into(), reason: "not resolved".into() })
}

fn accepted(id: &str, conv: &str, at: &str) -> BillingEvent {
    event(id, conv, at, Action::DisputeAccepted { outcome: OUTCOME.into(), note: String::new() })
}

/// `n` billable verdicts at `amount` on the `day` of June 2026, conversations `p0..`.
fn june(l: &mut Ledger, prefix: &str, n: usize, amount: &str) {
    for i in 0..n {
        l.add_verdict(verdict(&format!("{prefix}{i}"), true, amount, &format!("2026-06-12T10:{:02}:00Z", i % 60)));
    }
}

/// The lines of an invoice as (kind, count, amount) strings, and its total.
fn lines(i: &Invoice) -> (Vec<(String, u64, String)>, String) {
    let ls = i.lines.iter().map(|l| (l.kind.as_str().to_string(), l.count, l.amount.to_string())).collect();
    (ls, i.total.to_string())
}

fn expect(i: &Invoice, want: &[(&str, u64, &str)], total: &str) {
    let want: Vec<(String, u64, String)> = want.iter().map(|(k, n, a)| (k.to_string(), *n, a.to_string())).collect();
    assert_eq!(lines(i), (want, total.to_string()), "{}", serde_json::to_string_pretty(i).unwrap());
}

/// The invoices after everything, with the watermark at `end`.
fn invoices(mut l: Ledger, end: &str) -> Vec<Invoice> {
    l.finish(t(end));
    l.invoices("acme", t(end)).unwrap()
}

#[test]
fn platform_fee_included_and_overage() {
    let mut l = ledger(
        "[plans.growth]\nplatform_fee = \"1500.00\"\nincluded = { ai_resolution = 3 }\noverage = { ai_resolution = \"0.75\" }\n\
         [tenants.acme]\nassignments = [ { plan = \"growth\", from = \"2026-06\" } ]\n",
    );
    june(&mut l, "c", 5, "0.50");
    let inv = invoices(l, "2026-06-30T00:00:00Z");
    // 1500 + 3 included at 0 + 2 x 0.75.
    expect(&inv[0], &[("platform_fee", 1, "1500.00"), ("included", 3, "0.00"), ("overage", 2, "1.50")], "1501.50");
    assert_eq!((inv[0].status, inv[0].number.as_str()), (Status::Draft, "INV-acme-2026-06"));
}

#[test]
fn pay_as_you_go_charges_each_verdict_its_own_price() {
    let mut l = ledger("");
    for (i, price) in ["0.50", "1.50", "1.50", "3.00"].iter().enumerate() {
        l.add_verdict(verdict(&format!("c{i}"), true, price, "2026-06-12T10:00:00Z"));
    }
    l.add_verdict(verdict("x", false, "0", "2026-06-12T11:00:00Z"));
    // One usage line per unit price: 0.50, 2 x 1.50, 3.00.
    let inv = invoices(l, "2026-06-20T00:00:00Z");
    expect(&inv[0], &[("usage", 1, "0.50"), ("usage", 2, "3.00"), ("usage", 1, "3.00")], "6.50");
}

#[test]
fn a_committed_minimum_is_trued_up() {
    let mut l = ledger(
        "[plans.m]\nminimum = \"100.00\"\n[tenants.acme]\nassignments = [ { plan = \"m\", from = \"2026-06\" } ]\n",
    );
    june(&mut l, "c", 20, "1.50");
    // Usage 30.00, so 70.00 to reach the minimum.
    let inv = invoices(l, "2026-06-20T00:00:00Z");
    expect(&inv[0], &[("usage", 20, "30.00"), ("minimum_true_up", 0, "70.00")], "100.00");
}

#[test]
fn the_price_lock_caps_the_first_periods_only() {
    let mut l = ledger(
        "[plans.g]\nplatform_fee = \"1500.00\"\noverage = { ai_resolution = \"0.75\" }\ncap = \"1501.00\"\ncap_periods = 2\n\
         [tenants.acme]\nassignments = [ { plan = \"g\", from = \"2026-05\" } ]\n",
    );
    june(&mut l, "j", 10, "0.50");
    for i in 0..10 {
        l.add_verdict(verdict(&format!("k{i}"), true, "0.50", "2026-07-03T10:00:00Z"));
    }
    let inv = invoices(l, "2026-07-10T00:00:00Z");
    // May (first period, nothing used): 1500.00 under the cap.
    expect(&inv[0], &[("platform_fee", 1, "1500.00")], "1500.00");
    // June, second period: 1500 + 7.50 = 1507.50, capped at 1501.00.
    expect(&inv[1], &[("platform_fee", 1, "1500.00"), ("overage", 10, "7.50"), ("price_lock", 0, "-6.50")], "1501.00");
    // July, third period: the lock is over.
    expect(&inv[2], &[("platform_fee", 1, "1500.00"), ("overage", 10, "7.50")], "1507.50");
    assert_eq!(inv.iter().map(|i| i.status).collect::<Vec<_>>(), [Status::Final, Status::Final, Status::Draft]);
}

#[test]
fn an_outcome_guarantee_missed_gives_its_credit() {
    let mut l = ledger(
        "[plans.s]\nsla = { ai_resolution = { min_rate = \"0.50\", credit = \"0.10\" } }\n\
         [tenants.acme]\nassignments = [ { plan = \"s\", from = \"2026-06\" } ]\n",
    );
    june(&mut l, "b", 2, "1.50");
    for i in 0..3 {
        l.add_verdict(verdict(&format!("n{i}"), false, "0", "2026-06-13T10:00:00Z"));
    }
    // 2 billable of 5 = 0.40 < 0.50: credit 0.10 x 3.00.
    let inv = invoices(l, "2026-06-20T00:00:00Z");
    expect(&inv[0], &[("usage", 2, "3.00"), ("sla_credit", 0, "-0.30")], "2.70");
}

#[test]
fn every_dispute_path() {
    let mut l = ledger(
        "[plans.w]\ndispute_window = \"10d\"\n[tenants.acme]\nassignments = [ { plan = \"w\", from = \"2026-06\" } ]\n",
    );
    l.add_verdict(verdict("a", true, "1.50", "2026-06-01T10:00:00Z"));
    l.add_verdict(verdict("b", true, "3.00", "2026-06-01T10:00:00Z"));
    l.add_verdict(verdict("n", false, "0", "2026-06-01T10:00:00Z"));
    l.add_verdict(verdict("old", true, "0.50", "2026-06-01T09:00:00Z"));
    for e in [
        opened("d1", "a", "2026-06-02T00:00:00Z"),
        accepted("d2", "a", "2026-06-03T00:00:00Z"),
        accepted("d3", "a", "2026-06-04T00:00:00Z"),
        opened("d4", "a", "2026-06-05T00:00:00Z"),
        opened("d5", "b", "2026-06-02T00:00:00Z"),
        event(
            "d6",
            "b",
            "2026-06-03T00:00:00Z",
            Action::DisputeRejected { outcome: OUTCOME.into(), note: "resolved".into() },
        ),
        opened("d7", "n", "2026-06-02T00:00:00Z"),
        opened("d8", "ghost", "2026-06-02T00:00:00Z"),
        opened("d9", "old", "2026-06-20T00:00:00Z"),
        // Before the verdict was decided: there was nothing to dispute yet.
        opened("d10", "late", "2026-06-01T00:00:00Z"),
    ] {
        l.add_billing(e);
    }
    l.add_verdict(verdict("late", true, "0.50", "2026-06-01T12:00:00Z"));
    l.finish(t("2026-06-25T00:00:00Z"));
    let status: Vec<(String, String)> =
        l.disputes("acme").iter().map(|d| (d.event_id.clone(), d.status.word().to_string())).collect();
    // An accept or reject closes the dispute it answers (d2 closes d1, d6 closes d5).
    let want = [
        ("d10", "refused"),
        ("d1", "accepted"),
        ("d5", "rejected"),
        ("d7", "refused"),
        ("d8", "refused"),
        ("d3", "refused"),
        ("d4", "refused"),
        ("d9", "refused"),
    ];
    let mut got = status.clone();
    got.sort();
    let mut want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    want.sort();
    assert_eq!(got, want);
    let cause = |id: &str| {
        let d = l.disputes("acme").iter().find(|d| d.event_id == id).unwrap();
        assert_eq!(d.status, DisputeStatus::Refused, "{id}");
        d.cause.clone().unwrap()
    };
    assert!(cause("d7").contains("not billable"));
    assert!(cause("d8").contains("no ai_resolution verdict"));
    assert!(cause("d10").contains("no ai_resolution verdict"), "decided after the dispute");
    assert!(cause("d3").contains("nothing to accept"), "the same dispute accepted twice");
    assert!(cause("d4").contains("already disputed"));
    assert!(cause("d9").contains("outside the dispute window"));
    // The accepted dispute credits exactly a's charge, once.
    let inv = l.invoices("acme", t("2026-06-25T00:00:00Z")).unwrap();
    expect(
        &inv[0],
        &[("usage", 2, "1.00"), ("usage", 1, "1.50"), ("usage", 1, "3.00"), ("dispute_credit", 1, "-1.50")],
        "4.00",
    );
    let june = "2026-06".parse().unwrap();
    let (n, ids) = l.line_verdicts("acme", june, 3, 0, 10, t("2026-06-25T00:00:00Z")).unwrap().unwrap();
    assert_eq!((n, ids), (1, vec![verdict_id("acme", "a", OUTCOME)]));
    let (n, ids) = l.line_verdicts("acme", june, 0, 1, 10, t("2026-06-25T00:00:00Z")).unwrap().unwrap();
    assert_eq!((n, ids.len()), (2, 1), "a page of the usage line at 0.50");
    let all = l.all_invoices(t("2026-06-25T00:00:00Z")).unwrap();
    let listed: Vec<usize> = all[0].lines.iter().map(|l| l.verdicts.len()).collect();
    assert_eq!(listed, [2, 1, 1, 1], "every line's verdicts for `verdict invoice`");
}

#[test]
fn prepaid_credit_carries_over_and_a_negative_total_tops_it_up() {
    let mut l = ledger("");
    l.add_billing(event(
        "g1",
        "-",
        "2026-06-01T00:00:00Z",
        Action::CreditGranted { amount: d("10.00"), note: String::new() },
    ));
    june(&mut l, "c", 13, "0.50"); // 6.50 in June
    for i in 0..10 {
        l.add_verdict(verdict(&format!("k{i}"), true, "0.50", "2026-07-02T10:00:00Z"));
        // 5.00 in July
    }
    // August: a dispute accepted for a July charge, nothing used: the total is negative.
    l.add_billing(opened("o1", "k0", "2026-08-01T10:00:00Z"));
    l.add_billing(accepted("o2", "k0", "2026-08-02T10:00:00Z"));
    let inv = invoices(l, "2026-09-15T00:00:00Z");
    // June draws 6.50 of 10.00; 3.50 is left.
    expect(&inv[0], &[("usage", 13, "6.50"), ("prepaid_credit", 0, "-6.50")], "0.00");
    assert_eq!(inv[0].prepaid_balance.to_string(), "3.50");
    // July draws the rest.
    expect(&inv[1], &[("usage", 10, "5.00"), ("prepaid_credit", 0, "-3.50")], "1.50");
    // August: -0.50, so the total is 0 and 0.50 goes back to the balance.
    expect(&inv[2], &[("dispute_credit", 1, "-0.50")], "0.00");
    assert_eq!(inv[2].prepaid_balance.to_string(), "0.50");
    assert_eq!(inv.len(), 3, "September has nothing and bills nothing idle");
}

#[test]
fn each_line_is_rounded_half_to_even_and_the_total_is_their_sum() {
    let mut l = ledger(
        "[plans.r]\noverage = { ai_resolution = \"0.125\" }\nsla = { ai_resolution = { min_rate = \"0.9\", credit = \"0.333\" } }\n\
         [tenants.acme]\nassignments = [ { plan = \"r\", from = \"2026-06\" } ]\n",
    );
    june(&mut l, "c", 3, "0.50");
    l.add_verdict(verdict("n", false, "0", "2026-06-13T10:00:00Z"));
    // Overage 3 x 0.125 = 0.375 -> 0.38 (half to even: 0.375 -> 0.38); SLA credit
    // 0.333 x 0.375 = 0.124875 -> 0.12. Total 0.38 - 0.12.
    let inv = invoices(l, "2026-06-20T00:00:00Z");
    expect(&inv[0], &[("overage", 3, "0.38"), ("sla_credit", 0, "-0.12")], "0.26");
}

#[test]
fn a_dispute_that_arrives_before_its_verdict_is_decided_waits_for_it() {
    // The follow-up window of c ends at 10:00; the customer disputes at 10:00:03. The
    // dispute arrives while the watermark is still before 10:00, so the verdict is not
    // decided yet; rated in time order, the dispute finds it.
    let mut l = ledger("");
    l.add_billing(opened("d1", "c", "2026-06-12T10:00:03Z"));
    l.advance(t("2026-06-12T09:59:58Z"));
    l.add_verdict(verdict("c", true, "1.50", "2026-06-12T10:00:00Z"));
    l.add_billing(accepted("d2", "c", "2026-06-12T11:00:00Z"));
    l.advance(t("2026-06-12T12:00:00Z"));
    assert_eq!(l.disputes("acme")[0].status, DisputeStatus::Accepted, "{:?}", l.disputes("acme"));
    let inv = l.invoices("acme", t("2026-06-12T12:00:00Z")).unwrap();
    expect(&inv[0], &[("usage", 1, "1.50"), ("dispute_credit", 1, "-1.50")], "0.00");
}

#[test]
fn a_verdict_id_decided_again_is_charged_once() {
    // A conversation decided again after its retention ran out gives the same verdict
    // id; consumers deduplicate by it, and so does the ledger: one charge.
    let mut l = ledger("");
    l.add_verdict(verdict("c", true, "1.50", "2026-06-01T10:00:00Z"));
    l.add_verdict(verdict("c", true, "1.50", "2026-06-20T10:00:00Z"));
    let inv = invoices(l, "2026-06-25T00:00:00Z");
    expect(&inv[0], &[("usage", 1, "1.50")], "1.50");
}

#[test]
fn closed_periods_live_in_the_history_and_still_answer() {
    let mut l = ledger("");
    june(&mut l, "c", 3, "1.50");
    l.advance(t("2026-07-02T00:00:00Z"));
    // June is closed: out of memory, in the history.
    assert!(l.books["acme"].periods.is_empty(), "June's book left memory");
    assert_eq!(l.history().store().invoices("acme").unwrap().len(), 1);
    // A dispute of a June verdict, in July: found in the history, credited in July.
    l.add_billing(opened("d1", "c1", "2026-07-03T00:00:00Z"));
    l.add_billing(accepted("d2", "c1", "2026-07-04T00:00:00Z"));
    // The same verdict decided again in July (its conversation started anew): not charged.
    l.add_verdict(verdict("c2", true, "1.50", "2026-07-05T00:00:00Z"));
    l.add_verdict(verdict("new", true, "0.50", "2026-07-05T00:00:00Z"));
    l.advance(t("2026-07-10T00:00:00Z"));
    let inv = l.invoices("acme", t("2026-07-10T00:00:00Z")).unwrap();
    expect(&inv[0], &[("usage", 3, "4.50")], "4.50");
    expect(&inv[1], &[("usage", 1, "0.50"), ("dispute_credit", 1, "-1.50")], "0.00");
    assert_eq!(inv[1].prepaid_balance.to_string(), "1.00", "the negative total goes to the balance");
    // The June line's verdicts, paged from the history.
    let (n, page) =
        l.line_verdicts("acme", "2026-06".parse().unwrap(), 0, 1, 5, t("2026-07-10T00:00:00Z")).unwrap().unwrap();
    assert_eq!((n, page.len()), (3, 2));
    let all = l.all_invoices(t("2026-07-10T00:00:00Z")).unwrap();
    assert_eq!(all[0].lines[0].verdicts.len(), 3, "the whole list for `verdict invoice`");
}

#[test]
fn statements_and_totals_read_open_and_closed_periods_alike() {
    use super::statement::Day;
    let mut l = ledger(
        "[plans.growth]\nincluded = { ai_resolution = 1 }\noverage = { ai_resolution = \"0.75\" }\n\
         [tenants.acme]\nassignments = [ { plan = \"growth\", from = \"2026-06\" } ]\n",
    );
    l.add_verdict(verdict("a", true, "1.00", "2026-06-12T09:00:00Z"));
    l.add_verdict(verdict("b", true, "1.00", "2026-06-12T23:59:59Z"));
    l.add_verdict(verdict("c", false, "0", "2026-06-12T12:00:00Z"));
    l.add_verdict(verdict("d", true, "1.00", "2026-06-13T00:00:00Z"));
    l.add_billing(opened("d1", "b", "2026-06-13T01:00:00Z"));
    l.add_billing(accepted("d2", "b", "2026-06-14T01:00:00Z"));
    let day = |s: &str| s.parse::<Day>().unwrap();
    let check = |l: &Ledger, wm: &str| {
        let s = l.statement("acme", day("2026-06-12"), t(wm)).unwrap();
        let got: Vec<(&str, String)> = s.charges.iter().map(|c| (c.verdict_id.as_str(), c.price.to_string())).collect();
        let (a, b) = (verdict_id("acme", "a", OUTCOME), verdict_id("acme", "b", OUTCOME));
        assert_eq!(
            got,
            vec![(a.as_str(), "0".to_string()), (b.as_str(), "0.75".to_string())],
            "the included one first"
        );
        assert_eq!((s.charged.to_string(), s.credited.to_string(), s.complete), ("0.75".into(), "0".into(), true));
        let s = l.statement("acme", day("2026-06-14"), t(wm)).unwrap();
        assert_eq!((s.charges.len(), s.total.to_string()), (0, "-0.75".into()), "the credit on the day of the accept");
        assert_eq!(s.credits[0].verdict_id, b);
    };
    l.advance(t("2026-06-20T00:00:00Z"));
    check(&l, "2026-06-20T00:00:00Z");
    let open = l.take_charged();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].2.charges, open[0].2.charged.to_string(), open[0].2.credited.to_string()),
        (3, "1.50".into(), "0.75".into())
    );
    assert!(!l.statement("acme", day("2026-06-19"), t("2026-06-19T12:00:00Z")).unwrap().complete);
    // June closes: the same answers, now from the history, and its totals final.
    l.advance(t("2026-07-01T00:00:00Z"));
    assert!(l.books["acme"].periods.is_empty());
    check(&l, "2026-07-01T00:00:00Z");
    let closed = l.take_charged();
    assert_eq!(closed.iter().map(|c| &c.2).collect::<Vec<_>>(), vec![&open[0].2]);
    assert_eq!(l.history().store().totals().unwrap()[0].2, open[0].2);
}

#[test]
fn a_restored_ledger_counts_its_lines_again_and_goes_on() {
    let mut l = ledger("[plans.p]\nincluded = { ai_resolution = 2 }\noverage = { ai_resolution = \"0.75\" }\n[tenants.acme]\nassignments = [{ plan = \"p\", from = \"2026-06\" }]\n");
    june(&mut l, "a", 3, "0.50");
    l.add_verdict(verdict("u", true, "2.00", "2026-06-12T11:00:00Z"));
    l.advance(t("2026-06-13T00:00:00Z"));
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(l.state(), cfg).unwrap();
    let (snap, _): (super::LedgerSnapshot, _) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
    let mut back = Ledger::restore(Arc::new(l.plans().clone()), "USD", snap, History::in_memory().unwrap()).unwrap();
    for l in [&mut l, &mut back] {
        june(l, "b", 2, "0.50");
        l.advance(t("2026-06-14T00:00:00Z"));
    }
    let wm = t("2026-06-14T00:00:00Z");
    let (a, b) = (l.invoices("acme", wm).unwrap(), back.invoices("acme", wm).unwrap());
    assert_eq!(a, b);
    // 2 included, then 3 over at 0.75 (a2, b0, b1); `u` is over the allowance too.
    expect(&b[0], &[("included", 2, "0.00"), ("overage", 4, "3.00")], "3.00");
}

#[test]
fn credits_given_are_handed_out_once_in_the_order_given() {
    let mut l = ledger("");
    l.track_credits();
    june(&mut l, "p", 3, "1.50");
    for (i, conv) in ["p0", "p2"].iter().enumerate() {
        l.add_billing(opened(&format!("o{i}"), conv, "2026-06-13T09:00:00Z"));
        l.add_billing(accepted(&format!("a{i}"), conv, &format!("2026-06-14T0{i}:00:00Z")));
    }
    // A second accept of the same verdict credits nothing more.
    l.add_billing(accepted("again", "p0", "2026-06-15T00:00:00Z"));
    l.advance(t("2026-06-14T00:30:00Z"));
    let first = l.take_credits();
    assert_eq!(first.len(), 1, "only the accept before the watermark is rated");
    assert_eq!((first[0].0.as_str(), first[0].1.verdict_id.clone()), ("acme", verdict_id("acme", "p0", OUTCOME)));
    assert_eq!(first[0].1.amount, d("1.50"));
    assert!(l.take_credits().is_empty(), "handed out once");
    l.finish(t("2026-06-30T00:00:00Z"));
    let rest: Vec<String> = l.take_credits().into_iter().map(|(_, c)| c.verdict_id).collect();
    assert_eq!(rest, [verdict_id("acme", "p2", OUTCOME)]);
}
