//! Restore and rollback: plan, safety snapshot, apply.
//!
//! Modelled on rustic_core's restore: a pure [`plan`] compares what the
//! snapshot wants (desired entries) with what is there now (the safety
//! snapshot's tree, which is the current state hashed) and returns the list
//! of actions; `--dry-run` prints it; [`apply`] executes exactly it.
//!
//! Safety rules, each enforced here:
//! * a safety snapshot of every root the plan touches is committed before the
//!   first change, so `backup-rollback --undo` can always go back;
//! * a path is deleted or overwritten only when the safety snapshot holds its
//!   current content (secret or unreadable files are left alone);
//! * every path is resolved beneath its anchor (home, `--target`) one
//!   component at a time with `O_NOFOLLOW` ([`Dir::open_beneath`]); manifest
//!   paths with `..`, `.`, empty components or NUL are refused;
//! * content is checked against its SHA-256 before it becomes visible, and
//!   written through the crash-safe path with its final mode and mtime.

mod apply;
mod plan;

#[allow(clippy::wildcard_imports)]
use apply::*;
pub use apply::{acl_fallback_mode, apply, secret_access, ApplyStats, ApplyTarget, SecretAccess};
#[allow(clippy::wildcard_imports)]
use plan::*;
pub use plan::{
    flatten, kept_name, plan, plan_keeping, set_aside, Action, ActionKind, Existing, Mode2,
    Overwrite, State,
};

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::atomic::Dir;
use crate::config::{Settings, TrackedRoot};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::paths::{display_path, expand_tilde, tilde_form};
use crate::repo::snapshot::{Entry, EntryType, Snapshot, SnapshotKind};
use crate::repo::Repository;
use crate::report::{Envelope, SnapshotInfo, Status, Warning};
use crate::scan::Rules;

use super::backup::{prepare_snapshot, BackupOptions};
use super::place::{follow_prefixes, placer_following};
use super::select::{of_home, select_scoped};
use crate::repo::layout;
use crate::repo::lock::stale_lock_warning;

/// Refuse, before any change (and before the safety snapshot), a plan that
/// cannot be carried out on the file systems it writes: one mounted
/// read-only (exit 8, `read_only_target`), or one where the writes do not
/// fit in what is free (exit 5, `insufficient_space`; see `space::ensure_room`). Each
/// change counts against the file system of its nearest existing parent
/// directory (the home, a tracked root elsewhere, or `--target`), never
/// against an unrelated root.
fn check_destinations(actions: &[Action]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // device -> (the directory holding every change on it, the one holding
    // every write of content on it, bytes written on it)
    let mut by_fs: BTreeMap<u64, (PathBuf, Option<PathBuf>, u64)> = BTreeMap::new();
    let changes = actions.iter().filter(|a| {
        matches!(
            a.action,
            ActionKind::Create | ActionKind::Update | ActionKind::Delete | ActionKind::Metadata
        )
    });
    for a in changes {
        let abs = Path::new(OsStr::from_bytes(&a.abs));
        let Some(dir) = abs.ancestors().skip(1).find(|d| d.is_dir()) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let slot = by_fs
            .entry(meta.dev())
            .or_insert_with(|| (dir.to_path_buf(), None, 0));
        widen_to(&mut slot.0, dir);
        if a.bytes > 0 {
            match &mut slot.1 {
                Some(d) => widen_to(d, dir),
                None => slot.1 = Some(dir.to_path_buf()),
            }
            slot.2 = slot.2.saturating_add(a.bytes);
        }
    }
    let by_fs = by_fs
        .into_values()
        .map(|(any, written, need)| (written.unwrap_or(any), need));
    for (dir, need) in by_fs {
        let dir = dir.as_path();
        if crate::sys::read_only_mount(dir) {
            let fs = crate::space::mount_point(dir);
            let shown = display_path(dir);
            return Err(Error::new(
                ExitCode::ReadOnly,
                "read_only_target",
                format!("{shown} is on {fs}, which is mounted read-only; nothing was changed"),
            )
            .with_path(dir)
            .with_hint(format!(
                "remount it writable (e.g. `mount -o remount,rw {fs}`) and run again, or restore into --target DIR on a writable file system"
            )));
        }
        crate::space::ensure_room(dir, need)?;
    }
    Ok(())
}

/// Make `common` the nearest directory holding both itself and `dir`.
fn widen_to(common: &mut PathBuf, dir: &Path) {
    if !dir.starts_with(&*common) {
        if let Some(c) = common.ancestors().find(|c| dir.starts_with(c)) {
            *common = c.to_path_buf();
        }
    }
}

