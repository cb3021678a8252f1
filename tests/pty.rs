//! Progress appears on a terminal and never in a pipe: the same checkpoint is
//! run once under a pseudo-terminal (Python's `pty` module drives it, so no
//! extra crate is needed) and once with stdout and stderr piped.
//!
//! `BACKUP_PROGRESS_DELAY_MS=0` removes the one-second grace period so a
//! test-sized run shows its bar; everything else is as in real use.

mod common;

use std::process::Command;

use common::{noise, TestEnv};

/// Run `argv` under a pty with `env` (on top of a clean environment) and
/// return everything it wrote to the terminal and its exit code.
fn run_in_pty(argv: &[&str], env: &[(&str, &str)]) -> (Vec<u8>, i32) {
    const DRIVER: &str = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(DRIVER)
        .args(argv)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .envs(env.iter().copied())
        .output()
        .expect("python3 runs the pty driver");
    (out.stdout, out.status.code().unwrap_or(-1))
}

fn tree(e: &TestEnv) {
    // Enough work for a few frames at 10 per second in a debug build.
    for i in 0..400 {
        e.write(&format!(".config/many/f{i:04}"), &noise(64 << 10, i), 0o644);
    }
}

#[test]
fn progress_on_a_terminal_only() {
    let e = TestEnv::new();
    tree(&e);
    let home = e.home.to_str().unwrap();
    let repo = e.repo.to_str().unwrap();
    let env = [
        ("HOME", home),
        ("BACKUP_REPO", repo),
        ("BACKUP_PROGRESS_DELAY_MS", "0"),
    ];
    let (out, code) = run_in_pty(
        &[
            common::exe("backup-checkpoint"),
            "--path",
            "~/.config",
            "manual",
            "on-a-tty",
        ],
        &env,
    );
    let text = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("reading") || text.contains("scanning"),
        "no progress on the terminal:\n{text:?}"
    );
    assert!(text.contains("files"), "no file counts:\n{text:?}");
    // The summary still arrives after the bar was cleared.
    assert!(text.contains("on-a-tty"), "{text:?}");

    // Same work in a pipe: no bar, no escape sequences, stdout is just the summary.
    std::fs::remove_dir_all(&e.repo).unwrap();
    let out = e.output(
        "backup-checkpoint",
        &["--path", "~/.config", "manual", "in-a-pipe"],
        &[("BACKUP_PROGRESS_DELAY_MS", "0")],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stderr.contains("reading") && !stderr.contains('\x1b'),
        "{stderr:?}"
    );
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    assert!(stdout.starts_with("stored "), "{stdout:?}");

    // On a terminal, --quiet and BACKUP_PROGRESS=0 turn it off, and --json's stdout stays one document.
    std::fs::remove_dir_all(&e.repo).unwrap();
    let (out, code) = run_in_pty(
        &[
            common::exe("backup-checkpoint"),
            "--path",
            "~/.config",
            "--quiet",
            "manual",
            "quiet",
        ],
        &env,
    );
    assert_eq!(code, 0);
    assert!(
        out.is_empty(),
        "--quiet printed: {:?}",
        String::from_utf8_lossy(&out)
    );
    std::fs::remove_dir_all(&e.repo).unwrap();
    let mut off = env.to_vec();
    off.push(("BACKUP_PROGRESS", "0"));
    let (out, _) = run_in_pty(
        &[
            common::exe("backup-checkpoint"),
            "--path",
            "~/.config",
            "manual",
            "off",
        ],
        &off,
    );
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("reading"), "{text:?}");
}

#[test]
fn colour_follows_the_terminal_and_no_color() {
    let e = TestEnv::with_dotfiles();
    let (code, _) = e.json(
        "backup-checkpoint",
        &["--path", "~/.config", "manual", "--", "base"],
    );
    assert_eq!(code, 0);
    e.write(".config/nvim/init.lua", b"changed\n", 0o644);
    let home = e.home.to_str().unwrap();
    let repo = e.repo.to_str().unwrap();
    let list = common::exe("backup-list");
    let base = [("HOME", home), ("BACKUP_REPO", repo)];
    let (out, _) = run_in_pty(&[list, "--diff", "base"], &base);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("\x1b[33m~\x1b[0m"),
        "no colour on a terminal: {text:?}"
    );
    let mut no_color = base.to_vec();
    no_color.push(("NO_COLOR", "1"));
    let (out, _) = run_in_pty(&[list, "--diff", "base"], &no_color);
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("\x1b[33m"), "NO_COLOR ignored: {text:?}");
    assert!(text.contains("~ ~/.config/nvim/init.lua"), "{text:?}");
    let (out, _) = run_in_pty(&[list, "--color", "never", "--diff", "base"], &base);
    assert!(!String::from_utf8_lossy(&out).contains("\x1b[33m"));
    // In a pipe only `--color always` colours.
    let piped = e.output("backup-list", &["--diff", "base"], &[]);
    assert!(!String::from_utf8_lossy(&piped.stdout).contains('\x1b'));
    let forced = e.output("backup-list", &["--color", "always", "--diff", "base"], &[]);
    assert!(String::from_utf8_lossy(&forced.stdout).contains("\x1b[33m~"));
}
