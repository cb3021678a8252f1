//! Taking a snapshot: scan, read what changed, pack new content, commit.
//!
//! Used by `backup-checkpoint`, `backup-create`, and by restore/rollback for
//! their safety snapshots. The steps:
//!
//! 1. scan the roots (`crate::scan`), `lstat` only;
//! 2. files whose size, mtime, ctime, inode and device match the files cache
//!    keep their cached hash and are not opened;
//! 3. the rest are read on all cores (small files) or streamed (large ones),
//!    hashed, and new content is appended to packs, deduplicated against the
//!    index and within the run;
//! 4. commit in order: packs (fsync each, then the directory) → index → tree
//!    → snapshot record. The record's rename is the commit point.
//!
//! A file that changes while it is read is read again (up to 3 times) and
//! otherwise reported, so no entry ever pairs a hash with bytes that were
//! never on disk together.
//!
//! The reader pipeline (steps 2 and 3) lives in `read.rs`.

mod read;

pub use read::hash_stream;
#[allow(clippy::wildcard_imports)]
use read::*;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::time::Instant;

use serde::Serialize;

use crate::atomic::Dir;
use crate::config::{Settings, TrackedRoot};
use crate::error::{Error, IoContext, Result};
use crate::exit::ExitCode;
use crate::hash::Hash;
use crate::paths::ByteName;
use crate::repo::cache::{CacheEntry, FilesCache, TreeStamp, RACY_WINDOW_NS};
use crate::repo::index::{self, Index};
use crate::repo::layout;
use crate::repo::snapshot::{
    Entry, EntryType, PackageList, RootTree, Sealed, Snapshot, SnapshotKind, SnapshotRecord,
    Summary, Tree, OBJECT_VERSION,
};
use crate::repo::Repository;
use crate::report::Warning;
use crate::scan::{self, Excluded, Rules};

/// What to snapshot and how to label it.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Kind of snapshot.
    pub kind: SnapshotKind,
    /// Phase, name, or `backup`.
    pub label: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Compute everything, write nothing.
    pub dry_run: bool,
    /// Binary name (for the lock record).
    pub command: String,
    /// Free-space guard and quota; `None` skips the checks (used by tests).
    pub space: Option<crate::config::SpaceSection>,
    /// The bootstrap run of a phase checkpoint (`ops::phases`); `None` otherwise.
    pub run: Option<String>,
    /// Read back this run's packs and check their hashes before the commit
    /// (`Settings::verify_after_write`).
    pub verify_after_write: bool,
}

/// Counters for `stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupStats {
    /// Regular files seen.
    pub files_scanned: u64,
    /// Directories seen.
    pub dirs_scanned: u64,
    /// Symlinks seen.
    pub symlinks_scanned: u64,
    /// Files whose content was read.
    pub files_read: u64,
    /// Files skipped thanks to the files cache.
    pub files_unchanged: u64,
    /// Bytes of all files.
    pub bytes_scanned: u64,
    /// Bytes read from disk.
    pub bytes_read: u64,
    /// Blobs stored.
    pub new_blobs: u64,
    /// Bytes stored.
    pub new_bytes: u64,
    /// Bytes written to packs (with headers).
    pub pack_bytes: u64,
    /// Paths excluded.
    pub excluded: u64,
    /// Time scanning.
    pub scan_ms: u64,
    /// Time reading and packing.
    pub read_ms: u64,
    /// Time committing.
    pub commit_ms: u64,
    /// Time reading back this run's packs (`verify_after_write`; 0 when off).
    pub verify_ms: u64,
    /// Secret-class files read and stored encrypted (new or deduplicated).
    pub secrets_sealed: u64,
    /// Snapshots removed by the automatic prune after this run.
    pub auto_pruned_snapshots: u64,
    /// Bytes freed by the automatic prune.
    pub auto_pruned_bytes: u64,
    /// Files whose content the repository did not have yet (deduplicated within the run).
    pub files_new: u64,
    /// Share of the bytes read that were already stored, 0.0–1.0 (0 when nothing was read).
    pub dedup_ratio: f64,
}

