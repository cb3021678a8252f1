//! Issue 3 through the real binaries, in throwaway homes: checkpoints and
//! `changed` semantics, dry runs, listing with true hashes, verification of
//! every kind of damage, health, bad inputs, secrets, `BACKUP_DISABLED`,
//! locking, and permissions under `umask 000`; and the output contract's
//! cases (phase reuse within a run, size reports, quota, automatic prune,
//! the shell helper), once `tests/contract.rs`. Every envelope is checked
//! against the JSON schema by `common::TestEnv::run`; the envelopes
//! themselves are pinned in `tests/envelope_snapshots.rs`.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const CKPT: &str = "backup-checkpoint";
const PATHS: [&str; 4] = ["--path", "~/.zshrc", "--path", "~/.config"];

fn args<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend(PATHS);
    v
}

fn checkpoint(e: &TestEnv, head: &[&str]) -> Value {
    let (rc, v) = e.json(CKPT, &args(head));
    assert_eq!(rc, 0, "{head:?}: {v:#}");
    assert_eq!(v["status"], "success", "{v:#}");
    v
}

/// Files of the object directories (what a snapshot run writes), with bytes.
fn objects(repo: &Path) -> BTreeMap<Vec<u8>, (u32, Vec<u8>)> {
    dir_state(repo)
        .into_iter()
        .filter(|(k, _)| {
            ["packs/", "index/", "trees/", "snapshots/", "config.json"]
                .iter()
                .any(|p| k.starts_with(p.as_bytes()))
        })
        .collect()
}

fn snapshot_count(e: &TestEnv) -> usize {
    let (rc, v) = e.json("backup-list", &[]);
    assert_eq!(rc, 0, "{v:#}");
    v["snapshots"].as_array().unwrap().len()
}

// ---------------------------------------------------------------- checkpoints

#[test]
fn auto_and_manual_checkpoints_are_taken_and_listed() {
    let e = TestEnv::with_dotfiles();
    let auto = checkpoint(&e, &["auto", "pre-dotfiles"]);
    assert_eq!(auto["command"], CKPT);
    assert_eq!(auto["changed"], true);
    assert_eq!(auto["dry_run"], false);
    let s = &auto["snapshot"];
    assert_eq!(s["kind"], "checkpoint");
    assert_eq!(s["label"], "pre-dotfiles");
    assert_eq!(s["reused"], false);
    assert_eq!(
        s["files"],
        3 - 1,
        "~/.zshrc and init.lua (gitconfig not tracked)"
    );
    assert_eq!(s["roots"], serde_json::json!(["~/.zshrc", "~/.config"]));
    assert!(s["parent"].is_null());
    assert_eq!(
        s["short_id"].as_str().unwrap(),
        &s["id"].as_str().unwrap()[..8]
    );

    let manual = checkpoint(&e, &["manual", "before-nvim-change"]);
    assert_eq!(manual["snapshot"]["label"], "before-nvim-change");
    assert_eq!(manual["snapshot"]["parent"], s["id"]);

    let (rc, list) = e.json("backup-list", &[]);
    assert_eq!(rc, 0);
    let labels: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["pre-dotfiles", "before-nvim-change"],
        "oldest first"
    );
    assert_eq!(list["stats"]["snapshots"], 2);

    // Every phase is accepted.
    for phase in [
        "pre-ansible",
        "pre-homebrew",
        "pre-applications",
        "post-setup",
        "bootstrap-complete",
    ] {
        let v = checkpoint(&e, &["auto", phase]);
        assert_eq!(v["snapshot"]["label"], phase);
        assert_eq!(v["changed"], false, "content already stored: {v:#}");
    }
}

#[test]
fn second_run_with_same_label_and_content_reuses_and_writes_no_objects() {
    // Files written just now: inside the racy window, so the next run re-reads
    // them (by design); the content is the same, so nothing may change.
    let e = TestEnv::new();
    e.write(".zshrc", b"fresh\n", 0o644);
    e.write(".config/app/settings.toml", b"a = 1\n", 0o644);
    // Within one bootstrap run: a new run writes its own record (tests/phases.rs).
    let run = ["auto", "pre-dotfiles", "--run", "r1"];
    let first = checkpoint(&e, &run);
    assert_eq!(first["changed"], true);
    let before = objects(&e.repo);
    let again = checkpoint(&e, &run);
    assert_eq!(again["changed"], false, "{again:#}");
    assert_eq!(again["snapshot"]["id"], first["snapshot"]["id"]);
    assert_eq!(again["snapshot"]["reused"], true);
    assert_eq!(again["stats"]["new_blobs"], 0);
    assert_eq!(again["stats"]["new_bytes"], 0);
    assert_eq!(
        objects(&e.repo),
        before,
        "no pack, index, tree or record written"
    );
    // Third run: long settled or not, still the same.
    let third = checkpoint(&e, &run);
    assert_eq!(third["changed"], false);
    assert_eq!(third["snapshot"]["id"], first["snapshot"]["id"]);
    assert_eq!(snapshot_count(&e), 1);
}

#[test]
fn settled_files_are_not_read_again() {
    let e = TestEnv::with_dotfiles();
    checkpoint(&e, &["auto", "pre-dotfiles"]);
    let again = checkpoint(&e, &["auto", "pre-dotfiles"]);
    assert_eq!(again["stats"]["files_read"], 0, "{again:#}");
    assert_eq!(again["stats"]["files_unchanged"], 2);
}

#[test]
fn other_label_same_content_adds_one_small_record_and_reports_unchanged() {
    let e = TestEnv::with_dotfiles();
    let first = checkpoint(&e, &["auto", "pre-dotfiles"]);
    let before = objects(&e.repo);
    let other = checkpoint(&e, &["manual", "same-content"]);
    assert_eq!(other["changed"], false, "{other:#}");
    assert_eq!(other["snapshot"]["reused"], false);
    assert_ne!(other["snapshot"]["id"], first["snapshot"]["id"]);
    assert_eq!(other["snapshot"]["tree"], first["snapshot"]["tree"]);
    assert_eq!(other["snapshot"]["new_bytes"], 0);
    let after = objects(&e.repo);
    let added: Vec<String> = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(added.len(), 1, "exactly one new file: {added:?}");
    assert!(added[0].starts_with("snapshots/"), "{added:?}");
    assert!(after[added[0].as_bytes()].1.len() < 4096, "a small record");
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "existing objects untouched");
    }
    assert_eq!(snapshot_count(&e), 2);
}

#[test]
fn content_edit_reports_changed_with_only_the_new_bytes() {
    let e = TestEnv::with_dotfiles();
    let first = checkpoint(&e, &["auto", "pre-dotfiles"]);
    std::fs::write(e.home.join(".zshrc"), b"export EDITOR=hx\n").unwrap();
    let edited = checkpoint(&e, &["auto", "pre-dotfiles"]);
    assert_eq!(edited["changed"], true, "{edited:#}");
    assert_eq!(edited["snapshot"]["reused"], false);
    assert_ne!(edited["snapshot"]["id"], first["snapshot"]["id"]);
    assert_eq!(edited["snapshot"]["new_bytes"], 17);
    assert_eq!(edited["stats"]["new_blobs"], 1);
    // A mode change alone is a change of state too (new tree), without new bytes.
    set_mode(&e.home.join(".zshrc"), 0o600);
    let chmod = checkpoint(&e, &["auto", "pre-dotfiles"]);
    assert_eq!(chmod["changed"], true, "{chmod:#}");
    assert_eq!(chmod["stats"]["new_bytes"], 0);
    // Going back to content the repository already has: not changed.
    std::fs::write(e.home.join(".zshrc"), b"export EDITOR=nvim\n").unwrap();
    set_mode(&e.home.join(".zshrc"), 0o644);
    let back = checkpoint(&e, &["auto", "pre-dotfiles"]);
    assert_eq!(back["stats"]["new_bytes"], 0, "{back:#}");
}

