//! `backup-checkpoint` and `backup-create`: validate the label, take the
//! snapshot, and report it in the envelope.

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::ops::backup::{run_backup, run_backup_with, BackupOptions, BackupReport};
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

/// Take a checkpoint.
pub fn checkpoint(
    settings: &Settings,
    target: &CheckpointTarget,
    tags: &[String],
    dry_run: bool,
    env: &mut Envelope,
) -> Result<()> {
    let (label, capture) = match target {
        CheckpointTarget::Phase(p) => {
            check_phase(p)?;
            // Logged even when the run fails, so the completion report can
            // tell a failed phase from one that never ran.
            env.put("phase", p);
            (p.clone(), settings.packages.auto)
        }
        CheckpointTarget::Manual(n) => {
            check_name(n)?;
            (n.clone(), settings.packages.manual)
        }
    };
    let opts = BackupOptions {
        kind: SnapshotKind::Checkpoint,
        label,
        tags: tags.to_vec(),
        dry_run,
        command: env.command.clone(),
        space: Some(settings.space.clone()),
    };
    // Package managers run before the lock is taken (they can be slow), and
    // not in a dry run, which promises to only look at the tracked files.
    let captured = (capture && !dry_run).then(|| crate::packages::capture(&settings.packages));
    let report = run_backup_with(
        settings,
        &opts,
        captured.as_ref().map(|c| c.lists.as_slice()),
    )?;
    fill(env, report, dry_run, settings);
    if let Some(c) = captured {
        env.stat("packages_ms", c.duration_ms);
        env.stat("package_lists", c.lists.len() as u64);
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
    };
    let report = run_backup(settings, &opts)?;
    fill(env, report, dry_run, settings);
    Ok(())
}

/// Copy a backup report into the envelope.
pub fn fill(env: &mut Envelope, report: BackupReport, dry_run: bool, settings: &Settings) {
    env.dry_run = dry_run;
    env.changed = report.changed && !report.reused;
    env.snapshot = report
        .snapshot
        .as_ref()
        .map(|s| SnapshotInfo::from_snapshot(s, report.reused));
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&report.stats) {
        env.stats = map;
    }
    env.warnings.extend(report.warnings);
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
                        crate::cli::human_bytes(e.size),
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
