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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps};
use serde::Serialize;

use crate::atomic::{AtomicFile, Dir};
use crate::config::{Settings, TrackedRoot};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::paths::{display_path, expand_tilde, tilde_form, unsafe_relative_path, ByteName};
use crate::repo::index::Index;
use crate::repo::snapshot::{Entry, EntryType, Snapshot, SnapshotKind, Tree};
use crate::repo::Repository;
use crate::report::{Envelope, SnapshotInfo, Status, Warning};
use crate::scan::Rules;
use crate::secrets::Opener;

use super::backup::{prepare_snapshot, BackupOptions};
use super::place::{follow_prefixes, placer_following};
use super::select::{of_home, select_scoped};
use crate::repo::layout;
use crate::repo::lock::stale_lock_warning;

/// What restore does with existing paths whose content differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Refuse and list conflicts (exit 5) — the default.
    Never,
    /// Overwrite paths that differ; leave identical ones alone.
    IfChanged,
    /// Rewrite every path, even identical ones.
    Always,
}

/// What happens to an existing file or symlink whose content differs from
/// the snapshot (a *conflict*), for restore (`--overwrite`) and rollback
/// (`--overwrite skip|rename`). Restore plans these as `if-changed`; the
/// conflicts are then turned into skips or kept copies by [`set_aside`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Replace it (the safety snapshot keeps it): the plan as it is.
    #[default]
    Replace,
    /// Leave it and report it (exit 3).
    Skip,
    /// Keep it beside under a new name, then restore ours.
    Rename,
}

/// Rollback (make roots equal to the snapshot) or restore (copy, never delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode2 {
    /// Rollback; `keep_new` leaves paths created since the snapshot.
    Rollback {
        /// Leave new paths in place.
        keep_new: bool,
    },
    /// Restore with an overwrite policy.
    Restore(Overwrite),
}

/// Kind of action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Remove a path created since the snapshot (deepest first).
    Delete,
    /// Create a missing path.
    Create,
    /// Rewrite content (or symlink target), or replace a path of another type.
    Update,
    /// Only mode or mtime differ.
    Metadata,
    /// Left alone, with the reason.
    Skip,
    /// Restore would overwrite a different existing path.
    Conflict,
}

/// One planned action.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// What.
    pub action: ActionKind,
    /// Where (`~`-relative when under home).
    pub path: String,
    /// Type of the entry restored (or removed).
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Why.
    pub reason: String,
    /// Bytes to write.
    pub bytes: u64,
    /// Absolute path.
    #[serde(skip)]
    pub abs: Vec<u8>,
    /// Desired entry (not for deletes).
    #[serde(skip)]
    pub desired: Option<Entry>,
    /// Current type, if the path exists.
    #[serde(skip)]
    pub current: Option<EntryType>,
    /// A skip that leaves the path different from the snapshot because it
    /// cannot be kept in the safety snapshot (unreadable now): the run
    /// reports it as an error (exit 3), never as success.
    #[serde(skip)]
    pub blocked: bool,
    /// `--overwrite skip`: a conflict left as it is; reported as an error (exit 3).
    #[serde(skip)]
    pub conflict_skipped: bool,
    /// `--overwrite rename`: where the existing path is kept (absolute).
    #[serde(skip)]
    pub keep_as: Option<Vec<u8>>,
    /// [`Action::keep_as`] as shown (`~`-relative under home).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_as: Option<String>,
}

/// `omitted` value of an entry whose content could not be read.
const UNREADABLE: &str = "unreadable";
/// Marks a current file whose extended attributes the safety snapshot could
/// not read (more names than Linux's 64 KiB `listxattr` limit, or EACCES):
/// replacing or removing it would lose them for good, so it is not.
const XATTRS_UNREADABLE: &str = "extended attributes unreadable";
const XATTRS_REASON: &str =
    "its extended attributes cannot be read now, so the safety snapshot cannot keep them";

/// Why the current `have` cannot be kept in the safety snapshot, if so.
fn unkeepable(have: &Entry) -> Option<&'static str> {
    match have.omitted.as_deref() {
        Some(UNREADABLE) => Some("cannot be read now, so it cannot be kept in the safety snapshot"),
        Some(XATTRS_UNREADABLE) => Some(XATTRS_REASON),
        _ => None,
    }
}

/// Desired and current states keyed by absolute path bytes.
pub type State = BTreeMap<Vec<u8>, Entry>;

/// Compare desired (snapshot) with current (safety tree) and list the actions. Pure.
pub fn plan(desired: &State, current: &State, mode: Mode2) -> Vec<Action> {
    plan_keeping(desired, current, mode, &BTreeMap::new())
}

