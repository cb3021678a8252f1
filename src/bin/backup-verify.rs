//! `backup-verify`: repository integrity.

use clap::Parser;
use dotfiles_backup::cli::{self, CommonArgs};

/// Check that every snapshot's data is present and intact.
#[derive(Parser)]
#[command(
    name = "backup-verify",
    version,
    about,
    after_help = "Examples:\n  backup-verify\n  backup-verify --read-data --json"
)]
struct Args {
    /// Re-hash every byte of every pack (slower, complete)
    #[arg(long)]
    read_data: bool,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    let args: Args = cli::parse("backup-verify");
    cli::run(
        "backup-verify",
        &args.common,
        args.common.overrides(),
        |s, env| dotfiles_backup::ops::verify::run(s, args.read_data, env),
        dotfiles_backup::human::verify,
    )
}
