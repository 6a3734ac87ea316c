//! The Fluvio sinks: verdicts (keyed by tenant, so one tenant's verdicts stay in order
//! on one partition) and dead letters (keyed by source). A sink ships what the worker
//! has written to its file, line by line, from a position: the file is the durable
//! buffer, so a slow or unreachable cluster never stops classification, and nothing
//! written can be lost.
//!
//! The guarantee is at-least-once with deterministic ids: a line counts as shipped
//! once Fluvio has acknowledged it; the checkpoint records the shipped position (the
//! worker waits for the sinks to catch up before its final checkpoint), and after a
//! crash shipping resumes from the checkpointed position, so lines shipped after the
//! last checkpoint are sent again. They carry the same `verdict_id`; consumers
//! deduplicate by it.
//!
//! `verdict gen --fluvio-topic` produces events through [`produce_lines`].

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fluvio::dataplane::record::RecordData;
use fluvio::{Fluvio, RecordKey, TopicProducerConfigBuilder, TopicProducerPool};

use super::{complete_lines, read_at, CHUNK};
use crate::telemetry;

/// How often the file is looked at when nothing is new (one `stat`; it bounds the
/// latency a sink adds).
const IDLE_POLL: Duration = Duration::from_millis(5);

/// Which record field keys a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyField {
    /// Verdicts: `tenant`.
    Tenant,
    /// Dead letters: `source`.
    Source,
    /// Events: `conversation` (or CloudEvents `subject`).
    Conversation,
}

#[derive(serde::Deserialize)]
struct Keys<'a> {
    #[serde(borrow)]
    tenant: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    conversation: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subject: Option<Cow<'a, str>>,
}

/// The key of one NDJSON line; an unreadable line has none (Fluvio then spreads it).
pub fn key_of(field: KeyField, line: &[u8]) -> Option<Vec<u8>> {
    let k: Keys = serde_json::from_slice(line).ok()?;
    let v = match field {
        KeyField::Tenant => k.tenant,
        KeyField::Source => k.source,
        KeyField::Conversation => k.conversation.or(k.subject),
    }?;
    Some(v.into_owned().into_bytes())
}

/// One file shipped to one topic.
pub struct FileSink {
    /// `verdicts` or `dead_letters`: the checkpoint key and metric label.
    pub name: String,
    pub path: PathBuf,
    pub topic: String,
    pub key: KeyField,
    /// Bytes of the file acknowledged by Fluvio.
    pub acked: Arc<AtomicU64>,
}

impl FileSink {
    /// Ships from `acked` on until `stop` is set and everything written is shipped (or,
    /// with the cluster unreachable, until a grace period after `stop`).
    pub async fn run(self, endpoint: String, stop: tokio::sync::watch::Receiver<bool>) {
        let grace = Duration::from_secs(10);
        let mut stopping_since: Option<std::time::Instant> = None;
        let mut producer: Option<TopicProducerPool> = None;
        let mut backoff = Duration::from_millis(100);
        let mut buf = Vec::with_capacity(CHUNK);
        let mut failing = false;
        loop {
            let pos = self.acked.load(Ordering::Acquire);
            let len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
            metrics::gauge!(telemetry::SINK_LAG, "sink" => self.name.clone()).set(len.saturating_sub(pos) as f64);
            if *stop.borrow() {
                let since = *stopping_since.get_or_insert_with(std::time::Instant::now);
                // Failing at shutdown: the next start sends the rest, no need to hold it up.
                if pos >= len || since.elapsed() > grace || failing {
                    if pos < len {
                        tracing::warn!(
                            "sink {}: stopping with {} bytes unshipped; they are sent after the restart",
                            self.name,
                            len - pos
                        );
                    }
                    return;
                }
            }
            if pos >= len {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            let p = match &producer {
                Some(p) => p,
                None => match self.open(&endpoint).await {
                    Ok(p) => producer.insert(p),
                    Err(e) => {
                        failing = true;
                        self.failed(&format!("cannot open a producer for {}: {e:#}", self.topic), &mut backoff).await;
                        continue;
                    }
                },
            };
            if let Err(e) = read_at(&self.path, pos, &mut buf) {
                self.failed(&format!("cannot read {}: {e}", self.path.display()), &mut backoff).await;
                continue;
            }
            match self.ship(p, &buf).await {
                Ok((used, n)) if used > 0 => {
                    failing = false;
                    self.acked.store(pos + used as u64, Ordering::Release);
                    metrics::counter!(telemetry::SINK_RECORDS, "sink" => self.name.clone()).increment(n);
                    backoff = Duration::from_millis(100);
                }
                Ok(_) => tokio::time::sleep(IDLE_POLL).await,
                Err(e) => {
                    failing = true;
                    // Resent from `pos` on the next round: duplicates, never gaps.
                    p.clear_errors().await;
                    self.failed(&format!("producing to {}: {e:#}", self.topic), &mut backoff).await;
                }
            }
        }
    }

    async fn open(&self, endpoint: &str) -> anyhow::Result<TopicProducerPool> {
        let fluvio = crate::sources::fluvio::connect(endpoint).await?;
        let config = TopicProducerConfigBuilder::default().linger(Duration::from_millis(5)).build()?;
        fluvio.topic_producer_with_config(self.topic.clone(), config).await
    }

    /// Sends the complete lines of `buf` and waits until Fluvio has them all.
    async fn ship(&self, p: &TopicProducerPool, buf: &[u8]) -> anyhow::Result<(usize, u64)> {
        let (lines, used) = complete_lines(buf);
        let mut pending = Vec::new();
        for line in lines {
            let key = key_of(self.key, line).map_or(RecordKey::NULL, |k| RecordKey::from(RecordData::from(k)));
            pending.push(p.send(key, line.to_vec()).await?);
        }
        p.flush().await?;
        let n = pending.len() as u64;
        for out in pending {
            out.wait().await?;
        }
        Ok((used, n))
    }

    async fn failed(&self, what: &str, backoff: &mut Duration) {
        tracing::warn!("sink {}: {what}; retrying in {:?}", self.name, backoff);
        metrics::counter!(telemetry::SINK_ERRORS, "sink" => self.name.clone()).increment(1);
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(5));
    }
}

