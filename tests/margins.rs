//! The margin view on the real binary: per tenant and period, what was charged, credited
//! and spent, the margin against the plan's floor, cost by model with the prompt-cache
//! hit rate, and the costliest conversations, computed here by hand; the same after a
//! SIGKILL and a restart; and the margin gauges.

mod common;

use common::Service;
use serde_json::{json, Value};

use common::acme::event;

fn stream() -> String {
    let call = |model: &str, cost: &str, input: Option<u64>, cached: Option<u64>| {
        let mut a = json!({"model": model, "cost_usd": cost, "output_tokens": 50});
        if let Some(i) = input {
            a["input_tokens"] = json!(i);
        }
        if let Some(c) = cached {
            a["cache_read_tokens"] = json!(c);
        }
        a
    };
    [
        event("1s", "conversation.started", "c1", 0, json!({"intent": "faq"})),
        event("2s", "conversation.started", "c2", 0, json!({"intent": "faq"})),
        event("3s", "conversation.started", "c3", 0, json!({"intent": "faq"})),
        event("1a", "message.ai", "c1", 10, json!({})),
        event("2a", "message.ai", "c2", 10, json!({})),
        event("3a", "message.ai", "c3", 10, json!({})),
        event("1l", "llm.call", "c1", 20, call("big", "0.30", Some(1000), Some(400))),
        event("1m", "llm.call", "c1", 21, call("small", "0.02", Some(100), None)),
        event("2l", "llm.call", "c2", 22, call("big", "0.10", Some(500), Some(100))),
        event("2t", "tool.called", "c2", 23, json!({"cost_usd": "0.05"})),
        event("3l", "llm.call", "c3", 24, call("small", "0.01", None, None)),
        event("1e", "resolution.confirmed", "c1", 60, json!({})),
        event("2e", "resolution.confirmed", "c2", 60, json!({})),
        event("3e", "escalated", "c3", 60, json!({})),
        event("tick", "message.customer", "tick", 30 * 3600, json!({})),
    ]
    .join("\n")
}

fn d(v: &Value) -> rust_decimal::Decimal {
    v.as_str().unwrap_or_else(|| panic!("not a decimal string: {v}")).parse().unwrap()
}

fn check(m: &Value) {
    // Two resolutions at 0.50 charged, nothing credited; cost 0.32 + 0.15 + 0.01.
    assert_eq!(
        (d(&m["charged"]), d(&m["credited"]), d(&m["cost"])),
        ("1.00".parse().unwrap(), 0.into(), "0.48".parse().unwrap()),
        "{m:#}"
    );
    assert_eq!((d(&m["margin"]), d(&m["margin_ratio"])), ("0.52".parse().unwrap(), "0.52".parse().unwrap()), "{m:#}");
    assert_eq!((d(&m["margin_floor"]), m["below_floor"].as_bool()), ("0.90".parse().unwrap(), Some(true)));
    assert_eq!(m["invoice"], "draft");
    let o = &m["outcomes"][0];
    assert_eq!((o["outcome"].as_str(), o["billable"].as_u64()), (Some("ai_resolution"), Some(2)));
    assert_eq!(
        (d(&o["charged"]), d(&o["cost"]), d(&o["margin"])),
        ("1.00".parse().unwrap(), "0.48".parse().unwrap(), "0.52".parse().unwrap())
    );
    // big: c1 and c2, 500 of 1500 input tokens from the cache. small: c1 and c3, and no
    // call gave both counts, so no hit rate. The tool call's 0.05 is no model's.
    let models = m["models"].as_array().unwrap();
    let big = models.iter().find(|x| x["model"] == "big").unwrap();
    assert_eq!(
        (big["conversations"].as_u64(), big["calls"].as_u64(), d(&big["cost"])),
        (Some(2), Some(2), "0.40".parse().unwrap())
    );
    assert_eq!((big["input_tokens"].as_u64(), big["cache_read_tokens"].as_u64()), (Some(1500), Some(500)));
    assert_eq!(d(&big["cache_hit_rate"]), "0.3333".parse().unwrap());
    let small = models.iter().find(|x| x["model"] == "small").unwrap();
    assert_eq!(
        (small["conversations"].as_u64(), small["calls"].as_u64(), d(&small["cost"])),
        (Some(2), Some(2), "0.03".parse().unwrap())
    );
    assert_eq!(small["cache_hit_rate"], Value::Null);
    assert_eq!(models.len(), 2, "{models:?}");
    let costliest: Vec<(&str, String)> = m["costliest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["conversation"].as_str().unwrap(), c["cost"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(costliest, [("c1", "0.32".to_string()), ("c2", "0.15".to_string()), ("c3", "0.01".to_string())]);
}

#[test]
fn margins_by_outcome_and_model_against_the_floor_survive_a_crash() {
    let mut svc = Service::start(&["--wall-clock", "false", "--reject-future", "false"]);
    // The operator gives acme a plan with a margin floor.
    let plans = "[plans.lean]\nmargin_floor = \"0.90\"\n\n[tenants.acme]\nassignments = [ { plan = \"lean\", from = \"2026-01\" } ]\n";
    std::fs::write(svc.state().parent().unwrap().join("rules/plans.toml"), plans).unwrap();
    let (s, r) = svc.post("/v1/rules/reload", "");
    assert_eq!(s, 200, "{r}");
    let (s, v) = svc.post("/v1/events", &stream());
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(15)), "{v}");
    let m = svc.wait_for("/v1/margins?tenant=acme&period=2026-06", |m| m["charged"] == "1.00");
    check(&m);
    let all = svc.get("/v1/margins?period=2026-06").1;
    let tenants: Vec<&str> = all.as_array().unwrap().iter().map(|m| m["tenant"].as_str().unwrap()).collect();
    assert_eq!(tenants, ["acme"], "every tenant with usage in June");
    check(&all[0]);
    let metrics = svc.wait_for_metric("verdict_margin_ratio{tenant=\"acme\"}", "0.52");
    assert!(metrics.contains("verdict_margin_floor{tenant=\"acme\"} 0.9"), "{metrics}");
    assert_eq!(svc.get("/v1/margins?tenant=acme&period=June").0, 400);

    svc.kill9();
    svc.spawn(&[]);
    check(&svc.get("/v1/margins?tenant=acme&period=2026-06").1);
    assert_eq!(svc.stop(), Some(0), "{}", svc.stderr());
}
