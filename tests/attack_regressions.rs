//! Regressions from the session-6 outside attack (a fresh-context tester
//! with only the release binaries and the docs). Each test is one finding,
//! reproduced through the real binaries; the finding's number is in the name
//! of its repro script under the attack notes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestEnv;

/// A fake `apt-mark` in its own bin directory, first on PATH.
fn fake_apt_mark(env: &TestEnv, script: &str) -> String {
    let bin = env.tmp.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let p = bin.join("apt-mark");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn hook_config(env: &TestEnv, on_success: &str) {
    env.write(
        ".config/dotfiles-backup/config.toml",
        format!("[hooks]\non_success = {on_success:?}\n").as_bytes(),
        0o644,
    );
}

#[test]
fn finding_03_a_detached_child_of_a_package_manager_does_not_hold_the_checkpoint() {
    // The fake manager answers at once but leaves a `setsid` child holding
    // its stdout for 30 s, like an update notifier.
    let env = TestEnv::with_dotfiles();
    let path = fake_apt_mark(
        &env,
        "#!/bin/sh\necho vim\nsetsid sh -c 'sleep 30' &\nexit 0\n",
    );
    let started = Instant::now();
    let (code, v, _) = env.run(
        "backup-checkpoint",
        &["auto", "pre-ansible"],
        &[
            ("PATH", &path),
            ("BACKUP_PACKAGES", "apt"),
            ("BACKUP_PACKAGES_TIMEOUT", "3"),
        ],
    );
    let took = started.elapsed();
    assert_eq!(code, 0, "{v}");
    assert!(
        took < Duration::from_secs(20),
        "the checkpoint waited {took:?} for a detached child"
    );
    // What the manager printed before it exited is the capture.
    let apt = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "apt")
        .unwrap_or_else(|| panic!("no apt capture in {v}"));
    assert_eq!(apt["status"], "captured", "{apt}");
}

#[test]
fn finding_04_an_envelope_that_cannot_be_written_is_an_error_with_its_own_exit_code() {
    let env = TestEnv::with_dotfiles();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = env
        .command("backup-checkpoint", &["manual", "c1", "--json"], &[])
        .stdout(Stdio::from(full))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "stderr: {stderr}");
    assert!(
        stderr.contains("could not be written to standard output")
            && stderr.contains("exit code 0"),
        "stderr: {stderr}"
    );
    // The run itself committed: the checkpoint is there.
    let (code, v) = env.json("backup-list", &[]);
    assert_eq!(code, 0);
    assert!(v.to_string().contains("\"c1\""), "{v}");
}