/// The result of a snapshot run.
#[derive(Debug)]
pub struct BackupReport {
    /// The committed (or reused) snapshot; for a dry run, the one that would be written (id of the record is not final).
    pub snapshot: Option<Snapshot>,
    /// An identical snapshot with the same kind and label existed; nothing was written.
    pub reused: bool,
    /// The content was new to the repository.
    pub changed: bool,
    /// Warnings.
    pub warnings: Vec<Warning>,
    /// Per-path errors (status partial when non-empty and a snapshot was committed).
    pub errors: Vec<Error>,
    /// Excluded paths and why.
    pub excluded: Vec<Excluded>,
    /// Counters.
    pub stats: BackupStats,
    /// The tree that was (or would be) stored.
    pub tree: Tree,
}

/// Open (creating on first use) the repository, take the lock, and snapshot the configured roots.
pub fn run_backup(settings: &Settings, opts: &BackupOptions) -> Result<BackupReport> {
    run_backup_with(settings, opts, None)
}

/// [`run_backup`], also recording `packages` (package-manager lists) in the snapshot record.
pub fn run_backup_with(
    settings: &Settings,
    opts: &BackupOptions,
    packages: Option<&[PackageList]>,
) -> Result<BackupReport> {
    let rules = Rules::new(settings)?;
    if opts.dry_run {
        let repo = if Repository::exists(&settings.repo) {
            Some(Repository::open(&settings.repo)?)
        } else {
            None
        };
        let mut report =
            snapshot_roots_with(repo.as_ref(), &settings.roots, &rules, opts, packages)?;
        report
            .warnings
            .extend(absent_named_roots(settings, &report.tree));
        return Ok(report);
    }
    let (repo, _created) = Repository::open_or_create(&settings.repo)?;
    let guard = repo.lock(&opts.command, settings.lock_wait)?;
    let mut pre_warnings = Vec::new();
    let mut report = match snapshot_roots_with(Some(&repo), &settings.roots, &rules, opts, packages)
    {
        // Over the quota: prune by policy (every kind), then try once more.
        Err(e) if e.code == "quota_exceeded" => {
            let (removed, freed) =
                crate::ops::prune::auto_prune(&repo, settings, None, &mut pre_warnings)?;
            pre_warnings.push(Warning::new(
                "quota_pruned",
                format!(
                    "the repository was over its quota; pruned {removed} snapshot(s) by the retention policy, freeing {freed} bytes"
                ),
            ));
            snapshot_roots_with(Some(&repo), &settings.roots, &rules, opts, packages)?
        }
        other => other?,
    };
    report.warnings.splice(0..0, pre_warnings);
    report
        .warnings
        .extend(absent_named_roots(settings, &report.tree));
    if let Some(stale) = &guard.stale {
        report
            .warnings
            .push(crate::repo::lock::stale_lock_warning(stale));
    }
    if settings.retention.auto && report.errors.is_empty() {
        let kinds = [SnapshotKind::Checkpoint, SnapshotKind::Safety];
        match crate::ops::prune::auto_prune(&repo, settings, Some(&kinds), &mut report.warnings) {
            Ok((removed, freed)) => {
                report.stats.auto_pruned_snapshots = removed;
                report.stats.auto_pruned_bytes = freed;
            }
            Err(e) => report.warnings.push(Warning::new(
                "auto_prune_failed",
                format!(
                    "{}; the new snapshot is committed, run `backup-prune` later",
                    e.message
                ),
            )),
        }
    }
    drop(guard);
    Ok(report)
}

/// A `--path` the user typed that names nothing is recorded as absent (a
/// rollback to this checkpoint would delete what is created there later),
/// which is right for a path that is really missing and wrong for a typo or
/// a relative path given from the wrong directory: say so, by name.
fn absent_named_roots(settings: &Settings, tree: &Tree) -> Vec<Warning> {
    if settings.sources.get("track").map(String::as_str) != Some("flag --path") {
        return Vec::new();
    }
    tree.roots
        .iter()
        .filter(|r| !r.present)
        .map(|r| {
            let shown = r.root.lossy();
            let message = format!(
                "--path {shown}: nothing is there; it is recorded as absent (check the spelling; a relative path is taken from the current directory)"
            );
            Warning::at("path_absent", shown, message)
        })
        .collect()
}

/// Snapshot `roots` into `repo` (the caller holds the lock). With `repo == None`
/// (dry run against a repository that does not exist yet) everything is new.
pub fn snapshot_roots(
    repo: Option<&Repository>,
    roots: &[TrackedRoot],
    rules: &Rules,
    opts: &BackupOptions,
) -> Result<BackupReport> {
    snapshot_roots_with(repo, roots, rules, opts, None)
}

