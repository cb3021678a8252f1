//! The package plan beside the file plan of `backup-rollback`: for a full
//! rollback, the target checkpoint's package lists against the managers'
//! answer now; for a phase undo (`--phase-only`), the phase's checkpoint
//! against the next checkpoint of its run. The plan itself is
//! [`crate::packages::plan`]; this module finds the two sides, puts the plan
//! into the envelope (`package_plan`), and with `--packages apply` runs it
//! after the files were rolled back ([`crate::packages::apply`]).
//!
//! Kept out of `ops/restore.rs` on purpose: the file rollback does not know
//! about packages, and this wraps it.

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::packages::plan::{self, PackagePlan, PlanPaths};
use crate::repo::snapshot::{PackageList, Snapshot};
use crate::repo::Repository;
use crate::report::{Envelope, Warning};

/// What `--packages` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackagesMode {
    /// No package plan (the managers are not asked).
    Off,
    /// Show the plan (the default).
    Plan,
    /// Show it and, unless a dry run, run it after the files.
    Apply,
}

/// Where the target's Brewfile is written for `brew bundle --file=`: in the
/// repository's cache directory, never in the home.
fn brewfile_path(settings: &Settings, target: &Snapshot) -> String {
    settings
        .repo
        .join("cache")
        .join(format!("Brewfile-{}", target.id.short()))
        .to_string_lossy()
        .into_owned()
}

/// The snapshot a full rollback goes to (as `restore::run` selects it), or
/// `None` for `--undo` (the undo of a rollback plans no packages).
pub fn rollback_target(
    settings: &Settings,
    selector: Option<&str>,
    all_homes: bool,
) -> Result<Option<Snapshot>> {
    let Some(sel) = selector else {
        return Ok(None);
    };
    let repo = Repository::open(&settings.repo)?;
    let every = repo.snapshots()?;
    let scoped = super::select::of_home(every.clone(), settings.home.as_deref(), all_homes);
    Ok(Some(
        super::select::select_scoped(&scoped, &every, sel, None)?.clone(),
    ))
}

