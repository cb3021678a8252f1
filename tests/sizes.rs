//! The largest-items view (issue 22 point 6): `backup-create --dry-run
//! --sizes` lists the largest directories and files of the tracked set and
//! suggests excludes for caches and build output it recognises.

mod common;

use common::*;
use serde_json::Value;

fn suggestion<'a>(v: &'a Value, pattern: &str) -> Option<&'a Value> {
    v["largest"]["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pattern"] == pattern)
}

#[test]
fn dry_run_sizes_lists_the_largest_items_and_suggests_excludes() {
    let e = TestEnv::with_dotfiles();
    // Replace the default excludes, so caches and build output are tracked.
    let cfg = e.tmp.path().join("config.toml");
    std::fs::write(&cfg, "[track]\nexclude = []\n").unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    e.write(
        ".config/app/node_modules/lib/index.js",
        &vec![b'x'; 300_000],
        0o644,
    );
    e.write(
        ".config/app/node_modules/lib/node_modules/dep/a.js",
        &vec![b'x'; 1000],
        0o644,
    );
    e.write(".config/app/package.json", b"{}", 0o644);
    e.write(".config/proj/Cargo.toml", b"[package]", 0o644);
    e.write(".config/proj/target/debug/bin", &vec![b'y'; 200_000], 0o644);
    // A `target` without Cargo.toml beside it is not build output.
    e.write(".config/game/target/level1", &vec![b'z'; 50_000], 0o644);
    e.write(".config/tool/__pycache__/m.pyc", &vec![b'p'; 10_000], 0o644);
    e.write(".config/big.db", &vec![b'd'; 400_000], 0o644);
    let before = dir_state(&e.home);

    let (rc, v, _) = e.run(
        "backup-create",
        &["--dry-run", "--sizes"],
        &[("BACKUP_CONFIG", &cfg)],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert!(!e.repo.exists(), "a dry run writes nothing");
    assert_eq!(dir_state(&e.home), before);
    let files = v["largest"]["files"].as_array().unwrap();
    assert_eq!(files[0]["path"], "~/.config/big.db", "{v:#}");
    assert_eq!(files[0]["bytes"], 400_000);
    assert_eq!(files[1]["path"], "~/.config/app/node_modules/lib/index.js");
    let dirs = v["largest"]["dirs"].as_array().unwrap();
    assert_eq!(dirs[0]["path"], "~/.config", "{v:#}");
    assert!(dirs[0]["bytes"].as_u64().unwrap() >= 961_000);
    assert!(dirs
        .iter()
        .any(|d| d["path"] == "~/.config/app/node_modules"));

    let nm = suggestion(&v, "node_modules/").expect("node_modules suggested");
    assert_eq!(nm["dirs"], 1, "the nested one is not counted again: {nm}");
    assert_eq!(nm["bytes"], 301_000);
    assert_eq!(nm["example"], "~/.config/app/node_modules");
    let t = suggestion(&v, "target/").expect("cargo target suggested");
    assert_eq!(t["dirs"], 1, "only the one beside Cargo.toml: {t}");
    assert_eq!(t["example"], "~/.config/proj/target");
    assert!(suggestion(&v, "__pycache__/").is_some());
    // Largest first.
    let s = v["largest"]["suggestions"].as_array().unwrap();
    assert_eq!(s[0]["pattern"], "node_modules/");

    // Human output names them too.
    let out = e.output(
        "backup-create",
        &["--dry-run", "--sizes"],
        &[("BACKUP_CONFIG", &cfg)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("largest files:"), "{text}");
    assert!(text.contains("~/.config/big.db"), "{text}");
    assert!(text.contains("suggested excludes"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("node_modules/") && l.contains("npm")),
        "{text}"
    );

    // With the defaults, those caches are excluded already: nothing to suggest for them.
    let (rc, v, _) = e.run("backup-create", &["--dry-run", "--sizes"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(suggestion(&v, "node_modules/").is_none(), "{v:#}");
    assert!(suggestion(&v, "target/").is_none(), "{v:#}");
    // Without --sizes there is no view.
    let (_, v, _) = e.run("backup-create", &["--dry-run"], &[]);
    assert!(v.get("largest").is_none());
}