/// [`snapshot_roots`], also recording `packages` in the record. An existing
/// snapshot is reused only when its package lists match too.
pub fn snapshot_roots_with(
    repo: Option<&Repository>,
    roots: &[TrackedRoot],
    rules: &Rules,
    opts: &BackupOptions,
    packages: Option<&[PackageList]>,
) -> Result<BackupReport> {
    prepare_snapshot(repo, roots, rules, opts, packages)?.commit()
}

/// A snapshot whose content is packed (packs durable, unless a dry run) but
/// not committed: nothing refers to its packs yet. [`commit`](Self::commit)
/// writes index, tree and record; dropping it instead removes the packs.
///
/// Restore and rollback plan against [`tree`](Self::tree) and commit it as
/// their safety snapshot only when they will change something, so the roots
/// are scanned and changed files read once, not twice.
pub struct PreparedSnapshot<'r> {
    repo: Option<&'r Repository>,
    dry_run: bool,
    verify_after_write: bool,
    packs: UncommittedPacks<'r>,
    tree_id: Hash,
    record: SnapshotRecord,
    reuse: Option<Snapshot>,
    same_label: Option<Hash>,
    /// The files cache to save, when it changed.
    cache_bytes: Option<Vec<u8>>,
    report: BackupReport,
    started: Instant,
}

/// This run's packs (and the index file naming them, once written) until a
/// record refers to them: dropped before that (an error, or a safety
/// snapshot that is not needed), they are removed, so that nothing is left
/// behind on what may be a full disk.
///
/// This is where the reuse invariant (docs/format.md) is kept on the write
/// side: the index file goes first, and a pack is removed only once no index
/// file of this run names it. If the index file cannot be removed, the packs
/// stay (harmless, unreferenced; prune removes them), so an index file never
/// names a pack that this run deleted.
struct UncommittedPacks<'r> {
    /// Where they are; `None` for a dry run, which writes none.
    repo: Option<&'r Repository>,
    packs: Vec<crate::repo::pack::FinishedPack>,
    /// The index file this run made (or may have made) visible.
    index: Option<Hash>,
}

