//! Prune through the real binary: random histories of checkpoints, rollbacks
//! and prunes never lose a blob a kept snapshot needs (`backup-verify
//! --read-data` after every prune, and every kept snapshot restores to the
//! content its listing promises); repacking keeps live blobs; pins win.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::Value;

mod common;
use common::TestEnv;

/// A [`TestEnv`] whose every run reads one config file.
struct Env {
    t: TestEnv,
    config: PathBuf,
}

impl std::ops::Deref for Env {
    type Target = TestEnv;
    fn deref(&self) -> &TestEnv {
        &self.t
    }
}

impl Env {
    fn new(config: &str) -> Env {
        let t = TestEnv::new();
        std::fs::create_dir_all(t.home.join(".config/app")).unwrap();
        let config_path = t.tmp.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        Env {
            t,
            config: config_path,
        }
    }

    fn run(&self, bin: &str, args: &[&str]) -> (i32, Value) {
        let mut argv = args.to_vec();
        argv.extend(["--config", self.config.to_str().unwrap()]);
        self.t.json(bin, &argv)
    }

    /// Every snapshot restores to exactly what `backup-list --files` says it holds.
    fn check_all_restorable(&self) {
        let (rc, v) = self.run("backup-verify", &["--read-data"]);
        assert_eq!(rc, 0, "{v}");
        let (_, list) = self.run("backup-list", &[]);
        // Safety snapshots are skipped: each restore below takes one and, with
        // `safety.keep = 1`, retires the previous one (covered in tests/rollback.rs).
        for s in list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["kind"] != "safety")
        {
            let id = s["id"].as_str().unwrap();
            let target = self.t.tmp.path().join(format!("restore-{}", &id[..8]));
            let (rc, v) = self.run(
                "backup-restore",
                &[id, "--target", target.to_str().unwrap()],
            );
            assert_eq!(rc, 0, "restore {id}: {v}");
            let (_, files) = self.run("backup-list", &[id, "--files"]);
            for e in files["entries"].as_array().unwrap() {
                if e["type"] != "file" {
                    continue;
                }
                let rel = e["path"].as_str().unwrap().trim_start_matches("~/");
                let bytes = std::fs::read(target.join(rel)).unwrap();
                assert_eq!(
                    dotfiles_backup::hash::Hash::of(&bytes).to_hex(),
                    e["sha256"].as_str().unwrap()
                );
            }
        }
    }
}

fn write(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap();
}

#[derive(Debug, Clone)]
enum Step {
    Edit(u8, u16),
    Delete(u8),
    Checkpoint(u8),
    Manual,
    Rollback,
    Prune,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..6, any::<u16>()).prop_map(|(f, seed)| Step::Edit(f, seed)),
        1 => (0u8..6).prop_map(Step::Delete),
        3 => (0u8..3).prop_map(Step::Checkpoint),
        1 => Just(Step::Manual),
        1 => Just(Step::Rollback),
        2 => Just(Step::Prune),
    ]
}

const TIGHT: &str =
    "[retention]\nkeep_per_phase = 1\nrepack_garbage_percent = 10\n[safety]\nkeep = 1\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]
    #[test]
    fn random_histories_never_lose_a_kept_blob(steps in prop::collection::vec(step(), 4..14)) {
        let e = Env::new(TIGHT);
        let phases = ["pre-ansible", "pre-dotfiles", "post-setup"];
        let mut manual = 0;
        for s in steps {
            match s {
                Step::Edit(f, seed) => {
                    let data: Vec<u8> = (0..(seed as usize % 5000)).map(|i| (i as u16 ^ seed) as u8).collect();
                    write(&e.home.join(format!(".config/app/f{f}")), &data);
                }
                Step::Delete(f) => { let _ = std::fs::remove_file(e.home.join(format!(".config/app/f{f}"))); }
                Step::Checkpoint(p) => {
                    let (rc, v) = e.run("backup-checkpoint", &["auto", phases[p as usize], "--path", "~/.config"]);
                    prop_assert_eq!(rc, 0, "{}", v);
                }
                Step::Manual => {
                    manual += 1;
                    let name = format!("m{manual}");
                    let (rc, v) = e.run("backup-checkpoint", &["manual", &name, "--path", "~/.config"]);
                    prop_assert_eq!(rc, 0, "{}", v);
                }
                Step::Rollback => {
                    let (rc, v) = e.run("backup-rollback", &["latest"]);
                    prop_assert!(rc == 0 || v["errors"][0]["code"] == "no_snapshots" || v["errors"][0]["code"] == "repository_missing", "{}", v);
                }
                Step::Prune => {
                    let (rc, v) = e.run("backup-prune", &[]);
                    if rc != 0 {
                        prop_assert_eq!(&v["errors"][0]["code"], "repository_missing", "{}", v);
                        continue;
                    }
                    e.check_all_restorable();
                }
            }
        }
        if e.repo.exists() {
            let (rc, v) = e.run("backup-prune", &[]);
            prop_assert_eq!(rc, 0, "{}", v);
            e.check_all_restorable();
        }
    }
}