/// Options for restore and rollback.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Snapshot selector; `None` means undo (newest safety snapshot).
    pub selector: Option<String>,
    /// Rollback or restore.
    pub mode: Mode2,
    /// Only these paths (absolute).
    pub only: Vec<PathBuf>,
    /// Restore under this directory.
    pub target: Option<PathBuf>,
    /// Plan only.
    pub dry_run: bool,
    /// Binary name.
    pub command: String,
    /// Select among the snapshots of every home (`--all-homes`), not only `$HOME`'s.
    pub all_homes: bool,
    /// `--undo` even when a newer checkpoint or backup would be replaced.
    pub force: bool,
    /// What happens to conflicts (existing files and symlinks that differ).
    pub existing: Existing,
}

/// Restore, rollback or undo, filling the envelope.
pub fn run(settings: &Settings, opts: &RestoreOptions, env: &mut Envelope) -> Result<()> {
    env.dry_run = opts.dry_run;
    let repo = Repository::open(&settings.repo)?;
    let (guard, read_only) = if opts.dry_run {
        (None, None)
    } else {
        match repo.lock(&opts.command, settings.lock_wait) {
            Ok(g) => (Some(g), None),
            Err(e) if e.exit == ExitCode::ReadOnly && restores_elsewhere(opts) => {
                (None, Some(read_only_reader(&repo, settings, env)?))
            }
            Err(e) => return Err(e),
        }
    };
    let read_only_repo = read_only.is_some();
    if let Some(stale) = guard.as_ref().and_then(|g| g.stale.as_ref()) {
        env.warnings.push(stale_lock_warning(stale));
    }
    let every = repo.snapshots()?;
    let mut snapshots = of_home(every.clone(), settings.home.as_deref(), opts.all_homes);
    if snapshots.is_empty() && !every.is_empty() && matches!(opts.mode, Mode2::Restore(_)) {
        // A new machine or account restoring what another home saved: this
        // home has nothing of its own to confuse it with. (Rollback and
        // undo never fall back: they replace this home's state.)
        env.warnings.push(Warning::new(
            "other_home",
            "this home has no snapshots of its own; selecting among every home's (as with --all-homes)",
        ));
        snapshots = every.clone();
    }
    let chosen: &Snapshot = match &opts.selector {
        Some(sel) => select_scoped(&snapshots, &every, sel, None)?,
        None => undo_target(&snapshots, opts.force)?,
    };
    env.put("source", SnapshotInfo::from_snapshot(chosen, false));
    let tree = repo.tree(&chosen.record.tree)?;
    let follow = follow_prefixes(settings);
    let place = placer_following(
        settings.home.as_deref(),
        opts.target.as_deref(),
        &settings.roots,
        &follow,
    );
    let (mut desired, mut roots) = flatten(&tree, &place)?;
    let attrs_unknown = !tree.xattrs_recorded;
    if !opts.only.is_empty() {
        let mut links = Vec::new();
        for r in tree.roots.iter() {
            if let Some(l) = &r.link {
                links.push((place(l.as_path())?, place(r.root.as_path())?));
            }
        }
        let only = through_links(&opts.only, &links);
        let keep = |p: &[u8]| {
            only.iter()
                .any(|o| Path::new(OsStr::from_bytes(p)).starts_with(o))
        };
        desired.retain(|k, _| keep(k));
        // A selected path inside a root narrows it; one that contains a root selects the whole root.
        let mut mapped: Vec<PathBuf> = Vec::new();
        for r in &roots {
            for o in &only {
                let pick = if o.starts_with(r) {
                    Some(o.clone())
                } else if r.starts_with(o) {
                    Some(r.clone())
                } else {
                    None
                };
                if let Some(p) = pick.filter(|p| !mapped.contains(p)) {
                    mapped.push(p);
                }
            }
        }
        if mapped.is_empty() {
            return Err(Error::usage(
                "path_not_in_snapshot",
                format!(
                    "none of the --path values is inside the snapshot's roots ({})",
                    tree.roots
                        .iter()
                        .map(|r| r.root.lossy())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        roots = mapped;
    }
    // Current state = a safety snapshot of the same roots (committed unless dry run).
    let mut tracked: Vec<TrackedRoot> = roots
        .iter()
        .map(|abs| TrackedRoot {
            shown: tilde_form(abs, settings.home.as_deref()),
            abs: abs.clone(),
        })
        .collect();
    let snap_short = chosen.id.short();
    let on_disk = |p: &[u8]| std::fs::symlink_metadata(OsStr::from_bytes(p)).is_ok();
    // A root that is itself a file may be kept beside it, outside every
    // root: its kept name becomes a root of the safety snapshot too (absent
    // there), so that `--undo` removes the kept copy again.
    let mut named: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    if opts.existing == Existing::Rename {
        for r in &roots {
            let is_dir = std::fs::symlink_metadata(r).is_ok_and(|m| m.is_dir());
            if is_dir {
                continue;
            }
            let abs = r.as_os_str().as_bytes();
            let keep = kept_name(abs, &snap_short, &|p| {
                on_disk(p) || desired.contains_key(p) || named.values().any(|v| v == p)
            });
            let keep_path = PathBuf::from(OsStr::from_bytes(&keep));
            tracked.push(TrackedRoot {
                shown: tilde_form(&keep_path, settings.home.as_deref()),
                abs: keep_path,
            });
            named.insert(abs.to_vec(), keep);
        }
    }
    let mut rules = Rules::new(settings)?;
    // The snapshot's roots include the content its links led to, resolved
    // when it was taken: the current state is those same paths, never where
    // a link leads now (a link changed since is put back as a link).
    rules.follow_links = false;
    let label = match (&opts.selector, opts.mode) {
        (None, _) => "before-undo",
        (_, Mode2::Rollback { .. }) => "before-rollback",
        (_, Mode2::Restore(_)) => "before-restore",
    };
    let mut tags = vec![format!("for:{}", chosen.id.short())];
    // Consecutive rollbacks (and retries) form a chain: `--undo` goes back
    // to the state before the first of them.
    // A rollback *to* a safety snapshot is itself an undo (the Ansible
    // module's `undo_of`): like `--undo`, it starts no chain.
    if let Some(prev) = snapshots.last().filter(|s| {
        opts.selector.is_some()
            && chosen.record.kind != SnapshotKind::Safety
            && s.record.kind == SnapshotKind::Safety
            && s.record.label != "before-undo"
    }) {
        tags.push(format!("{CHAIN_TAG}{}", prev.id.to_hex()));
    }
    let safety_opts = BackupOptions {
        kind: SnapshotKind::Safety,
        label: label.into(),
        tags,
        // A read-only repository: the current state is only planned against.
        dry_run: opts.dry_run || read_only_repo,
        command: opts.command.clone(),
        space: (!read_only_repo).then(|| settings.space.clone()),
        run: None,
        verify_after_write: settings.verify_after_write,
    };
    // Packed now, committed below only if something is going to change
    // (dropped on every other way out, which removes its packs).
    let safety = prepare_snapshot(Some(&repo), &tracked, &rules, &safety_opts, None)?;
    if !opts.dry_run {
        // A killed rollback leaves whole temp copies (possibly a decrypted
        // key), also in directories this plan does not touch: the one place
        // they are removed, before anything is applied.
        remove_interrupted_writes(settings.home.as_deref(), safety.excluded());
    }
    let (mut current, _) = flatten(safety.tree(), &|root: &Path| {
        Ok(expand_tilde(root, settings.home.as_deref()).unwrap_or_else(|| root.to_path_buf()))
    })?;
    // Files the safety snapshot holds without their attributes are kept as
    // they are (see `XATTRS_UNREADABLE`).
    let no_attrs = safety.xattrs_unreadable();
    for (abs, have) in current.iter_mut() {
        if have.kind == EntryType::File
            && have.omitted.is_none()
            && no_attrs.contains(display_path(Path::new(OsStr::from_bytes(abs))).as_str())
        {
            have.omitted = Some(XATTRS_UNREADABLE.to_string());
        }
    }
    let excluded: BTreeMap<Vec<u8>, String> = safety
        .excluded()
        .iter()
        .map(|x| (x.abs.as_os_str().as_bytes().to_vec(), x.reason.clone()))
        .collect();
    // The tool's own files are never rolled back, whatever the snapshot
    // holds (one taken before they were excluded may hold them).
    let tool_state: Vec<(Vec<u8>, Entry)> = desired
        .iter()
        .filter(|(abs, _)| rules.is_tool_state(Path::new(OsStr::from_bytes(abs))))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (abs, _) in &tool_state {
        desired.remove(abs);
    }
    if attrs_unknown {
        // A tree from before attributes were recorded: keep what each path
        // has now (see `Tree::xattrs_recorded`).
        for (abs, want) in desired.iter_mut() {
            if let Some(have) = current.get(abs) {
                want.xattrs.clone_from(&have.xattrs);
            }
        }
    }
    let mut actions = plan_keeping(&desired, &current, opts.mode, &excluded);
    set_aside(&mut actions, opts.existing, &snap_short, &named, &|p| {
        on_disk(p) || desired.contains_key(p) || current.contains_key(p) || excluded.contains_key(p)
    });
    actions.extend(tool_state.into_iter().map(|(abs, want)| Action {
        action: ActionKind::Skip,
        path: display_path(Path::new(OsStr::from_bytes(&abs))),
        kind: want.kind,
        reason: format!("{}; never rolled back", crate::scan::TOOL_STATE),
        bytes: 0,
        abs,
        desired: None,
        current: None,
        blocked: false,
        conflict_skipped: false,
        keep_as: None,
        kept_as: None,
    }));
    // Names a folding file system (macOS, `chattr +F`) takes for one: refuse before any change.
    let written = actions
        .iter()
        .filter(|a| matches!(a.action, ActionKind::Create | ActionKind::Update));
    super::names::check(
        written.map(|a| a.abs.as_slice()),
        current.keys().map(Vec::as_slice),
    )?;
    let mut stats = ApplyStats::default();
    let changing = actions
        .iter()
        .filter(|a| {
            matches!(
                a.action,
                ActionKind::Create | ActionKind::Update | ActionKind::Delete | ActionKind::Metadata
            )
        })
        .count();
    stats.unchanged =
        (desired.len() - actions.iter().filter(|a| a.desired.is_some()).count()) as u64;
    env.put("plan", serde_json::json!({ "actions": &actions }));
    let conflicts: Vec<&Action> = actions
        .iter()
        .filter(|a| a.action == ActionKind::Conflict)
        .collect();
    if !conflicts.is_empty() {
        let e = Error::new(
            ExitCode::Refused,
            "conflicts",
            format!("{} existing path(s) differ from the snapshot, e.g. {}; nothing was changed", conflicts.len(), conflicts[0].path),
        )
        .with_hint("pass --overwrite if-changed to replace them (a safety snapshot is taken first), or --target DIR to restore elsewhere");
        return Err(e);
    }
    if read_only_repo {
        refuse_replacing(&actions, opts.target.as_deref())?;
    }
    check_destinations(&actions)?;
    let blocked = blocked_errors(&actions);
    if opts.dry_run || changing == 0 {
        for a in &actions {
            count(&mut stats, a.action);
        }
        env.changed = false;
        env.stats = to_map(&stats);
        if changing == 0 && !opts.dry_run && blocked.is_empty() {
            env.warnings.push(Warning::new(
                "nothing_to_do",
                "everything already matches the snapshot",
            ));
        }
        if !opts.dry_run {
            report_errors(env, &blocked);
        }
        return Ok(());
    }
    // Commit the safety snapshot before the first change (none into a
    // read-only repository: the plan replaces nothing there, see above).
    // A restore that only creates (into a new `--target`) has nothing to
    // keep: an empty safety snapshot there would count against
    // `safety.keep`, evicting a rollback's, and become what `--undo` aims at.
    let keeps_something = !matches!(opts.mode, Mode2::Restore(_))
        || actions.iter().any(|a| {
            matches!(
                a.action,
                ActionKind::Update | ActionKind::Delete | ActionKind::Metadata
            )
        });
    if !read_only_repo && keeps_something {
        commit_safety(safety, env)?;
    }
    let index = repo.index()?;
    let anchor = opts.target.clone();
    let mut errors = blocked;
    apply(
        &repo,
        &index,
        &actions,
        ApplyTarget {
            home: settings.home.as_deref(),
            target: anchor.as_deref(),
            desired: Some(&desired),
        },
        &secret_access(settings, &actions),
        &mut stats,
        &mut errors,
    );
    for (path, why) in std::mem::take(&mut stats.links_not_restored) {
        let shown = display_path(&path);
        errors.push(
            Error::new(
                ExitCode::Partial,
                "hardlink_not_restored",
                format!("{shown}: content restored as a separate file, but not as a hard link: {why}"),
            )
            .with_path(&path)
            .with_hint("fix the cause (free space, permissions) and run the same command again: it links the names"),
        );
    }
    for (path, what) in std::mem::take(&mut stats.unrestored) {
        let shown = display_path(&path);
        env.warnings.push(Warning::at(
            "xattrs_not_restored",
            shown.clone(),
            format!("{shown}: content restored, but extended attributes {what}"),
        ));
    }
    if read_only_repo {
        // Nothing was written into the repository, so there is nothing to prune.
    } else if settings.retention.auto {
        let kinds = [SnapshotKind::Checkpoint, SnapshotKind::Safety];
        match crate::ops::prune::auto_prune(&repo, settings, Some(&kinds), &mut env.warnings) {
            Ok((removed, _)) => env.stat("safety_snapshots_removed", removed),
            Err(e) => env
                .warnings
                .push(Warning::new("auto_prune_failed", e.message)),
        }
    } else {
        prune_safety(&repo, settings.safety_keep, settings.home.as_deref(), env);
    }
    env.changed = stats.created + stats.updated + stats.deleted + stats.metadata > 0;
    env.stats = to_map(&stats);
    report_errors(env, &errors);
    drop(guard);
    drop(read_only);
    Ok(())
}

/// A restore into `--target`: the only writer that can run on a repository
/// it cannot write.
fn restores_elsewhere(opts: &RestoreOptions) -> bool {
    opts.target.is_some() && matches!(opts.mode, Mode2::Restore(_)) && opts.selector.is_some()
}

/// Restore from a read-only repository: hold the lock shared where the file
/// system allows it (else warn, naming the lock file), and say that no safety
/// snapshot is taken. Returns the shared hold, if any (released on drop).
fn read_only_reader(
    repo: &Repository,
    settings: &Settings,
    env: &mut Envelope,
) -> Result<Option<crate::repo::lock::SharedLock>> {
    let lock_path = repo.sub("lock");
    let shared = match repo.lock_shared(settings.lock_wait)? {
        Ok(l) => Some(l),
        Err(why) => {
            env.warnings.push(Warning::at(
                "lock_unavailable",
                display_path(&lock_path),
                format!(
                    "the lock {} cannot be taken shared ({why}); restoring without a lock (a writer on another machine could change the repository meanwhile)",
                    display_path(&lock_path)
                ),
            ));
            None
        }
    };
    env.warnings.push(Warning::at(
        "read_only_repository",
        display_path(repo.root()),
        format!(
            "the repository {} cannot be written: restoring into --target without a safety snapshot, so paths there that differ are not replaced",
            display_path(repo.root())
        ),
    ));
    Ok(shared)
}

/// With no safety snapshot, a plan may only add: a path it would replace or
/// remove is refused (exit 5) before anything changes.
fn refuse_replacing(actions: &[Action], target: Option<&Path>) -> Result<()> {
    let replacing: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a.action, ActionKind::Update | ActionKind::Delete))
        .collect();
    let Some(first) = replacing.first() else {
        return Ok(());
    };
    let mut e = Error::new(
        ExitCode::Refused,
        "no_safety_snapshot",
        format!(
            "{} path(s) in the target would be replaced or removed, e.g. {}, and the repository is read-only, so no safety snapshot can keep them; nothing was changed",
            replacing.len(),
            first.path
        ),
    )
    .with_hint("restore into an empty or new directory with --target, or make the repository writable");
    if let Some(t) = target {
        e = e.with_path(t);
    }
    Err(e)
}

/// Commit the safety snapshot and report it (its unreadable paths as warnings:
/// they are recorded as omitted, and the planner already leaves them alone).
fn commit_safety(safety: super::backup::PreparedSnapshot<'_>, env: &mut Envelope) -> Result<()> {
    let safety = safety.commit()?;
    for e in &safety.errors {
        env.warnings.push(Warning::at(
            "safety_incomplete",
            e.path.clone().unwrap_or_default(),
            e.message.clone(),
        ));
    }
    env.snapshot = safety
        .snapshot
        .as_ref()
        .map(|s| SnapshotInfo::from_snapshot(s, safety.reused));
    Ok(())
}

/// Remove the temp files of dead processes (an interrupted rollback or
/// restore; live ones are left alone) from each directory under `home`
/// where the safety scan saw one, opened beneath `home` without following
/// links. Best effort: what stays is excluded from every snapshot and
/// removed by a later run.
fn remove_interrupted_writes(home: Option<&Path>, excluded: &[crate::scan::Excluded]) {
    let Some(home) = home else { return };
    let dirs: BTreeSet<&Path> = excluded
        .iter()
        .filter(|e| e.reason == crate::scan::INTERRUPTED_WRITE)
        .filter_map(|e| e.abs.parent())
        .collect();
    if dirs.is_empty() {
        return;
    }
    let Ok(base) = Dir::open(home) else { return };
    for dir in dirs {
        let Ok(rel) = dir.strip_prefix(home) else {
            continue;
        };
        let opened = if rel.as_os_str().is_empty() {
            base.try_clone()
        } else {
            base.open_beneath(rel.as_os_str().as_bytes(), false, 0o700)
        };
        if let Ok(d) = opened {
            let _ = d.remove_stale_temps();
        }
    }
}

/// Tag of a safety snapshot taken right after another rollback's or
/// restore's (no checkpoint between): `chain:<id of that one>`.
const CHAIN_TAG: &str = "chain:";

/// What `--undo` goes back to: the newest safety snapshot of this home, or,
/// when it ends a chain of consecutive rollbacks, the first of the chain
/// (the state before all of them). A checkpoint or backup newer than it
/// would be replaced: refused without `force`, naming it. After an undo the
/// newest safety snapshot is the undo's own (`before-undo`, never chained),
/// so a second `--undo` redoes.
fn undo_target(snapshots: &[Snapshot], force: bool) -> Result<&Snapshot> {
    let newest = snapshots
        .iter()
        .rposition(|s| s.record.kind == SnapshotKind::Safety)
        .ok_or_else(|| {
            Error::new(
                ExitCode::Failed,
                "nothing_to_undo",
                "there is no safety snapshot to go back to",
            )
            .with_hint("a safety snapshot is taken by every rollback and restore; none has run yet")
        })?;
    if !force {
        if let Some(newer) = snapshots[newest + 1..].last() {
            return Err(Error::new(
                ExitCode::Refused,
                "undo_replaces_newer",
                format!(
                    "{} {} ({}, {}) was taken after the last rollback; undoing would replace the work it holds",
                    newer.record.kind.as_str(),
                    newer.record.label,
                    newer.id.short(),
                    newer.record.created_at
                ),
            )
            .with_hint("look with `backup-list --diff`, then pass --force to undo anyway (a safety snapshot of the current state is taken first)"));
        }
    }
    let mut chosen = &snapshots[newest];
    for _ in 0..snapshots.len() {
        let prev = chosen
            .record
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(CHAIN_TAG))
            .and_then(|id| snapshots.iter().find(|s| s.id.to_hex() == id));
        // Only when nothing changed between the two rollbacks: the state
        // this one started from is exactly what the previous one produced
        // (its target's tree). Edits made in between would otherwise be
        // skipped over by the undo.
        let untouched = prev.is_some_and(|p| {
            target_of(snapshots, p).is_some_and(|t| t.record.tree == chosen.record.tree)
        });
        match prev {
            Some(p) if untouched => chosen = p,
            _ => break,
        }
    }
    Ok(chosen)
}

/// The snapshot a safety snapshot's rollback went to (its `for:` tag).
fn target_of<'a>(snapshots: &'a [Snapshot], safety: &Snapshot) -> Option<&'a Snapshot> {
    let short = safety
        .record
        .tags
        .iter()
        .find_map(|t| t.strip_prefix("for:"))?;
    let mut hits = snapshots
        .iter()
        .filter(|s| s.id.to_hex().starts_with(short));
    let first = hits.next()?;
    hits.next().is_none().then_some(first)
}

