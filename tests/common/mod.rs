//! Helpers for tests that run `verdict run`: a service on a free loopback port with its
//! own copy of the rules and its own state directory, driven over real HTTP.
#![allow(dead_code)]

pub mod cluster;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn ev(id: &str, kind: &str, conv: &str, ts: &str, attrs: &str) -> String {
    let attrs = if attrs.is_empty() { String::new() } else { format!(r#","attrs":{attrs}"#) };
    format!(r#"{{"id":"{id}","type":"{kind}","tenant":"acme","conversation":"{conv}","ts":"{ts}"{attrs}}}"#)
}

pub fn ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Fails on any line written twice; returns the set.
pub fn once(p: &Path) -> BTreeSet<String> {
    let mut seen = HashMap::new();
    for l in lines(p) {
        *seen.entry(l).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).map(|(l, _)| l.clone()).collect();
    assert!(twice.is_empty(), "{} line(s) of {} written more than once, e.g. {}", twice.len(), p.display(), twice[0]);
    seen.into_keys().collect()
}

pub fn diff(name: &str, got: &BTreeSet<String>, want: &BTreeSet<String>) {
    if got != want {
        let missing: Vec<_> = want.difference(got).take(3).collect();
        let extra: Vec<_> = got.difference(want).take(3).collect();
        panic!(
            "{name}: {} lines, expected {}; missing {} e.g. {missing:?}; unexpected {} e.g. {extra:?}",
            got.len(),
            want.len(),
            want.difference(got).count(),
            got.difference(want).count()
        );
    }
}

/// A service driven until (nearly) every metric is exported: events that decide a
/// billable conversation, an escalation, a malformed record, a followed file, and
/// Fluvio sinks configured against a port where no cluster listens (so their error
/// metrics show, while HTTP ingest goes on). Returns the service and its `/metrics` text.
pub fn exercised_metrics() -> (Service, String) {
    let nowhere = format!("127.0.0.1:{}", free_port());
    // A followed file that does not exist yet: caught up, so it holds nothing back
    // (an unreachable Fluvio source would hold the watermark, as it must).
    let args = [
        "--wall-clock",
        "false",
        "--checkpoint-interval",
        "200ms",
        "--fluvio-endpoint",
        &nowhere,
        "--input",
        "later.ndjson",
    ];
    let sinks = ["--fluvio-verdict-topic", "verdicts", "--fluvio-dead-letter-topic", "dead"];
    let svc = Service::start(&[&args[..], &sinks[..]].concat());
    let day = |t: &str| format!("2026-06-12T{t}Z");
    let body = [
        ev("p1-1", "conversation.started", "p1", &day("10:00:00"), r#"{"intent":"password_reset"}"#),
        ev("p1-2", "llm.call", "p1", &day("10:00:02"), r#"{"cost_usd":"0.0125"}"#),
        ev("p1-3", "message.ai", "p1", &day("10:00:03"), ""),
        ev("p1-4", "resolution.confirmed", "p1", &day("10:05:00"), ""),
        ev("p2-1", "escalated", "p2", &day("11:00:00"), ""),
        // A tenant on a plan with included outcomes, for the billing gauges.
        ev("t1-1", "escalated", "t1", &day("11:30:00"), "").replace(r#""acme""#, r#""tenant-001""#),
        "{bad".to_string(),
    ];
    svc.post("/v1/events", &body.join("\n"));
    // Enough rule calls that the sampled evaluation-time histogram has some.
    let more: Vec<String> = (0..8)
        .flat_map(|i| {
            let c = format!("q{i}");
            [
                ("1", "conversation.started", "10:00:00"),
                ("2", "message.ai", "10:00:01"),
                ("3", "message.customer", "10:00:02"),
            ]
            .map(|(n, kind, t)| ev(&format!("{c}-{n}"), kind, &c, &day(t), ""))
        })
        .collect();
    svc.post("/v1/events", &more.join("\n"));
    svc.post("/v1/events", &ev("p9-1", "message.ai", "p9", "2026-06-14T00:00:00Z", ""));
    svc.wait_for("/v1/usage?tenant=acme&period=2026-06", |u| u["billable_count"] == 1);
    // Gauges are published on a timer, so poll until every family that this traffic
    // exports has shown (a fixed sleep raced the gauge timer on a slow machine).
    let started = Instant::now();
    loop {
        let text = svc.metrics();
        let missing: Vec<&str> = verdict::telemetry::ALL
            .iter()
            .map(|(name, _, _)| *name)
            .filter(|name| !LATER_METRICS.contains(name) && !text.contains(&format!("# TYPE {name} ")))
            .collect();
        if missing.is_empty() {
            return (svc, text);
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never exported: {missing:?}\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Families exported only once something else happened (a rule error, a record
/// shipped to Fluvio), which `exercised_metrics` does not bring about.
pub const LATER_METRICS: [&str; 2] = [verdict::telemetry::RULE_ERRORS, verdict::telemetry::SINK_RECORDS];

/// A generated stream plus one far-later event, so every window of the stream closes
/// in the service (whose watermark trails the newest event) as in a replay.
pub fn events(dir: &Path, conversations: u32, seed: u64) -> Vec<u8> {
    let gen = dir.join("gen.ndjson");
    let st = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .args(["gen", "--conversations", &conversations.to_string(), "--tenants", "12"])
        .args(["--seed", &seed.to_string(), "--duplicates", "0.02", "--bad", "0.01", "--output"])
        .arg(&gen)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let mut bytes = std::fs::read(&gen).unwrap();
    bytes.extend_from_slice(
        br#"{"id":"sentinel","type":"conversation.started","tenant":"zz-sentinel","conversation":"s","ts":"2030-01-01T00:00:00Z"}"#,
    );
    bytes.push(b'\n');
    bytes
}

/// A generated stream written to `full.ndjson`, with the verdicts and dead letters one
/// replay of it gives.
pub fn replayed_stream(
    dir: &Path,
    conversations: u32,
    seed: u64,
) -> (Vec<u8>, PathBuf, (BTreeSet<String>, BTreeSet<String>)) {
    let all = events(dir, conversations, seed);
    let full = dir.join("full.ndjson");
    std::fs::write(&full, &all).unwrap();
    let want = expected(dir, &full);
    (all, full, want)
}

pub fn expected(dir: &Path, input: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let (out, dead) = (dir.join("expected.ndjson"), dir.join("expected-dead.ndjson"));
    let st = Command::new(env!("CARGO_BIN_EXE_verdict"))
        .current_dir(root())
        .args(["replay", "--output"])
        .arg(&out)
        .arg("--dead-letter")
        .arg(&dead)
        .arg(input)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    (lines(&out).into_iter().collect(), lines(&dead).into_iter().collect())
}

/// Waits until the service has written `n` verdicts.
pub fn wait_for_verdicts(svc: &Service, n: usize) {
    let started = Instant::now();
    while lines(&svc.output()).len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {n} verdicts:\n{}",
            lines(&svc.output()).len(),
            svc.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copies a directory with its subdirectories.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The port of the service's `verdict: listening on http://127.0.0.1:PORT` line.
fn listening_port(log: &str) -> Option<u16> {
    // Only a whole line: one read may catch the line half written.
    let line = log.split_inclusive('\n').find_map(|l| l.strip_prefix("verdict: listening on http://"))?;
    let (host, port) = line.strip_suffix('\n')?.rsplit_once(':')?;
    host.parse::<std::net::IpAddr>().ok()?;
    port.parse().ok()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Service {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub args: Vec<String>,
    pub child: Option<Child>,
    pub runs: u32,
}

impl Service {
    /// Starts a service on a copy of `rules/`, with extra flags.
    pub fn start(args: &[&str]) -> Service {
        Self::start_env(args, &[])
    }

    /// Starts a service on a copy of the state directory `state` (a fixture).
    pub fn start_on(args: &[&str], state: &Path) -> Service {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(state, &dir.path().join("state"));
        Self::start_in(dir, args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Service {
        Self::start_in(tempfile::tempdir().unwrap(), args, env)
    }

    fn start_in(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Service {
        copy_dir(&root().join("rules"), &dir.path().join("rules"));
        let mut s = Service { dir, port: 0, args: args.iter().map(|a| a.to_string()).collect(), child: None, runs: 0 };
        s.spawn(env);
        s
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn output(&self) -> PathBuf {
        self.state().join("verdicts.ndjson")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join(format!("stderr-{}.log", self.runs))
    }

    /// Starts (or restarts) the process and waits until it is ready. It listens on a
    /// port the system picks and names in its log: a port found free here and bound
    /// later by the service could be taken by a parallel test in between.
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        self.port = 0;
        self.runs += 1;
        let stderr = std::fs::File::create(self.log()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_verdict"));
        cmd.current_dir(self.dir.path())
            .arg("run")
            .args(["--rules", "rules", "--state-dir", "state", "--listen", "127.0.0.1:0"])
            .args(&self.args)
            .env("VERDICT_LOG", "warn,verdict=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start verdict run"));
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("verdict run exited with {status} at startup:\n{}", self.stderr());
            }
            if self.port == 0 {
                self.port = listening_port(&self.stderr()).unwrap_or(0);
            }
            if self.port != 0 && self.get("/readyz").0 == 200 {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "not ready in 60s:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `verdict run` on this service's directory with its flags plus `extra`, and
    /// expects it to exit at startup: its exit code and what it wrote to stderr.
    pub fn start_fails(&self, extra: &[&str]) -> (Option<i32>, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_verdict"))
            .current_dir(self.dir.path())
            .arg("run")
            .args(["--rules", "rules", "--state-dir", "state", "--listen", "127.0.0.1:0"])
            .args(&self.args)
            .args(extra)
            .env("VERDICT_LOG", "warn,verdict=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start verdict run");
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("still running after 30 s:\n{}", String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build()
    }

    fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return (0, Value::String(e.to_string())),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        Self::answer(Self::agent().get(&self.url(path)).call())
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.post_auth(path, body, None)
    }

    pub fn post_auth(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = Self::agent().post(&self.url(path)).set("Content-Type", "application/x-ndjson");
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        Self::answer(req.send_string(body))
    }

    /// A POST's status, its `Retry-After` header and its body.
    pub fn post_with_retry_after(&self, path: &str, body: &str) -> (u16, Option<String>, Value) {
        let r = Self::agent().post(&self.url(path)).set("Content-Type", "application/x-ndjson").send_string(body);
        let resp = match r {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return (0, None, Value::String(e.to_string())),
        };
        let (status, retry) = (resp.status(), resp.header("Retry-After").map(str::to_string));
        let text = resp.into_string().unwrap_or_default();
        (status, retry, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub fn metrics(&self) -> String {
        match self.get("/metrics").1 {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    /// Polls `path` until `ok` holds (60 s at most: a loaded machine is slow, and a
    /// passing run returns as soon as it holds) and returns the last answer.
    pub fn wait_for(&self, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (status, v) = self.get(path);
            if status == 200 && ok(&v) {
                return v;
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!("GET {path} never satisfied the condition; last answer {status}: {v}\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `/metrics` until the sample `name` (with its labels) reads `value`; returns
    /// the last text.
    pub fn wait_for_metric(&self, name: &str, value: &str) -> String {
        let started = Instant::now();
        loop {
            let m = self.metrics();
            if m.lines().any(|l| l.strip_prefix(name).is_some_and(|rest| rest.trim() == value)) {
                return m;
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!("{name} never read {value}:\n{m}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    /// SIGTERM, then waits; the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal("-TERM");
        let mut c = self.child.take()?;
        let started = Instant::now();
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s.code();
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = c.kill();
                panic!("no exit 60 s after SIGTERM:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The stream with billing events among it: every 10 lines, a dispute of the
/// conversation that went quiet longest ago (more than 25 hours of event time, so its
/// verdict is decided), then its accept 25 lines later; a dispute right after an event
/// of a conversation still open (refused: nothing decided yet); prepaid grants.
pub fn with_billing(all: &[u8]) -> Vec<u8> {
    use std::collections::{BTreeMap, VecDeque};
    let ts_of = |s: &str| verdict::timestamp::parse_rfc3339(s).unwrap_or(0);
    let mut out = Vec::new();
    // Last event time of each conversation, and the conversations in order of it.
    let mut last: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut disputed: VecDeque<(usize, String, String)> = VecDeque::new();
    let day_and_more = 25 * 3_600 * 1_000_000_000i64;
    for (i, line) in all.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        out.extend_from_slice(line);
        out.push(b'\n');
        let Ok(v) = serde_json::from_slice::<Value>(line) else { continue };
        let (Some(tenant), Some(conv), Some(ts)) = (v["tenant"].as_str(), v["conversation"].as_str(), v["ts"].as_str())
        else {
            continue;
        };
        let now = ts_of(ts);
        last.insert((tenant.to_string(), conv.to_string()), now);
        let line = |id: String, kind: &str, tenant: &str, conv: &str, attrs: &str| {
            format!(
                r#"{{"id":"{id}","type":"{kind}","tenant":"{tenant}","conversation":"{conv}","ts":"{ts}","attrs":{attrs}}}"#
            )
        };
        let opened = r#"{"outcome":"ai_resolution","reason":"no"}"#;
        let mut add = Vec::new();
        if i % 10 == 7 {
            let quiet =
                last.iter().filter(|(_, t)| **t + day_and_more < now).min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
            if let Some((t, c)) = quiet {
                last.remove(&(t.clone(), c.clone()));
                add.push(line(format!("d{i}"), "dispute.opened", &t, &c, opened));
                disputed.push_back((i, t, c));
            }
        }
        if disputed.front().is_some_and(|(at, _, _)| at + 25 <= i) {
            let (_, t, c) = disputed.pop_front().unwrap();
            add.push(line(format!("a{i}"), "dispute.accepted", &t, &c, r#"{"outcome":"ai_resolution"}"#));
        }
        if i % 40 == 21 {
            add.push(line(format!("r{i}"), "dispute.opened", tenant, conv, opened));
        }
        if i % 97 == 3 {
            add.push(line(format!("g{i}"), "credit.granted", tenant, "-", r#"{"amount":"3.50"}"#));
        }
        for l in add {
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
    }
    // A second sentinel, 10 s after the first: the service's watermark then passes the
    // month the first one opened, as the replay's end of input does.
    let later = r#"{"id":"sentinel-2","type":"message.customer","tenant":"zz-sentinel","conversation":"s","ts":"2030-01-01T00:00:10Z"}"#;
    out.extend_from_slice(later.as_bytes());
    out.push(b'\n');
    out
}

/// Hand-written events of tenant `acme`, timed in seconds after June 10th 2026, 10:00.
pub mod acme {
    use serde_json::{json, Value};

    pub const T0: &str = "2026-06-10T10:00:00Z";

    /// The time `secs` after [`T0`], as RFC 3339.
    pub fn at(secs: i64) -> String {
        let t0 = verdict::timestamp::parse_rfc3339(T0).unwrap();
        verdict::timestamp::format_rfc3339(t0 + secs * 1_000_000_000)
    }

    pub fn event(id: &str, kind: &str, conv: &str, secs: i64, attrs: Value) -> String {
        json!({"id": id, "type": kind, "tenant": "acme", "conversation": conv, "ts": at(secs), "attrs": attrs})
            .to_string()
    }
}
