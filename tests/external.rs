//! External copies through the real binaries: sync after checkpoints, a
//! missing target degrading to local-only (exit 0, a warning) and catching up
//! later, interrupted syncs (kill -9 at random points) resuming without ever
//! leaving the copy inconsistent, what is never copied, restore from the
//! copy onto a fresh machine (secrets included, with only the identity
//! file), and the same over an rclone `local` remote.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Objects (relative paths) under `root` in the copied directories.
fn objects(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for sub in ["packs", "index", "trees", "snapshots", "keys"] {
        if let Ok(list) = std::fs::read_dir(root.join(sub)) {
            for e in list.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(".dfb-tmp") {
                    out.insert(format!("{sub}/{name}"));
                }
            }
        }
    }
    out
}

fn snapshot_ids(v: &Value) -> BTreeSet<String> {
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn verify_dir(e: &TestEnv, dir: &Path, read_data: bool) -> (i32, Value) {
    let repo = dir.to_str().unwrap();
    let mut args = vec!["--repo", repo];
    if read_data {
        args.push("--read-data");
    }
    e.json("backup-verify", &args)
}

#[test]
fn checkpoint_syncs_a_complete_verifiable_copy_and_never_copies_local_only_files() {
    let e = TestEnv::with_dotfiles();
    let ext = e.tmp.path().join("drive");
    std::fs::create_dir(&ext).unwrap();
    let env = target_env(&ext);
    let (code, v, _) = run_with(&e, "backup-checkpoint", &["manual", "first"], &env);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["degradation"], "full");
    assert_eq!(v["external"][0]["status"], "synced", "{v:#}");
    assert_eq!(v["external"][0]["attempts"], 1);
    assert_eq!(v["external"][0]["copied"]["snapshots"], 1);
    assert_eq!(v["stats"]["external_synced"], 1);

    // Plant things in the local repository that must never leave the machine.
    std::fs::create_dir_all(e.repo.join("keys")).unwrap();
    std::fs::write(e.repo.join("keys/0123456789abcdef.key"), "plain key").unwrap();
    std::fs::write(e.repo.join("keys/notes.txt"), "notes").unwrap();
    e.write(".zshrc", b"export EDITOR=vim\n", 0o644);
    let (code, v, _) = run_with(&e, "backup-checkpoint", &["manual", "second"], &env);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["external"][0]["copied"]["snapshots"], 1, "{v:#}");

    let local: BTreeSet<String> = objects(&e.repo)
        .into_iter()
        .filter(|o| !o.starts_with("keys/"))
        .collect();
    assert_eq!(
        objects(&ext),
        local,
        "the copy holds exactly the local objects"
    );
    for never in [
        "cache",
        "logs",
        "keys/0123456789abcdef.key",
        "keys/notes.txt",
    ] {
        assert!(!ext.join(never).exists(), "{never} must not be copied");
    }
    assert_eq!(
        std::fs::read(ext.join("config.json")).unwrap(),
        std::fs::read(e.repo.join("config.json")).unwrap()
    );
    let (code, v) = verify_dir(&e, &ext, true);
    assert_eq!(code, 0, "backup-verify --repo on the copy: {v:#}");
    // Private: directories 0700, files 0600.
    for sub in ["packs", "snapshots"] {
        let m = std::fs::metadata(ext.join(sub))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o700, "{sub}");
    }
    for o in objects(&ext) {
        let m = std::fs::metadata(ext.join(&o))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600, "{o}");
    }
    // Listing the copy shows the same snapshots as the local repository.
    let (_, local_list) = e.json("backup-list", &[]);
    let (code, ext_list, _) = run_with(&e, "backup-list", &["--external"], &env);
    assert_eq!(code, 0, "{ext_list:#}");
    assert_eq!(snapshot_ids(&ext_list), snapshot_ids(&local_list));
    assert_eq!(snapshot_ids(&ext_list).len(), 2);
}

