//! `backup-create`: an ordinary backup of everything configured.

use clap::Parser;
use dotfiles_backup::cli::{self, CommonArgs};
use dotfiles_backup::ops::checkpoint;

/// Back up every configured path (dotfiles, ~/.config, and data paths).
#[derive(Parser)]
#[command(
    name = "backup-create",
    version,
    about,
    after_help = "Examples:\n  backup-create\n  backup-create --config-only --dry-run\n  backup-create --label weekly --tag laptop\n  backup-create --init-secrets   # then secret files (~/.ssh/id_*, tokens) are stored encrypted\n  backup-create --sync-external  # copy what the external drive or remote missed\n  backup-create --print-config   # every setting, its value and where it came from\n  backup-create --schedule daily # a checkpoint, prune and health check every day (systemd user timer / launchd agent); --schedule off removes it"
)]
struct Args {
    /// Only the configuration class (`track.config`), not `track.data`
    #[arg(long)]
    config_only: bool,
    /// Show what would be stored; write nothing
    #[arg(long)]
    dry_run: bool,
    /// Also exclude paths matching this gitignore-style pattern (repeatable)
    #[arg(long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Report per-root sizes, large files and exclusions
    #[arg(long)]
    sizes: bool,
    /// Label (default `backup`)
    #[arg(long)]
    label: Option<String>,
    /// Tag (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Create an age identity (if there is none) and add its public key to the
    /// recipients file, so secret-class files are stored encrypted; no backup is taken
    #[arg(long)]
    init_secrets: bool,
    /// Copy what the external targets (or the one named) lack; no backup is taken
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    sync_external: Option<dotfiles_backup::external::TargetChoice>,
    /// Install (daily, hourly) or remove (off) a systemd user timer / launchd agent that runs a checkpoint, the retention policy and the health check; no backup is taken
    #[arg(long, value_name = "WHEN", value_enum)]
    schedule: Option<dotfiles_backup::ops::schedule::Interval>,
    /// Print the effective configuration, each value with its source (default, config file, env, flag); no backup is taken
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    let args: Args = cli::parse("backup-create");
    let mut over = args.common.overrides();
    over.config_only = args.config_only;
    over.excludes = args.excludes.clone();
    over.sizes = args.sizes;
    if let Some(choice) = &args.sync_external {
        let name = choice.name();
        return cli::run(
            "backup-create",
            &args.common,
            over,
            |s, env| dotfiles_backup::ops::sync::sync_command(s, name, env),
            dotfiles_backup::ops::sync::human,
        );
    }
    if let Some(interval) = args.schedule {
        return cli::run_read_only_settings(
            "backup-create",
            &args.common,
            over,
            |s, env| dotfiles_backup::ops::schedule::run(s, interval, env),
            dotfiles_backup::human::schedule,
        );
    }
    if args.print_config {
        return cli::run_read_only_settings(
            "backup-create",
            &args.common,
            over,
            dotfiles_backup::effective::print_config,
            dotfiles_backup::effective::human,
        );
    }
    if args.init_secrets {
        return cli::run(
            "backup-create",
            &args.common,
            over,
            |s, env| dotfiles_backup::secrets::run_init(s, args.dry_run, env),
            dotfiles_backup::human::secrets_initialized,
        );
    }
    cli::run(
        "backup-create",
        &args.common,
        over,
        |s, env| checkpoint::create(s, args.label.as_deref(), &args.tags, args.dry_run, env),
        dotfiles_backup::ops::sync::snapshot_taken_and_synced,
    )
}
