//! `backup-checkpoint --health-check`: is the tool ready to protect this
//! machine? Each check is green, yellow or red with a reason; the run fails
//! (exit 1) only when something is red, so CI and Ansible can gate on it.
//!
//! Rows: version, config, tracked paths, repository (present and opening),
//! writable, lock (free / held by whom / stale record of a dead holder), disk
//! space, the newest checkpoint and one row per phase that has one (`phase
//! NAME`, its age), a quick verify now, the last `backup-verify` from the run
//! log, each external target (reachable, holding every snapshot), and the
//! secrets keys. Thresholds come from
//! `[health]` in the config (docs/config.md); docs/cli.md lists every cause
//! of yellow and red.

use std::path::Path;

use serde::Serialize;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::repo::layout;
use crate::repo::snapshot::{Snapshot, SnapshotKind, PHASES};
use crate::repo::Repository;
use crate::report::{Envelope, Status};

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

/// What a sync achieves where the repository lives: on macOS whether the
/// file system accepts `F_FULLFSYNC` (else only `fsync`, which can leave the
/// last commit in the drive's cache in a power cut); see `crate::sys`.
fn durability_check(dir: &Path) -> Check {
    use crate::sys::SyncStrength;
    let shown = crate::paths::display_path(dir);
    let refused = crate::sys::fullfsync_refusals();
    match crate::sys::probe_sync(dir) {
        Ok(SyncStrength::FsyncOnly) => check(
            "durability",
            Level::Yellow,
            format!(
                "the file system holding {shown} refuses F_FULLFSYNC: only fsync is used, so a power cut can lose the newest checkpoint from the drive's cache; keep the repository on a local APFS or HFS+ volume"
            ),
        ),
        Ok(_) if refused > 0 => check(
            "durability",
            Level::Yellow,
            format!("{refused} sync(s) in this run fell back from F_FULLFSYNC to fsync"),
        ),
        Ok(SyncStrength::FullFsync) => check(
            "durability",
            Level::Green,
            "F_FULLFSYNC accepted: every commit flushes the drive's cache",
        ),
        Ok(SyncStrength::Fsync) => check(
            "durability",
            Level::Green,
            "fsync flushes to stable storage (Linux)",
        ),
        Err(e) => check(
            "durability",
            Level::Yellow,
            format!("could not test syncing {shown}: {e}"),
        ),
    }
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
    out.push(writable_check(probe, repo.is_some()));
    out.push(lock_check(&repo_path.join(layout::LOCK)));
    match crate::space::free_bytes(repo_path) {
        Some(free) => {
            // The checkpoint's own policy: red where it would refuse, yellow where it warns.
            let level = match crate::space::assess(free, 0, &settings.space) {
                crate::space::Room::Short => Level::Red,
                crate::space::Room::Critical | crate::space::Room::Low => Level::Yellow,
                crate::space::Room::Plenty => Level::Green,
            };
            out.push(check(
                "disk_space",
                level,
                format!(
                    "{} free on the file system holding {shown} (yellow below {} MiB, red below {} MiB: space.warn_below_mb and space.refuse_below_mb)",
                    crate::units::human_bytes(free),
                    settings.space.warn_below_mb,
                    settings.space.refuse_below_mb
                ),
            ));
        }
        None => out.push(check(
            "disk_space",
            Level::Yellow,
            "could not read free space",
        )),
    }
    out.push(durability_check(probe));
    let max_age = (settings.health.max_checkpoint_age_days as i64).saturating_mul(86400);
    // Read the snapshot records once: the checkpoint, external and secrets rows all use them.
    let listing = repo.as_ref().map(Repository::snapshots);
    let snaps: &[Snapshot] = match &listing {
        Some(Ok(s)) => s,
        _ => &[],
    };
    if let Some(repo) = &repo {
        match &listing {
            Some(Err(e)) => out.push(check("last_checkpoint", Level::Red, e.message.clone())),
            _ => {
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
                            if age > max_age {
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
                out.extend(phase_checks(&checkpoints, max_age));
            }
        }
        // Re-hash every byte when that is quick; otherwise check structure only.
        let quick_max = settings.health.quick_verify_max_mb.saturating_mul(1 << 20);
        let read_data = repo.size_bytes() <= quick_max;
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
        let last = last_verify_check(
            &crate::runlog::read_all(repo_path),
            (settings.health.max_verify_age_days as i64).saturating_mul(86400),
        );
        let rehashed_now = read_data && out.last().is_some_and(|c| c.status == Level::Green);
        if rehashed_now && last.status != Level::Green {
            // This check has just re-hashed every byte and found it intact: an
            // old or failed `backup-verify` in the log says nothing more.
            out.push(check(
                "last_verify",
                Level::Green,
                "this check re-hashed every byte and found it intact",
            ));
        } else {
            out.push(last);
        }
    }
    out.push(schedule_check(repo_path));
    out.extend(external_checks(settings, snaps));
    out.extend(secrets_checks(settings, repo.as_ref(), snaps));
    out
}

/// The scheduled job (`backup-create --schedule`): off, or when it last
/// ran (from the run log); yellow when more than two intervals have passed
/// since then (or since it was installed, if it never ran).
fn schedule_check(repo_path: &Path) -> Check {
    use super::schedule;
    let installed = crate::paths::home_dir().and_then(|h| schedule::installed(&h));
    let Some((interval, path, installed_ago)) = installed else {
        return check(
            "schedule",
            Level::Green,
            "off: nothing runs between bootstraps (`backup-create --schedule daily` installs a timer)",
        );
    };
    let due = interval.secs().saturating_mul(2);
    let what = format!(
        "{} ({})",
        interval.as_str(),
        crate::paths::display_path(&path)
    );
    let ago = |s: u64| crate::time::human_duration(s);
    match last_scheduled_run(&crate::runlog::read_all(repo_path)) {
        Some(last) if last > due => check(
            "schedule",
            Level::Yellow,
            format!(
                "{what}: overdue, the last scheduled run was {} ago; is the timer enabled and the machine awake? (`systemctl --user list-timers` / `launchctl print gui/$UID/{}`)",
                ago(last),
                schedule::LABEL
            ),
        ),
        Some(last) => check(
            "schedule",
            Level::Green,
            format!("{what}: last scheduled run {} ago", ago(last)),
        ),
        None if installed_ago > due => check(
            "schedule",
            Level::Yellow,
            format!(
                "{what}: installed {} ago and no scheduled run logged yet; is the timer enabled?",
                ago(installed_ago)
            ),
        ),
        None => check(
            "schedule",
            Level::Green,
            format!("{what}: installed {} ago; first run pending", ago(installed_ago)),
        ),
    }
}

/// Seconds since the newest successful or partial scheduled backup
/// (`backup-create --label scheduled`) in the run log.
fn last_scheduled_run(lines: &[serde_json::Value]) -> Option<u64> {
    lines
        .iter()
        .filter(|v| v["command"] == "backup-create")
        .filter(|v| matches!(v["status"].as_str(), Some("success" | "partial")))
        .filter(|v| v["snapshot"]["label"] == super::schedule::RUN_LABEL)
        .filter_map(|v| crate::time::seconds_since(v["logged_at"].as_str()?))
        .map(|s| s.max(0) as u64)
        .min()
}

/// External copies: one row per target (`external_target NAME`): reachable,
/// and holding every local snapshot record. Unreachable or behind is yellow:
/// checkpoints still succeed locally (`degradation: local-only`).
fn external_checks(settings: &Settings, snaps: &[Snapshot]) -> Vec<Check> {
    let ext = &settings.external;
    if ext.targets.is_empty() {
        return vec![check("external_target", Level::Green, "not configured")];
    }
    let local: Vec<String> = snaps
        .iter()
        .map(|s| format!("snapshots/{}.json", s.id.to_hex()))
        .collect();
    let mut out = Vec::new();
    for t in &ext.targets {
        let name = format!("external_target {}", t.name);
        if let Some(dir) = crate::external::target_dir(t) {
            if !dir.is_dir() {
                out.push(check(
                    &name,
                    Level::Yellow,
                    format!(
                        "{} is not there (drive not mounted?); checkpoints stay local until it is",
                        crate::paths::display_path(dir)
                    ),
                ));
                continue;
            }
        }
        let listing = crate::external::open_target(t, settings).and_then(|store| {
            let shown = store.shown();
            store.list().map(|l| (shown, l))
        });
        out.push(match listing {
            Err(e) => check(
                &name,
                Level::Yellow,
                format!("not reachable: {}; checkpoints stay local until it is", e.message),
            ),
            Ok((shown, listing)) => {
                let behind = local.iter().filter(|k| !listing.contains_key(*k)).count();
                if behind > 0 {
                    check(
                        &name,
                        Level::Yellow,
                        format!(
                            "{shown} is reachable but lacks {behind} of {} snapshot(s); run `backup-create --sync-external`",
                            local.len()
                        ),
                    )
                } else if settings.local_only {
                    check(
                        &name,
                        Level::Yellow,
                        format!("{shown} is up to date, but local-only mode (BACKUP_LOCAL_ONLY / general.local_only) stops further copies"),
                    )
                } else {
                    check(
                        &name,
                        Level::Green,
                        format!("{shown} is reachable and has all {} snapshot(s)", local.len()),
                    )
                }
            }
        });
    }
    out
}

/// The lock: free, held (by whom, since when), or a record left by a dead holder.
/// Can a checkpoint write everything it writes? The repository (or the
/// nearest existing parent that would hold it) and, in an existing
/// repository, every subdirectory a checkpoint writes into: each must be a
/// directory (not missing, not replaced) and writable by this user.
fn writable_check(probe: &Path, is_repo: bool) -> Check {
    let access = |p: &Path| {
        rustix::fs::access(
            p,
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
        )
    };
    let can_write = |p: &Path| access(p).is_ok();
    let shown = crate::paths::display_path;
    match access(probe) {
        Ok(()) => {}
        Err(rustix::io::Errno::ROFS) => {
            return check(
                "writable",
                Level::Red,
                format!(
                    "{} is on a read-only file system; checkpoints will fail (list, verify and restore --target work): remount it read-write",
                    shown(probe)
                ),
            )
        }
        Err(_) => {
            return check(
                "writable",
                Level::Red,
                format!("{} is not writable; checkpoints will fail", shown(probe)),
            )
        }
    }
    if is_repo {
        for sub in crate::repo::SUBDIRS {
            let p = probe.join(sub);
            let problem = match std::fs::symlink_metadata(&p) {
                // Recreated (empty) by the next checkpoint, but whatever it
                // held is gone: for snapshots/, every record.
                Err(_) => Some("is missing: what it held is gone (run `backup-verify`)"),
                Ok(m) if !m.is_dir() => Some("is not a directory; checkpoints will fail"),
                Ok(_) if !can_write(&p) => Some("is not writable; checkpoints will fail"),
                Ok(_) => None,
            };
            if let Some(why) = problem {
                return check("writable", Level::Red, format!("{} {why}", shown(&p)));
            }
        }
    }
    check(
        "writable",
        Level::Green,
        format!("{} is writable", shown(probe)),
    )
}

fn lock_check(path: &Path) -> Check {
    // The lock is a regular file (or absent, created by the next writer).
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.is_file() {
            return check(
                "lock",
                Level::Red,
                format!(
                    "{} is not a regular file; every writer will fail to take the lock: remove it",
                    crate::paths::display_path(path)
                ),
            );
        }
    }
    if std::fs::symlink_metadata(path).is_ok()
        && rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_err()
    {
        return check(
            "lock",
            Level::Red,
            format!(
                "{} is not writable by this user; every writer will fail with repository_read_only: fix its owner and mode",
                crate::paths::display_path(path)
            ),
        );
    }
    if let Some(h) = crate::repo::lock::current_holder(path) {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64 - h.started_at)
            .unwrap_or(0)
            .max(0);
        return check(
            "lock",
            Level::Yellow,
            format!(
                "held by pid {} ({}) on {}, taken {} ago; writers wait for it",
                h.pid,
                h.command,
                h.host,
                crate::time::human_duration(since as u64)
            ),
        );
    }
    // flock is free; a record left in the file means its holder died mid-run.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match serde_json::from_str::<crate::repo::lock::LockRecord>(text.trim()) {
        Ok(h) => check(
            "lock",
            Level::Yellow,
            format!(
                "stale: left by pid {} ({}) on {}, which is no longer running; the next writer takes it over",
                h.pid, h.command, h.host
            ),
        ),
        Err(_) => check("lock", Level::Green, "free"),
    }
}