#[test]
fn missing_target_is_local_only_with_a_warning_and_sync_external_catches_up() {
    let e = TestEnv::with_dotfiles();
    let ext = e.tmp.path().join("unmounted/drive");
    let env = target_env(&ext);
    let (code, v, stderr) = run_with(&e, "backup-checkpoint", &["auto", "pre-dotfiles"], &env);
    assert_eq!(code, 0, "{v:#}\n{stderr}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["degradation"], "local-only");
    assert!(
        v["snapshot"]["id"].is_string(),
        "the checkpoint is committed locally"
    );
    let t = &v["external"][0];
    assert_eq!(t["status"], "unreachable");
    assert_eq!(t["attempts"], 3, "an unreachable mount is retried: {t:#}");
    assert_eq!(t["error"]["code"], "external_unreachable");
    assert_eq!(t["error"]["retryable"], true);
    let w: Vec<&Value> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "external_unreachable")
        .collect();
    assert_eq!(w.len(), 1, "{v:#}");
    let msg = w[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("--sync-external") && msg.contains("committed locally"),
        "{msg}"
    );
    assert!(!ext.exists(), "a missing target is never created");

    e.write(".gitconfig", b"[user]\n\tname = Other\n", 0o644);
    let (code, v, _) = run_with(&e, "backup-checkpoint", &["auto", "post-setup"], &env);
    assert_eq!((code, v["degradation"].as_str()), (0, Some("local-only")));

    // The drive comes back: one sync copies everything that was missed.
    std::fs::create_dir_all(&ext).unwrap();
    let (code, v, _) = run_with(&e, "backup-create", &["--sync-external"], &env);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["degradation"], "full");
    assert_eq!(v["changed"], true);
    assert_eq!(v["external"][0]["copied"]["snapshots"], 2, "{v:#}");
    assert!(v["snapshot"].is_null(), "--sync-external takes no backup");
    let (code, _) = verify_dir(&e, &ext, true);
    assert_eq!(code, 0);
    // Nothing left to do: a second sync copies nothing.
    let (code, v, _) = run_with(&e, "backup-create", &["--sync-external=drive"], &env);
    assert_eq!(code, 0);
    assert_eq!(v["changed"], false);
    assert_eq!(v["stats"]["external_objects_copied"], 0);
    // An explicit sync to a missing target fails (exit 1) and says it may be retried.
    let gone = target_env(&e.tmp.path().join("gone"));
    let (code, v, _) = run_with(&e, "backup-create", &["--sync-external"], &gone);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "external_unreachable");
    assert_eq!(v["errors"][0]["retryable"], true);
}

#[test]
fn local_only_setting_skips_the_sync_and_says_how_to_catch_up() {
    let e = TestEnv::with_dotfiles();
    let ext = e.tmp.path().join("drive");
    std::fs::create_dir(&ext).unwrap();
    let mut env = target_env(&ext);
    env.push(("BACKUP_LOCAL_ONLY", "true".into()));
    let (code, v, _) = run_with(&e, "backup-checkpoint", &["manual", "x"], &env);
    assert_eq!(code, 0);
    assert_eq!(v["status"], "success");
    assert_eq!(v["degradation"], "local-only");
    assert_eq!(v["external"][0]["status"], "skipped");
    assert_eq!(v["external"][0]["attempts"], 0);
    assert!(v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "external_skipped"));
    assert_eq!(
        std::fs::read_dir(&ext).unwrap().count(),
        0,
        "nothing written"
    );
    // No target configured: full, and no external payload.
    let (code, v) = e.json("backup-checkpoint", &["manual", "y"]);
    assert_eq!(code, 0);
    assert_eq!(v["degradation"], "full");
    assert!(v.get("external").is_none());
    let (code, v) = e.json("backup-create", &["--sync-external"]);
    assert_eq!(code, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "no_external_target");
}

