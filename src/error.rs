//! Typed errors that carry everything a user (or Ansible) needs to act.
//!
//! Each error has a stable machine `code` (`permission_denied`, `lock_busy`,
//! `corrupt_index`, ...), the path it concerns, a message that names the
//! operation, a hint that says what to do, whether a retry may succeed, and
//! the exit code class it maps to. I/O errors are classified once, here, so
//! that `ENOSPC` is always "no space" and `EACCES` always "permission denied".

use std::fmt;
use std::io;
use std::path::Path;

use crate::exit::ExitCode;
use crate::paths::display_path;

/// A failure with its user-facing explanation.
#[derive(Debug, Clone)]
pub struct Error {
    /// Which exit code this error leads to when it ends the run.
    pub exit: ExitCode,
    /// Stable snake_case code for machines.
    pub code: &'static str,
    /// The path concerned, displayed `~`-relative where under `$HOME`.
    pub path: Option<String>,
    /// What went wrong, naming the operation.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// Whether running the same command again may succeed.
    pub retryable: bool,
}

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of the given class and code.
    pub fn new(exit: ExitCode, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            exit,
            code,
            path: None,
            message: message.into(),
            hint: None,
            retryable: false,
        }
    }

    /// Attach the path this error concerns.
    pub fn with_path(mut self, path: &Path) -> Self {
        self.path = Some(display_path(path));
        self
    }

    /// Attach a hint that tells the user what to do.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Mark the error as one a retry may cure.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Bad invocation or configuration.
    pub fn usage(code: &'static str, message: impl Into<String>) -> Self {
        Error::new(ExitCode::Usage, code, message)
    }

    /// The repository (or one of its files) is damaged.
    pub fn corrupt(code: &'static str, path: &Path, message: impl Into<String>) -> Self {
        Error::new(ExitCode::Corrupt, code, message)
            .with_path(path)
            .with_hint(
                "run `backup-verify --read-data` to see which snapshots and files are affected, then `backup-verify --repair` (add `--from-external` when a copy exists) to rebuild what can be rebuilt and move aside what cannot",
            )
    }

    /// Classify an I/O error from `op` (a verb phrase such as "reading") on `path`.
    pub fn io(op: &str, path: &Path, err: &io::Error) -> Self {
        let shown = display_path(path);
        let raw = err.raw_os_error();
        let (exit, code, hint, retryable): (ExitCode, &'static str, String, bool) = match raw {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => (
                ExitCode::NoSpace,
                "no_space",
                format!(
                    "the file system holding {shown} is full; free space there (or move the repository with --repo) and run again"
                ),
                true,
            ),
            Some(libc::EACCES) | Some(libc::EPERM) => (
                ExitCode::Failed,
                "permission_denied",
                format!("check the owner and mode of {shown} (ls -ld), or exclude it in the config"),
                true,
            ),
            Some(libc::EROFS) => (
                ExitCode::Failed,
                "read_only_filesystem",
                format!("{shown} is on a read-only file system; remount it read-write and run again (for the repository, or choose a writable one with --repo)"),
                false,
            ),
            Some(libc::ENOENT) => (
                ExitCode::Failed,
                "not_found",
                format!("{shown} does not exist"),
                false,
            ),
            Some(libc::ENOTDIR) => (
                ExitCode::Failed,
                "not_a_directory",
                format!("a component of {shown} is not a directory"),
                false,
            ),
            Some(libc::EEXIST) => (
                ExitCode::Failed,
                "already_exists",
                format!("{shown} already exists"),
                false,
            ),
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR) | Some(libc::ETIMEDOUT) => (
                ExitCode::Failed,
                "busy",
                "the resource was busy; run the command again".to_string(),
                true,
            ),
            Some(libc::ELOOP) => (
                ExitCode::Refused,
                "symlink_refused",
                format!("{shown} is (or passes through) a symbolic link; refusing to follow it"),
                false,
            ),
            Some(libc::EIO) => (
                ExitCode::Failed,
                "io_error",
                format!("the device holding {shown} reported an I/O error; check the disk (dmesg)"),
                true,
            ),
            _ => (
                ExitCode::Failed,
                "io_error",
                format!("check {shown} and run again"),
                false,
            ),
        };
        Error {
            exit,
            code,
            path: Some(shown.clone()),
            message: format!("{op} {shown}: {}", describe_io(err)),
            hint: Some(hint),
            retryable,
        }
    }
}

/// The OS message without Rust's " (os error N)" suffix.
fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_lowercase(),
        None => text,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Extension to turn `io::Result` into our `Result` with an operation and path.
pub trait IoContext<T> {
    /// Attach the operation ("reading", "creating") and the path.
    fn ctx(self, op: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_no_space_with_path_and_hint() {
        let e = Error::io(
            "writing",
            Path::new("/tmp/repo/packs/x"),
            &io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.exit, ExitCode::NoSpace);
        assert_eq!(e.code, "no_space");
        assert!(e.message.starts_with("writing /tmp/repo/packs/x: "));
        assert!(!e.message.contains("os error"));
        assert!(e.hint.unwrap().contains("free space"));
    }

    #[test]
    fn eacces_is_permission_denied_and_retryable() {
        let e = Error::io(
            "reading",
            Path::new("/x"),
            &io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(e.code, "permission_denied");
        assert!(e.retryable);
    }
}
