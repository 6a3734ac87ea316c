//! `verdict run`: the long-running service. Sources (HTTP, followed files, stdin,
//! Fluvio partitions, the wall clock) hand input to the sequencer, which makes it
//! durable in the write-ahead log and passes it to the worker, which owns the engine
//! and writes verdicts; sinks ship the verdict and dead-letter files to Fluvio; HTTP
//! serves usage, audit and admin views from what the worker publishes.
//!
//! Startup recovers first (newest good checkpoint, outputs cut back to it, the log
//! replayed after it), then opens intake. Shutdown closes intake, lets the log drain
//! through the worker, and writes a final checkpoint.

pub mod config;
mod dispute_api;
pub mod http;
pub mod input;
pub mod partitions;
pub mod recovery;
pub mod reload;
pub mod sequencer;
pub mod shared;
pub mod sources;
pub mod worker;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;

use crate::engine::EngineConfig;
use crate::rules::{sandbox, Limits};
use crate::sinks::fluvio::{FileSink, KeyField};
use crate::sinks::push::PushSink;
use crate::statedir::StateDir;
use crate::wal::Wal;
pub use config::RunConfig;
use recovery::{Policy, Problem};
use shared::Shared;
use worker::{LiveTime, OutputFile, Worker};

/// How many inputs may wait for the sequencer; past it HTTP answers 503.
const LOG_QUEUE: usize = 1024;
/// How many logged inputs may wait for the worker.
const WORKER_QUEUE: usize = 1024;

/// Runs the service until SIGTERM or Ctrl-C.
pub fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("verdict-io").build()?;
    runtime.block_on(serve(cfg))
}

