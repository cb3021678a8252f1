//! `backup-verify`: repository integrity.

use clap::Parser;
use dotfiles_backup::cli::{self, CommonArgs};

/// Check that every snapshot's data is present and intact.
#[derive(Parser)]
#[command(
    name = "backup-verify",
    version,
    about,
    after_help = "Examples:\n  backup-verify\n  backup-verify --read-data --json\n  backup-verify --external --read-data\n  backup-verify --repair\n  backup-verify --repair --from-external=drive"
)]
struct Args {
    /// Rebuild the index from the packs' trailers (takes the writer lock), drop
    /// what no pack holds, list exactly which snapshots and paths are lost, then verify
    #[arg(long, conflicts_with = "external")]
    repair: bool,
    /// With --repair: first fetch missing or damaged packs, trees and records from the
    /// external copy (the only target, or the one named), checked by hash
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true, default_missing_value = "", requires = "repair")]
    from_external: Option<dotfiles_backup::external::TargetChoice>,
    /// Re-hash every byte of every pack (slower, complete)
    #[arg(long)]
    read_data: bool,
    /// Check the external copy (the only target, or the one named) instead of the local repository
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    external: Option<dotfiles_backup::external::TargetChoice>,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    let args: Args = cli::parse("backup-verify");
    cli::run(
        "backup-verify",
        &args.common,
        args.common.overrides(),
        |s, env| match &args.external {
            Some(choice) => {
                let (ext, _scratch) =
                    dotfiles_backup::ops::sync::external_repo(s, choice.name(), true, env)?;
                dotfiles_backup::ops::verify::run(&ext, args.read_data, env)
            }
            None if args.repair => {
                let from = args.from_external.as_ref().map(|c| c.name());
                dotfiles_backup::ops::repair::run_repair(s, args.read_data, from, env)
            }
            None => dotfiles_backup::ops::verify::run(s, args.read_data, env),
        },
        dotfiles_backup::human::verify,
    )
}
