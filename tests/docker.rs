//! The docker/ deployment, checked as far as a machine without a container engine
//! allows: Prometheus' config and alert rules pass `promtool check` and the alert unit
//! tests, the Grafana dashboard is valid JSON, every metric the dashboard and the alerts
//! use is exported by a running service, the container's config loads, the files the
//! Dockerfile copies exist, and the health check command works.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn docker() -> std::path::PathBuf {
    common::root().join("docker")
}

/// Runs promtool; `None` (with a plain message) where it is not installed outside CI.
fn promtool(args: &[&str], dir: &Path) -> Option<String> {
    let out = match Command::new("promtool").args(args).current_dir(dir).output() {
        Ok(o) => o,
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is missing in CI (.ci/run installs Debian's prometheus)"
            );
            eprintln!("SKIPPED promtool {args:?}: promtool is not installed (apt-get install prometheus)");
            return None;
        }
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Some(text)
}

#[test]
fn prometheus_config_and_alerts_pass_promtool() {
    let dir = docker().join("prometheus");
    if let Some(t) = promtool(&["check", "config", "prometheus.yml"], &dir) {
        assert!(t.contains("SUCCESS: 1 rule files found"), "{t}");
    }
    if let Some(t) = promtool(&["check", "rules", "alerts.yml"], &dir) {
        assert!(t.contains("SUCCESS: 9 rules found"), "{t}");
    }
    promtool(&["test", "rules", "alerts_test.yml"], &dir);
}

/// Metric names in a PromQL expression (verdict's all start with `verdict_`).
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(i) = rest.find("verdict_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        into.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(docker().join("grafana/dashboards/verdict.json")).unwrap())
            .expect("the dashboard is valid JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
        assert!(!targets.is_empty(), "panel {} has no queries", p["title"]);
        for t in targets {
            metric_names(t["expr"].as_str().expect("expr"), &mut used);
        }
    }
    let titles: String = panels.iter().map(|p| p["title"].as_str().unwrap_or("").to_lowercase()).collect();
    for wanted in [
        "spend per tenant",
        "reason",
        "tier",
        "rejected",
        "watermark lag",
        "reloads",
        "charged this period",
        "credits this period",
        "open invoice totals",
        "prepaid balance",
    ] {
        assert!(titles.contains(wanted), "the dashboard shows no {wanted:?} panel");
    }
    let alerts = std::fs::read_to_string(docker().join("prometheus/alerts.yml")).unwrap();
    for line in alerts.lines().filter(|l| !l.trim_start().starts_with('#')) {
        metric_names(line, &mut used);
    }
    assert!(used.len() >= 15, "{used:?}");

    let (mut svc, text) = common::exercised_metrics();
    let exported: BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    for name in &used {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| exported.contains(f)))
            .unwrap_or(name);
        assert!(exported.contains(family), "{name} is used by docker/ but not exported; exported: {exported:?}");
    }
    assert_eq!(svc.stop(), Some(0));
}

#[test]
fn the_container_config_loads_and_the_dockerfile_inputs_exist() {
    let cfg = verdict::service::RunConfig::from_file(&docker().join("verdict.toml")).unwrap();
    assert_eq!(cfg.listen().port(), 8480);
    assert_eq!(cfg.fluvio_topic.as_deref(), Some("conversation-events"));
    let dockerfile = std::fs::read_to_string(docker().join("Dockerfile")).unwrap();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let words: Vec<&str> = line.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        for src in &words[1..words.len() - 1] {
            assert!(common::root().join(src).exists(), "the Dockerfile copies {src}, which does not exist");
        }
    }
    assert!(dockerfile.contains("USER nonroot") && dockerfile.contains("HEALTHCHECK"));
    let compose = std::fs::read_to_string(docker().join("compose.yaml")).unwrap();
    for service in ["sc:", "spu:", "verdict:", "prometheus:", "grafana:"] {
        assert!(compose.contains(&format!("\n  {service}")), "compose.yaml has no {service} service");
    }
}

#[test]
fn the_health_check_command_probes_a_running_service() {
    let mut svc = common::Service::start(&[]);
    let probe = |addr: &str, path: &str| {
        Command::new(env!("CARGO_BIN_EXE_verdict"))
            .args(["probe", addr, path, "--timeout", "20s"])
            .status()
            .unwrap()
            .success()
    };
    let addr = format!("127.0.0.1:{}", svc.port);
    assert!(probe(&addr, "/healthz"));
    assert!(probe(&addr, "/readyz"));
    assert!(!probe(&addr, "/no-such-route"));
    assert_eq!(svc.stop(), Some(0));
    assert!(!probe(&addr, "/healthz"), "nothing listens any more");
}
