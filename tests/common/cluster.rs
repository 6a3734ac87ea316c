//! Helpers for tests against a real Fluvio cluster. Two ways to have one:
//! - `FLUVIO_SC_ADDR=host:port`: a running SC (with an SPU) that the tests share;
//! - `FLUVIO_RUN=/path/to/fluvio-run`: each test that needs to stop and start the
//!   broker runs its own SC and SPU on free loopback ports, in a temp directory.
//!
//! Without them the tests print SKIPPED and pass without running: the cluster's
//! binaries are in no package registry, so CI machines have none.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fluvio::consumer::ConsumerConfigExtBuilder;
use fluvio::{Fluvio, FluvioClusterConfig, Offset, RecordKey, TopicProducerConfigBuilder};
use futures_util::StreamExt;

use super::{free_port, lines, root, Service};

/// The shared cluster's SC address, or `None` (and a SKIPPED line).
pub fn cluster() -> Option<String> {
    match std::env::var("FLUVIO_SC_ADDR") {
        Ok(a) if !a.is_empty() => Some(a),
        _ => {
            eprintln!("SKIPPED: no Fluvio cluster (set FLUVIO_SC_ADDR=host:port of a running SC to run this test)");
            None
        }
    }
}

/// Runs `verdict ARGS` to success; its stderr.
pub fn verdict(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_verdict")).current_dir(root()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "verdict {args:?} failed:\n{err}");
    err
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

pub async fn connect(addr: &str) -> Fluvio {
    Fluvio::connect_with_config(&FluvioClusterConfig::new(addr)).await.unwrap()
}

/// A unique name for this run's topics.
pub fn tag() -> String {
    format!("{}-{}", std::process::id(), verdict::timestamp::now() % 1_000_000_007)
}

/// A far-future event for each partition: every instance's watermark passes every
/// real deadline, so all that replay decides gets decided. Returns the lines.
pub fn sentinels(addr: &str, topic: &str, partitions: u32) -> Vec<String> {
    let lines: Vec<String> = (0..partitions)
        .map(|p| {
            format!(
                r#"{{"id":"sentinel-{p}","type":"conversation.started","tenant":"zz-sentinel","conversation":"s{p}","ts":"2030-01-01T00:00:00Z"}}"#
            )
        })
        .collect();
    runtime().block_on(async {
        let f = connect(addr).await;
        for (p, line) in lines.iter().enumerate() {
            let cfg = TopicProducerConfigBuilder::default().set_specific_partitioner(p as u32).build().unwrap();
            let prod = f.topic_producer_with_config(topic, cfg).await.unwrap();
            prod.send(RecordKey::NULL, line.clone()).await.unwrap().wait().await.unwrap();
        }
    });
    lines
}

/// The conversation of an event line (plain or CloudEvents form), the record key.
fn conversation_of(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get("conversation").or_else(|| v.get("subject")).and_then(|c| c.as_str()).map(str::to_string)
}

/// Produces `lines` to `topic` keyed by conversation, `chunk` at a time, each chunk
/// acknowledged by the cluster before `pause` and the next. Returns how many were sent.
pub fn produce_chunks(addr: &str, topic: &str, lines: &[String], chunk: usize, pause: Duration) -> usize {
    runtime().block_on(async {
        let f = connect(addr).await;
        let cfg = TopicProducerConfigBuilder::default().linger(Duration::from_millis(5)).build().unwrap();
        let prod = f.topic_producer_with_config(topic, cfg).await.unwrap();
        let mut n = 0;
        for part in lines.chunks(chunk) {
            let mut pending = Vec::with_capacity(part.len());
            for line in part {
                let key = conversation_of(line).map_or(RecordKey::NULL, |c| RecordKey::from(c.into_bytes()));
                pending.push(prod.send(key, line.clone()).await.unwrap());
            }
            prod.flush().await.unwrap();
            for p in pending {
                p.wait().await.unwrap();
            }
            n += part.len();
            tokio::time::sleep(pause).await;
        }
        n
    })
}

/// Every record of `topic` (all partitions) until `done` holds or 60 s pass.
pub fn consume_all(addr: &str, topic: &str, partitions: u32, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    runtime().block_on(async {
        let f = connect(addr).await;
        let mut got = Vec::new();
        let started = Instant::now();
        let mut streams = Vec::new();
        for p in 0..partitions {
            let cfg = ConsumerConfigExtBuilder::default()
                .topic(topic.to_string())
                .partition(p)
                .offset_start(Offset::beginning())
                .build()
                .unwrap();
            streams.push(f.consumer_with_config(cfg).await.unwrap());
        }
        let mut all = futures_util::stream::select_all(streams);
        while !done(&got) {
            assert!(started.elapsed() < Duration::from_secs(60), "only {} records on {topic}", got.len());
            if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), all.next()).await {
                let r = r.unwrap();
                got.push(String::from_utf8(r.value().to_vec()).unwrap());
            }
        }
        got
    })
}

