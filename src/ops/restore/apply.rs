//! Carrying out a restore plan on disk: every path beneath its anchor (home
//! or `--target`) one component at a time, content checked and written
//! through the crash-safe path, written files synced in groups before they
//! are renamed into place, and each change counted as done only once its
//! directory is durable.

use super::plan::{Action, ActionKind, State};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps};
use serde::Serialize;

use crate::atomic::{AtomicFile, Dir};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::paths::display_path;
use crate::repo::index::Index;
use crate::repo::snapshot::{Entry, EntryType};
use crate::repo::Repository;
use crate::secrets::Opener;

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
    /// Files that should have been hard links of another restored path but
    /// were written as separate copies because linking failed, with why
    /// (reported as errors: the content is right, the link is not).
    #[serde(skip)]
    pub links_not_restored: Vec<(PathBuf, String)>,
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
pub(super) fn open_sealed(
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

/// The counter an action kind adds to.
pub(super) fn tally(stats: &mut ApplyStats, kind: ActionKind) -> &mut u64 {
    match kind {
        ActionKind::Create => &mut stats.created,
        ActionKind::Update => &mut stats.updated,
        ActionKind::Delete => &mut stats.deleted,
        ActionKind::Metadata => &mut stats.metadata,
        ActionKind::Skip | ActionKind::Conflict => &mut stats.skipped,
    }
}

pub(super) fn count(stats: &mut ApplyStats, kind: ActionKind) {
    *tally(stats, kind) += 1;
}

/// Split an absolute path into (anchor, relative bytes).
pub(super) fn anchor_of<'p>(
    abs: &'p [u8],
    home: Option<&Path>,
    target: Option<&Path>,
) -> (PathBuf, &'p [u8]) {
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

pub(super) fn split_name(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

pub(super) fn ts(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// A directory of the home or target: its anchor and the path beneath it.
pub(super) type DirKey = (PathBuf, Vec<u8>);

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
    if let Some(t) = place.target {
        if let Err(e) = std::fs::create_dir_all(t) {
            errors.push(Error::io("creating target", t, &e));
            return;
        }
    }
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
    let mut applier = Applier::new(repo, index, place, secrets, stats, errors);
    for a in ordered {
        applier.one(a);
    }
    // Renames change their directories' times: all of them before those are set.
    applier.flush();
    applier.last_parent = None;
    applier.set_dir_times();
    applier.make_durable();
}

/// The state of one [`apply`] run: where it writes, what it has staged and
/// changed so far, and the counters and errors it reports. Each action goes
/// through [`Applier::one`]; the directory times and the durability pass
/// run once at the end.
struct Applier<'a> {
    repo: &'a Repository,
    index: &'a Index,
    secrets: &'a SecretAccess,
    /// `$HOME`, for entries under `~`.
    home: Option<&'a Path>,
    /// `--target`: everything goes beneath it.
    target: Option<&'a Path>,
    /// The snapshot's entries (see [`ApplyTarget::desired`]).
    desired: Option<&'a State>,
    /// Owners and setuid/setgid bits are chosen by whoever wrote the
    /// repository: applied only from one the caller owns (for root, a
    /// root-owned one; docs/security.md).
    trusted: bool,
    /// Root restoring from a trusted repository: owners are applied.
    is_root: bool,
    stats: &'a mut ApplyStats,
    errors: &'a mut Vec<Error>,
    /// Directory -> the actions that changed an entry in it. A change is only
    /// durable once its directory is fsynced; if that fails, those actions are
    /// reported as failed (power-loss test: a rename acknowledged but lost).
    dirs_to_sync: BTreeMap<DirKey, Vec<(ActionKind, PathBuf)>>,
    /// Directories whose mode and time are set at the end, deepest first.
    dir_times: Vec<(PathBuf, Vec<u8>, Entry)>,
    /// Files written to temp names, waiting to be synced together and renamed
    /// into place (see `flush_staged`).
    staged: Vec<Staged>,
    /// Absolute paths of the files this run put in place: a hard link to
    /// one of them needs no check of the peer's content.
    written: HashSet<Vec<u8>>,
    /// The parent directory of the previous action: plans are in path order,
    /// so most actions share it and need not resolve it again.
    last_parent: Option<(DirKey, Rc<Dir>)>,
    /// One directory per file system written to, opened before the first
    /// write there (see `Dir::sync_file_system_since_open`).
    file_systems: Vec<(u64, Dir)>,
    /// Directories whose creation failed, with the error: counted as done
    /// if the directory exists when its mode and time are set at the end
    /// (a later action repaired a transient failure), else as failed.
    pending_dirs: HashMap<DirKey, (ActionKind, Error)>,
}

impl<'a> Applier<'a> {
    fn new(
        repo: &'a Repository,
        index: &'a Index,
        place: ApplyTarget<'a>,
        secrets: &'a SecretAccess,
        stats: &'a mut ApplyStats,
        errors: &'a mut Vec<Error>,
    ) -> Self {
        let trusted = repo.owned_by_caller();
        Applier {
            repo,
            index,
            secrets,
            home: place.home,
            target: place.target,
            desired: place.desired,
            trusted,
            is_root: crate::host::euid() == 0 && trusted,
            stats,
            errors,
            dirs_to_sync: BTreeMap::new(),
            dir_times: Vec::new(),
            staged: Vec::new(),
            written: HashSet::new(),
            last_parent: None,
            file_systems: Vec::new(),
            pending_dirs: HashMap::new(),
        }
    }

    /// Carry out one action and record how it went.
    fn one(&mut self, a: &Action) {
        if matches!(a.action, ActionKind::Skip | ActionKind::Conflict) {
            self.stats.skipped += 1;
            return;
        }
        crate::progress::advance(1, a.bytes);
        let (anchor, rel) = anchor_of(&a.abs, self.home, self.target);
        let shown_path = Path::new(OsStr::from_bytes(&a.abs)).to_path_buf();
        // The directory holding the entry (none for the anchor itself).
        let parent_key: Option<DirKey> =
            (!rel.is_empty()).then(|| (anchor.clone(), split_name(rel).0.to_vec()));
        // An action on a directory may remove or replace one that is cached.
        let touches_dir = a.current == Some(EntryType::Dir)
            || a.desired.as_ref().is_some_and(|d| d.kind == EntryType::Dir);
        let result = match &parent_key {
            None => self.on_anchor(a, &anchor),
            Some(key) => self.below_anchor(a, &anchor, rel, key, &shown_path),
        };
        if touches_dir {
            self.last_parent = None;
        }
        match result {
            Ok(Some((file, bytes))) => {
                self.staged.push(Staged {
                    file,
                    kind: a.action,
                    parent_key,
                    shown_path,
                    bytes,
                });
                if self.staged.len() >= STAGED_MAX {
                    self.flush();
                }
            }
            Ok(None)
                if !self.pending_dirs.is_empty()
                    && self
                        .pending_dirs
                        .contains_key(&(anchor.clone(), rel.to_vec())) => {}
            Ok(None) => {
                count(self.stats, a.action);
                if let Some(v) = parent_key.and_then(|k| self.dirs_to_sync.get_mut(&k)) {
                    v.push((a.action, shown_path));
                }
            }
            Err(e) => {
                self.stats.failed += 1;
                self.errors.push(e);
            }
        }
    }

    /// The anchor itself (e.g. a snapshot of ~ restored onto ~): only metadata.
    fn on_anchor(
        &mut self,
        a: &Action,
        anchor: &Path,
    ) -> Result<Option<(AtomicFile<'static>, u64)>> {
        Dir::open(anchor)?;
        if let Some(want) = &a.desired {
            if want.kind == EntryType::Dir {
                let want = special_bits_if(want, self.trusted).into_owned();
                self.dir_times
                    .push((anchor.to_path_buf(), Vec::new(), want));
            }
        }
        Ok(None)
    }

    /// The parent directory of an entry, opened beneath its anchor (created
    /// unless the action removes), reusing the previous action's.
    fn parent_dir(&mut self, a: &Action, anchor: &Path, key: &DirKey) -> Result<Rc<Dir>> {
        if let Some((k, d)) = &self.last_parent {
            if k == key {
                return Ok(Rc::clone(d));
            }
        }
        let d = Rc::new(Dir::open(anchor)?.open_beneath(
            &key.1,
            a.action != ActionKind::Delete,
            0o700,
        )?);
        note_file_system(&mut self.file_systems, &d);
        self.last_parent = Some((key.clone(), Rc::clone(&d)));
        Ok(d)
    }

    /// An entry below its anchor: removed, or written with its metadata.
    /// A file comes back staged under a temp name (renamed by [`Applier::flush`]).
    fn below_anchor(
        &mut self,
        a: &Action,
        anchor: &Path,
        rel: &[u8],
        key: &DirKey,
        shown_path: &Path,
    ) -> Result<Option<(AtomicFile<'static>, u64)>> {
        let name = OsStr::from_bytes(split_name(rel).1);
        let parent = self.parent_dir(a, anchor, key)?;
        self.dirs_to_sync.entry(key.clone()).or_default();
        match a.action {
            ActionKind::Delete => {
                remove_path(&parent, name, a.current == Some(EntryType::Dir)).map(|()| None)
            }
            ActionKind::Create | ActionKind::Update | ActionKind::Metadata => {
                self.put(a, &parent, name, anchor, rel, shown_path)
            }
            ActionKind::Skip | ActionKind::Conflict => Ok(None),
        }
    }

    /// Create, update or fix the metadata of one entry in `parent`.
    fn put(
        &mut self,
        a: &Action,
        parent: &Rc<Dir>,
        name: &OsStr,
        anchor: &Path,
        rel: &[u8],
        shown_path: &Path,
    ) -> Result<Option<(AtomicFile<'static>, u64)>> {
        let want = a
            .desired
            .as_ref()
            .expect("non-delete actions carry the entry");
        let want = &*special_bits_if(want, self.trusted);
        if a.action == ActionKind::Create {
            // Never overwrite something the safety snapshot did not see (e.g. excluded now).
            if rustix::fs::statat(parent.fd(), name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                return Err(Error::new(
                    ExitCode::Refused,
                    "exists_unscanned",
                    format!(
                        "{} exists but was not in the safety snapshot (excluded?); left as it is",
                        display_path(shown_path)
                    ),
                )
                .with_path(shown_path));
            }
        }
        if let Some(keep) = &a.keep_as {
            keep_beside(parent, name, split_name(keep).1, shown_path)?;
            self.stats.kept_aside += 1;
        }
        if a.action == ActionKind::Update && a.current.is_some_and(|c| c != want.kind) {
            remove_path(parent, name, a.current == Some(EntryType::Dir))?;
        }
        if let (EntryType::File, Some(peer), false) =
            (want.kind, &want.hardlink, a.action == ActionKind::Metadata)
        {
            // Files written earlier in this run are in place first.
            self.flush();
            let peer_at = PeerAt {
                home: self.home,
                target: self.target,
                written: &self.written,
                is_root: self.is_root,
            };
            match link_to_peer(parent, name, &peer.0, want, peer_at) {
                Linked::Yes => {
                    self.stats.hardlinks += 1;
                    return Ok(None);
                }
                Linked::No => {}
                // The content is still written below, as a separate file.
                Linked::Failed(why) => self
                    .stats
                    .links_not_restored
                    .push((shown_path.to_path_buf(), why)),
            }
        }
        match want.kind {
            EntryType::File if a.action == ActionKind::Metadata => {
                let lost = set_meta_at(parent, name, want, self.is_root, shown_path)?;
                if let Some(l) = lost {
                    self.stats.unrestored.push((shown_path.to_path_buf(), l));
                }
                Ok(None)
            }
            EntryType::File => self.stage_content(parent, name, want, shown_path).map(Some),
            EntryType::Symlink => {
                self.put_symlink(a, parent, name, want, shown_path)?;
                Ok(None)
            }
            EntryType::Dir => {
                if let Err(e) = rustix::fs::mkdirat(parent.fd(), name, crate::sys::mode(0o700)) {
                    if e != rustix::io::Errno::EXIST {
                        // Possibly transient: a child's `open_beneath` below
                        // creates it again. Decided when its mode and time
                        // are set, after every action (see `pending_dirs`).
                        let err = Error::io("creating directory", shown_path, &e.into());
                        self.pending_dirs
                            .insert((anchor.to_path_buf(), rel.to_vec()), (a.action, err));
                    }
                }
                // Mode and time are set after the children are written (deepest first).
                self.dir_times
                    .push((anchor.to_path_buf(), rel.to_vec(), want.clone()));
                Ok(None)
            }
        }
    }

    /// A file's content (from the repository, decrypted if sealed), written
    /// under a temp name in `parent` with its metadata, not yet renamed.
    fn stage_content(
        &mut self,
        parent: &Rc<Dir>,
        name: &OsStr,
        want: &Entry,
        shown_path: &Path,
    ) -> Result<(AtomicFile<'static>, u64)> {
        if want.sealed.is_some() {
            let data = open_sealed(self.repo, self.index, want, self.secrets, shown_path)?;
            let (f, lost) = stage_file(parent, name, want.mode & 0o700, want, &data, self.is_root)?;
            if let Some(l) = lost {
                self.stats.unrestored.push((shown_path.to_path_buf(), l));
            }
            self.stats.secrets_decrypted += 1;
            return Ok((f, data.len() as u64));
        }
        let id = want.sha256.ok_or_else(|| {
            Error::new(
                ExitCode::Corrupt,
                "corrupt_tree",
                "file entry without content hash",
            )
        })?;
        let loc = self.index.get(&id).ok_or_else(|| {
            Error::corrupt(
                "missing_blob",
                shown_path,
                format!(
                    "the content of {} ({}) is missing from the repository",
                    display_path(shown_path),
                    id.short()
                ),
            )
        })?;
        let data = self.repo.read_blob(&id, loc).map_err(|mut e| {
            e.message = format!("{}: not restored: {}", display_path(shown_path), e.message);
            e
        })?;
        let (f, lost) = stage_file(parent, name, want.mode, want, &data, self.is_root)?;
        if let Some(l) = lost {
            self.stats.unrestored.push((shown_path.to_path_buf(), l));
        }
        Ok((f, data.len() as u64))
    }

    /// A symlink put in place through a temp name and a rename, then its
    /// time (and owner, for root).
    fn put_symlink(
        &mut self,
        a: &Action,
        parent: &Dir,
        name: &OsStr,
        want: &Entry,
        shown_path: &Path,
    ) -> Result<()> {
        let target = want.target.as_ref().ok_or_else(|| {
            Error::new(ExitCode::Corrupt, "corrupt_tree", "symlink without target")
        })?;
        if a.action != ActionKind::Metadata {
            let tmp = format!("{}.{}.link", crate::atomic::TEMP_PREFIX, std::process::id());
            let _ = rustix::fs::unlinkat(parent.fd(), tmp.as_str(), AtFlags::empty());
            rustix::fs::symlinkat(target.as_os_str(), parent.fd(), tmp.as_str())
                .map_err(|e| Error::io("creating symlink", shown_path, &e.into()))?;
            rustix::fs::renameat(parent.fd(), tmp.as_str(), parent.fd(), name)
                .map_err(|e| Error::io("renaming symlink into place", shown_path, &e.into()))?;
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
        if self.is_root {
            let _ = rustix::fs::chownat(
                parent.fd(),
                name,
                Some(rustix::process::Uid::from_raw(want.uid)),
                Some(rustix::process::Gid::from_raw(want.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            );
        }
        Ok(())
    }

    /// Sync and rename every staged file (see `flush_staged`).
    fn flush(&mut self) {
        flush_staged(
            &mut self.staged,
            self.stats,
            self.errors,
            &mut self.dirs_to_sync,
            &mut self.written,
        );
    }

    /// Directory modes and times, deepest first, after all children changed.
    /// Each is made durable with the directories below.
    fn set_dir_times(&mut self) {
        if let Some(desired) = self.desired {
            for (anchor, rel) in self.dirs_to_sync.keys() {
                let mut abs = anchor.as_os_str().as_bytes().to_vec();
                if !rel.is_empty() {
                    abs.push(b'/');
                    abs.extend_from_slice(rel);
                }
                let planned = self.dir_times.iter().any(|d| d.0 == *anchor && d.1 == *rel);
                if let Some(want) = desired.get(&abs).filter(|w| w.kind == EntryType::Dir) {
                    if !planned {
                        self.dir_times
                            .push((anchor.clone(), rel.clone(), want.clone()));
                    }
                }
            }
        }
        let mut dir_times = std::mem::take(&mut self.dir_times);
        dir_times.sort_by_key(|d| std::cmp::Reverse(d.1.len()));
        for (anchor, rel, want) in dir_times {
            let res = self.set_dir_time(&anchor, &rel, &want);
            let pending = self.pending_dirs.remove(&(anchor.clone(), rel.clone()));
            match (res, pending) {
                (Ok(()), pending) => {
                    if let Some((kind, _)) = pending {
                        // Created after all: done, and durable with its parent.
                        count(self.stats, kind);
                        let shown = anchor.join(OsStr::from_bytes(&rel));
                        let parent = (anchor.clone(), split_name(&rel).0.to_vec());
                        self.dirs_to_sync
                            .entry(parent)
                            .or_default()
                            .push((kind, shown));
                    }
                    self.dirs_to_sync.entry((anchor, rel)).or_default();
                }
                (Err(_), Some((_, first))) => {
                    self.stats.failed += 1;
                    self.errors.push(first);
                }
                (Err(e), None) => self.errors.push(e),
            }
        }
    }

    /// Mode, extended attributes, owner (root) and time of one directory.
    fn set_dir_time(&mut self, anchor: &Path, rel: &[u8], want: &Entry) -> Result<()> {
        let d = Dir::open(anchor)?.open_beneath(rel, false, 0o700)?;
        note_file_system(&mut self.file_systems, &d);
        let (mode, lost) = restore_xattrs(d.fd(), want, want.mode);
        if let Some(l) = lost {
            self.stats.unrestored.push((d.path().to_path_buf(), l));
        }
        rustix::fs::fchmod(d.fd(), crate::sys::mode(mode))
            .map_err(|e| Error::io("setting mode of", d.path(), &e.into()))?;
        if self.is_root {
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
    }

    /// One `syncfs` per file system makes every rename, removal and directory
    /// change durable at once; otherwise each changed directory is fsynced,
    /// and the changes in one that fails are taken back as failed.
    fn make_durable(mut self) {
        // One `syncfs` per file system makes every rename, removal and directory
        // change above durable at once (one journal commit instead of one per
        // directory). If it fails or is not known to report errors, each
        // directory is fsynced, which names the ones in trouble.
        let all_durable = !self.file_systems.is_empty()
            && self
                .file_systems
                .iter()
                .all(|(_, d)| d.sync_file_system_since_open());
        for ((anchor, rel), changed) in std::mem::take(&mut self.dirs_to_sync) {
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
                self.errors.push(e.with_hint(
                    "check the file system (dmesg, fsck), then run the same command again",
                ));
                continue;
            }
            // The renames, links and removals in this directory may not survive a
            // power cut: they are not done, whatever the calls before returned.
            for (kind, _) in &changed {
                uncount(self.stats, *kind);
                self.stats.failed += 1;
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
            self.errors.push(err);
        }
    }
}

/// How many written files wait for one common sync at most: each holds two
/// descriptors (file and directory, the directory often shared), well under
/// the usual limit of 1024.
pub(super) const STAGED_MAX: usize = 128;

/// A restored file under its temp name, content written, mode and times set.
pub(super) struct Staged {
    file: AtomicFile<'static>,
    kind: ActionKind,
    parent_key: Option<DirKey>,
    shown_path: PathBuf,
    bytes: u64,
}

/// `want`, without its setuid and setgid bits unless the repository is `trusted`.
pub(super) fn special_bits_if(want: &Entry, trusted: bool) -> std::borrow::Cow<'_, Entry> {
    if trusted || want.mode & 0o6000 == 0 {
        return std::borrow::Cow::Borrowed(want);
    }
    let mut plain = want.clone();
    plain.mode &= !0o6000;
    std::borrow::Cow::Owned(plain)
}

/// Write a file's content to a temp name beside `name`, with its final
/// metadata; it becomes visible in [`flush_staged`].
pub(super) fn stage_file(
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
pub(super) struct PeerAt<'a> {
    home: Option<&'a Path>,
    target: Option<&'a Path>,
    written: &'a HashSet<Vec<u8>>,
    is_root: bool,
}

/// What [`link_to_peer`] did.
pub(super) enum Linked {
    /// `name` is now a link of the peer.
    Yes,
    /// Not a case for a link (the peer is not restored or differs): the
    /// caller writes a plain file.
    No,
    /// A link was due but the file system refused it (why): the caller
    /// writes a plain file and reports the broken link.
    Failed(String),
}

/// Make `name` in `parent` a hard link of `peer` (absolute path) when the
/// peer holds what `want` describes: written by this run, or found there
/// with the same content, mode and owner. Otherwise the caller writes a
/// plain file, so a link never brings in content the snapshot did not have.
pub(super) fn link_to_peer(
    parent: &Dir,
    name: &OsStr,
    peer: &[u8],
    want: &Entry,
    at: PeerAt<'_>,
) -> Linked {
    use std::os::unix::fs::MetadataExt;
    let (anchor, rel) = anchor_of(peer, at.home, at.target);
    if rel.is_empty() {
        return Linked::No;
    }
    let (peer_rel, peer_name) = split_name(rel);
    let peer_name = OsStr::from_bytes(peer_name);
    let Ok(peer_dir) = Dir::open(&anchor).and_then(|d| d.open_beneath(peer_rel, false, 0o700))
    else {
        return Linked::No;
    };
    if !at.written.contains(peer) {
        let flags = rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::NONBLOCK
            | rustix::fs::OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(peer_dir.fd(), peer_name, flags, Mode::empty()) else {
            return Linked::No;
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
                super::super::backup::hash_stream(&mut f, path).is_ok_and(|(got, _)| got == h)
            });
        if !same_content {
            return Linked::No;
        }
    }
    let tmp = format!(
        "{}.{}.hardlink",
        crate::atomic::TEMP_PREFIX,
        std::process::id()
    );
    let _ = rustix::fs::unlinkat(parent.fd(), tmp.as_str(), AtFlags::empty());
    let shown_peer = Path::new(OsStr::from_bytes(peer)).display();
    if let Err(e) = rustix::fs::linkat(
        peer_dir.fd(),
        peer_name,
        parent.fd(),
        tmp.as_str(),
        AtFlags::empty(),
    ) {
        // Another file system: a link cannot exist there, and never did.
        if e == rustix::io::Errno::XDEV {
            return Linked::No;
        }
        return Linked::Failed(format!("linking it to {shown_peer} failed: {e}"));
    }
    let renamed = rustix::fs::renameat(parent.fd(), tmp.as_str(), parent.fd(), name);
    // Renaming onto another link of the same inode leaves both names.
    let _ = rustix::fs::unlinkat(parent.fd(), tmp.as_str(), AtFlags::empty());
    match renamed {
        Ok(()) => Linked::Yes,
        Err(e) => Linked::Failed(format!(
            "putting the link to {shown_peer} in place failed: {e}"
        )),
    }
}

/// The POSIX ACL attribute whose loss could widen access.
pub(super) const ACL_ACCESS: &[u8] = b"system.posix_acl_access";

/// Put `want`'s extended attributes on `fd` and remove other recorded ones.
/// Returns the mode to apply, narrowed when the access ACL could not be
/// written ([`acl_fallback_mode`]), and a description of what was not
/// restored, if anything.
pub(super) fn restore_xattrs(fd: BorrowedFd<'_>, want: &Entry, mode: u32) -> (u32, Option<String>) {
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
pub(super) const HOLE_BLOCK: usize = 4096;

/// Write a file's content leaving every all-zero block of [`HOLE_BLOCK`]
/// bytes as a hole (like `cp --sparse=auto` and restic's `--sparse`): a
/// sparse VM image or database comes back using the space it used, not its
/// length. The bytes read back are the same either way.
pub(super) fn write_sparse(f: &mut AtomicFile<'static>, data: &[u8]) -> Result<()> {
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
pub(super) fn flush_staged(
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
pub(super) fn note_file_system(file_systems: &mut Vec<(u64, Dir)>, dir: &Dir) {
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
pub(super) fn uncount(stats: &mut ApplyStats, kind: ActionKind) {
    let n = tally(stats, kind);
    *n = n.saturating_sub(1);
}

pub(super) fn set_meta_at(
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
pub(super) fn keep_beside(parent: &Dir, name: &OsStr, keep: &[u8], shown: &Path) -> Result<()> {
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
pub(super) fn remove_path(parent: &Dir, name: &OsStr, is_dir: bool) -> Result<()> {
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