#[test]
fn odd_tree_checkpoints_and_lists_every_entry_with_true_facts() {
    let e = TestEnv::new();
    build_odd_tree(&e.home.join("odd"));
    let v = checkpoint(&e, &["manual", "odd", "--path", "~/odd"]);
    assert_eq!(v["changed"], true);
    let again = checkpoint(&e, &["manual", "odd", "--path", "~/odd"]);
    assert_eq!(again["changed"], false);
    assert_eq!(again["snapshot"]["reused"], true);
    assert_eq!(again["stats"]["files_read"], 0, "settled files not re-read");
    assert_listing_matches_disk(&e, "odd", "~/odd", &e.home.join("odd"));
}

/// Every entry under `dir` appears in `backup-list <sel> --files` (as `shown/...`)
/// with the right type, mode, size, sha256, target and mtime, and nothing else does.
fn assert_listing_matches_disk(e: &TestEnv, sel: &str, shown: &str, dir: &Path) {
    let (rc, v) = e.json("backup-list", &[sel, "--files"]);
    assert_eq!(rc, 0, "{v:#}");
    let listed: BTreeMap<Vec<u8>, &Value> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (entry_path_bytes(x), x))
        .collect();
    assert_eq!(v["stats"]["entries"], listed.len());
    let mut expected = vec![shown.as_bytes().to_vec()];
    for (rel, meta) in walk(dir) {
        let mut full = shown.as_bytes().to_vec();
        full.push(b'/');
        full.extend_from_slice(&rel);
        expected.push(full.clone());
        let x = listed
            .get(&full)
            .unwrap_or_else(|| panic!("{:?} not listed", String::from_utf8_lossy(&full)));
        let what = String::from_utf8_lossy(&full);
        let p = dir.join(OsStr::from_bytes(&rel));
        let utf8 = std::str::from_utf8(&full).is_ok();
        assert_eq!(
            x["path_b64"].is_null(),
            utf8,
            "{what}: path_b64 iff not UTF-8"
        );
        assert_eq!(x["mtime_ns"], mtime_ns(&meta), "{what}");
        let t = meta.file_type();
        if t.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(x["type"], "file", "{what}");
            assert_eq!(x["size"], bytes.len(), "{what}");
            assert_eq!(x["sha256"], sha256_hex(&bytes), "{what}");
            assert_eq!(x["mode"], format!("{:04o}", meta.mode() & 0o7777), "{what}");
        } else if t.is_symlink() {
            let target = std::fs::read_link(&p).unwrap();
            let tb = target.as_os_str().as_bytes();
            assert_eq!(x["type"], "symlink", "{what}");
            assert_eq!(x["size"], tb.len(), "{what}");
            assert!(x["sha256"].is_null());
            // The listing shows targets as text; a non-UTF-8 target is shown lossily
            // (the tree stores it verbatim: see roundtrip_prop).
            assert_eq!(
                x["target"].as_str().unwrap(),
                String::from_utf8_lossy(tb),
                "{what}"
            );
        } else {
            assert_eq!(x["type"], "dir", "{what}");
            assert_eq!(x["size"], 0);
            assert_eq!(x["mode"], format!("{:04o}", meta.mode() & 0o7777), "{what}");
        }
    }
    expected.sort();
    let got: Vec<Vec<u8>> = listed.keys().cloned().collect();
    assert_eq!(got, expected, "listing holds exactly the entries on disk");
}

// ---------------------------------------------------------------- dry run

#[test]
fn config_only_dry_run_writes_nothing_to_an_existing_repository() {
    let e = TestEnv::with_dotfiles();
    checkpoint(&e, &["auto", "pre-ansible"]);
    std::fs::write(e.home.join(".zshrc"), b"new content\n").unwrap();
    let before = e.repo_state();
    let meta_before: Vec<(Vec<u8>, i64)> = walk(&e.repo)
        .into_iter()
        .map(|(r, m)| (r, mtime_ns(&m)))
        .collect();
    let (rc, v) = e.json("backup-create", &["--config-only", "--dry-run"]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["changed"], true, "would store the edited .zshrc");
    let roots: Vec<&str> = v["roots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["present"] == true)
        .map(|r| r["root"].as_str().unwrap())
        .collect();
    for r in ["~/.zshrc", "~/.gitconfig", "~/.config"] {
        assert!(roots.contains(&r), "default config tracks {r}: {roots:?}");
    }
    assert!(v["excluded"].is_array());
    assert_eq!(e.repo_state(), before, "no byte of the repository changed");
    let meta_after: Vec<(Vec<u8>, i64)> = walk(&e.repo)
        .into_iter()
        .map(|(r, m)| (r, mtime_ns(&m)))
        .collect();
    assert_eq!(meta_after, meta_before, "not even an mtime");
}

#[test]
fn dry_run_does_not_create_the_repository_or_its_parents() {
    let e = TestEnv::with_dotfiles();
    let repo = e.tmp.path().join("not/yet/repo");
    let (rc, v, _) = e.run(
        "backup-create",
        &["--config-only", "--dry-run"],
        &[("BACKUP_REPO", repo.to_str().unwrap())],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["dry_run"], true);
    assert!(v["snapshot"].is_object(), "says what would be stored");
    assert!(v["roots"].is_array() && v["excluded"].is_array(), "{v:#}");
    assert!(!e.tmp.path().join("not").exists(), "nothing created");
    let (rc, v) = e.json(CKPT, &args(&["auto", "pre-ansible", "--dry-run"]));
    assert_eq!(rc, 0, "{v:#}");
    assert!(!e.repo.exists());
}

// ---------------------------------------------------------------- listing

#[test]
fn list_selects_by_label_id_prefix_and_latest_with_true_hashes() {
    let e = TestEnv::with_dotfiles();
    set_mode(&e.home.join(".zshrc"), 0o640);
    let cp = checkpoint(&e, &["manual", "before-nvim-change"]);
    let id = cp["snapshot"]["id"].as_str().unwrap().to_string();
    for sel in [
        "before-nvim-change",
        &id[..6],
        &id[..4],
        id.as_str(),
        "latest",
    ] {
        let (rc, v) = e.json("backup-list", &[sel, "--files"]);
        assert_eq!(rc, 0, "{sel}: {v:#}");
        assert_eq!(v["snapshot"]["id"], id.as_str(), "{sel}");
        let z = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["path"] == "~/.zshrc")
            .expect("~/.zshrc listed");
        let bytes = std::fs::read(e.home.join(".zshrc")).unwrap();
        assert_eq!(z["mode"], "0640");
        assert_eq!(z["size"], bytes.len());
        assert_eq!(z["sha256"], sha256_hex(&bytes));
        assert_eq!(z["type"], "file");
    }
    // `--files` alone lists the latest.
    let (rc, v) = e.json("backup-list", &["--files"]);
    assert_eq!(rc, 0);
    assert_eq!(v["snapshot"]["id"], id.as_str());
    let (_, list) = e.json("backup-list", &[]);
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 1);
    assert!(list["stats"]["repository_bytes"].as_u64().unwrap() > 0);
    // Unknown selectors fail clearly.
    let (rc, v) = e.json("backup-list", &["no-such-label", "--files"]);
    assert_eq!(rc, 1, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "snapshot_not_found");
}