/// The lists `packages.managers` (`BACKUP_PACKAGES=apt,npm`) allows, or
/// `None` when there are none: a limited set of managers limits the plan too.
fn limited(settings: &Settings, lists: Option<&[PackageList]>) -> Option<Vec<PackageList>> {
    let only = settings.packages.managers.as_ref();
    let kept: Vec<PackageList> = lists?
        .iter()
        .filter(|l| only.is_none_or(|o| o.contains(&l.name)))
        .cloned()
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// The plan of a full rollback to `target`: its lists against the managers'
/// answer now. `None` when the target holds no package lists (captures were
/// off then): nothing to compare with, and the managers are not asked.
pub fn for_rollback(
    settings: &Settings,
    target: &Snapshot,
    mode: PackagesMode,
    env: &mut Envelope,
) -> Option<PackagePlan> {
    let then = limited(settings, target.record.packages.as_deref())?;
    // A plan that will be run asks the managers themselves: the capture
    // cache has known blind spots (docs/cli.md#package-lists).
    let cache_file = settings.repo.join("cache").join("packages");
    let cache_file = (mode != PackagesMode::Apply).then_some(cache_file.as_path());
    let c = crate::packages::capture(&settings.packages, cache_file);
    crate::packages::store_cache(&c);
    env.warnings.extend(c.warnings);
    env.stat("packages_ms", c.duration_ms);
    let paths = PlanPaths {
        brewfile: brewfile_path(settings, target),
        later: "now".into(),
    };
    let now = limited(settings, Some(&c.lists)).unwrap_or_default();
    Some(plan::plan(&then, &now, &paths))
}

/// The plan of a phase undo: what the phase (from `pre` to `next`) did.
pub fn for_phase(settings: &Settings, pre: &Snapshot, next: &Snapshot) -> Option<PackagePlan> {
    let then = limited(settings, pre.record.packages.as_deref())?;
    let after = limited(settings, next.record.packages.as_deref()).unwrap_or_default();
    let paths = PlanPaths {
        brewfile: brewfile_path(settings, pre),
        later: format!("at the next checkpoint ({})", next.id.short()),
    };
    Some(plan::plan(&then, &after, &paths))
}

/// Put the plan into the envelope, with a `package_plan_unknown` warning per
/// manager whose lists cannot be compared. With `apply`, an unknown manager
/// refuses the whole rollback before anything changes.
pub fn show(plan: &PackagePlan, mode: PackagesMode, env: &mut Envelope) -> Result<()> {
    env.put("package_plan", plan);
    let unknown: Vec<_> = plan.unknown().collect();
    for m in &unknown {
        env.warnings.push(Warning::new(
            "package_plan_unknown",
            format!(
                "packages `{}`: {}",
                m.name,
                m.reason.as_deref().unwrap_or("unknown")
            ),
        ));
    }
    if mode == PackagesMode::Apply && !unknown.is_empty() {
        let names: Vec<&str> = unknown.iter().map(|m| m.name.as_str()).collect();
        return Err(Error::new(
            ExitCode::Refused,
            "package_plan_unknown",
            format!(
                "the package plan is unknown for {} ({}); nothing was changed",
                names.join(", "),
                unknown[0].reason.as_deref().unwrap_or("unknown")
            ),
        )
        .with_hint("roll back the files with --packages plan and reverse those managers by hand, or limit the managers with BACKUP_PACKAGES=NAME,… to those known on both sides"));
    }
    Ok(())
}

/// A full rollback with its package plan: the plan is made and shown first
/// (an unknown one refuses `apply` before any file changes), then the files
/// are rolled back, then, with `apply` and not a dry run, the packages.
pub fn rollback(
    settings: &Settings,
    opts: &super::restore::RestoreOptions,
    mode: PackagesMode,
    env: &mut Envelope,
) -> Result<()> {
    let target = match mode {
        PackagesMode::Off => None,
        _ => rollback_target(settings, opts.selector.as_deref(), opts.all_homes)?,
    };
    let plan = target
        .as_ref()
        .and_then(|t| for_rollback(settings, t, mode, env));
    if let Some(p) = &plan {
        show(p, mode, env)?;
    }
    super::restore::run(settings, opts, env)?;
    match (plan, target) {
        (Some(p), Some(t)) if mode == PackagesMode::Apply && !opts.dry_run => {
            run_plan(settings, &p, &t, env)
        }
        _ => Ok(()),
    }
}

/// Run the plan after the files were rolled back; a failed command is a
/// partial result (the files stay rolled back; `--undo` takes them back).
fn run_plan(
    settings: &Settings,
    plan: &PackagePlan,
    target: &Snapshot,
    env: &mut Envelope,
) -> Result<()> {
    let opts = crate::packages::apply::ApplyOptions {
        timeout: std::time::Duration::from_secs(settings.packages.apply_timeout_secs),
        root: rustix::process::geteuid().is_root(),
    };
    let lists = target.record.packages.as_deref().unwrap_or_default();
    let report = crate::packages::apply::apply(plan, lists, &opts);
    env.stat("package_commands", report.ran.len() as u64);
    for s in &report.skipped {
        env.warnings.push(Warning::new(
            "package_skipped",
            format!(
                "packages `{}`{}: {}",
                s.manager,
                s.package
                    .as_deref()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default(),
                s.reason
            ),
        ));
    }
    env.put("package_apply", &report);
    let Some(at) = &report.stopped_at else {
        return Ok(());
    };
    let why = report
        .ran
        .last()
        .filter(|r| &r.manager == at)
        .map(|r| {
            format!(
                "`{}` {}: {}",
                r.command.join(" "),
                r.status,
                r.message.as_deref().unwrap_or("")
            )
        })
        .or_else(|| report.skipped.last().map(|s| s.reason.clone()))
        .unwrap_or_default();
    Err(Error::new(
        ExitCode::Partial,
        "package_apply_failed",
        format!("the files were rolled back, but reversing the packages of `{at}` stopped: {why}; later commands did not run"),
    )
    .with_hint("fix the cause and run the remaining commands of package_plan by hand, or `backup-rollback --undo` to take the files back"))
}
