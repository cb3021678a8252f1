//! Metadata fidelity (issue 19): hard links, user extended attributes and
//! POSIX ACLs are recorded by checkpoints and put back by rollback and
//! restore, a change of them alone is a change everywhere, an ACL never
//! comes back wider than it was, and a file system without extended
//! attributes is a warning, not a failure.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{is_root, set_mode, skip_unless_required, TestEnv, NOBODY};
use rustix::fs::XattrFlags;

/// A `system.posix_acl_access` value: owner rw-, named user `nobody`,
/// owning group, mask, other ---.
fn acl(named: u16, group: u16, mask: u16) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, named, NOBODY),
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

fn set_x(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, XattrFlags::empty()).unwrap();
}

fn get_x(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 16];
    rustix::fs::lgetxattr(p, name, &mut buf[..])
        .ok()
        .map(|n| buf[..n].to_vec())
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn ino(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().ino()
}

fn ok(e: &TestEnv, bin: &str, args: &[&str]) -> serde_json::Value {
    let (rc, v) = e.json(bin, args);
    assert_eq!(rc, 0, "{bin} {args:?}: {v:#}");
    v
}

#[test]
fn hard_links_across_tracked_dirs_come_back_as_links_and_alone_as_plain_files() {
    let e = TestEnv::new();
    let f = e.write(".config/app/state", b"shared\n", 0o644);
    let g = e.home.join(".local/share/app-state");
    std::fs::create_dir_all(g.parent().unwrap()).unwrap();
    std::fs::hard_link(&f, &g).unwrap();
    ok(
        &e,
        "backup-checkpoint",
        &["manual", "c1", "--path", "~/.config", "--path", "~/.local"],
    );

    // An editor's atomic save breaks the link (same content, new inode).
    std::fs::remove_file(&g).unwrap();
    std::fs::write(&g, b"shared\n").unwrap();
    let (_, d) = e.json("backup-list", &["--diff", "c1"]);
    let changed: Vec<_> = d["diff"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["path"] == "~/.local/share/app-state")
        .collect();
    assert_eq!(changed.len(), 1, "{d:#}");
    assert!(
        changed[0]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "hardlink"),
        "{d:#}"
    );
    let v = ok(&e, "backup-rollback", &["c1"]);
    assert_eq!(ino(&f), ino(&g), "linked again: {v:#}");
    assert_eq!(v["stats"]["hardlinks"], 1, "{v:#}");

    // Both gone: both come back, as one inode.
    std::fs::remove_file(&f).unwrap();
    std::fs::remove_file(&g).unwrap();
    ok(&e, "backup-rollback", &["c1"]);
    assert_eq!(ino(&f), ino(&g));
    assert_eq!(std::fs::read(&g).unwrap(), b"shared\n");

    // Only one side selected while the other holds new content: the
    // selected file gets its own stored content, never the peer's.
    std::fs::remove_file(&g).unwrap();
    std::fs::write(&f, b"edited since\n").unwrap();
    ok(
        &e,
        "backup-rollback",
        &["c1", "--path", "~/.local/share/app-state"],
    );
    assert_eq!(std::fs::read(&g).unwrap(), b"shared\n");
    assert_eq!(std::fs::read(&f).unwrap(), b"edited since\n");
    assert_ne!(ino(&f), ino(&g));

    // Restore elsewhere: whole, linked inside the target; one path alone, a plain file.
    let t = e.tmp.path().join("t");
    ok(
        &e,
        "backup-restore",
        &["c1", "--target", t.to_str().unwrap()],
    );
    let tf = t.join(".config/app/state");
    let tg = t.join(".local/share/app-state");
    assert_eq!(ino(&tf), ino(&tg));
    let t2 = e.tmp.path().join("t2");
    ok(
        &e,
        "backup-restore",
        &[
            "c1",
            "--target",
            t2.to_str().unwrap(),
            "--path",
            "~/.local/share/app-state",
        ],
    );
    let alone = t2.join(".local/share/app-state");
    assert_eq!(std::fs::read(&alone).unwrap(), b"shared\n");
    assert_eq!(std::fs::symlink_metadata(&alone).unwrap().nlink(), 1);
}

