//! Undo one bootstrap phase (`backup-rollback PHASE --phase-only`), like
//! Snapper's `undochange`: revert only the paths the phase changed between
//! its checkpoint and the next checkpoint of its run, leaving everything
//! changed elsewhere alone.
//!
//! It is a path-selected rollback on top of the ordinary restore planner
//! ([`crate::ops::restore::run`] with `only` set to the phase's paths), so the
//! safety snapshot, `--undo`, the beneath-root writes and the plan output
//! are the rollback's own. What this module adds is the choice of paths:
//!
//! * the phase's paths: every path added, removed or changed (type, content,
//!   target, mode, owner; an mtime alone is not a change) from the phase's
//!   checkpoint to the next one;
//! * conflicts: those of them that changed **again** after the phase (the
//!   live home differs from the next checkpoint at the path, below it, or a
//!   parent of it was added, removed or replaced). They are listed and left
//!   alone unless `--overwrite`;
//! * a directory whose mode or owner alone the phase changed is listed and
//!   left alone: selecting it would roll back its whole subtree.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::ops::restore::{self, Mode2, RestoreOptions};
use crate::repo::snapshot::{Entry, EntryType, SnapshotKind, Tree};
use crate::repo::Repository;
use crate::report::{Envelope, Warning};

/// Options of a one-phase undo.
#[derive(Debug, Clone)]
pub struct UndoOptions {
    /// A phase selector (`pre-dotfiles`, `pre-dotfiles@first`, ...).
    pub selector: String,
    /// Revert conflicting paths too.
    pub overwrite: bool,
    /// Only paths under these (absolute; empty: all).
    pub only: Vec<PathBuf>,
    /// Plan only.
    pub dry_run: bool,
    /// Resolve among the runs of every home, not only `$HOME`'s.
    pub all_homes: bool,
    /// Show the phase's package plan (`--packages`; `apply` is refused for a phase undo).
    pub packages: crate::ops::package_plan::PackagesMode,
}

/// One path the phase changed, and what the undo does with it.
#[derive(Debug, Clone, Serialize)]
pub struct PhasePath {
    /// Path as in `backup-list --files` (`~/.zshrc`).
    pub path: String,
    /// `added`, `removed` or `changed` by the phase.
    pub change: &'static str,
    /// `revert`, `conflict` (changed again since; left alone), `overwrite`
    /// (changed again, reverted on request) or `left` (with `reason`).
    pub action: &'static str,
    /// Why it is left alone.
    pub reason: Option<String>,
}

/// Full path bytes → (root as stored, path below it, entry).
type Located<'t> = BTreeMap<Vec<u8>, (&'t [u8], &'t [u8], &'t Entry)>;

fn locate(tree: &Tree) -> Located<'_> {
    let mut out = Located::new();
    for r in &tree.roots {
        for e in &r.entries {
            out.insert(
                crate::diff::full_path(&r.root.0, &e.path.0),
                (&r.root.0[..], &e.path.0[..], e),
            );
        }
    }
    out
}

/// Paths that differ from `a` to `b`, with how (`added`, `removed`, `changed`, `replaced`).
fn changes<'t>(a: &Located<'t>, b: &Located<'t>) -> BTreeMap<Vec<u8>, &'static str> {
    let mut out = BTreeMap::new();
    for (k, (_, _, was)) in a {
        match b.get(k) {
            None => {
                out.insert(k.clone(), "removed");
            }
            Some((_, _, now)) => {
                let d = crate::diff::compare(was, now);
                if d.kind {
                    out.insert(k.clone(), "replaced");
                } else if d.reported() {
                    out.insert(k.clone(), "changed");
                }
            }
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.insert(k.clone(), "added");
    }
    out
}

/// Roots (as stored) that both trees track.
fn shared_roots<'t>(a: &'t Tree, b: &Tree) -> Vec<&'t [u8]> {
    a.roots
        .iter()
        .filter(|r| b.roots.iter().any(|o| o.root == r.root))
        .map(|r| &r.root.0[..])
        .collect()
}

