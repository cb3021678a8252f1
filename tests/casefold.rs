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
    assert_eq!(code, 5, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "name_clash", "{v:#}");
    let msg = v["errors"][0]["message"].as_str().unwrap();
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
    assert_eq!(code, 5, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "name_clash", "{v:#}");
    assert_eq!(std::fs::read(home.join("notes")).unwrap(), b"newer work\n");
}
