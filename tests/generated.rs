//! Shell completions (bash, zsh, fish) and man pages are generated from the
//! clap definitions with each binary's hidden `--generate KIND` and checked
//! in under `completions/` and `man/` (so `scripts/install` and packagers
//! need no built binary to install them). This test regenerates every file
//! and fails when a checked-in one is out of date, naming the command that
//! refreshes them: `UPDATE_GENERATED=1 cargo test --test generated`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const BINS: [&str; 7] = [
    "backup-checkpoint",
    "backup-create",
    "backup-list",
    "backup-verify",
    "backup-restore",
    "backup-rollback",
    "backup-prune",
];

/// (kind, checked-in path) for one binary.
fn outputs(bin: &str) -> Vec<(&'static str, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![
        ("complete-bash", root.join("completions/bash").join(bin)),
        (
            "complete-zsh",
            root.join("completions/zsh").join(format!("_{bin}")),
        ),
        (
            "complete-fish",
            root.join("completions/fish").join(format!("{bin}.fish")),
        ),
        ("man", root.join("man").join(format!("{bin}.1"))),
    ]
}

fn generate(bin: &str, kind: &str) -> Vec<u8> {
    let out = Command::new(common::exe(bin))
        .args(["--generate", kind])
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    assert!(
        out.status.success(),
        "{bin} --generate {kind} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.stdout.is_empty(),
        "{bin} --generate {kind} printed nothing"
    );
    out.stdout
}

#[test]
fn completions_and_man_pages_are_up_to_date() {
    let update = std::env::var_os("UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for bin in BINS {
        for (kind, path) in outputs(bin) {
            let fresh = generate(bin, kind);
            let text = String::from_utf8_lossy(&fresh);
            // Every output names the binary and its real flags.
            assert!(text.contains(bin), "{kind} for {bin} does not name it");
            assert!(text.contains("json"), "{kind} for {bin} lacks --json");
            if std::fs::read(&path).ok().as_deref() == Some(&fresh[..]) {
                continue;
            }
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &fresh).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated files are out of date (the clap definitions changed):\n  {}\nregenerate with: UPDATE_GENERATED=1 cargo test --test generated",
        stale.join("\n  ")
    );
}

#[test]
fn generated_files_are_valid_for_their_tools() {
    for bin in BINS {
        let bash = generate(bin, "complete-bash");
        let checked = Command::new("bash")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&bash)?;
                c.wait_with_output()
            })
            .expect("bash is available");
        assert!(
            checked.status.success(),
            "bash -n rejects the {bin} completion: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
        let man = String::from_utf8(generate(bin, "man")).unwrap();
        assert!(man.starts_with(".ie") || man.contains(".TH"), "{man}");
        assert!(
            man.contains(".SH NAME") || man.contains(".SH \"NAME\""),
            "{man}"
        );
    }
}

#[test]
fn unknown_kind_is_a_usage_error() {
    let out = Command::new(common::exe("backup-list"))
        .args(["--generate", "complete-tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("complete-bash") && err.contains("man"),
        "{err}"
    );
}
