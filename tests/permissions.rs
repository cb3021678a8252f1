//! Secrets and permissions (issue 9): under `umask 000` nothing the tools
//! create in the repository, the secret-id key directory or the identity's
//! directory is group- or other-accessible; a repository that is
//! world-writable or owned by another user is refused before anything is
//! read or written. (Secret content, 0600 on restore, and the plaintext scan
//! are covered by tests/secrets.rs.)

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::{is_root, noise, parse_envelope, set_mode, skip_unless_required, walk, TestEnv};
use serde_json::Value;

/// Run with `umask 000` (so any mode the code does not force shows up as 0777/0666).
fn run_umask0(env: &TestEnv, bin: &str, args: &[&str]) -> (i32, Value) {
    let mut cmd = env.command(bin, &[&["--json"][..], args].concat(), &[]);
    // SAFETY: umask is async-signal-safe and has no preconditions.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    parse_envelope(&cmd.output().unwrap())
}

/// Every entry under `dir` (and `dir`) whose mode has any group/other bit.
fn exposed(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let m = std::fs::symlink_metadata(dir).unwrap();
    if m.mode() & 0o077 != 0 {
        out.push(format!("{} {:o}", dir.display(), m.mode() & 0o7777));
    }
    for (rel, meta) in walk(dir) {
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.mode() & 0o077 != 0 {
            out.push(format!(
                "{} {:o}",
                String::from_utf8_lossy(&rel),
                meta.mode() & 0o7777
            ));
        }
    }
    out
}

#[test]
fn under_umask_000_the_repository_keys_and_identity_stay_private() {
    let env = TestEnv::with_dotfiles();
    env.write(
        ".config/dotfiles-backup/config.toml",
        b"[track]\nconfig = [\"~/.zshrc\", \"~/.config\", \"~/.ssh\"]\n",
        0o644,
    );
    env.write(".ssh/id_ed25519", &noise(500, 7), 0o600);
    // Everything that creates files or directories, under umask 000.
    let (c, v) = run_umask0(&env, "backup-create", &["--init-secrets"]);
    assert_eq!(c, 0, "{v:#}");
    let (c, v) = run_umask0(&env, "backup-checkpoint", &["manual", "one"]);
    assert_eq!(c, 0, "{v:#}");
    assert!(v["stats"]["secrets_sealed"].as_u64() >= Some(1), "{v:#}");
    env.write(".zshrc", b"changed\n", 0o644);
    env.write(".ssh/id_ed25519", &noise(500, 8), 0o600);
    let (c, v) = run_umask0(&env, "backup-create", &[]);
    assert_eq!(c, 0, "{v:#}");
    let (c, v) = run_umask0(&env, "backup-rollback", &["one"]);
    assert_eq!(c, 0, "{v:#}");
    let (c, v) = run_umask0(&env, "backup-prune", &["--pin", "one"]);
    assert_eq!(c, 0, "{v:#}");
    let (c, v) = run_umask0(&env, "backup-rollback", &["--undo"]);
    assert_eq!(c, 0, "{v:#}");
    let (c, v) = run_umask0(&env, "backup-verify", &["--read-data"]);
    assert_eq!(c, 0, "{v:#}");

    // The repository itself: every directory 0700, every file 0600.
    let bad = exposed(&env.repo);
    assert!(
        bad.is_empty(),
        "group/other bits in the repository: {bad:?}"
    );
    assert!(env.repo.join("keys").is_dir(), "sealed secrets wrote keys/");
    assert!(env.repo.join("pins").is_dir(), "--pin wrote pins/");
    // The plain secret-id key copy and its directories.
    let key_dir = env.home.join(".local/state/dotfiles-backup");
    assert!(key_dir.is_dir());
    let bad = exposed(&key_dir);
    assert!(bad.is_empty(), "group/other bits in the key dir: {bad:?}");
    // The identity (private key) file.
    let id = env.home.join(".config/dotfiles-backup/identity.txt");
    let mode = std::fs::metadata(&id).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "identity file mode {mode:o}");
    // Secrets rolled back and undone come back 0600 even under umask 000.
    let mode = std::fs::metadata(env.home.join(".ssh/id_ed25519"))
        .unwrap()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_world_writable_repository_is_refused_by_every_command() {
    let env = TestEnv::with_dotfiles();
    let (c, v) = env.json("backup-checkpoint", &["manual", "one"]);
    assert_eq!(c, 0, "{v:#}");
    set_mode(&env.repo, 0o777);
    let before = env.repo_state();
    for (bin, args) in [
        ("backup-checkpoint", vec!["manual", "two"]),
        ("backup-create", vec![]),
        ("backup-list", vec![]),
        ("backup-verify", vec![]),
        (
            "backup-restore",
            vec!["one", "--target", "/nonexistent-dfb"],
        ),
        ("backup-rollback", vec!["one"]),
        ("backup-prune", vec![]),
    ] {
        let (c, v) = env.json(bin, &args);
        assert_eq!(c, 5, "{bin}: {v:#}");
        assert_eq!(v["errors"][0]["code"], "repository_world_writable", "{bin}");
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(env.repo.to_str().unwrap()),
            "{bin}: the message names the repository"
        );
    }
    assert_eq!(env.repo_state(), before, "nothing was written");
}

#[test]
fn a_repository_owned_by_another_user_is_refused() {
    if !is_root() {
        skip_unless_required(
            "root",
            "the foreign-owner test needs root to run as another uid",
        );
        return;
    }
    let env = TestEnv::with_dotfiles();
    let (c, v) = env.json("backup-checkpoint", &["manual", "one"]);
    assert_eq!(c, 0, "{v:#}");
    // The repository stays root's; the command runs as nobody (65534), whose
    // home is its own and readable.
    set_mode(env.tmp.path(), 0o755);
    set_mode(&env.repo, 0o755);
    for (rel, _) in walk(&env.home) {
        let p = env.home.join(std::ffi::OsStr::from_bytes(&rel));
        let _ = std::os::unix::fs::lchown(&p, Some(65534), Some(65534));
    }
    std::os::unix::fs::chown(&env.home, Some(65534), Some(65534)).unwrap();
    let before = env.repo_state();
    for (bin, args) in [
        ("backup-checkpoint", vec!["manual", "two"]),
        ("backup-list", vec![]),
        ("backup-verify", vec![]),
        ("backup-rollback", vec!["one"]),
    ] {
        let mut cmd = env.command(bin, &[&["--json"][..], &args[..]].concat(), &[]);
        cmd.uid(65534).gid(65534);
        let out = cmd.output().unwrap();
        let (c, v) = parse_envelope(&out);
        assert_eq!(c, 5, "{bin}: {v:#}");
        assert_eq!(v["errors"][0]["code"], "repository_foreign_owner", "{bin}");
    }
    assert_eq!(env.repo_state(), before);
    let meta = std::fs::metadata(&env.repo).unwrap();
    assert_eq!(meta.uid(), 0);
}
