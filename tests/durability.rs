//! "Done" means durable: a restore or rollback counts a change as done only
//! once the directory holding it has been fsynced. Here every fsync of a home
//! directory fails with EIO (strace fault injection, as a dying disk or a
//! power cut would make it fail); the rollback must say so, naming the
//! directory, with status `partial`, and must not claim those paths as done.
//! Found by tests/torture/power_loss.py, where the failure was once ignored.

mod common;

use std::process::Command;

use common::{exe, parse_envelope, skip_unless_required, TestEnv};

fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_failed_directory_fsync_in_the_home_is_reported_not_claimed_done() {
    if !strace_works() {
        skip_unless_required("strace", "strace is not installed or cannot trace here");
        return;
    }
    let e = TestEnv::new();
    e.write(".bashrc", b"original\n", 0o644);
    e.write(".config/app/conf", b"original\n", 0o644);
    let (rc, v) = e.json(
        "backup-checkpoint",
        &[
            "manual",
            "base",
            "--path",
            "~/.bashrc",
            "--path",
            "~/.config",
        ],
    );
    assert_eq!(rc, 0, "{v:#}");
    e.write(".bashrc", b"damaged\n", 0o644);
    e.write(".config/app/conf", b"damaged\n", 0o644);

    // Same environment as the plain command, run under strace: only fsyncs of
    // the two home directories the rollback changes are traced, and each fails.
    let plain = e.command("backup-rollback", &["--json", "base"], &[]);
    let mut cmd = Command::new("strace");
    cmd.env_clear();
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.args([
        "-f",
        "-o",
        "/dev/null",
        "-e",
        "trace=fsync,syncfs",
        "-e",
        "inject=fsync,syncfs:error=EIO",
        "-P",
    ])
    .arg(&e.home)
    // -P matches the exact path, not what is beneath it.
    .arg("-P")
    .arg(e.home.join(".config/app"))
    .arg(exe("backup-rollback"))
    .args(["--json", "base"]);
    let (rc, v) = parse_envelope(&cmd.output().unwrap());
    assert_eq!(rc, 3, "partial: {v:#}");
    assert_eq!(v["status"], "partial");
    let errors = v["errors"].as_array().unwrap();
    let not_durable: Vec<&serde_json::Value> = errors
        .iter()
        .filter(|e| e["code"] == "not_durable")
        .collect();
    assert!(!not_durable.is_empty(), "{v:#}");
    let paths: Vec<&str> = not_durable
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(paths.contains(&"~"), "the home directory is named: {v:#}");
    assert!(paths.contains(&"~/.config/app"), "{v:#}");
    assert!(
        not_durable
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("~/.bashrc")),
        "{v:#}"
    );
    assert_eq!(v["stats"]["updated"], 0, "nothing claimed done: {v:#}");
    assert_eq!(v["stats"]["failed"], 2, "{v:#}");

    // With a healthy disk the same rollback completes and is exact.
    let (rc, v) = e.json("backup-rollback", &["base"]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(
        std::fs::read(e.home.join(".bashrc")).unwrap(),
        b"original\n"
    );
    assert_eq!(
        std::fs::read(e.home.join(".config/app/conf")).unwrap(),
        b"original\n"
    );
}
