//! `scripts/install --from-artifact`: an artifact directory in the layout of
//! docs/platforms.md installs with no `cargo` on `PATH`. The artifact's
//! "binaries" are copies of `/bin/true`, a small ELF of this host's CPU (the
//! debug binaries are over 100 MB each: compressing seven takes minutes; that
//! the real ones run is `scripts/release --check`'s job); a wrong checksum and a binary for
//! another OS or CPU are refused before anything is installed.

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

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn host_triple() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64-unknown-linux-musl",
        _ => "x86_64-unknown-linux-musl",
    }
}

/// An artifact directory holding one tarball for `triple` whose binaries are
/// `bin_source(name)`, plus SHA256SUMS.
fn artifact(dir: &Path, triple: &str, bin_source: impl Fn(&str) -> PathBuf) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("dotfiles-backup-{version}-{triple}");
    let stage = dir.join("stage").join(&name);
    std::fs::create_dir_all(stage.join("bin")).unwrap();
    for b in BINS {
        std::fs::copy(bin_source(b), stage.join("bin").join(b)).unwrap();
    }
    for d in ["completions", "man"] {
        let st = Command::new("cp")
            .arg("-R")
            .arg(repo_root().join(d))
            .arg(&stage)
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::copy(repo_root().join("README.md"), stage.join("README.md")).unwrap();
    std::fs::copy(repo_root().join("LICENSE"), stage.join("LICENSE")).unwrap();
    let out = dir.join("dist");
    std::fs::create_dir_all(&out).unwrap();
    let tarball = format!("{name}.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(out.join(&tarball))
        .arg("-C")
        .arg(dir.join("stage"))
        .arg(&name)
        .status()
        .unwrap();
    assert!(st.success());
    let sum = common::sha256_hex(&std::fs::read(out.join(&tarball)).unwrap());
    std::fs::write(out.join("SHA256SUMS"), format!("{sum}  {tarball}\n")).unwrap();
    tarball
}

/// Run scripts/install with PATH holding only the system directories (no cargo).
fn install(args: &[&str], home: &Path) -> Output {
    Command::new(repo_root().join("scripts/install"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn installs_from_an_artifact_directory_without_cargo_then_reports_nothing_changed() {
    let t = tempfile::tempdir().unwrap();
    artifact(t.path(), host_triple(), |_| PathBuf::from("/bin/true"));
    let prefix = t.path().join("prefix");
    let dist = t.path().join("dist");
    let args = [
        "--from-artifact",
        dist.to_str().unwrap(),
        "--prefix",
        prefix.to_str().unwrap(),
    ];
    let o = install(&args, t.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("verified dotfiles-backup-"),
        "{}",
        text(&o)
    );
    for b in BINS {
        let got = std::fs::read(prefix.join("bin").join(b)).unwrap();
        assert_eq!(got, std::fs::read("/bin/true").unwrap(), "{b}");
        assert!(prefix
            .join("share/man/man1")
            .join(format!("{b}.1"))
            .exists());
    }
    let st = Command::new(prefix.join("bin/backup-checkpoint"))
        .status()
        .unwrap();
    assert!(st.success(), "the installed binary runs");
    let again = install(&args, t.path());
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("nothing changed"), "{}", text(&again));
}

#[test]
fn a_wrong_checksum_or_a_binary_for_another_platform_installs_nothing() {
    let t = tempfile::tempdir().unwrap();
    let tarball = artifact(t.path(), host_triple(), |_| PathBuf::from("/bin/true"));
    let dist = t.path().join("dist");
    let prefix = t.path().join("prefix");
    let base = [
        "--from-artifact",
        dist.to_str().unwrap(),
        "--prefix",
        prefix.to_str().unwrap(),
    ];

    // Explicit checksum that does not match.
    let mut args = base.to_vec();
    args.extend([
        "--sha256",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ]);
    let o = install(&args, t.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("checksum mismatch"), "{}", text(&o));
    assert!(text(&o).contains(&tarball), "{}", text(&o));
    assert!(!prefix.exists(), "nothing installed");

    // A tampered tarball (SHA256SUMS no longer matches).
    let path = dist.join(&tarball);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let o = install(&base, t.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("checksum mismatch"), "{}", text(&o));
    assert!(!prefix.exists(), "nothing installed");

    // Named for this host, but holding a macOS arm64 binary (Mach-O header).
    let t2 = tempfile::tempdir().unwrap();
    let fake = t2.path().join("macho");
    let mut header = vec![0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0x00, 0x00, 0x01];
    header.resize(4096, 0);
    std::fs::write(&fake, header).unwrap();
    artifact(t2.path(), host_triple(), |_| fake.clone());
    let dist2 = t2.path().join("dist");
    let o = install(
        &[
            "--from-artifact",
            dist2.to_str().unwrap(),
            "--prefix",
            prefix.to_str().unwrap(),
        ],
        t2.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains("aarch64-apple-darwin") && msg.contains(host_triple()),
        "{msg}"
    );
    assert!(!prefix.exists(), "nothing installed");

    // A directory with no artifact for this host names what it has.
    std::fs::write(
        dist2.join("SHA256SUMS"),
        format!(
            "{}  dotfiles-backup-9.9.9-aarch64-apple-darwin.tar.gz\n",
            "a".repeat(64)
        ),
    )
    .unwrap();
    let o = install(
        &[
            "--from-artifact",
            dist2.to_str().unwrap(),
            "--prefix",
            prefix.to_str().unwrap(),
        ],
        t2.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no artifact for this host"),
        "{}",
        text(&o)
    );
}
