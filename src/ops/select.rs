//! Snapshot selection by id, id prefix, label, `latest` or phase name, and
//! the per-home filter before it: shared by list, restore, rollback (undo)
//! and prune, so it lives beside them rather than in any one of them.

use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::ops::phases::Resolution;
use crate::repo::snapshot::{Snapshot, SnapshotKind};

/// The snapshots of the current home (a repository may be shared by
/// several homes: snapshot records say whose home they hold), or all of them
/// with `--all-homes`. A filter before [`select`], so `latest`, labels and
/// undo never cross homes.
pub fn of_home(
    snapshots: Vec<Snapshot>,
    home: Option<&std::path::Path>,
    all_homes: bool,
) -> Vec<Snapshot> {
    if all_homes {
        return snapshots;
    }
    snapshots
        .into_iter()
        .filter(|s| s.record.of_home(home))
        .collect()
}

/// [`select`] among `scoped`; when nothing there matches but a snapshot of
/// another home in `all` does, the error says so and how to pick it.
pub fn select_scoped<'a>(
    scoped: &'a [Snapshot],
    all: &[Snapshot],
    selector: &str,
    kinds: Option<&[SnapshotKind]>,
) -> Result<&'a Snapshot> {
    select(scoped, selector, kinds).map_err(|e| match select(all, selector, kinds) {
        Ok(other) if scoped.len() < all.len() => {
            let home = other
                .record
                .home
                .as_ref()
                .map(|h| h.lossy())
                .unwrap_or_default();
            Error::new(
                e.exit,
                e.code,
                format!(
                    "{}; {selector:?} matches snapshot {} of another home ({home}, user {}, host {})",
                    e.message,
                    other.id.short(),
                    other.record.user,
                    other.record.host
                ),
            )
            .with_hint("pass --all-homes to select among the snapshots of every home")
        }
        _ => e,
    })
}

/// Pick a snapshot: full id, unique hex prefix (≥ 4), label (newest), or `latest`;
/// a phase name by bootstrap runs ([`crate::ops::phases::resolve`]).
pub fn select<'a>(
    snapshots: &'a [Snapshot],
    selector: &str,
    kinds: Option<&[SnapshotKind]>,
) -> Result<&'a Snapshot> {
    resolve(snapshots, selector, kinds).map(|(s, _)| s)
}

/// [`select`], also saying how a phase name was resolved.
pub fn resolve<'a>(
    snapshots: &'a [Snapshot],
    selector: &str,
    kinds: Option<&[SnapshotKind]>,
) -> Result<(&'a Snapshot, Option<Resolution>)> {
    if kinds.is_none_or(|k| k.contains(&SnapshotKind::Checkpoint)) {
        if let Some((s, why)) = crate::ops::phases::resolve(snapshots, selector)? {
            return Ok((s, Some(why)));
        }
    }
    select_plain(snapshots, selector, kinds).map(|s| (s, None))
}

/// Ids, labels and `latest`, as before runs existed.
fn select_plain<'a>(
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