/// Paths left different from the snapshot make the run partial (exit 3).
fn report_errors(env: &mut Envelope, errors: &[Error]) {
    if errors.is_empty() {
        return;
    }
    for e in errors {
        env.errors.push(e.into());
    }
    env.status = Status::Partial;
    env.set_exit(ExitCode::Partial);
    env.put("can_retry", errors.iter().any(|e| e.retryable));
}

/// One error per path the plan cannot put back (see [`Action::blocked`])
/// or leaves on request (`--overwrite skip`, [`Action::conflict_skipped`]).
fn blocked_errors(actions: &[Action]) -> Vec<Error> {
    actions
        .iter()
        .filter(|a| a.blocked || a.conflict_skipped)
        .map(|a| {
            let p = Path::new(OsStr::from_bytes(&a.abs));
            if a.conflict_skipped {
                return Error::new(
                    ExitCode::Partial,
                    "conflict_skipped",
                    format!("{}: left as it is: {}", a.path, a.reason),
                )
                .with_path(p)
                .with_hint("compare with `backup-list --diff SNAPSHOT`; restore it with --overwrite if-changed, or --overwrite rename to keep it beside");
            }
            if a.reason.starts_with(XATTRS_REASON) {
                return Error::new(
                    ExitCode::Partial,
                    "not_restored",
                    format!("{}: not rolled back: {XATTRS_REASON}, and replacing or removing it would lose them", a.path),
                )
                .with_path(p)
                .with_hint("Linux lists at most 64 KiB of attribute names per file: remove the ones it no longer needs (`getfattr -d`, `setfattr -x NAME`), or give this user access to them, then run the same command again; or restore it elsewhere with --target DIR");
            }
            if a.reason.starts_with("inside ") {
                return Error::new(
                    ExitCode::Partial,
                    "not_restored",
                    format!("{}: not rolled back: {}", a.path, a.reason),
                )
                .with_path(p)
                .with_hint("make that directory listable by this user (chmod u+rx) or fix the I/O error, then run the same command again");
            }
            Error::new(
                ExitCode::Partial,
                "not_restored",
                format!(
                    "{}: not rolled back: it cannot be read, so the safety snapshot cannot keep its current content",
                    a.path
                ),
            )
            .with_path(p)
            .with_hint("make it readable by this user (chmod u+r), then run the same command again")
        })
        .collect()
}

