//! A repository copy on an rclone remote (`rclone:REMOTE:PATH` in the config),
//! reached by running the `rclone` binary (found on `PATH` with `which`).
//!
//! Every call runs under a time limit (`external.timeout_secs`): a hung
//! network is killed and reported as `rclone_timeout`, which is retried.
//! rclone's own retries are turned down (`--retries 1`) so that retrying is
//! decided in one place ([`crate::retry`]) and every attempt is counted.
//!
//! Uploads go to a temp name (`.dfb-tmp.<pid>.<n>.<name>`), are read back
//! through `rclone cat` and checked (size + SHA-256 of what the remote
//! returns), and only then moved to their final name, so a listing of the
//! remote never shows a partial object under a real name. Interrupted uploads
//! may leave temp objects; they are never read (their names are not objects)
//! and can be removed with `rclone delete --include '.dfb-tmp.*' REMOTE:PATH`.
//!
//! Exit codes (rclone's `lib/exitcode`): 5 is a temporary error (retried);
//! 3 and 4 (not found), 6 and 7 (no-retry, fatal) are permanent; 1 and 2
//! (usage and uncategorised, whose numbers swapped between rclone versions)
//! are permanent when stderr names a configuration, usage or permission
//! problem, and otherwise taken as an unreachable remote (retried).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::hash::Hash;

use super::{classify, Listing, Store, Want};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where streamed stdout goes.
type Sink<'a> = &'a mut dyn FnMut(&[u8]) -> Result<()>;

/// Most stderr kept from one call (for the error message).
const STDERR_KEEP: usize = 64 << 10;

/// A repository copy on an rclone remote.
#[derive(Debug, Clone)]
pub struct RcloneStore {
    bin: PathBuf,
    remote: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct LsEntry {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "Size")]
    size: i64,
    #[serde(rename = "IsDir", default)]
    is_dir: bool,
}

impl RcloneStore {
    /// A store on `remote` (`name:path`); fails when `rclone` is not installed.
    pub fn new(remote: &str, timeout: Duration) -> Result<RcloneStore> {
        let bin = which::which("rclone").map_err(|_| {
            Error::new(
                ExitCode::Failed,
                "rclone_missing",
                format!("external target rclone:{remote} needs the `rclone` program, which is not on PATH"),
            )
            .with_hint("install rclone (`apt-get install rclone`, `brew install rclone`), or remove the target from [external.targets]")
        })?;
        Ok(RcloneStore {
            bin,
            remote: remote.to_string(),
            timeout,
        })
    }

