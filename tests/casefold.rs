//! Names that differ only in case or Unicode normalization (docs/platforms.md):
//! restored side by side on a byte-exact file system, refused (exit 5,
//! `name_clash`, nothing written) on a folding one, which here is an ext4
//! loop image made with `mkfs.ext4 -O casefold` and a `chattr +F` directory,
//! standing in for macOS APFS.
//!
//! The folding test needs root, a loop device and a kernel built with
//! `CONFIG_UNICODE`. Without them it says why and returns; with `CI=true`
//! (or `REQUIRE=casefold`) it fails instead, so CI cannot silently stop testing this.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestEnv;
use serde_json::Value;

const NFC: &str = "caf\u{e9}";
const NFD: &str = "cafe\u{301}";

/// A home holding `Foo` and `foo`, and `café` spelled NFC and NFD, checkpointed.
fn clashing_home() -> TestEnv {
    let e = TestEnv::new();
    e.write("d/Foo", b"upper\n", 0o644);
    e.write("d/foo", b"lower\n", 0o644);
    e.write(&format!("n/{NFC}"), b"composed\n", 0o644);
    e.write(&format!("n/{NFD}"), b"decomposed\n", 0o644);
    e.write("ok/plain", b"plain\n", 0o644);
    let h = |rel: &str| e.home.join(rel).to_str().unwrap().to_string();
    let (d, n, ok) = (h("d"), h("n"), h("ok"));
    let args = ["manual", "names", "--path", &d, "--path", &n, "--path", &ok];
    let (code, v) = e.json("backup-checkpoint", &args);
    assert_eq!(code, 0, "{v:#}");
    e
}

/// Assert a refusal for folding names (exit 5, `name_clash`); its message.
fn name_clash_message(code: i32, v: &Value) -> String {
    assert_eq!(code, 5, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "name_clash", "{v:#}");
    v["errors"][0]["message"].as_str().unwrap().to_string()
}

