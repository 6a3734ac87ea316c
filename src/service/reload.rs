//! Hot reload of outcome definitions and prices: on file change (debounced), on SIGHUP
//! and on `POST /v1/rules/reload`. A candidate is compiled and its fixtures run off the
//! worker thread; only a candidate that passes is sent to the worker, which swaps it in
//! between two log entries. A rejected edit leaves the running rules in place, and
//! `GET /v1/rules` and `verdict_rules_last_reload_success` show why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::shared::{ActiveOutcome, ReloadResult, RuleStatus, Shared};
use super::worker::Control;
use crate::rules::{fixtures, RuleSet};
use crate::telemetry;
use crate::timestamp::{format_rfc3339, now};

pub struct Reloader {
    pub dir: PathBuf,
    pub rhai: Arc<rhai::Engine>,
    pub shared: Arc<Shared>,
    pub worker: Sender<Control>,
    /// The rules in force; also serialises reloads.
    current: Mutex<Arc<RuleSet>>,
}

/// Compiles a rules directory and runs its fixtures: what every reload must pass.
pub fn load_checked(rhai: &Arc<rhai::Engine>, dir: &Path) -> Result<Arc<RuleSet>, String> {
    let rules = Arc::new(RuleSet::load(rhai, dir).map_err(|e| e.to_string())?);
    let results = fixtures::run_all(rhai, &rules).map_err(|e| e.to_string())?;
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}: fixture {:?} fails: {}", r.file.display(), r.name, r.failures.join("; ")))
        .collect();
    if !failed.is_empty() {
        return Err(failed.join("\n"));
    }
    Ok(rules)
}

fn same(a: &RuleSet, b: &RuleSet) -> bool {
    a.prices_version == b.prices_version
        && a.plans_version == b.plans_version
        && a.outcomes.len() == b.outcomes.len()
        && a.outcomes.iter().zip(&b.outcomes).all(|(x, y)| x.name == y.name && x.version == y.version)
}

pub fn status_of(rules: &RuleSet, last: Option<ReloadResult>, loaded_at: Option<String>) -> RuleStatus {
    RuleStatus {
        dir: rules.dir.display().to_string(),
        outcomes: rules
            .outcomes
            .iter()
            .map(|o| ActiveOutcome {
                name: o.name.clone(),
                file: o.path.display().to_string(),
                version: o.version.clone(),
            })
            .collect(),
        loaded_at,
        last_reload: last,
    }
}

impl Reloader {
    pub fn new(
        dir: PathBuf,
        rhai: Arc<rhai::Engine>,
        rules: Arc<RuleSet>,
        shared: Arc<Shared>,
        worker: Sender<Control>,
    ) -> Self {
        let at = format_rfc3339(now());
        let startup = ReloadResult { at: at.clone(), trigger: "startup".into(), result: "ok", error: None };
        shared.rules.store(Arc::new(status_of(&rules, Some(startup), Some(at))));
        shared.plans.store(rules.plans.clone());
        metrics::gauge!(telemetry::RULES_OK).set(1.0);
        Reloader { dir, rhai, shared, worker, current: Mutex::new(rules) }
    }

    /// Loads, checks and (if it passes and differs) swaps in the rules directory. It
    /// runs to its end even if the caller goes away (a dropped HTTP request), so the
    /// status always says what the worker runs.
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> ReloadResult {
        let (this, why) = (self.clone(), trigger.to_string());
        tokio::spawn(async move { this.reload_now(&why).await }).await.unwrap_or_else(|e| ReloadResult {
            at: format_rfc3339(now()),
            trigger: trigger.into(),
            result: "rejected",
            error: Some(format!("the reload task failed: {e}")),
        })
    }

    async fn reload_now(&self, trigger: &str) -> ReloadResult {
        let mut current = self.current.lock().await;
        let (rhai, dir) = (self.rhai.clone(), self.dir.clone());
        let candidate = tokio::task::spawn_blocking(move || load_checked(&rhai, &dir))
            .await
            .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
        let at = format_rfc3339(now());
        let mut loaded_at = self.shared.rules.load().loaded_at.clone();
        let candidate = match candidate {
            Ok(rules) if same(&rules, &current) => {
                metrics::gauge!(telemetry::RULES_OK).set(1.0);
                let result = ReloadResult { at, trigger: trigger.into(), result: "unchanged", error: None };
                self.shared.rules.store(Arc::new(status_of(&current, Some(result.clone()), loaded_at)));
                return result;
            }
            // The worker has the last word: plans may not change a closed period. "ok" is
            // answered once it has the rules, so events taken in after it are classified
            // by them.
            Ok(rules) => {
                let (ack, taken) = oneshot::channel();
                match self.worker.send(Control::SetRules(rules.clone(), ack)) {
                    Err(_) => Err("the worker stopped".to_string()),
                    Ok(()) => match taken.await {
                        Ok(Ok(())) => Ok(rules),
                        Ok(Err(why)) => Err(why),
                        Err(_) => Err("the worker stopped".to_string()),
                    },
                }
            }
            Err(e) => Err(e),
        };
        let result = match candidate {
            Err(error) => {
                tracing::error!("rules reload ({trigger}) rejected; the previous rules keep running:\n{error}");
                metrics::counter!(telemetry::RELOADS, "result" => "failed").increment(1);
                metrics::gauge!(telemetry::RULES_OK).set(0.0);
                ReloadResult { at, trigger: trigger.into(), result: "rejected", error: Some(error) }
            }
            Ok(rules) => {
                tracing::info!(
                    "rules reloaded ({trigger}): {}",
                    rules.outcomes.iter().map(|o| format!("{} {}", o.name, o.version)).collect::<Vec<_>>().join(", ")
                );
                metrics::counter!(telemetry::RELOADS, "result" => "ok").increment(1);
                metrics::gauge!(telemetry::RULES_OK).set(1.0);
                self.shared.plans.store(rules.plans.clone());
                *current = rules;
                loaded_at = Some(at.clone());
                ReloadResult { at, trigger: trigger.into(), result: "ok", error: None }
            }
        };
        self.shared.rules.store(Arc::new(status_of(&current, Some(result.clone()), loaded_at)));
        result
    }

    /// Reloads after file changes in the rules directory settle for `debounce`.
    pub async fn watch(self: Arc<Self>, debounce: Duration) -> anyhow::Result<()> {
        use notify::{RecursiveMode, Watcher};
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })?;
        watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
        while rx.recv().await.is_some() {
            // Editors write in several steps: wait until the directory is quiet.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return Ok(()),
                    Err(_) => break,
                }
            }
            self.reload("file change").await;
        }
        Ok(())
    }
}