#[test]
fn an_extended_attribute_change_alone_is_a_new_snapshot_a_diff_and_a_rollback() {
    let e = TestEnv::new();
    let p = e.write(".config/notes.txt", b"notes\n", 0o644);
    set_x(&p, "user.xdg.origin.url", b"https://example.org/a");
    ok(
        &e,
        "backup-checkpoint",
        &["manual", "c1", "--path", "~/.config"],
    );
    set_x(&p, "user.xdg.origin.url", b"https://example.org/b");
    set_x(&p, "user.added", b"1");
    let v = ok(
        &e,
        "backup-checkpoint",
        &["manual", "c2", "--path", "~/.config"],
    );
    assert_eq!(
        v["snapshot"]["reused"], false,
        "an xattr change is a change: {v:#}"
    );
    let (_, d) = e.json("backup-list", &["--diff", "c1", "c2"]);
    let changes = &d["diff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["path"] == "~/.config/notes.txt")
        .unwrap()["changes"];
    assert_eq!(changes, &serde_json::json!(["xattrs"]), "{d:#}");
    let v = ok(&e, "backup-rollback", &["c1"]);
    assert!(v["stats"]["metadata"].as_u64().unwrap() >= 1, "{v:#}");
    assert_eq!(
        get_x(&p, "user.xdg.origin.url").unwrap(),
        b"https://example.org/a"
    );
    assert_eq!(
        get_x(&p, "user.added"),
        None,
        "an attribute the snapshot did not have is removed"
    );
    assert_eq!(std::fs::read(&p).unwrap(), b"notes\n");
    ok(&e, "backup-verify", &["--read-data"]);
    // Undo brings the newer attributes back.
    ok(&e, "backup-rollback", &["--undo"]);
    assert_eq!(get_x(&p, "user.added").unwrap(), b"1");
}

#[test]
fn an_acl_on_ssh_dropped_after_the_checkpoint_comes_back_and_never_wider() {
    let e = TestEnv::new();
    let cfg = e.write(".ssh/config", b"Host *\n", 0o640);
    set_mode(&e.home.join(".ssh"), 0o700);
    // Group r--, mask rw- (so the mode shows group rw-), nobody rw-.
    set_x(&cfg, "system.posix_acl_access", &acl(6, 4, 6));
    assert_eq!(mode_of(&cfg), 0o660);
    ok(
        &e,
        "backup-checkpoint",
        &["manual", "c1", "--path", "~/.ssh"],
    );
    // `setfacl -b`: the ACL goes, the mode keeps the mask as group bits,
    // so the owning group now has rw- (wider than its r--).
    rustix::fs::lremovexattr(&cfg, "system.posix_acl_access").unwrap();
    let (_, d) = e.json("backup-list", &["--diff", "c1"]);
    assert!(d["diff"].to_string().contains("xattrs"), "{d:#}");
    ok(&e, "backup-rollback", &["c1"]);
    assert_eq!(
        get_x(&cfg, "system.posix_acl_access").unwrap(),
        acl(6, 4, 6)
    );
    assert_eq!(mode_of(&cfg), 0o660, "the mask, as stored");

    // Restored into a directory with a default ACL granting nobody rwx:
    // a file stored without an ACL does not inherit one.
    let plain = e.write(".ssh/known_hosts", b"host key\n", 0o644);
    ok(
        &e,
        "backup-checkpoint",
        &["manual", "c2", "--path", "~/.ssh"],
    );
    let mut default = acl(7, 5, 7);
    default[4 + 8 + 2] = 7;
    set_x(&e.home.join(".ssh"), "system.posix_acl_default", &default);
    std::fs::remove_file(&plain).unwrap();
    ok(
        &e,
        "backup-rollback",
        &["c2", "--path", "~/.ssh/known_hosts"],
    );
    assert_eq!(
        get_x(&plain, "system.posix_acl_access"),
        None,
        "no inherited ACL"
    );
    assert_eq!(mode_of(&plain), 0o644);
}

/// A target file system without extended attributes (tmpfs without
/// user xattrs, vfat, many network mounts: every xattr call fails with
/// EOPNOTSUPP, injected here with strace) gets the content back, a mode
/// narrowed where an ACL is lost, and a warning naming each path (exit 0:
/// the files the user asked for are there).
#[test]
fn a_file_system_without_xattrs_is_a_warning_and_a_lost_acl_narrows_the_mode() {
    if !common::strace_works() {
        return;
    }
    let e = TestEnv::new();
    let p = e.write(".config/shared.txt", b"team notes\n", 0o640);
    set_x(&p, "user.tag", b"x");
    set_x(&p, "system.posix_acl_access", &acl(7, 4, 7));
    assert_eq!(mode_of(&p), 0o670);
    ok(
        &e,
        "backup-checkpoint",
        &["manual", "c1", "--path", "~/.config"],
    );
    let t = e.tmp.path().join("t");
    let plain = e.command(
        "backup-restore",
        &["--json", "c1", "--target", t.to_str().unwrap()],
        &[],
    );
    let mut cmd = common::under_strace(
        &plain,
        &[
            "-e",
            "trace=fsetxattr,flistxattr,fremovexattr",
            "-e",
            "inject=fsetxattr,flistxattr,fremovexattr:error=EOPNOTSUPP",
        ],
    );
    let (rc, v) = common::parse_envelope(&cmd.output().unwrap());
    assert_eq!(rc, 0, "{v:#}");
    let out = t.join(".config/shared.txt");
    assert_eq!(std::fs::read(&out).unwrap(), b"team notes\n");
    // The owning group had r-- through the ACL: without it, r--, not the mask's rwx.
    assert_eq!(mode_of(&out), 0o640, "{v:#}");
    assert_eq!(get_x(&out, "system.posix_acl_access"), None);
    let w: Vec<_> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "xattrs_not_restored")
        .collect();
    assert_eq!(w.len(), 1, "{v:#}");
    assert!(
        w[0]["path"]
            .as_str()
            .unwrap()
            .ends_with(".config/shared.txt"),
        "{v:#}"
    );
    assert!(w[0]["message"].as_str().unwrap().contains("0640"), "{v:#}");
}

