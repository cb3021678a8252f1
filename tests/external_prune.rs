//! Retention of external copies (issue 22 point 4): `backup-prune
//! --external[=NAME]` applies the local policy (and pins) to a directory
//! copy and to an rclone copy, reports what it freed per target, and leaves
//! copies that verify and restore.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::Value;

/// Keep only the newest backup; the rest goes.
const POLICY: &str = "[retention]\nkeep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\nkeep_yearly = 0\nauto = false\n";

fn run(e: &TestEnv, bin: &str, args: &[&str], env: &[(&'static str, String)]) -> (i32, Value) {
    let (rc, v, _) = run_with(e, bin, args, env);
    (rc, v)
}

fn ok(e: &TestEnv, bin: &str, args: &[&str], env: &[(&'static str, String)]) -> Value {
    let (rc, v) = run(e, bin, args, env);
    assert_eq!(rc, 0, "{bin} {args:?}: {v:#}");
    v
}

fn with_policy(e: &TestEnv, mut env: EnvVars) -> EnvVars {
    env.push(("BACKUP_CONFIG", e.config_file(POLICY)));
    env
}

/// Three backups with distinct content, each synced to the targets in `env`.
/// Returns their snapshot ids, oldest first.
fn three_backups(e: &TestEnv, env: &[(&'static str, String)]) -> Vec<String> {
    (0..3)
        .map(|i| {
            e.write(".config/big.bin", &noise(200_000, i), 0o644);
            let v = ok(e, "backup-create", &["--label", &format!("b{i}")], env);
            assert_eq!(v["external"][0]["status"], "synced", "{v:#}");
            v["snapshot"]["id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn ids_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| {
            e.file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_string()
        })
        .filter(|n| !n.starts_with(".dfb-tmp"))
        .collect()
}

fn checks(e: &TestEnv, env: &[(&'static str, String)], ids: &[String], copy: &Path) {
    assert_eq!(
        ids_in(copy).len(),
        3,
        "the copy holds every backup it received"
    );
    let local_before = e.repo_state();
    // Dry run: decisions, nothing changes.
    let before = dir_state(copy);
    let v = ok(e, "backup-prune", &["--external", "--dry-run"], env);
    let t = &v["external_prune"][0];
    assert_eq!(t["status"], "pruned", "{v:#}");
    assert_eq!(t["snapshots_removed"], 1, "{v:#}");
    assert!(t["bytes_freed"].as_u64().unwrap() > 150_000, "{v:#}");
    assert_eq!(dir_state(copy), before, "a dry run changes nothing");

    // The real thing: the oldest (unpinned) goes, the pinned one and the newest stay.
    let v = ok(e, "backup-prune", &["--external"], env);
    let t = &v["external_prune"][0];
    assert_eq!(t["snapshots_removed"], 1, "{v:#}");
    assert!(t["packs_deleted"].as_u64().unwrap() >= 1, "{v:#}");
    assert!(t["bytes_freed"].as_u64().unwrap() > 150_000, "{v:#}");
    assert_eq!(v["stats"]["bytes_freed"], t["bytes_freed"]);
    let left = ids_in(copy);
    assert_eq!(
        left,
        [ids[0].clone(), ids[2].clone()].into_iter().collect(),
        "pinned b0 and newest b2 kept, b1 removed"
    );
    // The local repository is untouched (apart from its run log).
    let strip = |mut m: std::collections::BTreeMap<Vec<u8>, (u32, Vec<u8>)>| {
        m.retain(|k, _| !k.starts_with(b"logs") && !k.starts_with(b"cache"));
        m
    };
    assert_eq!(strip(e.repo_state()), strip(local_before));
    // The copy verifies in full, and a second prune has nothing to do.
    let v = ok(e, "backup-verify", &["--external", "--read-data"], env);
    assert_eq!(v["status"], "success", "{v:#}");
    let v = ok(e, "backup-prune", &["--external"], env);
    assert_eq!(v["external_prune"][0]["snapshots_removed"], 0, "{v:#}");
    assert_eq!(v["changed"], false);
    // A later sync adds only what the local repository has and the copy lacks.
    let v = ok(e, "backup-create", &["--sync-external"], env);
    assert_eq!(v["external"][0]["status"], "synced", "{v:#}");
    assert_eq!(ids_in(copy), left);
}

#[test]
fn directory_copy_is_pruned_by_the_policy_and_the_local_pins() {
    let e = TestEnv::with_dotfiles();
    let drive = e.tmp.path().join("drive");
    std::fs::create_dir(&drive).unwrap();
    let env = with_policy(&e, target_env(&drive));
    let ids = three_backups(&e, &env);
    // Pins b0 and prunes the local repository (b1 goes there); the copy keeps all three.
    ok(&e, "backup-prune", &["--pin", "b0"], &env);
    checks(&e, &env, &ids, &drive);
}

#[test]
fn unknown_or_unreachable_targets_are_reported() {
    let e = TestEnv::with_dotfiles();
    let env = with_policy(&e, target_env(&e.tmp.path().join("unplugged")));
    ok(&e, "backup-create", &[], &env);
    let (rc, v) = run(&e, "backup-prune", &["--external=other"], &env);
    assert_eq!(rc, 2, "{v:#}");
    assert_eq!(v["errors"][0]["code"], "unknown_external_target");
    let (rc, v) = run(&e, "backup-prune", &["--external"], &env);
    assert_ne!(rc, 0, "{v:#}");
    assert_eq!(v["external_prune"][0]["status"], "unreachable", "{v:#}");
    assert_eq!(v["degradation"], "local-only");
    // --external does not combine with --forget/--pin.
    let (rc, _) = run(
        &e,
        "backup-prune",
        &["--external", "--forget", "latest"],
        &env,
    );
    assert_eq!(rc, 2);
}

#[test]
fn rclone_copy_is_pruned_through_its_cache_and_still_verifies() {
    if !rclone_available("external prune over rclone") {
        return;
    }
    let e = TestEnv::with_dotfiles();
    let remote = e.tmp.path().join("remote");
    let env = with_policy(&e, rclone_env(&e, &remote));
    let ids = three_backups(&e, &env);
    // Pins b0 and prunes the local repository (b1 goes there); the copy keeps all three.
    ok(&e, "backup-prune", &["--pin", "b0"], &env);
    checks(&e, &env, &ids, &remote);
    // No temp files left on the remote.
    let leftovers: Vec<_> = walk(&remote)
        .into_iter()
        .filter(|(p, _)| String::from_utf8_lossy(p).contains(".dfb-tmp"))
        .collect();
    assert!(leftovers.is_empty());
}