#[test]
fn list_json_carries_snapshot_summaries() {
    let e = TestEnv::with_dotfiles();
    checkpoint(&e, &["auto", "pre-dotfiles"]);
    let (rc, v) = e.json("backup-create", &args(&["--tag", "nightly"]));
    assert_eq!(rc, 0, "{v:#}");
    let (rc, v) = e.json("backup-list", &[]);
    assert_eq!(rc, 0);
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["kind"], "checkpoint");
    assert_eq!(snaps[1]["kind"], "backup");
    assert_eq!(snaps[1]["label"], "backup");
    assert_eq!(snaps[1]["tags"], serde_json::json!(["nightly"]));
    assert_eq!(snaps[0]["files"], 2);
    assert_eq!(snaps[0]["dirs"], 2);
    assert_eq!(snaps[0]["bytes"], 19 + 20);
    assert!(v["stats"]["repository_bytes"].as_u64().unwrap() > 0);
    let (_, only) = e.json("backup-list", &["--kind", "backup"]);
    assert_eq!(only["snapshots"].as_array().unwrap().len(), 1);
}

#[test]
fn list_and_verify_on_a_missing_repository_fail_without_creating_it() {
    let e = TestEnv::new();
    for bin in ["backup-list", "backup-verify"] {
        let (rc, v) = e.json(bin, &[]);
        assert_eq!(rc, 1, "{bin}: {v:#}");
        assert_eq!(v["errors"][0]["code"], "repository_missing");
        assert!(!e.repo.exists());
    }
}

// ---------------------------------------------------------------- verify

/// Take a checkpoint of a small home with a marker file, return the env.
fn damaged_fixture() -> TestEnv {
    let e = TestEnv::with_dotfiles();
    e.write(
        ".config/nvim/plugins.lua",
        b"-- unique marker content for the corruption tests --\n",
        0o644,
    );
    checkpoint(&e, &["auto", "pre-dotfiles"]);
    let (rc, v) = e.json("backup-verify", &["--read-data"]);
    assert_eq!(rc, 0, "clean before damage: {v:#}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["problems"], serde_json::json!([]));
    e
}

fn only(repo: &Path, sub: &str) -> PathBuf {
    let v = names_in(repo, sub);
    assert_eq!(v.len(), 1, "{sub}: {v:?}");
    v[0].clone()
}

fn rewrite(p: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(p).unwrap();
    f(&mut b);
    std::fs::write(p, b).unwrap();
}

/// Verify (with and without --read-data where it must be caught), expect exit 6
/// and a problem with `code`; return the problems.
fn expect_corrupt(e: &TestEnv, code: &str, structural: bool) -> Vec<Value> {
    let modes: &[&[&str]] = if structural {
        &[&[], &["--read-data"]]
    } else {
        &[&["--read-data"]]
    };
    let mut last = Vec::new();
    for m in modes {
        let (rc, v) = e.json("backup-verify", m);
        assert_eq!(rc, 6, "{code} {m:?}: {v:#}");
        assert_eq!(v["status"], "failed");
        assert_eq!(v["errors"][0]["code"], "repository_corrupt");
        assert_eq!(v["errors"][0]["retryable"], false);
        let problems = v["problems"].as_array().unwrap().clone();
        assert!(
            problems.iter().any(|p| p["code"] == code),
            "{code} {m:?}: {v:#}"
        );
        last = problems;
    }
    let (rc, h) = e.json(CKPT, &["--health-check"]);
    assert_eq!(rc, 1, "{code}: health must be red: {h:#}");
    assert_eq!(h["health"], "red");
    assert_eq!(h["status"], "failed");
    let verify = h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "verify")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(verify["status"], "red", "{code}: {h:#}");
    last
}

fn names_marker(problems: &[Value]) -> bool {
    problems.iter().any(|p| {
        p["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains("checkpoint pre-dotfiles"))
            && p["paths"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "~/.config/nvim/plugins.lua")
    })
}

#[test]
fn flipped_byte_in_a_blob_names_the_snapshot_and_the_path() {
    let e = damaged_fixture();
    let pack = only(&e.repo, "packs");
    let marker = b"unique marker content";
    rewrite(&pack, |b| {
        let at = b
            .windows(marker.len())
            .position(|w| w == marker)
            .expect("marker stored in the pack");
        b[at + 3] ^= 0x01;
    });
    // Structure is intact: the default (structural) verify does not re-hash.
    let problems = expect_corrupt(&e, "corrupt_blob", false);
    assert!(names_marker(&problems), "{problems:#?}");
    let p = problems
        .iter()
        .find(|p| p["code"] == "corrupt_blob")
        .unwrap();
    assert!(
        p["object"].as_str().unwrap().contains("packs/"),
        "names the pack: {p}"
    );
    // Only the damaged file is named.
    assert_eq!(p["paths"].as_array().unwrap().len(), 1, "{p}");
}

#[test]
fn truncated_pack_is_detected_structurally() {
    let e = damaged_fixture();
    let pack = only(&e.repo, "packs");
    rewrite(&pack, |b| b.truncate(20));
    let problems = expect_corrupt(&e, "truncated_pack", true);
    assert!(names_marker(&problems), "{problems:#?}");
}

#[test]
fn pack_with_damaged_trailer_is_detected_by_read_data() {
    let e = damaged_fixture();
    let pack = only(&e.repo, "packs");
    rewrite(&pack, |b| {
        let n = b.len();
        b.truncate(n - 10);
    });
    expect_corrupt(&e, "corrupt_pack", false);
}

/// Two pack damages the cases above do not make: one flipped byte inside
/// the trailer (the blobs intact) and the last 20 bytes cut off.
#[test]
fn a_flipped_trailer_byte_or_a_cut_tail_makes_verify_fail_and_health_red() {
    type Damage = (&'static str, fn(&mut Vec<u8>));
    let damage: [Damage; 2] = [
        ("flip a byte of the trailer", |b| {
            let i = b.len() - 30;
            b[i] ^= 1;
        }),
        ("truncate a pack", |b| b.truncate(b.len() - 20)),
    ];
    for (what, f) in damage {
        let e = contract_home();
        checkpoint(&e, &["auto", "pre-dotfiles"]);
        let (rc, v) = e.json("backup-verify", &["--read-data"]);
        assert_eq!(rc, 0, "{v}");
        rewrite(&only(&e.repo, "packs"), f);
        let (rc, v) = e.json("backup-verify", &["--read-data"]);
        assert_eq!(rc, 6, "{what}: {v}");
        assert_eq!(v["errors"][0]["code"], "repository_corrupt");
        assert!(!v["problems"].as_array().unwrap().is_empty(), "{what}");
        let (rc, h) = e.json(CKPT, &["--health-check"]);
        assert_eq!(rc, 1, "{what}: health must be red: {h}");
        assert_eq!(h["health"], "red");
    }
}

#[test]
fn deleted_pack_is_detected_structurally() {
    let e = damaged_fixture();
    std::fs::remove_file(only(&e.repo, "packs")).unwrap();
    let problems = expect_corrupt(&e, "missing_pack", true);
    assert!(names_marker(&problems), "{problems:#?}");
}

#[test]
fn corrupt_index_is_named() {
    let e = damaged_fixture();
    let index = only(&e.repo, "index");
    rewrite(&index, |b| {
        let n = b.len();
        b[n - 5] ^= 0x40;
    });
    let problems = expect_corrupt(&e, "corrupt_index", true);
    let name = index.file_name().unwrap().to_str().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["code"] == "corrupt_index" && p["object"].as_str().unwrap().contains(name)),
        "{problems:#?}"
    );
    // Blobs only that index knew are then missing for the snapshot.
    assert!(
        problems.iter().any(|p| p["code"] == "missing_blob"),
        "{problems:#?}"
    );
}

