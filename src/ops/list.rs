//! `backup-list`: snapshots, one snapshot's entries, and snapshot selection
//! by id, id prefix, label or `latest` (shared with restore and rollback).

use serde::Serialize;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::repo::snapshot::{EntryType, Snapshot, SnapshotKind};
use crate::repo::Repository;
use crate::report::{Envelope, SnapshotInfo};

/// Pick a snapshot: full id, unique hex prefix (≥ 4), label (newest), or `latest`.
pub fn select<'a>(
    snapshots: &'a [Snapshot],
    selector: &str,
    kinds: Option<&[SnapshotKind]>,
) -> Result<&'a Snapshot> {
    let pool: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|s| kinds.is_none_or(|k| k.contains(&s.record.kind)))
        .collect();
    if selector == "latest" {
        // The newest checkpoint or backup: safety snapshots are selected by id or label.
        let newest = pool
            .iter()
            .rev()
            .find(|s| s.record.kind != SnapshotKind::Safety)
            .or(pool.last());
        return newest.copied().ok_or_else(|| {
            Error::new(
                ExitCode::Failed,
                "no_snapshots",
                "the repository has no snapshots yet",
            )
            .with_hint("take one with `backup-checkpoint manual NAME` or `backup-create`")
        });
    }
    if let Some(s) = pool.iter().rev().find(|s| s.record.label == selector) {
        return Ok(s);
    }
    let lower = selector.to_ascii_lowercase();
    if lower.len() >= 4 && lower.chars().all(|c| c.is_ascii_hexdigit()) {
        let hits: Vec<&&Snapshot> = pool
            .iter()
            .filter(|s| s.id.to_hex().starts_with(&lower))
            .collect();
        match hits.len() {
            1 => return Ok(hits[0]),
            0 => {}
            n => {
                return Err(Error::usage(
                    "ambiguous_snapshot",
                    format!("{selector:?} matches {n} snapshots"),
                )
                .with_hint("give more digits of the id"))
            }
        }
    }
    Err(Error::new(
        ExitCode::Failed,
        "snapshot_not_found",
        format!("no snapshot matches {selector:?} (not an id, a label, or `latest`)"),
    )
    .with_hint("run `backup-list` to see the snapshots"))
}

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
    /// Symlink target.
    pub target: Option<String>,
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
}

/// Bytes `backup-prune` would free now (0 when the policy removes nothing).
fn prune_would_free(settings: &Settings, repo: &Repository, snapshots: &[Snapshot]) -> u64 {
    use crate::ops::prune;
    let decisions = prune::decide(
        snapshots,
        &prune::pins(repo),
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
    let snapshots = repo.snapshots()?;
    let kinds = opts.kind.map(|k| vec![k]);
    match &opts.selector {
        None => {
            let infos: Vec<SnapshotInfo> = snapshots
                .iter()
                .filter(|s| opts.kind.is_none_or(|k| s.record.kind == k))
                .map(|s| SnapshotInfo::from_snapshot(s, false))
                .collect();
            env.stat("snapshots", infos.len() as u64);
            env.stat("repository_bytes", crate::ops::prune::repo_size(&repo));
            env.stat(
                "prune_would_free",
                prune_would_free(settings, &repo, &snapshots),
            );
            env.put("snapshots", infos);
        }
        Some(sel) => {
            let snap = select(&snapshots, sel, kinds.as_deref())?;
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