/// [`plan`], where `excluded` maps paths the safety scan left out (excluded
/// by a rule, special files) to the reason: they are never touched, so the
/// directories holding them are kept, never planned for deletion (which
/// could only fail with "directory not empty").
pub fn plan_keeping(
    desired: &State,
    current: &State,
    mode: Mode2,
    excluded: &BTreeMap<Vec<u8>, String>,
) -> Vec<Action> {
    let mut out = Vec::new();
    let shown = |abs: &[u8]| display_path(Path::new(OsStr::from_bytes(abs)));
    for (abs, want) in desired {
        let have = current.get(abs);
        let mk = |action, reason: &str, bytes| Action {
            action,
            path: shown(abs),
            kind: want.kind,
            reason: reason.to_string(),
            bytes,
            abs: abs.clone(),
            desired: Some(want.clone()),
            current: have.map(|h| h.kind),
            blocked: false,
            conflict_skipped: false,
            keep_as: None,
            kept_as: None,
        };
        if want.omitted.is_some() {
            out.push(mk(
                ActionKind::Skip,
                &format!(
                    "not stored in the snapshot ({}); left as it is",
                    want.omitted.as_deref().unwrap_or("?")
                ),
                0,
            ));
            continue;
        }
        let bytes = if want.kind == EntryType::File {
            want.size
        } else {
            0
        };
        let Some(have) = have else {
            out.push(mk(ActionKind::Create, "missing now", bytes));
            continue;
        };
        if have.omitted.is_some() {
            if let Some(why) = unkeepable(have) {
                let mut a = mk(ActionKind::Skip, &format!("{why}; not rolled back"), 0);
                a.blocked = true;
                out.push(a);
            } else {
                out.push(mk(ActionKind::Skip, "current content is not in the safety snapshot (secret or unreadable); left as it is", 0));
            }
            continue;
        }
        // The same comparison `backup-list --diff` reports (crate::diff).
        let d = crate::diff::compare(have, want);
        let differs = d.data();
        let meta_differs = d.mode || d.mtime || d.xattrs || (crate::host::euid() == 0 && d.owner);
        let reason = if have.kind != want.kind {
            format!(
                "is a {} now, was a {}",
                have.kind.as_str(),
                want.kind.as_str()
            )
        } else if differs {
            match want.kind {
                EntryType::Symlink => "symlink target changed".to_string(),
                _ if !d.content => match &want.hardlink {
                    Some(peer) => format!("was a hard link of {}", shown(&peer.0)),
                    None => "was not a hard link".to_string(),
                },
                _ => "content changed".to_string(),
            }
        } else if d.xattrs && !(d.mode || d.mtime) {
            "extended attributes or ACL changed".to_string()
        } else {
            "mode or time changed".to_string()
        };
        match mode {
            Mode2::Rollback { .. } | Mode2::Restore(Overwrite::IfChanged) => {
                if differs {
                    out.push(mk(ActionKind::Update, &reason, bytes));
                } else if meta_differs {
                    out.push(mk(ActionKind::Metadata, &reason, 0));
                }
            }
            Mode2::Restore(Overwrite::Always) => {
                if differs || want.kind == EntryType::File {
                    out.push(mk(
                        ActionKind::Update,
                        if differs {
                            &reason
                        } else {
                            "rewritten (--overwrite always)"
                        },
                        bytes,
                    ));
                } else if meta_differs {
                    out.push(mk(ActionKind::Metadata, &reason, 0));
                }
            }
            Mode2::Restore(Overwrite::Never) => {
                if differs {
                    out.push(mk(
                        ActionKind::Conflict,
                        &format!("{reason}; pass --overwrite if-changed to replace it"),
                        bytes,
                    ));
                } else if meta_differs {
                    out.push(mk(ActionKind::Metadata, &reason, 0));
                }
            }
        }
    }
    if let Mode2::Rollback { keep_new } = mode {
        // Paths that exist now but not in the snapshot. A directory can only
        // go when everything under it goes.
        let mut kept_dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
        // Directory -> an excluded path below it, with its reason.
        let mut holds_excluded: BTreeMap<Vec<u8>, (&[u8], &str)> = BTreeMap::new();
        for (abs, why) in excluded {
            let mut p = &abs[..];
            while let Some(i) = p.iter().rposition(|b| *b == b'/') {
                p = &p[..i];
                if p.is_empty() || holds_excluded.contains_key(p) {
                    break;
                }
                holds_excluded.insert(p.to_vec(), (abs, why));
                kept_dirs.insert(p.to_vec());
            }
        }
        let excluded_reason = |abs: &[u8]| {
            holds_excluded.get(abs).map(|(p, why)| {
                format!(
                    "holds {} ({why}), which is not in snapshots; kept",
                    shown(p)
                )
            })
        };
        let mut deletes = Vec::new();
        for (abs, have) in current.iter().rev() {
            let replaced_by_other_type = desired.get(abs).is_some_and(|w| w.kind != have.kind);
            if desired.contains_key(abs) && !replaced_by_other_type {
                if have.kind == EntryType::Dir {
                    mark_parents(abs, &mut kept_dirs);
                }
                continue;
            }
            let keep_reason = if keep_new && !desired.contains_key(abs) {
                Some("created since the snapshot; kept (--keep-new)".to_string())
            } else if let Some(why) = unkeepable(have) {
                Some(format!("{why}; not removed"))
            } else if have.omitted.is_some() {
                Some("not in the safety snapshot (secret or unreadable); left as it is".to_string())
            } else if have.kind == EntryType::Dir && kept_dirs.contains(abs) {
                Some(
                    excluded_reason(abs)
                        .unwrap_or_else(|| "directory still holds paths that are kept".to_string()),
                )
            } else {
                None
            };
            match keep_reason {
                Some(r) => {
                    mark_parents(abs, &mut kept_dirs);
                    if !replaced_by_other_type {
                        deletes.push(Action {
                            action: ActionKind::Skip,
                            path: shown(abs),
                            kind: have.kind,
                            reason: r,
                            bytes: 0,
                            abs: abs.clone(),
                            desired: None,
                            current: Some(have.kind),
                            blocked: (!keep_new || desired.contains_key(abs))
                                && unkeepable(have).is_some(),
                            conflict_skipped: false,
                            keep_as: None,
                            kept_as: None,
                        });
                    }
                }
                None if replaced_by_other_type => {} // the Update replaces it
                None => deletes.push(Action {
                    action: ActionKind::Delete,
                    path: shown(abs),
                    kind: have.kind,
                    reason: "created since the snapshot (kept in the safety snapshot)".into(),
                    bytes: 0,
                    abs: abs.clone(),
                    desired: None,
                    current: Some(have.kind),
                    blocked: false,
                    conflict_skipped: false,
                    keep_as: None,
                    kept_as: None,
                }),
            }
        }
        // A directory that must stay (it holds kept paths) cannot become a file or symlink.
        demote_kept_dirs(
            &mut out,
            &kept_dirs,
            "directory holds paths that are kept; cannot replace it",
        );
        // Deepest first is what `current.iter().rev()` produced.
        deletes.extend(out);
        return deletes;
    }
    // Restore never deletes, so a non-empty directory cannot be replaced.
    let mut nonempty: BTreeSet<Vec<u8>> = BTreeSet::new();
    for abs in current.keys().chain(excluded.keys()) {
        if let Some(i) = abs.iter().rposition(|b| *b == b'/') {
            nonempty.insert(abs[..i].to_vec());
        }
    }
    demote_kept_dirs(
        &mut out,
        &nonempty,
        "is a non-empty directory now and restore never deletes; use backup-rollback to replace it",
    );
    out
}

/// The name an existing path is kept under with `--overwrite rename`:
/// `NAME.dotfiles-backup-<SNAPID>~` beside it, or `...-<SNAPID>.N~` (N = 2,
/// 3, ...) when that is `taken` (exists, or the plan writes it).
/// A name too long for that (over 255 bytes) is shortened first, keeping
/// the suffix whole (and UTF-8 whole, for file systems that require it).
pub fn kept_name(abs: &[u8], snap: &str, taken: &dyn Fn(&[u8]) -> bool) -> Vec<u8> {
    const NAME_MAX: usize = 255;
    let name_at = abs.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
    let mut n = 1u32;
    loop {
        let mut suffix = format!(".dotfiles-backup-{snap}");
        if n > 1 {
            suffix.push_str(&format!(".{n}"));
        }
        suffix.push('~');
        let mut keep = abs.len() - name_at;
        if keep + suffix.len() > NAME_MAX {
            keep = NAME_MAX.saturating_sub(suffix.len());
            let name = &abs[name_at..];
            if std::str::from_utf8(name).is_ok() {
                while keep > 0 && std::str::from_utf8(&name[..keep]).is_err() {
                    keep -= 1;
                }
            }
        }
        let mut cand = abs[..name_at + keep].to_vec();
        cand.extend_from_slice(suffix.as_bytes());
        if !taken(&cand) {
            return cand;
        }
        n += 1;
    }
}

