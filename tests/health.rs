//! `backup-checkpoint --health-check`: one test per red and yellow cause.
//! Each test first shows the row at its good level (or absent cause), then
//! introduces the cause and checks that exactly that row changes level, with
//! a message saying why, and that red fails the run (exit 1).

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;

use common::*;
use serde_json::Value;

const CKPT: &str = "backup-checkpoint";
const PATHS: [&str; 4] = ["--path", "~/.zshrc", "--path", "~/.config"];

fn health(e: &TestEnv) -> (i32, Value) {
    let mut a = vec!["--health-check"];
    a.extend(PATHS);
    e.json(CKPT, &a)
}

fn row<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name}: {v:#}"))
}

fn level(v: &Value, name: &str) -> String {
    row(v, name)["status"].as_str().unwrap().to_string()
}

fn message(v: &Value, name: &str) -> String {
    row(v, name)["message"].as_str().unwrap().to_string()
}

fn checkpointed() -> TestEnv {
    let e = TestEnv::with_dotfiles();
    let mut a = vec!["auto", "pre-dotfiles"];
    a.extend(PATHS);
    let (rc, v) = e.json(CKPT, &a);
    assert_eq!(rc, 0, "{v:#}");
    e
}

fn config(e: &TestEnv, body: &str) {
    e.write(
        ".config/dotfiles-backup/config.toml",
        body.as_bytes(),
        0o644,
    );
}

fn assert_red(v: &Value, rc: i32, name: &str) {
    assert_eq!(level(v, name), "red", "{v:#}");
    assert_eq!(rc, 1, "red fails the run: {v:#}");
    assert_eq!(v["health"], "red");
    assert_eq!(v["errors"][0]["code"], "health_red");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains(name));
}

// ------------------------------------------------------------------ red

#[test]
fn red_when_the_repository_path_is_not_a_repository() {
    let e = TestEnv::with_dotfiles();
    let (_, v) = health(&e);
    assert_eq!(level(&v, "repository"), "yellow", "missing is only yellow");
    std::fs::create_dir_all(&e.repo).unwrap();
    std::fs::write(e.repo.join("notes.txt"), b"not a repository").unwrap();
    let (rc, v) = health(&e);
    assert_red(&v, rc, "repository");
    assert!(message(&v, "repository").contains("not a backup repository"));
}

