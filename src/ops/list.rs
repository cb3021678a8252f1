//! `backup-list`: snapshots, one snapshot's entries, diffs and runs (snapshot
//! selection is [`crate::ops::select`], shared with restore, rollback and prune).

use serde::Serialize;

use crate::config::Settings;
use crate::error::Result;
use crate::ops::select::{of_home, select_scoped};
use crate::repo::snapshot::{EntryType, Snapshot, SnapshotKind};
use crate::repo::Repository;
use crate::report::{Envelope, SnapshotInfo};

/// One entry as listed.
#[derive(Debug, Serialize)]
pub struct ListedEntry {
    /// Full path, `~`-relative where under home.
    pub path: String,
    /// Path bytes, base64, when not UTF-8.
    pub path_b64: Option<String>,
    /// Type.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Octal mode string (`0644`).
    pub mode: String,
    /// Size.
    pub size: u64,
    /// Content hash.
    pub sha256: Option<String>,
    /// Symlink target (lossy UTF-8).
    pub target: Option<String>,
    /// Symlink target bytes, base64, when not UTF-8.
    pub target_b64: Option<String>,
    /// Why content is missing.
    pub omitted: Option<String>,
    /// Content stored age-encrypted (secret class); `sha256` is then null.
    pub encrypted: bool,
    /// mtime ns.
    pub mtime_ns: i64,
}

/// Options.
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    /// Which snapshot (None: all).
    pub selector: Option<String>,
    /// Show entries.
    pub files: bool,
    /// Only this kind.
    pub kind: Option<SnapshotKind>,
    /// `--diff A [B]`: compare snapshot A with B, or with the live home when B is `None`.
    pub diff: Option<(String, Option<String>)>,
    /// `--phases`: bootstrap runs and what each phase changed.
    pub phases: bool,
    /// Show and select among the snapshots of every home, not only `$HOME`'s.
    pub all_homes: bool,
}

/// Bytes `backup-prune` would free now (0 when the policy removes nothing).
fn prune_would_free(settings: &Settings, repo: &Repository, snapshots: &[Snapshot]) -> u64 {
    use crate::ops::prune;
    let decisions = prune::decide(
        snapshots,
        &crate::repo::pins::pins(repo),
        &settings.retention,
        settings.safety_keep,
        jiff::Timestamp::now(),
        &jiff::tz::TimeZone::system(),
    );
    if decisions.iter().all(|d| d.keep) {
        return 0;
    }
    let (keep, remove) = prune::partition(snapshots, &decisions);
    let mut scratch = Vec::new();
    prune::collect_garbage(
        repo,
        &keep,
        &remove,
        settings.retention.repack_garbage_percent,
        true,
        &mut scratch,
    )
    .map(|g| g.bytes_freed)
    .unwrap_or(0)
}

