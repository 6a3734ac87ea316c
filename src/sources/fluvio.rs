//! The Fluvio source adapter: which partitions of the events topic this instance owns,
//! where each one starts, and how a consumed record becomes a logged record. Each
//! record's value is one event (SPEC section 1); its key, the conversation id, only
//! decides the partition, so all events of a conversation reach the same instance.
//!
//! Positions are verdict's own: each batch carries its partition's next offset into
//! the write-ahead log, and the checkpoint holds them with the state, so a restart
//! resumes every partition exactly where the log ends. Fluvio's consumer offsets are
//! not used.

use std::fmt;
use std::str::FromStr;

use fluvio::{Fluvio, FluvioClusterConfig, Offset};

use crate::decode::deadletter::TOO_LARGE_EXCERPT;
use crate::decode::MAX_RECORD_BYTES;
use crate::service::input::Records;

#[derive(Debug, thiserror::Error)]
pub enum FluvioSourceError {
    #[error("bad partition set {text:?}: {why} (expected `all`, a list like `0,2,5`, or `i/n`)")]
    BadPartitionSet { text: String, why: String },
    #[error("topic {topic} has {count} partition(s); partition {partition} does not exist")]
    NoSuchPartition { topic: String, count: u32, partition: u32 },
    #[error("topic {topic} does not exist on the Fluvio cluster at {endpoint}")]
    NoSuchTopic { topic: String, endpoint: String },
    #[error("bad start {0:?}: expected `beginning` or `end`")]
    BadStart(String),
    #[error("Fluvio cluster at {endpoint}: {cause}")]
    Cluster { endpoint: String, cause: String },
}

/// The partitions an instance owns.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PartitionSet {
    /// Every partition of the topic (one instance).
    #[default]
    All,
    /// These partitions.
    List(Vec<u32>),
    /// Instance `index` of `count`: the partitions `p` with `p % count == index`, so
    /// `count` instances started with `0/count` .. `count-1/count` cover the topic once.
    Share { index: u32, count: u32 },
}

impl PartitionSet {
    /// The owned partitions of a topic with `count` partitions, ascending.
    pub fn resolve(&self, topic: &str, count: u32) -> Result<Vec<u32>, FluvioSourceError> {
        match self {
            PartitionSet::All => Ok((0..count).collect()),
            PartitionSet::List(ps) => {
                if let Some(&p) = ps.iter().find(|&&p| p >= count) {
                    return Err(FluvioSourceError::NoSuchPartition { topic: topic.into(), count, partition: p });
                }
                let mut v = ps.clone();
                v.sort_unstable();
                v.dedup();
                Ok(v)
            }
            PartitionSet::Share { index, count: n } => Ok((0..count).filter(|p| p % n == *index).collect()),
        }
    }
}

impl FromStr for PartitionSet {
    type Err = FluvioSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| FluvioSourceError::BadPartitionSet { text: s.into(), why: why.into() };
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(PartitionSet::All);
        }
        if let Some((i, n)) = t.split_once('/') {
            let index: u32 = i.trim().parse().map_err(|_| bad("the instance index is not a number"))?;
            let count: u32 = n.trim().parse().map_err(|_| bad("the instance count is not a number"))?;
            if count == 0 || index >= count {
                return Err(bad("the index must be below the count, which must be at least 1"));
            }
            return Ok(PartitionSet::Share { index, count });
        }
        let mut v = Vec::new();
        for part in t.split(',') {
            v.push(
                part.trim().parse::<u32>().map_err(|_| bad(&format!("{:?} is not a partition number", part.trim())))?,
            );
        }
        Ok(PartitionSet::List(v))
    }
}

impl fmt::Display for PartitionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionSet::All => f.write_str("all"),
            PartitionSet::List(v) => {
                let parts: Vec<String> = v.iter().map(u32::to_string).collect();
                f.write_str(&parts.join(","))
            }
            PartitionSet::Share { index, count } => write!(f, "{index}/{count}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for PartitionSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a partition with no checkpointed position starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Its first record: nothing already in the topic is missed.
    #[default]
    Beginning,
    /// Records produced from now on.
    End,
}

impl FromStr for StartAt {
    type Err = FluvioSourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "beginning" => Ok(StartAt::Beginning),
            "end" => Ok(StartAt::End),
            other => Err(FluvioSourceError::BadStart(other.into())),
        }
    }
}

