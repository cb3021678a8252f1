//! `backup-prune --external[=NAME]`: the retention policy applied to
//! external copies, which a sync only ever adds to.
//!
//! The same decisions as local prune ([`super::prune::decide`], with the
//! local pins and the copy's own), and the same crash-safe order: records
//! first, then data nothing kept refers to.
//!
//! * A **directory** copy is a repository: it is pruned in place by
//!   [`super::prune::collect_garbage`] under its own lock (the one syncs to
//!   it take), repacking included.
//! * An **rclone** copy cannot be changed in place. Its cache copy
//!   (`external.cache_dir/NAME`, the one `backup-list --external` uses) is
//!   first made equal to the remote, then pruned locally with repacking off
//!   (a remote pack is only ever deleted whole); the difference is then
//!   replayed on the remote: the new index uploaded first (checked by its
//!   hash, like every sync), then deleted in order snapshot records → old
//!   index files → packs → trees. A crash at any point leaves every kept
//!   snapshot complete on the remote; the next run finishes the job. The
//!   cache copy's lock is held throughout, and this machine's syncs to the
//!   target take it too (`sync::rclone_lock`).

use std::collections::HashSet;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;

use crate::config::{ExternalTarget, Settings, TargetLocation};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::external::dir::DirStore;
use crate::external::{classify, open_target, Listing, Store, REMOVE_ORDER};
use crate::hash::Hash;
use crate::repo::Repository;
use crate::report::{Degradation, Envelope, ErrorReport, Status, Warning};
use crate::retry::retry;

use super::prune::{collect_garbage, decide, partition, Decision};
use super::sync::transfer;
use super::sync::{chosen, ensure_layout, make_private_dir, open_dir_target, unreachable_code};
use crate::repo::pins::pins;

/// What happened to one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPrune {
    /// Target name.
    pub name: String,
    /// Where it is.
    pub location: String,
    /// `directory` or `rclone`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `pruned`, `unreachable` or `failed`.
    pub status: &'static str,
    /// Snapshot records removed (or that would be, with `--dry-run`).
    pub snapshots_removed: u64,
    /// Packs deleted whole.
    pub packs_deleted: u64,
    /// Packs rewritten without their garbage (directory copies only).
    pub packs_repacked: u64,
    /// Trees removed.
    pub trees_removed: u64,
    /// Bytes the copy shrank by (would shrink by).
    pub bytes_freed: u64,
    /// Keep or remove, and why, for every snapshot of the copy.
    pub decisions: Vec<Decision>,
    /// Why it was not pruned.
    pub error: Option<ErrorReport>,
}

impl TargetPrune {
    fn new(t: &ExternalTarget) -> TargetPrune {
        TargetPrune {
            name: t.name.clone(),
            location: t.location.shown(),
            kind: match t.location {
                TargetLocation::Dir(_) => "directory",
                TargetLocation::Rclone(_) => "rclone",
            },
            status: "pruned",
            snapshots_removed: 0,
            packs_deleted: 0,
            packs_repacked: 0,
            trees_removed: 0,
            bytes_freed: 0,
            decisions: Vec::new(),
            error: None,
        }
    }
}

/// Prune every configured target (or the one named); fills `external_prune`.
pub fn run(
    settings: &Settings,
    name: Option<&str>,
    dry_run: bool,
    env: &mut Envelope,
) -> Result<()> {
    env.dry_run = dry_run;
    let targets = chosen(settings, name, "--external")?;
    // Local pins count for the copies too (pins are not copied).
    let local_pins = Repository::open(&settings.repo)
        .map(|r| pins(&r))
        .unwrap_or_default();
    let mut results = Vec::new();
    for t in targets {
        let mut r = TargetPrune::new(t);
        let what = format!("prune {}", t.name);
        let outcome = retry(&settings.retry, &what, |_| {
            prune_target(settings, t, &local_pins, dry_run, &mut env.warnings)
        });
        match outcome.result {
            Ok(done) => {
                r.snapshots_removed = done.snapshots_removed;
                r.packs_deleted = done.packs_deleted;
                r.packs_repacked = done.packs_repacked;
                r.trees_removed = done.trees_removed;
                r.bytes_freed = done.bytes_freed;
                r.decisions = done.decisions;
            }
            Err(e) => {
                r.status = if unreachable_code(e.code) {
                    "unreachable"
                } else {
                    "failed"
                };
                r.error = Some((&e).into());
            }
        }
        results.push(r);
    }
    finish(env, &results, dry_run);
    Ok(())
}