async fn serve(cfg: RunConfig) -> anyhow::Result<()> {
    let metrics = crate::telemetry::install()?;
    let state_dir = cfg.state_dir();
    // Before anything in the directory is touched: one process per state directory.
    let mut dir = StateDir::lock(&state_dir, "verdict run")?;
    let policy = Policy { accept_loss: cfg.accept_loss() };
    let rules_dir = cfg.rules();
    let rhai = Arc::new(sandbox::build(&Limits::default()));
    let rules = {
        let (rhai, dir) = (rhai.clone(), rules_dir.clone());
        tokio::task::spawn_blocking(move || reload::load_checked(&rhai, &dir))
            .await?
            .map_err(|e| anyhow::anyhow!("rules in {} do not load:\n{e}", rules_dir.display()))?
    };

    let shared = Arc::new(Shared::new(cfg.output(), cfg.max_backlog_bytes()));
    shared.plans.store(rules.plans.clone());
    let wal_dir = state_dir.join("wal");
    let (mut wal, cut) = match Wal::open(&wal_dir, cfg.wal_segment_bytes(), policy.accept_loss) {
        Err(e @ crate::wal::WalError::Damaged { .. }) => {
            let way_out = "restore the log from a copy, or move the state directory aside and rebuild from the \
                           sources; --accept-loss cuts the log at the damage, and the input after it is lost";
            policy.found(Problem::LogDamaged, &e.to_string(), way_out)?;
            return Err(e.into());
        }
        other => other.with_context(|| format!("cannot open the write-ahead log in {}", wal_dir.display()))?,
    };
    if let Some(damage) = &cut.damaged {
        policy.found(Problem::LogDamaged, damage, "")?;
    } else if let Some((segment, at)) = &cut.cut_at {
        let what = format!(
            "cut a torn last entry of {} bytes (never acknowledged) from {} at byte {at}",
            cut.truncated_bytes,
            segment.display()
        );
        policy.found(Problem::TornTail, &what, "")?;
    }
    let engine_cfg = EngineConfig { lateness: cfg.lateness(), retain_decided: cfg.retain_decided() };
    let live = LiveTime {
        wall_clock: cfg.wall_clock(),
        idle_timeout: cfg.idle_timeout(),
        delivery: cfg.delivery_allowance(),
        max_future_skew: cfg.reject_future().then(|| cfg.max_future_skew()),
    };
    let started = std::time::Instant::now();
    let (mut worker, recovered, wal, mut dir) = {
        let (rhai, rules, shared, live_at_start) = (rhai.clone(), rules.clone(), shared.clone(), live.clone());
        let (out, dead, credits) = (cfg.output(), cfg.dead_letter(), cfg.credit_log());
        tokio::task::spawn_blocking(move || {
            let files = [out.as_path(), dead.as_path(), credits.as_path()];
            Worker::recover(engine_cfg, live_at_start, rhai, rules, shared, &mut dir, files, &mut wal, policy)
                .map(|(w, r)| (w, r, wal, dir))
        })
        .await??
    };
    // Sinks start where the checkpoint says they were acknowledged.
    let (sink_stop, sink_stopped) = tokio::sync::watch::channel(false);
    let mut sink_tasks = Vec::new();
    let sinks = [
        ("verdicts", cfg.fluvio_verdict_topic.clone(), cfg.output(), KeyField::Tenant, OutputFile::Verdicts),
        (
            "dead_letters",
            cfg.fluvio_dead_letter_topic.clone(),
            cfg.dead_letter(),
            KeyField::Source,
            OutputFile::DeadLetters,
        ),
    ];
    let mut progress = |name: &str, file: OutputFile| {
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(worker.sink_start(name, worker.output_len(file))));
        worker.add_sink(worker::SinkProgress { name: name.into(), acked: acked.clone(), file });
        acked
    };
    for (name, topic, path, key, file) in sinks {
        let Some(topic) = topic else { continue };
        let acked = progress(name, file);
        let sink = FileSink { name: name.into(), path, topic, key, acked };
        sink_tasks.push(tokio::spawn(sink.run(cfg.fluvio_endpoint(), sink_stopped.clone())));
    }
    if let Some(url) = cfg.push_url.clone() {
        let (acked, credits_acked) =
            (progress("push", OutputFile::Verdicts), progress("push_credits", OutputFile::Credits));
        let plans_of = shared.clone();
        let sink = PushSink {
            path: cfg.output(),
            credits_path: cfg.credit_log(),
            credits_acked,
            rejected_path: cfg.state_dir().join("push-rejected.ndjson"),
            platform: cfg.push_platform(),
            url: url.trim_end_matches('/').to_string(),
            token: cfg.push_token(),
            plans: Arc::new(move || plans_of.plans.load_full()),
            acked,
        };
        let stopped = sink_stopped.clone();
        sink_tasks.push(tokio::task::spawn_blocking(move || sink.run(stopped)));
    }
    // A checkpoint right after recovery: the next restart replays nothing twice. A new
    // state directory gets one too, before any input: it pins the output files' lengths,
    // so a crash before the first periodic checkpoint cuts what the lost run wrote
    // instead of writing it again.
    if recovered.replayed_entries > 0 || recovered.checkpoint.is_none() {
        worker.checkpoint().context("the checkpoint after recovery")?;
    }
    tracing::info!(
        "recovered in {:.3}s: checkpoint {:?}, {} log entries replayed, {} output bytes cut, {} checkpoint(s) rejected",
        started.elapsed().as_secs_f64(),
        recovered.checkpoint,
        recovered.replayed_entries,
        recovered.output_cut,
        recovered.rejected_checkpoints.len()
    );
    let positions = worker.sources().clone();
    let sources_at_start = sources_in_force(&cfg, &live, &worker.source_names());

    let (log_tx, log_rx) = crossbeam_channel::bounded(LOG_QUEUE);
    let (logged_tx, logged_rx) = crossbeam_channel::bounded(WORKER_QUEUE);
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    let every = cfg.checkpoint_interval().as_std();
    let worker_thread = {
        let shared = shared.clone();
        std::thread::Builder::new().name("verdict-worker".into()).spawn(move || {
            let r = worker.run(logged_rx, control_rx, every);
            fatal_if_err(&shared, "the worker", &r);
            r
        })?
    };
    let sequencer_thread = {
        let shared = shared.clone();
        std::thread::Builder::new().name("verdict-log".into()).spawn(move || {
            let r = sequencer::run(wal, log_rx, logged_tx, shared.clone());
            fatal_if_err(&shared, "the write-ahead log", &r);
            r
        })?
    };

    let reloader = Arc::new(reload::Reloader::new(rules_dir, rhai, rules, shared.clone(), control_tx.clone()));
    if cfg.watch_rules() {
        let (r, debounce) = (reloader.clone(), cfg.reload_debounce().as_std());
        tokio::spawn(async move {
            if let Err(e) = r.watch(debounce).await {
                tracing::error!(
                    "cannot watch the rules directory for edits: {e:#} (SIGHUP and POST /v1/rules/reload still work)"
                );
            }
        });
    }
    {
        let r = reloader.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                r.reload("SIGHUP").await;
            }
        });
    }

    // First in the log after recovery, before any source or clock starts: every source
    // starts over as not caught up, so the backlog of the downtime is applied in event
    // time; sources no longer configured stop holding the watermark back.
    // Error counters of every source exist from the start, at zero.
    for src in &sources_at_start.sources {
        metrics::counter!(crate::telemetry::SOURCE_ERRORS, "source" => src.name.clone()).increment(0);
    }
    let _ = log_tx.send(sequencer::Append::new(input::Input::Sources(sources_at_start), None, &shared));
    let stop = sources::Stop::default();
    let mut source_threads = Vec::new();
    for input in cfg.inputs() {
        let handle = if input == "-" {
            sources::spawn_stdin(log_tx.clone(), shared.clone(), stop.clone())?
        } else {
            let start = match positions.get(&input) {
                Some(input::Resume::File(p)) => Some(p.clone()),
                _ => None,
            };
            sources::spawn_follower(input.clone(), start, log_tx.clone(), shared.clone(), stop.clone())?
        };
        source_threads.push(handle);
    }
    let fluvio_source = cfg.fluvio_topic.clone().map(|topic| {
        let input = partitions::FluvioInput {
            endpoint: cfg.fluvio_endpoint(),
            topic,
            partitions: cfg.fluvio_partitions(),
            start: cfg.fluvio_start(),
            quiet: cfg.idle_timeout().0,
        };
        partitions::spawn_fluvio(input, &positions, log_tx.clone(), shared.clone(), stop.clone())
    });
    // Ticks run with the wall clock off too: they notice sources going quiet.
    let clock = sources::spawn_clock(cfg.tick_interval(), log_tx.clone(), shared.clone());

    let api = http::Api {
        shared: shared.clone(),
        log: cfg.http_ingest().then(|| log_tx.clone()),
        worker: control_tx.clone(),
        reloader,
        metrics: metrics.clone(),
        token: cfg.token().map(Into::into),
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen())
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen()))?;
    let max_body = usize::try_from(cfg.max_body_bytes()).unwrap_or(usize::MAX);
    dir.set_listen(listener.local_addr()?.to_string())?;
    shared.ready.store(true, Ordering::Release);
    tracing::info!("listening on http://{}", listener.local_addr()?);
    // One write, so a reader of the log never sees half the address.
    let line = format!("verdict: listening on http://{}\n", listener.local_addr()?);
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    let upkeep = {
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                m.run_upkeep();
            }
        })
    };

    let shutdown = {
        let shared = shared.clone();
        async move {
            tokio::select! {
                _ = wait_for_signal() => {}
                _ = shared.fatal.notified() => {}
            }
            tracing::info!("shutting down: closing intake, draining, checkpointing");
            shared.ready.store(false, Ordering::Release);
        }
    };
    let server = axum::serve(listener, http::router(api, max_body)).with_graceful_shutdown(shutdown);
    // The worker or sequencer stopping on an error is fatal too.
    let served = server.await;
    stop.stop();
    upkeep.abort();
    for t in source_threads {
        let _ = t.join();
    }
    if let Some(f) = fluvio_source {
        let _ = f.await;
    }
    clock.abort();
    let _ = clock.await;
    // Decide what the wall clock has made due before the last checkpoint.
    let tick = input::Input::Tick { now: crate::timestamp::now() };
    let _ = log_tx.send(sequencer::Append::new(tick, None, &shared));
    drop(log_tx);
    drop(control_tx);
    let seq = sequencer_thread.join().map_err(|_| anyhow::anyhow!("the log thread panicked"))?;
    let work = worker_thread.join().map_err(|_| anyhow::anyhow!("the worker thread panicked"))?;
    // The worker waited for the sinks before its last checkpoint; now they may stop.
    let _ = sink_stop.send(true);
    for t in sink_tasks {
        let _ = t.await;
    }
    served.context("the HTTP server failed")?;
    seq.context("the write-ahead log")?;
    work.context("the worker")?;
    eprintln!("verdict: stopped cleanly");
    Ok(())
}

