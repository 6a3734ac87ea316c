//! The checkpoint store: whole-state snapshots (an opaque payload the service builds)
//! written atomically and verified on load. A file is `magic, format version, payload
//! length, crc32, payload`; it is written to a temp file, fsynced, renamed and the
//! directory fsynced, and the newest two are kept so a torn or corrupt newest one
//! falls back to the one before.

use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"VRDCKPT\0";
const HEADER: usize = 8 + 4 + 8 + 4;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("shorter than a header ({0} bytes)")]
    Short(u64),
    #[error("not a verdict checkpoint (bad magic)")]
    Magic,
    #[error("format version {found}, this build reads {}", fmt_versions(.reads))]
    Version { found: u32, reads: RangeInclusive<u32> },
    #[error("the header says {said} payload bytes, the file holds {found}")]
    Length { said: u64, found: u64 },
    #[error("checksum mismatch: the payload is corrupt")]
    Checksum,
}

fn fmt_versions(r: &RangeInclusive<u32>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{} to {}", r.start(), r.end())
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io { op, path: path.to_path_buf(), source }
}

pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

#[derive(Debug)]
pub struct Written {
    pub seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct Good {
    pub seq: u64,
    pub path: PathBuf,
    /// The payload's format version.
    pub version: u32,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub struct Rejected {
    pub path: PathBuf,
    pub cause: CheckpointError,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub newest: Option<Good>,
    pub rejected: Vec<Rejected>,
}

impl CheckpointStore {
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        Ok(CheckpointStore { dir: dir.to_path_buf(), keep: 2 })
    }

    pub fn with_keep(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("checkpoint-{seq:020}.bin"))
    }

    /// Sequence numbers present, ascending.
    fn list(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut seqs = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let e = e.map_err(io_err("listing", &self.dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_prefix("checkpoint-").and_then(|n| n.strip_suffix(".bin")) {
                if let Ok(seq) = n.parse() {
                    seqs.push(seq);
                }
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    pub fn write(&mut self, version: u32, payload: &[u8]) -> Result<Written, CheckpointError> {
        let seqs = self.list()?;
        let seq = seqs.last().map_or(1, |s| s + 1);
        let tmp = self.dir.join(format!(".checkpoint-{seq:020}.tmp"));
        let path = self.path(seq);
        {
            let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
            let mut header = Vec::with_capacity(HEADER);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&version.to_le_bytes());
            header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            header.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            f.write_all(&header).map_err(io_err("writing", &tmp))?;
            f.write_all(payload).map_err(io_err("writing", &tmp))?;
            f.sync_all().map_err(io_err("syncing", &tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io_err("renaming", &tmp))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", &self.dir))?;
        let mut all = seqs;
        all.push(seq);
        for old in &all[..all.len().saturating_sub(self.keep)] {
            let p = self.path(*old);
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!("cannot remove old checkpoint {}: {e}", p.display());
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let n = e.file_name();
                if n.to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Written { seq, path, bytes: (HEADER + payload.len()) as u64 })
    }

    fn read(path: &Path, reads: &RangeInclusive<u32>) -> Result<(u32, Vec<u8>), CheckpointError> {
        let mut f = File::open(path).map_err(io_err("opening", path))?;
        let size = f.metadata().map_err(io_err("reading", path))?.len();
        if size < HEADER as u64 {
            return Err(CheckpointError::Short(size));
        }
        let mut h = [0u8; HEADER];
        f.read_exact(&mut h).map_err(io_err("reading", path))?;
        if &h[..8] != MAGIC {
            return Err(CheckpointError::Magic);
        }
        let found = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if !reads.contains(&found) {
            return Err(CheckpointError::Version { found, reads: reads.clone() });
        }
        let said = u64::from_le_bytes(h[12..20].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
        let body = size - HEADER as u64;
        if said != body {
            return Err(CheckpointError::Length { said, found: body });
        }
        let mut payload = Vec::with_capacity(body as usize);
        f.read_to_end(&mut payload).map_err(io_err("reading", path))?;
        if crc32fast::hash(&payload) != crc {
            return Err(CheckpointError::Checksum);
        }
        Ok((found, payload))
    }

    /// Sequence numbers of the checkpoints present, newest first.
    pub fn newest_first(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut seqs = self.list()?;
        seqs.reverse();
        Ok(seqs)
    }

    /// Reads and verifies checkpoint `seq`, of a format version in `reads`.
    pub fn load(&self, seq: u64, reads: RangeInclusive<u32>) -> Result<Good, Rejected> {
        let path = self.path(seq);
        match Self::read(&path, &reads) {
            Ok((version, payload)) => Ok(Good { seq, path, version, payload }),
            Err(cause) => Err(Rejected { path, cause }),
        }
    }

    /// The newest checkpoint that verifies; the newer ones that do not, with why.
    pub fn load_latest(&self, version: u32) -> Result<Loaded, CheckpointError> {
        let mut loaded = Loaded::default();
        for seq in self.newest_first()? {
            match self.load(seq, version..=version) {
                Ok(good) => {
                    loaded.newest = Some(good);
                    break;
                }
                Err(r) => loaded.rejected.push(r),
            }
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keep_two_and_fall_back() {
        let d = tempfile::tempdir().unwrap();
        let mut s = CheckpointStore::open(d.path()).unwrap();
        assert!(s.load_latest(1).unwrap().newest.is_none(), "empty store");
        std::fs::write(d.path().join(".checkpoint-00000000000000000009.tmp"), b"stale").unwrap();
        for i in 1..=3u8 {
            s.write(1, &[i; 100]).unwrap();
        }
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "keeps two, cleans temp files: {names:?}");
        let l = s.load_latest(1).unwrap();
        assert_eq!((l.newest.as_ref().unwrap().seq, l.newest.unwrap().payload), (3, vec![3u8; 100]));

        // Corrupt the newest: the previous one loads, and the cause is reported.
        let newest = s.path(3);
        let mut b = std::fs::read(&newest).unwrap();
        b[HEADER + 5] ^= 1;
        std::fs::write(&newest, &b).unwrap();
        let l = s.load_latest(1).unwrap();
        assert_eq!(l.newest.unwrap().payload, vec![2u8; 100]);
        assert!(matches!(l.rejected[0].cause, CheckpointError::Checksum));
        // Torn: cut mid-payload.
        std::fs::write(&newest, &b[..HEADER + 10]).unwrap();
        let l = s.load_latest(1).unwrap();
        assert!(matches!(l.rejected[0].cause, CheckpointError::Length { said: 100, found: 10 }));
        std::fs::write(&newest, &b[..5]).unwrap();
        assert!(matches!(s.load_latest(1).unwrap().rejected[0].cause, CheckpointError::Short(5)));
        // Another format version is refused.
        assert!(matches!(s.load_latest(2).unwrap().rejected.last().unwrap().cause, CheckpointError::Version { .. }));
    }
}