/// Stats, status and exit code from the per-target results.
fn finish(env: &mut Envelope, results: &[TargetPrune], dry_run: bool) {
    let sum = |f: fn(&TargetPrune) -> u64| results.iter().map(f).sum::<u64>();
    env.stat("snapshots_removed", sum(|r| r.snapshots_removed));
    env.stat("packs_deleted", sum(|r| r.packs_deleted));
    env.stat("packs_repacked", sum(|r| r.packs_repacked));
    env.stat("trees_removed", sum(|r| r.trees_removed));
    env.stat("bytes_freed", sum(|r| r.bytes_freed));
    env.changed = !dry_run
        && results
            .iter()
            .any(|r| r.snapshots_removed + r.packs_deleted + r.trees_removed > 0);
    let failed: Vec<&TargetPrune> = results.iter().filter(|r| r.error.is_some()).collect();
    for r in &failed {
        if let Some(e) = &r.error {
            let mut e = e.clone();
            e.message = format!("external target {}: {}", r.name, e.message);
            env.errors.push(e);
        }
    }
    if !failed.is_empty() {
        env.degradation = Degradation::LocalOnly;
        if failed.len() == results.len() {
            env.status = Status::Failed;
            let code = failed[0]
                .error
                .as_ref()
                .map(|e| e.code.as_str())
                .unwrap_or("");
            env.set_exit(super::sync::exit_for(code));
        } else {
            env.status = Status::Partial;
            env.set_exit(ExitCode::Partial);
        }
    }
    env.put("external_prune", results);
}

/// What one target's prune did.
struct Done {
    snapshots_removed: u64,
    packs_deleted: u64,
    packs_repacked: u64,
    trees_removed: u64,
    bytes_freed: u64,
    decisions: Vec<Decision>,
}

fn prune_target(
    settings: &Settings,
    target: &ExternalTarget,
    local_pins: &HashSet<Hash>,
    dry_run: bool,
    warnings: &mut Vec<Warning>,
) -> Result<Done> {
    let command = "backup-prune";
    match &target.location {
        TargetLocation::Dir(root) => {
            open_dir_target(root, &target.name)?;
            let repo = Repository::open(root)?;
            let _lock = if dry_run {
                None
            } else {
                Some(repo.lock(command, settings.lock_wait)?)
            };
            prune_repo(
                &repo,
                settings,
                local_pins,
                settings.retention.repack_garbage_percent,
                dry_run,
                warnings,
            )
        }
        TargetLocation::Rclone(_) => prune_rclone(settings, target, local_pins, dry_run, warnings),
    }
}

/// Decide and collect garbage on a repository the caller has locked.
fn prune_repo(
    repo: &Repository,
    settings: &Settings,
    local_pins: &HashSet<Hash>,
    repack_percent: u8,
    dry_run: bool,
    warnings: &mut Vec<Warning>,
) -> Result<Done> {
    let snaps = repo.snapshots()?;
    let mut pinned = pins(repo);
    pinned.extend(local_pins.iter().copied());
    let decisions = decide(
        &snaps,
        &pinned,
        &settings.retention,
        settings.safety_keep,
        Timestamp::now(),
        &TimeZone::system(),
    );
    let (keep, remove) = partition(&snaps, &decisions);
    let gc = collect_garbage(repo, &keep, &remove, repack_percent, dry_run, warnings)?;
    Ok(Done {
        snapshots_removed: gc.snapshots_removed,
        packs_deleted: gc.packs_deleted,
        packs_repacked: gc.packs_repacked,
        trees_removed: gc.trees_removed,
        bytes_freed: gc.bytes_freed,
        decisions,
    })
}