/// Run `backup-list`.
pub fn list(settings: &Settings, opts: &ListOptions, env: &mut Envelope) -> Result<()> {
    let repo = Repository::open(&settings.repo)?;
    let every = repo.snapshots()?;
    let snapshots = of_home(every.clone(), settings.home.as_deref(), opts.all_homes);
    let kinds = opts.kind.map(|k| vec![k]);
    if opts.phases {
        return phases(&repo, &snapshots, env);
    }
    if let Some((a, b)) = &opts.diff {
        return diff(
            settings,
            &repo,
            (&snapshots, &every),
            a,
            b.as_deref(),
            kinds.as_deref(),
            env,
        );
    }
    match &opts.selector {
        None => {
            let infos: Vec<SnapshotInfo> = snapshots
                .iter()
                .filter(|s| opts.kind.is_none_or(|k| s.record.kind == k))
                .map(|s| SnapshotInfo::from_snapshot(s, false))
                .collect();
            env.stat("snapshots", infos.len() as u64);
            env.stat("repository_bytes", repo.size_bytes());
            env.stat(
                "prune_would_free",
                prune_would_free(settings, &repo, &snapshots),
            );
            env.put("snapshots", infos);
        }
        Some(sel) => {
            let snap = select_scoped(&snapshots, &every, sel, kinds.as_deref())?;
            env.snapshot = Some(SnapshotInfo::from_snapshot(snap, false));
            env.put("snapshots", vec![SnapshotInfo::from_snapshot(snap, false)]);
            if opts.files {
                let tree = repo.tree(&snap.record.tree)?;
                let mut out = Vec::new();
                for (root, e) in tree.entries() {
                    let mut full = root.root.0.clone();
                    if !e.path.is_empty() {
                        full.push(b'/');
                        full.extend_from_slice(&e.path.0);
                    }
                    let text = std::str::from_utf8(&full).ok();
                    out.push(ListedEntry {
                        path: String::from_utf8_lossy(&full).into_owned(),
                        path_b64: if text.is_none() {
                            use base64::Engine as _;
                            Some(base64::engine::general_purpose::STANDARD.encode(&full))
                        } else {
                            None
                        },
                        kind: e.kind.as_str(),
                        mode: format!("{:04o}", e.mode),
                        size: if e.kind == EntryType::Dir { 0 } else { e.size },
                        sha256: e.sha256.map(|h| h.to_hex()),
                        target: e.target.as_ref().map(|t| t.lossy()),
                        target_b64: e.target.as_ref().and_then(|t| {
                            use base64::Engine as _;
                            std::str::from_utf8(&t.0)
                                .is_err()
                                .then(|| base64::engine::general_purpose::STANDARD.encode(&t.0))
                        }),
                        omitted: e.omitted.clone(),
                        encrypted: e.sealed.is_some(),
                        mtime_ns: e.mtime_ns,
                    });
                }
                env.stat("entries", out.len() as u64);
                env.put("entries", out);
            }
        }
    }
    Ok(())
}

/// One phase of a run as `backup-list --phases` lists it.
#[derive(Debug, Serialize)]
struct ListedPhase {
    phase: String,
    snapshot: String,
    id: String,
    created_at: String,
    next: Option<String>,
    state_changed: Option<bool>,
    added: u64,
    removed: u64,
    changed: u64,
    bytes: u64,
    pinned: Option<String>,
}

/// `backup-list --phases`: runs newest first, each phase with its
/// checkpoint, whether the phase changed the tracked state (its checkpoint
/// against the next one, [`crate::ops::phases`]) and by how much. Each
/// distinct tree is read once.
fn phases(repo: &Repository, snapshots: &[Snapshot], env: &mut Envelope) -> Result<()> {
    let runs = crate::ops::phases::runs(snapshots);
    let pins = crate::repo::pins::pin_reasons(repo);
    let mut trees: std::collections::HashMap<crate::hash::Hash, crate::repo::snapshot::Tree> =
        Default::default();
    let mut out = Vec::new();
    let mut count = 0u64;
    for (i, run) in runs.iter().enumerate().rev() {
        let mut listed = Vec::new();
        for p in &run.phases {
            let mut row = ListedPhase {
                phase: p.phase.to_string(),
                snapshot: p.snapshot.id.short(),
                id: p.snapshot.id.to_hex(),
                created_at: p.snapshot.record.created_at.clone(),
                next: p.next.map(|n| n.id.short()),
                state_changed: p.changed(),
                added: 0,
                removed: 0,
                changed: 0,
                bytes: 0,
                pinned: pins.get(&p.snapshot.id).cloned(),
            };
            if let (Some(next), Some(true)) = (p.next, p.changed()) {
                for t in [p.snapshot.record.tree, next.record.tree] {
                    if let std::collections::hash_map::Entry::Vacant(v) = trees.entry(t) {
                        v.insert(repo.tree(&t)?);
                    }
                }
                let (_, stats) = crate::diff::diff(
                    &crate::diff::flatten(&trees[&p.snapshot.record.tree]),
                    &crate::diff::flatten(&trees[&next.record.tree]),
                );
                row.added = stats.added;
                row.removed = stats.removed;
                row.changed = stats.changed;
                row.bytes = stats.added_bytes + stats.changed_bytes + stats.removed_bytes;
            }
            listed.push(row);
        }
        count += listed.len() as u64;
        out.push(serde_json::json!({
            "run": run.id,
            "started_at": run.started_at(),
            "first": i == 0,
            "phases": listed,
        }));
    }
    env.stat("runs", out.len() as u64);
    env.stat("phases", count);
    env.put("runs", out);
    Ok(())
}

