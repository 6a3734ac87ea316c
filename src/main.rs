//! The `verdict` command line: wires subcommands to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use verdict::replay::{self, ReplayOptions};
use verdict::rules::{fixtures, sandbox, Limits, RuleSet};
use verdict::timestamp::Span;

#[derive(Parser)]
#[command(name = "verdict", version, about = "Outcome metering: billable verdicts from AI support conversations")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay finite NDJSON inputs and write one verdict per decided conversation and outcome.
    Replay {
        /// Outcome definitions directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Verdict NDJSON output (default: stdout).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Dead-letter NDJSON output (default: stderr).
        #[arg(long)]
        dead_letter: Option<PathBuf>,
        /// Allowed lateness, like 5s.
        #[arg(long, default_value = "5s")]
        lateness: Span,
        /// Also write the summary as JSON here.
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Also write every invoice (all tenants and periods) here, as a JSON array.
        #[arg(long)]
        invoices: Option<PathBuf>,
        /// NDJSON inputs, read one after another; `-` is stdin.
        #[arg(required = true)]
        inputs: Vec<String>,
    },
    /// Replay events (conversation and billing) and write the invoices they give under the
    /// plans of the rules directory: final for closed periods, drafts for open ones.
    Invoice {
        /// Outcome definitions, prices and plans directory.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Allowed lateness, like 5s.
        #[arg(long, default_value = "5s")]
        lateness: Span,
        /// Only this tenant's invoices.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this period's invoices (YYYY-MM).
        #[arg(long)]
        period: Option<verdict::ledger::period::Period>,
        /// `json` (an array of SPEC 8.4 invoices) or `csv` (one row per line).
        #[arg(long, default_value = "json")]
        format: verdict::ledger::invoice::Format,
        /// Where to write them (default: stdout).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Dead-letter NDJSON output (default: stderr).
        #[arg(long)]
        dead_letter: Option<PathBuf>,
        /// Verdict NDJSON of a classifier instance (its `--output`), rated with the rest:
        /// give one per instance, with the billing events as INPUT, to invoice what
        /// several instances classified. Each verdict is charged once, by its id.
        /// Repeatable.
        #[arg(long = "verdicts")]
        verdicts: Vec<PathBuf>,
        /// With `--verdicts`: the least of the instances' watermarks (RFC 3339); the
        /// periods that ended by then are final. Default: the latest `decided_at`.
        #[arg(long, value_parser = parse_ts)]
        until: Option<verdict::timestamp::Nanos>,
        /// NDJSON inputs, read one after another; `-` is stdin.
        #[arg(required = true)]
        inputs: Vec<String>,
    },
    /// Replay events as `invoice` does and write the requests that send every billable
    /// verdict, and every credit's correction, to Orb, Metronome, Lago or Stripe: one
    /// NDJSON line per request (method, path, content type, idempotency keys, body).
    Export(Box<verdict::export::cli::ExportArgs>),
    /// Run the service: HTTP ingest and API, followed files, hot reload, checkpoints.
    Run(Box<verdict::service::RunConfig>),
    /// Compile the outcome definitions, prices and plans of a rules directory.
    Check {
        #[arg(default_value = "rules")]
        dir: PathBuf,
    },
    /// Run the fixtures of a rules directory.
    Test {
        #[arg(default_value = "rules")]
        dir: PathBuf,
    },
    /// Prepare a Fluvio cluster: register a custom SPU and create topics (each step is
    /// skipped when already done).
    FluvioSetup {
        /// The SC's public address.
        #[arg(long, default_value = "127.0.0.1:9003")]
        endpoint: String,
        /// Register a custom SPU with this id...
        #[arg(long, requires_all = ["spu_public", "spu_private"])]
        spu_id: Option<i32>,
        /// ...whose public address (for clients) is this host:port...
        #[arg(long)]
        spu_public: Option<String>,
        /// ...and private address (for the SC) this host:port.
        #[arg(long)]
        spu_private: Option<String>,
        /// A topic to create, as NAME:PARTITIONS. Repeatable.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Keep trying this long while the cluster is not up yet.
        #[arg(long, default_value = "60s")]
        wait: Span,
    },
    /// Check that a running service answers: exits 0 when GET http://ADDR/PATH gives 200
    /// (for container health checks, which have no curl).
    Probe {
        #[arg(default_value = "127.0.0.1:8480")]
        addr: String,
        #[arg(default_value = "/healthz")]
        path: String,
        /// How long the connection and the answer may take.
        #[arg(long, default_value = "2s")]
        timeout: Span,
    },
    /// Write a synthetic, seeded event stream.
    Gen {
        /// Output file (default: stdout).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Produce the events to this Fluvio topic instead (keyed by conversation),
        /// creating it if needed.
        #[arg(long, conflicts_with = "output")]
        fluvio_topic: Option<String>,
        /// The Fluvio cluster's SC address.
        #[arg(long, default_value = "127.0.0.1:9003")]
        fluvio_endpoint: String,
        /// Partitions of the topic when it has to be created.
        #[arg(long, default_value_t = 2)]
        fluvio_partitions: u32,
        #[command(flatten)]
        config: verdict::gen::GenConfig,
    },
}

/// mimalloc: the per-event path allocates little, but per-conversation state and
/// verdicts come and go all the time, and it measured 5% faster than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VERDICT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("verdict: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_rules(dir: &std::path::Path) -> anyhow::Result<(Arc<rhai::Engine>, Arc<RuleSet>)> {
    let rhai = Arc::new(sandbox::build(&Limits::default()));
    let rules =
        RuleSet::load(&rhai, dir).map_err(|e| anyhow::anyhow!("rules in {} do not load:\n{e}", dir.display()))?;
    Ok((rhai, Arc::new(rules)))
}