#[test]
fn names_differing_in_case_or_normalization_all_come_back_on_a_byte_exact_directory() {
    let e = clashing_home();
    let target = e.home.parent().unwrap().join("restored");
    std::fs::create_dir(&target).unwrap();
    let (code, v) = e.json(
        "backup-restore",
        &["names", "--target", target.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{v:#}");
    let under = |rel: &str| {
        let found: Vec<_> = walk_files(&target)
            .into_iter()
            .filter(|p| p.ends_with(rel))
            .collect();
        assert_eq!(found.len(), 1, "{rel}: {found:?}");
        std::fs::read(&found[0]).unwrap()
    };
    assert_eq!(under("d/Foo"), b"upper\n");
    assert_eq!(under("d/foo"), b"lower\n");
    assert_eq!(under(&format!("n/{NFC}")), b"composed\n");
    assert_eq!(under(&format!("n/{NFD}")), b"decomposed\n");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An ext4 file system with the casefold feature, loop-mounted, unmounted on drop.
struct Casefold {
    mnt: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Casefold {
    /// Mount one, or say why not.
    fn mount() -> Result<Casefold, String> {
        if !common::is_root() {
            return Err("needs root (loop mount)".into());
        }
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let img = tmp.path().join("cf.img");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(16 << 20))
            .map_err(|e| e.to_string())?;
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-O",
                "casefold",
                "-E",
                "encoding=utf8",
                img.to_str().unwrap(),
            ],
        )?;
        run(
            "mount",
            &["-o", "loop", img.to_str().unwrap(), mnt.to_str().unwrap()],
        )
        .map_err(|e| {
            if !Path::new("/sys/fs/ext4/features/casefold").exists() {
                format!(
                    "{e} (this kernel has no ext4 casefold support: built without CONFIG_UNICODE)"
                )
            } else {
                e
            }
        })?;
        Ok(Casefold { mnt, _tmp: tmp })
    }

    /// A new directory with the casefold flag (`chattr +F`; only on an empty directory).
    fn folding_dir(&self, name: &str) -> PathBuf {
        let d = self.mnt.join(name);
        std::fs::create_dir(&d).unwrap();
        run("chattr", &["+F", d.to_str().unwrap()]).unwrap();
        d
    }
}

impl Drop for Casefold {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn casefold_or_skip() -> Option<Casefold> {
    match Casefold::mount() {
        Ok(c) => Some(c),
        // A kernel built without CONFIG_UNICODE has no casefold at all, and
        // nothing `.ci/run` installs can add it (the reference machine's kernel
        // is such a one): said loudly, and a failure only with REQUIRE=casefold.
        // Anything else missing (loop devices, mkfs, root) fails under CI=true.
        Err(why) if !Path::new("/sys/fs/ext4/features/casefold").exists() => {
            let required = std::env::var("REQUIRE")
                .is_ok_and(|v| v.split(',').any(|r| r.trim() == "casefold"));
            assert!(
                !required,
                "REQUIRE=casefold, but this kernel has no ext4 casefold: {why}"
            );
            eprintln!(
                "SKIPPED (casefold): this kernel has no ext4 casefold (CONFIG_UNICODE): {why}"
            );
            None
        }
        Err(why) => {
            // Fails under CI=true or REQUIRE=casefold (tests/common).
            common::skip_unless_required(
                "casefold",
                &format!("no ext4 casefold file system: {why}"),
            );
            None
        }
    }
}

#[test]
fn restore_onto_a_casefold_directory_refuses_names_that_fold_together_and_writes_nothing() {
    let Some(cf) = casefold_or_skip() else {
        return;
    };
    let e = clashing_home();
    let target = cf.folding_dir("target");
    let (code, v) = e.json(
        "backup-restore",
        &["names", "--target", target.to_str().unwrap()],
    );
    let msg = name_clash_message(code, &v);
    assert!(
        msg.contains("'Foo' and 'foo'") || msg.contains(NFC),
        "{msg}"
    );
    assert!(msg.contains("2 name clash(es)"), "{msg}");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing written"
    );
    // One of each pair, chosen with --path, restores.
    let (code, v) = e.json(
        "backup-restore",
        &[
            "names",
            "--target",
            target.to_str().unwrap(),
            "--path",
            e.home.join("ok").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(walk_files(&target).len(), 1);
}

#[test]
fn rollback_into_a_casefold_home_refuses_a_case_variant_instead_of_overwriting_it() {
    let Some(cf) = casefold_or_skip() else {
        return;
    };
    // The home itself is on the folding file system, with one spelling in the
    // snapshot and the other on disk, holding different content.
    let home = cf.folding_dir("home");
    let e = TestEnv::new();
    e.write("Notes", b"snapshot\n", 0o644);
    let notes = e.home.join("Notes");
    let (code, v) = e.json(
        "backup-checkpoint",
        &["manual", "one", "--path", notes.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{v:#}");
    std::fs::write(home.join("notes"), b"newer work\n").unwrap();
    let (code, v) = e.json(
        "backup-restore",
        &[
            "one",
            "--target",
            home.to_str().unwrap(),
            "--overwrite",
            "if-changed",
        ],
    );
    name_clash_message(code, &v);
    assert_eq!(std::fs::read(home.join("notes")).unwrap(), b"newer work\n");
}

// ---------------------------------------------------------------------------
// The same refusals on a case-insensitive FUSE file system, which runs where
// ext4 casefold cannot (this kernel has no CONFIG_UNICODE): tests/fuse/foldfs.py,
// a passthrough that folds case and Unicode normalization the way APFS does
// (case-preserving; `Foo` and `foo`, NFC and NFD `café` are one name; writing
// one spelling when the other exists writes into it). The binaries learn that
// it folds only by asking it (the probe in src/sys.rs): FUSE carries no
// casefold flag.

/// foldfs mounted over `mnt`, its files kept in `backing`; unmounted on drop.
struct FoldMount {
    mnt: PathBuf,
    child: std::process::Child,
}

impl FoldMount {
    /// Mount one, or say why not.
    fn mount(backing: &Path, mnt: &Path) -> Result<FoldMount, String> {
        if !common::is_root() {
            return Err("needs root (mounts FUSE without fusermount3)".into());
        }
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse (modprobe fuse)".into());
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tools = Command::new(root.join("scripts/fuse-tools"))
            .output()
            .map_err(|e| format!("scripts/fuse-tools: {e}"))?;
        if !tools.status.success() {
            return Err(String::from_utf8_lossy(&tools.stderr).trim().to_string());
        }
        let python = String::from_utf8_lossy(&tools.stdout).trim().to_string();
        let log_path = backing.with_extension("log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut child = Command::new(&python)
            .arg(root.join("tests/fuse/foldfs.py"))
            .args([backing, mnt])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{python}: {e}"))?;
        let parent_dev = dev(mnt.parent().unwrap());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while dev(mnt) == parent_dev {
            let exited = child.try_wait().map_err(|e| e.to_string())?;
            if exited.is_some() || std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let out = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("foldfs did not mount: {}", out.trim()));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(FoldMount {
            mnt: mnt.to_path_buf(),
            child,
        })
    }
}

impl Drop for FoldMount {
    fn drop(&mut self) {
        if !Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success())
        {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        // foldfs exits once unmounted; never leave it behind.
        for _ in 0..250 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dev(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.dev()).unwrap_or(0)
}

/// foldfs over `mnt` (created if missing), serving a new empty `backing`, or
/// `None` after saying why; fails instead under `CI=true` or `REQUIRE=fuse`.
fn fold_mount_or_skip(backing: &Path, mnt: &Path) -> Option<FoldMount> {
    std::fs::create_dir_all(backing).unwrap();
    std::fs::create_dir_all(mnt).unwrap();
    match FoldMount::mount(backing, mnt) {
        Ok(m) => Some(m),
        Err(why) => {
            common::skip_unless_required("fuse", &format!("no FUSE mount: {why}"));
            None
        }
    }
}

/// Names directly in `dir`, as bytes, sorted.
fn names_in(dir: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

#[test]
fn foldfs_treats_case_and_normalization_variants_as_one_name() {
    // The stand-in must really fold, or the refusals below would prove nothing.
    let tmp = tempfile::tempdir().unwrap();
    let (backing, mnt) = (tmp.path().join("backing"), tmp.path().join("mnt"));
    let Some(_m) = fold_mount_or_skip(&backing, &mnt) else {
        return;
    };
    std::fs::write(mnt.join("Foo"), b"upper\n").unwrap();
    assert_eq!(std::fs::read(mnt.join("foo")).unwrap(), b"upper\n");
    std::fs::write(mnt.join("foo"), b"lower\n").unwrap();
    assert_eq!(
        names_in(&backing),
        vec![b"Foo".to_vec()],
        "merged, as APFS does"
    );
    assert_eq!(std::fs::read(backing.join("Foo")).unwrap(), b"lower\n");
    std::fs::write(mnt.join(NFC), b"composed\n").unwrap();
    assert_eq!(std::fs::read(mnt.join(NFD)).unwrap(), b"composed\n");
    std::fs::remove_file(mnt.join("FOO")).unwrap();
    assert_eq!(names_in(&backing), vec![NFC.as_bytes().to_vec()]);
}

#[test]
fn restore_onto_a_case_insensitive_fuse_mount_refuses_folding_names_and_writes_nothing() {
    let e = clashing_home();
    let (backing, target) = (e.tmp.path().join("backing"), e.tmp.path().join("target"));
    let Some(_m) = fold_mount_or_skip(&backing, &target) else {
        return;
    };
    let (code, v) = e.json(
        "backup-restore",
        &["names", "--target", target.to_str().unwrap()],
    );
    let msg = name_clash_message(code, &v);
    assert!(msg.contains("2 name clash(es)"), "{msg}");
    assert!(
        msg.contains("'Foo' and 'foo'") || msg.contains(NFC),
        "{msg}"
    );
    assert!(
        names_in(&backing).is_empty(),
        "nothing written: {:?}",
        names_in(&backing)
    );
    // One of each pair, chosen with --path, restores onto the mount.
    let ok = e.home.join("ok");
    let (code, v) = e.json(
        "backup-restore",
        &[
            "names",
            "--target",
            target.to_str().unwrap(),
            "--path",
            ok.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{v:#}");
    let restored = walk_files(&backing);
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(std::fs::read(&restored[0]).unwrap(), b"plain\n");
}

#[test]
fn rollback_of_a_linux_snapshot_onto_a_case_insensitive_home_is_refused_never_merged() {
    // The snapshot holds `Foo` and `foo`, `café` in NFC and NFD (taken on a
    // byte-exact file system); then the home becomes case-insensitive (the
    // same path, now on foldfs: a Linux snapshot rolled back on a Mac).
    let e = clashing_home();
    let backing = e.tmp.path().join("backing");
    let Some(_m) = fold_mount_or_skip(&backing, &e.home) else {
        return;
    };
    let (code, v) = e.json("backup-rollback", &["names"]);
    let msg = name_clash_message(code, &v);
    assert!(msg.contains("2 name clash(es)"), "{msg}");
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert!(
        names_in(&backing).is_empty(),
        "nothing written, nothing merged: {:?}",
        walk_files(&backing)
    );
}

#[test]
fn rollback_on_a_case_insensitive_home_round_trips_and_refuses_a_renamed_variant() {
    let e = TestEnv::new();
    let backing = e.tmp.path().join("backing");
    let Some(_m) = fold_mount_or_skip(&backing, &e.home) else {
        return;
    };
    // Written through the mount: the home lives on the folding file system.
    e.write(".config/App/settings", b"original\n", 0o644);
    e.write("docs/Notes", b"snapshot\n", 0o600);
    e.write(&format!("n/{NFC}"), b"composed\n", 0o644);
    let h = |rel: &str| e.home.join(rel).to_str().unwrap().to_string();
    let (config, docs, n) = (h(".config"), h("docs"), h("n"));
    let (code, v) = e.json(
        "backup-checkpoint",
        &[
            "manual", "base", "--path", &config, "--path", &docs, "--path", &n,
        ],
    );
    assert_eq!(code, 0, "{v:#}");

    // A bad change: edited, added and removed under other spellings of the names.
    std::fs::write(e.home.join(".CONFIG/app/SETTINGS"), b"broken\n").unwrap();
    std::fs::write(e.home.join(".config/APP/extra"), b"new\n").unwrap();
    std::fs::remove_file(e.home.join(format!("N/{NFD}"))).unwrap();
    let (code, v) = e.json("backup-rollback", &["base"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        std::fs::read(backing.join(".config/App/settings")).unwrap(),
        b"original\n"
    );
    assert_eq!(
        names_in(&backing.join(".config/App")),
        vec![b"settings".to_vec()]
    );
    assert_eq!(names_in(&backing.join("n")), vec![NFC.as_bytes().to_vec()]);
    assert_eq!(
        std::fs::read(backing.join(format!("n/{NFC}"))).unwrap(),
        b"composed\n"
    );
    let (code, v) = e.json("backup-verify", &["--read-data"]);
    assert_eq!(code, 0, "{v:#}");

    // The user renames `Notes` to `notes` (a case-only rename) and `café`
    // from NFC to NFD, and keeps working in both: rolling back would write
    // the snapshot's spellings over them, merging two names into one file,
    // so it is refused and the newer work stays as it is.
    std::fs::rename(e.home.join("docs/Notes"), e.home.join("docs/notes")).unwrap();
    std::fs::write(e.home.join("docs/notes"), b"newer work\n").unwrap();
    std::fs::rename(
        e.home.join(format!("n/{NFC}")),
        e.home.join(format!("n/{NFD}")),
    )
    .unwrap();
    std::fs::write(e.home.join(format!("n/{NFD}")), b"newer too\n").unwrap();
    assert_eq!(names_in(&backing.join("docs")), vec![b"notes".to_vec()]);
    assert_eq!(names_in(&backing.join("n")), vec![NFD.as_bytes().to_vec()]);
    let (code, v) = e.json("backup-rollback", &["base"]);
    let msg = name_clash_message(code, &v);
    assert!(msg.contains("2 name clash(es)"), "{msg}");
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert_eq!(names_in(&backing.join("docs")), vec![b"notes".to_vec()]);
    assert_eq!(
        std::fs::read(backing.join("docs/notes")).unwrap(),
        b"newer work\n"
    );
    assert_eq!(names_in(&backing.join("n")), vec![NFD.as_bytes().to_vec()]);
    assert_eq!(
        std::fs::read(backing.join(format!("n/{NFD}"))).unwrap(),
        b"newer too\n"
    );
}

#[test]
fn a_root_named_in_another_spelling_is_the_same_file_there_and_undo_brings_its_content_back() {
    // `~/Notes` was checkpointed by name; on the folding home the user now has
    // `notes`. Looking `~/Notes` up finds that file (one file under both
    // spellings), so rollback updates it as any changed file, back to the
    // snapshot's name and content; the newer content is in the safety
    // snapshot and `--undo` restores it: nothing is lost, nothing merged.
    let e = TestEnv::new();
    let backing = e.tmp.path().join("backing");
    let Some(_m) = fold_mount_or_skip(&backing, &e.home) else {
        return;
    };
    e.write("Notes", b"snapshot\n", 0o600);
    let notes = e.home.join("Notes");
    let (code, v) = e.json(
        "backup-checkpoint",
        &["manual", "one", "--path", notes.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{v:#}");
    std::fs::rename(e.home.join("Notes"), e.home.join("notes")).unwrap();
    std::fs::write(e.home.join("notes"), b"newer work\n").unwrap();
    let (code, v) = e.json("backup-rollback", &["one"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["plan"]["actions"][0]["action"], "update", "{v:#}");
    assert_eq!(names_in(&backing), vec![b"Notes".to_vec()]);
    assert_eq!(std::fs::read(backing.join("Notes")).unwrap(), b"snapshot\n");
    let (code, v) = e.json("backup-rollback", &["--undo"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(names_in(&backing), vec![b"Notes".to_vec()]);
    assert_eq!(
        std::fs::read(backing.join("Notes")).unwrap(),
        b"newer work\n"
    );
}