#[test]
fn corrupt_snapshot_record_is_named_and_blocks_writers_and_readers() {
    let e = damaged_fixture();
    let rec = only(&e.repo, "snapshots");
    rewrite(&rec, |b| {
        let at = b.windows(12).position(|w| w == b"pre-dotfiles").unwrap();
        b[at] = b'P';
    });
    let problems = expect_corrupt(&e, "corrupt_snapshot", true);
    let name = rec.file_name().unwrap().to_str().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["object"].as_str().unwrap().contains(name)),
        "{problems:#?}"
    );
    // Listing and new checkpoints refuse rather than silently ignoring it.
    let (rc, v) = e.json("backup-list", &[]);
    assert_eq!(rc, 6, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "corrupt_snapshot");
    assert!(v["errors"][0]["path"].as_str().unwrap().contains(name));
    let before = objects(&e.repo);
    let (rc, v) = e.json(CKPT, &args(&["auto", "post-setup"]));
    assert_eq!(rc, 6, "{v:#}");
    assert_eq!(objects(&e.repo), before, "nothing committed");
}

#[test]
fn corrupt_tree_is_named_with_its_snapshot() {
    let e = damaged_fixture();
    let tree = only(&e.repo, "trees");
    rewrite(&tree, |b| {
        let at = b.windows(6).position(|w| w == b"init.l").unwrap();
        b[at] = b'I';
    });
    let problems = expect_corrupt(&e, "corrupt_tree", true);
    let p = problems
        .iter()
        .find(|p| p["code"] == "corrupt_tree")
        .unwrap();
    assert!(
        p["snapshots"][0]
            .as_str()
            .unwrap()
            .contains("checkpoint pre-dotfiles"),
        "{p}"
    );
    let (rc, v) = e.json("backup-list", &["pre-dotfiles", "--files"]);
    assert_eq!(rc, 6, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "corrupt_tree");
}

#[test]
fn deleted_tree_is_named() {
    let e = damaged_fixture();
    std::fs::remove_file(only(&e.repo, "trees")).unwrap();
    expect_corrupt(&e, "missing_tree", true);
}

// ---------------------------------------------------------------- health

#[test]
fn health_check_is_green_on_a_good_repository() {
    let e = TestEnv::with_dotfiles();
    checkpoint(&e, &["auto", "pre-ansible"]);
    let (rc, v) = e.json(CKPT, &args(&["--health-check"]));
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["status"], "success");
    assert_ne!(v["health"], "red");
    let checks = v["checks"].as_array().unwrap();
    let by_name = |n: &str| -> &Value {
        checks
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("check {n} missing: {v:#}"))
    };
    for n in [
        "version",
        "config",
        "tracked_paths",
        "repository",
        "writable",
        "lock",
        "last_checkpoint",
        "verify",
    ] {
        assert_eq!(by_name(n)["status"], "green", "{n}: {v:#}");
    }
    assert_ne!(by_name("disk_space")["status"], "red");
    assert_eq!(v["stats"]["red"], 0);
    // The health check itself writes no objects.
    assert!(by_name("last_checkpoint")["message"]
        .as_str()
        .unwrap()
        .contains("pre-ansible"));
}

#[test]
fn health_check_before_any_checkpoint_is_not_red_and_creates_nothing() {
    let e = TestEnv::with_dotfiles();
    let (rc, v) = e.json(CKPT, &args(&["--health-check"]));
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["health"], "yellow");
    assert!(!e.repo.exists());
}

// ---------------------------------------------------------------- bad input

#[test]
fn unknown_phase_is_a_usage_error_listing_the_valid_phases() {
    let e = TestEnv::with_dotfiles();
    let (rc, v) = e.json(CKPT, &args(&["auto", "pre-bogus"]));
    assert_eq!(rc, 2, "{v:#}");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["errors"][0]["code"], "unknown_phase");
    let msg = v["errors"][0]["message"].as_str().unwrap();
    for p in [
        "pre-ansible",
        "pre-homebrew",
        "pre-dotfiles",
        "pre-applications",
        "post-setup",
        "bootstrap-complete",
    ] {
        assert!(msg.contains(p), "{p} not listed in {msg:?}");
    }
    assert!(!e.repo.exists(), "nothing created");
}

#[test]
fn unsafe_names_are_usage_errors() {
    let e = TestEnv::with_dotfiles();
    for bad in [
        "../x", "", "a/b", "..", ".", "-x", "-dash", ".hidden", "a b", "latest",
    ] {
        let mut a = PATHS.to_vec();
        a.extend(["manual", "--", bad]);
        let (rc, v) = e.json(CKPT, &a);
        assert_eq!(rc, 2, "{bad:?}: {v:#}");
        assert_eq!(v["status"], "failed");
        assert_eq!(v["errors"][0]["code"], "unsafe_name", "{bad:?}: {v:#}");
        let label = format!("--label={bad}");
        let (rc, v) = e.json("backup-create", &args(&[&label]));
        assert_eq!(rc, 2, "create --label {bad:?}: {v:#}");
    }
    let long = "x".repeat(65);
    let (rc, _) = e.json(CKPT, &args(&["manual", &long]));
    assert_eq!(rc, 2);
    assert!(!e.repo.exists(), "nothing created");
}

#[test]
fn an_unknown_config_key_is_a_usage_error_naming_the_key_and_the_file() {
    let e = TestEnv::with_dotfiles();
    let cfg = e.tmp.path().join("c.toml");
    std::fs::write(&cfg, "[track]\nconfg = []\n").unwrap();
    let (rc, v) = e.json(CKPT, &["manual", "x", "--config", cfg.to_str().unwrap()]);
    assert_eq!(rc, 2, "{v:#}");
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("confg") && msg.contains("c.toml"), "{msg}");
}