#[test]
fn repack_keeps_live_blobs_and_frees_dead_ones() {
    // Automatic pruning off, so that the explicit prune below does the work.
    let e =
        Env::new("[retention]\nkeep_per_phase = 1\nrepack_garbage_percent = 10\nauto = false\n");
    write(&e.home.join(".config/app/keep"), &vec![7u8; 200_000]);
    write(&e.home.join(".config/app/drop"), &vec![9u8; 200_000]);
    let (rc, _) = e.run(
        "backup-checkpoint",
        &["auto", "pre-dotfiles", "--path", "~/.config"],
    );
    assert_eq!(rc, 0);
    // The first bootstrap run is pinned (tests/phases.rs); this is about repacking.
    let (rc, v) = e.run("backup-prune", &["--unpin", "latest"]);
    assert_eq!(rc, 0, "{v}");
    std::fs::remove_file(e.home.join(".config/app/drop")).unwrap();
    let (rc, _) = e.run(
        "backup-checkpoint",
        &["auto", "pre-dotfiles", "--path", "~/.config"],
    );
    assert_eq!(rc, 0);
    let (rc, v) = e.run("backup-prune", &["--dry-run"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["stats"]["packs_repacked"], 1, "{v}");
    assert_eq!(v["stats"]["snapshots_removed"], 1);
    let (rc, v) = e.run("backup-prune", &[]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["stats"]["blobs_repacked"], 1);
    assert!(v["stats"]["bytes_freed"].as_u64().unwrap() >= 200_000);
    e.check_all_restorable();
    let size: u64 = std::fs::read_dir(e.repo.join("packs"))
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(size < 300_000, "dead blob still stored: {size}");
}

#[test]
fn pinned_snapshots_survive_and_cannot_be_forgotten() {
    let e = Env::new(TIGHT);
    write(&e.home.join(".config/app/f"), b"one");
    e.run(
        "backup-checkpoint",
        &["auto", "pre-dotfiles", "--path", "~/.config"],
    );
    let (rc, v) = e.run("backup-prune", &["--pin", "pre-dotfiles"]);
    assert_eq!(rc, 0, "{v}");
    write(&e.home.join(".config/app/f"), b"two");
    e.run(
        "backup-checkpoint",
        &["auto", "pre-dotfiles", "--path", "~/.config"],
    );
    let (_, v) = e.run("backup-prune", &[]);
    let decisions = v["decisions"].as_array().unwrap();
    assert!(decisions.iter().all(|d| d["keep"] == true), "{v}");
    assert!(decisions.iter().any(|d| d["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "pinned")));
    let first = decisions[0]["short_id"].as_str().unwrap().to_string();
    let (rc, v) = e.run("backup-prune", &["--forget", &first]);
    assert_eq!(rc, 2, "{v}");
    assert_eq!(v["errors"][0]["code"], "pinned");
    let (rc, _) = e.run("backup-prune", &["--unpin", &first, "--forget", &first]);
    assert_eq!(rc, 0);
    e.check_all_restorable();
    let (_, list) = e.run("backup-list", &[]);
    let kept: Vec<&Value> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] != "safety")
        .collect();
    assert_eq!(kept.len(), 1, "{list}");
}

/// Give a file an mtime well outside the racy window, so the files cache keeps it.
fn age(p: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// The files cache names blobs, and prune deletes blobs; so the cache is
/// trusted only while a snapshot of the tree it was built with exists. Here
/// the snapshot is forgotten and its blob deleted, then an old copy of the
/// cache is put back (what a power cut could leave, since the cache is
/// written without fsync): the next checkpoint must read the file again
/// instead of naming the deleted blob, and the repository must verify.
#[test]
fn files_cache_is_trusted_only_while_a_snapshot_of_its_tree_is_kept() {
    let e = Env::new("[retention]\nauto = false\n");
    let f = e.home.join(".config/app/f");
    write(&f, &vec![7u8; 100_000]);
    age(&f);
    let (rc, v) = e.run("backup-checkpoint", &["manual", "a", "--path", "~/.config"]);
    assert_eq!(rc, 0, "{v}");
    let first = v["snapshot"]["id"].as_str().unwrap().to_string();
    // Kept by a prune that removes nothing, the cache still saves the read.
    let (rc, v) = e.run("backup-prune", &[]);
    assert_eq!(rc, 0, "{v}");
    let (rc, v) = e.run("backup-checkpoint", &["manual", "a", "--path", "~/.config"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["stats"]["files_read"], 0, "cache used: {v}");

    let cache = e.repo.join("cache/files");
    let saved = std::fs::read(&cache).unwrap();
    let (rc, v) = e.run("backup-prune", &["--forget", &first]);
    assert_eq!(rc, 0, "{v}");
    assert!(
        std::fs::read_dir(e.repo.join("packs")).unwrap().count() == 0,
        "the blob is gone"
    );
    std::fs::write(&cache, &saved).unwrap();
    let (rc, v) = e.run("backup-checkpoint", &["manual", "b", "--path", "~/.config"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["stats"]["files_read"], 1, "stale cache ignored: {v}");
    e.check_all_restorable();
}