#[test]
fn red_when_the_quick_verify_finds_damage() {
    let e = checkpointed();
    let (_, v) = health(&e);
    assert_eq!(level(&v, "verify"), "green", "{v:#}");
    let packs: Vec<_> = std::fs::read_dir(e.repo.join("packs"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(!packs.is_empty());
    for p in packs {
        std::fs::remove_file(p).unwrap();
    }
    let (rc, v) = health(&e);
    assert_red(&v, rc, "verify");
}

#[test]
fn red_and_yellow_disk_space_follow_the_configured_thresholds() {
    let e = checkpointed();
    config(
        &e,
        "[space]\nwarn_below_mb = 0\nstrong_warn_below_mb = 0\nrefuse_below_mb = 0\n",
    );
    let (_, v) = health(&e);
    assert_eq!(level(&v, "disk_space"), "green", "{v:#}");
    // More than any test machine has free.
    config(
        &e,
        "[space]\nwarn_below_mb = 1000000000000\nrefuse_below_mb = 0\n",
    );
    let (rc, v) = health(&e);
    assert_eq!(level(&v, "disk_space"), "yellow", "{v:#}");
    assert_ne!(rc, 1);
    config(
        &e,
        "[space]\nwarn_below_mb = 1000000000000\nrefuse_below_mb = 1000000000000\n",
    );
    let (rc, v) = health(&e);
    assert_red(&v, rc, "disk_space");
    assert!(message(&v, "disk_space").contains("red below 1000000000000 MiB"));
}

/// The health check's own thresholds are gone (one policy, `[space]`): a
/// config that still sets them is a usage error saying where they went.
#[test]
fn the_removed_health_free_space_keys_say_where_they_went() {
    let e = checkpointed();
    config(&e, "[health]\nmin_free_mb = 50\n");
    let (rc, v) = health(&e);
    assert_eq!(rc, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "bad_config", "{v:#}");
    let hint = v["errors"][0]["hint"].as_str().unwrap();
    assert!(hint.contains("space.refuse_below_mb"), "{hint}");
}

#[test]
fn red_when_the_last_logged_verify_failed_yellow_when_none_or_old() {
    let e = checkpointed();
    // A fresh, small repository is re-hashed by the check itself: green whatever the log says.
    let (_, v) = health(&e);
    assert_eq!(level(&v, "last_verify"), "green", "{v:#}");
    assert!(message(&v, "last_verify").contains("this check re-hashed every byte"));
    // Too large for that (limit 0): the log decides.
    config(&e, "[health]\nquick_verify_max_mb = 0\n");
    let (_, v) = health(&e);
    assert_eq!(level(&v, "verify"), "green", "{v:#}");
    assert!(message(&v, "verify").contains("structure intact"));
    assert_eq!(level(&v, "last_verify"), "yellow", "never verified: {v:#}");
    assert!(message(&v, "last_verify").contains("backup-verify --read-data"));

    let (rc, _) = e.json("backup-verify", &["--read-data"]);
    assert_eq!(rc, 0);
    let (_, v) = health(&e);
    assert_eq!(level(&v, "last_verify"), "green", "{v:#}");

    // Old: a zero-day limit and a second gone by.
    config(
        &e,
        "[health]\nmax_verify_age_days = 0\nquick_verify_max_mb = 0\n",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, v) = health(&e);
    assert_eq!(level(&v, "last_verify"), "yellow", "{v:#}");
    assert!(message(&v, "last_verify").contains("max_verify_age_days"));

    // A failed verify in the log is red until a later one passes.
    config(&e, "[health]\nquick_verify_max_mb = 0\n");
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(e.repo.join("logs/runs.jsonl"))
        .unwrap();
    let line = serde_json::json!({
        "command": "backup-verify", "status": "failed", "exit_code": 6, "duration_ms": 3,
        "errors": [{"code": "repository_corrupt", "message": "pack 1234 is missing"}],
        "logged_at": "2026-01-01T00:00:00.000000000Z"
    });
    writeln!(log, "{line}").unwrap();
    let (rc, v) = health(&e);
    assert_red(&v, rc, "last_verify");
    assert!(message(&v, "last_verify").contains("pack 1234 is missing"));
}

/// Recipients, a stored secret, and the key files: (env, wrapped key, plain key, identity).
fn with_secrets() -> (
    TestEnv,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let e = TestEnv::with_dotfiles();
    e.write(
        ".ssh/id_ed25519",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nxyz\n",
        0o600,
    );
    let (rc, v) = e.json("backup-create", &["--init-secrets"]);
    assert_eq!(rc, 0, "{v:#}");
    let (rc, v) = e.json(
        CKPT,
        &[
            "auto",
            "pre-dotfiles",
            "--path",
            "~/.ssh",
            "--path",
            "~/.zshrc",
        ],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["stats"]["secrets_sealed"], 1, "{v:#}");
    let only = |dir: std::path::PathBuf| -> std::path::PathBuf {
        let mut found = Vec::new();
        for entry in walk(&dir) {
            if entry.1.is_file() {
                found.push(dir.join(std::ffi::OsStr::new(&String::from_utf8(entry.0).unwrap())));
            }
        }
        assert_eq!(found.len(), 1, "{found:?}");
        found.remove(0)
    };
    let wrapped = only(e.repo.join("keys"));
    let plain = only(e.home.join(".local/state/dotfiles-backup/keys"));
    let identity = e.home.join(".config/dotfiles-backup/identity.txt");
    assert!(identity.is_file());
    (e, wrapped, plain, identity)
}

#[test]
fn red_when_the_wrapped_key_is_missing_from_the_repository() {
    let (e, wrapped, _, _) = with_secrets();
    let (_, v) = health(&e);
    assert_eq!(level(&v, "secrets"), "green", "{v:#}");
    assert_eq!(level(&v, "secrets_identity"), "green", "{v:#}");
    std::fs::remove_file(&wrapped).unwrap();
    let (rc, v) = health(&e);
    assert_red(&v, rc, "secrets");
    assert!(message(&v, "secrets").contains("cannot be restored on another machine"));
}

// ------------------------------------------------------------------ yellow

#[test]
fn yellow_when_secrets_were_skipped_for_want_of_a_recipient() {
    let e = checkpointed();
    // No secret-class file in the home: nothing was skipped, nothing to warn about.
    let (rc, v) = health(&e);
    assert_eq!(rc, 0);
    assert_eq!(level(&v, "secrets"), "green", "{v:#}");
    e.write(".ssh/id_ed25519", b"PRIVATE KEY", 0o600);
    let (rc, v) = e.json(CKPT, &["manual", "with-key", "--path", "~/.ssh"]);
    assert_eq!(rc, 0, "{v:#}");
    let (rc, v) = health(&e);
    assert_eq!(rc, 0);
    assert_eq!(level(&v, "secrets"), "yellow", "{v:#}");
    assert!(message(&v, "secrets").contains("skipped"));
    assert!(
        message(&v, "secrets").contains("~/.ssh/id_ed25519"),
        "{v:#}"
    );
    assert!(v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] != "secrets_identity"));
}