    /// `REMOTE:PATH/rel`.
    fn path(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.remote.clone()
        } else if self.remote.ends_with(':') || self.remote.ends_with('/') {
            format!("{}{rel}", self.remote)
        } else {
            format!("{}/{rel}", self.remote)
        }
    }

    /// Run rclone with `args`; stdout goes to `sink` (or is returned when `sink` is None).
    fn run(&self, op: &str, args: &[&str], mut sink: Option<Sink<'_>>) -> Result<Vec<u8>> {
        let secs = self.timeout.as_secs().max(1).to_string();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--retries", "1", "--low-level-retries", "3"])
            .args([
                "--contimeout",
                &format!("{secs}s"),
                "--timeout",
                &format!("{secs}s"),
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::secrets::withhold_from(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            Error::io("running", &self.bin, &e)
                .with_hint("check that rclone is installed and executable")
        })?;
        let pid = child.id() as i32;
        let mut stderr = child.stderr.take();
        let err_reader = std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if kept.len() < STDERR_KEEP {
                        kept.extend_from_slice(&buf[..n]);
                    }
                }
            }
            kept
        });
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let timed_out = Arc::new(AtomicBool::new(false));
        let flag = timed_out.clone();
        let limit = self.timeout;
        let watchdog = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(limit) {
                flag.store(true, Ordering::SeqCst);
                // The child is not reaped until after this thread is joined, so
                // the pid cannot have been reused.
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        let mut out = Vec::new();
        let mut sink_err = None;
        if let Some(mut stdout) = child.stdout.take() {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => match sink.as_mut() {
                        Some(f) => {
                            if let Err(e) = f(&buf[..n]) {
                                // SAFETY: as above; the child is not yet reaped.
                                unsafe { libc::kill(pid, libc::SIGKILL) };
                                sink_err = Some(e);
                                break;
                            }
                        }
                        None => out.extend_from_slice(&buf[..n]),
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        let _ = done_tx.send(());
        let _ = watchdog.join();
        let status = child
            .wait()
            .map_err(|e| Error::io("waiting for", &self.bin, &e))?;
        let stderr = err_reader.join().unwrap_or_default();
        if let Some(e) = sink_err {
            return Err(e);
        }
        if timed_out.load(Ordering::SeqCst) {
            return Err(Error::new(
                ExitCode::Failed,
                "rclone_timeout",
                format!(
                    "rclone {op} on rclone:{} did not finish within {} s and was stopped",
                    self.remote,
                    self.timeout.as_secs()
                ),
            )
            .with_hint(
                "check the network and the remote; raise external.timeout_secs for slow links",
            )
            .retryable(true));
        }
        if status.success() {
            return Ok(out);
        }
        Err(self.failure(op, status.code(), &String::from_utf8_lossy(&stderr)))
    }

    fn failure(&self, op: &str, code: Option<i32>, stderr: &str) -> Error {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let last: String = last.chars().take(300).collect();
        let what = format!(
            "rclone {op} on rclone:{} failed (exit {}){}",
            self.remote,
            code.map_or("signal".to_string(), |c| c.to_string()),
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        );
        let lower = stderr.to_ascii_lowercase();
        let permanent_text = [
            "didn't find section in config",
            "config file",
            "unknown flag",
            "unknown command",
            "usage:",
            "permission denied",
            "access denied",
            "forbidden",
            "unauthorized",
            "401",
            "403",
            "invalid",
        ]
        .iter()
        .any(|p| lower.contains(p));
        let (code, retryable, hint) = match code {
            Some(5) | None => (
                "rclone_temporary",
                true,
                "a temporary error; it is retried automatically, or run `backup-create --sync-external` later",
            ),
            Some(1) | Some(2) if !permanent_text => (
                "external_unreachable",
                true,
                "check the network and that the remote is up; the local repository is complete, run `backup-create --sync-external` later",
            ),
            Some(1) | Some(2) => (
                "rclone_failed",
                false,
                "check the remote's configuration (`rclone config`, RCLONE_CONFIG) and its permissions",
            ),
            Some(3) | Some(4) => (
                "rclone_not_found",
                false,
                "the remote path or an object on it does not exist; check external.targets",
            ),
            Some(_) => (
                "rclone_failed",
                false,
                "see rclone's message; check the remote's configuration and quota",
            ),
        };
        Error::new(ExitCode::Failed, code, what)
            .with_hint(hint)
            .retryable(retryable)
    }

    /// Stream the object `rel` to `sink`.
    pub fn cat(&self, rel: &str, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let p = self.path(rel);
        self.run("cat", &["cat", &p], Some(sink)).map(|_| ())
    }

    /// Size and SHA-256 of `rel` as the remote returns it.
    fn hash_remote(&self, rel: &str) -> Result<(u64, Hash)> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        self.cat(rel, &mut |chunk| {
            hasher.update(chunk);
            size += chunk.len() as u64;
            Ok(())
        })?;
        Ok((size, Hash::from_hasher(hasher)))
    }
}

impl Store for RcloneStore {
    fn shown(&self) -> String {
        format!("rclone:{}", self.remote)
    }

