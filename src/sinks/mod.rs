//! Sinks: where verdicts and dead letters go: NDJSON to a file or stdout, and (from
//! those files) to Fluvio topics and, as usage events, to a billing platform's API.

pub mod append;
pub mod fluvio;
pub mod push;

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// A record a sink writes as one JSON line. The default is its `Serialize` form; a
/// type on the hot path writes itself directly (the same bytes).
pub trait JsonLine: serde::Serialize {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        serde_json::to_writer(out, self).map_err(io::Error::other)
    }
}

impl JsonLine for crate::verdicts::Verdict {
    fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        crate::verdicts::Verdict::write_json(self, out);
        Ok(())
    }
}

impl JsonLine for crate::decode::DeadLetter<'_> {}
impl JsonLine for &str {}

/// An NDJSON writer.
pub struct NdjsonSink {
    out: BufWriter<Box<dyn Write + Send>>,
    line: Vec<u8>,
    pub written: u64,
}

impl NdjsonSink {
    /// Stdout when `path` is `None` or `-`; otherwise the file, truncated or appended.
    pub fn open(path: Option<&Path>, append: bool) -> io::Result<NdjsonSink> {
        let w: Box<dyn Write + Send> = match path {
            None => Box::new(io::stdout()),
            Some(p) if p.as_os_str() == "-" => Box::new(io::stdout()),
            Some(p) => Box::new(OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(p)?),
        };
        Ok(Self::new(w))
    }

    pub fn stderr() -> NdjsonSink {
        Self::new(Box::new(io::stderr()))
    }

    pub fn new(w: Box<dyn Write + Send>) -> NdjsonSink {
        NdjsonSink { out: BufWriter::with_capacity(256 * 1024, w), line: Vec::with_capacity(1024), written: 0 }
    }

    /// Writes one record as one line.
    pub fn write<T: JsonLine>(&mut self, record: &T) -> io::Result<()> {
        self.line.clear();
        record.write_json(&mut self.line)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