/// Produces NDJSON lines to `topic`, each keyed by `key`; returns how many were sent.
pub async fn produce_lines(
    fluvio: &Fluvio,
    topic: &str,
    key: KeyField,
    mut lines: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> anyhow::Result<u64> {
    let config = TopicProducerConfigBuilder::default().linger(Duration::from_millis(10)).build()?;
    let p = fluvio.topic_producer_with_config(topic.to_string(), config).await?;
    let mut n = 0u64;
    let mut pending = Vec::new();
    while let Some(chunk) = lines.recv().await {
        let (ls, _) = complete_lines(&chunk);
        for line in ls {
            let k = key_of(key, line).map_or(RecordKey::NULL, |k| RecordKey::from(RecordData::from(k)));
            pending.push(p.send(k, line.to_vec()).await?);
        }
        // A flush alone does not wait for the cluster: count only acknowledged records.
        if pending.len() >= 10_000 {
            n += acknowledged(&p, &mut pending).await?;
        }
    }
    n += acknowledged(&p, &mut pending).await?;
    Ok(n)
}

async fn acknowledged(p: &TopicProducerPool, pending: &mut Vec<fluvio::ProduceOutput>) -> anyhow::Result<u64> {
    p.flush().await?;
    let n = pending.len() as u64;
    for out in pending.drain(..) {
        out.wait().await?;
    }
    Ok(n)
}

/// Runs `write` on its own thread and produces every line it writes to `topic` (keyed by
/// `key`), creating the topic with `partitions` partitions if it does not exist.
/// Returns what `write` returned and how many records were produced.
pub fn produce_written<T: Send + 'static>(
    endpoint: &str,
    topic: &str,
    partitions: u32,
    key: KeyField,
    write: impl FnOnce(&mut dyn std::io::Write) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<(T, u64)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let fluvio = crate::sources::fluvio::connect(endpoint).await?;
        ensure_topic(&fluvio, topic, partitions).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let writer = std::thread::spawn(move || {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, LineChunks { tx, pending: Vec::new() });
            let r = write(&mut w);
            // The last lines go with the final flush.
            let flushed = std::io::Write::flush(&mut w);
            r.and_then(|t| flushed.map(|_| t).map_err(Into::into))
        });
        let n = produce_lines(&fluvio, topic, key, rx).await?;
        let t = writer.join().map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
        Ok((t, n))
    })
}

/// Creates `topic` with `partitions` partitions (replication 1) unless it exists.
pub async fn ensure_topic(fluvio: &Fluvio, topic: &str, partitions: u32) -> anyhow::Result<()> {
    use fluvio::metadata::topic::TopicSpec;
    let admin = fluvio.admin().await;
    let found = admin.list::<TopicSpec, String>(vec![topic.to_string()]).await?;
    if found.iter().any(|t| t.name == topic) {
        return Ok(());
    }
    admin.create(topic.to_string(), false, TopicSpec::new_computed(partitions, 1, None)).await?;
    Ok(())
}

/// A writer that hands whole lines to a channel.
struct LineChunks {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    pending: Vec<u8>,
}

impl std::io::Write for LineChunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if let Some(i) = memchr::memrchr(b'\n', &self.pending) {
            let rest = self.pending.split_off(i + 1);
            let whole = std::mem::replace(&mut self.pending, rest);
            self.tx.blocking_send(whole).map_err(|_| std::io::Error::other("the producer stopped"))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.pending.push(b'\n');
            let whole = std::mem::take(&mut self.pending);
            self.tx.blocking_send(whole).map_err(|_| std::io::Error::other("the producer stopped"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_named_field() {
        let v = br#"{"verdict_id":"v1","tenant":"acme","source":"x"}"#;
        assert_eq!(key_of(KeyField::Tenant, v).unwrap(), b"acme");
        assert_eq!(key_of(KeyField::Source, v).unwrap(), b"x");
        let e = br#"{"id":"e","conversation":"c\"1","tenant":"t"}"#;
        assert_eq!(key_of(KeyField::Conversation, e).unwrap(), b"c\"1");
        let ce = br#"{"specversion":"1.0","subject":"c9","data":{}}"#;
        assert_eq!(key_of(KeyField::Conversation, ce).unwrap(), b"c9");
        assert_eq!(key_of(KeyField::Tenant, b"not json"), None);
        assert_eq!(key_of(KeyField::Tenant, br#"{"tenant":5}"#), None);
    }
}