#[test]
fn usage_errors_with_json_print_exactly_one_failed_envelope() {
    let e = TestEnv::new();
    let cases: &[(&str, &[&str])] = &[
        (CKPT, &["--no-such-flag"]),
        (CKPT, &[]),
        (CKPT, &["auto"]),
        (CKPT, &["sideways", "x"]),
        (CKPT, &["auto", "pre-ansible", "--wait", "soon"]),
        ("backup-create", &["--bogus"]),
        ("backup-list", &["--kind", "nonsense"]),
        ("backup-list", &["a", "b"]),
        ("backup-verify", &["--read-data=maybe"]),
    ];
    for (bin, a) in cases {
        let (rc, v) = e.json(bin, a);
        assert_eq!(rc, 2, "{bin} {a:?}: {v:#}");
        assert_eq!(v["status"], "failed");
        assert_eq!(v["exit_code"], 2);
        assert_eq!(v["command"], *bin);
        assert_eq!(v["errors"].as_array().unwrap().len(), 1);
        assert!(v["errors"][0]["hint"].is_string(), "{v:#}");
    }
    // --json anywhere on the line, including before the subcommand.
    let out = e.output(CKPT, &["--json", "auto", "pre-bogus"], &[]);
    let (rc, v) = parse_envelope(&out);
    assert_eq!(rc, 2);
    assert_eq!(v["errors"][0]["code"], "unknown_phase");
    assert!(!e.repo.exists());
}

#[test]
fn repository_path_that_is_a_file_is_a_clear_error_and_nothing_changes() {
    let e = TestEnv::with_dotfiles();
    let dir = e.tmp.path().join("place");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("repo-file");
    std::fs::write(&file, b"not a repository").unwrap();
    set_mode(&file, 0o644);
    let before = dir_state(&dir);
    for (bin, a) in [
        (CKPT, args(&["auto", "pre-ansible"])),
        ("backup-create", args(&[])),
        ("backup-list", vec![]),
        ("backup-verify", vec![]),
    ] {
        let (rc, v, _) = e.run(bin, &a, &[("BACKUP_REPO", file.to_str().unwrap())]);
        assert_eq!(rc, 2, "{bin}: {v:#}");
        assert_eq!(v["errors"][0]["code"], "repository_not_a_directory");
        assert!(v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("repo-file"));
        assert_eq!(dir_state(&dir), before, "{bin} changed something");
    }
    // A non-empty directory that is not a repository is refused too.
    let foreign = e.tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    let before = dir_state(&foreign);
    let (rc, v, _) = e.run(
        CKPT,
        &args(&["auto", "pre-ansible"]),
        &[("BACKUP_REPO", foreign.to_str().unwrap())],
    );
    assert_eq!(rc, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "not_a_repository");
    assert_eq!(dir_state(&foreign), before);
}

#[test]
fn an_interrupted_or_racing_first_checkpoint_never_wedges_the_repository() {
    // What a first run killed before its format file was published leaves
    // (a temp file, the lock, empty subdirectories) is finished by the next
    // run, not refused as "not a backup repository".
    let e = TestEnv::with_dotfiles();
    std::fs::create_dir_all(e.repo.join("packs")).unwrap();
    std::fs::write(e.repo.join(".dfb-tmp.999999.0.config.json"), b"{\"for").unwrap();
    std::fs::write(e.repo.join("lock"), b"").unwrap();
    let (rc, v) = e.json(CKPT, &["auto", "pre-ansible"]);
    assert_eq!(rc, 0, "{v:#}");
    let (rc, v) = e.json("backup-verify", &["--read-data"]);
    assert_eq!(rc, 0, "{v:#}");

    // A subdirectory with content is not what a creation leaves: refused,
    // and the message names what is there.
    let other = e.tmp.path().join("other");
    std::fs::create_dir_all(other.join("snapshots")).unwrap();
    std::fs::write(other.join("snapshots/x.json"), b"{}").unwrap();
    let (rc, v, _) = e.run(
        CKPT,
        &args(&["auto", "pre-ansible"]),
        &[("BACKUP_REPO", other.to_str().unwrap())],
    );
    assert_eq!(rc, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "not_a_repository");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("snapshots"),
        "{v:#}"
    );

    // Two first runs at once: both succeed (one waits for the other's lock)
    // and share one repository id.
    for round in 0..4 {
        let repo = e.tmp.path().join(format!("race{round}"));
        let spawn = |label: &str| {
            e.command(
                CKPT,
                &["--json", "manual", label],
                &[("BACKUP_REPO", repo.to_str().unwrap())],
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        };
        let (a, b) = (spawn("a"), spawn("b"));
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let (rc, v, _) = e.run(
            "backup-list",
            &args(&[]),
            &[("BACKUP_REPO", repo.to_str().unwrap())],
        );
        assert_eq!(rc, 0, "{v:#}");
        assert!(!v["snapshots"].as_array().unwrap().is_empty(), "{v:#}");
    }
}

#[test]
fn a_path_flag_that_names_nothing_is_a_warning_naming_it() {
    let e = TestEnv::with_dotfiles();
    let typo = e.home.join(".zhsrc");
    let (rc, v) = e.json(
        CKPT,
        &[
            "manual",
            "x",
            "--path",
            typo.to_str().unwrap(),
            "--path",
            "~/.zshrc",
        ],
    );
    assert_eq!(rc, 0, "{v:#}");
    let absent: Vec<&Value> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "path_absent")
        .collect();
    assert_eq!(absent.len(), 1, "{v:#}");
    assert_eq!(absent[0]["path"], "~/.zhsrc");
    // Configured roots that are absent are normal (the defaults name many).
    let (rc, v) = e.json(CKPT, &["manual", "y"]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(
        !v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "path_absent"),
        "{v:#}"
    );
}

#[test]
fn the_same_home_spelled_another_way_is_the_same_home() {
    let e = TestEnv::with_dotfiles();
    checkpoint(&e, &["manual", "c1"]);
    let link = e.tmp.path().join("home-link");
    std::os::unix::fs::symlink(&e.home, &link).unwrap();
    let home = e.home.to_str().unwrap().to_string();
    let spellings = [
        format!("{home}/"),
        home.replacen('/', "//", 2),
        format!("{home}/."),
        link.to_str().unwrap().to_string(),
    ];
    for spelling in &spellings {
        std::fs::write(e.home.join(".zshrc"), b"changed\n").unwrap();
        let (rc, v, _) = e.run("backup-rollback", &args(&["c1"]), &[("HOME", spelling)]);
        assert_eq!(rc, 0, "HOME={spelling}: {v:#}");
        assert_ne!(std::fs::read(e.home.join(".zshrc")).unwrap(), b"changed\n");
        let (rc, v, _) = e.run("backup-list", &args(&[]), &[("HOME", spelling)]);
        assert_eq!(rc, 0, "{v:#}");
        assert!(
            v["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["label"] == "c1"),
            "HOME={spelling}: {v:#}"
        );
    }
}

#[test]
fn a_file_over_max_file_size_is_named_in_every_checkpoint_not_only_dry_runs() {
    let e = TestEnv::with_dotfiles();
    e.write(
        ".config/dotfiles-backup/config.toml",
        b"[track]\nconfig = [\"~/.config\"]\nmax_file_size = 100\n",
        0o644,
    );
    e.write(".config/app/big.db", &[7u8; 200], 0o644);
    let (rc, v) = e.json(CKPT, &["manual", "x"]);
    assert_eq!(rc, 0, "{v:#}");
    let w: Vec<&Value> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "file_too_large")
        .collect();
    assert_eq!(w.len(), 1, "{v:#}");
    assert_eq!(w[0]["path"], "~/.config/app/big.db");
}

