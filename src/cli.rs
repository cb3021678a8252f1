//! What every binary shares: common flags, parsing with the JSON contract
//! honoured even for usage errors, settings resolution, the run wrapper that
//! turns a library result into an envelope, output, and the exit code.
//!
//! Binaries stay thin: they declare their own flags (clap derive), build an
//! options struct, and hand a closure to [`run`].

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Parser};

use crate::config::{process_env, Overrides, Settings};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::report::{Degradation, Envelope, Status};

/// Flags every binary takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Repository root [env: BACKUP_REPO] [default: ~/.dotfiles-backups]
    #[arg(long, value_name = "PATH", global = true)]
    pub repo: Option<PathBuf>,
    /// Config file [env: BACKUP_CONFIG] [default: ~/.config/dotfiles-backup/config.toml]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Track this path instead of the configured set (repeatable)
    #[arg(long = "path", value_name = "P", global = true)]
    pub paths: Vec<PathBuf>,
    /// Print exactly one JSON document (the envelope) on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// No human summary on stdout (errors still go to stderr)
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail on stderr
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Colour in human output: auto (a terminal and no NO_COLOR), always, never
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = crate::human::ColorChoice::Auto, global = true)]
    pub color: crate::human::ColorChoice,
    /// Seconds a writer waits for the repository lock [env: BACKUP_LOCK_WAIT] [default: 5]
    #[arg(long, value_name = "SECS", global = true)]
    pub wait: Option<f64>,
    /// Attempts for transient failures (unreachable external target, busy resource) [env: BACKUP_RETRIES] [default: 3]
    #[arg(long, value_name = "N", global = true)]
    pub retries: Option<u32>,
    /// Use a repository owned by another user (owners, setuid and setgid bits in it are not restored) [env: BACKUP_ALLOW_FOREIGN_REPO]
    #[arg(long, global = true)]
    pub allow_foreign_repo: bool,
    /// Read back the packs a checkpoint wrote and check their hashes before committing it
    /// (true/false) [env: BACKUP_VERIFY_AFTER_WRITE] [config: repository.verify_after_write]
    #[arg(long, value_name = "BOOL", global = true, value_parser = clap::builder::BoolishValueParser::new())]
    pub verify_after_write: Option<bool>,
}

impl CommonArgs {
    /// The overrides these flags make.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            repo: self.repo.clone(),
            config: self.config.clone(),
            paths: self.paths.clone(),
            wait_secs: self.wait,
            config_only: false,
            excludes: Vec::new(),
            sizes: false,
            retries: self.retries,
            verify_after_write: self.verify_after_write,
        }
    }
}

/// One glibc malloc arena for all threads (glibc's default is eight per core).
///
/// Why: memory that the scan's and readers' worker threads free stays in
/// their own arenas, where the main thread never reuses it. A no-change
/// checkpoint of 20k files peaked at 31 MB resident with the default, 28 MB
/// with one arena per core and 25.5 MB with one, at the same speed; a first
/// snapshot was as fast too (per-thread caches serve the small allocations;
/// docs/performance.md). Called before any thread starts;
/// `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; no thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Parse arguments; on a usage error print the envelope (with `--json`) or
/// clap's message, and exit 2. `--help` and `--version` print and exit 0.
pub fn parse<T: Parser>(command: &str) -> T {
    limit_malloc_arenas();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "--generate") {
        // Hidden, like ripgrep's: only as the first argument, so that it can
        // never be mistaken for a label or path.
        std::process::exit(generate::<T>(args.get(2).and_then(|k| k.to_str())));
    }
    match T::try_parse_from(&args) {
        Ok(t) => t,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            let wants_json = args.iter().any(|a| a == "--json");
            if wants_json {
                let mut env = Envelope::new(command);
                let message = e
                    .render()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
                    .to_string();
                env.fail(
                    &Error::usage("usage", message)
                        .with_hint(format!("run `{command} --help` for the accepted arguments")),
                );
                // Not `println!`: it panics when the reader has gone (`| head`).
                let _ = writeln!(std::io::stdout().lock(), "{}", env.to_json());
            } else {
                let _ = e.print();
            }
            std::process::exit(ExitCode::Usage.code());
        }
    }
}