#[test]
fn finding_04_a_reader_that_went_away_is_not_an_error() {
    let env = TestEnv::with_dotfiles();
    let mut child = env
        .command("backup-checkpoint", &["manual", "c1", "--json"], &[])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn finding_05_a_hook_reads_the_whole_envelope_as_one_line() {
    let env = TestEnv::with_dotfiles();
    let sink = env.tmp.path().join("stdin.json");
    hook_config(&env, &format!("cat > '{}'", sink.display()));
    let (code, _) = env.json("backup-checkpoint", &["manual", "c1"]);
    assert_eq!(code, 0);
    let got = std::fs::read_to_string(&sink).unwrap();
    assert_eq!(got.lines().count(), 1, "{got}");
    let v: serde_json::Value = serde_json::from_str(got.trim_end()).unwrap();
    assert_eq!(v["command"], "backup-checkpoint");
}

#[test]
fn finding_06_the_identity_passphrase_never_reaches_hooks_or_package_managers() {
    let env = TestEnv::with_dotfiles();
    let seen_by_hook = env.tmp.path().join("hook.env");
    let seen_by_manager = env.tmp.path().join("manager.env");
    hook_config(&env, &format!("env > '{}'", seen_by_hook.display()));
    let path = fake_apt_mark(
        &env,
        &format!(
            "#!/bin/sh\nenv > '{}'\necho vim\n",
            seen_by_manager.display()
        ),
    );
    let (code, v, _) = env.run(
        "backup-checkpoint",
        &["auto", "pre-ansible"],
        &[
            ("PATH", &path),
            ("BACKUP_PACKAGES", "apt"),
            ("BACKUP_AGE_PASSPHRASE", "hunter2-passphrase"),
        ],
    );
    assert_eq!(code, 0, "{v}");
    for seen in [&seen_by_hook, &seen_by_manager] {
        let text =
            std::fs::read_to_string(seen).unwrap_or_else(|e| panic!("{}: {e}", seen.display()));
        assert!(text.contains("HOME="), "{text}");
        assert!(
            !text.contains("hunter2-passphrase"),
            "{}: {text}",
            seen.display()
        );
    }
}

#[test]
fn finding_09_a_checkpoint_after_a_lost_pack_is_restorable_whatever_the_index_order() {
    // The lost pack's index entry must never hide the copy stored again.
    // Index file names are content hashes, so their order varies with the
    // data: several rounds with different data cover both orders.
    for round in 0..6u64 {
        let env = TestEnv::with_dotfiles();
        let data = common::noise(20_000, round);
        env.write(".config/data", &data, 0o644);
        env.write(".config/a", b"a\n", 0o644);
        assert_eq!(env.json("backup-checkpoint", &["manual", "c1"]).0, 0);
        for pack in common::names_in(&env.repo, "packs") {
            std::fs::remove_file(pack).unwrap();
        }
        env.write(".config/a", b"b\n", 0o644);
        let (code, v) = env.json("backup-checkpoint", &["manual", "c2"]);
        assert_eq!(code, 0, "{v}");
        assert!(v.to_string().contains("missing_packs"), "{v}");
        std::fs::remove_file(env.home.join(".config/data")).unwrap();
        let (code, v) = env.json("backup-rollback", &["c2"]);
        assert_eq!(code, 0, "round {round}: {v}");
        assert_eq!(std::fs::read(env.home.join(".config/data")).unwrap(), data);
        // And verify blames only what is really lost (c1's old ~/.config/a).
        let (_, v) = env.json("backup-verify", &["--read-data"]);
        let text = v.to_string();
        assert!(!text.contains(".config/data"), "round {round}: {text}");
    }
}

#[test]
fn finding_02_undo_never_deletes_inside_a_directory_the_safety_snapshot_could_not_list() {
    if !common::strace_works() {
        return;
    }
    let env = TestEnv::with_dotfiles();
    env.write(".config/a", b"a\n", 0o644);
    assert_eq!(env.json("backup-checkpoint", &["manual", "base"]).0, 0);
    // Created after the checkpoint; listing it fails once (EIO) during the
    // rollback's safety scan.
    let precious = env.write(".config/newdir/sub/x", b"precious\n", 0o644);
    let newdir = env.home.join(".config/newdir");
    let plain = env.command("backup-rollback", &["--json", "base"], &[]);
    let filter = [
        "-P".into(),
        newdir.clone().into_os_string(),
        "-e".into(),
        std::ffi::OsString::from("inject=openat:error=EIO:when=1"),
    ];
    let out = common::under_strace(&plain, &filter).output().unwrap();
    let (code, v) = common::parse_envelope(&out);
    // Not rolled back there (its content could not be kept), said so.
    assert_eq!(code, 3, "{v}");
    assert!(v.to_string().contains("newdir"), "{v}");
    assert_eq!(std::fs::read(&precious).unwrap(), b"precious\n");
    // The undo puts back the safety snapshot, which does not know what the
    // directory held: it leaves the directory's content alone.
    let (code, v) = env.json("backup-rollback", &["--undo"]);
    assert!(code == 0 || code == 3, "{v}");
    assert_eq!(
        std::fs::read(&precious).unwrap(),
        b"precious\n",
        "undo deleted a file the rollback never touched: {v}"
    );
}

#[test]
fn finding_01_a_hard_link_the_file_system_refuses_is_reported_not_silent() {
    if !common::strace_works() {
        return;
    }
    let env = TestEnv::with_dotfiles();
    let first = env.write(".config/hl1", b"hl\n", 0o644);
    let second = env.home.join(".config/hl2");
    std::fs::hard_link(&first, &second).unwrap();
    assert_eq!(env.json("backup-checkpoint", &["manual", "base"]).0, 0);
    std::fs::write(&second, b"changed\n").unwrap(); // both names change
    let plain = env.command("backup-rollback", &["--json", "base"], &[]);
    let filter = ["-e", "inject=linkat:error=ENOSPC:when=1"];
    let (code, v) =
        common::parse_envelope(&common::under_strace(&plain, &filter).output().unwrap());
    use std::os::unix::fs::MetadataExt;
    let linked =
        std::fs::metadata(&first).unwrap().ino() == std::fs::metadata(&second).unwrap().ino();
    // The content is back either way.
    assert_eq!(std::fs::read(&first).unwrap(), b"hl\n");
    assert_eq!(std::fs::read(&second).unwrap(), b"hl\n");
    assert!(!linked, "the injected failure hit the hard link: {v}");
    assert_eq!(code, 3, "{v}");
    assert!(v.to_string().contains("hardlink_not_restored"), "{v}");
    // Running it again links them.
    let (code, v) = env.json("backup-rollback", &["base"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        std::fs::metadata(&first).unwrap().ino(),
        std::fs::metadata(&second).unwrap().ino()
    );
}

#[test]
fn round2_finding_14_inspecting_snapshots_never_evicts_the_rollbacks_safety_snapshot() {
    let env = TestEnv::with_dotfiles();
    assert_eq!(env.json("backup-checkpoint", &["manual", "base"]).0, 0);
    env.write(".zshrc", b"work worth keeping\n", 0o644);
    let (code, v) = env.json("backup-rollback", &["base"]);
    assert_eq!(code, 0, "{v}");
    // More restores into new directories than `safety.keep` (5) holds.
    for i in 0..7 {
        let dir = env.tmp.path().join(format!("look{i}"));
        let target = dir.to_str().unwrap();
        let (code, v) = env.json("backup-restore", &["base", "--target", target]);
        assert_eq!(code, 0, "{v}");
        assert!(
            v["snapshot"].is_null(),
            "nothing replaced, nothing kept: {v}"
        );
    }
    let (code, v) = env.json("backup-rollback", &["--undo"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        std::fs::read(env.home.join(".zshrc")).unwrap(),
        b"work worth keeping\n"
    );
}

#[test]
fn round2_finding_07_repair_never_moves_a_record_through_a_symlinked_quarantine() {
    let env = TestEnv::with_dotfiles();
    for label in ["c1", "c2"] {
        env.write(".zshrc", label.as_bytes(), 0o644);
        assert_eq!(env.json("backup-checkpoint", &["manual", label]).0, 0);
    }
    let record = common::names_in(&env.repo, "snapshots")[0].clone();
    std::fs::write(&record, b"damaged").unwrap();
    let elsewhere = env.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.repo.join("quarantine")).unwrap();
    let (code, v) = env.json("backup-verify", &["--repair"]);
    assert_eq!(code, 6, "{v}");
    assert!(v.to_string().contains("not a plain directory"), "{v}");
    // Nothing left the repository; the record is still where it was.
    assert_eq!(std::fs::read(&record).unwrap(), b"damaged");
    assert!(
        common::walk(&elsewhere).iter().all(|(_, m)| !m.is_file()),
        "a record was moved out of the repository"
    );
}
