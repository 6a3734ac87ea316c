//! NDJSON line reading with positions and a bound on memory: a line longer than the
//! record limit is read through (and counted) but only its start is kept.

use std::io::{self, BufRead, BufReader, Read};

use crate::decode::MAX_RECORD_BYTES;

/// One line, without its newline (and without a trailing `\r`).
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// 1-based.
    pub line: u64,
    /// Byte offset of the line's start.
    pub offset: u64,
    /// Bytes of the line's content in the source (may exceed `bytes.len()`).
    pub size: u64,
    /// Whether the line was longer than the limit and `bytes` is only its start.
    pub truncated: bool,
}

pub struct LineReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    line: u64,
    offset: u64,
    max: usize,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_RECORD_BYTES)
    }

    pub fn with_limit(inner: R, max: usize) -> Self {
        LineReader { inner: BufReader::with_capacity(256 * 1024, inner), buf: Vec::new(), line: 0, offset: 0, max }
    }

    /// Whether input is already buffered, so the next line may not need to wait.
    pub fn has_buffered(&self) -> bool {
        !self.inner.buffer().is_empty()
    }

    /// The next line; `None` at end of input. A last line without `\n` counts.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let start = self.offset;
        let mut consumed: u64 = 0;
        let mut content: u64 = 0;
        let mut saw_any = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if !saw_any {
                    return Ok(None);
                }
                break;
            }
            saw_any = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            let room = (self.max + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            content += chunk.len() as u64;
            consumed += used as u64;
            self.inner.consume(used);
            if done {
                break;
            }
        }
        self.line += 1;
        self.offset += consumed;
        let truncated = content > self.max as u64;
        if truncated {
            self.buf.truncate(self.max);
        } else if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
            content -= 1;
        }
        Ok(Some(Line { bytes: &self.buf, line: self.line, offset: start, size: content, truncated }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<(Vec<u8>, u64, u64, u64, bool)> {
        let mut r = LineReader::with_limit(input, max);
        let mut out = vec![];
        while let Some(l) = r.next_line().unwrap() {
            out.push((l.bytes.to_vec(), l.line, l.offset, l.size, l.truncated));
        }
        out
    }

    #[test]
    fn positions_crlf_and_last_line() {
        let got = lines(b"ab\r\n\ncde", 100);
        assert_eq!(
            got,
            vec![(b"ab".to_vec(), 1, 0, 2, false), (b"".to_vec(), 2, 4, 0, false), (b"cde".to_vec(), 3, 5, 3, false)]
        );
        assert!(lines(b"", 100).is_empty());
    }

    #[test]
    fn long_lines_are_bounded() {
        let mut input = vec![b'x'; 50];
        input.push(b'\n');
        input.extend_from_slice(b"ok\n");
        let got = lines(&input, 10);
        assert_eq!(got[0].0.len(), 10);
        assert_eq!(got[0].3, 50);
        assert!(got[0].4);
        assert_eq!(got[1], (b"ok".to_vec(), 2, 51, 2, false));
    }
}