impl<'de> serde::Deserialize<'de> for StartAt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where to read a partition from: its checkpointed next offset, or `start`.
pub fn start_offset(checkpointed: Option<i64>, start: StartAt) -> Offset {
    match checkpointed.map(Offset::absolute) {
        Some(Ok(o)) => o,
        // A negative offset cannot have been checkpointed; fall back like a new partition.
        Some(Err(_)) | None => match start {
            StartAt::Beginning => Offset::beginning(),
            StartAt::End => Offset::end(),
        },
    }
}

/// The `source` name of a partition, as dead letters and positions carry it.
pub fn source_name(topic: &str, partition: u32) -> String {
    format!("fluvio:{topic}/{partition}")
}

/// The source name of a whole topic: it stands for its partitions until they are known,
/// and scopes them.
pub fn topic_source(topic: &str) -> String {
    format!("fluvio:{topic}")
}

/// The partition of a source name of `topic`, if it is one.
pub fn partition_of(topic: &str, source: &str) -> Option<u32> {
    source.strip_prefix("fluvio:")?.strip_prefix(topic)?.strip_prefix('/')?.parse().ok()
}

/// What [`PartitionCursor::take`] did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    Added,
    /// Already taken (a reconnect can deliver records again).
    Skipped,
    /// Past the next expected offset: records in between were not delivered. Partition
    /// offsets are dense, so this is a client fetch that lost a batch (seen with the
    /// 0.50 client when a fetch response is cut at its byte limit), or records removed
    /// by retention. Reading again from `expected` tells which.
    Gap {
        expected: i64,
    },
}

/// Follows one partition's offsets: what to log next and where to resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionCursor {
    /// The next offset to read; `None` until the partition's extent is known.
    next: Option<i64>,
}

impl PartitionCursor {
    pub fn new(checkpointed: Option<i64>) -> Self {
        PartitionCursor { next: checkpointed }
    }

    /// A partition with no checkpointed position starts at its first record held
    /// (`beginning`) or its end at subscription (`end`), so a first record delivered
    /// past that is a gap like any other. Returns the position, once set.
    pub fn start_at(&mut self, extent: Extent, start: StartAt) -> i64 {
        *self.next.get_or_insert(match start {
            StartAt::Beginning => extent.start,
            StartAt::End => extent.end,
        })
    }

    /// Adds a consumed record to `batch` if it is the next one.
    pub fn take(&mut self, batch: &mut Records, offset: i64, value: &[u8]) -> Taken {
        match self.next {
            Some(n) if offset < n => Taken::Skipped,
            Some(n) if offset > n => Taken::Gap { expected: n },
            _ => {
                self.add(batch, offset, value);
                Taken::Added
            }
        }
    }

    /// Adds a record past a gap that reading again did not fill: the records are gone.
    pub fn take_past_gap(&mut self, batch: &mut Records, offset: i64, value: &[u8]) {
        self.add(batch, offset, value);
    }

    fn add(&mut self, batch: &mut Records, offset: i64, value: &[u8]) {
        // Over the record limit: log only what the dead letter keeps; the size tells.
        let kept = if value.len() > MAX_RECORD_BYTES { &value[..TOO_LARGE_EXCERPT] } else { value };
        // Fluvio offsets are never negative; the position says which record it was.
        let at = u64::try_from(offset).unwrap_or(0);
        batch.push(kept, 0, at, value.len() as u64, kept.len() < value.len());
        self.next = Some(offset.saturating_add(1));
    }

    /// The offset a restart continues from.
    pub fn next(&self) -> Option<i64> {
        self.next
    }
}

/// What a partition holds, as its leader says: the first offset still held (retention
/// removes from the front) and the offset the next record will get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub start: i64,
    pub end: i64,
}

/// How long an extent may take to come back.
pub const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks a partition's leader for the partition's [`Extent`], over a connection kept
/// between asks. The client crate asks the same before it streams, but does not tell.
pub struct ExtentProbe {
    topic: String,
    partition: u32,
    socket: Option<fluvio_socket::VersionedSerialSocket>,
}

impl ExtentProbe {
    pub fn new(topic: &str, partition: u32) -> Self {
        ExtentProbe { topic: topic.to_string(), partition, socket: None }
    }