impl UncommittedPacks<'_> {
    /// They are referred to now: keep them.
    fn keep(mut self) {
        self.packs.clear();
        self.index = None;
    }

    /// Remove this run's index file; false if it may still be visible.
    fn remove_index(&self, r: &Repository) -> bool {
        let Some(id) = self.index else {
            return true;
        };
        let path = index::index_path(&r.sub(layout::INDEX), &id);
        match std::fs::remove_file(&path) {
            Ok(()) => Dir::open(&r.sub(layout::INDEX))
                .and_then(|d| d.sync())
                .is_ok(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

impl Drop for UncommittedPacks<'_> {
    fn drop(&mut self) {
        let Some(r) = self.repo else { return };
        if !self.remove_index(r) {
            return;
        }
        for p in &self.packs {
            let _ =
                std::fs::remove_file(crate::repo::pack::pack_path(&r.sub(layout::PACKS), &p.id));
        }
    }
}

impl PreparedSnapshot<'_> {
    /// The tree that will be stored.
    pub fn tree(&self) -> &Tree {
        &self.report.tree
    }

    /// Paths (as shown, `display_path`) whose extended attributes could not
    /// be read: the snapshot holds them without their attributes.
    pub fn xattrs_unreadable(&self) -> std::collections::HashSet<&str> {
        self.report
            .warnings
            .iter()
            .filter(|w| w.code == "xattrs_unreadable")
            .filter_map(|w| w.path.as_deref())
            .collect()
    }

    /// Paths the scan excluded, and why.
    pub fn excluded(&self) -> &[Excluded] {
        &self.report.excluded
    }

    /// Commit (a dry run only computes the record's id) and save the files cache.
    pub fn commit(self) -> Result<BackupReport> {
        let PreparedSnapshot {
            repo,
            dry_run,
            verify_after_write,
            packs,
            tree_id,
            record,
            reuse,
            same_label,
            cache_bytes,
            mut report,
            started,
        } = self;
        let mut packs = packs;
        let snapshot = match (repo, dry_run, reuse) {
            (_, _, Some(existing)) => existing,
            (None, _, None) | (Some(_), true, None) => {
                let (id, _) = record.encode();
                Snapshot { id, record }
            }
            // On an error `packs` is dropped, which removes them (and the
            // index file naming them) unless the record became visible.
            (Some(r), false, None) => {
                if verify_after_write {
                    let t = Instant::now();
                    verify_packs(r, &packs.packs)?;
                    report.stats.verify_ms = t.elapsed().as_millis() as u64;
                }
                commit(r, &mut packs, tree_id, &report.tree, record)?
            }
        };
        packs.keep();
        report.reused = same_label == Some(snapshot.id);
        if let (Some(r), false, Some(bytes)) = (repo, dry_run, &cache_bytes) {
            if let Err(e) = r.save_cache(bytes) {
                report.warnings.push(Warning::new(
                    "cache_not_saved",
                    format!("{e}; the next run will read files again"),
                ));
            }
        }
        report.snapshot = Some(snapshot);
        report.stats.commit_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }
}

/// Scan, read and pack, up to the commit: see [`PreparedSnapshot`].
///
/// The steps in order (each in its own function: `read_contents`,
/// `build_tree`); what is left here is the glue between them and the
/// snapshot record, about 180 lines because the record and the report
/// gather fields from every step.
pub fn prepare_snapshot<'r>(
    repo: Option<&'r Repository>,
    roots: &[TrackedRoot],
    rules: &Rules,
    opts: &BackupOptions,
    packages: Option<&[PackageList]>,
) -> Result<PreparedSnapshot<'r>> {
    let t0 = Instant::now();
    let scan_start_ns = crate::time::now_ns();
    let mut stats = BackupStats::default();
    let mut warnings = Vec::new();
    crate::progress::stage("scanning", 0, 0);
    let scanned = scan::scan(roots, rules);
    let mut errors = scanned.errors;
    let mut scanned_roots = scanned.roots;
    stats.excluded = scanned.excluded.len() as u64;
    stats.scan_ms = t0.elapsed().as_millis() as u64;

    let existing = match repo {
        Some(r) => r.snapshots()?,
        None => Vec::new(),
    };
    // What this run may deduplicate against: blobs whose pack is present.
    let index = match repo {
        Some(r) => r.index_for_reuse()?,
        None => Index::default(),
    };
    if !index.missing_packs.is_empty() {
        warnings.push(missing_packs_warning(&index));
    }
    for (path, why) in &index.damaged {
        warnings.push(Warning::at(
            "damaged_index",
            crate::paths::display_path(path),
            format!("{why}; its packs were read from their own trailers instead; `backup-verify --repair` rewrites the index"),
        ));
    }
    let old_cache = match repo.map(|r| r.load_cache()) {
        // Trusted only while a snapshot of its tree exists (prune may have
        // removed the blobs of any other; `cache` module docs), and never
        // while a pack is missing: a cached hash is a reuse too.
        Some(Ok(Some(c)))
            if index.missing_packs.is_empty()
                && index.damaged.is_empty()
                && c.tree
                    .is_some_and(|t| existing.iter().any(|s| s.record.tree == t.id)) =>
        {
            c
        }
        Some(Ok(_)) | None => FilesCache::default(),
        Some(Err(msg)) => {
            warnings.push(Warning::new("cache_rebuilt", msg));
            FilesCache::default()
        }
    };

    let Contents {
        hashes,
        omitted,
        mut sealed,
        new_packs,
    } = read_contents(
        repo,
        &index,
        &old_cache,
        &mut scanned_roots,
        rules,
        opts,
        Tally {
            stats: &mut stats,
            warnings: &mut warnings,
            errors: &mut errors,
        },
    )?;

    // Build the tree.
    let t2 = Instant::now();
    let (tree, mut summary, mut new_cache) = build_tree(
        &scanned_roots,
        &hashes,
        &omitted,
        &mut sealed,
        rules,
        scan_start_ns,
        stats.files_scanned as usize,
        &mut warnings,
    );
    summary.new_blobs = stats.new_blobs;
    summary.new_bytes = stats.new_bytes;
    stats.files_new = stats.new_blobs;
    if stats.bytes_read > 0 {
        let kept = stats.bytes_read.saturating_sub(stats.new_bytes) as f64;
        // Rounded so that envelopes stay readable and stable.
        stats.dedup_ratio = (kept / stats.bytes_read as f64 * 1000.0).round() / 1000.0;
    }
    // The same tree as the cache's (same fingerprint) has the same id; only
    // a new tree is serialized to learn it.
    let fingerprint = tree.fingerprint();
    let tree_id = match old_cache.tree {
        Some(t) if t.fingerprint == fingerprint => t.id,
        _ => tree.id(),
    };
    let stamp = Some(TreeStamp {
        id: tree_id,
        fingerprint,
    });
    // The cache is bound to the tree it describes (`cache` module docs).
    let cache_entry = |&(ri, ii): &(u32, u32)| -> CacheEntry<'_> {
        use std::os::unix::ffi::OsStrExt;
        let item = &scanned_roots[ri as usize].items[ii as usize];
        let hash = hashes[ri as usize][ii as usize].expect("cached entries have a hash");
        (item.abs.as_os_str().as_bytes(), stat_key(item), hash)
    };
    let unchanged = old_cache.same_as(stamp, new_cache.len(), new_cache.iter().map(cache_entry));
    let cache_bytes = (!unchanged).then(|| {
        // Sorted only when it is written (a no-change run skips the sort).
        new_cache.sort_unstable_by(|a, b| cache_entry(a).0.cmp(cache_entry(b).0));
        FilesCache::encode_sorted(stamp, new_cache.iter().map(cache_entry))
    });
    drop(new_cache);
    drop(old_cache);
    let changed = !existing.iter().any(|s| s.record.tree == tree_id);
    // Labels belong to a home: another home's identical record on a shared
    // repository is not this home's checkpoint (its rollback would refuse it).
    let home = rules.home().map(|h| ByteName::from(h.as_os_str()));
    let same_label = existing.iter().rev().find(|s| {
        s.record.kind == opts.kind && s.record.label == opts.label && s.record.home == home
    });
    let reuse = same_label
        .filter(|s| {
            // A record is reused only within its own run: a run's phases
            // are its own records (docs/format.md, "Bootstrap runs").
            s.record.tree == tree_id
                && s.record.run == opts.run
                && packages.is_none_or(|p| s.record.packages.as_deref() == Some(p))
        })
        .cloned();

    let record = SnapshotRecord {
        version: OBJECT_VERSION,
        kind: opts.kind,
        label: opts.label.clone(),
        tags: opts.tags.clone(),
        parent: existing.last().map(|s| s.id),
        host: crate::host::hostname(),
        user: crate::host::username(),
        home,
        created_at: crate::time::now_rfc3339(),
        tree: tree_id,
        roots: tree.roots.iter().map(|r| r.root.clone()).collect(),
        summary,
        packages: packages.map(<[PackageList]>::to_vec),
        run: opts.run.clone(),
    };

    let report = BackupReport {
        snapshot: None,
        reused: false,
        changed,
        warnings,
        errors,
        excluded: scanned.excluded,
        stats,
        tree,
    };
    Ok(PreparedSnapshot {
        repo,
        dry_run: opts.dry_run,
        verify_after_write: opts.verify_after_write,
        packs: UncommittedPacks {
            repo: repo.filter(|_| !opts.dry_run),
            packs: new_packs,
            index: None,
        },
        tree_id,
        record,
        reuse,
        same_label: same_label.map(|s| s.id),
        cache_bytes,
        report,
        started: t2,
    })
}

