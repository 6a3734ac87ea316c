//! The write-ahead log: every input batch is appended here (and fsynced, in groups)
//! before it is acknowledged or applied; after a crash the service replays it from the
//! position its last checkpoint recorded.
//!
//! Positions are logical byte offsets across segments. A segment is a file named by its
//! 20-digit start position plus `.wal`; an entry is `[u32 LE length][u32 LE crc32]
//! [payload]`. Only the last segment can have a torn tail (earlier ones were synced
//! before a newer one was started); opening the log cuts it off.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest payload of one entry.
pub const MAX_ENTRY_BYTES: usize = 64 << 20;
const HEADER: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("corrupt log entry in {path} at byte {offset}: {cause}")]
    Corrupt { path: PathBuf, offset: u64, cause: String },
    #[error("the log starts at position {first}, but position {wanted} is needed (segments were removed)")]
    Missing { wanted: u64, first: u64 },
    #[error("position {wanted} is past the end of the log ({end})")]
    PastEnd { wanted: u64, end: u64 },
    #[error("an entry of {0} bytes is over the limit of {MAX_ENTRY_BYTES}")]
    TooLarge(usize),
    #[error(
        "{path} is damaged at byte {offset} ({cause}), and valid log entries follow it ({after} bytes): \
         cutting the log there would throw away more than a torn last entry"
    )]
    Damaged { path: PathBuf, offset: u64, cause: String, after: u64 },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io { op, path: path.to_path_buf(), source }
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.wal"))
}

/// Start positions of the segments in `dir`, ascending.
fn segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut starts = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let e = e.map_err(io_err("listing", dir))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_suffix(".wal").filter(|n| n.len() == 20).and_then(|n| n.parse().ok()) {
            starts.push(n);
        }
    }
    starts.sort_unstable();
    Ok(starts)
}

/// Reads one entry at the reader's position. `Ok(None)`: clean end of the segment;
/// `Err(cause)`: a torn or corrupt entry.
fn read_entry(r: &mut impl Read, remaining: u64) -> io::Result<Result<Option<Vec<u8>>, String>> {
    if remaining == 0 {
        return Ok(Ok(None));
    }
    if remaining < HEADER {
        return Ok(Err(format!("a partial header of {remaining} bytes")));
    }
    let mut h = [0u8; 8];
    r.read_exact(&mut h)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len as usize > MAX_ENTRY_BYTES {
        return Ok(Err(format!("a length of {len} bytes")));
    }
    // No entry is empty; zeros past the end of a torn write look like one.
    if len == 0 {
        return Ok(Err("a zero length".into()));
    }
    if len > remaining - HEADER {
        return Ok(Err(format!("an entry of {len} bytes with only {} left", remaining - HEADER)));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(Err("a checksum mismatch".into()));
    }
    Ok(Ok(Some(payload)))
}

/// What opening the log found.
#[derive(Debug, Default)]
pub struct Recovery {
    pub end: u64,
    pub truncated_bytes: u64,
    /// Where a torn tail was cut: the segment and the offset in it.
    pub cut_at: Option<(PathBuf, u64)>,
    /// The cut took more than a torn last entry (allowed by the caller): why.
    pub damaged: Option<String>,
}

/// Whether a whole, valid entry follows the bad entry at `at` (whose header is `h`):
/// then the bad bytes are damage inside the log, not a torn last entry (a write cut
/// short by a crash ends the log). Returns the bytes from that valid entry to the end.
fn valid_entry_after(f: &mut File, at: u64, size: u64) -> io::Result<Option<u64>> {
    let mut h = [0u8; 8];
    f.seek(SeekFrom::Start(at))?;
    if size - at < HEADER || f.read_exact(&mut h).is_err() {
        return Ok(None);
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64;
    let next = at + HEADER + len;
    if len > MAX_ENTRY_BYTES as u64 || next >= size {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(next))?;
    let mut r = io::BufReader::new(f);
    Ok(matches!(read_entry(&mut r, size - next)?, Ok(Some(_))).then_some(size - next))
}

/// The writer.
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    file: File,
    start: u64,
    /// Bytes in the current segment.
    len: u64,
    buf: Vec<u8>,
    /// Segments written since the last sync, other than the current one.
    unsynced: Vec<File>,
    new_segment: bool,
}