/// `backup-list --diff A [B]`: what changed from snapshot A to snapshot B, or
/// to the live home (A's roots scanned read-only the way a checkpoint scans
/// them, with the files cache sparing unchanged files).
fn diff(
    settings: &Settings,
    repo: &Repository,
    (snapshots, every): (&[Snapshot], &[Snapshot]),
    a: &str,
    b: Option<&str>,
    kinds: Option<&[SnapshotKind]>,
    env: &mut Envelope,
) -> Result<()> {
    let from = select_scoped(snapshots, every, a, kinds)?;
    let old_tree = repo.tree(&from.record.tree)?;
    let old_packages = from.record.packages.as_deref();
    let (new_tree, new_packages) = match b {
        Some(sel) => {
            let to = select_scoped(snapshots, every, sel, kinds)?;
            env.put("to", SnapshotInfo::from_snapshot(to, false));
            (repo.tree(&to.record.tree)?, to.record.packages.clone())
        }
        None => {
            env.put("to", serde_json::Value::Null);
            let tree = live_tree(settings, repo, &old_tree, env)?;
            // Ask the package managers only when A has lists to compare with:
            // they take seconds, and the answer would be "only_in_to" anyway.
            let live = old_packages.filter(|l| !l.is_empty()).map(|_| {
                let c = crate::packages::capture(&settings.packages);
                env.warnings.extend(c.warnings);
                env.stat("packages_ms", c.duration_ms);
                c.lists
            });
            (tree, live)
        }
    };
    let package_diff = crate::packages::diff(old_packages, new_packages.as_deref());
    env.stat(
        "packages_added",
        package_diff
            .iter()
            .map(|d| d.added.len() as u64)
            .sum::<u64>(),
    );
    env.stat(
        "packages_removed",
        package_diff
            .iter()
            .map(|d| d.removed.len() as u64)
            .sum::<u64>(),
    );
    env.put("package_diff", package_diff);
    env.put("from", SnapshotInfo::from_snapshot(from, false));
    let (items, stats) = crate::diff::diff(
        &crate::diff::flatten(&old_tree),
        &crate::diff::flatten(&new_tree),
    );
    env.stat("added", stats.added);
    env.stat("removed", stats.removed);
    env.stat("changed", stats.changed);
    env.stat("added_bytes", stats.added_bytes);
    env.stat("removed_bytes", stats.removed_bytes);
    env.stat("changed_bytes", stats.changed_bytes);
    env.put("diff", items);
    Ok(())
}

/// The tree a checkpoint of `old`'s roots would store now, written nowhere.
pub(crate) fn live_tree(
    settings: &Settings,
    repo: &Repository,
    old: &crate::repo::snapshot::Tree,
    env: &mut Envelope,
) -> Result<crate::repo::snapshot::Tree> {
    use crate::ops::backup::{snapshot_roots, BackupOptions};
    let follow = crate::ops::place::follow_prefixes(settings);
    let place = crate::ops::place::placer_following(
        settings.home.as_deref(),
        None,
        &settings.roots,
        &follow,
    );
    let mut roots = Vec::with_capacity(old.roots.len());
    for r in &old.roots {
        let abs = place(r.root.as_path())?;
        roots.push(crate::config::TrackedRoot {
            shown: crate::paths::tilde_form(&abs, settings.home.as_deref()),
            abs,
        });
    }
    let rules = crate::scan::Rules::new(settings)?;
    let opts = BackupOptions {
        kind: SnapshotKind::Checkpoint,
        label: "live".into(),
        tags: Vec::new(),
        dry_run: true,
        command: "backup-list".into(),
        space: None,
        run: None,
    };
    let report = snapshot_roots(Some(repo), &roots, &rules, &opts)?;
    env.stat("files_read", report.stats.files_read);
    env.stat("files_unchanged", report.stats.files_unchanged);
    for e in &report.errors {
        env.warnings.push(crate::report::Warning {
            code: "unreadable".into(),
            message: format!("{}; compared by size and time only", e.message),
            path: e.path.clone(),
        });
    }
    // Whether a secret *would be stored* is not this command's question.
    env.warnings.extend(
        report
            .warnings
            .into_iter()
            .filter(|w| w.code != "secret_skipped"),
    );
    Ok(report.tree)
}
