//! What the write-ahead log holds: every input the worker applies, in the order it
//! applies them. Records keep their raw bytes (the worker decodes them, so the log is
//! the input itself), and the wall clock enters only through logged values (the
//! arrival time of a batch, ticks), so replaying the log after a crash gives the same
//! verdicts, byte for byte, as the run that wrote it.

use serde::{Deserialize, Serialize};

use crate::sources::tail::FilePosition;
use crate::timestamp::Nanos;

/// The source name of records posted over HTTP.
pub const HTTP_SOURCE: &str = "http";

/// One log entry. New variants go at the end, so older logs still decode.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Input {
    Records(Records),
    /// The wall clock was read as `now`; may advance the watermark of an idle stream.
    Tick {
        now: Nanos,
    },
    Sources(SourceSet),
}

/// The sources in force, logged when the service starts (before any input) and when
/// the Fluvio source has learned which partitions it owns. Each source named starts
/// over (as not caught up, unless it holds no backlog of its own), so the backlog of a
/// restart is applied in event time; sources of the scope that are not named (no longer
/// configured or owned) are forgotten, so they cannot hold the watermark back for ever.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SourceSet {
    pub now: Nanos,
    /// `None`: every source; `Some(p)`: the sources named `p` or `p/...` (one topic).
    pub scope: Option<String>,
    pub sources: Vec<SourceStart>,
    /// The live-time settings of the run (start entries only), so that replaying the log
    /// after a crash applies the values the run used, whatever the restart's flags say.
    pub live: Option<LiveSettings>,
}

/// One source as a [`SourceSet`] starts it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SourceStart {
    pub name: String,
    /// How long it must be caught up and quiet to be left out.
    pub quiet: Nanos,
    /// Whether it starts caught up: HTTP and stdin hold no backlog of their own (a
    /// client's retry is what the delivery allowance waits for); files and partitions
    /// start behind until they have read to their end.
    pub caught_up: bool,
}

/// Live-time settings, as logged.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LiveSettings {
    pub wall_clock: bool,
    pub idle_timeout: Nanos,
    pub delivery: Nanos,
    pub max_future_skew: Option<Nanos>,
}

impl SourceSet {
    pub fn in_scope(&self, name: &str) -> bool {
        match &self.scope {
            None => true,
            Some(p) => name.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

/// Records from one source, received together.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Records {
    /// `http`, `stdin` or the followed file's path: the `source` of dead letters.
    pub source: String,
    /// Wall clock at arrival: the future-skew check is made against it.
    pub received_at: Nanos,
    /// The bytes of all records, back to back.
    #[serde(with = "bytes")]
    pub data: Vec<u8>,
    pub records: Vec<RecordAt>,
    /// Where the source continues after these records (files and Fluvio partitions;
    /// HTTP and stdin cannot be re-read).
    pub resume: Option<Resume>,
    /// After these records the source had delivered everything it had (a file read to
    /// its end, a partition read to its end; HTTP always).
    pub caught_up: bool,
}

/// Where a re-readable source continues.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Resume {
    File(FilePosition),
    /// The next offset to read in a Fluvio partition.
    Fluvio {
        offset: i64,
    },
}

/// One record's place in [`Records::data`] and in its source.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordAt {
    pub start: u32,
    pub len: u32,
    /// 1-based line in the source (or in the request body).
    pub line: u64,
    /// Byte offset of the record in the source.
    pub offset: u64,
    /// Size in the source; more than `len` when the record was over the limit and cut.
    pub size: u64,
    pub truncated: bool,
}

impl Records {
    pub fn new(source: impl Into<String>, received_at: Nanos) -> Self {
        Records { source: source.into(), received_at, ..Default::default() }
    }

