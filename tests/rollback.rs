//! Restore and rollback through the real binaries: the round trip that
//! matters most (every byte, mode, type, symlink target, mtime and odd name
//! comes back), undo, dry runs that write nothing, subsets, conflicts, and
//! attacks with crafted repositories and planted symlinks.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{set_mode, TestEnv as Env};

/// The plain facts of every path under `dir` (see [`describe`]).
fn walk_describe(base: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p
            .strip_prefix(base)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("symlink -> {:?}", std::fs::read_link(&p).unwrap())
        } else if m.is_dir() {
            "dir".to_string()
        } else {
            let bytes = std::fs::read(&p).unwrap();
            format!(
                "file {} bytes sha {}",
                bytes.len(),
                dotfiles_backup::hash::Hash::of(&bytes).short()
            )
        };
        let mode = if m.file_type().is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        out.insert(
            rel,
            format!(
                "{what} mode {mode:o} mtime {}.{:09}",
                m.mtime(),
                m.mtime_nsec()
            ),
        );
        if m.is_dir() {
            walk_describe(base, &p, out);
        }
    }
}

/// Extended attributes a snapshot records (`user.*`, POSIX ACLs), read
/// with the system calls directly, sorted: `name=hex(value)`.
fn xattrs_of(p: &Path) -> String {
    let mut buf = vec![0u8; 1 << 16];
    let n = match rustix::fs::llistxattr(p, &mut buf[..]) {
        Ok(n) => n,
        Err(_) => return String::new(),
    };
    let mut names: Vec<&[u8]> = buf[..n]
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(b"user.") || n.starts_with(b"system.posix_acl_"))
        .collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let mut v = vec![0u8; 1 << 16];
        let len = rustix::fs::lgetxattr(p, OsStr::from_bytes(name), &mut v[..]).unwrap();
        out += &format!(
            " {}={}",
            String::from_utf8_lossy(name),
            hex::encode(&v[..len])
        );
    }
    out
}

/// type, mode, content or target, mtime, extended attributes, which
/// earlier path a file is a hard link of, whether it has holes — for every
/// path under `root`.
fn describe(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    walk_describe(root, root, &mut out);
    // Hard links: every later path of an inode names the first one.
    for (rel, what) in out.iter_mut() {
        let m = std::fs::symlink_metadata(root.join(OsStr::from_bytes(rel))).unwrap();
        if m.is_file() && m.nlink() > 1 {
            match inodes.get(&m.ino()) {
                Some(first) => *what += &format!(" link of {:?}", String::from_utf8_lossy(first)),
                None => {
                    inodes.insert(m.ino(), rel.clone());
                }
            }
        }
        if m.is_file() && m.len() >= 64 << 10 && m.blocks() * 512 < m.len() / 2 {
            *what += " sparse";
        }
        if !m.file_type().is_symlink() {
            *what += &xattrs_of(&root.join(OsStr::from_bytes(rel)));
        }
    }
    out
}

fn assert_same(a: &BTreeMap<Vec<u8>, String>, b: &BTreeMap<Vec<u8>, String>) {
    if a != b {
        let mut diff = String::new();
        for (k, v) in a {
            if b.get(k) != Some(v) {
                diff += &format!("{:?}: {v} vs {:?}\n", String::from_utf8_lossy(k), b.get(k));
            }
        }
        for k in b.keys().filter(|k| !a.contains_key(*k)) {
            diff += &format!("{:?}: missing vs {:?}\n", String::from_utf8_lossy(k), b[k]);
        }
        panic!("trees differ:\n{diff}");
    }
}

