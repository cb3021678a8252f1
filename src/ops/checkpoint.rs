//! `backup-checkpoint` and `backup-create`: validate the label, take the
//! snapshot, and report it in the envelope.

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::ops::backup::{run_backup, run_backup_with, BackupOptions, BackupReport};
use crate::ops::phases;
use crate::repo::snapshot::{invalid_name, SnapshotKind, PHASES};
use crate::report::{Envelope, SnapshotInfo, Status};

/// Which checkpoint to take.
#[derive(Debug, Clone)]
pub enum CheckpointTarget {
    /// A bootstrap phase.
    Phase(String),
    /// A named manual checkpoint.
    Manual(String),
}

/// Validate a phase name.
pub fn check_phase(phase: &str) -> Result<()> {
    if PHASES.contains(&phase) {
        Ok(())
    } else {
        Err(Error::usage(
            "unknown_phase",
            format!(
                "unknown phase {phase:?}; valid phases: {}",
                PHASES.join(", ")
            ),
        )
        .with_hint(format!(
            "use one of the phases, or `backup-checkpoint manual {}` for a named checkpoint",
            if invalid_name(phase).is_none() {
                phase
            } else {
                "NAME"
            }
        )))
    }
}

/// The run id of a checkpoint: `--run`, else `BACKUP_RUN_ID` for a phase
/// (the role exports it for a whole play, manual checkpoints included, so
/// there it is ignored); an empty value counts as unset.
pub fn run_id(target: &CheckpointTarget, flag: Option<&str>) -> Option<String> {
    let from_env = match target {
        CheckpointTarget::Phase(_) => crate::config::process_env(phases::RUN_ENV),
        CheckpointTarget::Manual(_) => None,
    };
    flag.map(str::to_string)
        .or(from_env)
        .filter(|r| !r.is_empty())
}

/// Validate a manual checkpoint or backup label.
pub fn check_name(name: &str) -> Result<()> {
    match invalid_name(name) {
        None => Ok(()),
        Some(why) => Err(Error::usage(
            "unsafe_name",
            format!("{:?} cannot be used as a checkpoint name: {why}", name),
        )
        .with_hint("use letters, digits, `.`, `_` and `-`, e.g. before-nvim-change")),
    }
}

/// Take a checkpoint. `run` is the bootstrap run id given with `--run` or
/// `BACKUP_RUN_ID` (phases only; `None`: [`phases::choose_run`] decides).
pub fn checkpoint(
    settings: &Settings,
    target: &CheckpointTarget,
    tags: &[String],
    run: Option<&str>,
    dry_run: bool,
    env: &mut Envelope,
) -> Result<()> {
    let (label, capture, run) = match target {
        CheckpointTarget::Phase(p) => {
            check_phase(p)?;
            if let Some(id) = run {
                phases::check_run_id(id, "--run or BACKUP_RUN_ID")?;
            }
            // Logged even when the run fails, so the completion report can
            // tell a failed phase from one that never ran.
            env.put("phase", p);
            // Runs are per home: another home's bootstrap on a shared
            // repository neither continues nor starts this home's run.
            let mut existing = crate::repo::Repository::open(&settings.repo)
                .and_then(|r| r.snapshots())
                .unwrap_or_default();
            existing.retain(|s| s.record.of_home(settings.home.as_deref()));
            let (id, first) = phases::choose_run(&existing, p, run);
            env.put("run", &id);
            (p.clone(), settings.packages.auto, Some((id, first)))
        }
        CheckpointTarget::Manual(n) => {
            check_name(n)?;
            if run.is_some() {
                return Err(Error::usage(
                    "usage",
                    "--run belongs to phase checkpoints (`auto PHASE`), not manual ones",
                )
                .with_hint("leave --run out, or unset BACKUP_RUN_ID"));
            }
            (n.clone(), settings.packages.manual, None)
        }
    };
    let opts = BackupOptions {
        kind: SnapshotKind::Checkpoint,
        label,
        tags: tags.to_vec(),
        dry_run,
        command: env.command.clone(),
        space: Some(settings.space.clone()),
        run: run.as_ref().map(|(id, _)| id.clone()),
        verify_after_write: settings.verify_after_write,
    };
    // Package managers run before the lock is taken (they can be slow), and
    // not in a dry run, which promises to only look at the tracked files.
    let cache_file = settings.repo.join("cache").join("packages");
    let captured = (capture && !dry_run)
        .then(|| crate::packages::capture(&settings.packages, Some(&cache_file)));
    let report = run_backup_with(
        settings,
        &opts,
        captured.as_ref().map(|c| c.lists.as_slice()),
    )?;
    let record_written = !report.reused && !dry_run;
    fill(env, report, dry_run, settings);
    // Only a record this run wrote: one reused from the same run was pinned
    // then, and may have been unpinned since on purpose.
    if let (Some((id, true)), true) = (&run, record_written) {
        pin_first_run(settings, id, env);
    }
    if let Some(c) = captured {
        // After the checkpoint: its first run creates the repository's cache/.
        crate::packages::store_cache(&c);
        env.stat("packages_ms", c.duration_ms);
        env.stat("package_lists", c.known());
        env.put("packages", &c.outcomes);
        env.warnings.extend(c.warnings);
    }
    if matches!(target, CheckpointTarget::Phase(p) if p == "bootstrap-complete") && !dry_run {
        crate::ops::report::attach(settings, env);
    }
    Ok(())
}

