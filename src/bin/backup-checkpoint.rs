//! `backup-checkpoint`: take a phase or named checkpoint, or check health.

use clap::{Parser, Subcommand};
use dotfiles_backup::cli::{self, CommonArgs};
use dotfiles_backup::ops::{checkpoint, health};

/// Take a checkpoint of your configuration before a bootstrap phase or an experiment.
#[derive(Parser)]
#[command(
    name = "backup-checkpoint",
    version,
    about,
    after_help = "Examples:\n  backup-checkpoint auto pre-dotfiles\n  backup-checkpoint manual before-nvim-change\n  backup-checkpoint --health-check --json\n\nPhases: pre-ansible pre-homebrew pre-dotfiles pre-applications post-setup bootstrap-complete"
)]
struct Args {
    #[command(subcommand)]
    what: Option<What>,
    /// Check readiness (repository, lock, disk, last checkpoint, quick verify); exit 1 if anything is red
    #[arg(long)]
    health_check: bool,
    /// Show what would be stored; write nothing
    #[arg(long, global = true)]
    dry_run: bool,
    /// Also exclude paths matching this gitignore-style pattern (repeatable)
    #[arg(long = "exclude", value_name = "PATTERN", global = true)]
    excludes: Vec<String>,
    /// Report per-root sizes, large files and exclusions
    #[arg(long, global = true)]
    sizes: bool,
    /// Tag the checkpoint (repeatable)
    #[arg(long = "tag", value_name = "TAG", global = true)]
    tags: Vec<String>,
    /// Bootstrap run this phase checkpoint belongs to; else $BACKUP_RUN_ID; else a new run at pre-ansible or when a phase repeats
    #[arg(long, value_name = "ID", global = true)]
    run: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Subcommand)]
enum What {
    /// Checkpoint before a bootstrap phase
    Auto {
        /// pre-ansible, pre-homebrew, pre-dotfiles, pre-applications, post-setup or bootstrap-complete
        phase: String,
    },
    /// A named checkpoint
    Manual {
        /// Letters, digits, `.`, `_`, `-`
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    let args: Args = cli::parse("backup-checkpoint");
    let mut over = args.common.overrides();
    over.excludes = args.excludes.clone();
    over.sizes = args.sizes;
    if args.health_check {
        return cli::run(
            "backup-checkpoint",
            &args.common,
            over,
            health::health,
            dotfiles_backup::human::health,
        );
    }
    let target = match args.what {
        Some(What::Auto { phase }) => checkpoint::CheckpointTarget::Phase(phase),
        Some(What::Manual { name }) => checkpoint::CheckpointTarget::Manual(name),
        None => {
            return cli::run(
                "backup-checkpoint",
                &args.common,
                over,
                |_, _| {
                    Err(dotfiles_backup::error::Error::usage(
                        "usage",
                        "say `auto PHASE`, `manual NAME` or `--health-check`",
                    )
                    .with_hint("run `backup-checkpoint --help`"))
                },
                dotfiles_backup::human::snapshot_taken,
            )
        }
    };
    cli::run(
        "backup-checkpoint",
        &args.common,
        over,
        |s, env| {
            let run = checkpoint::run_id(&target, args.run.as_deref());
            checkpoint::checkpoint(s, &target, &args.tags, run.as_deref(), args.dry_run, env)
        },
        dotfiles_backup::ops::sync::snapshot_taken_and_synced,
    )
}