    pub fn push(&mut self, bytes: &[u8], line: u64, offset: u64, size: u64, truncated: bool) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        self.records.push(RecordAt { start, len: bytes.len() as u32, line, offset, size, truncated });
    }

    pub fn bytes(&self, r: &RecordAt) -> &[u8] {
        self.data.get(r.start as usize..(r.start as usize).saturating_add(r.len as usize)).unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl Input {
    pub fn encode(&self) -> Vec<u8> {
        // Plain data into a Vec: cannot fail.
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Input, bincode::error::DecodeError> {
        let cfg = bincode::config::standard();
        bincode::serde::decode_from_slice(bytes, cfg).map(|(i, _)| i).or_else(|e| {
            // A log written before records said whether their source was caught up.
            match bincode::serde::decode_from_slice::<legacy::Input, _>(bytes, cfg) {
                Ok((legacy::Input::Records(r), _)) => Ok(Input::Records(Records {
                    source: r.source,
                    received_at: r.received_at,
                    data: r.data,
                    records: r.records,
                    resume: r.resume,
                    caught_up: false,
                })),
                Ok((legacy::Input::Tick { now }, _)) => Ok(Input::Tick { now }),
                Err(_) => Err(e),
            }
        })
    }

    /// Bytes this input holds, for the backlog bound.
    pub fn weight(&self) -> u64 {
        match self {
            Input::Records(r) => (r.data.len() + r.records.len() * std::mem::size_of::<RecordAt>()) as u64,
            Input::Tick { .. } => 16,
            Input::Sources(s) => 64 + s.sources.iter().map(|src| src.name.len() as u64 + 16).sum::<u64>(),
        }
    }
}

/// The log entries of earlier versions.
mod legacy {
    use serde::Deserialize;

    use super::{RecordAt, Resume};
    use crate::timestamp::Nanos;

    #[derive(Deserialize)]
    pub enum Input {
        Records(Records),
        Tick { now: Nanos },
    }

    #[derive(Deserialize)]
    pub struct Records {
        pub source: String,
        pub received_at: Nanos,
        #[serde(with = "super::bytes")]
        pub data: Vec<u8>,
        pub records: Vec<RecordAt>,
        pub resume: Option<Resume>,
    }
}

/// Record bytes as one byte string (a sequence would encode byte by byte).
mod bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_bytes() {
        let mut r = Records::new("http", 42);
        r.push(b"{\"a\":1}", 1, 0, 7, false);
        r.push(b"", 2, 8, 0, false);
        r.push(b"xyz", 3, 9, 5_000_000, true);
        let input = Input::Records(r.clone());
        let back = Input::decode(&input.encode()).unwrap();
        assert_eq!(back, input);
        assert_eq!(r.bytes(&r.records[2]), b"xyz");
        assert!(Input::decode(&[0xff, 0xff, 0xff]).is_err());
        let start = SourceStart { name: "fluvio:t/0".into(), quiet: 3, caught_up: false };
        let live = LiveSettings { wall_clock: true, idle_timeout: 2, delivery: 120, max_future_skew: None };
        let set = Input::Sources(SourceSet {
            now: 7,
            scope: Some("fluvio:t".into()),
            sources: vec![start],
            live: Some(live),
        });
        assert_eq!(Input::decode(&set.encode()).unwrap(), set);
    }

    #[test]
    fn reads_the_entries_of_logs_written_before_caught_up_reports() {
        #[derive(Serialize)]
        enum Old<'a> {
            Records(&'a str, Nanos, serde_bytes_like::Bytes<'a>, Vec<RecordAt>, Option<Resume>),
            Tick { now: Nanos },
        }
        mod serde_bytes_like {
            pub struct Bytes<'a>(pub &'a [u8]);
            impl serde::Serialize for Bytes<'_> {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_bytes(self.0)
                }
            }
        }
        let mut r = Records::new("a.ndjson", 42);
        r.push(b"{}", 1, 0, 2, false);
        r.resume = Some(Resume::Fluvio { offset: 9 });
        let cfg = bincode::config::standard();
        let old = Old::Records("a.ndjson", 42, serde_bytes_like::Bytes(&r.data), r.records.clone(), r.resume.clone());
        let back = Input::decode(&bincode::serde::encode_to_vec(&old, cfg).unwrap()).unwrap();
        assert_eq!(back, Input::Records(r));
        let tick = bincode::serde::encode_to_vec(Old::Tick { now: 5 }, cfg).unwrap();
        assert_eq!(Input::decode(&tick).unwrap(), Input::Tick { now: 5 });
    }
}
