//! `backup-list`: snapshots, or one snapshot's entries.

use clap::Parser;
use dotfiles_backup::cli::{self, CommonArgs};
use dotfiles_backup::ops::list::{list, ListOptions};
use dotfiles_backup::repo::snapshot::SnapshotKind;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    Checkpoint,
    Backup,
    Safety,
}

/// List snapshots, or the files of one snapshot.
#[derive(Parser)]
#[command(
    name = "backup-list",
    version,
    about,
    after_help = "Examples:\n  backup-list\n  backup-list pre-dotfiles --files\n  backup-list latest --json\n  backup-list --stats\n  backup-list --diff pre-dotfiles post-setup\n  backup-list --diff pre-dotfiles        # against the live home"
)]
struct Args {
    /// Snapshot id (or prefix), label, or `latest`
    snapshot: Option<String>,
    /// List the snapshot's entries with size, mode and sha256
    #[arg(long)]
    files: bool,
    /// Only snapshots of this kind
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// What changed from snapshot A to snapshot B (or to the live home when B is left out)
    #[arg(long, num_args = 1..=2, value_names = ["A", "B"], conflicts_with_all = ["snapshot", "files"])]
    diff: Option<Vec<String>>,
    /// List the external copy (the only target, or the one named) instead of the local repository
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    external: Option<dotfiles_backup::external::TargetChoice>,
    /// Bootstrap runs, newest first: each phase's checkpoint, whether the phase changed the tracked files, and how much
    #[arg(long, conflicts_with_all = ["snapshot", "files", "diff", "kind", "external"])]
    phases: bool,
    /// Summarise the run log: runs per command, success rate, failures by code, median/p95 duration, last success per phase
    #[arg(long, conflicts_with_all = ["snapshot", "files"])]
    stats: bool,
    /// List and select the snapshots of every home sharing the repository, not only $HOME's
    #[arg(long)]
    all_homes: bool,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    let args: Args = cli::parse("backup-list");
    if args.stats {
        return cli::run(
            "backup-list",
            &args.common,
            args.common.overrides(),
            dotfiles_backup::runlog::stats,
            dotfiles_backup::human::run_stats,
        );
    }
    let opts = ListOptions {
        selector: args
            .snapshot
            .clone()
            .or_else(|| args.files.then(|| "latest".to_string())),
        files: args.files,
        kind: args.kind.map(|k| match k {
            Kind::Checkpoint => SnapshotKind::Checkpoint,
            Kind::Backup => SnapshotKind::Backup,
            Kind::Safety => SnapshotKind::Safety,
        }),
        diff: args
            .diff
            .as_ref()
            .and_then(|d| Some((d.first()?.clone(), d.get(1).cloned()))),
        phases: args.phases,
        all_homes: args.all_homes,
    };
    cli::run(
        "backup-list",
        &args.common,
        args.common.overrides(),
        |s, env| match &args.external {
            Some(choice) => {
                let (ext, _) =
                    dotfiles_backup::ops::sync::external_repo(s, choice.name(), false, env)?;
                list(&ext, &opts, env)
            }
            None => list(s, &opts, env),
        },
        dotfiles_backup::human::list,
    )
}
