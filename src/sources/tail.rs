//! Following a file like `tail -F`: complete lines as they are appended, surviving
//! rotation by rename (the old file is read to its end first), copytruncate and
//! delete-and-recreate, and resuming exactly from a checkpointed [`FilePosition`].
//!
//! Polls are non-blocking; the caller decides how often to poll. A line longer than
//! the record limit is consumed to its end but only its start is kept, so memory stays
//! bounded even for a huge line that is still being written.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::decode::MAX_RECORD_BYTES;

/// Which file, and how far into it lines have been delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    pub dev: u64,
    pub ino: u64,
    /// Just after the last delivered newline.
    pub offset: u64,
    /// Lines delivered so far (1-based numbers of the next line start after it).
    pub line: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("following {path}: {op}: {source}")]
pub struct TailError {
    path: PathBuf,
    op: &'static str,
    source: io::Error,
}

/// One delivered line, pointing into [`Batch`]'s buffer.
#[derive(Clone, Debug)]
pub struct TailLineAt {
    range: Range<usize>,
    pub line: u64,
    pub offset: u64,
    pub size: u64,
    pub truncated: bool,
}

/// Lines of one poll: one byte buffer and their places in it (no allocation per line).
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    lines: Vec<TailLineAt>,
}

/// A line as handed to the caller.
pub struct TailLine<'a> {
    pub bytes: &'a [u8],
    pub line: u64,
    pub offset: u64,
    pub size: u64,
    pub truncated: bool,
}

impl Batch {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.lines.clear();
    }
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
    pub fn len(&self) -> usize {
        self.lines.len()
    }
    pub fn lines(&self) -> impl Iterator<Item = TailLine<'_>> {
        self.lines.iter().map(|l| TailLine {
            bytes: &self.buf[l.range.clone()],
            line: l.line,
            offset: l.offset,
            size: l.size,
            truncated: l.truncated,
        })
    }
}

struct Open {
    file: File,
    dev: u64,
    ino: u64,
    /// Offset of the first byte not yet delivered (start of `partial`).
    offset: u64,
    line: u64,
    /// Bytes read past `offset` that do not yet end in a newline (bounded).
    partial: Vec<u8>,
    /// Content bytes of the pending line (may exceed `partial.len()`).
    partial_size: u64,
}

pub struct Follower {
    path: PathBuf,
    open: Option<Open>,
    resume: Option<FilePosition>,
    chunk: Vec<u8>,
}

impl Follower {
    pub fn new(path: PathBuf, start: Option<FilePosition>) -> Follower {
        Follower { path, open: None, resume: start, chunk: vec![0; 256 * 1024] }
    }

