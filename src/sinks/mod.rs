//! Sinks: where verdicts and dead letters go: NDJSON to a file or stdout, and (from
//! those files) to Fluvio topics.

pub mod append;
pub mod fluvio;

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;

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
    pub fn write<T: serde::Serialize>(&mut self, record: &T) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record).map_err(io::Error::other)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
