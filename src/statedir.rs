//! The state directory: who owns it and which directory it is. A process that writes a
//! state directory first takes an exclusive OS lock on `LOCK` in it (flock: the kernel
//! drops it when the process dies, so a SIGKILLed owner never blocks its successor) and
//! writes who it is there; a second process is refused with the holder's pid, start
//! time and address, before it touches anything. `state-id` names the directory, so a
//! checkpoint copied in from another one is recognised instead of trusted.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const LOCK: &str = "LOCK";
const ID: &str = "state-id";

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error(
        "the state directory {dir} is in use by another verdict process ({holder}); two processes on one \
         state directory would destroy it. Stop that process first, or give this one its own --state-dir"
    )]
    Locked { dir: PathBuf, holder: String },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("{path} does not hold a state directory id ({found:?}); remove it to let verdict write a new one")]
    BadId { path: PathBuf, found: String },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateDirError + 'a {
    move |source| StateDirError::Io { op, path: path.to_path_buf(), source }
}

/// Who holds the lock, as written into `LOCK`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub pid: u32,
    /// RFC 3339.
    pub started_at: String,
    pub command: String,
    /// The HTTP address, once bound.
    pub listen: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}, started {}, `{}`", self.pid, self.started_at, self.command)?;
        match &self.listen {
            Some(l) => write!(f, ", listening on {l}"),
            None => f.write_str(", not listening yet"),
        }
    }
}

/// An open, locked state directory; the lock is held until this is dropped.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    lock: File,
    holder: Holder,
    id: Option<u128>,
}

impl StateDir {
    /// Creates `path` if needed and locks it for this process, running `command`.
    pub fn lock(path: &Path, command: &str) -> Result<StateDir, StateDirError> {
        std::fs::create_dir_all(path).map_err(io_err("creating", path))?;
        let lock_path = path.join(LOCK);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = lock.read_to_string(&mut text);
                let holder = match serde_json::from_str::<Holder>(&text) {
                    Ok(h) => h.to_string(),
                    // Locked but not written yet: the holder is starting this very moment.
                    Err(_) => "it is starting; pid not written yet".to_string(),
                };
                return Err(StateDirError::Locked { dir: path.to_path_buf(), holder });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("locking", &lock_path)(e)),
        }
        let holder = Holder {
            pid: std::process::id(),
            started_at: crate::timestamp::format_rfc3339(crate::timestamp::now()),
            command: command.to_string(),
            listen: None,
        };
        let mut dir = StateDir { path: path.to_path_buf(), lock, holder, id: None };
        dir.write_holder()?;
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the address this process listens on, for a refused second process.
    pub fn set_listen(&mut self, addr: String) -> Result<(), StateDirError> {
        self.holder.listen = Some(addr);
        self.write_holder()
    }

    fn write_holder(&mut self) -> Result<(), StateDirError> {
        let p = self.path.join(LOCK);
        // Plain data: serialising cannot fail.
        let text = serde_json::to_string(&self.holder).unwrap_or_default() + "\n";
        self.lock.set_len(0).map_err(io_err("writing", &p))?;
        self.lock.seek(SeekFrom::Start(0)).map_err(io_err("writing", &p))?;
        self.lock.write_all(text.as_bytes()).map_err(io_err("writing", &p))
    }

    /// The directory's id, if it has one yet.
    pub fn id(&mut self) -> Result<Option<u128>, StateDirError> {
        if self.id.is_none() {
            let p = self.path.join(ID);
            match std::fs::read_to_string(&p) {
                Ok(text) => {
                    let hex = text.trim();
                    let id = (hex.len() == 32).then(|| u128::from_str_radix(hex, 16).ok()).flatten();
                    self.id = Some(id.ok_or_else(|| StateDirError::BadId { path: p, found: hex.to_string() })?);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("reading", &p)(e)),
            }
        }
        Ok(self.id)
    }

    /// Gives the directory `id` (a new one, or the one its checkpoints carry when the
    /// id file was lost), durably.
    pub fn set_id(&mut self, id: u128) -> Result<(), StateDirError> {
        let p = self.path.join(ID);
        let tmp = self.path.join(".state-id.tmp");
        {
            let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
            f.write_all(format!("{id:032x}\n").as_bytes()).map_err(io_err("writing", &tmp))?;
            f.sync_all().map_err(io_err("syncing", &tmp))?;
        }
        std::fs::rename(&tmp, &p).map_err(io_err("renaming", &tmp))?;
        File::open(&self.path).and_then(|d| d.sync_all()).map_err(io_err("syncing", &self.path))?;
        self.id = Some(id);
        Ok(())
    }
}

/// A fresh random directory id.
pub fn new_id() -> u128 {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holder_and_freed_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let mut first = StateDir::lock(d.path(), "verdict run").unwrap();
        first.set_listen("127.0.0.1:8480".into()).unwrap();
        let e = StateDir::lock(d.path(), "verdict run").unwrap_err().to_string();
        assert!(e.contains(&d.path().display().to_string()), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())) && e.contains("listening on 127.0.0.1:8480"), "{e}");
        drop(first);
        let again = StateDir::lock(d.path(), "verdict run").unwrap();
        assert_eq!(again.holder.listen, None, "the new holder's own record");
    }

    #[test]
    fn the_id_is_kept_and_a_bad_one_named() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateDir::lock(d.path(), "t").unwrap();
        assert_eq!(s.id().unwrap(), None);
        s.set_id(0xabc).unwrap();
        drop(s);
        let mut s = StateDir::lock(d.path(), "t").unwrap();
        assert_eq!(s.id().unwrap(), Some(0xabc));
        drop(s);
        std::fs::write(d.path().join(ID), "zz\n").unwrap();
        let e = StateDir::lock(d.path(), "t").unwrap().id().unwrap_err().to_string();
        assert!(e.contains("state-id") && e.contains("zz"), "{e}");
    }
}
