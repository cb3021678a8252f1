//! `backup-restore`: copy a snapshot's content back, never deleting anything.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use dotfiles_backup::cli::{self, CommonArgs};
use dotfiles_backup::ops::restore::{self, Existing, Mode2, Overwrite, RestoreOptions};

#[derive(Clone, Copy, ValueEnum)]
enum OverwriteArg {
    /// Refuse when any existing path differs (exit 5); change nothing
    Never,
    /// Replace paths that differ
    IfChanged,
    /// Rewrite every path, even identical ones
    Always,
    /// Leave each path that differs, restore the rest, report each left path (exit 3)
    Skip,
    /// Keep each file or symlink that differs beside it as NAME.dotfiles-backup-<ID>~, then restore
    Rename,
}

/// Restore files from a snapshot onto their original place or under --target.
#[derive(Parser)]
#[command(
    name = "backup-restore",
    version,
    about,
    after_help = "Examples:\n  backup-restore pre-dotfiles --dry-run\n  backup-restore latest --path ~/.zshrc --overwrite if-changed\n  backup-restore latest --overwrite rename   # keep changed files beside as NAME.dotfiles-backup-<ID>~\n  backup-restore 8c5115f2 --target /tmp/restored\n  backup-restore latest --from-external   # new machine: fetch the external copy, then restore\n\nA safety snapshot of everything the restore touches is taken first; `backup-rollback --undo` takes the restore back."
)]
struct Args {
    /// Snapshot id (or prefix), label, or `latest`
    snapshot: String,
    /// Restore under this directory instead of the original place (`~/x` → DIR/x, `/etc/x` → DIR/etc/x)
    #[arg(long, value_name = "DIR")]
    target: Option<PathBuf>,
    /// What to do with existing paths that differ
    #[arg(long, value_enum, default_value = "never")]
    overwrite: OverwriteArg,
    /// Print the plan; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Fetch the external copy (the only target, or the one named) into the local repository first (a new machine)
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    from_external: Option<dotfiles_backup::external::TargetChoice>,
    /// Select among the snapshots of every home sharing the repository, not only $HOME's
    #[arg(long)]
    all_homes: bool,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    let args: Args = cli::parse("backup-restore");
    let mut over = args.common.overrides();
    // --path selects what to restore; the tracked set stays as configured.
    let only_raw = std::mem::take(&mut over.paths);
    let (overwrite, existing) = match args.overwrite {
        OverwriteArg::Never => (Overwrite::Never, Existing::Replace),
        OverwriteArg::IfChanged => (Overwrite::IfChanged, Existing::Replace),
        OverwriteArg::Always => (Overwrite::Always, Existing::Replace),
        OverwriteArg::Skip => (Overwrite::IfChanged, Existing::Skip),
        OverwriteArg::Rename => (Overwrite::IfChanged, Existing::Rename),
    };
    cli::run(
        "backup-restore",
        &args.common,
        over,
        |s, env| {
            let from = dotfiles_backup::ops::sync::restore_source(
                s,
                args.from_external.as_ref(),
                args.dry_run,
                env,
            )?;
            let s = from.as_ref().unwrap_or(s);
            let target = args
                .target
                .as_deref()
                .map(dotfiles_backup::config::absolutize);
            let only = restore::selected_paths(s, &only_raw, target.as_deref())?;
            let opts = RestoreOptions {
                selector: Some(dotfiles_backup::ops::phases::explain(
                    s,
                    &args.snapshot,
                    args.all_homes,
                    env,
                )?),
                mode: Mode2::Restore(overwrite),
                only,
                target,
                dry_run: args.dry_run,
                all_homes: args.all_homes,
                force: false,
                existing,
                command: "backup-restore".into(),
            };
            restore::run(s, &opts, env)
        },
        dotfiles_backup::human::plan,
    )
}