/// The sources of this run, as logged at its start: each followed file and stdin; HTTP
/// if it is on and has delivered before (so a retry of what was posted during the
/// downtime is not late, while a deployment that never posts is not held back); the
/// Fluvio topic, as itself until it knows its partitions, and the partitions it owned.
/// With them, the live-time settings of the run.
fn sources_in_force(cfg: &RunConfig, live: &LiveTime, known: &[String]) -> input::SourceSet {
    let now = crate::timestamp::now();
    let idle = live.idle_timeout.0;
    let start = |name: String, quiet, caught_up| input::SourceStart { name, quiet, caught_up };
    let mut sources = Vec::new();
    for path in cfg.inputs() {
        // stdin is a new stream on every start: nothing of it is behind.
        let stdin = path == "-";
        sources.push(start(if stdin { "stdin".into() } else { path }, idle, stdin));
    }
    if cfg.http_ingest() && known.iter().any(|n| n == input::HTTP_SOURCE) {
        sources.push(start(input::HTTP_SOURCE.into(), live.delivery.0, true));
    }
    if let Some(topic) = &cfg.fluvio_topic {
        let topic = crate::sources::fluvio::topic_source(topic);
        let scope = input::SourceSet { now, scope: Some(topic.clone()), sources: Vec::new(), live: None };
        for name in known.iter().filter(|n| scope.in_scope(n) && **n != topic).chain([&topic]) {
            sources.push(start(name.clone(), idle, false));
        }
    }
    let settings = input::LiveSettings {
        wall_clock: live.wall_clock,
        idle_timeout: idle,
        delivery: live.delivery.0,
        max_future_skew: live.max_future_skew.map(|s| s.0),
    };
    input::SourceSet { now, scope: None, sources, live: Some(settings) }
}

fn fatal_if_err(shared: &Shared, what: &str, r: &anyhow::Result<()>) {
    if let Err(e) = r {
        tracing::error!("{what} failed, stopping: {e:#}");
        eprintln!("verdict: {what} failed, stopping: {e:#}");
        shared.ready.store(false, Ordering::Release);
        shared.fatal.notify_one();
    }
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
