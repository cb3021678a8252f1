//! A repository that cannot be written (issue 16, "read-only use"): a backup
//! drive mounted read-only, or a repository without write permission.
//! `backup-list`, `backup-verify` and `backup-restore SNAP --target DIR` work
//! and leave the repository byte for byte as it was; the writers
//! (checkpoint, prune, rollback, restore in place) fail with
//! `repository_read_only`, exit 8, naming the repository, and change nothing.
//!
//! As root, permission bits stop no write, so the mount case uses a real
//! read-only bind mount in a private mount namespace (`unshare -m`; `-rm`
//! when not root); the permission case runs the binaries as `nobody`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_trees_equal, exe, is_root, skip_unless_required, TestEnv};
use serde_json::Value;

/// Every command the read-only case runs, with its expected exit code.
const STEPS: [(&str, &str, i32); 7] = [
    ("list", "backup-list", 0),
    ("verify", "backup-verify --read-data", 0),
    ("restore", "backup-restore one --target \"$T/restored\"", 0),
    ("checkpoint", "backup-checkpoint manual two", 8),
    ("prune", "backup-prune", 8),
    ("rollback", "backup-rollback one", 8),
    ("inplace", "backup-restore one --overwrite always", 8),
];

/// A home checkpointed once as `one`, then edited (so that a rollback would
/// have something to do), and the copy of the home as it was at `one`.
fn prepared() -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::with_dotfiles();
    let (c, v) = env.json("backup-checkpoint", &["manual", "one"]);
    assert_eq!(c, 0, "{v:#}");
    let at_one = env.tmp.path().join("at-one");
    common::copy_tree(&env.home, &at_one);
    std::fs::write(env.home.join(".zshrc"), b"changed\n").unwrap();
    (env, at_one)
}

/// The script that makes the repository read-only (`setup`) and runs every
/// step with `--json`, writing `$T/NAME.json` and `NAME=CODE` lines.
fn script(env: &TestEnv, setup: &str) -> String {
    let bins = Path::new(exe("backup-list")).parent().unwrap();
    let mut s = format!(
        "set -u; T='{t}'; R='{repo}'; export PATH='{bins}':\"$PATH\" HOME='{home}' BACKUP_REPO=\"$R\" BACKUP_PACKAGES=0\n{setup}\n",
        t = env.tmp.path().display(),
        repo = env.repo.display(),
        bins = bins.display(),
        home = env.home.display(),
    );
    for (name, cmd, _) in STEPS {
        s.push_str(&format!(
            "{cmd} --json --wait 0 > \"$T/{name}.json\"; echo \"{name}=$?\"\n"
        ));
    }
    s
}

/// Check every step's exit code and envelope, the restored tree, the
/// untouched home and the untouched repository.
fn check(
    env: &TestEnv,
    at_one: &Path,
    out: &std::process::Output,
    before: &std::collections::BTreeMap<Vec<u8>, (u32, Vec<u8>)>,
) {
    let out = &String::from_utf8_lossy(&out.stdout);
    for (name, _, want) in STEPS {
        let code: i32 = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .parse()
            .unwrap();
        let v: Value = serde_json::from_slice(
            &std::fs::read(env.tmp.path().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{name}: not one JSON envelope: {e}"));
        common::assert_valid_envelope(&v);
        assert_eq!(code, want, "{name}: {v:#}");
        assert_eq!(v["exit_code"], want, "{name}: {v:#}");
        if want == 8 {
            let e = &v["errors"][0];
            assert_eq!(e["code"], "repository_read_only", "{name}: {v:#}");
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains(env.repo.to_str().unwrap()),
                "{name}: the message names the repository: {e:#}"
            );
        }
        if name == "restore" {
            let codes: Vec<&str> = v["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|w| w["code"].as_str())
                .collect();
            assert!(codes.contains(&"read_only_repository"), "{v:#}");
            assert!(v["snapshot"].is_null(), "no safety snapshot: {v:#}");
        }
    }
    assert_trees_equal(at_one, &env.tmp.path().join("restored"));
    assert_eq!(
        std::fs::read(env.home.join(".zshrc")).unwrap(),
        b"changed\n",
        "the home was not touched"
    );
    assert!(
        env.repo_state() == *before,
        "the repository is byte for byte as it was"
    );
}

#[test]
fn read_only_bind_mount() {
    let (env, at_one) = prepared();
    let before = env.repo_state();
    let setup = "mount --bind \"$R\" \"$R\" && mount -o remount,bind,ro \"$R\" || exit 99\n\
                 touch \"$R/probe\" 2>/dev/null && exit 98";
    let ns = if is_root() { "-m" } else { "-rm" };
    let out = Command::new("unshare")
        .args([ns, "sh", "-c", &script(&env, setup)])
        .output()
        .unwrap();
    if out.status.code() == Some(99) {
        skip_unless_required(
            "mount",
            &format!(
                "a read-only bind mount needs `unshare {ns}` and mount, which failed here: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        );
        return;
    }
    assert_ne!(
        out.status.code(),
        Some(98),
        "the bind mount is not read-only"
    );
    check(&env, &at_one, &out, &before);
}

#[test]
fn repository_without_write_permission() {
    let (env, at_one) = prepared();
    let env = env.unprivileged();
    let before = env.repo_state();
    // Directories r-x, files r--: the owner (nobody when run as root) can read only.
    let setup = "chmod -R a-w \"$R\" || exit 99";
    let out = env
        .program("sh")
        .args(["-c", &script(&env, setup)])
        .output()
        .unwrap();
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&env.repo)
        .status();
    assert_ne!(out.status.code(), Some(99), "{out:?}");
    check(&env, &at_one, &out, &before);
}

#[test]
fn read_only_restore_replaces_nothing_and_warns_without_a_lock_file() {
    let (env, _) = prepared();
    let target = env.tmp.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join(".zshrc"), b"mine\n").unwrap();
    // A repository copied without its lock file onto read-only media.
    std::fs::remove_file(env.repo.join("lock")).unwrap();
    let env = env.unprivileged();
    let before = env.repo_state();
    Command::new("chmod")
        .args(["-R", "a-w"])
        .arg(&env.repo)
        .status()
        .unwrap();
    let t = target.to_str().unwrap();
    let (c, v, _) = env.run(
        "backup-restore",
        &["one", "--target", t, "--overwrite", "always"],
        &[],
    );
    assert_eq!(
        c, 5,
        "replacing without a safety snapshot is refused: {v:#}"
    );
    assert_eq!(v["errors"][0]["code"], "no_safety_snapshot", "{v:#}");
    assert_eq!(std::fs::read(target.join(".zshrc")).unwrap(), b"mine\n");
    // Only additions: allowed, with both warnings naming what they are about.
    std::fs::remove_file(target.join(".zshrc")).unwrap();
    let (c, v, _) = env.run("backup-restore", &["one", "--target", t], &[]);
    Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&env.repo)
        .status()
        .unwrap();
    assert_eq!(c, 0, "{v:#}");
    let warning = |code: &str| {
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["code"] == code)
            .unwrap_or_else(|| panic!("no {code}: {v:#}"))
            .clone()
    };
    assert!(warning("lock_unavailable")["message"]
        .as_str()
        .unwrap()
        .contains(env.repo.join("lock").to_str().unwrap()));
    warning("read_only_repository");
    assert_eq!(
        std::fs::read(target.join(".zshrc")).unwrap(),
        b"export EDITOR=nvim\n"
    );
    assert!(
        env.repo_state() == before,
        "nothing written into the repository"
    );
}
