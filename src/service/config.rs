//! The settings of `verdict run`. One struct backs both the TOML file (`--config`) and
//! the command-line flags: every field is optional in both, a flag overrides the file,
//! and the getters apply the defaults. Unknown keys in the file are an error.
//! `examples/verdict.toml` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::sources::fluvio::{PartitionSet, StartAt};
use crate::timestamp::Span;

#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// TOML file with these settings; flags given on the command line override it.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Outcome definitions and prices directory, watched for edits [default: rules].
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Checkpoints and the write-ahead log live here [default: verdict-state].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// HTTP address [default: 127.0.0.1:8480].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Verdict NDJSON, appended; cut back to the checkpoint on recovery, so each verdict
    /// is in it exactly once [default: STATE_DIR/verdicts.ndjson].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Dead-letter NDJSON, appended like the output [default: STATE_DIR/dead-letters.ndjson].
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// Allowed lateness: the watermark trails the largest `ts` seen by this much [default: 5s].
    #[arg(long)]
    pub lateness: Option<Span>,
    /// NDJSON files followed like `tail -F` (surviving rotation); `-` is stdin. Repeatable.
    #[arg(long = "input")]
    pub inputs: Option<Vec<String>>,
    /// Accept events over `POST /v1/events` [default: true].
    #[arg(long)]
    pub http_ingest: Option<bool>,
    /// Advance the watermark with the wall clock (now minus `delivery_allowance`) once
    /// every source is caught up and quiet, so windows close on time with no further
    /// event. Turn off to backfill history: the verdicts are then exactly those of
    /// `verdict replay` [default: true].
    #[arg(long)]
    pub wall_clock: Option<bool>,
    /// The delivery allowance `D`: the wall clock moves the watermark only to now minus
    /// this, and HTTP counts as caught up only after this long without requests, so an
    /// event delayed by less (a platform's retry, a deploy) is applied, not `late`
    /// [default: 2m].
    #[arg(long)]
    pub delivery_allowance: Option<Span>,
    /// How long a caught-up file, stdin or Fluvio partition (read to its end) must be
    /// quiet before it stops holding the watermark back. A source that is not caught
    /// up (reconnecting, stalled, behind) holds it back however long it is quiet
    /// [default: 2s].
    #[arg(long)]
    pub idle_timeout: Option<Span>,
    /// Events whose `ts` is further than this ahead of the wall clock at arrival are
    /// rejected as `invalid` [default: 5m].
    #[arg(long)]
    pub max_future_skew: Option<Span>,
    /// Reject future events at all (off for backfills of recorded streams whose clock
    /// was ahead) [default: true].
    #[arg(long)]
    pub reject_future: Option<bool>,
    /// How often the wall clock is read into the log, to notice quiet sources and (with
    /// `wall_clock`) move the watermark [default: 1s].
    #[arg(long)]
    pub tick_interval: Option<Span>,
    /// How often a checkpoint is written (also at shutdown) [default: 30s].
    #[arg(long)]
    pub checkpoint_interval: Option<Span>,
    /// How long a decided conversation is remembered so later events are ignored [default: 7d].
    #[arg(long)]
    pub retain_decided: Option<Span>,
    /// Largest `POST /v1/events` body; larger ones get 413 [default: 16777216].
    #[arg(long)]
    pub max_body_bytes: Option<u64>,
    /// Input accepted into the log but not yet classified, past which HTTP ingest answers
    /// 429 and file sources wait [default: 268435456].
    #[arg(long)]
    pub max_backlog_bytes: Option<u64>,
    /// Bytes per write-ahead log segment [default: 67108864].
    #[arg(long)]
    pub wal_segment_bytes: Option<u64>,
    /// Bearer token required by ingest and admin endpoints (`POST` routes and the
    /// conversation view); also read from the environment variable `VERDICT_TOKEN`.
    #[arg(long)]
    pub token: Option<String>,
    /// Reload rules when files in the rules directory change [default: true].
    #[arg(long)]
    pub watch_rules: Option<bool>,
    /// Quiet time after the last file change before a reload [default: 300ms].
    #[arg(long)]
    pub reload_debounce: Option<Span>,
    /// Fluvio cluster: the SC's public address, `host:port` [default: 127.0.0.1:9003].
    #[arg(long)]
    pub fluvio_endpoint: Option<String>,
    /// Fluvio topic to consume events from (one event per record, keyed by
    /// conversation); setting it turns the Fluvio source on.
    #[arg(long)]
    pub fluvio_topic: Option<String>,
    /// Partitions of `fluvio_topic` this instance owns: `all`, a list like `0,2,5`, or
    /// `i/n` (instance i of n owns the partitions p with p % n == i) [default: all].
    #[arg(long)]
    pub fluvio_partitions: Option<PartitionSet>,
    /// Where a partition with no checkpointed position starts: `beginning` or `end`
    /// [default: beginning].
    #[arg(long)]
    pub fluvio_start: Option<StartAt>,
    /// Fluvio topic verdicts are produced to, keyed by tenant (at-least-once; consumers
    /// deduplicate by `verdict_id`). Off when unset.
    #[arg(long)]
    pub fluvio_verdict_topic: Option<String>,
    /// Fluvio topic dead letters are produced to, keyed by source. Off when unset.
    #[arg(long)]
    pub fluvio_dead_letter_topic: Option<String>,
    /// Base URL of a billing platform's API to push billable verdicts to, live, as usage
    /// events (e.g. `https://api.withorb.com`; the platform's paths are appended).
    /// At-least-once with the platform's idempotency key (`verdict_id`); the position is
    /// checkpointed. Off when unset.
    #[arg(long)]
    pub push_url: Option<String>,
    /// The platform `push_url` speaks: `orb`, `metronome`, `lago` or `stripe`; its
    /// documented event format and batch limit are used [default: orb].
    #[arg(long)]
    pub push_platform: Option<crate::export::Platform>,
    /// Bearer token (API key) for `push_url`; also read from the environment variable
    /// `VERDICT_PUSH_TOKEN`, which keeps it out of the config file.
    #[arg(long)]
    pub push_token: Option<String>,
    /// Start even when recovery finds logged input or written output missing (a log that
    /// ends before the newest checkpoint's position or is damaged inside, a checkpoint
    /// from another state directory, an output file shorter than its checkpoint
    /// recorded): what is missing is reported, counted and given up. Without it,
    /// recovery refuses and says what it found and the safe way out. Command line only,
    /// so it is never left on in a config file [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip)]
    pub accept_loss: Option<bool>,
}