/// One row per phase with a checkpoint: yellow when its newest is older than `max_age` seconds.
fn phase_checks(checkpoints: &[&crate::repo::snapshot::Snapshot], max_age: i64) -> Vec<Check> {
    let mut out = Vec::new();
    for phase in PHASES {
        let Some(s) = checkpoints.iter().rev().find(|s| s.record.label == phase) else {
            continue;
        };
        let age = crate::time::seconds_since(&s.record.created_at).unwrap_or(0);
        out.push(check(
            &format!("phase {phase}"),
            if age > max_age {
                Level::Yellow
            } else {
                Level::Green
            },
            format!(
                "{} taken {} ago{}",
                s.id.short(),
                crate::time::human_duration(age.max(0) as u64),
                if age > max_age {
                    format!(
                        " (older than health.max_checkpoint_age_days = {})",
                        max_age / 86400
                    )
                } else {
                    String::new()
                }
            ),
        ));
    }
    out
}

/// The newest `backup-verify` run in the log: red if it found damage, yellow
/// if there is none or it is older than `max_age` seconds.
pub fn last_verify_check(log: &[serde_json::Value], max_age: i64) -> Check {
    let Some(v) = log.iter().rev().find(|v| v["command"] == "backup-verify") else {
        return check(
            "last_verify",
            Level::Yellow,
            "no `backup-verify` run in the log; run `backup-verify --read-data`",
        );
    };
    let when = v["logged_at"].as_str();
    let age = when.and_then(crate::time::seconds_since);
    let ago = age
        .map(|a| format!("{} ago", crate::time::human_duration(a.max(0) as u64)))
        .unwrap_or_else(|| "at an unknown time".into());
    if v["status"] != "success" {
        let first = v["errors"][0]["message"].as_str().unwrap_or("it failed");
        return check(
            "last_verify",
            Level::Red,
            format!("the last `backup-verify` ({ago}) failed: {first}; repair, then run `backup-verify --read-data`"),
        );
    }
    match age {
        Some(a) if a <= max_age => check(
            "last_verify",
            Level::Green,
            format!(
                "passed {ago}{}",
                if v["stats"]["bytes_read"].as_u64().unwrap_or(0) > 0 {
                    " (every byte re-hashed)"
                } else {
                    " (structure only)"
                }
            ),
        ),
        _ => check(
            "last_verify",
            Level::Yellow,
            format!(
                "the last passing `backup-verify` was {ago}, older than health.max_verify_age_days = {}; run `backup-verify --read-data`",
                max_age / 86400
            ),
        ),
    }
}