/// A tree with every kind of entry the issue names.
fn build(home: &Path) {
    let c = home.join(".config");
    std::fs::create_dir_all(c.join("app/deep/er")).unwrap();
    std::fs::create_dir_all(c.join("empty")).unwrap();
    std::fs::write(home.join(".zshrc"), b"export EDITOR=nvim\n").unwrap();
    std::fs::write(c.join("app/empty-file"), b"").unwrap();
    std::fs::write(c.join("app/deep/er/x.toml"), b"x = 1\n").unwrap();
    let big: Vec<u8> = (0..5_500_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(c.join("app/big.bin"), &big).unwrap();
    std::fs::write(c.join("app/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    set_mode(&c.join("app/run.sh"), 0o755);
    std::fs::write(c.join("app/private"), b"p").unwrap();
    set_mode(&c.join("app/private"), 0o600);
    std::fs::write(c.join("app/readonly"), b"r").unwrap();
    set_mode(&c.join("app/readonly"), 0o444);
    std::fs::write(c.join("app/odd"), b"o").unwrap();
    set_mode(&c.join("app/odd"), 0o751);
    symlink("deep/er/x.toml", c.join("app/rel-link")).unwrap();
    symlink("/etc/hostname", c.join("app/abs-link")).unwrap();
    symlink("does/not/exist", c.join("app/dangling")).unwrap();
    std::fs::write(
        c.join(OsStr::from_bytes(b"caf\xe9-latin1")),
        b"non-utf8 name",
    )
    .unwrap();
    std::fs::write(c.join("with space\nand newline"), b"odd").unwrap();
    set_mode(&c.join("app/deep"), 0o750);
}

/// Damage it every way: edit, delete, add, chmod, file→symlink, dir→file, symlink→dir.
fn damage(home: &Path) {
    let c = home.join(".config");
    std::fs::write(home.join(".zshrc"), b"broken by a bad phase\n").unwrap();
    std::fs::remove_file(c.join("app/deep/er/x.toml")).unwrap();
    std::fs::write(c.join("app/new-file"), b"new").unwrap();
    std::fs::create_dir_all(c.join("newdir/sub")).unwrap();
    std::fs::write(c.join("newdir/sub/f"), b"f").unwrap();
    set_mode(&c.join("app/run.sh"), 0o644);
    std::fs::remove_file(c.join("app/private")).unwrap();
    symlink("/etc/passwd", c.join("app/private")).unwrap();
    std::fs::remove_dir(c.join("empty")).unwrap();
    std::fs::write(c.join("empty"), b"now a file").unwrap();
    std::fs::remove_file(c.join("app/rel-link")).unwrap();
    std::fs::create_dir(c.join("app/rel-link")).unwrap();
    std::fs::write(c.join("app/rel-link/inside"), b"i").unwrap();
    std::fs::write(c.join("app/big.bin"), b"truncated").unwrap();
    std::fs::remove_file(c.join(OsStr::from_bytes(b"caf\xe9-latin1"))).unwrap();
}

#[test]
fn rollback_restores_every_byte_mode_type_target_and_mtime_then_undo_restores_damage() {
    let e = Env::new();
    build(&e.home);
    let before = describe(&e.home);
    e.checkpoint("before", &["~/.zshrc", "~/.config"]);
    damage(&e.home);
    let damaged = describe(&e.home);
    assert_ne!(before, damaged);

    let (rc, v) = e.json("backup-rollback", &["before"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["changed"], true);
    assert_eq!(v["snapshot"]["kind"], "safety");
    assert_eq!(v["stats"]["failed"], 0);
    assert_same(&describe(&e.home), &before);

    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0, "{v}");
    assert_same(&describe(&e.home), &damaged);

    // Undo of the undo returns to the rolled-back state.
    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0, "{v}");
    assert_same(&describe(&e.home), &before);

    let (rc, v) = e.json("backup-verify", &["--read-data"]);
    assert_eq!(rc, 0, "{v}");
}

#[test]
fn dry_run_writes_nothing_and_prints_the_plan() {
    let e = Env::new();
    build(&e.home);
    e.checkpoint("before", &["~/.zshrc", "~/.config"]);
    damage(&e.home);
    let home_before = describe(&e.home);
    let repo_before = describe(&e.repo);
    let (rc, v) = e.json("backup-rollback", &["before", "--dry-run"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["changed"], false);
    let actions = v["plan"]["actions"].as_array().unwrap();
    let has = |action: &str, suffix: &str| {
        actions
            .iter()
            .any(|a| a["action"] == action && a["path"].as_str().unwrap().ends_with(suffix))
    };
    assert!(has("update", ".zshrc"));
    assert!(has("create", "app/deep/er/x.toml"));
    assert!(has("delete", "newdir/sub/f"));
    assert!(has("metadata", "app/run.sh"));
    assert!(
        has("update", "app/private"),
        "file→symlink must be an update: {actions:?}"
    );
    assert!(actions
        .iter()
        .all(|a| a["reason"].is_string() && a["bytes"].is_u64()));
    assert_same(&describe(&e.home), &home_before);
    assert_same(&describe(&e.repo), &repo_before);
}

#[test]
fn subset_rollback_touches_only_named_paths_and_keep_new_keeps_new_files() {
    let e = Env::new();
    build(&e.home);
    e.checkpoint("before", &["~/.zshrc", "~/.config"]);
    damage(&e.home);
    let damaged = describe(&e.home);
    let (rc, v) = e.json("backup-rollback", &["before", "--path", "~/.zshrc"]);
    assert_eq!(rc, 0, "{v}");
    let now = describe(&e.home);
    assert_eq!(
        std::fs::read(e.home.join(".zshrc")).unwrap(),
        b"export EDITOR=nvim\n"
    );
    for (k, val) in &damaged {
        if k.as_slice() != b".zshrc" {
            assert_eq!(
                now.get(k),
                Some(val),
                "{:?} changed",
                String::from_utf8_lossy(k)
            );
        }
    }
    let (rc, v) = e.json("backup-rollback", &["before", "--keep-new"]);
    assert_eq!(rc, 0, "{v}");
    assert!(e.home.join(".config/newdir/sub/f").exists());
    assert!(e.home.join(".config/app/new-file").exists());
    assert_eq!(
        std::fs::read(e.home.join(".config/app/deep/er/x.toml")).unwrap(),
        b"x = 1\n"
    );
}

#[test]
fn restore_refuses_conflicts_then_overwrites_on_request_and_never_deletes() {
    let e = Env::new();
    build(&e.home);
    e.checkpoint("before", &["~/.zshrc", "~/.config"]);
    damage(&e.home);
    let damaged = describe(&e.home);
    let (rc, v) = e.json("backup-restore", &["before"]);
    assert_eq!(rc, 5, "{v}");
    assert_eq!(v["errors"][0]["code"], "conflicts");
    assert_same(&describe(&e.home), &damaged);

    let (rc, v) = e.json("backup-restore", &["before", "--overwrite", "if-changed"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        std::fs::read(e.home.join(".zshrc")).unwrap(),
        b"export EDITOR=nvim\n"
    );
    assert!(
        e.home.join(".config/newdir/sub/f").exists(),
        "restore must never delete"
    );
    assert!(
        e.home.join(".config/app/rel-link/inside").exists(),
        "restore must never delete"
    );
    let skipped = v["plan"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["action"] == "skip" && a["path"].as_str().unwrap().ends_with("rel-link"));
    assert!(
        skipped,
        "a non-empty directory is reported, not replaced: {v}"
    );

    // Into another directory.
    let target = e.home.parent().unwrap().join("restored");
    let (rc, v) = e.json(
        "backup-restore",
        &["before", "--target", target.to_str().unwrap()],
    );
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        std::fs::read(target.join(".zshrc")).unwrap(),
        b"export EDITOR=nvim\n"
    );
    assert_eq!(
        std::fs::read(
            target
                .join(".config")
                .join(OsStr::from_bytes(b"caf\xe9-latin1"))
        )
        .unwrap(),
        b"non-utf8 name"
    );
}

#[test]
fn planted_symlink_in_home_does_not_redirect_writes() {
    let e = Env::new();
    std::fs::create_dir_all(e.home.join(".config/nvim")).unwrap();
    std::fs::write(e.home.join(".config/nvim/init.lua"), b"good").unwrap();
    e.checkpoint("before", &["~/.config"]);
    let outside = e.home.parent().unwrap().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"outside content").unwrap();
    std::fs::remove_dir_all(e.home.join(".config/nvim")).unwrap();
    symlink(&outside, e.home.join(".config/nvim")).unwrap();
    let outside_before = describe(&outside);
    let (rc, v) = e.json("backup-rollback", &["before"]);
    assert_eq!(rc, 0, "{v}");
    assert_same(&describe(&outside), &outside_before);
    assert!(!outside.join("init.lua").exists());
    let meta = std::fs::symlink_metadata(e.home.join(".config/nvim")).unwrap();
    assert!(
        meta.is_dir(),
        "the planted symlink is replaced by the real directory"
    );
    assert_eq!(
        std::fs::read(e.home.join(".config/nvim/init.lua")).unwrap(),
        b"good"
    );
}

/// Write a tree and record by hand, as an attacker with write access to the repository could.
fn plant_snapshot(repo: &Path, tree_json: &str, label: &str) {
    let bytes = tree_json.as_bytes();
    let tree_id = dotfiles_backup::hash::Hash::of(bytes);
    std::fs::write(
        repo.join("trees")
            .join(format!("{}.json", tree_id.to_hex())),
        bytes,
    )
    .unwrap();
    let record = serde_json::json!({
        "version": 1, "kind": "checkpoint", "label": label, "tags": [], "parent": null,
        "host": "h", "user": "u", "created_at": "2099-01-01T00:00:00.000000000Z",
        "tree": tree_id.to_hex(), "roots": ["~/.config"],
        "summary": {"files": 1, "dirs": 1, "symlinks": 0, "bytes": 1, "new_bytes": 0, "new_blobs": 0, "omitted": 0}
    });
    let rb = serde_json::to_vec_pretty(&record).unwrap();
    let rid = dotfiles_backup::hash::Hash::of(&rb);
    std::fs::write(
        repo.join("snapshots")
            .join(format!("{}.json", rid.to_hex())),
        rb,
    )
    .unwrap();
}

/// A tree written before extended attributes were recorded says nothing
/// about them: rolling back to it keeps an ACL the file has now (removing
/// it and applying the stored mode, whose group bits were the mask, would
/// give the owning group rw- where the ACL gave r--), also when the
/// content is rewritten.
#[test]
fn a_snapshot_from_before_acls_were_recorded_never_drops_one() {
    let e = Env::new();
    let ssh = e.home.join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    set_mode(&ssh, 0o700);
    let cfg = ssh.join("config");
    std::fs::write(&cfg, b"Host *\n").unwrap();
    set_mode(&cfg, 0o640);
    let acl = property::acl(4, 6, 6);
    rustix::fs::lsetxattr(
        &cfg,
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let m = std::fs::symlink_metadata(&cfg).unwrap();
    let d = std::fs::symlink_metadata(&ssh).unwrap();
    let old = |body: &[u8]| {
        let sha = dotfiles_backup::hash::Hash::of(body).to_hex();
        format!(
            r#"{{"version":1,"roots":[{{"root":"~/.ssh","present":true,"entries":[{{"path":"","type":"dir","mode":448,"uid":{u},"gid":{g},"mtime_ns":{dm},"size":0}},{{"path":"config","type":"file","mode":{mode},"uid":{u},"gid":{g},"mtime_ns":{fm},"size":{n},"sha256":"{sha}"}}]}}]}}"#,
            u = m.uid(),
            g = m.gid(),
            dm = d.mtime() * 1_000_000_000 + d.mtime_nsec(),
            mode = m.mode() & 0o7777,
            fm = m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            n = body.len(),
        )
    };
    // The content must be in the repository: a real checkpoint stores it.
    e.checkpoint("real", &["~/.ssh"]);
    plant_snapshot(&e.repo, &old(b"Host *\n"), "old-format");
    let (rc, v) = e.json("backup-rollback", &["old-format"]);
    assert_eq!(rc, 0, "{v}");
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(&cfg, "system.posix_acl_access", &mut buf[..]).expect("ACL kept");
    assert_eq!(&buf[..n], &acl[..]);
    // Content rewritten by the rollback: the new file gets the ACL it has now.
    std::fs::write(&cfg, b"Host * edited\n").unwrap();
    rustix::fs::lsetxattr(
        &cfg,
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let (rc, v) = e.json("backup-rollback", &["old-format"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(&cfg).unwrap(), b"Host *\n");
    let n = rustix::fs::lgetxattr(&cfg, "system.posix_acl_access", &mut buf[..]).expect("ACL kept");
    assert_eq!(&buf[..n], &acl[..]);
    assert_eq!(
        std::fs::symlink_metadata(&cfg).unwrap().mode() & 0o7777,
        0o660
    );
}

#[test]
fn crafted_manifests_are_refused_and_nothing_outside_changes() {
    let e = Env::new();
    std::fs::create_dir_all(e.home.join(".config")).unwrap();
    std::fs::write(e.home.join(".config/a"), b"a").unwrap();
    e.checkpoint("real", &["~/.config"]);
    let parent = e.home.parent().unwrap().to_path_buf();
    let sha = dotfiles_backup::hash::Hash::of(b"a").to_hex();
    let dir = r#"{"path":"","type":"dir","mode":493,"uid":0,"gid":0,"mtime_ns":0,"size":0}"#;
    let cases = [
        (
            "dotdot",
            format!(
                r#"{{"path":"../../escape","type":"file","mode":420,"uid":0,"gid":0,"mtime_ns":0,"size":1,"sha256":"{sha}"}}"#
            ),
            "~/.config",
        ),
        (
            "absolute",
            format!(
                r#"{{"path":"/tmp/escape","type":"file","mode":420,"uid":0,"gid":0,"mtime_ns":0,"size":1,"sha256":"{sha}"}}"#
            ),
            "~/.config",
        ),
        (
            "inner-dotdot",
            format!(
                r#"{{"path":"x/../../../escape","type":"file","mode":420,"uid":0,"gid":0,"mtime_ns":0,"size":1,"sha256":"{sha}"}}"#
            ),
            "~/.config",
        ),
        (
            "nul",
            format!(
                r#"{{"path":"a\u0000b","type":"file","mode":420,"uid":0,"gid":0,"mtime_ns":0,"size":1,"sha256":"{sha}"}}"#
            ),
            "~/.config",
        ),
        (
            "root-escape",
            format!(
                r#"{{"path":"escape","type":"file","mode":420,"uid":0,"gid":0,"mtime_ns":0,"size":1,"sha256":"{sha}"}}"#
            ),
            "~/../escape-root",
        ),
        (
            "root-outside-home",
            format!(
                r#"{{"path":"escape","type":"file","mode":420,"uid":0,"gid":0,"mtime_ns":0,"size":1,"sha256":"{sha}"}}"#
            ),
            "/tmp/dfb-escape-root",
        ),
    ];
    let parent_before = describe(&parent);
    for (i, (name, entry, root)) in cases.iter().enumerate() {
        let tree = format!(
            r#"{{"version":1,"roots":[{{"root":"{root}","present":true,"entries":[{dir},{entry}]}}]}}"#
        );
        let label = format!("evil-{i}");
        plant_snapshot(&e.repo, &tree, &label);
        for bin in ["backup-rollback", "backup-restore"] {
            let mut args = vec![label.as_str()];
            if bin == "backup-restore" {
                args.extend(["--overwrite", "always"]);
            }
            let (rc, v) = e.json(bin, &args);
            assert!(rc == 6 || rc == 5, "{name} via {bin}: rc {rc}: {v}");
            assert_eq!(v["status"], "failed", "{name}");
        }
    }
    // Only the repository (new snapshot files) may differ under the parent.
    let after = describe(&parent);
    for (k, v) in &parent_before {
        if !k.starts_with(b"repo") {
            assert_eq!(
                after.get(k),
                Some(v),
                "{:?} changed",
                String::from_utf8_lossy(k)
            );
        }
    }
    for k in after.keys() {
        assert!(
            k.starts_with(b"repo") || parent_before.contains_key(k),
            "{:?} appeared",
            String::from_utf8_lossy(k)
        );
    }
    assert!(!Path::new("/tmp/escape").exists());
    assert!(!Path::new("/tmp/dfb-escape-root").exists());
}

#[test]
fn corrupt_blob_is_never_written_into_home() {
    let e = Env::new();
    std::fs::create_dir_all(e.home.join(".config")).unwrap();
    std::fs::write(e.home.join(".config/a"), b"original content A").unwrap();
    std::fs::write(e.home.join(".config/b"), b"original content B").unwrap();
    e.checkpoint("before", &["~/.config"]);
    // Flip a byte inside blob "a" in its pack.
    let pack = std::fs::read_dir(e.repo.join("packs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&pack).unwrap();
    let pos = bytes
        .windows(18)
        .position(|w| w == b"original content A")
        .unwrap();
    bytes[pos] ^= 0x20;
    std::fs::write(&pack, &bytes).unwrap();
    std::fs::write(e.home.join(".config/a"), b"changed").unwrap();
    std::fs::write(e.home.join(".config/b"), b"changed").unwrap();
    let (rc, v) = e.json("backup-rollback", &["before"]);
    assert_eq!(rc, 3, "{v}");
    assert_eq!(v["status"], "partial");
    assert!(v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["code"] == "corrupt_blob"));
    assert_eq!(
        std::fs::read(e.home.join(".config/a")).unwrap(),
        b"changed",
        "corrupt content must not land"
    );
    assert_eq!(
        std::fs::read(e.home.join(".config/b")).unwrap(),
        b"original content B"
    );
    let (rc, _) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0);
    assert_eq!(std::fs::read(e.home.join(".config/b")).unwrap(), b"changed");
}

#[test]
fn safety_snapshots_are_listed_restorable_and_bounded() {
    let e = Env::new();
    std::fs::write(e.home.join(".zshrc"), b"v0").unwrap();
    e.checkpoint("base", &["~/.zshrc"]);
    for i in 1..=7 {
        std::fs::write(e.home.join(".zshrc"), format!("v{i}")).unwrap();
        let (rc, v) = e.json("backup-rollback", &["base"]);
        assert_eq!(rc, 0, "{v}");
    }
    let (_, v) = e.json("backup-list", &["--kind", "safety"]);
    let safety = v["snapshots"].as_array().unwrap();
    assert_eq!(safety.len(), 5, "newest 5 safety snapshots kept");
    let newest = safety.last().unwrap()["short_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (rc, v) = e.json("backup-restore", &[&newest, "--overwrite", "if-changed"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(e.home.join(".zshrc")).unwrap(), b"v7");
}

#[test]
fn undo_without_history_and_unknown_snapshot_are_clear_errors() {
    let e = Env::new();
    std::fs::write(e.home.join(".zshrc"), b"x").unwrap();
    e.checkpoint("base", &["~/.zshrc"]);
    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 1);
    assert_eq!(v["errors"][0]["code"], "nothing_to_undo");
    let (rc, v) = e.json("backup-rollback", &["no-such-label"]);
    assert_eq!(rc, 1);
    assert_eq!(v["errors"][0]["code"], "snapshot_not_found");
    let (rc, v) = e.json("backup-rollback", &[]);
    assert_eq!(rc, 2, "{v}");
}

mod property {
    use super::*;
    use proptest::prelude::*;

    /// Extended attributes of a file: `user.*` ones and maybe an access ACL.
    type Xattrs = Vec<(&'static str, Vec<u8>)>;

    #[derive(Debug, Clone)]
    enum Node {
        File(Vec<u8>, u32, Xattrs),
        Link(Vec<u8>),
        Dir,
        /// A hard link of the n-th file made so far (modulo their number).
        HardLink(usize),
        /// A file of this many KiB with data only in its first block.
        Sparse(u64),
    }

    /// A `system.posix_acl_access` value (the kernel's encoding) with a
    /// named user `nobody` and the given group, mask and named-user bits.
    pub(super) fn acl(group: u16, mask: u16, named: u16) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (0x02, named, 65534),
            (0x04, group, u32::MAX),
            (0x10, mask, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            v.extend(tag.to_le_bytes());
            v.extend(perm.to_le_bytes());
            v.extend(id.to_le_bytes());
        }
        v
    }

    fn xattrs() -> impl Strategy<Value = Xattrs> {
        (
            prop::collection::vec(
                (
                    prop::sample::select(vec!["user.a", "user.mime_type", "user.xdg.origin.url"]),
                    prop::collection::vec(any::<u8>(), 0..40),
                ),
                0..3,
            ),
            prop::option::of((0u16..8, 0u16..8, 0u16..8)),
        )
            .prop_map(|(mut user, acl_bits)| {
                user.sort_by_key(|(n, _)| *n);
                user.dedup_by_key(|(n, _)| *n);
                if let Some((g, m, n)) = acl_bits {
                    user.push(("system.posix_acl_access", acl(g, m, n)));
                }
                user
            })
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b'a'),
                Just(b'b'),
                Just(b' '),
                Just(0xffu8),
                Just(b'.'),
                Just(b'\n')
            ],
            1..4,
        )
        .prop_filter("not . or ..", |n| n != b"." && n != b"..")
    }

    fn node() -> impl Strategy<Value = Node> {
        prop_oneof![
            3 => (
                prop::collection::vec(any::<u8>(), 0..300),
                prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o444)],
                xattrs(),
            )
                .prop_map(|(c, m, x)| Node::File(c, m, x)),
            1 => name().prop_map(Node::Link),
            1 => Just(Node::Dir),
            1 => any::<usize>().prop_map(Node::HardLink),
            1 => (64u64..512).prop_map(Node::Sparse),
        ]
    }

    fn layout() -> impl Strategy<Value = Vec<(Vec<Vec<u8>>, Node)>> {
        prop::collection::vec((prop::collection::vec(name(), 1..3), node()), 1..12)
    }

    fn materialize(root: &Path, items: &[(Vec<Vec<u8>>, Node)]) {
        std::fs::create_dir_all(root).unwrap();
        let mut files: Vec<std::path::PathBuf> = Vec::new();
        for (path, node) in items {
            let mut p = root.to_path_buf();
            let mut ok = true;
            for comp in &path[..path.len() - 1] {
                p.push(OsStr::from_bytes(comp));
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        ok = false;
                        break;
                    }
                    Err(_) => std::fs::create_dir(&p).unwrap(),
                }
            }
            if !ok {
                continue;
            }
            p.push(OsStr::from_bytes(path.last().unwrap()));
            if std::fs::symlink_metadata(&p).is_ok() {
                continue;
            }
            match node {
                Node::File(c, m, x) => {
                    std::fs::write(&p, c).unwrap();
                    set_mode(&p, *m);
                    // After the mode: an ACL sets the group bits to its mask.
                    for (name, value) in x {
                        rustix::fs::setxattr(&p, *name, value, rustix::fs::XattrFlags::empty())
                            .unwrap();
                    }
                    files.push(p);
                }
                Node::Link(t) => symlink(OsStr::from_bytes(t), &p).unwrap(),
                Node::Dir => std::fs::create_dir(&p).unwrap(),
                Node::HardLink(i) if !files.is_empty() => {
                    let peer = files[i % files.len()].clone();
                    // A peer replaced by a later item is no file any more.
                    if std::fs::symlink_metadata(&peer).is_ok_and(|m| m.is_file()) {
                        std::fs::hard_link(&peer, &p).unwrap();
                    }
                }
                Node::HardLink(_) => {}
                Node::Sparse(kib) => {
                    let f = std::fs::File::create(&p).unwrap();
                    std::io::Write::write_all(&mut &f, b"header").unwrap();
                    f.set_len(kib << 10).unwrap();
                    files.push(p);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]
        #[test]
        fn random_tree_random_damage_rollback_restores_equality(before in layout(), after in layout(), wipe in any::<bool>(), strip in any::<bool>()) {
            let e = Env::new();
            let root = e.home.join(".config");
            materialize(&root, &before);
            let expected = describe(&e.home);
            e.checkpoint("p", &["~/.config"]);
            if wipe {
                std::fs::remove_dir_all(&root).unwrap();
            }
            // Damage: a different random layout written over (and beside) the first.
            for (path, _) in &after {
                let p = root.join(OsStr::from_bytes(&path[0]));
                if let Ok(m) = std::fs::symlink_metadata(&p) {
                    if m.is_dir() { let _ = std::fs::remove_dir_all(&p); } else { let _ = std::fs::remove_file(&p); }
                }
            }
            materialize(&root, &after);
            if strip {
                // Metadata-only damage: every extended attribute and ACL goes.
                for (rel, _) in describe(&root) {
                    let p = root.join(OsStr::from_bytes(&rel));
                    for name in ["user.a", "user.mime_type", "user.xdg.origin.url", "system.posix_acl_access"] {
                        let _ = rustix::fs::lremovexattr(&p, name);
                    }
                }
            }
            let (rc, v) = e.json("backup-rollback", &["p"]);
            prop_assert_eq!(rc, 0, "{}", v);
            assert_same(&describe(&e.home), &expected);
        }

        /// Symlinked roots (issue 19): `~/.config` links into `~/dotfiles`;
        /// the content is damaged through the link, wiped, or the link is
        /// replaced by a real directory. Rollback brings back link and content.
        #[test]
        fn symlinked_root_random_damage_rollback_restores_equality(before in layout(), after in layout(), how in 0u8..3) {
            let e = Env::new();
            let real = e.home.join("dotfiles/cfg");
            materialize(&real, &before);
            symlink("dotfiles/cfg", e.home.join(".config")).unwrap();
            let untracked = |mut m: BTreeMap<Vec<u8>, String>| {
                m.remove(&b"dotfiles"[..]);
                m
            };
            let expected = untracked(describe(&e.home));
            e.checkpoint("p", &["~/.config"]);
            match how {
                0 => {
                    for (path, _) in &after {
                        let p = real.join(OsStr::from_bytes(&path[0]));
                        if let Ok(m) = std::fs::symlink_metadata(&p) {
                            if m.is_dir() { let _ = std::fs::remove_dir_all(&p); } else { let _ = std::fs::remove_file(&p); }
                        }
                    }
                    materialize(&real, &after);
                }
                1 => std::fs::remove_dir_all(&real).unwrap(),
                _ => {
                    std::fs::remove_file(e.home.join(".config")).unwrap();
                    materialize(&e.home.join(".config"), &after);
                }
            }
            let (rc, v) = e.json("backup-rollback", &["p"]);
            prop_assert_eq!(rc, 0, "{}", v);
            assert_same(&untracked(describe(&e.home)), &expected);
        }
    }
}

