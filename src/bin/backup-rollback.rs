//! `backup-rollback`: make the tracked paths exactly as in a checkpoint, undo
//! one bootstrap phase, or undo the last rollback.

use clap::{Parser, ValueEnum};
use dotfiles_backup::cli::{self, CommonArgs};
use dotfiles_backup::error::Error;
use dotfiles_backup::ops::restore::{self, Existing, Mode2, RestoreOptions};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OverwriteArg {
    /// Replace paths that differ (what a rollback does anyway; with --phase-only: also those changed again since)
    Always,
    /// Leave each file or symlink that differs, roll back the rest, report each left path (exit 3)
    Skip,
    /// Keep each file or symlink that differs beside it as NAME.dotfiles-backup-<ID>~, then roll back
    Rename,
}
use dotfiles_backup::ops::package_plan::PackagesMode;
use dotfiles_backup::ops::{package_plan, phases, undo};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PackagesArg {
    /// Show what the package managers changed since the checkpoint and the commands reversing it
    Plan,
    /// Also run those commands after the files are rolled back (not with --phase-only)
    Apply,
    /// No package plan; the package managers are not asked
    Off,
}

/// Put every tracked path back exactly as it was at a checkpoint.
#[derive(Parser)]
#[command(
    name = "backup-rollback",
    version,
    about,
    after_help = "Examples:\n  backup-rollback pre-dotfiles --dry-run\n  backup-rollback pre-dotfiles\n  backup-rollback pre-dotfiles@first\n  backup-rollback pre-dotfiles --phase-only\n  backup-rollback pre-dotfiles --path ~/.zshrc --path ~/.config/nvim\n  backup-rollback --undo\n\nA phase name picks the newest bootstrap run in which that phase changed something\n(PHASE@first, PHASE@RUN and PHASE~N pick others; see `backup-list --phases`).\nA safety snapshot of the current state is committed before anything changes."
)]
struct Args {
    /// Checkpoint phase (PHASE, PHASE@first, PHASE@RUN, PHASE~N), name, id (or prefix), or `latest`
    #[arg(required_unless_present = "undo", conflicts_with = "undo")]
    snapshot: Option<String>,
    /// Go back to the state before the last rollback or restore (before the first of consecutive ones); again: redo
    #[arg(long)]
    undo: bool,
    /// Leave files created since the checkpoint in place
    #[arg(long)]
    keep_new: bool,
    /// Revert only the paths the phase changed (up to the next checkpoint of its run)
    #[arg(long, conflicts_with = "keep_new")]
    phase_only: bool,
    /// Changed paths: skip or rename them; with --phase-only, a bare --overwrite also reverts paths changed again after the phase
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "always", value_name = "WHAT")]
    overwrite: Option<OverwriteArg>,
    /// Print the plan; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Package plan beside the file plan, when the checkpoint holds package lists
    #[arg(long, value_enum, default_value = "plan", value_name = "WHAT")]
    packages: PackagesArg,
    /// With --undo: undo even when a checkpoint or backup was taken after the last rollback
    #[arg(long, requires = "undo")]
    force: bool,
    /// Select among the snapshots of every home sharing the repository, not only $HOME's
    #[arg(long)]
    all_homes: bool,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    let args: Args = cli::parse("backup-rollback");
    let mut over = args.common.overrides();
    let only_raw = std::mem::take(&mut over.paths);
    cli::run(
        "backup-rollback",
        &args.common,
        over,
        |s, env| {
            let existing = match (args.overwrite, args.phase_only) {
                (Some(OverwriteArg::Always), false) => return Err(Error::usage(
                    "overwrite_needs_value",
                    "a rollback already replaces paths that differ; --overwrite alone belongs to --phase-only",
                ).with_hint("pass --overwrite skip or --overwrite rename, or add --phase-only")),
                (Some(OverwriteArg::Rename), true) => return Err(Error::usage(
                    "overwrite_rename_phase_only",
                    "--overwrite rename is not available with --phase-only",
                ).with_hint("without --overwrite, --phase-only already leaves paths changed again since the phase")),
                (Some(OverwriteArg::Skip), _) => Existing::Skip,
                (Some(OverwriteArg::Rename), _) => Existing::Rename,
                _ => Existing::Replace,
            };
            let only = restore::selected_paths(s, &only_raw, None)?;
            let packages = match args.packages {
                PackagesArg::Plan => PackagesMode::Plan,
                PackagesArg::Apply => PackagesMode::Apply,
                PackagesArg::Off => PackagesMode::Off,
            };
            if args.phase_only && packages == PackagesMode::Apply {
                return Err(Error::usage(
                    "packages_apply_phase_only",
                    "--packages apply is not available with --phase-only",
                )
                .with_hint("the phase's package plan is shown with --packages plan; run its commands by hand, or roll everything back to the phase without --phase-only"));
            }
            if args.phase_only {
                let opts = undo::UndoOptions {
                    selector: args.snapshot.clone().unwrap_or_default(),
                    overwrite: args.overwrite == Some(OverwriteArg::Always),
                    only,
                    dry_run: args.dry_run,
                    all_homes: args.all_homes,
                    packages,
                };
                return undo::undo_phase(s, &opts, env);
            }
            let selector = match (&args.snapshot, args.undo) {
                (Some(sel), false) => Some(phases::explain(s, sel, args.all_homes, env)?),
                _ => None,
            };
            let opts = RestoreOptions {
                selector,
                mode: Mode2::Rollback {
                    keep_new: args.keep_new,
                },
                only,
                target: None,
                dry_run: args.dry_run,
                all_homes: args.all_homes,
                force: args.force,
                existing,
                command: "backup-rollback".into(),
            };
            package_plan::rollback(s, &opts, packages, env)
        },
        dotfiles_backup::human::plan,
    )
}