/// Apply `--overwrite skip|rename` to a plan: each conflict (an existing
/// file or symlink the plan would replace) is left and flagged
/// ([`Action::conflict_skipped`]), or gets the name it is kept under
/// ([`Action::keep_as`]): `named` for the roots that were named before the
/// safety scan, [`kept_name`] for the rest. Pure apart from `taken`.
pub fn set_aside(
    actions: &mut [Action],
    existing: Existing,
    snap: &str,
    named: &BTreeMap<Vec<u8>, Vec<u8>>,
    taken: &dyn Fn(&[u8]) -> bool,
) {
    let shown = |abs: &[u8]| display_path(Path::new(OsStr::from_bytes(abs)));
    let mut assigned: BTreeSet<Vec<u8>> = named.values().cloned().collect();
    for a in actions.iter_mut() {
        let conflict = a.action == ActionKind::Update
            && matches!(a.current, Some(EntryType::File | EntryType::Symlink));
        if !conflict {
            continue;
        }
        match existing {
            Existing::Replace => {}
            Existing::Skip => {
                a.action = ActionKind::Skip;
                a.reason = format!("{}; left as it is (--overwrite skip)", a.reason);
                a.bytes = 0;
                a.conflict_skipped = true;
            }
            Existing::Rename => {
                let keep = named.get(&a.abs).cloned().unwrap_or_else(|| {
                    kept_name(&a.abs, snap, &|p| taken(p) || assigned.contains(p))
                });
                assigned.insert(keep.clone());
                let what = a.current.map(|c| c.as_str()).unwrap_or("path");
                a.reason = format!(
                    "{}; the existing {what} is kept as {}",
                    a.reason,
                    shown(&keep)
                );
                a.kept_as = Some(shown(&keep));
                a.keep_as = Some(keep);
            }
        }
    }
}

fn demote_kept_dirs(actions: &mut [Action], keep: &BTreeSet<Vec<u8>>, reason: &str) {
    for a in actions.iter_mut() {
        let replaces_dir = a.current == Some(EntryType::Dir) && a.kind != EntryType::Dir;
        if replaces_dir
            && matches!(a.action, ActionKind::Update | ActionKind::Conflict)
            && keep.contains(&a.abs)
        {
            a.action = ActionKind::Skip;
            a.reason = reason.to_string();
            a.bytes = 0;
        }
    }
}

fn mark_parents(abs: &[u8], kept: &mut BTreeSet<Vec<u8>>) {
    let mut p = abs;
    while let Some(i) = p.iter().rposition(|b| *b == b'/') {
        p = &p[..i];
        if p.is_empty() || !kept.insert(p.to_vec()) {
            break;
        }
    }
}

/// Flatten a tree into absolute paths, mapping each root through `place`.
/// Unsafe entry paths are errors naming the snapshot object.
pub fn flatten(
    tree: &Tree,
    place: &dyn Fn(&Path) -> Result<PathBuf>,
) -> Result<(State, Vec<PathBuf>)> {
    let mut state = State::new();
    let mut roots = Vec::new();
    // Full path in the tree -> absolute path, for `Entry::hardlink`.
    let mut placed: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for root in &tree.roots {
        let base = place(root.root.as_path())?;
        let base_bytes = base.as_os_str().as_bytes().to_vec();
        roots.push(base.clone());
        for e in &root.entries {
            if let Some(why) = unsafe_relative_path(&e.path.0) {
                return Err(Error::new(
                    ExitCode::Corrupt,
                    "unsafe_manifest_path",
                    format!("snapshot entry {:?} under {} {why}; refusing to restore from it", e.path.lossy(), root.root.lossy()),
                )
                .with_hint("this snapshot was not written by this tool or is damaged; run `backup-verify --read-data`"));
            }
            if e.kind == EntryType::Symlink
                && e.target
                    .as_ref()
                    .is_some_and(|t| t.0.contains(&0) || t.0.is_empty())
            {
                return Err(Error::new(
                    ExitCode::Corrupt,
                    "unsafe_manifest_path",
                    format!("symlink {:?} has an invalid target", e.path.lossy()),
                ));
            }
            let mut abs = base_bytes.clone();
            if !e.path.is_empty() {
                abs.push(b'/');
                abs.extend_from_slice(&e.path.0);
            }
            let mut e = e.clone();
            if e.sealed.is_some() {
                // Secrets come back readable by their owner only.
                e.mode &= 0o700;
            }
            // A hard link names its peer by tree path; here it becomes the
            // peer's absolute path (a peer not in the tree: a plain file).
            e.hardlink = e
                .hardlink
                .take()
                .and_then(|p| placed.get(&p.0).cloned().map(ByteName));
            if e.kind == EntryType::File {
                placed.insert(crate::diff::full_path(&root.root.0, &e.path.0), abs.clone());
            }
            if state.insert(abs, e.clone()).is_some() {
                return Err(Error::new(
                    ExitCode::Corrupt,
                    "duplicate_entry",
                    format!(
                        "snapshot lists {:?} under {} twice",
                        e.path.lossy(),
                        root.root.lossy()
                    ),
                ));
            }
        }
        // A root that is a file cannot have children.
        if root
            .entries
            .first()
            .is_some_and(|e| e.kind != EntryType::Dir)
            && root.entries.len() > 1
        {
            return Err(Error::new(
                ExitCode::Corrupt,
                "unsafe_manifest_path",
                format!(
                    "root {} is not a directory but has entries below it",
                    root.root.lossy()
                ),
            ));
        }
    }
    Ok((state, roots))
}

