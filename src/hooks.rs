//! Hooks: a command the user configures (`[hooks] on_success`,
//! `on_partial`, `on_failure`) run when a writer command ends, so that
//! `notify-send`, `osascript`, mail or a webhook can be wired with the
//! user's own tools.
//!
//! * Which runs: `backup-checkpoint` (checkpoints and `--health-check`),
//!   `backup-create`, `backup-restore`, `backup-rollback`, `backup-prune`;
//!   not dry runs, not runs skipped because backups are disabled, never
//!   the read-only commands ([`HOOKED`]).
//! * When: after the operation returned, so the repository lock is already
//!   released (and it is opened close-on-exec, so a hook never holds it).
//! * Input: the finished envelope (JSON, one line) on standard input,
//!   written from a thread that is never waited for, so a hook that reads
//!   nothing or exits early costs us nothing (a closed pipe is `EPIPE`, Rust
//!   ignores `SIGPIPE`). `BACKUP_HOOK_EVENT` and `BACKUP_HOOK_COMMAND` say
//!   what happened. Its standard output is discarded (ours is the JSON
//!   contract); its standard error goes to a temp file whose first line is
//!   quoted when it fails.
//! * Limits: its own process group, killed as a whole after
//!   `hooks.timeout_secs` (default 10 s).
//! * A command run from a hook fires no hooks itself (it sees
//!   `BACKUP_HOOK_EVENT`), so a hook may take a checkpoint without a loop.
//! * Failure (cannot start, non-zero exit, signal, timeout) is a
//!   `hook_failed` warning; the run's status and exit code stay as they were.

use std::io::{Read, Seek, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::config::{HookCommand, HooksSection};
use crate::report::{Envelope, Status, Warning};

/// Commands whose runs fire hooks.
pub const HOOKED: &[&str] = &[
    "backup-checkpoint",
    "backup-create",
    "backup-restore",
    "backup-rollback",
    "backup-prune",
];

/// Run the hook for `env`'s outcome, if one is configured and this run
/// fires hooks; a failure becomes a `hook_failed` warning in `env`.
pub fn run_for(hooks: &HooksSection, env: &mut Envelope) {
    // A command run by a hook (it sees BACKUP_HOOK_EVENT) fires none: no loops.
    let inside_hook = std::env::var_os("BACKUP_HOOK_EVENT").is_some();
    if env.dry_run || inside_hook || !HOOKED.contains(&env.command.as_str()) {
        return;
    }
    let (event, hook) = match env.status {
        Status::Success => ("success", &hooks.on_success),
        Status::Partial => ("partial", &hooks.on_partial),
        Status::Failed => ("failure", &hooks.on_failure),
        Status::Skipped => return,
    };
    let Some(hook) = hook else { return };
    let input = env.to_json_line();
    let timeout = Duration::from_secs(hooks.timeout_secs.max(1));
    if let Err(why) = run_one(hook, event, &env.command, input, timeout) {
        env.warnings.push(Warning::new(
            "hook_failed",
            format!(
                "hooks.on_{event} (`{}`) {why}; the run itself is unaffected",
                shown(hook)
            ),
        ));
    }
}

/// The hook as configured, for messages.
fn shown(hook: &HookCommand) -> String {
    match hook {
        HookCommand::Argv(a) => a.join(" "),
        HookCommand::Shell(s) => s.clone(),
    }
}

/// Run one hook to completion or timeout. `Err` says what went wrong.
fn run_one(
    hook: &HookCommand,
    event: &str,
    command: &str,
    input: String,
    timeout: Duration,
) -> Result<(), String> {
    use wait_timeout::ChildExt;
    let mut cmd = match hook {
        HookCommand::Argv(a) => {
            let mut c = Command::new(&a[0]);
            c.args(&a[1..]);
            c
        }
        HookCommand::Shell(s) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(s);
            c
        }
    };
    // Standard error to a file, not a pipe: nothing a hook leaves running
    // can make us wait for a pipe to close.
    let mut errors = tempfile::tempfile().ok();
    let stderr = match errors.as_ref().and_then(|f| f.try_clone().ok()) {
        Some(f) => Stdio::from(f),
        None => Stdio::null(),
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr)
        .env("BACKUP_HOOK_EVENT", event)
        .env("BACKUP_HOOK_COMMAND", command)
        .process_group(0);
    crate::secrets::withhold_from(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not be started: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Never joined: a hook that does not read must not block us.
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
            let _ = stdin.write_all(b"\n");
        });
    }
    let status = child.wait_timeout(timeout).ok().flatten();
    let Some(status) = status else {
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "did not finish within {} s and was stopped (raise hooks.timeout_secs if it is just slow)",
            timeout.as_secs()
        ));
    };
    if status.success() {
        return Ok(());
    }
    let how = status
        .code()
        .map(|c| format!("exited with status {c}"))
        .unwrap_or_else(|| "was killed by a signal".into());
    let first = errors.as_mut().and_then(first_line).unwrap_or_default();
    Err(if first.is_empty() {
        how
    } else {
        format!("{how}: {first}")
    })
}

/// The first non-empty line of what the hook wrote to standard error.
fn first_line(f: &mut std::fs::File) -> Option<String> {
    f.rewind().ok()?;
    let mut buf = Vec::new();
    f.take(4096).read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(300).collect())
}