#[test]
fn a_root_absent_at_the_checkpoint_is_removed_by_rollback_and_back_after_undo() {
    let e = Env::new();
    std::fs::create_dir_all(e.home.join(".config/nvim")).unwrap();
    std::fs::write(e.home.join(".config/nvim/init.lua"), b"x").unwrap();
    e.checkpoint("pre", &["~/.zshrc", "~/.config/nvim"]);
    std::fs::write(e.home.join(".zshrc"), b"created by the phase").unwrap();
    let (rc, v) = e.json("backup-rollback", &["pre", "--dry-run"]);
    assert_eq!(rc, 0, "{v}");
    assert!(
        v["plan"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "delete" && a["path"] == "~/.zshrc"),
        "{v}"
    );
    // Selecting an ancestor of the roots selects them whole.
    let (rc, v) = e.json("backup-rollback", &["pre", "--path", "~"]);
    assert_eq!(rc, 0, "{v}");
    assert!(!e.home.join(".zshrc").exists());
    let (rc, _) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0);
    assert_eq!(
        std::fs::read(e.home.join(".zshrc")).unwrap(),
        b"created by the phase"
    );
}

/// More files than one group of staged writes (restore syncs written files
/// together, then renames them; see `flush_staged`): every group lands, in
/// several directories, with exact bytes, modes and times, and undo too.
#[test]
fn a_rollback_of_several_hundred_files_lands_every_group_of_staged_writes() {
    let e = Env::new();
    let c = e.home.join(".config");
    for d in 0..6 {
        std::fs::create_dir_all(c.join(format!("d{d}"))).unwrap();
        for i in 0..60 {
            let p = c.join(format!("d{d}/f{i:03}"));
            std::fs::write(&p, format!("original {d} {i}\n").repeat(i + 1)).unwrap();
            set_mode(&p, if i % 3 == 0 { 0o600 } else { 0o644 });
        }
    }
    let before = describe(&e.home);
    e.checkpoint("many", &["~/.config"]);
    for d in 0..6 {
        for i in 0..60 {
            let p = c.join(format!("d{d}/f{i:03}"));
            match i % 4 {
                0 => std::fs::remove_file(&p).unwrap(),
                _ => std::fs::write(&p, b"damaged\n").unwrap(),
            }
        }
    }
    let damaged = describe(&e.home);
    let (rc, v) = e.json("backup-rollback", &["many"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["stats"]["failed"], 0, "{v}");
    assert_eq!(v["stats"]["created"], 90, "{v}");
    assert_eq!(v["stats"]["updated"], 270, "{v}");
    assert_same(&describe(&e.home), &before);
    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0, "{v}");
    assert_same(&describe(&e.home), &damaged);
}

