//! The restore plan: what the snapshot wants against what is there now,
//! as a list of actions. Pure (no I/O): `--dry-run` prints it, and
//! [`super::apply`] carries out exactly it. Also the path helpers the plan
//! is built from (`--path` through symlinks, `--overwrite rename` names).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::paths::{display_path, unsafe_relative_path, ByteName};
use crate::repo::snapshot::{Entry, EntryType, Tree};

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
pub(super) const UNREADABLE: &str = "unreadable";
/// Marks a current file whose extended attributes the safety snapshot could
/// not read (more names than Linux's 64 KiB `listxattr` limit, or EACCES):
/// replacing or removing it would lose them for good, so it is not.
pub(super) const XATTRS_UNREADABLE: &str = "extended attributes unreadable";
pub(super) const XATTRS_REASON: &str =
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
    // Directories whose content is unknown (they could not be listed): on
    // the current side, nothing inside may be replaced (the safety snapshot
    // does not hold it); on the snapshot side, nothing inside is "new".
    let (unknown_now, unknown_then) = (unlisted_dirs(current), unlisted_dirs(desired));
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
        if let Some(dir) = inside(abs, &unknown_now) {
            let mut a = mk(
                ActionKind::Skip,
                &format!(
                    "inside {}, which cannot be listed now, so its content cannot be kept in the safety snapshot; not rolled back",
                    shown(dir)
                ),
                0,
            );
            a.blocked = true;
            out.push(a);
            continue;
        }
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
            let keep_reason = if let Some(dir) = inside(abs, &unknown_then) {
                Some(format!(
                    "inside {}, whose content is not in the snapshot (it could not be listed); left as it is",
                    shown(dir)
                ))
            } else if keep_new && !desired.contains_key(abs) {
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

pub(super) fn demote_kept_dirs(actions: &mut [Action], keep: &BTreeSet<Vec<u8>>, reason: &str) {
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

/// Directories stored without their content (listing them failed).
fn unlisted_dirs(state: &State) -> BTreeSet<&[u8]> {
    state
        .iter()
        .filter(|(_, e)| e.kind == EntryType::Dir && e.omitted.is_some())
        .map(|(abs, _)| abs.as_slice())
        .collect()
}

/// The nearest of `dirs` strictly above `abs`, if any.
fn inside<'a>(abs: &[u8], dirs: &BTreeSet<&'a [u8]>) -> Option<&'a [u8]> {
    if dirs.is_empty() {
        return None;
    }
    let mut p = abs;
    while let Some(i) = p.iter().rposition(|b| *b == b'/') {
        p = &p[..i];
        if let Some(d) = dirs.get(p) {
            return Some(d);
        }
    }
    None
}

pub(super) fn mark_parents(abs: &[u8], kept: &mut BTreeSet<Vec<u8>>) {
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
pub(super) fn through_links(only: &[PathBuf], links: &[(PathBuf, PathBuf)]) -> Vec<PathBuf> {
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
