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
    // The repository stays root's; the command runs as the unprivileged test
    // user, whose home is its own and readable.
    let id = common::unprivileged_id();
    set_mode(env.tmp.path(), 0o755);
    set_mode(&env.repo, 0o755);
    for (rel, _) in walk(&env.home) {
        let p = env.home.join(std::ffi::OsStr::from_bytes(&rel));
        let _ = std::os::unix::fs::lchown(&p, Some(id), Some(id));
    }
    std::os::unix::fs::chown(&env.home, Some(id), Some(id)).unwrap();
    let before = env.repo_state();
    for (bin, args) in [
        ("backup-checkpoint", vec!["manual", "two"]),
        ("backup-list", vec![]),
        ("backup-verify", vec![]),
        ("backup-rollback", vec!["one"]),
    ] {
        let mut cmd = env.command(bin, &[&["--json"][..], &args[..]].concat(), &[]);
        cmd.uid(id).gid(id);
        let out = cmd.output().unwrap();
        let (c, v) = parse_envelope(&out);
        assert_eq!(c, 5, "{bin}: {v:#}");
        assert_eq!(v["errors"][0]["code"], "repository_foreign_owner", "{bin}");
    }
    assert_eq!(env.repo_state(), before);
    let meta = std::fs::metadata(&env.repo).unwrap();
    assert_eq!(meta.uid(), 0);
}

/// Give the repository (every entry) to `uid`, as if that user had made it.
fn chown_tree(dir: &Path, uid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    for (rel, _) in walk(dir) {
        let p = dir.join(std::ffi::OsStr::from_bytes(&rel));
        std::os::unix::fs::lchown(&p, Some(uid), Some(uid)).unwrap();
    }
}

/// Issue 20: the owner of a repository chooses every byte, mode and owner in
/// it. Root refuses one it does not own like anyone else; with
/// `--allow-foreign-repo` it reads it but creates no setuid/setgid file and
/// gives nothing away by owner. From its own repository both still apply.
#[test]
fn root_refuses_a_foreign_repository_and_never_restores_its_setuid_bits() {
    if !is_root() {
        skip_unless_required(
            "root",
            "root's own reads and restores are what this test proves",
        );
        return;
    }
    let env = TestEnv::with_dotfiles();
    let tool = env.write("bin/tool", b"#!/bin/sh\necho planted\n", 0o755);
    set_mode(&tool, 0o4755);
    let data = env.write("bin/data", b"group data\n", 0o644);
    set_mode(&data, 0o2640);
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let (c, v) = env.json("backup-checkpoint", &["manual", "one", "--path", "~/bin"]);
    assert_eq!(c, 0, "{v:#}");
    let target_of = |name: &str| env.tmp.path().join(name);
    let mode_of = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;

    // Root's own repository: modes and owners as recorded (the control).
    let own = target_of("own");
    let (c, v) = env.json(
        "backup-restore",
        &["one", "--target", own.to_str().unwrap()],
    );
    assert_eq!(c, 0, "{v:#}");
    assert_eq!(mode_of(&own.join("bin/tool")), 0o4755);
    assert_eq!(mode_of(&own.join("bin/data")), 0o2640);
    assert_eq!(
        std::fs::metadata(own.join("bin/data")).unwrap().uid(),
        65534
    );

    // The same repository, now owned by nobody: refused by every command.
    chown_tree(&env.repo, 65534);
    let before = env.repo_state();
    let foreign = target_of("foreign");
    let foreign_s = foreign.to_str().unwrap();
    for (bin, args) in [
        ("backup-list", vec![]),
        ("backup-verify", vec![]),
        ("backup-restore", vec!["one", "--target", foreign_s]),
        ("backup-checkpoint", vec!["manual", "two"]),
    ] {
        let (c, v) = env.json(bin, &args);
        assert_eq!(c, 5, "{bin}: {v:#}");
        assert_eq!(v["errors"][0]["code"], "repository_foreign_owner", "{bin}");
        assert!(
            v["errors"][0]["hint"]
                .as_str()
                .unwrap()
                .contains("--allow-foreign-repo"),
            "{bin}: {v:#}"
        );
    }
    assert!(!foreign.exists(), "nothing was restored");
    assert_eq!(env.repo_state(), before, "nothing was written");

    // Explicitly allowed: restored, but no setuid/setgid bit and no owner from it.
    for (how, extra) in [("flag", vec!["--allow-foreign-repo"]), ("env", vec![])] {
        let dest = target_of(how);
        let mut args = vec!["one", "--target", dest.to_str().unwrap()];
        args.extend(extra);
        let envs: &[(&str, &str)] = if how == "env" {
            &[("BACKUP_ALLOW_FOREIGN_REPO", "1")]
        } else {
            &[]
        };
        let (c, v, _) = env.run("backup-restore", &args, envs);
        assert_eq!(c, 0, "{how}: {v:#}");
        assert_eq!(mode_of(&dest.join("bin/tool")), 0o755, "{how}");
        assert_eq!(mode_of(&dest.join("bin/data")), 0o640, "{how}");
        let m = std::fs::metadata(dest.join("bin/data")).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (0, 0),
            "{how}: owned by the restoring user"
        );
        assert_eq!(
            std::fs::read(dest.join("bin/tool")).unwrap(),
            b"#!/bin/sh\necho planted\n"
        );
    }
}