// ---- Issue 19: rollback on homes laid out the way users keep them. ----

/// The `path` values of the plan's actions of one kind.
fn planned(v: &Value, action: &str) -> Vec<String> {
    v["plan"]["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["action"] == action)
                .map(|a| a["path"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A GNU Stow home: `~/.config` and `~/.zshrc` are links into `~/dotfiles`,
/// and `~/.config/nvim` inside it is a folded directory (a link too).
fn stow_home(home: &Path) {
    let d = home.join("dotfiles");
    std::fs::create_dir_all(d.join("config/git")).unwrap();
    std::fs::create_dir_all(d.join("nvim")).unwrap();
    std::fs::write(d.join("config/git/config"), b"[user]\n").unwrap();
    std::fs::write(d.join("nvim/init.vim"), b"set nu\n").unwrap();
    std::fs::write(d.join("zshrc"), b"export EDITOR=nvim\n").unwrap();
    symlink("../nvim", d.join("config/nvim")).unwrap();
    symlink("dotfiles/config", home.join(".config")).unwrap();
    symlink("dotfiles/zshrc", home.join(".zshrc")).unwrap();
}

#[test]
fn symlinked_dotfiles_are_tracked_through_their_links_and_rolled_back() {
    let e = Env::new();
    stow_home(&e.home);
    let before = describe(&e.home);
    let v = e.checkpoint("c1", &["~/.config", "~/.zshrc"]);
    assert!(v["stats"]["files_scanned"].as_u64().unwrap() >= 3, "{v}");
    let d = e.home.join("dotfiles");
    std::fs::write(d.join("nvim/init.vim"), b"BROKEN\n").unwrap();
    std::fs::write(d.join("zshrc"), b"BROKEN\n").unwrap();
    std::fs::write(d.join("config/git/new"), b"new\n").unwrap();

    let (rc, v) = e.json("backup-list", &["--diff", "c1"]);
    assert_eq!(rc, 0, "{v}");
    let changed: Vec<&str> = v["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    for p in [
        "~/dotfiles/nvim/init.vim",
        "~/dotfiles/zshrc",
        "~/dotfiles/config/git/new",
    ] {
        assert!(changed.contains(&p), "{p} not in the diff: {v}");
    }

    let (rc, v) = e.json("backup-rollback", &["c1", "--dry-run"]);
    assert_eq!(rc, 0, "{v}");
    assert!(
        planned(&v, "update").contains(&"~/dotfiles/nvim/init.vim".to_string()),
        "{v}"
    );
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["stats"]["failed"], 0, "{v}");
    // ~/dotfiles itself is not tracked (only what the links lead to): its time moves.
    let untracked = |mut m: BTreeMap<Vec<u8>, String>| {
        m.remove(&b"dotfiles"[..]);
        m
    };
    assert_same(&untracked(describe(&e.home)), &untracked(before.clone()));

    // A link changed to point elsewhere comes back, with its content.
    std::fs::remove_file(e.home.join(".zshrc")).unwrap();
    std::fs::write(e.home.join("other"), b"other\n").unwrap();
    symlink("other", e.home.join(".zshrc")).unwrap();
    std::fs::remove_file(d.join("zshrc")).unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1", "--path", "~/.zshrc"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        std::fs::read_link(e.home.join(".zshrc")).unwrap(),
        Path::new("dotfiles/zshrc")
    );
    assert_eq!(
        std::fs::read(d.join("zshrc")).unwrap(),
        b"export EDITOR=nvim\n"
    );
    assert_eq!(std::fs::read(e.home.join("other")).unwrap(), b"other\n");

    // --path through a link selects the content it leads to.
    std::fs::write(d.join("nvim/init.vim"), b"BROKEN again\n").unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1", "--path", "~/.config/nvim"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(d.join("nvim/init.vim")).unwrap(), b"set nu\n");

    let (rc, v) = e.json("backup-verify", &["--read-data"]);
    assert_eq!(rc, 0, "{v}");
}

#[test]
fn a_link_planted_after_the_checkpoint_is_never_written_through() {
    let e = Env::new();
    stow_home(&e.home);
    e.checkpoint("c1", &["~/.config"]);
    // ~/dotfiles is swapped for a link to a directory outside the home.
    let outside = e.home.parent().unwrap().join("outside");
    std::fs::create_dir_all(outside.join("nvim")).unwrap();
    std::fs::write(outside.join("nvim/init.vim"), b"outside\n").unwrap();
    std::fs::rename(
        e.home.join("dotfiles"),
        e.home.parent().unwrap().join("moved"),
    )
    .unwrap();
    symlink(&outside, e.home.join("dotfiles")).unwrap();
    let outside_before = describe(&outside);
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_same(&describe(&outside), &outside_before);
    // The planted link is replaced by the real directory, or the run says what it could not do.
    if rc == 0 {
        assert!(std::fs::symlink_metadata(e.home.join("dotfiles"))
            .unwrap()
            .is_dir());
        assert_eq!(
            std::fs::read(e.home.join("dotfiles/nvim/init.vim")).unwrap(),
            b"set nu\n"
        );
    } else {
        assert_eq!(rc, 3, "{v}");
    }
}

#[test]
fn links_leaving_home_are_recorded_but_not_followed_unless_allowed() {
    let e = Env::new();
    let outside = e.home.parent().unwrap().join("shared");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("gitconfig"), b"[core]\n").unwrap();
    symlink(outside.join("gitconfig"), e.home.join(".gitconfig")).unwrap();
    let v = e.checkpoint("c1", &["~/.gitconfig"]);
    assert_eq!(v["stats"]["files_scanned"], 0, "{v}");
    std::fs::write(outside.join("gitconfig"), b"changed\n").unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        std::fs::read(outside.join("gitconfig")).unwrap(),
        b"changed\n"
    );

    // Allowed by prefix in the config: tracked and rolled back.
    let cfg = e.home.join(".config/dotfiles-backup");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.toml"),
        format!(
            "[track]\nfollow_links_into = [{:?}]\n",
            outside.to_str().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(outside.join("gitconfig"), b"[core]\n").unwrap();
    let v = e.checkpoint("c2", &["~/.gitconfig"]);
    assert_eq!(v["stats"]["files_scanned"], 1, "{v}");
    std::fs::write(outside.join("gitconfig"), b"changed\n").unwrap();
    let (rc, v) = e.json("backup-rollback", &["c2"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        std::fs::read(outside.join("gitconfig")).unwrap(),
        b"[core]\n"
    );
}

#[test]
fn the_tools_own_files_are_never_rolled_back_and_undo_still_works() {
    let e = Env::new();
    std::fs::create_dir_all(e.home.join(".config/nvim")).unwrap();
    std::fs::write(e.home.join(".config/nvim/init.lua"), b"x").unwrap();
    e.checkpoint("c1", &["~/.config"]);
    let cfg = e.home.join(".config/dotfiles-backup");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.toml"), "[safety]\n").unwrap();
    std::fs::write(cfg.join("ignore"), "*.log\n").unwrap();
    std::fs::write(cfg.join("recipients.txt"), "").unwrap();
    std::fs::write(e.home.join(".config/nvim/init.lua"), b"changed").unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1", "--dry-run"]);
    assert_eq!(rc, 0, "{v}");
    let kept: Vec<&Value> = v["plan"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["path"].as_str().unwrap().contains("dotfiles-backup"))
        .collect();
    assert!(kept.iter().all(|a| a["action"] == "skip"), "{v}");
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    for f in ["config.toml", "ignore", "recipients.txt"] {
        assert!(cfg.join(f).exists(), "{f} was removed: {v}");
    }
    assert_eq!(
        std::fs::read(e.home.join(".config/nvim/init.lua")).unwrap(),
        b"x"
    );
    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        std::fs::read(e.home.join(".config/nvim/init.lua")).unwrap(),
        b"changed"
    );
    let (rc, v) = e.json("backup-checkpoint", &["manual", "c2", "--sizes"]);
    assert_eq!(rc, 0, "{v}");
    let (rc, v) = e.json(
        "backup-checkpoint",
        &["manual", "c3", "--path", "~/.config", "--dry-run"],
    );
    assert_eq!(rc, 0, "{v}");
    assert!(
        v.to_string().contains("tool state"),
        "the reason is shown: {v}"
    );
}

#[test]
fn a_directory_holding_excluded_content_is_kept_and_rollback_succeeds_once() {
    let e = Env::new();
    std::fs::create_dir_all(e.home.join(".config")).unwrap();
    std::fs::write(e.home.join(".config/a"), b"a").unwrap();
    e.checkpoint("c1", &["~/.config"]);
    let proj = e.home.join(".config/proj");
    std::fs::create_dir_all(proj.join("sub")).unwrap();
    std::fs::write(proj.join("sub/file"), b"f").unwrap();
    std::fs::write(proj.join("gone"), b"g").unwrap();
    let fifo = proj.join("sub/fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (rc, v) = e.json("backup-rollback", &["c1", "--dry-run"]);
    assert_eq!(rc, 0, "{v}");
    let deletes = planned(&v, "delete");
    assert!(
        !deletes
            .iter()
            .any(|p| p.ends_with("proj") || p.ends_with("sub")),
        "{v}"
    );
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["stats"]["failed"], 0, "{v}");
    assert!(!proj.join("gone").exists());
    assert!(!proj.join("sub/file").exists());
    assert!(
        std::fs::symlink_metadata(&fifo).is_ok(),
        "the excluded FIFO stays"
    );
    // Nothing left to do: no second safety snapshot.
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    assert!(v["snapshot"].is_null(), "{v}");
    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(proj.join("gone")).unwrap(), b"g");
    assert_eq!(std::fs::read(proj.join("sub/file")).unwrap(), b"f");
}