macro_rules! getters {
    ($($name:ident: $ty:ty = $default:expr;)*) => {
        impl RunConfig {
            $(pub fn $name(&self) -> $ty { self.$name.clone().unwrap_or_else(|| $default) })*
        }
    };
}

getters! {
    rules: PathBuf = PathBuf::from("rules");
    state_dir: PathBuf = PathBuf::from("verdict-state");
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8480));
    lateness: Span = Span::from_secs(5);
    inputs: Vec<String> = Vec::new();
    http_ingest: bool = true;
    wall_clock: bool = true;
    idle_timeout: Span = Span::from_secs(2);
    delivery_allowance: Span = Span::from_secs(120);
    max_future_skew: Span = Span::from_secs(300);
    reject_future: bool = true;
    tick_interval: Span = Span::from_secs(1);
    checkpoint_interval: Span = Span::from_secs(30);
    retain_decided: Span = Span::from_hours(24 * 7);
    max_body_bytes: u64 = 16 << 20;
    max_backlog_bytes: u64 = 256 << 20;
    wal_segment_bytes: u64 = 64 << 20;
    watch_rules: bool = true;
    reload_debounce: Span = Span(300 * crate::timestamp::NANOS_PER_MILLI);
    fluvio_endpoint: String = "127.0.0.1:9003".to_string();
    fluvio_partitions: PartitionSet = PartitionSet::All;
    fluvio_start: StartAt = StartAt::Beginning;
    push_platform: crate::export::Platform = crate::export::Platform::Orb;
    accept_loss: bool = false;
}

impl RunConfig {
    pub fn output(&self) -> PathBuf {
        self.output.clone().unwrap_or_else(|| self.state_dir().join("verdicts.ndjson"))
    }

    pub fn dead_letter(&self) -> PathBuf {
        self.dead_letter.clone().unwrap_or_else(|| self.state_dir().join("dead-letters.ndjson"))
    }

    /// The credit log: every credit the ledger gives, with its verdict.
    pub fn credit_log(&self) -> PathBuf {
        self.state_dir().join("credits.ndjson")
    }

    pub fn push_token(&self) -> Option<String> {
        self.push_token.clone().or_else(|| std::env::var("VERDICT_PUSH_TOKEN").ok()).filter(|t| !t.is_empty())
    }

