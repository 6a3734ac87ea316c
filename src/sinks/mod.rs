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

/// Most bytes a file-shipping sink (Fluvio, push) reads per round.
pub(crate) const CHUNK: usize = 1 << 20;

/// The complete lines at the start of `buf` (without their newlines) and how many bytes
/// they take with their newlines; a line still being written is left for later.
pub fn complete_lines(buf: &[u8]) -> (impl Iterator<Item = &[u8]>, usize) {
    let used = memchr::memrchr(b'\n', buf).map_or(0, |i| i + 1);
    let lines = buf[..used].split(|&b| b == b'\n').filter(|l| !l.is_empty());
    (lines, used)
}

/// Reads up to [`CHUNK`] bytes of `path` from `pos` into `buf`: what a file-shipping
/// sink sends next.
pub(crate) fn read_at(path: &std::path::Path, pos: u64, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(pos))?;
    buf.clear();
    f.take(CHUNK as u64).read_to_end(buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_lines_are_shipped() {
        let (lines, used) = complete_lines(b"a\nbb\n\ncc");
        assert_eq!(lines.collect::<Vec<_>>(), [&b"a"[..], b"bb"]);
        assert_eq!(used, 6);
        let (lines, used) = complete_lines(b"partial");
        assert_eq!((lines.count(), used), (0, 0));
    }
}