#[test]
fn newer_repository_format_is_refused_and_left_untouched() {
    let e = TestEnv::with_dotfiles();
    checkpoint(&e, &["auto", "pre-ansible"]);
    let cfg = e.repo.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    config["version"] = 99.into();
    std::fs::write(&cfg, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    std::fs::write(e.home.join(".zshrc"), b"edited so a write would happen\n").unwrap();
    let before = e.repo_state();
    for (bin, a) in [
        (CKPT, args(&["auto", "pre-dotfiles"])),
        ("backup-create", args(&[])),
        ("backup-list", vec![]),
        ("backup-verify", vec!["--read-data"]),
    ] {
        let (rc, v) = e.json(bin, &a);
        assert_eq!(rc, 6, "{bin}: {v:#}");
        assert_eq!(v["errors"][0]["code"], "unsupported_format");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("99"));
        assert_eq!(e.repo_state(), before, "{bin} touched the repository");
    }
    let (rc, h) = e.json(CKPT, &args(&["--health-check"]));
    assert_eq!(rc, 1, "{h:#}");
    assert_eq!(h["health"], "red");
}

#[test]
fn unreadable_file_gives_partial_naming_it_and_stores_the_rest() {
    // As root the binaries run as `nobody`, for whom chmod 000 stops the read.
    let e = TestEnv::with_dotfiles().unprivileged();
    let locked = e.write(".config/nvim/locked.lua", b"can't touch this\n", 0o644);
    set_mode(&locked, 0o000);
    let (rc, v) = e.json(CKPT, &args(&["manual", "partial"]));
    assert_eq!(rc, 3, "{v:#}");
    assert_eq!(v["status"], "partial");
    let err = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["path"] == "~/.config/nvim/locked.lua")
        .unwrap_or_else(|| panic!("error names the path: {v:#}"));
    assert!(err["message"].as_str().unwrap().contains("locked.lua"));
    assert_eq!(v["snapshot"]["omitted"], 1);
    let (rc, list) = e.json("backup-list", &["partial", "--files"]);
    assert_eq!(rc, 0);
    let entries = list["entries"].as_array().unwrap();
    let init = entries
        .iter()
        .find(|x| x["path"] == "~/.config/nvim/init.lua")
        .unwrap();
    assert_eq!(init["sha256"], sha256_hex(b"vim.o.number = true\n"));
    let l = entries
        .iter()
        .find(|x| x["path"] == "~/.config/nvim/locked.lua")
        .unwrap();
    assert!(l["sha256"].is_null());
    assert_eq!(l["omitted"], "unreadable");
    set_mode(&locked, 0o644);
}

// ---------------------------------------------------------------- secrets

#[test]
fn secret_key_is_skipped_with_a_warning_and_its_bytes_are_nowhere_in_the_repository() {
    let e = TestEnv::with_dotfiles();
    let key = noise(411, 99);
    e.write(".ssh/id_ed25519", &key, 0o600);
    e.write(".ssh/config", b"Host *\n  AddKeysToAgent yes\n", 0o644);
    set_mode(&e.home.join(".ssh"), 0o700);
    let (rc, v) = e.json(CKPT, &["manual", "with-ssh", "--path", "~/.ssh"]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["status"], "success");
    let w: Vec<&Value> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "secret_skipped")
        .collect();
    assert_eq!(w.len(), 1, "{v:#}");
    assert_eq!(w[0]["path"], "~/.ssh/id_ed25519");
    assert!(w[0]["message"].as_str().unwrap().contains("id_ed25519"));
    assert_eq!(v["snapshot"]["omitted"], 1);
    // A second run (files cache in play) and a backup-create do not store it either.
    e.json(CKPT, &["manual", "with-ssh-2", "--path", "~/.ssh"]);
    e.json("backup-create", &["--path", "~/.ssh"]);
    for (path, bytes) in all_file_bytes(&e.repo) {
        for window in key.windows(16) {
            assert!(
                !bytes.windows(16).any(|b| b == window),
                "secret bytes found in {}",
                path.display()
            );
        }
    }
    let (_, list) = e.json("backup-list", &["with-ssh", "--files"]);
    let entries = list["entries"].as_array().unwrap();
    let k = entries
        .iter()
        .find(|x| x["path"] == "~/.ssh/id_ed25519")
        .unwrap();
    assert_eq!(k["omitted"], "secret");
    assert!(k["sha256"].is_null());
    let c = entries
        .iter()
        .find(|x| x["path"] == "~/.ssh/config")
        .unwrap();
    assert_eq!(c["sha256"], sha256_hex(b"Host *\n  AddKeysToAgent yes\n"));
}

// ---------------------------------------------------------------- environment

#[test]
fn backup_disabled_skips_every_command_with_exit_0_and_creates_nothing() {
    let e = TestEnv::with_dotfiles();
    for value in ["true", "1", "yes"] {
        for (bin, a) in [
            (CKPT, args(&["auto", "pre-ansible"])),
            (CKPT, args(&["manual", "x"])),
            ("backup-create", args(&[])),
            ("backup-list", vec![]),
            ("backup-verify", vec![]),
        ] {
            let (rc, v, _) = e.run(bin, &a, &[("BACKUP_DISABLED", value)]);
            assert_eq!(rc, 0, "{bin} {value}: {v:#}");
            assert_eq!(v["status"], "skipped");
            assert_eq!(v["skip_reason"], "disabled");
            assert_eq!(v["degradation"], "disabled");
            assert_eq!(v["changed"], false);
            assert!(v["snapshot"].is_null());
            assert!(!e.repo.exists(), "{bin} created the repository");
        }
    }
    // BACKUP_LOCAL_ONLY is reported as the degradation.
    let (_, v, _) = e.run("backup-list", &[], &[("BACKUP_LOCAL_ONLY", "true")]);
    assert_eq!(v["degradation"], "local-only");
    // `false` really means enabled.
    let (rc, v, _) = e.run(
        CKPT,
        &args(&["auto", "pre-ansible"]),
        &[("BACKUP_DISABLED", "false")],
    );
    assert_eq!(rc, 0);
    assert_eq!(v["status"], "success");
}

