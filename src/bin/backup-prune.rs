//! `backup-prune`: apply the retention policy and collect garbage.

use clap::Parser;
use dotfiles_backup::cli::{self, CommonArgs};
use dotfiles_backup::ops::prune::{self, PruneOptions};

/// Remove snapshots the retention policy does not keep, then free their space.
#[derive(Parser)]
#[command(
    name = "backup-prune",
    version,
    about,
    after_help = "Examples:\n  backup-prune --dry-run          # every snapshot with keep/remove and why\n  backup-prune\n  backup-prune --pin pre-dotfiles  # keep forever\n  backup-prune --forget before-experiment\n  backup-prune --external          # the same policy on the external copies\n\nPolicy: [retention] in the config; see docs/retention.md."
)]
struct Args {
    /// Show what would be kept and removed; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Pin a snapshot (id, prefix, label): kept forever (repeatable)
    #[arg(long, value_name = "SNAPSHOT")]
    pin: Vec<String>,
    /// Unpin a snapshot (repeatable)
    #[arg(long, value_name = "SNAPSHOT")]
    unpin: Vec<String>,
    /// Remove this snapshot whatever the policy says (repeatable; pinned ones are refused)
    #[arg(long, value_name = "SNAPSHOT")]
    forget: Vec<String>,
    /// Apply the policy to the external copies (all, or the one named) instead of the local repository
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true, default_missing_value = "", conflicts_with_all = ["pin", "unpin", "forget"])]
    external: Option<dotfiles_backup::external::TargetChoice>,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    let args: Args = cli::parse("backup-prune");
    let opts = PruneOptions {
        dry_run: args.dry_run,
        pin: args.pin.clone(),
        unpin: args.unpin.clone(),
        forget: args.forget.clone(),
    };
    if let Some(choice) = &args.external {
        return cli::run(
            "backup-prune",
            &args.common,
            args.common.overrides(),
            |s, env| dotfiles_backup::ops::external_prune::run(s, choice.name(), args.dry_run, env),
            dotfiles_backup::ops::external_prune::human,
        );
    }
    cli::run(
        "backup-prune",
        &args.common,
        args.common.overrides(),
        |s, env| prune::run(s, &opts, env),
        dotfiles_backup::human::prune,
    )
}