#[test]
fn a_file_that_cannot_be_read_is_a_partial_rollback_not_success() {
    let e = Env::new();
    std::fs::create_dir_all(e.home.join(".config")).unwrap();
    std::fs::write(e.home.join(".config/a"), b"a").unwrap();
    std::fs::write(e.home.join(".config/b"), b"b").unwrap();
    e.checkpoint("c1", &["~/.config"]);
    std::fs::write(e.home.join(".config/a"), b"changed").unwrap();
    std::fs::write(e.home.join(".config/b"), b"changed").unwrap();
    set_mode(&e.home.join(".config/a"), 0o000);
    // As root every file is readable: run as an unprivileged user then.
    let mut e = e;
    if common::is_root() {
        let tmp = e.home.parent().unwrap();
        set_mode(tmp, 0o755);
        let id = common::unprivileged_id();
        common::chown_tree(&e.home, id);
        common::chown_tree(&e.repo, id);
        e.run_as = Some(id);
    }
    let (code, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["status"], "partial", "{v}");
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["path"].as_str().is_some_and(|p| p.ends_with(".config/a"))),
        "{v}"
    );
    set_mode(&e.home.join(".config/a"), 0o644);
    assert_eq!(std::fs::read(e.home.join(".config/b")).unwrap(), b"b");
}