#[test]
fn held_lock_gives_lock_busy_retryable_and_commits_nothing() {
    let e = TestEnv::with_dotfiles();
    checkpoint(&e, &["auto", "pre-ansible"]);
    std::fs::write(e.home.join(".zshrc"), b"something new\n").unwrap();
    let guard = dotfiles_backup::repo::lock::acquire(
        &e.repo.join("lock"),
        "backup-create",
        std::time::Duration::ZERO,
    )
    .unwrap();
    let before = objects(&e.repo);
    let started = std::time::Instant::now();
    let (rc, v) = e.json(CKPT, &args(&["auto", "pre-dotfiles", "--wait", "0.2"]));
    let waited = started.elapsed();
    assert_eq!(rc, 4, "{v:#}");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["errors"].as_array().unwrap().len(), 1);
    assert_eq!(v["errors"][0]["code"], "lock_busy");
    assert_eq!(v["errors"][0]["retryable"], true);
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("backup-create"));
    assert!(
        waited >= std::time::Duration::from_millis(200),
        "waited {waited:?}"
    );
    assert!(
        waited < std::time::Duration::from_secs(4),
        "waited {waited:?}"
    );
    assert_eq!(objects(&e.repo), before, "nothing committed");
    // Env var form of the wait, and backup-create too.
    let (rc, v, _) = e.run("backup-create", &args(&[]), &[("BACKUP_LOCK_WAIT", "0.1")]);
    assert_eq!(rc, 4, "{v:#}");
    // Readers do not wait for writers.
    let (rc, _) = e.json("backup-list", &[]);
    assert_eq!(rc, 0);
    let (rc, _) = e.json("backup-verify", &[]);
    assert_eq!(rc, 0);
    let (rc, h) = e.json(CKPT, &args(&["--health-check"]));
    assert_eq!(rc, 0, "{h:#}");
    let lock = h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lock")
        .unwrap();
    assert_eq!(lock["status"], "yellow");
    drop(guard);
    let v = checkpoint(&e, &["auto", "pre-dotfiles"]);
    assert_eq!(v["changed"], true);
}

#[test]
fn repository_is_0700_and_files_0600_even_under_umask_000() {
    let e = TestEnv::with_dotfiles();
    build_odd_tree(&e.home.join(".config/odd"));
    let run = |a: &str| {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(format!(
            "umask 000; exec \"$0\" {a} --path '~/.zshrc' --path '~/.config' -q"
        ));
        cmd.arg(exe(CKPT));
        e.clean_env(&mut cmd);
        let st = cmd.status().unwrap();
        assert!(st.success(), "{a}: {st}");
    };
    run("auto pre-ansible");
    std::fs::write(e.home.join(".zshrc"), b"second\n").unwrap();
    run("manual second");
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&e.repo), 0o700);
    let entries = walk(&e.repo);
    assert!(entries.iter().any(|(r, _)| r.starts_with(b"packs/")));
    for (rel, meta) in entries {
        let p = e.repo.join(OsStr::from_bytes(&rel));
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            mode(&p),
            want,
            "{} has mode {:04o}",
            String::from_utf8_lossy(&rel),
            mode(&p)
        );
    }
}

#[test]
fn human_output_without_json_is_not_json_and_errors_go_to_stderr() {
    let e = TestEnv::with_dotfiles();
    let out = e.output(CKPT, &args(&["auto", "pre-ansible"]), &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.trim_start().starts_with('{'), "{text}");
    assert!(text.contains("pre-ansible"), "{text}");
    let out = e.output(CKPT, &["auto", "pre-bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pre-dotfiles"));
    let out = e.output(CKPT, &args(&["auto", "pre-ansible", "-q"]), &[]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "--quiet prints nothing on stdout");
}

// ------------------------------------------- the output contract (was tests/contract.rs)

/// The home the contract cases were written against: `~/.zshrc` and
/// `~/.config/nvim/init.lua` (no `~/.gitconfig`), fixed modes, mtimes as written.
fn contract_home() -> TestEnv {
    let e = TestEnv::new();
    e.write(".zshrc", b"export EDITOR=nvim\n", 0o644);
    e.write(".config/nvim/init.lua", b"vim.o.number = true\n", 0o644);
    set_mode(&e.home.join(".config"), 0o755);
    set_mode(&e.home.join(".config/nvim"), 0o755);
    e
}

#[test]
fn a_phase_checkpoint_repeated_within_one_run_reuses_and_reports_changed_only_for_new_content() {
    let e = contract_home();
    // Within one bootstrap run (the role passes one id per play).
    let (rc, first) = e.json(
        "backup-checkpoint",
        &args(&["auto", "pre-dotfiles", "--run", "r1"]),
    );
    assert_eq!(rc, 0, "{first}");
    assert_eq!(first["changed"], true);
    assert_eq!(first["snapshot"]["kind"], "checkpoint");
    let (_, again) = e.json(
        "backup-checkpoint",
        &args(&["auto", "pre-dotfiles", "--run", "r1"]),
    );
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(
        again["snapshot"]["id"], first["snapshot"]["id"],
        "same label, same content: nothing written"
    );
    assert_eq!(again["snapshot"]["reused"], true);
    let (_, other) = e.json(
        "backup-checkpoint",
        &args(&["auto", "post-setup", "--run", "r1"]),
    );
    assert_eq!(
        other["changed"], false,
        "content already stored under another label"
    );
    assert_ne!(other["snapshot"]["id"], first["snapshot"]["id"]);
    assert_eq!(other["snapshot"]["tree"], first["snapshot"]["tree"]);
    std::fs::write(e.home.join(".zshrc"), b"changed\n").unwrap();
    let (_, changed) = e.json("backup-checkpoint", &args(&["auto", "post-setup"]));
    assert_eq!(changed["changed"], true);
    assert_eq!(changed["snapshot"]["new_bytes"], 8);
}

#[test]
fn size_report_lists_large_files_and_exclusions_and_exclude_flag_works() {
    let e = contract_home();
    std::fs::write(e.home.join(".config/nvim/big.bin"), vec![1u8; 11 << 20]).unwrap();
    std::fs::create_dir_all(e.home.join(".config/nvim/.cache")).unwrap();
    std::fs::write(e.home.join(".config/nvim/.cache/x"), b"cache").unwrap();
    std::fs::write(e.home.join(".config/nvim/debug.log"), b"log").unwrap();
    // The ignore file (gitignore syntax, relative to $HOME).
    std::fs::create_dir_all(e.home.join(".config/dotfiles-backup")).unwrap();
    std::fs::write(
        e.home.join(".config/dotfiles-backup/ignore"),
        b".config/nvim/*.log\n",
    )
    .unwrap();
    let (rc, v) = e.json(
        "backup-create",
        &args(&["--dry-run", "--exclude", "scratch/"]),
    );
    assert_eq!(rc, 0, "{v}");
    let large = v["large_files"].as_array().unwrap();
    assert_eq!(large.len(), 1, "{v}");
    assert_eq!(large[0]["path"], "~/.config/nvim/big.bin");
    assert_eq!(large[0]["level"], "warn");
    let reasons: Vec<(String, String)> = v["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["path"].as_str().unwrap().to_string(),
                x["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        reasons.contains(&("~/.config/nvim/.cache".into(), "exclude pattern".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("~/.config/nvim/debug.log".into(), "ignore file".into())),
        "{reasons:?}"
    );
    std::fs::create_dir_all(e.home.join(".config/scratch")).unwrap();
    let (_, v) = e.json(
        "backup-create",
        &args(&["--dry-run", "--exclude", "scratch/"]),
    );
    assert!(
        v["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["path"] == "~/.config/scratch"),
        "{v}"
    );
}

#[test]
fn quota_prunes_by_policy_first_then_refuses_with_the_size_needed() {
    let e = contract_home();
    let cfg = e.tmp.path().join("q.toml");
    std::fs::write(
        &cfg,
        "[space]\nmax_repo_mb = 1\n[retention]\nkeep_per_phase = 1\nauto = false\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let data = |seed: u8| -> Vec<u8> {
        (0..400_000u32)
            .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
            .collect()
    };
    std::fs::write(e.home.join(".config/nvim/a.bin"), data(3)).unwrap();
    let (rc, v) = e.json(
        "backup-checkpoint",
        &args(&["auto", "pre-dotfiles", "--config", c]),
    );
    assert_eq!(rc, 0, "{v}");
    // The first bootstrap run is pinned (tests/phases.rs); this is about the policy.
    let (rc, v) = e.json("backup-prune", &["--unpin", "latest", "--config", c]);
    assert_eq!(rc, 0, "{v}");
    std::fs::write(e.home.join(".config/nvim/a.bin"), data(5)).unwrap();
    let (rc, v) = e.json(
        "backup-checkpoint",
        &args(&["auto", "pre-dotfiles", "--config", c]),
    );
    assert_eq!(rc, 0, "{v}");
    // A third version would exceed 1 MiB: the older pre-dotfiles checkpoints are pruned first.
    std::fs::write(e.home.join(".config/nvim/a.bin"), data(7)).unwrap();
    let (rc, v) = e.json(
        "backup-checkpoint",
        &args(&["auto", "pre-dotfiles", "--config", c]),
    );
    assert_eq!(rc, 0, "{v}");
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "quota_pruned"),
        "{v}"
    );
    // Content that can never fit is refused, naming how much must be freed.
    std::fs::write(e.home.join(".config/nvim/huge.bin"), vec![9u8; 2 << 20]).unwrap();
    let (rc, v) = e.json(
        "backup-checkpoint",
        &args(&["auto", "pre-dotfiles", "--config", c]),
    );
    assert_eq!(rc, 5, "{v}");
    assert_eq!(v["errors"][0]["code"], "quota_exceeded");
    assert!(v["errors"][0]["hint"]
        .as_str()
        .unwrap()
        .contains("free at least"));
    let (rc, _) = e.json("backup-verify", &["--read-data"]);
    assert_eq!(rc, 0);
}