fn parse_ts(s: &str) -> Result<verdict::timestamp::Nanos, String> {
    verdict::timestamp::parse_rfc3339(s).map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Replay { rules, output, dead_letter, lateness, summary, invoices, inputs } => {
            let started = std::time::Instant::now();
            let opts = ReplayOptions {
                rules,
                output,
                write_verdicts: true,
                dead_letter,
                summary,
                lateness,
                limits: Limits::default(),
                inputs,
                verdicts: Vec::new(),
                until: None,
            };
            let replayed = replay::run(&opts)?;
            if let Some(path) = invoices {
                let all = replayed.invoices()?;
                verdict::ledger::invoice::write(&all, verdict::ledger::invoice::Format::Json, Some(&path))?;
            }
            let s = replayed.summary;
            let secs = started.elapsed().as_secs_f64();
            eprint!("{}", s.render());
            eprintln!(
                "replayed {} records in {:.3}s ({:.0} records/s)",
                s.records,
                secs,
                s.records as f64 / secs.max(1e-9)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Invoice { rules, lateness, tenant, period, format, output, dead_letter, verdicts, until, inputs } => {
            let opts =
                ReplayOptions { verdicts, until, ..ReplayOptions::billing(rules, lateness, dead_letter, inputs) };
            let replayed = replay::run(&opts)?;
            let invoices: Vec<_> = replayed
                .invoices()?
                .into_iter()
                .filter(|i| tenant.as_ref().is_none_or(|t| &i.tenant == t))
                .filter(|i| period.is_none_or(|p| i.period == p.to_string()))
                .collect();
            verdict::ledger::invoice::write(&invoices, format, output.as_deref())?;
            eprintln!("{} invoice(s) from {} records", invoices.len(), replayed.summary.records);
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => {
            let done = verdict::export::cli::run(&args)?;
            eprintln!("{done}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(cfg) => {
            let cfg = verdict::service::RunConfig::resolve(*cfg)?;
            verdict::service::run(cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { dir } => {
            let (_, rules) = load_rules(&dir)?;
            for o in &rules.outcomes {
                let handlers: Vec<&str> = o.handler_names().map(|h| h.as_str()).collect();
                println!(
                    "ok {} {} ({}; {} of {} compiled; prices in {}, {} tier(s), {} tenant override(s))",
                    o.name,
                    o.version,
                    handlers.join(", "),
                    o.native.handlers().count(),
                    handlers.len(),
                    o.prices.currency,
                    o.prices.tiers.len(),
                    o.prices.tenants.len()
                );
            }
            if !rules.plans_version.is_empty() {
                let plans: Vec<&str> = rules.plans.plans.keys().map(String::as_str).collect();
                println!(
                    "ok {} {} (plans {}; {} tenant(s) assigned)",
                    verdict::rules::PLANS_FILE,
                    rules.plans_version,
                    plans.join(", "),
                    rules.plans.tenants.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { dir } => {
            let (rhai, rules) = load_rules(&dir)?;
            let results = fixtures::run_all(&rhai, &rules)?;
            let failed = results.iter().filter(|r| !r.passed()).count();
            for r in &results {
                if r.passed() {
                    println!("ok   {}: {}", r.file.display(), r.name);
                } else {
                    println!("FAIL {}: {}", r.file.display(), r.name);
                    for f in &r.failures {
                        println!("       {f}");
                    }
                }
            }
            println!("{} passed, {} failed", results.len() - failed, failed);
            if results.is_empty() {
                println!("(no fixtures found in {})", dir.display());
            }
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::FluvioSetup { endpoint, spu_id, spu_public, spu_private, topics, wait } => {
            let topics = topics.iter().map(|t| verdict::cluster::parse_topic(t)).collect::<anyhow::Result<Vec<_>>>()?;
            let spu = match (spu_id, spu_public, spu_private) {
                (Some(id), Some(public), Some(private)) => {
                    Some(verdict::cluster::SpuRegistration { id, public, private })
                }
                _ => None,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let until = std::time::Instant::now() + wait.as_std();
            loop {
                match runtime.block_on(verdict::cluster::setup(&endpoint, spu.clone(), &topics)) {
                    Ok(done) => {
                        for d in done {
                            eprintln!("verdict: {d}");
                        }
                        return Ok(ExitCode::SUCCESS);
                    }
                    Err(e) if std::time::Instant::now() < until => {
                        eprintln!("verdict: {endpoint} not ready ({e:#}); retrying");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                    Err(e) => return Err(e.context(format!("setting up the Fluvio cluster at {endpoint}"))),
                }
            }
        }
        Command::Probe { addr, path, timeout } => {
            Ok(if verdict::service::http::probe(&addr, &path, timeout.as_std()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Gen { output, fluvio_topic: Some(topic), fluvio_endpoint, fluvio_partitions, config } => {
            debug_assert!(output.is_none());
            let (stats, produced) = verdict::sinks::fluvio::produce_written(
                &fluvio_endpoint,
                &topic,
                fluvio_partitions,
                verdict::sinks::fluvio::KeyField::Conversation,
                move |w| verdict::gen::generate(&config, w),
            )?;
            eprintln!(
                "produced {produced} records to {topic} at {fluvio_endpoint}: {} conversations, {} events ({} duplicates, {} bad records)",
                stats.conversations, stats.events, stats.duplicates, stats.bad
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Gen { output, config, .. } => {
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::with_capacity(
                    1 << 20,
                    std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
            };
            let stats = verdict::gen::generate(&config, &mut out)?;
            out.flush()?;
            eprintln!(
                "generated {} conversations, {} events ({} duplicates, {} bad records)",
                stats.conversations, stats.events, stats.duplicates, stats.bad
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