/// Prune the cache copy of an rclone target, then replay the difference on the remote.
fn prune_rclone(
    settings: &Settings,
    target: &ExternalTarget,
    local_pins: &HashSet<Hash>,
    dry_run: bool,
    warnings: &mut Vec<Warning>,
) -> Result<Done> {
    let _lock = super::sync::rclone_lock(settings, target, "backup-prune")?.ok_or_else(|| {
        Error::usage(
            "no_cache_dir",
            format!(
                "pruning {} needs a usable cache directory (external.cache_dir)",
                target.location.shown()
            ),
        )
        .with_hint("set HOME, or external.cache_dir to a writable directory")
    })?;
    let base = settings
        .external
        .cache_dir
        .as_ref()
        .expect("rclone_lock returned a lock");
    make_private_dir(base)?;
    let dest = base.join(&target.name);
    ensure_layout(&dest)?;
    let remote = open_target(target, settings)?;
    let cache = DirStore::new(&dest);
    // The cache copy becomes exactly the remote: what it lacks is fetched,
    // what the remote no longer has (pruned elsewhere) is dropped.
    transfer(remote.as_ref(), &cache)?;
    let before = remote.list()?;
    remove_missing(&cache, &before)?;
    let repo = Repository::open(&dest)?;
    // 100: never repack (a remote pack is deleted whole or kept).
    let done = prune_repo(&repo, settings, local_pins, 100, dry_run, warnings)?;
    if dry_run {
        return Ok(done);
    }
    let after = cache.list()?;
    // New index files first (checked by hash on arrival), then removals in commit order reversed.
    transfer(&cache, remote.as_ref())?;
    let mut freed = 0u64;
    for kind in REMOVE_ORDER {
        for (rel, size) in &before {
            if classify(rel) == Some(kind) && !after.contains_key(rel) {
                remote.remove(rel)?;
                freed += size;
            }
        }
    }
    let added: u64 = after
        .iter()
        .filter(|(rel, _)| !before.contains_key(*rel))
        .map(|(_, s)| s)
        .sum();
    Ok(Done {
        bytes_freed: freed.saturating_sub(added),
        ..done
    })
}

/// Drop from the cache copy the objects `remote` does not hold, records
/// first (the same order as a prune), so that it never names missing data.
fn remove_missing(cache: &DirStore, remote: &Listing) -> Result<()> {
    let have = cache.list()?;
    for kind in REMOVE_ORDER {
        for rel in have.keys() {
            if classify(rel) == Some(kind) && !remote.contains_key(rel) {
                cache.remove(rel)?;
            }
        }
    }
    Ok(())
}

/// Human form: per target, what was (would be) removed and freed.
pub fn human(env: &Envelope, _s: &crate::config::Settings) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let verb = if env.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for t in env
        .extra
        .get("external_prune")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        let g = |k: &str| t[k].as_u64().unwrap_or(0);
        let head = format!(
            "{} ({})",
            t["name"].as_str().unwrap_or("?"),
            t["location"].as_str().unwrap_or("?")
        );
        if t["status"] != "pruned" {
            let _ = writeln!(
                out,
                "{head}: not pruned ({}): {}",
                t["status"].as_str().unwrap_or("?"),
                t["error"]["message"].as_str().unwrap_or("?")
            );
            continue;
        }
        let _ = writeln!(
            out,
            "{head}: {verb} {} snapshot(s), {} pack(s), {} tree(s); {} freed",
            g("snapshots_removed"),
            g("packs_deleted"),
            g("trees_removed"),
            crate::units::human_bytes(g("bytes_freed"))
        );
    }
    out
}