    pub fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| std::env::var("VERDICT_TOKEN").ok()).filter(|t| !t.is_empty())
    }

    /// The settings from the command line, over those of `--config` if given.
    pub fn resolve(cli: RunConfig) -> anyhow::Result<RunConfig> {
        let Some(path) = cli.config.clone() else { return Ok(cli) };
        let file = Self::from_file(&path)?;
        Ok(cli.over(file))
    }

    pub fn from_file(path: &Path) -> anyhow::Result<RunConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let line = crate::rules::toml_error_line(&text, &e).map(|l| format!(":{l}")).unwrap_or_default();
            anyhow::anyhow!("{}{line}: {}", path.display(), e.message())
        })
    }

    /// `self`'s values where set, else `base`'s.
    fn over(self, base: RunConfig) -> RunConfig {
        macro_rules! pick {
            ($($f:ident),*) => { RunConfig { config: self.config, $($f: self.$f.or(base.$f)),* } };
        }
        pick!(
            rules,
            state_dir,
            listen,
            output,
            dead_letter,
            lateness,
            inputs,
            http_ingest,
            wall_clock,
            delivery_allowance,
            idle_timeout,
            max_future_skew,
            reject_future,
            tick_interval,
            checkpoint_interval,
            retain_decided,
            max_body_bytes,
            max_backlog_bytes,
            wal_segment_bytes,
            token,
            watch_rules,
            reload_debounce,
            fluvio_endpoint,
            fluvio_topic,
            fluvio_partitions,
            fluvio_start,
            fluvio_verdict_topic,
            fluvio_dead_letter_topic,
            push_url,
            push_platform,
            push_token,
            accept_loss
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunConfig,
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        std::fs::write(&path, "lateness = \"10s\"\nlisten = \"127.0.0.1:9000\"\ninputs = [\"a.ndjson\"]\n").unwrap();
        let cli = Cli::parse_from(["x", "--config", path.to_str().unwrap(), "--lateness", "1s"]).run;
        let cfg = RunConfig::resolve(cli).unwrap();
        assert_eq!(cfg.lateness(), Span::from_secs(1));
        assert_eq!(cfg.listen().port(), 9000);
        assert_eq!(cfg.inputs(), ["a.ndjson"]);
        assert_eq!(cfg.checkpoint_interval(), Span::from_secs(30));
        assert_eq!(cfg.output(), PathBuf::from("verdict-state/verdicts.ndjson"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.toml");
        std::fs::write(&path, "fluvio_partitions = \"1/3\"\n").unwrap();
        assert_eq!(
            RunConfig::from_file(&path).unwrap().fluvio_partitions(),
            PartitionSet::Share { index: 1, count: 3 }
        );
        std::fs::write(&path, "lateness = \"5s\"\nfluvio_partitions = \"3/3\"\n").unwrap();
        let e = RunConfig::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("v.toml:2") && e.contains("3/3"), "{e}");
        std::fs::write(&path, "lateness = \"5s\"\nlatenes = \"5s\"\n").unwrap();
        let e = RunConfig::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("v.toml:2") && e.contains("latenes"), "{e}");
        std::fs::write(&path, "lateness = \"five\"\n").unwrap();
        let e = RunConfig::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("v.toml:1"), "{e}");
    }

    #[test]
    fn the_example_config_is_complete_and_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/verdict.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = RunConfig::from_file(&path).unwrap();
        // Every key is documented there (commented or set).
        for key in [
            "rules",
            "state_dir",
            "listen",
            "output",
            "dead_letter",
            "lateness",
            "inputs",
            "http_ingest",
            "wall_clock",
            "delivery_allowance",
            "idle_timeout",
            "max_future_skew",
            "reject_future",
            "tick_interval",
            "checkpoint_interval",
            "retain_decided",
            "max_body_bytes",
            "max_backlog_bytes",
            "wal_segment_bytes",
            "token",
            "watch_rules",
            "reload_debounce",
            "fluvio_endpoint",
            "fluvio_topic",
            "fluvio_partitions",
            "fluvio_start",
            "fluvio_verdict_topic",
            "fluvio_dead_letter_topic",
            "push_url",
            "push_platform",
            "push_token",
        ] {
            assert!(text.contains(&format!("{key} =")), "examples/verdict.toml does not document {key}");
        }
        assert_eq!(cfg.lateness(), Span::from_secs(5));
    }
}
