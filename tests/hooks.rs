//! Hooks (issue 22 point 5): `[hooks] on_success|on_partial|on_failure`
//! run after writer commands with the envelope on standard input and a time
//! limit; a failing, hanging or non-reading hook is a `hook_failed` warning
//! at most, never a failed run.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A config file outside the home with `hooks` (TOML lines under `[hooks]`)
/// and `extra` appended; returns its path for `BACKUP_CONFIG`.
fn config(e: &TestEnv, hooks: &str, extra: &str) -> String {
    e.config_file(&format!("[hooks]\n{hooks}\n{extra}"))
}

/// A path beside the home where a hook leaves its mark.
fn out(e: &TestEnv, name: &str) -> PathBuf {
    e.tmp.path().join(name)
}

/// `p` as a quoted TOML string.
fn toml_str(p: &Path) -> String {
    format!("{:?}", p.to_str().unwrap())
}

/// `p` bare, for inside a shell command in a single-quoted TOML string.
fn sh_path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn hook_warnings(v: &Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "hook_failed")
        .map(|w| w["message"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn success_hook_gets_the_envelope_on_stdin_and_the_event_in_its_environment() {
    let e = TestEnv::with_dotfiles();
    let got = out(&e, "stdin.json");
    let env_out = out(&e, "env.txt");
    let cfg = config(
        &e,
        &format!(
            "on_success = 'cat > {}; echo \"$BACKUP_HOOK_EVENT $BACKUP_HOOK_COMMAND\" > {}'",
            sh_path(&got),
            sh_path(&env_out)
        ),
        "",
    );
    let (rc, v) = e.json_with_config(&cfg, "backup-checkpoint", &["manual", "one"]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(hook_warnings(&v).is_empty(), "{v:#}");
    let seen: Value = serde_json::from_slice(&std::fs::read(&got).unwrap()).unwrap();
    assert_eq!(seen["status"], "success");
    assert_eq!(seen["command"], "backup-checkpoint");
    assert_eq!(seen["snapshot"]["id"], v["snapshot"]["id"]);
    assert_eq!(
        std::fs::read_to_string(&env_out).unwrap(),
        "success backup-checkpoint\n"
    );
}

#[test]
fn argv_hooks_run_without_a_shell_and_only_for_their_event() {
    let e = TestEnv::with_dotfiles();
    let ok_mark = out(&e, "ok");
    let fail_mark = out(&e, "failed");
    let cfg = config(
        &e,
        &format!(
            "on_success = [\"touch\", {}]\non_failure = [\"touch\", {}]",
            toml_str(&ok_mark),
            toml_str(&fail_mark)
        ),
        "",
    );
    let envs = [("BACKUP_CONFIG", cfg.as_str())];
    // A failed run: the failure hook, and the same exit code as without hooks.
    let (rc_plain, _) = e.json("backup-rollback", &["no-such-snapshot"]);
    let (rc, v, _) = e.run("backup-rollback", &["no-such-snapshot"], &envs);
    assert_ne!(rc, 0);
    assert_eq!(rc, rc_plain, "{v:#}");
    assert!(fail_mark.exists() && !ok_mark.exists());
    // Dry runs and disabled runs fire nothing.
    std::fs::remove_file(&fail_mark).unwrap();
    let (rc, _, _) = e.run("backup-create", &["--dry-run"], &envs);
    assert_eq!(rc, 0);
    let (rc, _, _) = e.run(
        "backup-checkpoint",
        &["manual", "x"],
        &[("BACKUP_CONFIG", cfg.as_str()), ("BACKUP_DISABLED", "1")],
    );
    assert_eq!(rc, 0);
    assert!(!ok_mark.exists() && !fail_mark.exists());
    let (rc, _, _) = e.run("backup-checkpoint", &["manual", "x"], &envs);
    assert_eq!(rc, 0);
    assert!(ok_mark.exists());
    // Read-only commands fire nothing.
    std::fs::remove_file(&ok_mark).unwrap();
    for (bin, args) in [("backup-list", &[][..]), ("backup-verify", &[][..])] {
        let (rc, v, _) = e.run(bin, args, &envs);
        assert_eq!(rc, 0, "{v:#}");
    }
    assert!(!ok_mark.exists() && !fail_mark.exists());
}

#[test]
fn partial_runs_fire_on_partial() {
    let e = TestEnv::with_dotfiles();
    let mark = out(&e, "partial");
    let cfg = config(
        &e,
        &format!("on_partial = [\"touch\", {}]", toml_str(&mark)),
        "",
    );
    let (rc, _) = e.json("backup-checkpoint", &["manual", "good"]);
    assert_eq!(rc, 0);
    e.write(".zshrc", b"changed\n", 0o644);
    let (rc, v) = e.json_with_config(&cfg, "backup-restore", &["good", "--overwrite", "skip"]);
    assert_eq!(rc, 3, "{v:#}");
    assert!(mark.exists());
}

#[test]
fn a_failing_hook_is_a_warning_and_the_run_stays_a_success() {
    let e = TestEnv::with_dotfiles();
    let cfg = config(
        &e,
        "on_success = 'echo noise on stdout; echo boom >&2; exit 7'",
        "",
    );
    let (rc, v) = e.json_with_config(&cfg, "backup-checkpoint", &["manual", "one"]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["status"], "success");
    let w = hook_warnings(&v);
    assert_eq!(w.len(), 1, "{v:#}");
    assert!(w[0].contains("status 7: boom"), "{w:?}");
    // A program that does not exist: the same.
    let cfg = config(&e, "on_success = [\"/nonexistent/hook\"]", "");
    let (rc, v) = e.json_with_config(&cfg, "backup-checkpoint", &["manual", "two"]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(
        hook_warnings(&v)[0].contains("could not be started"),
        "{v:#}"
    );
}

#[test]
fn a_hanging_hook_is_stopped_with_its_whole_process_group() {
    let e = TestEnv::with_dotfiles();
    let pid_file = out(&e, "child.pid");
    let cfg = config(
        &e,
        &format!(
            "on_success = 'sleep 60 & echo $! > {}; wait'\ntimeout_secs = 1",
            sh_path(&pid_file)
        ),
        "",
    );
    let t0 = Instant::now();
    let (rc, v) = e.json_with_config(&cfg, "backup-checkpoint", &["manual", "one"]);
    let took = t0.elapsed();
    assert_eq!(rc, 0, "{v:#}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let w = hook_warnings(&v);
    assert!(w[0].contains("did not finish within 1 s"), "{w:?}");
    // The background child went with the group.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid: i32 = pid.trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let alive = rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid).unwrap())
        .is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(false);
    assert!(!alive, "the hook's child {pid} survived the timeout");
}

#[test]
fn a_hook_that_reads_nothing_does_not_hurt_a_large_envelope() {
    let e = TestEnv::with_dotfiles();
    // Thousands of excluded files listed by --sizes: an envelope far larger
    // than a pipe's buffer.
    for i in 0..3000 {
        e.write(
            &format!(".config/app/logs/a-fairly-long-log-file-name-{i:05}.log"),
            b"x",
            0o644,
        );
    }
    let cfg = config(
        &e,
        "on_success = ['true']",
        "[track]\nextra_exclude = [\"*.log\"]\n",
    );
    let (rc, v) = e.json_with_config(&cfg, "backup-checkpoint", &["manual", "one", "--sizes"]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(v.to_string().len() > 200_000, "envelope too small to test");
    assert!(hook_warnings(&v).is_empty(), "{v:#}");
}

#[test]
fn a_hook_runs_after_the_lock_is_released_and_fires_no_hooks_itself() {
    let e = TestEnv::with_dotfiles();
    let inner = out(&e, "inner.json");
    let count = out(&e, "count");
    let cfg = config(
        &e,
        &format!(
            "on_success = 'echo x >> {count}; {bin} manual from-hook --wait 0 --json > {inner}'",
            count = sh_path(&count),
            bin = exe("backup-checkpoint"),
            inner = sh_path(&inner)
        ),
        "",
    );
    let (rc, v) = e.json_with_config(&cfg, "backup-checkpoint", &["manual", "outer"]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(hook_warnings(&v).is_empty(), "{v:#}");
    let inner: Value = serde_json::from_slice(&std::fs::read(&inner).unwrap()).unwrap();
    assert_eq!(inner["status"], "success", "the lock was free: {inner:#}");
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\n", "no loop");
}

#[test]
fn bad_hook_config_is_a_usage_error_naming_the_key() {
    let e = TestEnv::with_dotfiles();
    for (hooks, key) in [
        ("on_failure = []", "hooks.on_failure"),
        ("on_success = '  '", "hooks.on_success"),
        ("timeout_secs = 0", "hooks.timeout_secs"),
    ] {
        let cfg = config(&e, hooks, "");
        let (rc, v) = e.json_with_config(&cfg, "backup-checkpoint", &["manual", "x"]);
        assert_eq!(rc, 2, "{hooks}: {v:#}");
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains(key),
            "{v:#}"
        );
    }
}