impl Wal {
    /// Opens the log in `dir`, cutting a torn last entry off its end. Damage with more
    /// log after it is an error unless `accept_damage`, which cuts there too and says so.
    pub fn open(dir: &Path, segment_bytes: u64, accept_damage: bool) -> Result<(Wal, Recovery), WalError> {
        std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        let starts = segments(dir)?;
        let mut rec = Recovery::default();
        let (start, file, len) = match starts.last() {
            None => {
                let p = segment_path(dir, 0);
                let f = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .write(true)
                    .truncate(false)
                    .open(&p)
                    .map_err(io_err("creating", &p))?;
                sync_dir(dir)?;
                (0, f, 0)
            }
            Some(&start) => {
                let p = segment_path(dir, start);
                let mut f = OpenOptions::new().read(true).write(true).open(&p).map_err(io_err("opening", &p))?;
                let size = f.metadata().map_err(io_err("reading", &p))?.len();
                let mut r = io::BufReader::new(&mut f);
                let mut good = 0u64;
                let mut bad = None;
                loop {
                    match read_entry(&mut r, size - good).map_err(io_err("reading", &p))? {
                        Ok(Some(payload)) => good += HEADER + payload.len() as u64,
                        Ok(None) => break,
                        Err(cause) => {
                            bad = Some(cause);
                            break;
                        }
                    }
                }
                drop(r);
                if let Some(cause) = bad {
                    if let Some(after) = valid_entry_after(&mut f, good, size).map_err(io_err("reading", &p))? {
                        let damage = WalError::Damaged { path: p.clone(), offset: good, cause, after };
                        if !accept_damage {
                            return Err(damage);
                        }
                        rec.damaged = Some(damage.to_string());
                    }
                }
                if good < size {
                    f.set_len(good).map_err(io_err("truncating", &p))?;
                    f.sync_all().map_err(io_err("syncing", &p))?;
                    rec.truncated_bytes = size - good;
                    rec.cut_at = Some((p.clone(), good));
                }
                f.seek(SeekFrom::Start(good)).map_err(io_err("seeking", &p))?;
                (start, f, good)
            }
        };
        rec.end = start + len;
        let wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(HEADER + 1),
            file,
            start,
            len,
            buf: Vec::new(),
            unsynced: Vec::new(),
            new_segment: false,
        };
        Ok((wal, rec))
    }

    pub fn end(&self) -> u64 {
        self.start + self.len + self.buf.len() as u64
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one entry; durable after [`Wal::sync`]. Returns its (start, end).
    pub fn append(&mut self, payload: &[u8]) -> Result<(u64, u64), WalError> {
        if payload.len() > MAX_ENTRY_BYTES {
            return Err(WalError::TooLarge(payload.len()));
        }
        let size = HEADER + payload.len() as u64;
        let used = self.len + self.buf.len() as u64;
        if used > 0 && used + size > self.segment_bytes {
            self.roll()?;
        }
        let at = self.end();
        self.buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.buf.extend_from_slice(payload);
        Ok((at, at + size))
    }

    fn flush_buf(&mut self) -> Result<(), WalError> {
        if !self.buf.is_empty() {
            let p = segment_path(&self.dir, self.start);
            self.file.write_all(&self.buf).map_err(io_err("writing", &p))?;
            self.len += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    fn roll(&mut self) -> Result<(), WalError> {
        self.flush_buf()?;
        self.start_segment(self.start + self.len)
    }

    /// Starts a new segment at position `at` (buffered entries already written).
    fn start_segment(&mut self, at: u64) -> Result<(), WalError> {
        let p = segment_path(&self.dir, at);
        let f = OpenOptions::new().create(true).write(true).truncate(true).open(&p).map_err(io_err("creating", &p))?;
        let old = std::mem::replace(&mut self.file, f);
        self.unsynced.push(old);
        self.start = at;
        self.len = 0;
        self.new_segment = true;
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.flush_buf()?;
        for f in self.unsynced.drain(..) {
            f.sync_data().map_err(io_err("syncing", &self.dir))?;
        }
        self.file.sync_data().map_err(io_err("syncing", &segment_path(&self.dir, self.start)))?;
        if std::mem::take(&mut self.new_segment) {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Continues the log at `pos`, past its end, in a new segment: after a loss the
    /// operator accepted, so positions stay those the newest checkpoint recorded.
    pub fn skip_to(&mut self, pos: u64) -> Result<(), WalError> {
        if pos <= self.end() {
            return Ok(());
        }
        self.flush_buf()?;
        self.start_segment(pos)?;
        self.sync()
    }

    /// Removes segments whose entries all end at or before `pos`; never the current one.
    pub fn remove_before(&mut self, pos: u64) -> Result<usize, WalError> {
        let starts = segments(&self.dir)?;
        let mut removed = 0;
        for w in starts.windows(2) {
            let (s, next) = (w[0], w[1]);
            if next <= pos && s != self.start {
                let p = segment_path(&self.dir, s);
                std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", dir))
}

/// One entry read back.
#[derive(Debug)]
pub struct WalEntry {
    pub start: u64,
    pub end: u64,
    pub payload: Vec<u8>,
}

/// Reads entries from a position to the end of the log.
pub struct WalReader {
    dir: PathBuf,
    starts: Vec<u64>,
    /// Index into `starts` of the open segment.
    seg: usize,
    reader: io::BufReader<File>,
    seg_size: u64,
    pos_in_seg: u64,
}

impl WalReader {
    pub fn open(dir: &Path, from: u64) -> Result<WalReader, WalError> {
        let starts = segments(dir)?;
        let first = starts.first().copied().unwrap_or(0);
        if from < first {
            return Err(WalError::Missing { wanted: from, first });
        }
        let seg = starts.iter().rposition(|&s| s <= from).unwrap_or(0);
        let start = starts.get(seg).copied().unwrap_or(0);
        let p = segment_path(dir, start);
        let f = File::open(&p).map_err(io_err("opening", &p))?;
        let size = f.metadata().map_err(io_err("reading", &p))?.len();
        if from - start > size {
            return Err(WalError::PastEnd { wanted: from, end: start + size });
        }
        let mut reader = io::BufReader::with_capacity(1 << 20, f);
        reader.seek(SeekFrom::Start(from - start)).map_err(io_err("seeking", &p))?;
        Ok(WalReader { dir: dir.to_path_buf(), starts, seg, reader, seg_size: size, pos_in_seg: from - start })
    }

    pub fn next_entry(&mut self) -> Result<Option<WalEntry>, WalError> {
        loop {
            let start = self.starts.get(self.seg).copied().unwrap_or(0);
            let p = segment_path(&self.dir, start);
            let last = self.seg + 1 >= self.starts.len();
            match read_entry(&mut self.reader, self.seg_size - self.pos_in_seg).map_err(io_err("reading", &p))? {
                Ok(Some(payload)) => {
                    let at = start + self.pos_in_seg;
                    self.pos_in_seg += HEADER + payload.len() as u64;
                    return Ok(Some(WalEntry { start: at, end: start + self.pos_in_seg, payload }));
                }
                Ok(None) if last => return Ok(None),
                Err(_) if last => return Ok(None),
                Err(cause) => return Err(WalError::Corrupt { path: p, offset: self.pos_in_seg, cause }),
                Ok(None) => {
                    self.seg += 1;
                    let np = segment_path(&self.dir, self.starts[self.seg]);
                    let f = File::open(&np).map_err(io_err("opening", &np))?;
                    self.seg_size = f.metadata().map_err(io_err("reading", &np))?.len();
                    self.reader = io::BufReader::with_capacity(1 << 20, f);
                    self.pos_in_seg = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(dir: &Path, from: u64) -> Vec<Vec<u8>> {
        let mut r = WalReader::open(dir, from).unwrap();
        let mut out = vec![];
        while let Some(e) = r.next_entry().unwrap() {
            out.push(e.payload);
        }
        out
    }

    #[test]
    fn round_trip_across_segments_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, rec) = Wal::open(d.path(), 64, false).unwrap();
        assert_eq!(rec.end, 0);
        let mut ends = vec![];
        for i in 0..20u8 {
            ends.push(w.append(&vec![i; 10 + i as usize]).unwrap().1);
        }
        w.append(&[7u8; 300]).unwrap(); // bigger than a segment
        w.sync().unwrap();
        assert!(segments(d.path()).unwrap().len() > 5);
        let got = all(d.path(), 0);
        assert_eq!(got.len(), 21);
        assert_eq!(got[3], vec![3u8; 13]);
        assert_eq!(all(d.path(), ends[9]).len(), 11, "reads from any entry boundary");
        let end = w.end();
        drop(w);
        let (mut w, rec) = Wal::open(d.path(), 64, false).unwrap();
        assert_eq!((rec.end, rec.truncated_bytes), (end, 0));
        w.append(b"more").unwrap();
        w.sync().unwrap();
        assert_eq!(all(d.path(), 0).last().unwrap(), b"more");
        // Remove what a checkpoint at ends[9] covers; the rest is still readable.
        assert!(w.remove_before(ends[9]).unwrap() > 0);
        assert_eq!(all(d.path(), ends[9]).len(), 12);
        assert!(matches!(WalReader::open(d.path(), 0), Err(WalError::Missing { .. })));
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(d.path(), 1 << 20, false).unwrap();
        w.append(b"one").unwrap();
        let (_, good) = w.append(b"two").unwrap();
        w.append(b"three-three").unwrap();
        w.sync().unwrap();
        drop(w);
        let seg = segment_path(d.path(), 0);
        let len = std::fs::metadata(&seg).unwrap().len();
        // Torn: cut mid-entry.
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 3).unwrap();
        assert_eq!(all(d.path(), 0).len(), 2, "the reader stops before a torn entry");
        let (w, rec) = Wal::open(d.path(), 1 << 20, false).unwrap();
        assert_eq!((rec.end, rec.truncated_bytes), (good, len - 3 - good));
        drop(w);
        // Corrupt: flip a payload byte of the last entry.
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let (_, rec) = Wal::open(d.path(), 1 << 20, false).unwrap();
        assert_eq!(rec.end, good - (HEADER + 3));
        assert_eq!(all(d.path(), 0), vec![b"one".to_vec()]);
    }

    #[test]
    fn damage_with_valid_entries_after_it_is_refused_unless_accepted() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(d.path(), 1 << 20, false).unwrap();
        let (_, first) = w.append(b"one").unwrap();
        w.append(b"two").unwrap();
        w.append(b"three").unwrap();
        w.sync().unwrap();
        drop(w);
        let seg = segment_path(d.path(), 0);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[first as usize + HEADER as usize] ^= 0xff; // "two" fails its checksum
        std::fs::write(&seg, &bytes).unwrap();
        let Err(e) = Wal::open(d.path(), 1 << 20, false) else { panic!("a damaged log opened") };
        assert!(matches!(e, WalError::Damaged { offset, after, .. } if offset == first && after == HEADER + 5), "{e}");
        assert_eq!(std::fs::read(&seg).unwrap(), bytes, "a refused open changes nothing");
        let (w, rec) = Wal::open(d.path(), 1 << 20, true).unwrap();
        assert_eq!((w.end(), rec.truncated_bytes), (first, bytes.len() as u64 - first));
        assert!(rec.damaged.unwrap().contains("checksum"));
    }

    #[test]
    fn skip_to_continues_past_a_lost_stretch() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(d.path(), 1 << 20, false).unwrap();
        w.append(b"one").unwrap();
        w.sync().unwrap();
        w.skip_to(500).unwrap();
        assert_eq!(w.append(b"two").unwrap(), (500, 500 + HEADER + 3));
        w.sync().unwrap();
        drop(w);
        let (w, _) = Wal::open(d.path(), 1 << 20, false).unwrap();
        assert_eq!(w.end(), 500 + HEADER + 3);
        assert_eq!(all(d.path(), 500), vec![b"two".to_vec()]);
    }

    #[test]
    fn garbage_never_panics() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, _) = Wal::open(d.path(), 1 << 20, false).unwrap();
        w.append(b"ok").unwrap();
        w.sync().unwrap();
        drop(w);
        let seg = segment_path(d.path(), 0);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5, 6, 7]);
        std::fs::write(&seg, &bytes).unwrap();
        assert_eq!(all(d.path(), 0).len(), 1);
        let (_, rec) = Wal::open(d.path(), 1 << 20, false).unwrap();
        assert_eq!(rec.truncated_bytes, 11);
    }
}
