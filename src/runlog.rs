//! The run log: every envelope, one JSON line each, in `<repo>/logs/runs.jsonl`,
//! rotated by size (`runs.jsonl.1` … `.5`). It feeds `backup-list --stats`-style
//! summaries and post-mortems ("what did the bootstrap do at 3 am?").
//!
//! Each line is the envelope plus `logged_at` (RFC 3339 UTC), which the
//! envelope itself does not carry; the health check (last verify) and
//! `backup-list --stats` (last success per phase) read it. Lines of older
//! builds have no `logged_at` and count everywhere except in ages.
//!
//! Dry runs, skipped runs and runs against a repository this build cannot
//! read (newer format, not a repository) write nothing. A failure to log
//! never fails the command; it becomes a warning.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::repo::layout;
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
    let dir = repo_root.join(layout::LOGS);
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
    let mut value = serde_json::to_value(env).map_err(std::io::Error::other)?;
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("logged_at".into(), crate::time::now_rfc3339().into());
    }
    let mut line = serde_json::to_vec(&value).map_err(std::io::Error::other)?;
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
pub fn read_all(repo_root: &Path) -> Vec<Value> {
    let dir = repo_root.join(layout::LOGS);
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

/// `backup-list --stats`: summarise the repository's run log into the
/// `run_stats` payload (and `runs` in `stats`).
pub fn stats(settings: &crate::config::Settings, env: &mut Envelope) -> crate::error::Result<()> {
    let repo = crate::repo::Repository::open(&settings.repo)?;
    let summary = summarize(&read_all(repo.root()));
    env.stat("runs", summary.runs);
    env.put("run_stats", summary);
    Ok(())
}

/// Per-command numbers in [`RunStats`].
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CommandStats {
    /// Runs logged.
    pub runs: u64,
    /// Runs with status success.
    pub success: u64,
    /// Runs with status partial.
    pub partial: u64,
    /// Runs with status failed.
    pub failed: u64,
    /// `success / runs`, 0.0–1.0 (partial runs are not successes).
    pub success_rate: f64,
    /// Median wall time (nearest rank).
    pub median_ms: u64,
    /// 95th percentile wall time (nearest rank).
    pub p95_ms: u64,
}

/// `backup-list --stats`: a summary of the run log.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunStats {
    /// Lines read (every command).
    pub runs: u64,
    /// Oldest `logged_at` seen (lines of older builds have none).
    pub since: Option<String>,
    /// By binary name.
    pub commands: BTreeMap<String, CommandStats>,
    /// Error codes of failed and partial runs, with how often each occurred.
    pub failures_by_code: BTreeMap<String, u64>,
    /// Per bootstrap phase: when its last successful checkpoint run was logged (null: none).
    pub last_success_per_phase: BTreeMap<String, Option<String>>,
}

/// Nearest-rank percentile of sorted values (`p` in 0–100).
fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as u64).div_ceil(100).max(1) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Summarise log lines as read by [`read_all`].
pub fn summarize(lines: &[Value]) -> RunStats {
    let mut out = RunStats::default();
    let mut durations: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for phase in crate::repo::snapshot::PHASES {
        out.last_success_per_phase.insert(phase.to_string(), None);
    }
    for v in lines {
        let Some(command) = v["command"].as_str() else {
            continue;
        };
        out.runs += 1;
        if let Some(at) = v["logged_at"].as_str() {
            if out.since.as_deref().is_none_or(|s| at < s) {
                out.since = Some(at.to_string());
            }
        }
        let c = out.commands.entry(command.to_string()).or_default();
        c.runs += 1;
        durations
            .entry(command.to_string())
            .or_default()
            .push(v["duration_ms"].as_u64().unwrap_or(0));
        match v["status"].as_str() {
            Some("success") => c.success += 1,
            Some("partial") => c.partial += 1,
            Some("failed") => c.failed += 1,
            _ => {}
        }
        if matches!(v["status"].as_str(), Some("failed" | "partial")) {
            for e in v["errors"].as_array().into_iter().flatten() {
                if let Some(code) = e["code"].as_str() {
                    *out.failures_by_code.entry(code.to_string()).or_default() += 1;
                }
            }
        }
        if command == "backup-checkpoint" && v["status"] == "success" {
            let phase = v["phase"].as_str().or_else(|| {
                (v["snapshot"]["kind"] == "checkpoint")
                    .then(|| v["snapshot"]["label"].as_str())
                    .flatten()
            });
            if let Some(slot) = phase.and_then(|p| out.last_success_per_phase.get_mut(p)) {
                let at = v["logged_at"]
                    .as_str()
                    .or(v["snapshot"]["created_at"].as_str());
                if let Some(at) = at {
                    if slot.as_deref().is_none_or(|s| at > s) {
                        *slot = Some(at.to_string());
                    }
                }
            }
        }
    }
    for (name, mut d) in durations {
        d.sort_unstable();
        if let Some(c) = out.commands.get_mut(&name) {
            c.median_ms = percentile(&d, 50);
            c.p95_ms = percentile(&d, 95);
            c.success_rate = if c.runs == 0 {
                0.0
            } else {
                (c.success as f64 / c.runs as f64 * 1000.0).round() / 1000.0
            };
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

    #[test]
    fn summary_counts_rates_percentiles_codes_and_phases() {
        let line = |cmd: &str, status: &str, ms: u64, extra: Value| {
            let mut v = serde_json::json!({"command": cmd, "status": status, "duration_ms": ms, "errors": [], "logged_at": "2026-01-01T00:00:00.000000000Z"});
            if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
                m.extend(x);
            }
            v
        };
        let mut lines = Vec::new();
        for ms in 1..=20 {
            lines.push(line(
                "backup-checkpoint",
                "success",
                ms * 10,
                serde_json::json!({"phase": "pre-dotfiles"}),
            ));
        }
        lines.push(line(
            "backup-checkpoint",
            "failed",
            5,
            serde_json::json!({"phase": "post-setup", "errors": [{"code": "lock_busy"}]}),
        ));
        lines.push(line(
            "backup-verify",
            "failed",
            7,
            serde_json::json!({"errors": [{"code": "repository_corrupt"}]}),
        ));
        let s = summarize(&lines);
        assert_eq!(s.runs, 22);
        let c = &s.commands["backup-checkpoint"];
        assert_eq!((c.runs, c.success, c.failed), (21, 20, 1));
        assert_eq!(c.success_rate, 0.952);
        assert_eq!(c.median_ms, 100, "{c:?}");
        assert_eq!(c.p95_ms, 190, "{c:?}");
        assert_eq!(s.failures_by_code["lock_busy"], 1);
        assert_eq!(s.failures_by_code["repository_corrupt"], 1);
        assert!(s.last_success_per_phase["pre-dotfiles"].is_some());
        assert_eq!(
            s.last_success_per_phase["post-setup"], None,
            "a failed run is no success"
        );
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[7], 95), 7);
    }
}
