//! `scripts/release` without building anything: the sources key that `--reuse`
//! (the Ansible tier's artifact cache) compares, and the Homebrew formula that
//! `--formula` renders and `packaging/homebrew/check-formula` checks against the
//! artifact directory and its SHA256SUMS. The real four-target build and
//! `--check` are the release check (docs/platforms.md), too slow for every run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINS: [&str; 7] = [
    "backup-checkpoint",
    "backup-create",
    "backup-list",
    "backup-verify",
    "backup-restore",
    "backup-rollback",
    "backup-prune",
];
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    text(&o)
}

/// A copy of what the release is built from (and scripts/release itself), in a
/// fresh git repository like CI's clone.
fn source_copy(dir: &Path) -> PathBuf {
    let root = dir.join("src-copy");
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    for d in ["src", "completions", "man", "packaging"] {
        ok(Command::new("cp")
            .arg("-R")
            .arg(repo_root().join(d))
            .arg(&root));
    }
    for f in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "LICENSE",
        "scripts/release",
    ] {
        std::fs::copy(repo_root().join(f), root.join(f)).unwrap();
    }
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/notes.md"), "not built into the release\n").unwrap();
    ok(Command::new("git").arg("init").arg("-q").arg(&root));
    root
}

fn stamp(root: &Path) -> String {
    ok(Command::new(root.join("scripts/release")).arg("--stamp"))
        .trim()
        .to_string()
}

/// The Ansible tier reuses its artifact while the key is unchanged (with no cargo
/// on PATH: nothing is built), and any change to a built-in source changes the key,
/// so the next run rebuilds (here: needs cargo, which is not on PATH).
#[test]
fn the_reuse_key_changes_with_every_built_in_source_and_only_with_them() {
    let t = tempfile::tempdir().unwrap();
    let root = source_copy(t.path());
    let base = stamp(&root);
    assert_eq!(base.len(), 64, "{base}");
    assert_eq!(stamp(&root), base, "the key is stable");

    std::fs::write(root.join("docs/notes.md"), "edited\n").unwrap();
    assert_eq!(stamp(&root), base, "docs/ is not built into the release");

    // A cached artifact of the current key is reused without cargo or zig.
    let out = t.path().join("dist");
    std::fs::create_dir_all(&out).unwrap();
    let triple = "x86_64-unknown-linux-musl";
    let tarball = out.join(format!("dotfiles-backup-{VERSION}-{triple}.tar.gz"));
    std::fs::write(&tarball, b"cached").unwrap();
    std::fs::write(out.join(format!(".stamp-{triple}")), format!("{base}\n")).unwrap();
    let release = |root: &Path| {
        run(Command::new(root.join("scripts/release"))
            .args(["--target", triple, "--reuse", "--out"])
            .arg(&out)
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", t.path())
            .env("CARGO_TARGET_DIR", t.path().join("target")))
    };
    let o = release(&root);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("built from these sources (--reuse)"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&tarball).unwrap(), b"cached");

    // Each built-in kind of source, edited; src/new_module.rs is created.
    let edits = [
        "src/lib.rs",
        "src/new_module.rs",
        "Cargo.lock",
        "Cargo.toml",
        "completions/bash/backup-list",
        "man/backup-list.1",
    ];
    let mut seen = vec![base.clone()];
    for what in edits {
        let target = root.join(what);
        if target.exists() {
            append(&target, "\n");
        } else {
            std::fs::write(&target, "").unwrap();
        }
        let now = stamp(&root);
        assert!(
            !seen.contains(&now),
            "editing {what} did not change the key"
        );
        seen.push(now);
        let o = release(&root);
        assert!(
            !o.status.success() && text(&o).contains("cargo not found"),
            "after editing {what} the cached artifact was reused: {}",
            text(&o)
        );
    }
}

fn append(p: &Path, s: &str) {
    let mut bytes = std::fs::read(p).unwrap();
    bytes.extend_from_slice(s.as_bytes());
    std::fs::write(p, bytes).unwrap();
}

