//! The writer lock: `flock` on `<repo>/lock`, plus a record of who holds it.
//!
//! The kernel releases a `flock` when its holder dies, so a lock can never be
//! stuck; the record (pid, host, command, start time) exists only to explain
//! who is busy. A record that is still present when we acquire the lock was
//! left by a process that died without cleaning up: we take over and say so.
//! Readers never take the lock: every object they read is immutable once
//! renamed into place.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::exit::ExitCode;

/// Who holds (or held) the lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockRecord {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// The binary (`backup-checkpoint`).
    pub command: String,
    /// Unix seconds when it took the lock.
    pub started_at: i64,
}

/// Held until dropped; dropping clears the record and releases the lock.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
    /// Set when we took over from a process that died holding the lock.
    pub stale: Option<LockRecord>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Clearing the record first means an empty file always means "released cleanly".
        let _ = self.file.set_len(0);
        let _ = rustix::fs::flock(&self.file, FlockOperation::Unlock);
    }
}

impl LockGuard {
    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn read_record(file: &mut File) -> Option<LockRecord> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// Read the current holder of the lock at `path` without taking it.
pub fn current_holder(path: &Path) -> Option<LockRecord> {
    let mut f = File::open(path).ok()?;
    let probe = rustix::fs::flock(&f, FlockOperation::NonBlockingLockShared);
    match probe {
        Ok(()) => {
            let _ = rustix::fs::flock(&f, FlockOperation::Unlock);
            None
        }
        Err(_) => read_record(&mut f),
    }
}

/// Take the exclusive lock, waiting up to `wait`.
pub fn acquire(path: &Path, command: &str, wait: Duration) -> Result<LockGuard> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .ctx("opening lock file", path)?;
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(10);
    loop {
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                if Instant::now() >= deadline {
                    let holder = read_record(&mut file);
                    return Err(busy_error(path, holder.as_ref(), wait));
                }
                std::thread::sleep(delay.min(deadline.saturating_duration_since(Instant::now())));
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(Error::io("locking", path, &e.into())),
        }
    }
    let stale = read_record(&mut file);
    let record = LockRecord {
        pid: std::process::id(),
        host: crate::host::hostname(),
        command: command.to_string(),
        started_at: now_secs(),
    };
    let text = serde_json::to_string(&record).expect("lock record serializes");
    file.set_len(0).ctx("writing lock file", path)?;
    file.seek(SeekFrom::Start(0))
        .ctx("writing lock file", path)?;
    file.write_all(text.as_bytes())
        .ctx("writing lock file", path)?;
    Ok(LockGuard {
        file,
        path: path.to_path_buf(),
        stale,
    })
}

fn busy_error(path: &Path, holder: Option<&LockRecord>, wait: Duration) -> Error {
    let who = match holder {
        Some(h) => format!(
            "another backup (pid {}, {}, on {}, started {} s ago) holds the lock",
            h.pid,
            h.command,
            h.host,
            (now_secs() - h.started_at).max(0)
        ),
        None => "another backup holds the lock".to_string(),
    };
    Error::new(
        ExitCode::LockBusy,
        "lock_busy",
        format!("{who}; gave up after waiting {:.1} s", wait.as_secs_f64()),
    )
    .with_path(path)
    .with_hint("wait for it to finish and run again, or pass --wait SECS to wait longer")
    .retryable(true)
}

/// The warning for a lock taken over from a dead process.
pub fn stale_lock_warning(stale: &LockRecord) -> crate::report::Warning {
    crate::report::Warning::new(
        "stale_lock",
        format!(
            "took over a lock left by {} (pid {} on {}), which is no longer running",
            stale.command, stale.pid, stale.host
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_gets_lock_busy_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let first = acquire(&path, "backup-create", Duration::ZERO).unwrap();
        assert!(first.stale.is_none());
        let holder = current_holder(&path).unwrap();
        assert_eq!(holder.pid, std::process::id());
        let err = acquire(&path, "backup-checkpoint", Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.exit, ExitCode::LockBusy);
        assert!(err.message.contains("backup-create"), "{}", err.message);
        assert!(err.retryable);
        drop(first);
        assert!(current_holder(&path).is_none());
        let again = acquire(&path, "backup-checkpoint", Duration::ZERO).unwrap();
        assert!(again.stale.is_none(), "clean release must not look stale");
    }

    #[test]
    fn record_left_by_dead_process_is_reported_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        std::fs::write(
            &path,
            r#"{"pid":999999,"host":"h","command":"backup-create","started_at":1}"#,
        )
        .unwrap();
        let guard = acquire(&path, "backup-checkpoint", Duration::ZERO).unwrap();
        assert_eq!(guard.stale.as_ref().unwrap().pid, 999999);
    }
}
