//! `backup-rollback`: make the tracked paths exactly as in a checkpoint, undo
//! one bootstrap phase, or undo the last rollback.

use clap::Parser;
use dotfiles_backup::cli::{self, CommonArgs};
use dotfiles_backup::ops::restore::{self, Mode2, RestoreOptions};
use dotfiles_backup::ops::{phases, undo};

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
    /// With --phase-only: also revert paths changed again after the phase
    #[arg(long, requires = "phase_only")]
    overwrite: bool,
    /// Print the plan; change nothing
    #[arg(long)]
    dry_run: bool,
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
            let only = restore::selected_paths(s, &only_raw, None)?;
            if args.phase_only {
                let opts = undo::UndoOptions {
                    selector: args.snapshot.clone().unwrap_or_default(),
                    overwrite: args.overwrite,
                    only,
                    dry_run: args.dry_run,
                    all_homes: args.all_homes,
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
                command: "backup-rollback".into(),
            };
            restore::run(s, &opts, env)
        },
        dotfiles_backup::human::plan,
    )
}
