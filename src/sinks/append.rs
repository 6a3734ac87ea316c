//! An append-only NDJSON file that knows its exact length, so a checkpoint can record
//! it and recovery can cut the file back to it: what was written after the checkpoint
//! is written again by the replay, and each line ends up in the file exactly once.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct AppendFile {
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    line: Vec<u8>,
}

/// What opening at a checkpointed length found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reopened {
    /// The file was exactly as checkpointed.
    Intact,
    /// Lines written after the checkpoint were cut (this many bytes).
    Cut(u64),
    /// The file is shorter than the checkpoint says (rotated or edited by hand): kept
    /// as it is, and appended to.
    Shorter { found: u64 },
}

impl AppendFile {
    /// Opens (creating) `path`; with `at` (the length a checkpoint recorded), cuts it back
    /// to that length.
    pub fn open(path: &Path, at: Option<u64>) -> io::Result<(AppendFile, Reopened)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(path)?;
        let found = file.metadata()?.len();
        let state = match at {
            Some(at) if found > at => {
                file.set_len(at)?;
                file.sync_data()?;
                Reopened::Cut(found - at)
            }
            Some(at) if found < at => Reopened::Shorter { found },
            _ => Reopened::Intact,
        };
        let len = file.seek(SeekFrom::End(0))?;
        Ok((
            AppendFile {
                path: path.to_path_buf(),
                out: BufWriter::with_capacity(256 * 1024, file),
                len,
                line: Vec::new(),
            },
            state,
        ))
    }

    /// Appends one record as one line; returns the offset where the line starts.
    pub fn write<T: super::JsonLine>(&mut self, record: &T) -> io::Result<u64> {
        self.line.clear();
        record.write_json(&mut self.line)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        let at = self.len;
        self.len += self.line.len() as u64;
        Ok(at)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and makes the file durable: called before a checkpoint records `len`.
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads the line starting at `offset` of a file written by [`AppendFile`].
pub fn read_line_at(path: &Path, offset: u64, max: usize) -> io::Result<Vec<u8>> {
    use std::io::{BufRead, BufReader, Read};
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut line = Vec::new();
    BufReader::new(f).take(max as u64).read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_back_to_the_checkpointed_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.ndjson");
        let (mut f, state) = AppendFile::open(&p, None).unwrap();
        assert_eq!(state, Reopened::Intact);
        f.write(&"one").unwrap();
        f.sync().unwrap();
        let checkpointed = f.len();
        let second = f.write(&"two").unwrap();
        f.flush().unwrap();
        assert_eq!(read_line_at(&p, second, 1024).unwrap(), b"\"two\"");
        drop(f);
        let (mut f, state) = AppendFile::open(&p, Some(checkpointed)).unwrap();
        assert_eq!(state, Reopened::Cut(6));
        f.write(&"three").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "\"one\"\n\"three\"\n");
        let (_, state) = AppendFile::open(&p, Some(1000)).unwrap();
        assert_eq!(state, Reopened::Shorter { found: 14 });
    }
}