    /// The extent now. An error (the leader unknown, down, not ready for the partition
    /// yet, or no answer within [`ASK_TIMEOUT`]) drops the connection; the next ask
    /// connects again.
    pub async fn ask(&mut self, client: &Fluvio, endpoint: &str) -> Result<Extent, FluvioSourceError> {
        let asked = match tokio::time::timeout(ASK_TIMEOUT, self.ask_once(client)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "the leader of {}/{} did not answer in {ASK_TIMEOUT:?}",
                self.topic,
                self.partition
            )),
        };
        if asked.is_err() {
            self.socket = None;
        }
        asked.map_err(|e| FluvioSourceError::Cluster { endpoint: endpoint.into(), cause: format!("{e:#}") })
    }

    async fn ask_once(&mut self, client: &Fluvio) -> anyhow::Result<Extent> {
        use fluvio::dataplane::link::ErrorCode;
        use fluvio::dataplane::record::ReplicaKey;
        use fluvio_spu_schema::server::fetch_offset::FetchOffsetsRequest;
        let replica = ReplicaKey::new(self.topic.clone(), self.partition);
        let socket = match self.socket.take().filter(|s| !s.is_stale()) {
            Some(s) => s,
            None => leader_socket(client, &self.topic, self.partition).await?,
        };
        let answer = socket.send_receive(FetchOffsetsRequest::new(self.topic.clone(), self.partition)).await?;
        let p = answer.find_partition(&replica).ok_or_else(|| anyhow::anyhow!("the leader has no {replica}"))?;
        anyhow::ensure!(p.error_code == ErrorCode::None, "the leader of {replica} answered {:?}", p.error_code);
        self.socket = Some(socket);
        Ok(Extent { start: p.start_offset, end: p.last_stable_offset })
    }
}

/// A connection to the SPU that leads `topic`'s `partition`.
async fn leader_socket(
    client: &Fluvio,
    topic: &str,
    partition: u32,
) -> anyhow::Result<fluvio_socket::VersionedSerialSocket> {
    use fluvio::metadata::partition::PartitionSpec;
    use fluvio::metadata::spu::SpuSpec;
    use fluvio_socket::{ClientConfig, MultiplexerSocket, VersionedSerialSocket};
    let admin = client.admin().await;
    // Partitions are named `topic-N`; the SC answers with all of them.
    let key = format!("{topic}-{partition}");
    let leader = admin
        .all::<PartitionSpec>()
        .await?
        .into_iter()
        .find(|m| m.name == key)
        .ok_or_else(|| anyhow::anyhow!("partition {key} is not known to the SC yet"))?
        .spec
        .leader;
    let spu = admin
        .all::<SpuSpec>()
        .await?
        .into_iter()
        .find(|m| m.spec.id == leader)
        .ok_or_else(|| anyhow::anyhow!("the leader of {key}, SPU {leader}, is not known to the SC"))?;
    let (socket, config, versions) = ClientConfig::with_addr(spu.spec.public_endpoint.addr()).connect().await?.split();
    Ok(VersionedSerialSocket::new(MultiplexerSocket::shared(socket), config, versions))
}

/// Connects to the cluster whose SC listens at `endpoint` (`host:port`).
pub async fn connect(endpoint: &str) -> Result<Fluvio, FluvioSourceError> {
    Fluvio::connect_with_config(&FluvioClusterConfig::new(endpoint))
        .await
        .map_err(|e| FluvioSourceError::Cluster { endpoint: endpoint.into(), cause: format!("{e:#}") })
}