#[test]
fn a_target_holding_something_else_is_refused_untouched_and_not_retried() {
    let e = TestEnv::with_dotfiles();
    let ext = e.tmp.path().join("drive");
    std::fs::create_dir(&ext).unwrap();
    std::fs::write(ext.join("thesis.tex"), "mine").unwrap();
    let env = target_env(&ext);
    let (code, v, _) = run_with(&e, "backup-checkpoint", &["manual", "x"], &env);
    assert_eq!(code, 0, "the checkpoint itself succeeds: {v:#}");
    assert_eq!(v["degradation"], "local-only");
    let t = &v["external"][0];
    assert_eq!(t["status"], "failed");
    assert_eq!(t["attempts"], 1, "a permanent error is not retried");
    assert_eq!(t["error"]["code"], "external_not_a_repository");
    assert_eq!(t["error"]["retryable"], false);
    let names: Vec<_> = std::fs::read_dir(&ext)
        .unwrap()
        .flatten()
        .map(|d| d.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("thesis.tex")]);

    // A copy of a different repository is refused too.
    let other = TestEnv::with_dotfiles();
    let other_ext = e.tmp.path().join("other");
    std::fs::create_dir(&other_ext).unwrap();
    let (code, _, _) = run_with(
        &other,
        "backup-checkpoint",
        &["manual", "o"],
        &target_env(&other_ext),
    );
    assert_eq!(code, 0);
    let (code, v, _) = run_with(
        &e,
        "backup-create",
        &["--sync-external"],
        &target_env(&other_ext),
    );
    assert_eq!(code, 5, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "external_repository_mismatch");
    assert_eq!(v["external"][0]["attempts"], 1);
}

