//! The machine-readable contract: one versioned JSON envelope for every binary.
//!
//! With `--json`, stdout holds exactly one [`Envelope`]. Fields common to all
//! commands are always present; command-specific payloads (`snapshots`,
//! `entries`, `checks`, `problems`, `plan`, `excluded`) appear only for the
//! commands that produce them. `docs/json.md` documents every field and
//! `docs/schema/envelope.schema.json` is checked against real output in tests.
//! Bump [`SCHEMA_VERSION`] on any incompatible change.

use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::exit::ExitCode;

/// Version of the envelope layout.
pub const SCHEMA_VERSION: u32 = 1;

/// Outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything done.
    Success,
    /// Some paths failed; the rest is committed.
    Partial,
    /// Nothing committed.
    Failed,
    /// Deliberately not run (disabled, nothing to do).
    Skipped,
}

/// How much of the configured storage is working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Degradation {
    /// All configured storage works.
    Full,
    /// External storage unavailable or `BACKUP_LOCAL_ONLY`: local only.
    LocalOnly,
    /// Disabled by config or `BACKUP_DISABLED`.
    Disabled,
}

/// A warning: the run goes on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Warning {
    /// Stable code (`secret_skipped`, `stale_lock`, ...).
    pub code: String,
    /// What happened.
    pub message: String,
    /// Path concerned.
    pub path: Option<String>,
}

impl Warning {
    /// A warning without a path.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Warning {
            code: code.into(),
            message: message.into(),
            path: None,
        }
    }
    /// A warning about a path.
    pub fn at(code: &str, path: String, message: impl Into<String>) -> Self {
        Warning {
            code: code.into(),
            message: message.into(),
            path: Some(path),
        }
    }
}

/// An error as reported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorReport {
    /// Stable code.
    pub code: String,
    /// Path concerned.
    pub path: Option<String>,
    /// What went wrong.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
    /// Whether a retry may succeed.
    pub retryable: bool,
}

impl From<&Error> for ErrorReport {
    fn from(e: &Error) -> Self {
        ErrorReport {
            code: e.code.into(),
            path: e.path.clone(),
            message: e.message.clone(),
            hint: e.hint.clone(),
            retryable: e.retryable,
        }
    }
}

/// Snapshot summary as reported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Full id.
    pub id: String,
    /// First 8 hex digits.
    pub short_id: String,
    /// Kind.
    pub kind: String,
    /// Label.
    pub label: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Host.
    pub host: String,
    /// `$HOME` of the run that took it (absolute; `null` in records written
    /// before homes were recorded, which belong to every home).
    pub home: Option<String>,
    /// Tree id.
    pub tree: String,
    /// Parent id.
    pub parent: Option<String>,
    /// Tracked roots.
    pub roots: Vec<String>,
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Total file bytes.
    pub bytes: u64,
    /// Bytes new to the repository when it was taken.
    pub new_bytes: u64,
    /// Entries without stored content.
    pub omitted: u64,
    /// True when an existing snapshot was reported instead of writing a new one.
    pub reused: bool,
}

/// The one document every binary prints with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    /// Layout version.
    pub schema_version: u32,
    /// Binary name.
    pub command: String,
    /// Tool version.
    pub version: String,
    /// Outcome.
    pub status: Status,
    /// Whether the run changed anything (stored new content, changed files).
    pub changed: bool,
    /// Why the run was skipped.
    pub skip_reason: Option<String>,
    /// Storage availability.
    pub degradation: Degradation,
    /// The process exit code.
    pub exit_code: i32,
    /// True when nothing was written on purpose.
    pub dry_run: bool,
    /// The repository used.
    pub repository: Option<String>,
    /// The snapshot created, reused or selected.
    pub snapshot: Option<SnapshotInfo>,
    /// Counters and timings.
    pub stats: serde_json::Map<String, Value>,
    /// Warnings.
    pub warnings: Vec<Warning>,
    /// Errors.
    pub errors: Vec<ErrorReport>,
    /// Wall time.
    pub duration_ms: u64,
    /// Command-specific payload, flattened in (`snapshots`, `entries`, `checks`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl Envelope {
    /// A fresh envelope for `command`, status success.
    pub fn new(command: &str) -> Self {
        Envelope {
            schema_version: SCHEMA_VERSION,
            command: command.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            status: Status::Success,
            changed: false,
            skip_reason: None,
            degradation: Degradation::Full,
            exit_code: 0,
            dry_run: false,
            repository: None,
            snapshot: None,
            stats: serde_json::Map::new(),
            warnings: Vec::new(),
            errors: Vec::new(),
            duration_ms: 0,
            extra: serde_json::Map::new(),
        }
    }

    /// Record a fatal error: status failed, exit code from the error.
    pub fn fail(&mut self, err: &Error) {
        self.status = Status::Failed;
        self.exit_code = err.exit.code();
        self.errors.push(err.into());
    }

    /// Set a counter.
    pub fn stat(&mut self, key: &str, value: impl Into<Value>) {
        self.stats.insert(key.into(), value.into());
    }

    /// Attach a command-specific payload.
    pub fn put(&mut self, key: &str, value: impl Serialize) {
        self.extra.insert(
            key.into(),
            serde_json::to_value(value).expect("payloads serialize"),
        );
    }

    /// Set the exit code from a code.
    pub fn set_exit(&mut self, code: ExitCode) {
        self.exit_code = code.code();
    }

    /// Mark as skipped (exit 0).
    pub fn skip(&mut self, reason: &str) {
        self.status = Status::Skipped;
        self.skip_reason = Some(reason.into());
        self.exit_code = 0;
    }

    /// The exit code as an enum.
    pub fn exit(&self) -> ExitCode {
        ExitCode::ALL
            .into_iter()
            .find(|c| c.code() == self.exit_code)
            .unwrap_or(ExitCode::Internal)
    }

    /// Serialize as indented JSON (what `--json` prints).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("envelope serializes")
    }

    /// Serialize as one line of JSON (what hooks read on standard input, so
    /// that a line-based reader gets the whole envelope).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("envelope serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_every_contract_key_even_when_empty() {
        let e = Envelope::new("backup-list");
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        for key in [
            "schema_version",
            "command",
            "status",
            "changed",
            "skip_reason",
            "degradation",
            "exit_code",
            "snapshot",
            "stats",
            "warnings",
            "errors",
            "duration_ms",
            "dry_run",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["degradation"], "full");
    }

    #[test]
    fn fail_sets_status_and_exit() {
        let mut e = Envelope::new("backup-create");
        e.fail(&Error::usage("unknown_phase", "nope"));
        assert_eq!(e.status, Status::Failed);
        assert_eq!(e.exit(), ExitCode::Usage);
        assert_eq!(e.errors[0].code, "unknown_phase");
    }
}