/// The snapshot's tree from the scan and what the reader produced, with its
/// summary and the (root, item) positions the new files cache keeps. One
/// loop over the scan (just over 100 lines): every entry is built, counted
/// and considered for the cache in the same pass, which keeps a no-change
/// checkpoint at one walk of the tables (docs/performance.md).
#[allow(clippy::too_many_arguments)] // the scan and the reader's three tables, read once here
fn build_tree(
    scanned_roots: &[scan::ScannedRoot],
    hashes: &[Vec<Option<Hash>>],
    omitted: &[Vec<Option<&'static str>>],
    sealed: &mut [Vec<Option<Sealed>>],
    rules: &Rules,
    scan_start_ns: i64,
    files: usize,
    warnings: &mut Vec<Warning>,
) -> (Tree, Summary, Vec<(u32, u32)>) {
    let mut summary = Summary::default();
    let mut tree = Tree {
        version: OBJECT_VERSION,
        roots: Vec::with_capacity(scanned_roots.len()),
        xattrs_recorded: true,
    };
    // The new cache is a list of (root, item) positions into the scan (8
    // bytes per file); it is compared with the old one and encoded right
    // after the tree is hashed, so the two are never held as tables at once
    // (peak memory, docs/performance.md).
    let mut new_cache: Vec<(u32, u32)> = Vec::with_capacity(files);
    // (device, inode) of a file with several links -> the full path of its
    // first entry in this tree: later ones record it (`Entry::hardlink`).
    let mut first_link: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for (ri, root) in scanned_roots.iter().enumerate() {
        let mut entries = Vec::with_capacity(root.items.len());
        let root_name = ByteName::from(root.root.shown.as_os_str());
        for (ii, item) in root.items.iter().enumerate() {
            if let Some(why) = &item.xattr_error {
                warnings.push(Warning::at(
                    "xattrs_unreadable",
                    scan::shown(item),
                    format!(
                        "the extended attributes and ACLs of {} could not be read ({why}); it is stored without them",
                        scan::shown(item)
                    ),
                ));
            }
            if item.file_flags != 0 {
                let names = crate::sys::file_flag_names(item.file_flags).join(",");
                warnings.push(Warning::at(
                    "file_flags_not_recorded",
                    scan::shown(item),
                    format!(
                        "{} has the file flags {names}, which snapshots do not record; a rollback or restore of it leaves them off (set them again with `chflags {names}`)",
                        scan::shown(item)
                    ),
                ));
            }
            let hardlink = (item.kind == EntryType::File && item.nlink > 1)
                .then(|| {
                    let full = crate::diff::full_path(&root_name.0, &item.rel);
                    match first_link.entry((item.dev, item.ino)) {
                        std::collections::hash_map::Entry::Occupied(o) => {
                            Some(ByteName(o.get().clone()))
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(full);
                            None
                        }
                    }
                })
                .flatten();
            let sha256 = hashes[ri][ii];
            let omit = omitted[ri][ii];
            match item.kind {
                EntryType::File if omit.is_some() => summary.omitted += 1,
                EntryType::File => {
                    summary.files += 1;
                    summary.bytes += item.size;
                }
                EntryType::Dir => summary.dirs += 1,
                EntryType::Symlink => summary.symlinks += 1,
            }
            // Files with extended attributes are not cached: a cache hit
            // stands for "no attributes" too (see `read_xattrs`).
            if sha256.is_some()
                && item.kind == EntryType::File
                && item.mtime_ns < scan_start_ns - RACY_WINDOW_NS
                && item.xattrs.is_empty()
                && item.xattr_error.is_none()
            {
                new_cache.push((ri as u32, ii as u32));
            }
            entries.push(Entry {
                path: ByteName(item.rel.clone()),
                kind: item.kind,
                mode: item.mode,
                uid: item.uid,
                gid: item.gid,
                mtime_ns: item.mtime_ns,
                size: item.size,
                sha256: if omit.is_some() { None } else { sha256 },
                target: item.target.clone(),
                omitted: omit.map(str::to_string),
                sealed: if omit.is_some() {
                    None
                } else {
                    sealed[ri][ii].take().map(Box::new)
                },
                hardlink,
                xattrs: item.xattrs.clone(),
            });
        }
        tree.roots.push(RootTree {
            root: root_name,
            present: root.present,
            entries,
            link: root
                .link
                .as_ref()
                .map(|l| ByteName::from(rules.shown(l).as_os_str())),
        });
    }
    (tree, summary, new_cache)
}

/// Verify after write: read every pack this run wrote back from storage (its
/// pages dropped from the cache first, so the bytes come from the device,
/// not from memory) and check it against its name, before anything refers
/// to it. A mismatch fails the run with nothing committed (the caller's
/// `UncommittedPacks` removes the packs).
fn verify_packs(repo: &Repository, packs: &[crate::repo::pack::FinishedPack]) -> Result<()> {
    let dir = repo.sub("packs");
    for p in packs {
        let path = crate::repo::pack::pack_path(&dir, &p.id);
        #[cfg(debug_assertions)]
        test_hooks::corrupt_before_verify(&path);
        let (mut f, _) = crate::repo::open_object(&path, "pack", None, u64::MAX)?;
        crate::sys::drop_cached_pages(&f);
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).ctx("reading back pack", &path)?;
            if n == 0 {
                break;
            }
            sha2::Digest::update(&mut hasher, &buf[..n]);
        }
        let got = Hash::from_hasher(hasher);
        if got != p.id {
            return Err(Error::new(
                ExitCode::Corrupt,
                "pack_verify_failed",
                format!(
                    "pack {} read back from {} does not match what was written (SHA-256 {}); nothing was committed",
                    p.id.short(),
                    crate::paths::display_path(&path),
                    got.short()
                ),
            )
            .with_path(&path)
            .with_hint("the storage returned other bytes than were written: check the disk (dmesg, smartctl) or move the repository with --repo, then run again"));
        }
    }
    Ok(())
}