/// Build a repository with `n` checkpoints of a few MB each (so a sync takes a while).
fn big_history(e: &TestEnv, n: usize) {
    for i in 0..n {
        e.write(
            &format!(".config/big/file{i}.bin"),
            &noise(3 << 20, i as u64 + 7),
            0o644,
        );
        e.write(".zshrc", format!("# {i}\n").as_bytes(), 0o644);
        let (code, v) = e.json("backup-checkpoint", &["manual", &format!("c{i}")]);
        assert_eq!(code, 0, "{v:#}");
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Kill `backup-create --sync-external` with SIGKILL after random delays;
/// after each kill the copy must verify (leftover temp files are only
/// warnings); finally a full sync completes and the copy is whole.
fn interrupt_and_resume(
    e: &TestEnv,
    env: &[(&'static str, String)],
    copy_dir: &Path,
    rounds: usize,
    max_ms: u64,
) {
    let mut s = seed();
    eprintln!("interrupt seed {s}");
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut killed_mid_run = 0;
    for round in 0..rounds {
        // New data every round, so each sync has packs to copy and a kill lands mid-copy.
        e.write(
            &format!(".config/round/r{round}.bin"),
            &noise(2 << 20, s ^ round as u64),
            0o644,
        );
        let (code, v) = e.json("backup-checkpoint", &["manual", &format!("round{round}")]);
        assert_eq!(code, 0, "{v:#}");
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // On a loaded machine every random delay can outlast the sync; the
        // last round then kills early (still mid-run: rclone alone takes
        // longer than this to start), so every run proves something.
        let last_chance = round + 1 == rounds && killed_mid_run == 0;
        let delay = Duration::from_millis(if last_chance { 30 } else { (s >> 33) % max_ms });
        let mut child = e
            .command("backup-create", &["--sync-external", "--json"], &pairs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        if copy_dir.join("config.json").exists() {
            let (code, v) = verify_dir(e, copy_dir, false);
            assert_eq!(code, 0, "round {round} (killed after {delay:?}): the copy must never refer to missing data: {v:#}");
        }
    }
    eprintln!("{killed_mid_run} of {rounds} runs were killed mid-sync");
    assert!(
        killed_mid_run > 0,
        "no run was interrupted; the test proved nothing"
    );
    let (code, v, _) = e.run("backup-create", &["--sync-external"], &pairs);
    assert_eq!(code, 0, "the resumed sync completes: {v:#}");
    let (code, v) = verify_dir(e, copy_dir, true);
    assert_eq!(code, 0, "{v:#}");
    let (_, local) = e.json("backup-list", &[]);
    let (_, copy) = e.json("backup-list", &["--repo", copy_dir.to_str().unwrap()]);
    assert_eq!(snapshot_ids(&copy), snapshot_ids(&local));
}

#[test]
fn sync_killed_at_random_points_resumes_and_the_copy_always_verifies() {
    let e = TestEnv::new();
    big_history(&e, 3);
    let ext = e.tmp.path().join("drive");
    std::fs::create_dir(&ext).unwrap();
    // Time one full sync into a scratch target to scale the kill delays.
    let scratch = e.tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let started = Instant::now();
    let (code, _, _) = run_with(
        &e,
        "backup-create",
        &["--sync-external"],
        &target_env(&scratch),
    );
    assert_eq!(code, 0);
    let full_ms = (started.elapsed().as_millis() as u64).max(20);
    // One round's sync copies about a third of that.
    interrupt_and_resume(&e, &target_env(&ext), &ext, 10, (full_ms / 2).max(20));
}

fn init_secrets(e: &TestEnv) {
    let (code, v) = e.json("backup-create", &["--init-secrets"]);
    assert_eq!(code, 0, "{v:#}");
}

/// Restore from the copy onto a fresh home with no repository and only the
/// identity file; secrets come back 0600 with their bytes.
fn restore_on_new_machine(
    old: &TestEnv,
    env_for: impl Fn(&TestEnv) -> Vec<(&'static str, String)>,
) {
    let new = TestEnv::new();
    let identity = ".config/dotfiles-backup/identity.txt";
    new.write(
        identity,
        &std::fs::read(old.home.join(identity)).unwrap(),
        0o600,
    );
    let env = env_for(&new);
    let (code, v, stderr) = run_with(&new, "backup-restore", &["latest", "--from-external"], &env);
    assert_eq!(code, 0, "{v:#}\n{stderr}");
    assert!(
        Path::new(&new.repo).join("config.json").exists(),
        "the local repository is back"
    );
    assert_eq!(
        std::fs::read(new.repo.join("config.json")).unwrap(),
        std::fs::read(old.repo.join("config.json")).unwrap(),
        "same repository id, so later checkpoints deduplicate against it"
    );
    for f in [
        ".zshrc",
        ".gitconfig",
        ".config/nvim/init.lua",
        ".ssh/id_ed25519",
    ] {
        assert_eq!(
            std::fs::read(new.home.join(f)).unwrap(),
            std::fs::read(old.home.join(f)).unwrap(),
            "{f}"
        );
    }
    let mode = std::fs::metadata(new.home.join(".ssh/id_ed25519"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, v) = new.json("backup-verify", &["--read-data"]);
    assert_eq!(code, 0, "{v:#}");
}

fn home_with_secret() -> TestEnv {
    let e = TestEnv::with_dotfiles();
    e.write(
        ".config/dotfiles-backup/config.toml",
        b"[track]\nconfig = [\"~/.ssh\", \"~/.config\", \"~/.zshrc\", \"~/.gitconfig\"]\n",
        0o644,
    );
    init_secrets(&e);
    e.write(
        ".ssh/id_ed25519",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nsecret bytes 0123456789\n",
        0o600,
    );
    e
}

#[test]
fn from_external_restores_everything_on_a_new_machine_with_only_the_identity() {
    let e = home_with_secret();
    let ext = e.tmp.path().join("drive");
    std::fs::create_dir(&ext).unwrap();
    let (code, v, _) = run_with(
        &e,
        "backup-checkpoint",
        &["manual", "full"],
        &target_env(&ext),
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        v["external"][0]["copied"]["keys"], 1,
        "the sealed key travels: {v:#}"
    );
    let keys: Vec<String> = objects(&ext)
        .into_iter()
        .filter(|o| o.starts_with("keys/"))
        .collect();
    assert!(keys.len() == 1 && keys[0].ends_with(".age"), "{keys:?}");
    // The plain secret-id key (outside the repository) is nowhere in the copy.
    let key_dir = e.home.join(".local/state/dotfiles-backup/keys");
    for (_, bytes) in all_file_bytes(&key_dir) {
        let key = String::from_utf8_lossy(&bytes).trim().to_string();
        for (p, data) in all_file_bytes(&ext) {
            assert!(
                !String::from_utf8_lossy(&data).contains(&key),
                "{p:?} holds the plain key"
            );
        }
    }
    // Only encrypted secret blobs travel: no 16-byte window of the secret is anywhere in the copy.
    let secret = std::fs::read(e.home.join(".ssh/id_ed25519")).unwrap();
    for (p, data) in all_file_bytes(&ext) {
        for w in secret.windows(16) {
            assert!(
                !data.windows(16).any(|d| d == w),
                "{p:?} holds secret bytes"
            );
        }
    }
    let ext2 = ext.clone();
    restore_on_new_machine(&e, move |_| target_env(&ext2));
    // A machine whose local repository is another one: refused, nothing fetched into it.
    let other = TestEnv::with_dotfiles();
    assert_eq!(other.json("backup-checkpoint", &["manual", "mine"]).0, 0);
    let before = (
        objects(&other.repo),
        std::fs::read(other.repo.join("config.json")).unwrap(),
    );
    let (code, v, _) = run_with(
        &other,
        "backup-restore",
        &["latest", "--from-external"],
        &target_env(&ext),
    );
    assert_eq!(code, 5, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "external_repository_mismatch");
    assert!(v["errors"][0]["hint"].as_str().unwrap().contains("--repo"));
    let after = (
        objects(&other.repo),
        std::fs::read(other.repo.join("config.json")).unwrap(),
    );
    assert!(
        after == before,
        "the local repository's objects are untouched"
    );
    // A dry run plans from the copy and writes nothing locally.
    let fresh = TestEnv::new();
    let (code, v, _) = run_with(
        &fresh,
        "backup-restore",
        &["latest", "--from-external", "--dry-run"],
        &target_env(&ext),
    );
    assert_eq!(code, 0, "{v:#}");
    assert!(!fresh.repo.exists());
    assert!(!fresh.home.join(".zshrc").exists());
}

#[test]
fn verify_external_finds_damage_in_the_copy_and_names_are_checked() {
    let e = TestEnv::with_dotfiles();
    let ext = e.tmp.path().join("drive");
    std::fs::create_dir(&ext).unwrap();
    let env = target_env(&ext);
    assert_eq!(
        run_with(&e, "backup-checkpoint", &["manual", "x"], &env).0,
        0
    );
    let (code, v, _) = run_with(&e, "backup-verify", &["--external", "--read-data"], &env);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["repository"], ext.to_str().unwrap());
    let pack = objects(&ext)
        .into_iter()
        .find(|o| o.starts_with("packs/"))
        .unwrap();
    let path = ext.join(&pack);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let (code, v, _) = run_with(&e, "backup-verify", &["--external", "--read-data"], &env);
    assert_eq!(code, 6, "{v:#}");
    assert_eq!(
        e.json("backup-verify", &["--read-data"]).0,
        0,
        "the local repository is intact"
    );
    let (code, v, _) = run_with(&e, "backup-list", &["--external=nope"], &env);
    assert_eq!(code, 2);
    assert_eq!(v["errors"][0]["code"], "unknown_external_target");
    let (code, v) = e.json("backup-list", &["--external"]);
    assert_eq!(code, 2);
    assert_eq!(v["errors"][0]["code"], "no_external_target");
}

// ---- rclone ----

#[test]
fn rclone_local_remote_syncs_lists_verifies_and_restores() {
    if !rclone_available("the rclone target") {
        return;
    }
    let e = home_with_secret();
    let remote: PathBuf = e.tmp.path().join("remote/dotfiles");
    let env = rclone_env(&e, &remote);
    let (code, v, stderr) = run_with(&e, "backup-checkpoint", &["manual", "one"], &env);
    assert_eq!(code, 0, "{v:#}\n{stderr}");
    assert_eq!(v["degradation"], "full", "{v:#}");
    assert_eq!(v["external"][0]["type"], "rclone");
    assert_eq!(v["external"][0]["status"], "synced");
    e.write(".zshrc", b"changed\n", 0o644);
    assert_eq!(
        run_with(&e, "backup-checkpoint", &["manual", "two"], &env).0,
        0
    );
    // The remote's directory is itself a repository that verifies.
    let (code, v) = verify_dir(&e, &remote, true);
    assert_eq!(code, 0, "{v:#}");
    let (code, v, _) = run_with(
        &e,
        "backup-verify",
        &["--external=cloud", "--read-data"],
        &env,
    );
    assert_eq!(code, 0, "{v:#}");
    let (code, v, _) = run_with(&e, "backup-list", &["--external"], &env);
    assert_eq!(code, 0, "{v:#}");
    let (_, local) = e.json("backup-list", &[]);
    assert_eq!(snapshot_ids(&v), snapshot_ids(&local));
    // Unreachable remote (an unknown remote name is a configuration error: not retried).
    let mut bad = env.clone();
    bad[0].1 = "cloud=rclone:nosuchremote:x".into();
    let (code, v, _) = run_with(&e, "backup-checkpoint", &["manual", "three"], &bad);
    assert_eq!(code, 0);
    assert_eq!(v["degradation"], "local-only");
    assert_eq!(v["external"][0]["attempts"], 1, "{v:#}");
    let remote2 = remote.clone();
    restore_on_new_machine(&e, move |n| rclone_env(n, &remote2));
}

#[test]
fn rclone_sync_killed_at_random_points_resumes() {
    if !rclone_available("the rclone target") {
        return;
    }
    let e = TestEnv::new();
    big_history(&e, 3);
    let remote = e.tmp.path().join("remote");
    let env = rclone_env(&e, &remote);
    interrupt_and_resume(&e, &env, &remote, 5, 3000);
}

#[test]
fn a_busy_target_lock_is_retried_then_reported_and_auto_sync_can_be_off() {
    let e = TestEnv::with_dotfiles();
    let ext = e.tmp.path().join("drive");
    std::fs::create_dir(&ext).unwrap();
    // Another machine (or run) is syncing to the same drive: its lock is held.
    let lock = std::fs::File::create(ext.join("lock")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut env = target_env(&ext);
    env.push(("BACKUP_LOCK_WAIT", "0.1".into()));
    let (code, v, _) = run_with(&e, "backup-checkpoint", &["manual", "x"], &env);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["degradation"], "local-only");
    let t = &v["external"][0];
    assert_eq!(t["error"]["code"], "lock_busy", "{t:#}");
    assert_eq!(t["attempts"], 3, "a busy lock is transient");
    drop(lock);
    let (code, v, _) = run_with(&e, "backup-create", &["--sync-external"], &env);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["external"][0]["copied"]["snapshots"], 1);

    // auto_sync = false: checkpoints stay local (and say so) until an explicit sync.
    let cfg = e.tmp.path().join("config.toml");
    std::fs::write(&cfg, "[external]\nauto_sync = false\n").unwrap();
    e.write(".zshrc", b"# new\n", 0o644);
    let (code, v, _) = run_with(
        &e,
        "backup-checkpoint",
        &["manual", "y", "--config", cfg.to_str().unwrap()],
        &env,
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["external"][0]["status"], "skipped");
    assert_eq!(v["degradation"], "local-only");
    assert!(v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "external_skipped"
            && w["message"].as_str().unwrap().contains("auto_sync")));
    let (_, listed, _) = run_with(&e, "backup-list", &["--external"], &env);
    assert_eq!(snapshot_ids(&listed).len(), 1, "the copy did not get y");
}

#[test]
fn an_odd_tree_round_trips_through_the_external_copy_after_the_local_repository_is_deleted() {
    let e = TestEnv::new();
    build_odd_tree(&e.home.join("odd"));
    let ext = e.tmp.path().join("drive");
    std::fs::create_dir(&ext).unwrap();
    let env = target_env(&ext);
    let (code, v, _) = run_with(
        &e,
        "backup-checkpoint",
        &["manual", "odd", "--path", "~/odd"],
        &env,
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["degradation"], "full");
    // The disk holding the local repository and the home is lost.
    let original = e.tmp.path().join("original");
    std::fs::rename(e.home.join("odd"), &original).unwrap();
    std::fs::remove_dir_all(&e.repo).unwrap();
    let (code, v, _) = run_with(&e, "backup-restore", &["odd", "--from-external"], &env);
    assert_eq!(code, 0, "{v:#}");
    assert_trees_equal(&original, &e.home.join("odd"));
    assert_eq!(e.json("backup-verify", &["--read-data"]).0, 0);
}

/// `backup-verify --repair --from-external`: a pack deleted, another
/// bit-flipped and a tree and a record damaged locally are fetched from the
/// directory copy (checked by hash), nothing is lost, and a full restore
/// equals the home. A snapshot forgotten locally is not brought back, and an
/// object damaged on the copy too is reported (`fetch_failed`), never put in
/// place, and the verify that follows still names what it held.
#[test]
fn repair_from_external_fetches_what_was_lost_locally() {
    let e = TestEnv::with_dotfiles();
    let ext = e.tmp.path().join("drive");
    std::fs::create_dir(&ext).unwrap();
    let env = target_env(&ext);
    let ck = |label: &str| {
        let (rc, v, _) = run_with(&e, "backup-checkpoint", &["manual", label], &env);
        assert_eq!(rc, 0, "{v:#}");
        assert_eq!(v["external"][0]["status"], "synced", "{v:#}");
    };
    ck("gone");
    e.write(".config/a", &noise(5000, 1), 0o644);
    ck("c1");
    let first = names_in(&e.repo, "packs");
    e.write(".config/b", &noise(7000, 2), 0o644);
    ck("c2");
    let (rc, v) = e.json("backup-prune", &["--forget", "gone"]);
    assert_eq!(rc, 0, "{v:#}");
    let records_before = names_in(&e.repo, "snapshots");
    let second: Vec<PathBuf> = names_in(&e.repo, "packs")
        .into_iter()
        .filter(|p| !first.contains(p))
        .collect();
    assert_eq!(second.len(), 1);
    // Damage: one pack deleted, one bit-flipped, one tree cut, one record flipped.
    std::fs::remove_file(&first[0]).unwrap();
    let flip = |p: &Path| {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        std::fs::write(p, b).unwrap();
    };
    flip(&second[0]);
    let trees = names_in(&e.repo, "trees");
    std::fs::write(&trees[0], b"{").unwrap();
    flip(&records_before[0]);
    let (rc, _) = e.json("backup-verify", &["--read-data"]);
    assert_eq!(rc, 6);

    let (rc, v, _) = run_with(
        &e,
        "backup-verify",
        &["--repair", "--from-external", "--read-data"],
        &env,
    );
    assert_eq!(rc, 0, "{v:#}");
    let fetched: BTreeSet<String> = v["repair"]["fetched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let rel = |p: &Path| {
        p.strip_prefix(&e.repo)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    for p in [&first[0], &second[0], &trees[0], &records_before[0]] {
        assert!(fetched.contains(&rel(p)), "{} fetched: {v:#}", rel(p));
    }
    assert_eq!(v["repair"]["lost"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["repair"]["fetch_failed"], serde_json::json!([]), "{v:#}");
    assert_eq!(
        names_in(&e.repo, "snapshots"),
        records_before,
        "the forgotten snapshot is not brought back from the copy"
    );
    let target = e.tmp.path().join("restored");
    let (rc, v) = e.json(
        "backup-restore",
        &["c2", "--target", target.to_str().unwrap()],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert_trees_equal(&e.home.join(".config"), &target.join(".config"));
    assert_eq!(
        std::fs::read(target.join(".zshrc")).unwrap(),
        std::fs::read(e.home.join(".zshrc")).unwrap()
    );

    // Damaged here and on the copy: reported, not put in place, the path named as lost.
    let pack_b = second[0].clone();
    flip(&pack_b);
    flip(&ext.join(rel(&pack_b)));
    let (rc, v, _) = run_with(
        &e,
        "backup-verify",
        &["--repair", "--from-external", "--read-data"],
        &env,
    );
    assert_eq!(rc, 6, "{v:#}");
    let failed = &v["repair"]["fetch_failed"];
    assert_eq!(failed[0]["object"], rel(&pack_b), "{v:#}");
    assert!(
        failed[0]["message"].as_str().unwrap().contains("SHA-256"),
        "{v:#}"
    );
    assert!(v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "fetch_failed"));
    assert!(
        v["problems"].to_string().contains("~/.config/b"),
        "the damaged content is still named: {v:#}"
    );
}

/// Issue 16: a snapshot record damaged here and on the copy too no longer
/// stops `--repair --from-external`: it is moved to `quarantine/snapshots/`
/// (its bytes kept), reported in `repair.quarantined` and `repair.lost`,
/// exit 6 ("repaired with loss"), and the rest is repaired: a deleted pack
/// comes back from the copy and the other snapshots restore.
#[test]
fn a_record_damaged_here_and_on_the_copy_is_quarantined_and_the_rest_repaired() {
    let e = TestEnv::with_dotfiles();
    let ext = e.tmp.path().join("drive");
    std::fs::create_dir(&ext).unwrap();
    let env = target_env(&ext);
    let mut records = Vec::new();
    for (i, label) in ["c1", "c2", "c3"].iter().enumerate() {
        e.write(".config/a", &noise(4000 + i, i as u64), 0o644);
        let before = names_in(&e.repo, "snapshots");
        let (rc, v, _) = run_with(&e, "backup-checkpoint", &["manual", label], &env);
        assert_eq!(rc, 0, "{v:#}");
        assert_eq!(v["external"][0]["status"], "synced", "{v:#}");
        let new: Vec<PathBuf> = names_in(&e.repo, "snapshots")
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        records.push(new[0].clone());
    }
    let rel = |p: &Path| {
        p.strip_prefix(&e.repo)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    // c2's record cut on both sides; a pack deleted locally only.
    let damaged = std::fs::read(&records[1]).unwrap()[..20].to_vec();
    std::fs::write(&records[1], &damaged).unwrap();
    std::fs::write(ext.join(rel(&records[1])), &damaged).unwrap();
    let packs = names_in(&e.repo, "packs");
    std::fs::remove_file(&packs[0]).unwrap();
    assert_eq!(e.json("backup-list", &[]).0, 6, "the damage stops readers");

    let (rc, v, _) = run_with(&e, "backup-verify", &["--repair", "--from-external"], &env);
    assert_eq!(rc, 6, "repaired with loss: {v:#}");
    let q = &v["repair"]["quarantined"];
    assert_eq!(q.as_array().unwrap().len(), 1, "{v:#}");
    let moved = e.repo.join("quarantine").join(rel(&records[1]));
    assert_eq!(std::fs::read(&moved).unwrap(), damaged, "kept, not deleted");
    assert!(!records[1].exists());
    assert!(
        q[0]["moved_to"]
            .as_str()
            .unwrap()
            .ends_with(&rel(&records[1])),
        "{v:#}"
    );
    assert!(
        v["repair"]["lost"].to_string().contains("damaged record"),
        "{v:#}"
    );
    assert!(
        v["repair"]["fetched"].to_string().contains(&rel(&packs[0])),
        "{v:#}"
    );
    assert_eq!(v["errors"][0]["code"], "snapshot_lost", "{v:#}");
    assert!(
        v["warnings"].to_string().contains("snapshot_quarantined"),
        "{v:#}"
    );
    // The others are intact and restore; the next verify is clean.
    let (rc, v) = e.json("backup-list", &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 2, "{v:#}");
    for label in ["c1", "c3"] {
        let target = e.tmp.path().join(format!("r-{label}"));
        let (rc, v) = e.json(
            "backup-restore",
            &[label, "--target", target.to_str().unwrap()],
        );
        assert_eq!(rc, 0, "{label}: {v:#}");
    }
    assert_eq!(e.json("backup-verify", &["--read-data"]).0, 0);
}

/// `backup-verify --repair --from-external` through an rclone target (a
/// `local` remote): a pack deleted and a tree cut locally are fetched through
/// the target's cache directory, checked by hash, and a full restore equals
/// the home.
#[test]
fn repair_from_an_rclone_copy_fetches_what_was_lost_locally() {
    if !rclone_available("repair from an rclone copy") {
        return;
    }
    let e = TestEnv::with_dotfiles();
    let remote: PathBuf = e.tmp.path().join("remote/dotfiles");
    let env = rclone_env(&e, &remote);
    e.write(".config/a", &noise(6000, 7), 0o644);
    let (rc, v, stderr) = run_with(&e, "backup-checkpoint", &["manual", "c1"], &env);
    assert_eq!(rc, 0, "{v:#}\n{stderr}");
    assert_eq!(v["external"][0]["status"], "synced", "{v:#}");
    let packs = names_in(&e.repo, "packs");
    let trees = names_in(&e.repo, "trees");
    for p in &packs {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::write(&trees[0], b"{").unwrap();
    assert_eq!(e.json("backup-verify", &["--read-data"]).0, 6);
    let (rc, v, stderr) = run_with(
        &e,
        "backup-verify",
        &["--repair", "--from-external=cloud", "--read-data"],
        &env,
    );
    assert_eq!(rc, 0, "{v:#}\n{stderr}");
    let fetched = v["repair"]["fetched"].to_string();
    for p in packs.iter().chain(&trees[..1]) {
        let rel = p
            .strip_prefix(&e.repo)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(fetched.contains(&rel), "{rel} fetched: {v:#}");
    }
    assert_eq!(v["repair"]["lost"], serde_json::json!([]), "{v:#}");
    let target = e.tmp.path().join("restored");
    let (rc, v) = e.json(
        "backup-restore",
        &["c1", "--target", target.to_str().unwrap()],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert_trees_equal(&e.home.join(".config"), &target.join(".config"));
}