#[test]
fn two_homes_sharing_a_repository_never_cross() {
    let e = Env::new();
    let h2 = e.home.parent().unwrap().join("home2");
    std::fs::create_dir_all(&h2).unwrap();
    let run = |home: &Path, args: &[&str]| e.json_in(home, args[0], &args[1..]);
    std::fs::write(e.home.join(".zshrc"), b"h1 v1").unwrap();
    std::fs::write(h2.join(".zshrc"), b"h2 v1").unwrap();
    let (rc, v) = run(
        &e.home,
        &["backup-checkpoint", "manual", "c1", "--path", "~/.zshrc"],
    );
    assert_eq!(rc, 0, "{v}");
    let (rc, v) = run(
        &h2,
        &["backup-checkpoint", "manual", "c1", "--path", "~/.zshrc"],
    );
    assert_eq!(rc, 0, "{v}");
    // h2 rolls back; h1's undo must not apply h2's safety snapshot.
    std::fs::write(h2.join(".zshrc"), b"h2 v2").unwrap();
    let (rc, v) = run(&h2, &["backup-rollback", "c1"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(h2.join(".zshrc")).unwrap(), b"h2 v1");
    let (rc, v) = run(&e.home, &["backup-rollback", "--undo"]);
    assert_eq!(rc, 1, "{v}");
    assert_eq!(v["errors"][0]["code"], "nothing_to_undo", "{v}");
    assert_eq!(std::fs::read(e.home.join(".zshrc")).unwrap(), b"h1 v1");
    // Labels and latest are this home's.
    std::fs::write(e.home.join(".zshrc"), b"h1 v2").unwrap();
    let (rc, v) = run(&e.home, &["backup-rollback", "latest"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(e.home.join(".zshrc")).unwrap(), b"h1 v1");
    let (rc, v) = run(&e.home, &["backup-list"]);
    assert_eq!(rc, 0, "{v}");
    let n = v["snapshots"].as_array().unwrap().len();
    let (rc, v) = run(&e.home, &["backup-list", "--all-homes"]);
    assert_eq!(rc, 0, "{v}");
    assert!(v["snapshots"].as_array().unwrap().len() > n, "{v}");
    // Another home's snapshot by id: refused, naming it, unless --all-homes.
    let (_, v) = run(&h2, &["backup-list", "c1"]);
    let other = v["snapshot"]["short_id"].as_str().unwrap().to_string();
    let (rc, v) = run(&e.home, &["backup-list", &other]);
    assert_ne!(rc, 0, "{v}");
    assert!(
        v["errors"][0]["hint"]
            .as_str()
            .unwrap()
            .contains("--all-homes"),
        "{v}"
    );
    let (rc, v) = run(&e.home, &["backup-list", &other, "--all-homes"]);
    assert_eq!(rc, 0, "{v}");

    // Identical content in both homes: the second home's checkpoint is its
    // own record (not "unchanged, kept" the other home's), so its rollback works.
    std::fs::write(e.home.join(".zshrc"), b"same").unwrap();
    std::fs::write(h2.join(".zshrc"), b"same").unwrap();
    for home in [&e.home, &h2] {
        let (rc, v) = run(
            home,
            &[
                "backup-checkpoint",
                "auto",
                "pre-ansible",
                "--path",
                "~/.zshrc",
            ],
        );
        assert_eq!(rc, 0, "{v}");
        assert_eq!(v["snapshot"]["reused"], false, "{}: {v}", home.display());
    }
    std::fs::write(h2.join(".zshrc"), b"broken").unwrap();
    let (rc, v) = run(&h2, &["backup-rollback", "pre-ansible"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(h2.join(".zshrc")).unwrap(), b"same");
}

/// Issue 18's phases on a repository two homes share: runs, phase names,
/// `--phases` and retention are each home's own, and the JSON says whose.
#[test]
fn two_homes_bootstrapping_into_one_repository_keep_their_own_phases_and_retention() {
    let e = Env::new();
    let h2 = e.home.parent().unwrap().join("home2");
    std::fs::create_dir_all(&h2).unwrap();
    let run = |home: &Path, args: &[&str]| e.json_in(home, args[0], &args[1..]);
    let phase = |home: &Path, p: &str| {
        let (rc, v) = run(
            home,
            &["backup-checkpoint", "auto", p, "--path", "~/.zshrc"],
        );
        assert_eq!(rc, 0, "{v}");
        v
    };
    // h1's bootstrap: the dotfiles phase breaks ~/.zshrc.
    std::fs::write(e.home.join(".zshrc"), b"h1 good").unwrap();
    let v = phase(&e.home, "pre-dotfiles");
    assert_eq!(v["snapshot"]["home"], e.home.to_str().unwrap(), "{v}");
    std::fs::write(e.home.join(".zshrc"), b"h1 BROKEN").unwrap();
    phase(&e.home, "bootstrap-complete");
    // h2 bootstraps three times in between; its phases change nothing of h1's.
    for i in 0..3 {
        std::fs::write(h2.join(".zshrc"), format!("h2 {i}")).unwrap();
        phase(&h2, "pre-dotfiles");
        std::fs::write(h2.join(".zshrc"), format!("h2 {i} after")).unwrap();
        phase(&h2, "bootstrap-complete");
    }
    // h1's phase name resolves among h1's runs only.
    let (rc, v) = run(&e.home, &["backup-rollback", "pre-dotfiles"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(e.home.join(".zshrc")).unwrap(), b"h1 good");
    let (rc, v) = run(&e.home, &["backup-list", "--phases"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        v["runs"].as_array().unwrap().len(),
        1,
        "h1 has one run: {v}"
    );
    let (_, v) = run(&h2, &["backup-list", "--phases"]);
    assert_eq!(v["runs"].as_array().unwrap().len(), 3, "{v}");
    // The machine as it came is pinned per home: h2's first run too,
    // though h1 had bootstrapped into the repository before it.
    let runs = v["runs"].as_array().unwrap();
    let first = runs.last().unwrap();
    assert!(
        first["phases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["pinned"].is_string()),
        "h2's first run is pinned: {v}"
    );
    assert!(
        runs[0]["phases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["pinned"].is_null()),
        "{v}"
    );
    let (rc, v) = run(&h2, &["backup-prune"]);
    assert_eq!(rc, 0, "{v}");
    let (_, v) = run(&e.home, &["backup-list"]);
    let labels: Vec<&str> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "checkpoint")
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["pre-dotfiles", "bootstrap-complete"],
        "h1's checkpoints survive h2's prune: {v}"
    );
}

#[test]
fn undo_after_several_rollbacks_returns_before_the_first_and_a_second_undo_redoes() {
    let e = Env::new();
    let f = e.home.join(".zshrc");
    std::fs::write(&f, b"v1").unwrap();
    e.checkpoint("c1", &["~/.zshrc"]);
    std::fs::write(&f, b"v2").unwrap();
    e.checkpoint("c2", &["~/.zshrc"]);
    std::fs::write(&f, b"work").unwrap();
    for target in ["c1", "c2", "c1"] {
        let (rc, v) = e.json("backup-rollback", &[target]);
        assert_eq!(rc, 0, "{v}");
    }
    assert_eq!(std::fs::read(&f).unwrap(), b"v1");
    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        std::fs::read(&f).unwrap(),
        b"work",
        "back to before the first rollback"
    );
    // A second --undo redoes: the state the undo replaced.
    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(&f).unwrap(), b"v1");
}

#[test]
fn undo_that_would_replace_a_newer_checkpoint_names_it_and_needs_force() {
    let e = Env::new();
    let f = e.home.join(".zshrc");
    std::fs::write(&f, b"v1").unwrap();
    e.checkpoint("c1", &["~/.zshrc"]);
    std::fs::write(&f, b"before rollback").unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    std::fs::write(&f, b"newer work").unwrap();
    e.checkpoint("newer", &["~/.zshrc"]);
    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 5, "{v}");
    assert_eq!(v["errors"][0]["code"], "undo_replaces_newer", "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("newer"),
        "{v}"
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"newer work");
    let (rc, v) = e.json("backup-rollback", &["--undo", "--force"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(&f).unwrap(), b"before rollback");
}

#[test]
fn control_characters_in_names_are_escaped_in_human_output_and_kept_in_json() {
    let e = Env::new();
    std::fs::create_dir_all(e.home.join(".config")).unwrap();
    e.checkpoint("c1", &["~/.config"]);
    let evil = "evil\x1b[2K\rok\nname";
    std::fs::write(e.home.join(".config").join(evil), b"x").unwrap();
    for (bin, args) in [
        ("backup-rollback", vec!["c1", "--dry-run"]),
        ("backup-list", vec!["--diff", "c1"]),
    ] {
        let mut argv = args.clone();
        argv.extend(["--color", "never"]);
        let out = e.output(bin, &argv, &[]);
        assert!(out.status.success(), "{bin}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains('\x1b') && !text.contains('\r'),
            "{bin}: {text:?}"
        );
        assert!(text.contains("evil\\x1b[2K\\rok\\nname"), "{bin}: {text}");
    }
    let (rc, v) = e.json("backup-rollback", &["c1", "--dry-run"]);
    assert_eq!(rc, 0, "{v}");
    assert!(
        planned(&v, "delete").iter().any(|p| p.ends_with(evil)),
        "{v}"
    );
}

/// `~/.config` is a Stow link whose target became a file: the default
/// config path cannot be read (ENOTDIR), which must not stop the rollback
/// that repairs it.
#[test]
fn a_broken_config_link_does_not_stop_the_rollback_that_repairs_it() {
    let e = Env::new();
    stow_home(&e.home);
    e.checkpoint("c1", &["~/.config"]);
    let d = e.home.join("dotfiles/config");
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::write(&d, b"not a directory").unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(d.join("git/config")).unwrap(), b"[user]\n");
    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(&d).unwrap(), b"not a directory");
}

/// A sparse file (a VM image, a database) comes back with its holes, not
/// as its full length of zeros; its bytes are the same.
#[test]
fn sparse_files_come_back_sparse() {
    let e = Env::new();
    std::fs::create_dir_all(e.home.join(".config")).unwrap();
    let p = e.home.join(".config/disk.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(b"header", 0).unwrap();
        f.write_all_at(b"middle", 8 << 20).unwrap();
        f.write_all_at(b"tail", (16 << 20) - 4).unwrap();
    }
    let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
    if allocated(&p) > 4 << 20 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the temp file system does not keep holes: CI must run this test"
        );
        eprintln!("note: this file system does not keep holes; nothing to compare");
        return;
    }
    let want = std::fs::read(&p).unwrap();
    e.checkpoint("c1", &["~/.config"]);
    std::fs::remove_file(&p).unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(&p).unwrap(), want);
    assert!(allocated(&p) < 1 << 20, "{} bytes allocated", allocated(&p));
}