#[test]
fn checkpoints_beyond_the_policy_are_pruned_automatically() {
    let e = contract_home();
    let cfg = e.tmp.path().join("a.toml");
    std::fs::write(&cfg, "[retention]\nkeep_per_phase = 2\n").unwrap();
    let c = cfg.to_str().unwrap();
    for i in 0..4 {
        std::fs::write(e.home.join(".zshrc"), format!("version {i}\n")).unwrap();
        let (rc, v) = e.json(
            "backup-checkpoint",
            &args(&["auto", "pre-dotfiles", "--config", c]),
        );
        assert_eq!(rc, 0, "{v}");
        if i == 0 {
            // The first bootstrap run is pinned (tests/phases.rs); this is about the policy.
            let (rc, v) = e.json("backup-prune", &["--unpin", "latest", "--config", c]);
            assert_eq!(rc, 0, "{v}");
        }
    }
    let (_, list) = e.json("backup-list", &[]);
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 2, "{list}");
    let (rc, _) = e.json("backup-verify", &["--read-data"]);
    assert_eq!(rc, 0);
}

mod listing_property {
    use super::*;
    use proptest::prelude::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    fn name() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b'x'),
                Just(b'y'),
                Just(0xe9u8),
                Just(0xffu8),
                Just(b' ')
            ],
            1..5,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]
        /// Any tree checkpointed and listed back has every entry with the right type, mode, size, hash and target.
        #[test]
        fn every_entry_is_listed_with_its_true_facts(
            files in prop::collection::btree_map(name(), (prop::collection::vec(any::<u8>(), 0..2000), 0u32..4), 1..10),
            links in prop::collection::btree_map(name(), name(), 0..4),
            empty_dirs in prop::collection::btree_set(name(), 0..3),
        ) {
            let e = contract_home();
            let root = e.home.join("t");
            std::fs::create_dir_all(root.join("sub")).unwrap();
            let modes = [0o644, 0o600, 0o755, 0o440];
            for (n, (content, m)) in &files {
                let p = root.join(OsStr::from_bytes(n));
                std::fs::write(&p, content).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(modes[*m as usize])).unwrap();
            }
            for (n, t) in &links {
                let p = root.join("sub").join(OsStr::from_bytes(n));
                std::os::unix::fs::symlink(OsStr::from_bytes(t), &p).unwrap();
            }
            for d in &empty_dirs {
                let _ = std::fs::create_dir(root.join("sub").join(OsStr::from_bytes(d)).with_extension("d"));
            }
            let (rc, v) = e.json("backup-checkpoint", &["manual", "p", "--path", "~/t"]);
            prop_assert_eq!(rc, 0, "{}", v);
            let (_, listed) = e.json("backup-list", &["p", "--files"]);
            let entries = listed["entries"].as_array().unwrap();
            let by_path = |bytes: &[u8]| -> Option<&Value> {
                entries.iter().find(|x| match x["path_b64"].as_str() {
                    Some(b) => {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.decode(b).unwrap() == bytes
                    }
                    None => x["path"].as_str().unwrap().as_bytes() == bytes,
                })
            };
            for (n, (content, m)) in &files {
                let mut full = b"~/t/".to_vec();
                full.extend_from_slice(n);
                let x = by_path(&full).unwrap_or_else(|| panic!("{:?} not listed", String::from_utf8_lossy(&full)));
                prop_assert_eq!(&x["type"], "file");
                prop_assert_eq!(x["size"].as_u64().unwrap(), content.len() as u64);
                prop_assert_eq!(x["mode"].as_str().unwrap(), format!("{:04o}", modes[*m as usize]));
                prop_assert_eq!(x["sha256"].as_str().unwrap(), dotfiles_backup::hash::Hash::of(content).to_hex());
            }
            for (n, t) in &links {
                let mut full = b"~/t/sub/".to_vec();
                full.extend_from_slice(n);
                let x = by_path(&full).unwrap();
                prop_assert_eq!(&x["type"], "symlink");
                prop_assert_eq!(x["size"].as_u64().unwrap(), t.len() as u64);
            }
            let dirs = entries.iter().filter(|x| x["type"] == "dir").count();
            prop_assert_eq!(dirs, 2 + empty_dirs.len());
        }
    }
}

#[test]
fn shell_helper_skips_or_fails_like_the_role() {
    let e = contract_home();
    let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/checkpoint-or-skip");
    let run = |label: &str, extra: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg(helper)
            .arg(label)
            .args(["--path", "~/.zshrc", "-q"]);
        e.clean_env(&mut cmd);
        // Only the system's tools: the helper must find the binaries itself.
        cmd.env("PATH", "/usr/bin:/bin")
            .envs(extra.iter().copied())
            .output()
            .unwrap()
    };
    let none = e.tmp.path().join("no-bin");
    let out = run("pre-ansible", &[("BACKUP_BIN_DIR", none.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "backup tool not yet installed, skipping pre-ansible checkpoint"
    );
    let out = run(
        "pre-dotfiles",
        &[("BACKUP_BIN_DIR", none.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scripts/install"));
    let out = run("pre-dotfiles", &[("BACKUP_DISABLED", "true")]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!e.repo.exists());
    let bins = Path::new(exe("backup-checkpoint")).parent().unwrap();
    let out = run(
        "pre-dotfiles",
        &[("BACKUP_BIN_DIR", bins.to_str().unwrap())],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, list) = e.json("backup-list", &[]);
    assert_eq!(list["snapshots"][0]["label"], "pre-dotfiles");
}