fn to_map(stats: &ApplyStats) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(stats) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => Default::default(),
    }
}

/// Keep the newest `keep` safety snapshots of this home; remove older
/// records (their data goes at the next prune). Another home's are its own.
fn prune_safety(repo: &Repository, keep: usize, home: Option<&Path>, env: &mut Envelope) {
    let Ok(snaps) = repo.snapshots() else { return };
    let safety: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| s.record.kind == SnapshotKind::Safety && s.record.of_home(home))
        .collect();
    if safety.len() <= keep {
        return;
    }
    let mut removed = 0u64;
    for s in &safety[..safety.len() - keep] {
        if std::fs::remove_file(repo.snapshot_path(&s.id)).is_ok() {
            removed += 1;
        }
    }
    if let Ok(d) = Dir::open(&repo.sub(layout::SNAPSHOTS)) {
        let _ = d.sync();
    }
    env.stat("safety_snapshots_removed", removed);
}

/// Resolve `--path` values (`~/x`, relative, absolute) to absolute paths,
/// mapped under `target` when restoring elsewhere.
pub fn selected_paths(
    settings: &Settings,
    raw: &[PathBuf],
    target: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in raw {
        let abs = expand_tilde(p, settings.home.as_deref())
            .map(|e| crate::config::absolutize(&e))
            .ok_or_else(|| {
                Error::usage(
                    "home_not_set",
                    format!("--path {} needs $HOME", p.display()),
                )
            })?;
        let mapped = match target {
            None => abs,
            Some(t) => {
                let shown = tilde_form(&abs, settings.home.as_deref());
                let b = shown.as_os_str().as_bytes();
                let inner = b
                    .strip_prefix(b"~/")
                    .or_else(|| b.strip_prefix(b"/"))
                    .unwrap_or(b);
                t.join(OsStr::from_bytes(inner))
            }
        };
        out.push(mapped);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kept_names_fit_the_name_limit_and_avoid_taken_ones() {
        let none = |_: &[u8]| false;
        assert_eq!(
            kept_name(b"/h/.zshrc", "ab12", &none),
            b"/h/.zshrc.dotfiles-backup-ab12~"
        );
        let taken = |p: &[u8]| p == b"/h/x.dotfiles-backup-ab12~";
        assert_eq!(
            kept_name(b"/h/x", "ab12", &taken),
            b"/h/x.dotfiles-backup-ab12.2~"
        );
        let long = format!("/h/{}", "é".repeat(200));
        let k = kept_name(long.as_bytes(), "ab12", &none);
        let name = &k[3..];
        assert!(name.len() <= 255, "{}", name.len());
        assert!(std::str::from_utf8(name).is_ok());
        assert!(name.ends_with(b".dotfiles-backup-ab12~"));
    }

    use super::*;
    use crate::hash::Hash;
    use crate::paths::ByteName;
    use crate::repo::snapshot::{EntryType, Tree};

    fn file(content: &[u8], mode: u32) -> Entry {
        Entry {
            path: ByteName::default(),
            kind: EntryType::File,
            mode,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            size: content.len() as u64,
            sha256: Some(Hash::of(content)),
            target: None,
            omitted: None,
            sealed: None,
            hardlink: None,
            xattrs: Vec::new(),
        }
    }
    fn dir() -> Entry {
        Entry {
            kind: EntryType::Dir,
            sha256: None,
            size: 0,
            ..file(b"", 0o755)
        }
    }
    fn st(items: &[(&str, Entry)]) -> State {
        items
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect()
    }
    fn kinds(actions: &[Action]) -> Vec<(ActionKind, String)> {
        actions
            .iter()
            .map(|a| (a.action, String::from_utf8_lossy(&a.abs).into_owned()))
            .collect()
    }

    #[test]
    fn rollback_plans_create_update_delete_in_safe_order() {
        let desired = st(&[
            ("/h/c", dir()),
            ("/h/c/a", file(b"a", 0o644)),
            ("/h/c/gone", file(b"g", 0o600)),
        ]);
        let current = st(&[
            ("/h/c", dir()),
            ("/h/c/a", file(b"A", 0o644)),
            ("/h/c/new", dir()),
            ("/h/c/new/x", file(b"x", 0o644)),
        ]);
        let p = plan(&desired, &current, Mode2::Rollback { keep_new: false });
        assert_eq!(
            kinds(&p),
            vec![
                (ActionKind::Delete, "/h/c/new/x".into()),
                (ActionKind::Delete, "/h/c/new".into()),
                (ActionKind::Update, "/h/c/a".into()),
                (ActionKind::Create, "/h/c/gone".into()),
            ]
        );
        let keep = plan(&desired, &current, Mode2::Rollback { keep_new: true });
        assert!(keep.iter().all(|a| a.action != ActionKind::Delete));
    }

    #[test]
    fn restore_never_deletes_and_reports_conflicts() {
        let desired = st(&[("/t/a", file(b"a", 0o644))]);
        let current = st(&[("/t/a", file(b"b", 0o644)), ("/t/extra", file(b"e", 0o644))]);
        let p = plan(&desired, &current, Mode2::Restore(Overwrite::Never));
        assert_eq!(kinds(&p), vec![(ActionKind::Conflict, "/t/a".into())]);
        let p = plan(&desired, &current, Mode2::Restore(Overwrite::IfChanged));
        assert_eq!(kinds(&p), vec![(ActionKind::Update, "/t/a".into())]);
    }

    #[test]
    fn omitted_current_content_is_never_touched() {
        let mut secret = file(b"", 0o600);
        secret.sha256 = None;
        secret.omitted = Some("secret".into());
        let desired = st(&[("/h/d", dir())]);
        let current = st(&[("/h/d", dir()), ("/h/d/id_rsa", secret)]);
        let p = plan(&desired, &current, Mode2::Rollback { keep_new: false });
        assert_eq!(kinds(&p), vec![(ActionKind::Skip, "/h/d/id_rsa".into())]);
    }

    #[test]
    fn type_change_is_one_update_not_a_delete() {
        let mut link = file(b"", 0o777);
        link.kind = EntryType::Symlink;
        link.sha256 = None;
        link.target = Some(ByteName::from("x"));
        let desired = st(&[("/h/f", file(b"f", 0o644))]);
        let current = st(&[("/h/f", link)]);
        let p = plan(&desired, &current, Mode2::Rollback { keep_new: false });
        assert_eq!(kinds(&p), vec![(ActionKind::Update, "/h/f".into())]);
    }

    #[test]
    fn paths_are_seen_through_links_and_crafted_link_chains_stay_bounded() {
        let p = |s: &str| PathBuf::from(s);
        let links = vec![
            (p("/h/.config"), p("/h/dotfiles/config")),
            (p("/h/dotfiles/config/nvim"), p("/h/dotfiles/nvim")),
        ];
        assert_eq!(
            through_links(&[p("/h/.config/nvim/init.vim")], &links),
            vec![p("/h/dotfiles/nvim/init.vim")]
        );
        let mut both = through_links(&[p("/h/.config")], &links);
        both.sort();
        assert_eq!(both, vec![p("/h/.config"), p("/h/dotfiles/config")]);
        assert_eq!(
            through_links(&[p("/h/.zshrc")], &links),
            vec![p("/h/.zshrc")]
        );
        // Links that map every path to two, and into themselves.
        let crafted: Vec<(PathBuf, PathBuf)> = (0..8)
            .flat_map(|i| {
                [
                    (p("/h/a"), p(&format!("/h/a/{i}"))),
                    (p("/h/a"), p(&format!("/h/a/x{i}"))),
                ]
            })
            .collect();
        let out = through_links(&[p("/h/a/b")], &crafted);
        assert!(out.len() <= 4096, "{}", out.len());
    }

    #[test]
    fn a_lost_acl_leaves_the_group_no_more_than_its_own_entry_and_the_mask() {
        let acl = |group: u16, mask: u16| {
            let mut v = 2u32.to_le_bytes().to_vec();
            for (tag, perm) in [(1u16, 6u16), (2, 7), (4, group), (0x10, mask), (0x20, 0)] {
                v.extend(tag.to_le_bytes());
                v.extend(perm.to_le_bytes());
                v.extend(65534u32.to_le_bytes());
            }
            v
        };
        // Mode group bits are the mask (rwx); the group's own entry is r--.
        assert_eq!(acl_fallback_mode(0o670, &acl(4, 7)), 0o640);
        // The mask limits the group entry.
        assert_eq!(acl_fallback_mode(0o650, &acl(7, 5)), 0o650);
        assert_eq!(acl_fallback_mode(0o600, &acl(7, 0)), 0o600);
        // Other bits and the owner are kept as they are.
        assert_eq!(acl_fallback_mode(0o4775, &acl(5, 7)), 0o4755);
        // An ACL that cannot be read: no group access.
        assert_eq!(acl_fallback_mode(0o664, b"junk"), 0o604);
    }

    #[test]
    fn crafted_paths_are_refused() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "a//b", "."] {
            let mut e = file(b"x", 0o644);
            e.path = ByteName::from(bad);
            let tree = Tree {
                version: 1,
                roots: vec![crate::repo::snapshot::RootTree {
                    root: ByteName::from("~/d"),
                    present: true,
                    entries: vec![dir(), e],
                    link: None,
                }],
                xattrs_recorded: true,
            };
            let place = |_: &Path| Ok(PathBuf::from("/h/d"));
            assert!(flatten(&tree, &place).is_err(), "{bad} accepted");
        }
        let configured = vec![];
        let p = crate::ops::place::placer(Some(Path::new("/h")), None, &configured);
        assert!(p(Path::new("~/../etc")).is_err());
        assert!(p(Path::new("/etc/passwd")).is_err());
        assert!(p(Path::new("relative")).is_err());
        assert_eq!(
            p(Path::new("~/.zshrc")).unwrap(),
            PathBuf::from("/h/.zshrc")
        );
        let t =
            crate::ops::place::placer(Some(Path::new("/h")), Some(Path::new("/t")), &configured);
        assert_eq!(
            t(Path::new("/etc/hosts")).unwrap(),
            PathBuf::from("/t/etc/hosts")
        );
    }
}