/// Polls `ok` for 90 s; on failure shows each service's source metrics and log.
pub fn wait_until(what: &str, ok: impl Fn() -> bool, svcs: &[&Service]) {
    let started = Instant::now();
    while !ok() {
        if started.elapsed() > Duration::from_secs(90) {
            let state: Vec<String> = svcs
                .iter()
                .map(|s| {
                    let m = s.metrics();
                    let m: Vec<&str> = m
                        .lines()
                        .filter(|l| l.starts_with("verdict_source") || l.starts_with("verdict_watermark_t"))
                        .filter(|l| !l.ends_with(" 0"))
                        .collect();
                    format!("{} verdicts; {}\n{}", lines(&s.output()).len(), m.join("\n"), s.stderr())
                })
                .collect();
            panic!("{what}: not reached in 90 s\n{}", state.join("\n----\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A cluster this test runs itself (SC and one SPU on free loopback ports), so it can
/// stop and start the SPU; `None` (and a SKIPPED line) without `FLUVIO_RUN`.
pub struct OwnCluster {
    pub dir: tempfile::TempDir,
    pub sc: String,
    bin: PathBuf,
    private: u16,
    spu_public: u16,
    spu_private: u16,
    sc_proc: Option<Child>,
    spu_proc: Option<Child>,
}

impl OwnCluster {
    pub fn start() -> Option<OwnCluster> {
        let mut c = Self::without_spu()?;
        c.start_spu();
        Some(c)
    }

    /// The SC with the SPU registered but not started yet.
    pub fn without_spu() -> Option<OwnCluster> {
        let bin = match std::env::var("FLUVIO_RUN") {
            Ok(b) if !b.is_empty() => PathBuf::from(b),
            _ => {
                eprintln!(
                    "SKIPPED: this test stops and starts the Fluvio broker, so it runs its own cluster: set \
                     FLUVIO_RUN=/path/to/fluvio-run (built from Fluvio's public source) to run it"
                );
                return None;
            }
        };
        let (public, private, spu_public, spu_private) = (free_port(), free_port(), free_port(), free_port());
        let mut c = OwnCluster {
            dir: tempfile::tempdir().unwrap(),
            sc: format!("127.0.0.1:{public}"),
            bin,
            private,
            spu_public,
            spu_private,
            sc_proc: None,
            spu_proc: None,
        };
        let sc_dir = c.dir.path().join("sc");
        std::fs::create_dir_all(&sc_dir).unwrap();
        let log = std::fs::File::create(c.dir.path().join("sc.log")).unwrap();
        c.sc_proc = Some(
            Command::new(&c.bin)
                .args(["sc", "--local"])
                .arg(&sc_dir)
                .args(["--bind-public", &c.sc, "--bind-private", &format!("127.0.0.1:{private}")])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let spu = |p: u16| format!("127.0.0.1:{p}");
        verdict(&[
            "fluvio-setup",
            "--endpoint",
            &c.sc,
            "--spu-id",
            "5001",
            "--spu-public",
            &spu(spu_public),
            "--spu-private",
            &spu(spu_private),
        ]);
        Some(c)
    }

    pub fn start_spu(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("spu.log")).unwrap();
        let spu_dir: &Path = &self.dir.path().join("spu");
        self.spu_proc = Some(
            Command::new(&self.bin)
                .args(["spu", "-i", "5001", "-p", &format!("127.0.0.1:{}", self.spu_public)])
                .args(["-v", &format!("127.0.0.1:{}", self.spu_private)])
                .args(["--sc-addr", &format!("127.0.0.1:{}", self.private), "--log-base-dir"])
                .arg(spu_dir)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        // Ready once it accepts connections on its public port.
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.spu_public)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "the SPU did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the broker dies mid-stream.
    pub fn kill_spu(&mut self) {
        if let Some(mut p) = self.spu_proc.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.kill_spu();
        if let Some(mut p) = self.sc_proc.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}
