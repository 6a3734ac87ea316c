//! What the write-ahead log holds: every input the worker applies, in the order it
//! applies them. Records keep their raw bytes (the worker decodes them, so the log is
//! the input itself), and the wall clock enters only through logged values (the
//! arrival time of a batch, ticks), so replaying the log after a crash gives the same
//! verdicts, byte for byte, as the run that wrote it.

use serde::{Deserialize, Serialize};

use crate::sources::tail::FilePosition;
use crate::timestamp::Nanos;

/// One log entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Input {
    Records(Records),
    /// The wall clock was read as `now`; may advance the watermark of an idle stream.
    Tick {
        now: Nanos,
    },
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
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(i, _)| i)
    }

    /// Bytes this input holds, for the backlog bound.
    pub fn weight(&self) -> u64 {
        match self {
            Input::Records(r) => (r.data.len() + r.records.len() * std::mem::size_of::<RecordAt>()) as u64,
            Input::Tick { .. } => 16,
        }
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
    }
}