/// What `--generate KIND` can produce.
pub const GENERATE_KINDS: [&str; 4] = ["complete-bash", "complete-zsh", "complete-fish", "man"];

/// `BIN --generate KIND`: print a shell completion script or the man page,
/// both generated from the binary's clap definition; returns the exit code.
pub fn generate<T: clap::CommandFactory>(kind: Option<&str>) -> i32 {
    let mut cmd = T::command();
    let name = cmd.get_name().to_string();
    let mut out = std::io::stdout().lock();
    let shell = match kind {
        Some("complete-bash") => Some(clap_complete::Shell::Bash),
        Some("complete-zsh") => Some(clap_complete::Shell::Zsh),
        Some("complete-fish") => Some(clap_complete::Shell::Fish),
        Some("man") => None,
        other => {
            eprintln!(
                "error: --generate needs one of {} (got {})\n  hint: e.g. `{name} --generate man > {name}.1`",
                GENERATE_KINDS.join(", "),
                other.map(|o| format!("{o:?}")).unwrap_or_else(|| "nothing".into())
            );
            return ExitCode::Usage.code();
        }
    };
    let written = match shell {
        Some(sh) => {
            clap_complete::generate(sh, &mut cmd, name.clone(), &mut out);
            Ok(())
        }
        None => clap_mangen::Man::new(cmd).render(&mut out),
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: writing the generated {name} file to stdout: {e}");
            ExitCode::Failed.code()
        }
    }
}

/// How a binary renders its envelope for people.
pub type HumanRender = fn(&Envelope, &Settings) -> String;

/// Run an operation: resolve settings, honour `BACKUP_DISABLED`, catch panics,
/// fill and print the envelope, and return the exit code.
pub fn run(
    command: &str,
    common: &CommonArgs,
    over: Overrides,
    op: impl FnOnce(&Settings, &mut Envelope) -> Result<()>,
    human: HumanRender,
) -> std::process::ExitCode {
    run_with(command, common, over, op, human, true)
}

/// [`run`] for an operation that only reports settings
/// (`backup-create --print-config`): it runs even when backups are
/// disabled, which is one of the things it reports.
pub fn run_read_only_settings(
    command: &str,
    common: &CommonArgs,
    over: Overrides,
    op: impl FnOnce(&Settings, &mut Envelope) -> Result<()>,
    human: HumanRender,
) -> std::process::ExitCode {
    run_with(command, common, over, op, human, false)
}

fn run_with(
    command: &str,
    common: &CommonArgs,
    over: Overrides,
    op: impl FnOnce(&Settings, &mut Envelope) -> Result<()>,
    human: HumanRender,
    honour_disabled: bool,
) -> std::process::ExitCode {
    let started = Instant::now();
    crate::retry::set_verbose(common.verbose);
    crate::repo::allow_foreign_owner(
        common.allow_foreign_repo
            || std::env::var(crate::repo::ALLOW_FOREIGN_ENV).is_ok_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            }),
    );
    let mut env = Envelope::new(command);
    let settings = match crate::config::check_env_utf8()
        .and_then(|()| Settings::resolve(&over, &process_env))
    {
        Ok(s) => Some(s),
        Err(e) => {
            env.fail(&e);
            None
        }
    };
    if let Some(settings) = &settings {
        env.repository = Some(crate::paths::display_path(&settings.repo));
        if settings.local_only {
            env.degradation = Degradation::LocalOnly;
        }
        if settings.disabled && honour_disabled {
            env.degradation = Degradation::Disabled;
            env.skip("disabled");
            env.warnings.push(crate::report::Warning::new(
                "disabled",
                "backups are disabled (BACKUP_DISABLED or general.disabled); nothing was done",
            ));
        } else {
            install_quiet_panic_hook();
            // Progress goes to stderr only; it is cleared before the summary.
            let display =
                crate::progress::wanted(common.quiet).then(crate::progress::Display::start);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| op(settings, &mut env)));
            drop(display);
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => env.fail(&e),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    env.fail(
                        &Error::new(ExitCode::Internal, "internal_error", format!("internal error: {what}"))
                            .with_hint("this is a bug; nothing half-written is visible. Please report it with the command you ran"),
                    );
                }
            }
        }
    }
    if env.status == Status::Partial && env.exit_code == 0 {
        env.set_exit(ExitCode::Partial);
    }
    env.duration_ms = started.elapsed().as_millis() as u64;
    if let Some(s) = settings.as_ref().filter(|_| honour_disabled) {
        // After the operation (its lock is released) and with its duration.
        crate::hooks::run_for(&s.hooks, &mut env);
    }
    if let Some(s) = &settings {
        crate::runlog::record(&s.repo, &mut env);
    }
    let outcome = env.exit();
    match emit(&env, common, settings.as_ref(), human) {
        Ok(()) => outcome.into(),
        Err(e) => {
            // Not `eprintln!`: it panics when standard error is full too.
            let _ = writeln!(
                std::io::stderr(),
                "error: the result could not be written to standard output: {e}; the run itself ended with exit code {}. \
                 Free space where standard output goes (or drop the redirection), then see `backup-list` and the run log for what it did",
                outcome.code(),
            );
            // A failed run keeps its own, more telling, code.
            if outcome == ExitCode::Success {
                ExitCode::OutputLost
            } else {
                outcome
            }
            .into()
        }
    }
}