/// How many partitions `topic` has.
pub async fn partition_count(fluvio: &Fluvio, endpoint: &str, topic: &str) -> Result<u32, FluvioSourceError> {
    use fluvio::metadata::topic::TopicSpec;
    let cluster = |e: anyhow::Error| FluvioSourceError::Cluster { endpoint: endpoint.into(), cause: format!("{e:#}") };
    let admin = fluvio.admin().await;
    let topics = admin.list::<TopicSpec, String>(vec![topic.to_string()]).await.map_err(cluster)?;
    let t = topics
        .into_iter()
        .find(|t| t.name == topic)
        .ok_or_else(|| FluvioSourceError::NoSuchTopic { topic: topic.into(), endpoint: endpoint.into() })?;
    Ok(t.spec.partitions())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_sets_parse_and_resolve() {
        assert_eq!("all".parse::<PartitionSet>().unwrap().resolve("t", 3).unwrap(), [0, 1, 2]);
        assert_eq!("2, 0,2".parse::<PartitionSet>().unwrap().resolve("t", 3).unwrap(), [0, 2]);
        let e = "0,7".parse::<PartitionSet>().unwrap().resolve("events", 3).unwrap_err().to_string();
        assert!(e.contains("events has 3") && e.contains("partition 7"), "{e}");
        for bad in ["", "x", "1/0", "2/2", "a/3", "1,,2"] {
            let e = bad.parse::<PartitionSet>().unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        for s in ["all", "0,2", "1/3"] {
            assert_eq!(s.parse::<PartitionSet>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn shares_cover_every_partition_exactly_once() {
        for partitions in 1..=12u32 {
            for instances in 1..=5u32 {
                let mut seen = vec![0; partitions as usize];
                for i in 0..instances {
                    let set = PartitionSet::Share { index: i, count: instances };
                    for p in set.resolve("t", partitions).unwrap() {
                        seen[p as usize] += 1;
                    }
                }
                assert!(seen.iter().all(|&n| n == 1), "{partitions} partitions over {instances}: {seen:?}");
            }
        }
    }

    #[test]
    fn source_names_round_trip() {
        assert_eq!(partition_of("events", &source_name("events", 4)), Some(4));
        assert_eq!(partition_of("events", "fluvio:events2/4"), None);
        assert_eq!(partition_of("events", "http"), None);
        assert_eq!(partition_of("a/b", &source_name("a/b", 0)), Some(0));
    }

    #[test]
    fn start_offsets() {
        assert_eq!(start_offset(Some(42), StartAt::End), Offset::absolute(42).unwrap());
        assert_eq!(start_offset(None, StartAt::Beginning), Offset::beginning());
        assert_eq!(start_offset(None, StartAt::End), Offset::end());
        assert_eq!(start_offset(Some(-1), StartAt::Beginning), Offset::beginning());
        assert!("middle".parse::<StartAt>().unwrap_err().to_string().contains("middle"));
    }

    #[test]
    fn the_cursor_skips_redelivered_records_and_bounds_big_ones() {
        let mut c = PartitionCursor::new(Some(10));
        let mut b = Records::new("fluvio:t/0", 0);
        assert_eq!(c.take(&mut b, 9, b"{}"), Taken::Skipped, "before the checkpointed position");
        assert_eq!(c.take(&mut b, 10, b"{\"a\":1}"), Taken::Added);
        assert_eq!(c.take(&mut b, 11, b"{}"), Taken::Added);
        assert_eq!(c.take(&mut b, 11, b"{}"), Taken::Skipped, "delivered twice");
        let big = vec![b'x'; MAX_RECORD_BYTES + 1];
        assert_eq!(c.take(&mut b, 12, &big), Taken::Added);
        assert_eq!(c.next(), Some(13));
        assert_eq!(b.records.len(), 3);
        assert_eq!(b.bytes(&b.records[0]), b"{\"a\":1}");
        assert_eq!((b.records[0].offset, b.records[0].line), (10, 0));
        let r = b.records[2];
        assert_eq!((r.len as usize, r.size, r.truncated), (TOO_LARGE_EXCERPT, big.len() as u64, true));
        // A checkpointed position wins over the partition's extent.
        let extent = Extent { start: 3, end: 900 };
        assert_eq!(c.start_at(extent, StartAt::End), 13);
    }

    #[test]
    fn a_new_partition_starts_at_its_extent_and_a_later_first_record_is_a_gap() {
        let extent = Extent { start: 40, end: 500 };
        let mut b = Records::new("fluvio:t/0", 0);
        let mut c = PartitionCursor::new(None);
        assert_eq!(c.start_at(extent, StartAt::Beginning), 40);
        assert_eq!(c.take(&mut b, 87, b"{}"), Taken::Gap { expected: 40 }, "records 40..87 were not delivered");
        assert_eq!(c.take(&mut b, 40, b"{}"), Taken::Added);
        let mut c = PartitionCursor::new(None);
        assert_eq!(c.start_at(extent, StartAt::End), 500, "the end at subscription, not the first record");
        assert_eq!(c.take(&mut b, 502, b"{}"), Taken::Gap { expected: 500 });
    }

    #[test]
    fn a_gap_is_reported_not_skipped_over() {
        let mut c = PartitionCursor::new(Some(5212));
        let mut b = Records::new("fluvio:t/1", 0);
        assert_eq!(c.take(&mut b, 5240, b"{}"), Taken::Gap { expected: 5212 });
        assert!(b.is_empty());
        assert_eq!(c.next(), Some(5212), "the position stays at the first missing record");
        c.take_past_gap(&mut b, 5240, b"{}");
        assert_eq!(c.next(), Some(5241));
    }
}
