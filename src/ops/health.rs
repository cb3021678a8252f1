//! `backup-checkpoint --health-check`: is the tool ready to protect this
//! machine? Each check is green, yellow or red with a reason; the run fails
//! (exit 1) only when something is red, so CI and Ansible can gate on it.

use std::path::Path;

use serde::Serialize;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::repo::snapshot::{SnapshotKind, PHASES};
use crate::repo::Repository;
use crate::report::{Envelope, Status};

/// Free space below this is red.
pub const DISK_RED_BYTES: u64 = 100 << 20;
/// Free space below this is yellow.
pub const DISK_YELLOW_BYTES: u64 = 1 << 30;
/// Repositories up to this size are fully re-hashed by the health check.
pub const QUICK_VERIFY_MAX_BYTES: u64 = 256 << 20;
/// A newest checkpoint older than this is yellow.
pub const STALE_CHECKPOINT_SECS: i64 = 30 * 86400;

/// Traffic-light level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Fine.
    Green,
    /// Works, but look at it.
    Yellow,
    /// Broken: backups cannot be trusted or taken.
    Red,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Check name.
    pub name: String,
    /// Level.
    pub status: Level,
    /// Why.
    pub message: String,
}

fn check(name: &str, status: Level, message: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        message: message.into(),
    }
}

/// Free bytes for unprivileged users on the file system holding `path` (or its nearest existing parent).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut p = Some(path);
    while let Some(cur) = p {
        if let Ok(st) = rustix::fs::statvfs(cur) {
            return Some(st.f_bavail.saturating_mul(st.f_frsize));
        }
        p = cur.parent();
    }
    None
}