/// Two macOS tarballs in the release layout (binaries are placeholders: the
/// formula's checks do not run them) and their SHA256SUMS.
fn mac_artifacts(dir: &Path) -> PathBuf {
    let out = dir.join("dist");
    std::fs::create_dir_all(&out).unwrap();
    let mut sums = String::new();
    for triple in ["aarch64-apple-darwin", "x86_64-apple-darwin"] {
        let name = format!("dotfiles-backup-{VERSION}-{triple}");
        let stage = dir.join("stage").join(&name);
        std::fs::create_dir_all(stage.join("bin")).unwrap();
        for b in BINS {
            std::fs::write(stage.join("bin").join(b), format!("{triple} {b}")).unwrap();
        }
        for d in ["completions", "man"] {
            ok(Command::new("cp")
                .arg("-R")
                .arg(repo_root().join(d))
                .arg(&stage));
        }
        let tarball = format!("{name}.tar.gz");
        ok(Command::new("tar")
            .arg("-czf")
            .arg(out.join(&tarball))
            .arg("-C")
            .arg(dir.join("stage"))
            .arg(&name));
        let sum = common::sha256_hex(&std::fs::read(out.join(&tarball)).unwrap());
        sums.push_str(&format!("{sum}  {tarball}\n"));
    }
    std::fs::write(out.join("SHA256SUMS"), sums).unwrap();
    out
}

fn check_formula(formula: &Path, out: &Path) -> Output {
    run(
        Command::new(repo_root().join("packaging/homebrew/check-formula"))
            .arg(formula)
            .arg(out)
            .arg(VERSION),
    )
}

#[test]
fn the_rendered_homebrew_formula_names_the_tarballs_and_their_sha256sums() {
    let ruby = Command::new("ruby").arg("--version").output().is_ok();
    if !ruby {
        // The structural checks still run below; only the Ruby ones are skipped.
        common::skip_unless_required("ruby", "no ruby on PATH (apt-get install ruby)");
    }
    let t = tempfile::tempdir().unwrap();
    let out = mac_artifacts(t.path());
    ok(Command::new(repo_root().join("scripts/release"))
        .args([
            "--formula",
            "--base-url",
            "https://example.invalid/v1",
            "--out",
        ])
        .arg(&out));
    let formula = out.join("dotfiles-backup.rb");
    let body = std::fs::read_to_string(&formula).unwrap();
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        assert!(
            body.contains(&format!("sha256 \"{sum}\"")),
            "{name}: {body}"
        );
        assert!(
            body.contains(&format!("url \"https://example.invalid/v1/{name}\"")),
            "{name}: {body}"
        );
    }
    let o = check_formula(&formula, &out);
    assert!(o.status.success(), "{}", text(&o));
    if ruby {
        assert!(
            text(&o).contains("ruby -c and a DSL dry run"),
            "{}",
            text(&o)
        );
    }

    // Each way the formula can stop matching the artifacts is caught, by name.
    let broken: [(&str, String, &str); 4] = [
        (
            "swapped checksums",
            swap_sums(&body, &sums),
            "SHA256SUMS says",
        ),
        (
            "a glob matching nothing",
            body.replace("man/*.1", "man/*.8"),
            "man/*.8 matches nothing",
        ),
        (
            "an unclosed block",
            body.replacen("  end\n", "\n", 1),
            "not closed",
        ),
        (
            "an arm url for the Intel tarball",
            body.replacen(
                &format!("{VERSION}-aarch64-apple-darwin.tar.gz"),
                &format!("{VERSION}-x86_64-apple-darwin.tar.gz"),
                1,
            ),
            "on_arm url names",
        ),
    ];
    for (what, text_of, expect) in broken {
        std::fs::write(&formula, text_of).unwrap();
        let o = check_formula(&formula, &out);
        assert!(!o.status.success(), "{what} passed: {}", text(&o));
        assert!(text(&o).contains(expect), "{what}: {}", text(&o));
    }

    // Without both macOS tarballs there is no formula to render, and it says why.
    std::fs::remove_file(out.join(format!(
        "dotfiles-backup-{VERSION}-x86_64-apple-darwin.tar.gz"
    )))
    .unwrap();
    let o = run(Command::new(repo_root().join("scripts/release"))
        .args(["--formula", "--out"])
        .arg(&out));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("both macOS tarballs are needed"),
        "{}",
        text(&o)
    );
}

fn swap_sums(body: &str, sums: &str) -> String {
    let s: Vec<&str> = sums
        .lines()
        .map(|l| l.split_once("  ").unwrap().0)
        .collect();
    body.replace(s[0], "@A@")
        .replace(s[1], s[0])
        .replace("@A@", s[1])
}