/// A file whose attributes cannot be read (no read permission for the
/// user running the checkpoint) is stored without them, with a warning
/// naming it, and the checkpoint succeeds.
#[test]
fn unreadable_attributes_are_a_warning_naming_the_path() {
    if !is_root() {
        skip_unless_required(
            "root",
            "needs a file that root can tag and nobody cannot read",
        );
        return;
    }
    let e = TestEnv::new().unprivileged();
    let p = e.write(".config/locked", b"x", 0o644);
    set_x(&p, "user.tag", b"1");
    rustix::fs::chown(
        &p,
        Some(rustix::process::Uid::from_raw(NOBODY)),
        Some(rustix::process::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    set_mode(&p, 0o200);
    let (rc, v) = e.json(
        "backup-checkpoint",
        &["manual", "c1", "--path", "~/.config"],
    );
    assert!(rc == 0 || rc == 3, "{v:#}");
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "xattrs_unreadable"
                && w["path"].as_str().unwrap().ends_with(".config/locked")),
        "{v:#}"
    );
}

/// The files cache vouches for "no attributes" on a hit (a no-change
/// checkpoint makes no listxattr call per file): adding one changes the
/// ctime, so the next checkpoint sees it; a file with attributes is never
/// cached, so a change of value is seen too.
#[test]
fn an_attribute_added_to_a_cached_file_is_seen_by_the_next_checkpoint() {
    let e = TestEnv::new();
    let p = e.write(".config/settled.conf", b"old and settled\n", 0o644);
    common::set_mtime(&p, 1_600_000_000, 0);
    ok(
        &e,
        "backup-checkpoint",
        &["manual", "c1", "--path", "~/.config"],
    );
    let v = ok(
        &e,
        "backup-checkpoint",
        &["manual", "c1b", "--path", "~/.config"],
    );
    assert_eq!(
        v["stats"]["files_unchanged"], 1,
        "served by the cache: {v:#}"
    );
    set_x(&p, "user.tag", b"1");
    let v = ok(
        &e,
        "backup-checkpoint",
        &["manual", "c2", "--path", "~/.config"],
    );
    assert_eq!(v["snapshot"]["reused"], false, "{v:#}");
    set_x(&p, "user.tag", b"2");
    ok(
        &e,
        "backup-checkpoint",
        &["manual", "c3", "--path", "~/.config"],
    );
    rustix::fs::lremovexattr(&p, "user.tag").unwrap();
    ok(&e, "backup-rollback", &["c2"]);
    assert_eq!(get_x(&p, "user.tag").unwrap(), b"1");
    ok(&e, "backup-rollback", &["c3"]);
    assert_eq!(get_x(&p, "user.tag").unwrap(), b"2");
    ok(&e, "backup-rollback", &["c1"]);
    assert_eq!(get_x(&p, "user.tag"), None);
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Give `p` user attributes whose names total more than Linux's 64 KiB
/// `listxattr` limit (XATTR_LIST_MAX): the kernel refuses to list them
/// (E2BIG) however large the buffer, so they cannot be recorded.
fn too_many_names(p: &Path) -> usize {
    let mut total = 0;
    let mut n = 0;
    while total <= 70_000 {
        let name = format!("user.n{n:05}{}", "x".repeat(200));
        set_x(p, &name, b"v");
        total += name.len() + 1;
        n += 1;
    }
    assert_eq!(
        rustix::fs::llistxattr(p, &mut vec![0u8; 1 << 20][..]).err(),
        Some(rustix::io::Errno::TOOBIG),
        "the kernel lists them after all: record them instead of refusing"
    );
    n
}

/// More attribute names than the kernel lists (tmpfs and XFS hold them;
/// ext4 does not, its attributes fit in one block): the checkpoint warns that
/// the file is stored without them, and rollback never replaces or removes
/// such a file, since neither the safety snapshot nor a copy could keep them
/// (exit 3 naming the file and what to do). Before, rollback replaced it and
/// silently dropped all 331 attributes.
#[test]
fn a_file_with_over_64_kib_of_attribute_names_is_never_replaced_by_rollback() {
    if !is_root() {
        skip_unless_required("root", "mounting a tmpfs needs root");
        return;
    }
    let e = TestEnv::new();
    let dir = e.home.join("big");
    std::fs::create_dir_all(&dir).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs on {}", dir.display());
    let _m = Mounted(dir.clone());
    let kept = e.write("big/kept", b"one\n", 0o644);
    let plain = e.write("big/plain", b"one\n", 0o644);
    let names = too_many_names(&kept);
    let v = ok(
        &e,
        "backup-checkpoint",
        &["manual", "c1", "--path", "~/big"],
    );
    let warned = v["warnings"].as_array().unwrap().iter().any(|w| {
        w["code"] == "xattrs_unreadable"
            && w["path"].as_str().unwrap().ends_with("big/kept")
            && w["message"].as_str().unwrap().contains("64 KiB")
    });
    assert!(warned, "{v:#}");

    std::fs::write(&kept, b"newer work\n").unwrap();
    std::fs::write(&plain, b"two\n").unwrap();
    let born = e.write("big/born", b"new\n", 0o644);
    let born_names = too_many_names(&born);
    let (rc, v) = e.json("backup-rollback", &["c1"]);
    assert_eq!(rc, 3, "partial, never success: {v:#}");
    let errors = v["errors"].as_array().unwrap();
    for name in ["big/kept", "big/born"] {
        let err = errors
            .iter()
            .find(|x| x["path"].as_str().is_some_and(|p| p.ends_with(name)))
            .unwrap_or_else(|| panic!("no error for {name}: {v:#}"));
        assert_eq!(err["code"], "not_restored", "{err:#}");
        assert!(err["hint"].as_str().unwrap().contains("64 KiB"), "{err:#}");
    }
    assert_eq!(std::fs::read(&kept).unwrap(), b"newer work\n");
    assert_eq!(std::fs::read(&born).unwrap(), b"new\n");
    for (p, n) in [(&kept, names), (&born, born_names)] {
        for i in [0, n - 1] {
            let name = format!("user.n{i:05}{}", "x".repeat(200));
            assert_eq!(
                get_x(p, &name).as_deref(),
                Some(&b"v"[..]),
                "{}",
                p.display()
            );
        }
    }
    assert_eq!(
        std::fs::read(&plain).unwrap(),
        b"one\n",
        "the rest is rolled back"
    );
}