fn install_quiet_panic_hook() {
    // The envelope reports the panic; the default hook's backtrace noise only
    // appears with RUST_BACKTRACE set.
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
}

/// Print the envelope as JSON, or the human rendering plus errors on stderr.
///
/// `Err` when standard output could not be written (a full disk or an I/O
/// error on the file it is redirected to); a reader that went away (`| head`)
/// is not an error.
pub fn emit(
    env: &Envelope,
    common: &CommonArgs,
    settings: Option<&Settings>,
    human: HumanRender,
) -> std::io::Result<()> {
    let written = write_stdout(env, common, settings, human);
    if !common.json {
        write_stderr(env, common);
    }
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The envelope as JSON, or its human rendering, on standard output.
fn write_stdout(
    env: &Envelope,
    common: &CommonArgs,
    settings: Option<&Settings>,
    human: HumanRender,
) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if common.json {
        writeln!(out, "{}", env.to_json())?;
        return out.flush();
    }
    use std::io::IsTerminal;
    crate::human::set_color(crate::human::color_wanted(
        common.color,
        std::io::stdout().is_terminal(),
    ));
    if !common.quiet {
        if let Some(s) = settings {
            let text = human(env, s);
            if !text.is_empty() {
                write!(out, "{text}")?;
                if !text.ends_with('\n') {
                    writeln!(out)?;
                }
            }
        }
    }
    out.flush()
}

/// Warnings and errors (and with `--verbose` the counters) on standard error.
fn write_stderr(env: &Envelope, common: &CommonArgs) {
    use std::io::IsTerminal;
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    let color = crate::human::color_wanted(common.color, std::io::stderr().is_terminal());
    let paint = |text: &str, style| crate::human::paint_if(color, text, style);
    if common.verbose {
        // The counters behind the summary, for people chasing a slow or odd run.
        let stats: Vec<String> = env.stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !stats.is_empty() {
            let _ = writeln!(err, "stats: {}", stats.join(" "));
        }
        let _ = writeln!(err, "took {} ms", env.duration_ms);
    }
    for w in &env.warnings {
        if common.verbose || !matches!(w.code.as_str(), "secret_skipped") || env.warnings.len() < 20
        {
            let _ = writeln!(
                err,
                "{} {}",
                paint("warning:", crate::human::Style::Yellow),
                crate::human::esc(&w.message)
            );
        }
    }
    for e in &env.errors {
        let _ = writeln!(
            err,
            "{} {}",
            paint("error:", crate::human::Style::Red),
            crate::human::esc(&e.message)
        );
        // The path, when the message does not already name it.
        if let Some(p) = e.path.as_deref().filter(|p| !e.message.contains(p)) {
            let _ = writeln!(err, "  path: {}", crate::human::esc(p));
        }
        if let Some(h) = &e.hint {
            let _ = writeln!(
                err,
                "  {} {}",
                paint("hint:", crate::human::Style::Bold),
                crate::human::esc(h)
            );
        }
    }
}