/// `--path` values seen through the snapshot's links (`links`: where each
/// link is, and the root its content was tracked as): a path below a link
/// becomes the same path below its target, and a link named itself selects
/// its target's root too. Chains of links are followed (a bounded number
/// of times: the links come from a snapshot and may form a cycle).
fn through_links(only: &[PathBuf], links: &[(PathBuf, PathBuf)]) -> Vec<PathBuf> {
    // Links come from the snapshot: a crafted one could make every round
    // multiply the paths. Real homes need a handful.
    const MAX_SELECTED_PATHS: usize = 4096;
    let mut out: Vec<PathBuf> = only.to_vec();
    for _ in 0..16 {
        let mut next: Vec<PathBuf> = Vec::new();
        let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
        let mut push = |p: PathBuf, next: &mut Vec<PathBuf>| {
            if next.len() < MAX_SELECTED_PATHS && seen.insert(p.clone()) {
                next.push(p);
            }
        };
        for o in &out {
            let mut replaced = false;
            for (link, root) in links {
                if o == link {
                    push(root.clone(), &mut next);
                } else if let Ok(rest) = o.strip_prefix(link) {
                    push(root.join(rest), &mut next);
                    replaced = true;
                }
            }
            if !replaced {
                push(o.clone(), &mut next);
            }
        }
        let done = next == out;
        out = next;
        if done {
            break;
        }
    }
    out
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

/// Counters reported in `stats`.
#[derive(Debug, Default, Serialize)]
pub struct ApplyStats {
    /// Paths created.
    pub created: u64,
    /// Paths rewritten.
    pub updated: u64,
    /// Paths removed.
    pub deleted: u64,
    /// Mode/time only.
    pub metadata: u64,
    /// Paths already right.
    pub unchanged: u64,
    /// Paths left alone on purpose.
    pub skipped: u64,
    /// Paths that failed.
    pub failed: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Encrypted (secret-class) files decrypted and written.
    pub secrets_decrypted: u64,
    /// Files written as hard links of another restored path.
    pub hardlinks: u64,
    /// Paths whose extended attributes or ACLs could not all be put back,
    /// with what happened (reported as warnings: the content is back).
    #[serde(skip)]
    pub unrestored: Vec<(PathBuf, String)>,
    /// Existing paths kept beside under a new name (`--overwrite rename`).
    pub kept_aside: u64,
}

/// The identity for sealed content, or why there is none (each sealed file
/// that must be written then fails with `secret_not_decrypted`; the rest goes on).
pub type SecretAccess = std::result::Result<Opener, String>;

/// Load the identity only when the plan writes sealed content.
pub fn secret_access(settings: &Settings, actions: &[Action]) -> SecretAccess {
    let needed = actions.iter().any(|a| {
        matches!(a.action, ActionKind::Create | ActionKind::Update)
            && a.desired.as_ref().is_some_and(|d| d.sealed.is_some())
    });
    if !needed {
        return Err("no encrypted file in the plan".into());
    }
    match Opener::load(&settings.secrets) {
        Ok(Some(o)) => Ok(o),
        Ok(None) => Err(match &settings.secrets.identity_file {
            Some(p) => format!(
                "it is encrypted and the identity file {} does not exist",
                display_path(p)
            ),
            None => "it is encrypted and no identity file is configured".into(),
        }),
        Err(e) => Err(format!(
            "it is encrypted and the identity cannot be used: {}{}",
            e.message,
            e.hint.map(|h| format!(" ({h})")).unwrap_or_default()
        )),
    }
}

/// Read, decrypt and check a sealed file's content.
fn open_sealed(
    repo: &Repository,
    index: &Index,
    want: &Entry,
    secrets: &SecretAccess,
    shown_path: &Path,
) -> Result<Vec<u8>> {
    let sealed = want.sealed.as_ref().expect("caller checked");
    let opener = secrets.as_ref().map_err(|why| {
        Error::new(
            ExitCode::Partial,
            "secret_not_decrypted",
            format!("{}: not restored: {why}", display_path(shown_path)),
        )
        .with_path(shown_path)
        .with_hint("point secrets.identity_file (or BACKUP_AGE_IDENTITY) at the identity whose public key was a recipient, and run again")
    })?;
    let loc = index.get(&sealed.id).ok_or_else(|| {
        Error::corrupt(
            "missing_blob",
            shown_path,
            format!(
                "the encrypted content of {} ({}) is missing from the repository",
                display_path(shown_path),
                sealed.id.short()
            ),
        )
    })?;
    let ciphertext = repo.read_stored(loc)?;
    opener
        .open(repo, &sealed.key, &sealed.id, &ciphertext)
        .map_err(|mut e| {
            e.message = format!("{}: not restored: {}", display_path(shown_path), e.message);
            e.path = Some(display_path(shown_path));
            e
        })
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
    let need: u64 = actions.iter().map(|a| a.bytes).sum();
    let target_fs = roots.first().map(|p| p.as_path()).unwrap_or(Path::new("/"));
    if let Some(free) = crate::space::free_bytes(target_fs) {
        let margin = crate::ops::health::DISK_RED_BYTES / 10;
        if need.saturating_add(margin) > free {
            let fs = crate::space::mount_point(target_fs);
            return Err(Error::new(
                ExitCode::Refused,
                "insufficient_space",
                format!(
                    "the plan writes {} but only {} are free on {fs}; nothing was changed",
                    crate::units::human_bytes(need),
                    crate::units::human_bytes(free)
                ),
            )
            .with_path(target_fs)
            .with_hint(format!(
                "free at least {} on {fs} and run again",
                crate::units::human_bytes(need.saturating_add(margin) - free)
            )));
        }
    }
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
    if !read_only_repo {
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

/// The counter an action kind adds to.
fn tally(stats: &mut ApplyStats, kind: ActionKind) -> &mut u64 {
    match kind {
        ActionKind::Create => &mut stats.created,
        ActionKind::Update => &mut stats.updated,
        ActionKind::Delete => &mut stats.deleted,
        ActionKind::Metadata => &mut stats.metadata,
        ActionKind::Skip | ActionKind::Conflict => &mut stats.skipped,
    }
}

fn count(stats: &mut ApplyStats, kind: ActionKind) {
    *tally(stats, kind) += 1;
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

/// Split an absolute path into (anchor, relative bytes).
fn anchor_of<'p>(abs: &'p [u8], home: Option<&Path>, target: Option<&Path>) -> (PathBuf, &'p [u8]) {
    for base in [target, home].into_iter().flatten() {
        let b = base.as_os_str().as_bytes();
        if abs == b {
            return (base.to_path_buf(), b"");
        }
        if abs.starts_with(b) && abs.get(b.len()) == Some(&b'/') {
            return (base.to_path_buf(), &abs[b.len() + 1..]);
        }
    }
    (PathBuf::from("/"), abs.strip_prefix(b"/").unwrap_or(abs))
}

fn split_name(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

fn ts(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// A directory of the home or target: its anchor and the path beneath it.
type DirKey = (PathBuf, Vec<u8>);

/// Where [`apply`] writes.
#[derive(Debug, Clone, Copy)]
pub struct ApplyTarget<'a> {
    /// `$HOME`, for entries under `~`.
    pub home: Option<&'a Path>,
    /// `--target`: everything goes beneath it.
    pub target: Option<&'a Path>,
    /// The snapshot's entries: a directory whose entries change gets its
    /// stored time back afterwards even when the plan has no action for it
    /// (a rename into it moved its mtime).
    pub desired: Option<&'a State>,
}

/// Execute a plan. Per-path failures are collected; everything else proceeds.
///
/// Durability: written files are synced in groups before they are renamed
/// into place, and every changed directory is made durable at the end; only
/// then does a change count as done (see `flush_staged`).
pub fn apply(
    repo: &Repository,
    index: &Index,
    actions: &[Action],
    place: ApplyTarget<'_>,
    secrets: &SecretAccess,
    stats: &mut ApplyStats,
    errors: &mut Vec<Error>,
) {
    let ApplyTarget {
        home,
        target,
        desired,
    } = place;
    if let Some(t) = target {
        if let Err(e) = std::fs::create_dir_all(t) {
            errors.push(Error::io("creating target", t, &e));
            return;
        }
    }
    // Directory -> the actions that changed an entry in it. A change is only
    // durable once its directory is fsynced; if that fails, those actions are
    // reported as failed (power-loss test: a rename acknowledged but lost).
    let mut dirs_to_sync: BTreeMap<DirKey, Vec<(ActionKind, PathBuf)>> = BTreeMap::new();
    let mut dir_times: Vec<(PathBuf, Vec<u8>, Entry)> = Vec::new();
    // Files written to temp names, waiting to be synced together and renamed
    // into place (see `flush_staged`).
    let mut staged: Vec<Staged> = Vec::new();
    // Absolute paths of the files this run put in place: a hard link to
    // one of them needs no check of the peer's content.
    let mut written: HashSet<Vec<u8>> = HashSet::new();
    // The parent directory of the previous action: plans are in path order,
    // so most actions share it and need not resolve it again.
    let mut last_parent: Option<(DirKey, Rc<Dir>)> = None;
    // One directory per file system written to, opened before the first
    // write there (see `Dir::sync_file_system_since_open`).
    let mut file_systems: Vec<(u64, Dir)> = Vec::new();
    // Owners and setuid/setgid bits are chosen by whoever wrote the
    // repository: applied only from one the caller owns (for root, a
    // root-owned one; docs/security.md).
    let trusted = repo.owned_by_caller();
    let is_root = crate::host::euid() == 0 && trusted;
    let doing = actions
        .iter()
        .filter(|a| !matches!(a.action, ActionKind::Skip | ActionKind::Conflict));
    crate::progress::stage(
        "restoring",
        doing.clone().count() as u64,
        doing.map(|a| a.bytes).sum(),
    );
    // Hard links after every other action, so that their peers (first in
    // tree order, which is not path order) are in place when they are made.
    let is_link = |a: &&Action| {
        matches!(a.action, ActionKind::Create | ActionKind::Update)
            && a.desired
                .as_ref()
                .is_some_and(|d| d.kind == EntryType::File && d.hardlink.is_some())
    };
    let ordered = actions
        .iter()
        .filter(|a| !is_link(a))
        .chain(actions.iter().filter(is_link));
    for a in ordered {
        if matches!(a.action, ActionKind::Skip | ActionKind::Conflict) {
            stats.skipped += 1;
            continue;
        }
        crate::progress::advance(1, a.bytes);
        let (anchor, rel) = anchor_of(&a.abs, home, target);
        let shown_path = Path::new(OsStr::from_bytes(&a.abs)).to_path_buf();
        // The directory holding the entry (none for the anchor itself).
        let parent_key: Option<DirKey> =
            (!rel.is_empty()).then(|| (anchor.clone(), split_name(rel).0.to_vec()));
        // An action on a directory may remove or replace one that is cached.
        let touches_dir = a.current == Some(EntryType::Dir)
            || a.desired.as_ref().is_some_and(|d| d.kind == EntryType::Dir);
        let result = (|| -> Result<Option<(AtomicFile<'static>, u64)>> {
            if rel.is_empty() {
                Dir::open(&anchor)?;
                // The anchor itself (e.g. a snapshot of ~ restored onto ~): only metadata.
                if let Some(want) = &a.desired {
                    if want.kind == EntryType::Dir {
                        let want = special_bits_if(want, trusted).into_owned();
                        dir_times.push((anchor.clone(), Vec::new(), want));
                    }
                }
                return Ok(None);
            }
            let (parent_rel, name) = split_name(rel);
            let name = OsStr::from_bytes(name);
            let key = parent_key
                .clone()
                .expect("entries below the anchor have a parent");
            let parent = match &last_parent {
                Some((k, d)) if *k == key => Rc::clone(d),
                _ => {
                    let d = Rc::new(Dir::open(&anchor)?.open_beneath(
                        parent_rel,
                        a.action != ActionKind::Delete,
                        0o700,
                    )?);
                    note_file_system(&mut file_systems, &d);
                    last_parent = Some((key.clone(), Rc::clone(&d)));
                    d
                }
            };
            dirs_to_sync.entry(key).or_default();
            match a.action {
                ActionKind::Delete => {
                    remove_path(&parent, name, a.current == Some(EntryType::Dir)).map(|()| None)
                }
                ActionKind::Create | ActionKind::Update | ActionKind::Metadata => {
                    let want = a
                        .desired
                        .as_ref()
                        .expect("non-delete actions carry the entry");
                    let want = &*special_bits_if(want, trusted);
                    if a.action == ActionKind::Create {
                        // Never overwrite something the safety snapshot did not see (e.g. excluded now).
                        if rustix::fs::statat(parent.fd(), name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
                        {
                            return Err(Error::new(ExitCode::Refused, "exists_unscanned", format!("{} exists but was not in the safety snapshot (excluded?); left as it is", display_path(&shown_path))).with_path(&shown_path));
                        }
                    }
                    if let Some(keep) = &a.keep_as {
                        keep_beside(&parent, name, split_name(keep).1, &shown_path)?;
                        stats.kept_aside += 1;
                    }
                    if a.action == ActionKind::Update && a.current.is_some_and(|c| c != want.kind) {
                        remove_path(&parent, name, a.current == Some(EntryType::Dir))?;
                    }
                    if let (EntryType::File, Some(peer), false) =
                        (want.kind, &want.hardlink, a.action == ActionKind::Metadata)
                    {
                        // Files written earlier in this run are in place first.
                        flush_staged(&mut staged, stats, errors, &mut dirs_to_sync, &mut written);
                        let peer_at = PeerAt {
                            home,
                            target,
                            written: &written,
                            is_root,
                        };
                        if link_to_peer(&parent, name, &peer.0, want, peer_at) {
                            stats.hardlinks += 1;
                            return Ok(None);
                        }
                    }
                    match want.kind {
                        EntryType::File if a.action == ActionKind::Metadata => {
                            let lost = set_meta_at(&parent, name, want, is_root, &shown_path)?;
                            if let Some(l) = lost {
                                stats.unrestored.push((shown_path.clone(), l));
                            }
                            Ok(None)
                        }
                        EntryType::File if want.sealed.is_some() => {
                            let data = open_sealed(repo, index, want, secrets, &shown_path)?;
                            let (f, lost) =
                                stage_file(&parent, name, want.mode & 0o700, want, &data, is_root)?;
                            if let Some(l) = lost {
                                stats.unrestored.push((shown_path.clone(), l));
                            }
                            stats.secrets_decrypted += 1;
                            Ok(Some((f, data.len() as u64)))
                        }
                        EntryType::File => {
                            let id = want.sha256.ok_or_else(|| {
                                Error::new(
                                    ExitCode::Corrupt,
                                    "corrupt_tree",
                                    "file entry without content hash",
                                )
                            })?;
                            let loc = index.get(&id).ok_or_else(|| {
                                Error::corrupt(
                                    "missing_blob",
                                    &shown_path,
                                    format!(
                                        "the content of {} ({}) is missing from the repository",
                                        display_path(&shown_path),
                                        id.short()
                                    ),
                                )
                            })?;
                            let data = repo.read_blob(&id, loc).map_err(|mut e| {
                                e.message = format!(
                                    "{}: not restored: {}",
                                    display_path(&shown_path),
                                    e.message
                                );
                                e
                            })?;
                            let (f, lost) =
                                stage_file(&parent, name, want.mode, want, &data, is_root)?;
                            if let Some(l) = lost {
                                stats.unrestored.push((shown_path.clone(), l));
                            }
                            Ok(Some((f, data.len() as u64)))
                        }
                        EntryType::Symlink => {
                            let target = want.target.as_ref().ok_or_else(|| {
                                Error::new(
                                    ExitCode::Corrupt,
                                    "corrupt_tree",
                                    "symlink without target",
                                )
                            })?;
                            if a.action != ActionKind::Metadata {
                                let tmp = format!(
                                    "{}.{}.link",
                                    crate::atomic::TEMP_PREFIX,
                                    std::process::id()
                                );
                                let _ = rustix::fs::unlinkat(
                                    parent.fd(),
                                    tmp.as_str(),
                                    AtFlags::empty(),
                                );
                                rustix::fs::symlinkat(
                                    target.as_os_str(),
                                    parent.fd(),
                                    tmp.as_str(),
                                )
                                .map_err(|e| {
                                    Error::io("creating symlink", &shown_path, &e.into())
                                })?;
                                rustix::fs::renameat(parent.fd(), tmp.as_str(), parent.fd(), name)
                                    .map_err(|e| {
                                        Error::io(
                                            "renaming symlink into place",
                                            &shown_path,
                                            &e.into(),
                                        )
                                    })?;
                            }
                            let t = ts(want.mtime_ns);
                            let _ = rustix::fs::utimensat(
                                parent.fd(),
                                name,
                                &Timestamps {
                                    last_access: t,
                                    last_modification: t,
                                },
                                AtFlags::SYMLINK_NOFOLLOW,
                            );
                            if is_root {
                                let _ = rustix::fs::chownat(
                                    parent.fd(),
                                    name,
                                    Some(rustix::process::Uid::from_raw(want.uid)),
                                    Some(rustix::process::Gid::from_raw(want.gid)),
                                    AtFlags::SYMLINK_NOFOLLOW,
                                );
                            }
                            Ok(None)
                        }
                        EntryType::Dir => {
                            match rustix::fs::mkdirat(parent.fd(), name, crate::sys::mode(0o700)) {
                                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                                Err(e) => {
                                    return Err(Error::io(
                                        "creating directory",
                                        &shown_path,
                                        &e.into(),
                                    ))
                                }
                            }
                            // Mode and time are set after the children are written (deepest first).
                            dir_times.push((anchor.clone(), rel.to_vec(), want.clone()));
                            Ok(None)
                        }
                    }
                }
                ActionKind::Skip | ActionKind::Conflict => Ok(None),
            }
        })();
        if touches_dir {
            last_parent = None;
        }
        match result {
            Ok(Some((file, bytes))) => {
                staged.push(Staged {
                    file,
                    kind: a.action,
                    parent_key,
                    shown_path,
                    bytes,
                });
                if staged.len() >= STAGED_MAX {
                    flush_staged(&mut staged, stats, errors, &mut dirs_to_sync, &mut written);
                }
            }
            Ok(None) => {
                count(stats, a.action);
                if let Some(v) = parent_key.and_then(|k| dirs_to_sync.get_mut(&k)) {
                    v.push((a.action, shown_path));
                }
            }
            Err(e) => {
                stats.failed += 1;
                errors.push(e);
            }
        }
    }
    // Renames change their directories' times: all of them before those are set.
    flush_staged(&mut staged, stats, errors, &mut dirs_to_sync, &mut written);
    drop(last_parent);
    // Directory modes and times, deepest first, after all children changed.
    // Each is made durable with the directories below.
    if let Some(desired) = desired {
        for (anchor, rel) in dirs_to_sync.keys() {
            let mut abs = anchor.as_os_str().as_bytes().to_vec();
            if !rel.is_empty() {
                abs.push(b'/');
                abs.extend_from_slice(rel);
            }
            let planned = dir_times.iter().any(|d| d.0 == *anchor && d.1 == *rel);
            if let Some(want) = desired.get(&abs).filter(|w| w.kind == EntryType::Dir) {
                if !planned {
                    dir_times.push((anchor.clone(), rel.clone(), want.clone()));
                }
            }
        }
    }
    dir_times.sort_by_key(|d| std::cmp::Reverse(d.1.len()));
    for (anchor, rel, want) in dir_times {
        let res = Dir::open(&anchor)
            .and_then(|b| b.open_beneath(&rel, false, 0o700))
            .and_then(|d| {
                note_file_system(&mut file_systems, &d);
                let (mode, lost) = restore_xattrs(d.fd(), &want, want.mode);
                if let Some(l) = lost {
                    stats.unrestored.push((d.path().to_path_buf(), l));
                }
                rustix::fs::fchmod(d.fd(), crate::sys::mode(mode))
                    .map_err(|e| Error::io("setting mode of", d.path(), &e.into()))?;
                if is_root {
                    let _ = rustix::fs::fchown(
                        d.fd(),
                        Some(rustix::process::Uid::from_raw(want.uid)),
                        Some(rustix::process::Gid::from_raw(want.gid)),
                    );
                }
                let t = ts(want.mtime_ns);
                rustix::fs::futimens(
                    d.fd(),
                    &Timestamps {
                        last_access: t,
                        last_modification: t,
                    },
                )
                .map_err(|e| Error::io("setting time of", d.path(), &e.into()))
            });
        match res {
            Ok(()) => {
                dirs_to_sync.entry((anchor, rel)).or_default();
            }
            Err(e) => errors.push(e),
        }
    }
    // One `syncfs` per file system makes every rename, removal and directory
    // change above durable at once (one journal commit instead of one per
    // directory). If it fails or is not known to report errors, each
    // directory is fsynced, which names the ones in trouble.
    let all_durable = !file_systems.is_empty()
        && file_systems
            .iter()
            .all(|(_, d)| d.sync_file_system_since_open());
    for ((anchor, rel), changed) in dirs_to_sync {
        if all_durable {
            continue;
        }
        let synced = match Dir::open(&anchor).and_then(|b| b.open_beneath(&rel, false, 0o700)) {
            Ok(d) => d.sync(),
            Err(e) => {
                // Removed or replaced by a later action of this plan: the sync
                // of its parent (also in this map) makes that durable.
                // Anything else (EIO from a dying disk) is a failure.
                let p = anchor.join(OsStr::from_bytes(&rel));
                match std::fs::symlink_metadata(&p) {
                    Err(m) if m.kind() == std::io::ErrorKind::NotFound => continue,
                    Ok(m) if !m.is_dir() => continue,
                    _ if all_durable => continue,
                    _ => Err(e),
                }
            }
        };
        let Err(e) = synced else { continue };
        if changed.is_empty() {
            // Nothing in it was reported done, but say the directory is in trouble.
            errors.push(
                e.with_hint("check the file system (dmesg, fsck), then run the same command again"),
            );
            continue;
        }
        // The renames, links and removals in this directory may not survive a
        // power cut: they are not done, whatever the calls before returned.
        for (kind, _) in &changed {
            uncount(stats, *kind);
            stats.failed += 1;
        }
        let first = crate::paths::display_path(&changed[0].1);
        // `path` stays the directory (from the failed call): that is what is in doubt.
        let mut err = Error::new(
            e.exit,
            "not_durable",
            format!(
                "{}; {} change(s) in that directory, e.g. {first}, may be lost on a power cut",
                e.message,
                changed.len()
            ),
        )
        .with_hint("check the file system (dmesg, fsck), then run the same command again");
        err.path = e.path;
        errors.push(err);
    }
}

/// How many written files wait for one common sync at most: each holds two
/// descriptors (file and directory, the directory often shared), well under
/// the usual limit of 1024.
const STAGED_MAX: usize = 128;

/// A restored file under its temp name, content written, mode and times set.
struct Staged {
    file: AtomicFile<'static>,
    kind: ActionKind,
    parent_key: Option<DirKey>,
    shown_path: PathBuf,
    bytes: u64,
}

/// `want`, without its setuid and setgid bits unless the repository is `trusted`.
fn special_bits_if(want: &Entry, trusted: bool) -> std::borrow::Cow<'_, Entry> {
    if trusted || want.mode & 0o6000 == 0 {
        return std::borrow::Cow::Borrowed(want);
    }
    let mut plain = want.clone();
    plain.mode &= !0o6000;
    std::borrow::Cow::Owned(plain)
}

/// Write a file's content to a temp name beside `name`, with its final
/// metadata; it becomes visible in [`flush_staged`].
fn stage_file(
    parent: &Rc<Dir>,
    name: &OsStr,
    mode: u32,
    want: &Entry,
    data: &[u8],
    is_root: bool,
) -> Result<(AtomicFile<'static>, Option<String>)> {
    let mut f = Dir::create_atomic_shared(parent, name, mode)?;
    write_sparse(&mut f, data)?;
    if is_root {
        f.set_owner(want.uid, want.gid)?;
    }
    f.set_mtime(want.mtime_ns)?;
    // Attributes before the mode: `chmod` then sets an ACL's mask from the
    // stored group bits, which is what the mask was when it was recorded.
    let (mode, lost) = restore_xattrs(f.file().as_fd(), want, mode);
    f.set_mode(mode);
    f.apply_mode()?;
    Ok((f, lost))
}

/// Where [`link_to_peer`] finds a hard link's peer, and what it trusts.
#[derive(Clone, Copy)]
struct PeerAt<'a> {
    home: Option<&'a Path>,
    target: Option<&'a Path>,
    written: &'a HashSet<Vec<u8>>,
    is_root: bool,
}

/// Make `name` in `parent` a hard link of `peer` (absolute path) when the
/// peer holds what `want` describes: written by this run, or found there
/// with the same content, mode and owner. `false`: the caller writes a
/// plain file (the peer is not restored, differs, or is on another file
/// system), so a link never brings in content the snapshot did not have.
fn link_to_peer(parent: &Dir, name: &OsStr, peer: &[u8], want: &Entry, at: PeerAt<'_>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (anchor, rel) = anchor_of(peer, at.home, at.target);
    if rel.is_empty() {
        return false;
    }
    let (peer_rel, peer_name) = split_name(rel);
    let peer_name = OsStr::from_bytes(peer_name);
    let Ok(peer_dir) = Dir::open(&anchor).and_then(|d| d.open_beneath(peer_rel, false, 0o700))
    else {
        return false;
    };
    if !at.written.contains(peer) {
        let flags = rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::NONBLOCK
            | rustix::fs::OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(peer_dir.fd(), peer_name, flags, Mode::empty()) else {
            return false;
        };
        let mut f = std::fs::File::from(fd);
        let same_meta = f.metadata().is_ok_and(|m| {
            m.is_file()
                && m.len() == want.size
                && m.mode() & 0o7777 == want.mode
                && (!at.is_root || (m.uid() == want.uid && m.gid() == want.gid))
        });
        let path = Path::new(OsStr::from_bytes(peer));
        let same_content = same_meta
            && want.sha256.is_some_and(|h| {
                super::backup::hash_stream(&mut f, path).is_ok_and(|(got, _)| got == h)
            });
        if !same_content {
            return false;
        }
    }
    let tmp = format!(
        "{}.{}.hardlink",
        crate::atomic::TEMP_PREFIX,
        std::process::id()
    );
    let _ = rustix::fs::unlinkat(parent.fd(), tmp.as_str(), AtFlags::empty());
    if rustix::fs::linkat(
        peer_dir.fd(),
        peer_name,
        parent.fd(),
        tmp.as_str(),
        AtFlags::empty(),
    )
    .is_err()
    {
        return false;
    }
    let renamed = rustix::fs::renameat(parent.fd(), tmp.as_str(), parent.fd(), name).is_ok();
    // Renaming onto another link of the same inode leaves both names.
    let _ = rustix::fs::unlinkat(parent.fd(), tmp.as_str(), AtFlags::empty());
    renamed
}

/// The POSIX ACL attribute whose loss could widen access.
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";

/// Put `want`'s extended attributes on `fd` and remove other recorded ones.
/// Returns the mode to apply, narrowed when the access ACL could not be
/// written ([`acl_fallback_mode`]), and a description of what was not
/// restored, if anything.
fn restore_xattrs(fd: BorrowedFd<'_>, want: &Entry, mode: u32) -> (u32, Option<String>) {
    let pairs: Vec<crate::sys::XattrPair> = want
        .xattrs
        .iter()
        .map(|x| (x.name.0.clone(), x.value.0.clone()))
        .collect();
    let failed = crate::sys::write_xattrs(fd, &pairs);
    if failed.is_empty() {
        return (mode, None);
    }
    let mut mode = mode;
    let mut what: Vec<String> = failed
        .iter()
        .map(|(n, e)| format!("{} ({e})", String::from_utf8_lossy(n)))
        .collect();
    if let Some((_, acl)) = pairs.iter().find(|(n, _)| n == ACL_ACCESS) {
        if failed.iter().any(|(n, _)| n == ACL_ACCESS) {
            let narrowed = acl_fallback_mode(mode, acl);
            if narrowed != mode {
                what.push(format!(
                    "without its ACL the mode is {narrowed:04o}, not {mode:04o}, so that no one gets more access than the ACL gave"
                ));
                mode = narrowed;
            }
        }
    }
    (mode, Some(format!("not restored: {}", what.join(", "))))
}

/// The mode that grants no more than `mode` with the access ACL `acl`
/// (`system.posix_acl_access` value) does, for a file that gets the mode
/// alone. With an ACL the group bits of the mode are the ACL's mask; the
/// owning group's effective access is its own entry limited by that mask,
/// and named users and groups lose theirs (narrower, never wider).
pub fn acl_fallback_mode(mode: u32, acl: &[u8]) -> u32 {
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    // Header: u32 version 2; then entries of u16 tag, u16 perm, u32 id (LE).
    if acl.len() < 4 || (acl.len() - 4) % 8 != 0 {
        // Not an ACL we can read: no group access at all is never wider.
        return mode & !0o070;
    }
    let mut group_obj = None;
    let mut mask = 0o7u32;
    for e in acl[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u32::from(u16::from_le_bytes([e[2], e[3]]) & 0o7);
        match tag {
            GROUP_OBJ => group_obj = Some(perm),
            MASK => mask = perm,
            _ => {}
        }
    }
    let group = group_obj.unwrap_or(0) & mask & ((mode >> 3) & 0o7);
    (mode & !0o070) | (group << 3)
}

/// Holes are made of whole blocks of this size.
const HOLE_BLOCK: usize = 4096;

/// Write a file's content leaving every all-zero block of [`HOLE_BLOCK`]
/// bytes as a hole (like `cp --sparse=auto` and restic's `--sparse`): a
/// sparse VM image or database comes back using the space it used, not its
/// length. The bytes read back are the same either way.
fn write_sparse(f: &mut AtomicFile<'static>, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let zero = |c: &[u8]| c.iter().all(|b| *b == 0);
    if data.len() < 2 * HOLE_BLOCK || !data.chunks_exact(HOLE_BLOCK).any(zero) {
        return f.write_all_ctx(data);
    }
    let path = f.final_path();
    let file = f.file();
    let mut offset = 0u64;
    for chunk in data.chunks(HOLE_BLOCK) {
        if chunk.len() < HOLE_BLOCK || !zero(chunk) {
            file.write_all_at(chunk, offset)
                .map_err(|e| Error::io("writing", &path, &e))?;
        }
        offset += chunk.len() as u64;
    }
    file.set_len(data.len() as u64)
        .map_err(|e| Error::io("writing", &path, &e))
}

/// Make the staged files durable (one `syncfs` per file system, or one
/// fsync each when that is not known to report errors), then rename each
/// into place. Only then is the action counted as done; its directory is
/// fsynced at the end of [`apply`]. A file that fails to sync is left under
/// its temp name (removed) and reported, the rest go on.
fn flush_staged(
    staged: &mut Vec<Staged>,
    stats: &mut ApplyStats,
    errors: &mut Vec<Error>,
    dirs_to_sync: &mut BTreeMap<DirKey, Vec<(ActionKind, PathBuf)>>,
    written: &mut HashSet<Vec<u8>>,
) {
    if staged.is_empty() {
        return;
    }
    let all_synced =
        crate::atomic::sync_all_files(&staged.iter().map(|s| &s.file).collect::<Vec<_>>());
    for mut s in staged.drain(..) {
        let res = if all_synced { Ok(()) } else { s.file.sync() };
        match res.and_then(|()| s.file.rename_synced()) {
            Ok(()) => {
                count(stats, s.kind);
                stats.bytes_written += s.bytes;
                written.insert(s.shown_path.as_os_str().as_bytes().to_vec());
                if let Some(v) = s.parent_key.and_then(|k| dirs_to_sync.get_mut(&k)) {
                    v.push((s.kind, s.shown_path));
                }
            }
            Err(e) => {
                stats.failed += 1;
                errors.push(e);
            }
        }
    }
}

/// Remember `dir` as the handle of its file system unless one is known.
fn note_file_system(file_systems: &mut Vec<(u64, Dir)>, dir: &Dir) {
    let Some(dev) = crate::atomic::device_of(dir.fd()) else {
        return;
    };
    if !file_systems.iter().any(|(d, _)| *d == dev) {
        if let Ok(handle) = dir.try_clone() {
            file_systems.push((dev, handle));
        }
    }
}

/// Take back a [`count`] of an action that turned out not to be durable.
fn uncount(stats: &mut ApplyStats, kind: ActionKind) {
    let n = tally(stats, kind);
    *n = n.saturating_sub(1);
}

fn set_meta_at(
    parent: &Dir,
    name: &OsStr,
    want: &Entry,
    is_root: bool,
    shown: &Path,
) -> Result<Option<String>> {
    let fd = rustix::fs::openat(
        parent.fd(),
        name,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("opening", shown, &e.into()))?;
    let (mode, lost) = restore_xattrs(fd.as_fd(), want, want.mode);
    rustix::fs::fchmod(&fd, crate::sys::mode(mode))
        .map_err(|e| Error::io("setting mode of", shown, &e.into()))?;
    if is_root {
        let _ = rustix::fs::fchown(
            &fd,
            Some(rustix::process::Uid::from_raw(want.uid)),
            Some(rustix::process::Gid::from_raw(want.gid)),
        );
    }
    let t = ts(want.mtime_ns);
    rustix::fs::futimens(
        &fd,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
    )
    .map_err(|e| Error::io("setting time of", shown, &e.into()))?;
    // A mode change is an inode change: journaled file systems keep it without
    // this, others (and the contract "done means durable") need the fsync.
    crate::sys::sync_file(&fd).map_err(|e| Error::io("syncing", shown, &e))?;
    Ok(lost)
}

/// `--overwrite rename`: give the existing file or symlink `name` a second
/// name `keep` in the same directory (a hard link: the original stays in
/// place until the restored one replaces it atomically, so the path is never
/// missing, and the kept one is the very inode, times and all). A `keep`
/// that appeared since the plan is never replaced.
fn keep_beside(parent: &Dir, name: &OsStr, keep: &[u8], shown: &Path) -> Result<()> {
    let keep = OsStr::from_bytes(keep);
    let kept = parent.path().join(keep);
    match rustix::fs::linkat(parent.fd(), name, parent.fd(), keep, AtFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(Error::new(
            ExitCode::Partial,
            "kept_name_taken",
            format!(
                "{}: not restored: {} appeared while restoring, so the existing one cannot be kept under that name",
                display_path(shown),
                display_path(&kept)
            ),
        )
        .with_path(shown)
        .with_hint("run the same command again: a free name is chosen")),
        Err(e) => Err(Error::new(
            ExitCode::Partial,
            "cannot_keep_existing",
            format!(
                "{}: not restored: keeping the existing one as {} failed: {}",
                display_path(shown),
                display_path(&kept),
                std::io::Error::from(e)
            ),
        )
        .with_path(shown)
        .with_hint("this file system may not allow hard links; copy the file aside yourself and restore with --overwrite if-changed")),
    }
}

/// Remove a file, symlink, or (empty, or emptied by earlier deletes) directory.
fn remove_path(parent: &Dir, name: &OsStr, is_dir: bool) -> Result<()> {
    let path = parent.path().join(name);
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    match rustix::fs::unlinkat(parent.fd(), name, flags) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io("removing", &path, &e.into())),
    }
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
