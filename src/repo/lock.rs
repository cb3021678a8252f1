//! The writer lock: `flock` on `<repo>/lock`, plus a record of who holds it.
//!
//! The kernel releases a `flock` when its holder dies, so a lock can never be
//! stuck; the record (pid, host, command, start time) exists only to explain
//! who is busy. A record that is still present when we acquire the lock was
//! left by a process that died without cleaning up: we take over and say so.
//! `backup-list` and `backup-verify` never take the lock: every object they
//! read is immutable once renamed into place. A restore into `--target` from
//! a repository it cannot write (a backup drive mounted read-only) takes the
//! lock shared instead ([`acquire_shared`]), so that no prune removes what it
//! reads, and writes nothing into the repository. A writer that meets such a
//! repository fails with `repository_read_only` (exit 8), naming it.

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
        .map_err(|e| open_error(path, &e))?;
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

/// Can this error from opening the lock for writing mean "the repository
/// cannot be written" (a read-only mount, or no write permission)?
pub fn is_read_only(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
    )
}

fn open_error(path: &Path, err: &std::io::Error) -> Error {
    if !is_read_only(err) {
        return Error::io("opening lock file", path, err);
    }
    let repo = path.parent().unwrap_or(path);
    let why = if err.raw_os_error() == Some(libc::EROFS) {
        "is on a read-only file system"
    } else {
        "is not writable by this user"
    };
    Error::new(
        ExitCode::ReadOnly,
        "repository_read_only",
        format!(
            "the repository {} {why} ({}: {err}); nothing was changed",
            crate::paths::display_path(repo),
            crate::paths::display_path(path)
        ),
    )
    .with_path(repo)
    .with_hint("remount it read-write (mount -o remount,rw) or fix its owner and mode; backup-list, backup-verify and `backup-restore SNAPSHOT --target DIR` work on a read-only repository")
}

/// A shared hold on the lock: writers wait while it is held. Released on drop.
#[derive(Debug)]
pub struct SharedLock {
    file: File,
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.file, FlockOperation::Unlock);
    }
}

/// Take the lock shared for a reader of a repository it cannot write,
/// waiting up to `wait` for a writer. The lock file is opened read-only and
/// never created; `Ok(None)` with the reason when the file system allows no
/// lock (no lock file, or `flock` unsupported): the caller warns and goes on.
pub fn acquire_shared(
    path: &Path,
    wait: Duration,
) -> Result<std::result::Result<SharedLock, String>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("opening it read-only: {e}"))),
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(Err("it is not a regular file".into()));
    }
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(10);
    loop {
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared) {
            Ok(()) => return Ok(Ok(SharedLock { file })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                if Instant::now() >= deadline {
                    let mut f = file;
                    let holder = read_record(&mut f);
                    return Err(busy_error(path, holder.as_ref(), wait));
                }
                std::thread::sleep(delay.min(deadline.saturating_duration_since(Instant::now())));
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Ok(Err(format!("flock: {}", std::io::Error::from(e)))),
        }
    }
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
    fn shared_lock_waits_for_a_writer_and_blocks_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let writer = acquire(&path, "backup-prune", Duration::ZERO).unwrap();
        let err = acquire_shared(&path, Duration::from_millis(30)).unwrap_err();
        assert_eq!(err.exit, ExitCode::LockBusy);
        drop(writer);
        let reader = acquire_shared(&path, Duration::ZERO).unwrap().unwrap();
        let err = acquire(&path, "backup-prune", Duration::from_millis(30)).unwrap_err();
        assert_eq!(err.exit, ExitCode::LockBusy);
        drop(reader);
        // No lock file and no way to make one: no lock, with the reason.
        let why = acquire_shared(&tmp.path().join("none"), Duration::ZERO)
            .unwrap()
            .unwrap_err();
        assert!(why.contains("read-only"), "{why}");
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