/// The printed `--undo` names the repository the rollback used when it came
/// from a flag, so it still works in a shell without that flag's default.
#[test]
fn the_printed_undo_names_the_repository_given_by_flag() {
    let e = Env::new();
    std::fs::write(e.home.join(".zshrc"), b"v1").unwrap();
    e.checkpoint("c1", &["~/.zshrc"]);
    std::fs::write(e.home.join(".zshrc"), b"v2").unwrap();
    let repo = e.repo.to_str().unwrap();
    let out = e
        .command(
            "backup-rollback",
            &["c1", "--color", "never", "--repo", repo],
            &[],
        )
        .env_remove("BACKUP_REPO")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("backup-rollback --undo --repo {}", e.repo.display());
    assert!(text.contains(&want), "{text}");
}

/// A configured root below a symlinked directory (`~/.ssh/config` while
/// `~/.ssh` links into `~/dotfiles`) is tracked where it really is, keeps
/// its class by the name it was configured by, and rolls back.
#[test]
fn a_root_below_a_symlinked_directory_is_tracked_where_it_is() {
    let e = Env::new();
    let d = e.home.join("dotfiles/ssh");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config"), b"Host *\n").unwrap();
    std::fs::write(d.join("id_ed25519"), b"PRIVATE KEY").unwrap();
    symlink("dotfiles/ssh", e.home.join(".ssh")).unwrap();
    let v = e.checkpoint("c1", &["~/.ssh/config", "~/.ssh/id_ed25519"]);
    assert!(v["warnings"].to_string().contains("secret_skipped"), "{v}");
    for f in super_names_in(&e.repo) {
        assert!(
            !std::fs::read(&f)
                .unwrap()
                .windows(11)
                .any(|w| w == b"PRIVATE KEY"),
            "{f:?}"
        );
    }
    std::fs::write(d.join("config"), b"BROKEN\n").unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(d.join("config")).unwrap(), b"Host *\n");
    assert!(std::fs::symlink_metadata(e.home.join(".ssh"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// Every file under `dir`.
fn super_names_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(super_names_in(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Edits made between two rollbacks are not skipped over: the chain only
/// joins rollbacks with nothing changed between them.
#[test]
fn undo_never_skips_edits_made_between_rollbacks() {
    let e = Env::new();
    let f = e.home.join(".zshrc");
    std::fs::write(&f, b"v1").unwrap();
    e.checkpoint("c1", &["~/.zshrc"]);
    std::fs::write(&f, b"work").unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    std::fs::write(&f, b"edited between").unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    let (rc, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(std::fs::read(&f).unwrap(), b"edited between");
}

#[test]
fn temp_files_of_a_killed_rollback_are_removed_even_where_the_plan_changes_nothing() {
    let e = Env::new();
    for d in ["a", "b"] {
        std::fs::create_dir_all(e.home.join(".config").join(d)).unwrap();
        std::fs::write(e.home.join(".config").join(d).join("f"), b"v1").unwrap();
    }
    e.checkpoint("c1", &["~/.config"]);
    // What a rollback killed mid-write leaves: a full temp copy (here of a
    // "key") beside its final name, from a pid that no longer runs.
    let stale = e.home.join(".config/b/.dfb-tmp.4194000.3.f");
    let plant = || std::fs::write(&stale, b"decrypted key material").unwrap();
    plant();
    // The plan touches only `a`.
    std::fs::write(e.home.join(".config/a/f"), b"v2").unwrap();
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    assert!(!stale.exists(), "stale temp left in an untouched directory");
    // Nothing to change at all: still cleaned.
    plant();
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 0, "{v}");
    assert!(!stale.exists(), "stale temp left by a no-op rollback");
    // A dry run leaves it (it writes nothing).
    plant();
    let (rc, v) = e.json("backup-rollback", &["c1", "--dry-run"]);
    assert_eq!(rc, 0, "{v}");
    assert!(stale.exists());
}