    fn err(&self, op: &'static str) -> impl FnOnce(io::Error) -> TailError + '_ {
        move |source| TailError { path: self.path.clone(), op, source }
    }

    /// Where to resume after the lines delivered so far.
    pub fn position(&self) -> Option<FilePosition> {
        let o = self.open.as_ref()?;
        Some(FilePosition { dev: o.dev, ino: o.ino, offset: o.offset, line: o.line })
    }

    /// Opens the file at the path, if there is one, at the right place.
    fn open_path(&mut self) -> Result<bool, TailError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(TailError { path: self.path.clone(), op: "opening", source: e }),
        };
        let meta = file.metadata().map_err(self.err("reading metadata"))?;
        let (dev, ino, len) = (meta.dev(), meta.ino(), meta.len());
        let (offset, line) = match self.resume.take() {
            Some(p) if p.dev == dev && p.ino == ino && p.offset <= len => (p.offset, p.line),
            Some(p) if p.dev == dev && p.ino == ino => {
                tracing::warn!(
                    "{} is shorter than its checkpointed position (copytruncate?); reading it from the start",
                    self.path.display()
                );
                (0, 0)
            }
            Some(_) => {
                tracing::warn!(
                    "{} is a different file than at the checkpoint (rotated while stopped); reading the new file from its start",
                    self.path.display()
                );
                (0, 0)
            }
            None => (0, 0),
        };
        let mut file = file;
        file.seek(SeekFrom::Start(offset)).map_err(self.err("seeking"))?;
        self.open = Some(Open { file, dev, ino, offset, line, partial: Vec::new(), partial_size: 0 });
        Ok(true)
    }

    /// Appends the complete lines available now (about `max_bytes` of them) to `out`;
    /// returns whether it read to the end of the file (or there is no file yet).
    pub fn poll(&mut self, max_bytes: usize, out: &mut Batch) -> Result<bool, TailError> {
        if self.open.is_none() && !self.open_path()? {
            return Ok(true);
        }
        let start_len = out.buf.len();
        loop {
            if out.buf.len() - start_len >= max_bytes {
                return Ok(false);
            }
            let Some(o) = self.open.as_mut() else { return Ok(true) };
            let n = match o.file.read(&mut self.chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TailError { path: self.path.clone(), op: "reading", source: e }),
            };
            if n > 0 {
                Self::split(o, &self.chunk[..n], out);
                continue;
            }
            // At the end of the open file: has the path moved on?
            let here = std::fs::metadata(&self.path);
            let Some(o) = self.open.as_mut() else { return Ok(true) };
            match here {
                Ok(m) if m.dev() == o.dev && m.ino() == o.ino => {
                    let read_to = o.offset + o.partial_size;
                    if m.len() < read_to {
                        tracing::warn!(
                            "{} was truncated (copytruncate); reading it from the start",
                            self.path.display()
                        );
                        o.file.seek(SeekFrom::Start(0)).map_err(|e| TailError {
                            path: self.path.clone(),
                            op: "seeking",
                            source: e,
                        })?;
                        o.offset = 0;
                        o.line = 0;
                        o.partial.clear();
                        o.partial_size = 0;
                        continue;
                    }
                    return Ok(true);
                }
                Ok(_) => {
                    // Rotated: the old file is complete; its unterminated rest is a line.
                    Self::finish_partial(o, out);
                    self.open = None;
                    if !self.open_path()? {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
                Err(e) => return Err(TailError { path: self.path.clone(), op: "reading metadata", source: e }),
            }
        }
    }

    fn split(o: &mut Open, mut data: &[u8], out: &mut Batch) {
        while let Some(i) = memchr::memchr(b'\n', data) {
            Self::take(o, &data[..i]);
            Self::emit(o, 1, out);
            data = &data[i + 1..];
        }
        Self::take(o, data);
    }

    fn take(o: &mut Open, bytes: &[u8]) {
        let room = (MAX_RECORD_BYTES + 1).saturating_sub(o.partial.len());
        o.partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
        o.partial_size += bytes.len() as u64;
    }

    /// Delivers the pending line; `newline` is 1 if a newline ended it.
    fn emit(o: &mut Open, newline: u64, out: &mut Batch) {
        let mut size = o.partial_size;
        let truncated = size > MAX_RECORD_BYTES as u64;
        if truncated {
            o.partial.truncate(MAX_RECORD_BYTES);
        } else if o.partial.last() == Some(&b'\r') && newline == 1 {
            o.partial.pop();
            size -= 1;
        }
        let start = out.buf.len();
        out.buf.extend_from_slice(&o.partial);
        o.line += 1;
        out.lines.push(TailLineAt { range: start..out.buf.len(), line: o.line, offset: o.offset, size, truncated });
        o.offset += o.partial_size + newline;
        o.partial.clear();
        o.partial_size = 0;
    }

    fn finish_partial(o: &mut Open, out: &mut Batch) {
        if o.partial_size > 0 {
            Self::emit(o, 0, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(p: &std::path::Path, s: &[u8]) {
        std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap().write_all(s).unwrap();
    }

    fn poll(f: &mut Follower) -> Vec<(String, u64, u64)> {
        let mut b = Batch::default();
        f.poll(1 << 20, &mut b).unwrap();
        b.lines().map(|l| (String::from_utf8_lossy(l.bytes).into_owned(), l.line, l.offset)).collect()
    }

    #[test]
    fn half_lines_wait_crlf_and_empty_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("in.ndjson");
        let mut f = Follower::new(p.clone(), None);
        assert!(poll(&mut f).is_empty(), "a missing file is waited for");
        append(&p, b"one\r\ntw");
        assert_eq!(poll(&mut f), [("one".into(), 1, 0)]);
        append(&p, b"o\n\nthree\n");
        assert_eq!(poll(&mut f), [("two".into(), 2, 5), ("".into(), 3, 9), ("three".into(), 4, 10)]);
        assert_eq!(f.position().unwrap().offset, 16);
    }

    #[test]
    fn rename_rotation_loses_and_repeats_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("in.ndjson");
        append(&p, b"a\nb\n");
        let mut f = Follower::new(p.clone(), None);
        assert_eq!(poll(&mut f).len(), 2);
        std::fs::rename(&p, d.path().join("in.ndjson.1")).unwrap();
        append(&d.path().join("in.ndjson.1"), b"c\nd-unterminated");
        assert_eq!(poll(&mut f), [("c".into(), 3, 4)], "the old file is read to its end");
        append(&p, b"e\n");
        let got = poll(&mut f);
        assert_eq!(got, [("d-unterminated".into(), 4, 6), ("e".into(), 1, 0)]);
    }

    #[test]
    fn copytruncate_and_recreate() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("in.ndjson");
        append(&p, b"a\nb\n");
        let mut f = Follower::new(p.clone(), None);
        assert_eq!(poll(&mut f).len(), 2);
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(0).unwrap();
        append(&p, b"c\n");
        assert_eq!(poll(&mut f), [("c".into(), 1, 0)]);
        std::fs::remove_file(&p).unwrap();
        assert!(poll(&mut f).is_empty());
        append(&p, b"new\n");
        assert_eq!(poll(&mut f), [("new".into(), 1, 0)]);
    }

    #[test]
    fn resumes_exactly_or_starts_a_new_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("in.ndjson");
        append(&p, b"a\nb\n");
        let mut f = Follower::new(p.clone(), None);
        poll(&mut f);
        let pos = f.position().unwrap();
        append(&p, b"c\n");
        let mut g = Follower::new(p.clone(), Some(pos.clone()));
        assert_eq!(poll(&mut g), [("c".into(), 3, 4)]);
        std::fs::remove_file(&p).unwrap();
        append(&p, b"x\n");
        let mut h = Follower::new(p.clone(), Some(pos));
        assert_eq!(poll(&mut h), [("x".into(), 1, 0)]);
    }

    #[test]
    fn an_over_long_line_is_cut_and_the_next_is_intact() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("in.ndjson");
        let mut big = vec![b'x'; 3 << 20];
        big.extend_from_slice(b"\nok\n");
        append(&p, &big);
        let mut f = Follower::new(p.clone(), None);
        let mut b = Batch::default();
        while b.len() < 2 {
            f.poll(1 << 20, &mut b).unwrap();
        }
        let lines: Vec<_> = b.lines().collect();
        assert!(lines[0].truncated);
        assert_eq!((lines[0].bytes.len(), lines[0].size), (MAX_RECORD_BYTES, 3 << 20));
        assert_eq!((lines[1].bytes, lines[1].line, lines[1].offset), (&b"ok"[..], 2, (3 << 20) + 1));
    }
}