/// Take an ordinary backup.
pub fn create(
    settings: &Settings,
    label: Option<&str>,
    tags: &[String],
    dry_run: bool,
    env: &mut Envelope,
) -> Result<()> {
    let label = label.unwrap_or("backup").to_string();
    check_name(&label)?;
    let opts = BackupOptions {
        kind: SnapshotKind::Backup,
        label,
        tags: tags.to_vec(),
        dry_run,
        command: env.command.clone(),
        space: Some(settings.space.clone()),
        run: None,
        verify_after_write: settings.verify_after_write,
    };
    let report = run_backup(settings, &opts)?;
    fill(env, report, dry_run, settings);
    Ok(())
}

/// Pin a checkpoint of the repository's first run: it is the machine as it
/// came, and per-phase retention would otherwise drop it after a few
/// re-runs. A pin that cannot be written is a warning: the checkpoint is
/// committed either way.
fn pin_first_run(settings: &Settings, run: &str, env: &mut Envelope) {
    let Some(snap) = env.snapshot.as_ref() else {
        return;
    };
    let reason = format!("first bootstrap run {run}: the machine as it came");
    let pinned = crate::repo::Repository::open(&settings.repo).and_then(|repo| {
        let id = snap.id.parse().map_err(|_| {
            Error::new(
                ExitCode::Internal,
                "internal_error",
                "snapshot id is not hex",
            )
        })?;
        crate::repo::pins::write_pin(&repo, &id, &reason)
    });
    match pinned {
        Ok(()) => env.put("pinned", reason),
        Err(e) => env.warnings.push(crate::report::Warning::new(
            "pin_failed",
            format!(
                "{}; pin it by hand: backup-prune --pin {}",
                e.message, snap.short_id
            ),
        )),
    }
}

/// Copy a backup report into the envelope.
pub fn fill(env: &mut Envelope, report: BackupReport, dry_run: bool, settings: &Settings) {
    env.dry_run = dry_run;
    // `changed`: the run stored a state no snapshot had (so an idempotent
    // re-run reports none); `snapshot.reused`: no record was written, an
    // existing one is reported (docs/json.md).
    env.changed = report.changed && !report.reused;
    env.snapshot = report
        .snapshot
        .as_ref()
        .map(|s| SnapshotInfo::from_snapshot(s, report.reused));
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&report.stats) {
        env.stats = map;
    }
    env.warnings.extend(report.warnings);
    // A file left out for its size is content the user may think is safe.
    for x in report
        .excluded
        .iter()
        .filter(|x| x.reason.starts_with("too large"))
    {
        env.warnings.push(crate::report::Warning::at(
            "file_too_large",
            x.path.clone(),
            format!(
                "{} is not stored: {}; raise [track] max_file_size or exclude it to silence this",
                x.path, x.reason
            ),
        ));
    }
    if dry_run || settings.report_sizes {
        env.put("excluded", &report.excluded);
        let warn = settings.space.large_file_warn_mb << 20;
        let strong = settings.space.large_file_strong_mb << 20;
        let mut large = Vec::new();
        for (root, e) in report.tree.entries() {
            if e.kind == crate::repo::snapshot::EntryType::File && e.size >= warn {
                let mut path = root.root.lossy();
                if !e.path.is_empty() {
                    path = format!("{path}/{}", e.path.lossy());
                }
                let level = if e.size >= strong { "strong" } else { "warn" };
                env.warnings.push(crate::report::Warning::at(
                    "large_file",
                    path.clone(),
                    format!(
                        "{path} is {} ({} threshold {} MiB); exclude it if it is not configuration",
                        crate::units::human_bytes(e.size),
                        if level == "strong" {
                            "above the strong"
                        } else {
                            "above the"
                        },
                        if level == "strong" {
                            settings.space.large_file_strong_mb
                        } else {
                            settings.space.large_file_warn_mb
                        }
                    ),
                ));
                large.push(serde_json::json!({"path": path, "bytes": e.size, "level": level}));
            }
        }
        env.put("large_files", large);
    }
    if dry_run || settings.report_sizes {
        let roots: Vec<serde_json::Value> = report
            .tree
            .roots
            .iter()
            .map(|r| {
                let files = r.entries.iter().filter(|e| e.sha256.is_some()).count();
                let bytes: u64 = r.entries.iter().filter(|e| e.sha256.is_some()).map(|e| e.size).sum();
                serde_json::json!({"root": r.root.lossy(), "present": r.present, "entries": r.entries.len(), "files": files, "bytes": bytes})
            })
            .collect();
        env.put("roots", roots);
    }
    if settings.report_sizes {
        env.put("largest", super::sizes::largest(&report.tree));
    }
    if !report.errors.is_empty() {
        for e in &report.errors {
            env.errors.push(e.into());
        }
        env.status = Status::Partial;
        env.set_exit(ExitCode::Partial);
    }
    // The snapshot is committed: copy it to the external targets (never fails the run).
    crate::ops::sync::after_write(settings, env);
}