    fn list(&self) -> Result<Listing> {
        let target = self.path("");
        let out = match self.run(
            "lsjson",
            &[
                "lsjson",
                "-R",
                "--files-only",
                "--no-modtime",
                "--no-mimetype",
                &target,
            ],
            None,
        ) {
            Ok(o) => o,
            // A path that does not exist yet: a fresh target.
            Err(e) if e.code == "rclone_not_found" => return Ok(Listing::new()),
            Err(e) => return Err(e),
        };
        let entries: Vec<LsEntry> = serde_json::from_slice(&out).map_err(|e| {
            Error::new(
                ExitCode::Failed,
                "rclone_failed",
                format!(
                    "rclone lsjson on {} printed something unexpected: {e}",
                    self.shown()
                ),
            )
            .with_hint("check the rclone version (1.50 or newer is needed)")
        })?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.is_dir && classify(&e.path).is_some())
            .map(|e| (e.path, e.size.max(0) as u64))
            .collect())
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let p = self.path(rel);
        self.run("cat", &["cat", &p], None)
    }

    fn local_path(&self, _rel: &str) -> Option<PathBuf> {
        None
    }

    fn as_rclone(&self) -> Option<&RcloneStore> {
        Some(self)
    }

    fn put(&self, rel: &str, src: &dyn Store, want: &Want) -> Result<u64> {
        let Some(local) = src.local_path(rel) else {
            return Err(Error::new(
                ExitCode::Internal,
                "internal_error",
                format!("copying {rel} between two remotes is not supported"),
            ));
        };
        let (sub, name) = match rel.rsplit_once('/') {
            Some((s, n)) => (format!("{s}/"), n),
            None => (String::new(), rel),
        };
        let tmp = format!(
            "{sub}{}.{}.{}.{name}",
            crate::atomic::TEMP_PREFIX,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let local_s = local.to_string_lossy().into_owned();
        self.run("copyto", &["copyto", &local_s, &self.path(&tmp)], None)?;
        let got = match self.hash_remote(&tmp) {
            Ok(g) => g,
            Err(e) => {
                let _ = self.run("deletefile", &["deletefile", &self.path(&tmp)], None);
                return Err(e);
            }
        };
        if got != (want.size, want.sha256) {
            let _ = self.run("deletefile", &["deletefile", &self.path(&tmp)], None);
            return Err(super::dir::mismatch(&self.shown(), rel, want, got));
        }
        self.run(
            "moveto",
            &["moveto", &self.path(&tmp), &self.path(rel)],
            None,
        )?;
        Ok(want.size)
    }

    fn flush(&self, _dir: &str) -> Result<()> {
        // Each rclone call has completed (and the object was read back) before it returns.
        Ok(())
    }

    fn remove(&self, rel: &str) -> Result<()> {
        match self.run("deletefile", &["deletefile", &self.path(rel)], None) {
            Ok(_) => Ok(()),
            Err(e) if e.code == "rclone_not_found" => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(remote: &str) -> RcloneStore {
        RcloneStore {
            bin: PathBuf::from("rclone"),
            remote: remote.into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn paths_join_remote_and_object() {
        assert_eq!(store("nas:").path("packs/x"), "nas:packs/x");
        assert_eq!(store("nas:b/d").path("packs/x"), "nas:b/d/packs/x");
        assert_eq!(store("nas:b/d/").path("config.json"), "nas:b/d/config.json");
    }

    #[test]
    fn exit_codes_and_messages_decide_retries() {
        let s = store("nas:b");
        assert!(s.failure("lsjson", Some(5), "").retryable);
        let net = s.failure(
            "lsjson",
            Some(1),
            "dial tcp 10.0.0.1:22: connect: connection refused",
        );
        assert_eq!(net.code, "external_unreachable");
        assert!(net.retryable);
        let cfg = s.failure(
            "lsjson",
            Some(1),
            "Failed to create file system: didn't find section in config file",
        );
        assert_eq!(cfg.code, "rclone_failed");
        assert!(!cfg.retryable);
        assert!(!s.failure("copyto", Some(7), "fatal").retryable);
        assert_eq!(s.failure("cat", Some(3), "").code, "rclone_not_found");
    }
}