/// Secret-class paths the newest snapshot recorded without content, as shown to people.
fn skipped_secrets(repo: &Repository, snaps: &[Snapshot]) -> Vec<String> {
    let Some(tree) = snaps.last().and_then(|s| repo.tree(&s.record.tree).ok()) else {
        return Vec::new();
    };
    tree.entries()
        .filter(|(_, e)| e.omitted.as_deref() == Some("secret"))
        .map(|(r, e)| {
            if e.path.lossy().is_empty() {
                r.root.lossy()
            } else {
                format!("{}/{}", r.root.lossy(), e.path.lossy())
            }
        })
        .collect()
}

/// Secrets: recipients configured (else secret files are skipped), the
/// repository's wrapped key and the local plain key, and the identity file.
fn secrets_checks(
    settings: &Settings,
    repo: Option<&Repository>,
    snaps: &[Snapshot],
) -> Vec<Check> {
    let s = &settings.secrets;
    if s.recipients.is_empty() {
        // Yellow only when secrets were actually left out: a home without
        // keys or tokens needs no recipient, and a warning there is noise.
        let skipped = repo.map(|r| skipped_secrets(r, snaps)).unwrap_or_default();
        return vec![match skipped.first() {
            Some(first) => check(
                "secrets",
                Level::Yellow,
                format!(
                    "no age recipients configured: {} secret-class file(s) skipped by the newest snapshot (first: {first}); set up with `backup-create --init-secrets`",
                    skipped.len()
                ),
            ),
            None => check(
                "secrets",
                Level::Green,
                "no secret-class files in the newest snapshot (none skipped); `backup-create --init-secrets` stores keys and tokens encrypted",
            ),
        }];
    }
    let mut out = Vec::new();
    let name = crate::secrets::key_name(&s.recipients);
    match repo {
        None => out.push(check(
            "secrets",
            Level::Green,
            format!(
                "{} recipient(s); the key is made with the repository",
                s.recipients.len()
            ),
        )),
        Some(repo) => {
            let wrapped = repo.sub(layout::KEYS).join(format!("{name}.age"));
            let plain = s
                .key_dir
                .as_ref()
                .map(|d| d.join(&repo.config.id).join(format!("{name}.key")));
            let has_plain = plain.as_ref().is_some_and(|p| p.is_file());
            let shown = |p: &Path| crate::paths::display_path(p);
            out.push(match (wrapped.is_file(), has_plain) {
                (true, true) => check(
                    "secrets",
                    Level::Green,
                    format!("{} recipient(s); key {name} present in the repository and locally", s.recipients.len()),
                ),
                (false, false) => check(
                    "secrets",
                    Level::Green,
                    format!(
                        "{} recipient(s); key {name} is created by the first checkpoint that stores a secret file",
                        s.recipients.len()
                    ),
                ),
                (true, false) => check(
                    "secrets",
                    Level::Yellow,
                    format!(
                        "the local copy of key {name} is missing ({}); the next checkpoint needs the identity file to unwrap {}, otherwise it skips secret files",
                        plain.as_deref().map(shown).unwrap_or_else(|| "no key directory: HOME unset".into()),
                        shown(&wrapped)
                    ),
                ),
                (false, true) => check(
                    "secrets",
                    Level::Red,
                    format!(
                        "{} is missing from the repository: secrets stored under key {name} cannot be restored on another machine; copy it back from a backup of the repository",
                        shown(&wrapped)
                    ),
                ),
            });
        }
    }
    out.push(match &s.identity_file {
        Some(p) if std::fs::File::open(p).is_ok() => check(
            "secrets_identity",
            Level::Green,
            format!("{} is readable (needed to restore secrets)", crate::paths::display_path(p)),
        ),
        Some(p) => check(
            "secrets_identity",
            Level::Yellow,
            format!(
                "{} is missing or unreadable: checkpoints still store secrets, but restoring them needs it; keep it (e.g. in a password manager) and put it back before a restore",
                crate::paths::display_path(p)
            ),
        ),
        None => check(
            "secrets_identity",
            Level::Yellow,
            "no identity file configured (HOME unset): restoring secrets needs one",
        ),
    });
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