fn under(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// The later change that makes `path` a conflict, if any.
fn conflict_with(path: &[u8], later: &BTreeMap<Vec<u8>, &'static str>) -> Option<String> {
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    if let Some(how) = later.get(path) {
        return Some(format!("{how} again since the phase"));
    }
    if let Some((p, how)) = later.iter().find(|(p, _)| under(p, path)) {
        return Some(format!("{} below it {how} since the phase", show(p)));
    }
    later
        .iter()
        .find(|(p, how)| **how != "changed" && under(path, p))
        .map(|(p, how)| format!("{} above it {how} since the phase", show(p)))
}

/// Undo one phase.
pub fn undo_phase(settings: &Settings, opts: &UndoOptions, env: &mut Envelope) -> Result<()> {
    env.dry_run = opts.dry_run;
    let repo = Repository::open(&settings.repo)?;
    let snapshots =
        crate::ops::select::of_home(repo.snapshots()?, settings.home.as_deref(), opts.all_homes);
    let (snap, why) = crate::ops::select::resolve(
        &snapshots,
        &opts.selector,
        Some(&[SnapshotKind::Checkpoint]),
    )?;
    let why = why.ok_or_else(|| {
        Error::usage(
            "not_a_phase",
            format!(
                "--phase-only undoes a bootstrap phase; {:?} is not a phase name",
                opts.selector
            ),
        )
        .with_hint("give a phase (pre-dotfiles, pre-dotfiles@first, pre-dotfiles~1), or leave --phase-only out for a full rollback")
    })?;
    let runs = crate::ops::phases::runs(&snapshots);
    let phase = runs
        .iter()
        .find(|r| r.id == why.run)
        .and_then(|r| r.phase(&why.phase))
        .filter(|p| p.snapshot.id == snap.id)
        .expect("resolve picked a phase of a run");
    let next = phase.next.ok_or_else(|| {
        Error::usage(
            "phase_open",
            format!(
                "{} of run {} has no later checkpoint yet, so what the phase changed is not known",
                why.phase, why.run
            ),
        )
        .with_hint(format!(
            "roll everything back to it with `backup-rollback {}`, or take the next phase's checkpoint first",
            snap.id.short()
        ))
    })?;
    env.put("resolved", &why);
    if opts.packages != crate::ops::package_plan::PackagesMode::Off {
        if let Some(p) = crate::ops::package_plan::for_phase(settings, snap, next) {
            crate::ops::package_plan::show(&p, opts.packages, env)?;
        }
    }
    let pre_tree = repo.tree(&snap.record.tree)?;
    let post_tree = repo.tree(&next.record.tree)?;
    let (pre, post) = (locate(&pre_tree), locate(&post_tree));
    // Only roots both checkpoints hold: a root tracked on one side only (the
    // set of tracked paths changed, `--path`) says nothing about the phase,
    // and taking its entries for "added by the phase" would delete them.
    let shared = shared_roots(&pre_tree, &post_tree);
    let by_phase: BTreeMap<Vec<u8>, &'static str> = changes(&pre, &post)
        .into_iter()
        .filter(|(k, _)| {
            let (root, _, _) = post.get(k).or_else(|| pre.get(k)).expect("on one side");
            shared.contains(root)
        })
        .collect();
    let one_sided: Vec<String> = pre_tree
        .roots
        .iter()
        .chain(&post_tree.roots)
        .filter(|r| !shared.contains(&&r.root.0[..]))
        .map(|r| r.root.lossy())
        .collect();
    if !one_sided.is_empty() {
        env.warnings.push(Warning::new(
            "roots_differ",
            format!(
                "{} tracked in only one of the two checkpoints; left out of the undo (roll back to {} with --path to restore it)",
                one_sided.join(", "),
                snap.id.short()
            ),
        ));
    }
    let live_tree = crate::ops::list::live_tree(settings, &repo, &post_tree, env)?;
    let later = changes(&post, &locate(&live_tree));

    let place = crate::ops::place::placer(settings.home.as_deref(), None, &settings.roots);
    let mut listed = Vec::new();
    let mut selected = Vec::new();
    for (full, how) in &by_phase {
        let (root, rel, entry) = post
            .get(full)
            .or_else(|| pre.get(full))
            .copied()
            .expect("a changed path is on one side");
        let mut abs = place(std::path::Path::new(OsStr::from_bytes(root)))?;
        if !rel.is_empty() {
            abs.push(OsStr::from_bytes(rel));
        }
        if !opts.only.is_empty() && !opts.only.iter().any(|o| abs.starts_with(o)) {
            continue;
        }
        let mut item = PhasePath {
            path: String::from_utf8_lossy(full).into_owned(),
            change: if *how == "replaced" { "changed" } else { how },
            action: "revert",
            reason: None,
        };
        if *how == "changed" && entry.kind == EntryType::Dir {
            item.action = "left";
            item.reason = Some(
                "only the directory's mode or owner changed; reverting it would roll back everything below it"
                    .into(),
            );
        } else if let Some(c) = conflict_with(full, &later) {
            item.action = if opts.overwrite {
                "overwrite"
            } else {
                "conflict"
            };
            item.reason = Some(c);
        }
        if matches!(item.action, "revert" | "overwrite") {
            selected.push(abs);
        }
        listed.push(item);
    }
    // A selected directory brings its subtree (all of it the phase's, or a
    // conflict above); nested selections would be scanned twice.
    selected.sort();
    let mut outer: Vec<PathBuf> = Vec::new();
    for p in selected {
        if !outer.last().is_some_and(|o| p.starts_with(o)) {
            outer.push(p);
        }
    }
    let selected = outer;
    let conflicts = listed.iter().filter(|p| p.action == "conflict").count();
    env.put(
        "phase_undo",
        serde_json::json!({
            "phase": why.phase,
            "run": why.run,
            "from": snap.id.short(),
            "to": next.id.short(),
            "overwrite": opts.overwrite,
            "conflicts": conflicts,
            "paths": listed,
        }),
    );
    if conflicts > 0 {
        env.warnings.push(Warning::new(
            "phase_conflicts",
            format!(
                "{conflicts} path(s) the phase changed were changed again since and are left alone; pass --overwrite to revert them too"
            ),
        ));
    }
    if selected.is_empty() {
        // An empty `only` would mean "everything": nothing to hand the planner.
        env.warnings.push(Warning::new(
            "nothing_to_do",
            format!(
                "nothing of what the phase after {} changed is left to revert",
                why.phase
            ),
        ));
        return Ok(());
    }
    restore::run(
        settings,
        &RestoreOptions {
            selector: Some(snap.id.to_hex()),
            mode: Mode2::Rollback { keep_new: false },
            only: selected,
            target: None,
            dry_run: opts.dry_run,
            command: "backup-rollback".into(),
            all_homes: false,
            force: false,
            existing: restore::Existing::Replace,
        },
        env,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_the_path_below_it_or_a_replaced_parent() {
        let later: BTreeMap<Vec<u8>, &'static str> = [
            (b"~/.config/a/x".to_vec(), "changed"),
            (b"~/.local".to_vec(), "removed"),
            (b"~/.cfg".to_vec(), "changed"),
        ]
        .into_iter()
        .collect();
        assert!(conflict_with(b"~/.config/a/x", &later).is_some());
        assert!(conflict_with(b"~/.config/a", &later).is_some(), "below it");
        assert!(
            conflict_with(b"~/.local/share/f", &later).is_some(),
            "parent gone"
        );
        assert!(
            conflict_with(b"~/.cfg/f", &later).is_none(),
            "parent's mode only"
        );
        assert!(
            conflict_with(b"~/.config/ab", &later).is_none(),
            "not a prefix path"
        );
        assert!(conflict_with(b"~/.zshrc", &later).is_none());
    }
}