/// Fault injection for the verify-after-write test, compiled only into debug
/// builds (the test binaries), never into a release: with
/// `BACKUP_TEST_CORRUPT_PACK=1` one byte in the middle of each new pack is
/// flipped on disk between its write and the read-back (docs/reliability.md).
#[cfg(debug_assertions)]
mod test_hooks {
    pub fn corrupt_before_verify(path: &std::path::Path) {
        if std::env::var_os("BACKUP_TEST_CORRUPT_PACK").is_none_or(|v| v != "1") {
            return;
        }
        if let Ok(mut bytes) = std::fs::read(path) {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
            let _ = std::fs::write(path, bytes);
        }
    }
}

/// Index → tree → record, each durable before the next. The index file is
/// noted in `uncommitted` before it can become visible, so that a failure
/// anywhere later removes it with the packs it names.
fn commit(
    repo: &Repository,
    uncommitted: &mut UncommittedPacks<'_>,
    tree_id: Hash,
    tree: &Tree,
    record: SnapshotRecord,
) -> Result<Snapshot> {
    if !uncommitted.packs.is_empty() {
        let (id, bytes) = index::encode(&uncommitted.packs);
        let dir = Dir::open(&repo.sub(layout::INDEX))?;
        // An identical file already there is not this run's to remove.
        if !index::index_path(dir.path(), &id).exists() {
            uncommitted.index = Some(id);
            dir.write_atomic(OsStr::new(&id.to_hex()), &bytes, 0o600)?;
        }
    }
    let tree_path = repo.tree_path(&tree_id);
    if !tree_path.exists() {
        // Streamed into the temp file: serialized once, never held whole.
        let dir = Dir::open(&repo.sub(layout::TREES))?;
        let mut file =
            dir.create_atomic(OsStr::new(&format!("{}.json", tree_id.to_hex())), 0o600)?;
        let mut w = std::io::BufWriter::with_capacity(64 << 10, file.file());
        tree.write_json(&mut w)
            .and_then(|()| std::io::Write::flush(&mut w))
            .ctx("writing", &tree_path)?;
        drop(w);
        file.commit(true)?;
    }
    let (id, bytes) = record.encode();
    let written = Dir::open(&repo.sub(layout::SNAPSHOTS))
        .and_then(|d| d.write_atomic(OsStr::new(&format!("{}.json", id.to_hex())), &bytes, 0o600));
    if let Err(e) = written {
        // Renamed into place but its directory not synced: the record may
        // survive, so what it refers to must (the caller keeps nothing else).
        if repo.snapshot_path(&id).exists() {
            uncommitted.packs.clear();
            uncommitted.index = None;
        }
        return Err(e);
    }
    Ok(Snapshot { id, record })
}

/// A writer found index files naming packs that are gone: their blobs are not
/// reused (they are stored again when seen), and the snapshots that need them
/// are damaged until repaired.
fn missing_packs_warning(index: &Index) -> Warning {
    let mut packs: Vec<String> = index
        .missing_packs
        .iter()
        .map(|(_, p)| p.short().to_string())
        .collect();
    packs.sort();
    packs.dedup();
    Warning::new(
        "missing_packs",
        format!(
            "the index names {} pack(s) that are missing ({}); their content is not reused and is stored again where it is still in the home; run `backup-verify --read-data` to see which snapshots are affected",
            packs.len(),
            packs.join(", ")
        ),
    )
}