/// Run every check.
pub fn checks(settings: &Settings) -> Vec<Check> {
    let mut out = vec![check(
        "version",
        Level::Green,
        format!("dotfiles-backup {}", env!("CARGO_PKG_VERSION")),
    )];
    out.push(check(
        "config",
        Level::Green,
        match &settings.config_file {
            Some(p) => format!("loaded {}", crate::paths::display_path(p)),
            None => "no config file; built-in defaults".into(),
        },
    ));
    let present = settings.roots.iter().filter(|r| r.abs.exists()).count();
    out.push(check(
        "tracked_paths",
        if present == 0 {
            Level::Yellow
        } else {
            Level::Green
        },
        format!("{present} of {} tracked paths exist", settings.roots.len()),
    ));
    let repo_path = &settings.repo;
    let shown = crate::paths::display_path(repo_path);
    let repo = if Repository::exists(repo_path) {
        match Repository::open(repo_path) {
            Ok(r) => {
                out.push(check(
                    "repository",
                    Level::Green,
                    format!("{shown}: format {}", r.config.version),
                ));
                Some(r)
            }
            Err(e) => {
                out.push(check("repository", Level::Red, e.message));
                None
            }
        }
    } else if repo_path.exists() {
        out.push(check(
            "repository",
            Level::Red,
            format!("{shown} exists but is not a backup repository"),
        ));
        None
    } else {
        out.push(check(
            "repository",
            Level::Yellow,
            format!("{shown} does not exist yet; the first checkpoint creates it"),
        ));
        None
    };
    // Writable: the repository, or the nearest existing parent that would hold it.
    let mut probe = repo_path.as_path();
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => break,
        }
    }
    let writable = rustix::fs::access(probe, rustix::fs::Access::WRITE_OK).is_ok();
    out.push(check(
        "writable",
        if writable { Level::Green } else { Level::Red },
        if writable {
            format!("{} is writable", crate::paths::display_path(probe))
        } else {
            format!(
                "{} is not writable; checkpoints will fail",
                crate::paths::display_path(probe)
            )
        },
    ));
    match crate::repo::lock::current_holder(&repo_path.join("lock")) {
        Some(h) => out.push(check(
            "lock",
            Level::Yellow,
            format!("held by pid {} ({}) on {}", h.pid, h.command, h.host),
        )),
        None => out.push(check("lock", Level::Green, "free")),
    }
    match free_bytes(repo_path) {
        Some(free) => {
            let level = if free < DISK_RED_BYTES {
                Level::Red
            } else if free < DISK_YELLOW_BYTES {
                Level::Yellow
            } else {
                Level::Green
            };
            out.push(check(
                "disk_space",
                level,
                format!(
                    "{} free on the file system holding {shown}",
                    crate::cli::human_bytes(free)
                ),
            ));
        }
        None => out.push(check(
            "disk_space",
            Level::Yellow,
            "could not read free space",
        )),
    }
    if let Some(repo) = &repo {
        match repo.snapshots() {
            Ok(snaps) => {
                let checkpoints: Vec<_> = snaps
                    .iter()
                    .filter(|s| s.record.kind == SnapshotKind::Checkpoint)
                    .collect();
                match checkpoints.last() {
                    None => out.push(check("last_checkpoint", Level::Yellow, "no checkpoint yet")),
                    Some(last) => {
                        let age = crate::time::seconds_since(&last.record.created_at).unwrap_or(0);
                        let phases: Vec<&str> = PHASES
                            .iter()
                            .copied()
                            .filter(|p| checkpoints.iter().any(|s| s.record.label == *p))
                            .collect();
                        out.push(check(
                            "last_checkpoint",
                            if age > STALE_CHECKPOINT_SECS {
                                Level::Yellow
                            } else {
                                Level::Green
                            },
                            format!(
                                "{} ({}) {} ago; phases with checkpoints: {}",
                                last.record.label,
                                last.id.short(),
                                crate::time::human_duration(age.max(0) as u64),
                                if phases.is_empty() {
                                    "none".to_string()
                                } else {
                                    phases.join(", ")
                                }
                            ),
                        ));
                    }
                }
            }
            Err(e) => out.push(check("last_checkpoint", Level::Red, e.message)),
        }
        // Re-hash every byte when that is quick; otherwise check structure only.
        let read_data = crate::ops::prune::repo_size(repo) <= QUICK_VERIFY_MAX_BYTES;
        match crate::ops::verify::verify(repo, read_data) {
            Ok(r) if r.problems.is_empty() && read_data => {
                out.push(check("verify", Level::Green, "every byte re-hashed and intact"))
            }
            Ok(r) if r.problems.is_empty() => out.push(check(
                "verify",
                Level::Green,
                "structure intact (too large for a quick full check: run `backup-verify --read-data`)",
            )),
            Ok(r) => out.push(check(
                "verify",
                Level::Red,
                format!(
                    "{} problem(s): {}; run `backup-verify --read-data`",
                    r.problems.len(),
                    r.problems[0].message
                ),
            )),
            Err(e) => out.push(check("verify", Level::Red, e.message)),
        }
    }
    out
}

/// Fill the envelope; red → failed, exit 1.
pub fn health(settings: &Settings, env: &mut Envelope) -> Result<()> {
    let checks = checks(settings);
    let worst = checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Level::Green);
    let reds: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Level::Red)
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect();
    env.stat(
        "green",
        checks.iter().filter(|c| c.status == Level::Green).count() as u64,
    );
    env.stat(
        "yellow",
        checks.iter().filter(|c| c.status == Level::Yellow).count() as u64,
    );
    env.stat("red", reds.len() as u64);
    env.put("health", worst);
    env.put("checks", &checks);
    if worst == Level::Red {
        env.status = Status::Failed;
        let e = Error::new(
            ExitCode::Failed,
            "health_red",
            format!("health check failed: {}", reds.join("; ")),
        )
        .with_hint("fix the red checks above; `backup-verify --read-data` names damaged snapshots");
        env.errors.push((&e).into());
        env.set_exit(ExitCode::Failed);
    }
    Ok(())
}
