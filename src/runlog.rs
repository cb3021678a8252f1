//! The run log: every envelope, one JSON line each, in `<repo>/logs/runs.jsonl`,
//! rotated by size (`runs.jsonl.1` … `.5`). It feeds `backup-list --stats`-style
//! summaries and post-mortems ("what did the bootstrap do at 3 am?").
//!
//! Dry runs, skipped runs and runs against a repository this build cannot
//! read (newer format, not a repository) write nothing. A failure to log
//! never fails the command; it becomes a warning.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::report::{Envelope, Status, Warning};

/// Rotate when the current log reaches this size.
pub const ROTATE_BYTES: u64 = 1 << 20;
/// Rotated files kept.
pub const KEEP_FILES: usize = 5;

/// Append `env` to the repository's run log when that is appropriate.
pub fn record(repo_root: &Path, env: &mut Envelope) {
    if env.dry_run || env.status == Status::Skipped {
        return;
    }
    if crate::repo::Repository::open(repo_root).is_err() {
        return;
    }
    let dir = repo_root.join("logs");
    if !dir.is_dir() {
        return;
    }
    if let Err(e) = append(&dir, env) {
        env.warnings.push(Warning::new(
            "log_not_written",
            format!(
                "could not append to the run log in {}: {e}",
                crate::paths::display_path(&dir)
            ),
        ));
    }
}

fn append(dir: &Path, env: &Envelope) -> std::io::Result<()> {
    let current = dir.join("runs.jsonl");
    if std::fs::metadata(&current).is_ok_and(|m| m.len() >= ROTATE_BYTES) {
        for i in (1..KEEP_FILES).rev() {
            let from = dir.join(format!("runs.jsonl.{i}"));
            if from.exists() {
                std::fs::rename(&from, dir.join(format!("runs.jsonl.{}", i + 1)))?;
            }
        }
        std::fs::rename(&current, dir.join("runs.jsonl.1"))?;
    }
    let mut line = serde_json::to_vec(env).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&current)?;
    // One write(2) per line: concurrent appenders never interleave within a line.
    f.write_all(&line)
}

/// Read the log lines (current file first, then rotated ones), skipping damaged lines.
pub fn read_all(repo_root: &Path) -> Vec<serde_json::Value> {
    let dir = repo_root.join("logs");
    let mut out = Vec::new();
    let mut files = vec![dir.join("runs.jsonl")];
    files.extend((1..=KEEP_FILES).map(|i| dir.join(format!("runs.jsonl.{i}"))));
    for f in files.iter().rev() {
        if let Ok(text) = std::fs::read_to_string(f) {
            out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_reads_back_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut env = Envelope::new("backup-checkpoint");
        env.duration_ms = 1;
        for _ in 0..3 {
            append(dir, &env).unwrap();
        }
        // Force a rotation.
        let f = OpenOptions::new()
            .append(true)
            .open(dir.join("runs.jsonl"))
            .unwrap();
        f.set_len(ROTATE_BYTES).unwrap();
        append(dir, &env).unwrap();
        assert!(dir.join("runs.jsonl.1").exists());
        let cur = std::fs::read_to_string(dir.join("runs.jsonl")).unwrap();
        assert_eq!(cur.lines().count(), 1);
    }
}