/// Issue 20: root checkpoints a home it does not own, whose owner has made
/// directories *above* tracked roots into symlinks to root-only places
/// (`~/.ssh -> /root/.ssh`). The paths of roots in that home are resolved
/// beneath it, so none of those bytes is stored, while a stow-style symlink
/// that stays inside the home is followed as before.
#[test]
fn root_never_follows_a_home_symlink_out_of_a_home_it_does_not_own() {
    if !is_root() {
        skip_unless_required(
            "root",
            "root's own reads and restores are what this test proves",
        );
        return;
    }
    let env = TestEnv::new();
    let private = env.tmp.path().join("root-only");
    let ssh_bytes = noise(300, 41);
    let app_bytes = noise(300, 42);
    std::fs::create_dir_all(private.join("ssh")).unwrap();
    std::fs::create_dir_all(private.join("config/app")).unwrap();
    std::fs::write(private.join("ssh/config"), &ssh_bytes).unwrap();
    std::fs::write(private.join("config/app/settings"), &app_bytes).unwrap();
    set_mode(&private, 0o700);
    std::os::unix::fs::symlink(private.join("ssh"), env.home.join(".ssh")).unwrap();
    std::os::unix::fs::symlink(private.join("config"), env.home.join(".config")).unwrap();
    // A stow-folded directory: a relative symlink inside the home.
    env.write("dotfiles/vim/vimrc", b"set number\n", 0o644);
    std::os::unix::fs::symlink("dotfiles/vim", env.home.join(".vim")).unwrap();
    chown_tree(&env.home, 65534);
    let (c, v) = env.json(
        "backup-checkpoint",
        &[
            "manual",
            "one",
            "--path",
            "~/.ssh/config",
            "--path",
            "~/.config/app",
            "--path",
            "~/.vim/vimrc",
        ],
    );
    assert_eq!(c, 3, "{v:#}");
    let refused: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["code"] == "file_changed")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(refused.len(), 2, "{v:#}");
    for (rel, bytes) in common::all_file_bytes(&env.repo) {
        for secret in [&ssh_bytes, &app_bytes] {
            assert!(
                !bytes
                    .windows(32)
                    .any(|w| secret.windows(32).any(|s| s == w)),
                "root-only bytes stored in {}",
                rel.display()
            );
        }
    }
    let (c, v) = env.json("backup-list", &["one", "--files"]);
    assert_eq!(c, 0, "{v:#}");
    let vimrc = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        // A root below a symlinked directory is tracked where it really is
        // (issue 19): the stow package's file.
        .find(|e| e["path"] == "~/dotfiles/vim/vimrc")
        .expect("the stow-folded file is listed");
    assert_eq!(
        vimrc["sha256"],
        common::sha256_hex(b"set number\n"),
        "{vimrc:#}"
    );
}