#[test]
fn yellow_when_the_local_plain_key_is_missing() {
    let (e, _, plain, _) = with_secrets();
    std::fs::remove_file(&plain).unwrap();
    let (rc, v) = health(&e);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(level(&v, "secrets"), "yellow", "{v:#}");
    assert!(message(&v, "secrets").contains("identity"));
}

#[test]
fn yellow_when_the_identity_file_is_missing() {
    let (e, _, _, identity) = with_secrets();
    std::fs::remove_file(&identity).unwrap();
    let (rc, v) = health(&e);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(level(&v, "secrets_identity"), "yellow", "{v:#}");
    assert_eq!(level(&v, "secrets"), "green", "{v:#}");
}

#[test]
fn yellow_when_the_lock_is_held_naming_the_holder() {
    let e = checkpointed();
    let (_, v) = health(&e);
    assert_eq!(level(&v, "lock"), "green", "{v:#}");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(e.repo.join("lock"))
        .unwrap();
    // SAFETY: flock on an open descriptor has no memory-safety preconditions.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    let record = serde_json::json!({"pid": std::process::id(), "host": "testhost", "command": "backup-create", "started_at": 1});
    f.set_len(0).unwrap();
    write!(f, "{record}").unwrap();
    let (rc, v) = health(&e);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(level(&v, "lock"), "yellow", "{v:#}");
    let m = message(&v, "lock");
    assert!(
        m.contains("held by pid") && m.contains("backup-create") && m.contains("testhost"),
        "{m}"
    );
    drop(f);
}

#[test]
fn yellow_when_a_dead_holder_left_a_stale_lock_record() {
    let e = checkpointed();
    let record = serde_json::json!({"pid": 999999, "host": "gone", "command": "backup-checkpoint", "started_at": 1});
    std::fs::write(e.repo.join("lock"), record.to_string()).unwrap();
    let (rc, v) = health(&e);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(level(&v, "lock"), "yellow", "{v:#}");
    assert!(message(&v, "lock").contains("stale"), "{v:#}");
    assert!(message(&v, "lock").contains("999999"));
}

#[test]
fn yellow_when_the_repository_does_not_exist_yet() {
    let e = TestEnv::with_dotfiles();
    let (rc, v) = health(&e);
    assert_eq!(rc, 0);
    assert_eq!(level(&v, "repository"), "yellow", "{v:#}");
    assert!(message(&v, "repository").contains("first checkpoint creates it"));
}

