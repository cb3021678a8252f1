//! `backup-list --diff` through the real binary: snapshot against snapshot
//! and against the live home; added, removed and changed paths (content,
//! mode, type, symlink target) with sizes; odd names kept byte for byte; the
//! live diff writes nothing and spares unchanged files thanks to the cache.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use common::{build_odd_tree, entry_path_bytes, set_mode, TestEnv};
use serde_json::Value;

fn checkpoint(e: &TestEnv, name: &str, root: &str) {
    let (code, v) = e.json("backup-checkpoint", &["--path", root, "manual", "--", name]);
    assert_eq!(code, 0, "{v:#}");
}

/// (change, path, changes[]) of every item.
fn items(v: &Value) -> Vec<(String, String, Vec<String>)> {
    v["diff"]
        .as_array()
        .expect("diff payload")
        .iter()
        .map(|i| {
            (
                i["change"].as_str().unwrap().to_string(),
                i["path"].as_str().unwrap().to_string(),
                i["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn item<'v>(v: &'v Value, path: &str) -> &'v Value {
    v["diff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in the diff: {v:#}"))
}

fn s(x: &str) -> String {
    x.to_string()
}

/// Every kind of change between two snapshots, with sizes and counts.
#[test]
fn snapshot_to_snapshot_lists_every_kind_of_change() {
    let e = TestEnv::new();
    e.write(".config/app/same", b"same\n", 0o644);
    e.write(".config/app/edited", b"v1\n", 0o644);
    e.write(".config/app/gone", b"bye bye\n", 0o644);
    e.write(".config/app/chmod", b"x\n", 0o644);
    e.write(".config/app/was-file", b"file\n", 0o644);
    std::os::unix::fs::symlink("same", e.home.join(".config/app/link")).unwrap();
    checkpoint(&e, "before", "~/.config");

    e.write(".config/app/edited", b"version 2\n", 0o644);
    std::fs::remove_file(e.home.join(".config/app/gone")).unwrap();
    set_mode(&e.home.join(".config/app/chmod"), 0o600);
    std::fs::remove_file(e.home.join(".config/app/was-file")).unwrap();
    std::fs::create_dir(e.home.join(".config/app/was-file")).unwrap();
    std::fs::remove_file(e.home.join(".config/app/link")).unwrap();
    std::os::unix::fs::symlink("edited", e.home.join(".config/app/link")).unwrap();
    e.write(".config/app/new/file", b"0123456789", 0o644);
    checkpoint(&e, "after", "~/.config");

    let (code, v) = e.json("backup-list", &["--diff", "before", "after"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        items(&v),
        vec![
            (s("changed"), s("~/.config/app/chmod"), vec![s("mode")]),
            (s("changed"), s("~/.config/app/edited"), vec![s("content")]),
            (s("removed"), s("~/.config/app/gone"), vec![]),
            (s("changed"), s("~/.config/app/link"), vec![s("target")]),
            (s("added"), s("~/.config/app/new"), vec![]),
            (s("added"), s("~/.config/app/new/file"), vec![]),
            (s("changed"), s("~/.config/app/was-file"), vec![s("type")]),
        ]
    );
    let edited = item(&v, "~/.config/app/edited");
    assert_eq!(
        (edited["old_size"].as_u64(), edited["size"].as_u64()),
        (Some(3), Some(10))
    );
    let chmod = item(&v, "~/.config/app/chmod");
    assert_eq!(
        (chmod["old_mode"].as_str(), chmod["mode"].as_str()),
        (Some("0644"), Some("0600"))
    );
    let t = item(&v, "~/.config/app/was-file");
    assert_eq!(
        (t["old_type"].as_str(), t["type"].as_str()),
        (Some("file"), Some("dir"))
    );
    assert_eq!(item(&v, "~/.config/app/gone")["size"], 8);
    assert_eq!(v["from"]["label"], "before");
    assert_eq!(v["to"]["label"], "after");
    let st = &v["stats"];
    assert_eq!(
        (
            st["added"].as_u64(),
            st["removed"].as_u64(),
            st["changed"].as_u64()
        ),
        (Some(2), Some(1), Some(4))
    );
    assert_eq!(st["added_bytes"], 10);
    assert_eq!(st["removed_bytes"], 8);

    // The reverse diff mirrors it.
    let (_, back) = e.json("backup-list", &["--diff", "after", "before"]);
    assert_eq!(back["stats"]["added"], 1);
    assert_eq!(back["stats"]["removed"], 2);
    assert_eq!(item(&back, "~/.config/app/gone")["change"], "added");

    // Same snapshot: nothing.
    let (_, none) = e.json("backup-list", &["--diff", "after", "after"]);
    assert!(none["diff"].as_array().unwrap().is_empty());

    // The human view says the same.
    let out = e.output("backup-list", &["--diff", "before", "after"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("- ~/.config/app/gone"), "{text}");
    assert!(text.contains("+ ~/.config/app/new/file  (10 B)"), "{text}");
    assert!(
        text.contains("~ ~/.config/app/edited  (content 3 B -> 10 B)"),
        "{text}"
    );
    assert!(
        text.contains("2 added (10 B), 1 removed (8 B), 4 changed"),
        "{text}"
    );
}

/// Names and symlink targets that are not UTF-8 keep their exact bytes.
#[test]
fn odd_names_survive_the_diff() {
    let e = TestEnv::new();
    build_odd_tree(&e.home.join("odd"));
    checkpoint(&e, "one", "~/odd");
    std::fs::write(e.home.join(OsStr::from_bytes(b"odd/caf\xe9")), b"changed!").unwrap();
    std::fs::write(e.home.join(OsStr::from_bytes(b"odd/new \xff\nname")), b"n").unwrap();
    checkpoint(&e, "two", "~/odd");
    let (code, v) = e.json("backup-list", &["--diff", "one", "two"]);
    assert_eq!(code, 0, "{v:#}");
    let mut got: Vec<(String, Vec<u8>)> = v["diff"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "file")
        .map(|i| {
            (
                i["change"].as_str().unwrap().to_string(),
                entry_path_bytes(i),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (s("added"), b"~/odd/new \xff\nname".to_vec()),
            (s("changed"), b"~/odd/caf\xe9".to_vec()),
        ]
    );

    // `--files` gives symlink targets exactly too.
    let (_, files) = e.json("backup-list", &["two", "--files"]);
    let link = files["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "symlink" && !x["target_b64"].is_null())
        .expect("the odd tree has a non-UTF-8 symlink target");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(link["target_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, b"../caf\xe9");
    assert!(files["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["type"] == "symlink" && x["target"].as_str().is_some_and(|t| t.is_ascii()))
        .all(|x| x["target_b64"].is_null()));
}

/// A against the live home: read-only, cache-assisted, and it sees edits.
#[test]
fn live_home_diff_reads_only_what_changed_and_writes_nothing() {
    let e = TestEnv::with_dotfiles();
    checkpoint(&e, "base", "~/.config");
    // The fixtures' mtimes are old, so the checkpoint cached their hashes.
    // Every run appends to the run log; nothing else may change.
    let objects = |e: &TestEnv| {
        let mut s = e.repo_state();
        s.retain(|k, _| !k.starts_with(b"logs"));
        s
    };
    let before = objects(&e);
    let (code, v) = e.json("backup-list", &["--diff", "base"]);
    assert_eq!(code, 0, "{v:#}");
    assert!(v["diff"].as_array().unwrap().is_empty(), "{v:#}");
    assert!(v["to"].is_null());
    assert_eq!(
        v["stats"]["files_read"], 0,
        "unchanged files are not read: {v:#}"
    );
    assert!(v["stats"]["files_unchanged"].as_u64().unwrap() >= 1);

    e.write(
        ".config/nvim/init.lua",
        b"vim.o.number = false -- longer\n",
        0o644,
    );
    e.write(".config/nvim/lua/new.lua", b"return {}\n", 0o644);
    let (code, v) = e.json("backup-list", &["--diff", "base"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        items(&v),
        vec![
            (
                s("changed"),
                s("~/.config/nvim/init.lua"),
                vec![s("content")]
            ),
            (s("added"), s("~/.config/nvim/lua"), vec![]),
            (s("added"), s("~/.config/nvim/lua/new.lua"), vec![]),
        ]
    );
    assert_eq!(v["stats"]["files_read"], 2);
    assert!(
        objects(&e) == before,
        "a live diff must not write to the repository (besides its run-log line)"
    );

    let out = e.output("backup-list", &["--diff", "base"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("to the live home"), "{text}");
}

#[test]
fn unknown_snapshot_is_a_clear_error() {
    let e = TestEnv::with_dotfiles();
    checkpoint(&e, "base", "~/.zshrc");
    let (code, v) = e.json("backup-list", &["--diff", "base", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(v["errors"][0]["code"], "snapshot_not_found");
    assert!(v["errors"][0]["hint"]
        .as_str()
        .unwrap()
        .contains("backup-list"));
    // --diff takes one or two snapshots, and not with --files.
    let (code, v) = e.json("backup-list", &["--diff", "base", "--files"]);
    assert_eq!(code, 2, "{v:#}");
}