#[test]
fn yellow_when_a_phase_checkpoint_is_older_than_the_limit() {
    let e = checkpointed();
    let (_, v) = health(&e);
    assert_eq!(level(&v, "phase pre-dotfiles"), "green", "{v:#}");
    assert_eq!(level(&v, "last_checkpoint"), "green", "{v:#}");
    config(&e, "[health]\nmax_checkpoint_age_days = 0\n");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (rc, v) = health(&e);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(level(&v, "phase pre-dotfiles"), "yellow", "{v:#}");
    assert!(message(&v, "phase pre-dotfiles").contains("max_checkpoint_age_days"));
    assert_eq!(level(&v, "last_checkpoint"), "yellow", "{v:#}");
    // Phases without a checkpoint get no row of their own.
    assert!(v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] != "phase post-setup"));
}

#[test]
fn yellow_when_no_tracked_path_exists_and_external_target_row_is_reported() {
    let e = TestEnv::new();
    let (_, v) = health(&e);
    assert_eq!(level(&v, "tracked_paths"), "yellow", "{v:#}");
    assert!(v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "external_target"));
}

#[test]
fn human_table_has_levels_and_an_overall_line() {
    let e = checkpointed();
    let out = e.output(CKPT, &["--health-check", "--path", "~/.zshrc"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("lock"), "{text}");
    assert!(text.contains("overall:"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("green  lock")), "{text}");
    // No colour codes in a pipe.
    assert!(!text.contains('\x1b'), "{text}");
}

#[test]
fn yellow_when_an_external_target_is_missing_or_behind_green_when_synced() {
    let e = TestEnv::with_dotfiles();
    let drive = e.tmp.path().join("drive");
    config(
        &e,
        &format!(
            "[external]\nauto_sync = false\n[external.targets]\ndrive = \"{}\"\n",
            drive.display()
        ),
    );
    let mut a = vec!["auto", "pre-dotfiles"];
    a.extend(PATHS);
    let (rc, v) = e.json(CKPT, &a);
    assert_eq!(rc, 0, "{v:#}");
    let (rc, v) = health(&e);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(level(&v, "external_target drive"), "yellow", "{v:#}");
    assert!(message(&v, "external_target drive").contains("not there"));

    std::fs::create_dir_all(&drive).unwrap();
    let (_, v) = health(&e);
    assert_eq!(level(&v, "external_target drive"), "yellow", "{v:#}");
    assert!(
        message(&v, "external_target drive").contains("lacks 1 of 1"),
        "{v:#}"
    );

    let mut a = vec!["--sync-external"];
    a.extend(PATHS);
    let (rc, v) = e.json("backup-create", &a);
    assert_eq!(rc, 0, "{v:#}");
    let (_, v) = health(&e);
    assert_eq!(level(&v, "external_target drive"), "green", "{v:#}");
}

/// Issue 16, finding 5: each of these makes the next checkpoint fail (or
/// means snapshots are gone) and must be red with the cause named.
#[test]
fn red_when_snapshots_is_deleted_or_the_lock_is_a_directory() {
    let e = checkpointed();
    let (rc, v) = health(&e);
    assert_eq!(level(&v, "writable"), "green", "{v:#}");
    assert_eq!(level(&v, "lock"), "green", "{v:#}");
    assert_eq!(rc, 0, "{v:#}");
    std::fs::remove_dir_all(e.repo.join("snapshots")).unwrap();
    let (rc, v) = health(&e);
    assert_red(&v, rc, "writable");
    assert!(message(&v, "writable").contains("snapshots"), "{v:#}");
    assert!(message(&v, "writable").contains("missing"), "{v:#}");

    let e = checkpointed();
    let _ = std::fs::remove_file(e.repo.join("lock"));
    std::fs::create_dir(e.repo.join("lock")).unwrap();
    let (rc, v) = health(&e);
    assert_red(&v, rc, "lock");
    assert!(message(&v, "lock").contains("not a regular file"), "{v:#}");
}

#[test]
fn red_when_snapshots_or_logs_is_not_writable() {
    use std::os::unix::process::CommandExt;
    for sub in ["snapshots", "logs"] {
        let e = checkpointed();
        // Root writes through any mode: run as the unprivileged test user,
        // owning everything.
        let run_as = is_root().then(common::unprivileged_id);
        if let Some(uid) = run_as {
            set_mode(e.tmp.path(), 0o755);
            let chown = std::process::Command::new("chown")
                .args(["-R", &format!("{uid}:{uid}")])
                .arg(&e.home)
                .arg(&e.repo)
                .status()
                .unwrap();
            assert!(chown.success());
            let _ = uid;
        }
        let run = || {
            let mut a = vec!["--json", "--health-check"];
            a.extend(PATHS);
            let mut cmd = e.command(CKPT, &a, &[]);
            if let Some(uid) = run_as {
                cmd.uid(uid).gid(uid);
            }
            parse_envelope(&cmd.output().unwrap())
        };
        let (rc, v) = run();
        assert_eq!(level(&v, "writable"), "green", "{sub}: {v:#}");
        assert_eq!(rc, 0, "{v:#}");
        set_mode(&e.repo.join(sub), 0o500);
        let (rc, v) = run();
        assert_red(&v, rc, "writable");
        assert!(message(&v, "writable").contains(sub), "{v:#}");
    }
}

#[test]
fn red_when_the_lock_file_is_not_writable() {
    let e = checkpointed().unprivileged();
    let (rc, v) = health(&e);
    assert_eq!(level(&v, "lock"), "green", "{v:#}");
    assert_eq!(rc, 0, "{v:#}");
    set_mode(&e.repo.join("lock"), 0o400);
    let (rc, v) = health(&e);
    assert_red(&v, rc, "lock");
    assert!(message(&v, "lock").contains("not writable"), "{v:#}");
    // And it is right: the writer fails, naming the repository.
    let (rc, v) = e.json(CKPT, &["manual", "x"]);
    assert_eq!(rc, 8, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "repository_read_only");
}

#[test]
fn red_when_the_repository_is_on_a_read_only_mount() {
    let e = checkpointed();
    let bins = std::path::Path::new(exe(CKPT)).parent().unwrap();
    let out = e.tmp.path().join("health.json");
    let script = format!(
        "mount --bind '{r}' '{r}' && mount -o remount,bind,ro '{r}' || exit 99\n\
         HOME='{h}' BACKUP_REPO='{r}' BACKUP_PACKAGES=0 '{b}/{CKPT}' --json --health-check {p} > '{o}'",
        r = e.repo.display(),
        h = e.home.display(),
        b = bins.display(),
        p = PATHS.join(" "),
        o = out.display(),
    );
    let ns = if is_root() { "-m" } else { "-rm" };
    let run = std::process::Command::new("unshare")
        .args([ns, "sh", "-c", &script])
        .output()
        .unwrap();
    if run.status.code() == Some(99) {
        skip_unless_required("mount", "a read-only bind mount needs unshare and mount");
        return;
    }
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_red(&v, run.status.code().unwrap(), "writable");
    assert!(
        message(&v, "writable").contains("read-only file system"),
        "{v:#}"
    );
}

#[test]
fn quick_verify_fails_on_a_pack_cut_inside_its_trailer() {
    let e = checkpointed();
    let (rc, v) = e.json("backup-verify", &[]);
    assert_eq!(rc, 0, "{v:#}");
    let pack = names_in(&e.repo, "packs").remove(0);
    let len = std::fs::metadata(&pack).unwrap().len();
    // The last 8 bytes are the trailer magic, the 4 before the count: cut
    // into the records, leaving every blob intact.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let (rc, v) = e.json("backup-verify", &[]);
    assert_eq!(rc, 6, "{v:#}");
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(v["problems"].to_string().contains(name), "{v:#}");
}
