//! External copies: sync after checkpoints, `backup-create --sync-external`,
//! reading an external copy (`backup-list --external`, `backup-verify
//! --external`) and pulling it back (`backup-restore --from-external`).
//!
//! [`transfer`] copies what the destination lacks, in commit order:
//! `config.json`, sealed keys, packs, index files, trees, and snapshot
//! records last; the destination directory is made durable after each kind.
//! Each object is checked after it lands (see [`crate::external`]). Before a
//! snapshot record is copied, its closure is checked *on the destination*:
//! its tree, every blob its tree names (through the destination's index),
//! the packs holding them and the sealed keys its secrets need. A record
//! whose data is not all there is not copied (it is reported and the next
//! sync tries again), so an interrupted or racing sync can never leave a copy
//! that refers to missing data, and a rerun resumes where the last one stopped
//! because only missing objects are copied.
//!
//! Sync only adds: pruning the local repository does not delete anything from
//! an external copy (see `docs/format.md`).
//!
//! Degradation: a checkpoint reports `full` when every configured target was
//! synced (or none is configured), `local-only` when one was skipped or could
//! not be reached; the checkpoint itself is committed either way and succeeds
//! with a warning that says how to catch up.

use std::collections::BTreeSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::config::{ExternalTarget, Settings, TargetLocation};
use crate::error::{Error, IoContext, Result};
use crate::exit::ExitCode;
use crate::external::dir::DirStore;
use crate::external::{
    classify, named_hash, open_target, ObjectKind, Store, TargetChoice, Want, COPY_ORDER,
};
use crate::hash::Hash;
use crate::paths::display_path;
use crate::repo::index::Index;
use crate::repo::layout;
use crate::repo::{decode_record, decode_tree, RepoConfig, Repository};
use crate::report::{Degradation, Envelope, ErrorReport, Status, Warning};
use crate::retry::{retry, Attempt};

/// Objects of one kind copied at the same time.
const PARALLEL_COPIES: usize = 4;

/// Objects copied by one transfer, per kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Copied {
    /// `config.json` (1 when the copy was new).
    pub config: u64,
    /// Sealed secret-id keys.
    pub keys: u64,
    /// Packs.
    pub packs: u64,
    /// Index files.
    pub index_files: u64,
    /// Trees.
    pub trees: u64,
    /// Snapshot records.
    pub snapshots: u64,
}

impl Copied {
    fn add(&mut self, kind: ObjectKind) {
        match kind {
            ObjectKind::Config => self.config += 1,
            ObjectKind::Key => self.keys += 1,
            ObjectKind::Pack => self.packs += 1,
            ObjectKind::Index => self.index_files += 1,
            ObjectKind::Tree => self.trees += 1,
            ObjectKind::Snapshot => self.snapshots += 1,
        }
    }

    /// All objects copied.
    pub fn total(&self) -> u64 {
        self.config + self.keys + self.packs + self.index_files + self.trees + self.snapshots
    }
}

/// A snapshot left out of a copy because its data was not all there.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Held {
    /// Snapshot id.
    pub id: String,
    /// What was missing.
    pub reason: String,
}

/// What one transfer did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransferReport {
    /// Objects copied per kind.
    pub copied: Copied,
    /// Bytes copied.
    pub bytes: u64,
    /// Objects the destination already had.
    pub present: u64,
    /// Snapshots not copied because their closure was incomplete.
    pub held_back: Vec<Held>,
    /// Objects found damaged on the destination (wrong size) and copied again.
    pub repaired: Vec<String>,
}

fn parse_config(bytes: &[u8], from: &str) -> Result<RepoConfig> {
    let config: RepoConfig = serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            ExitCode::Corrupt,
            "corrupt_config",
            format!("config.json on {from} is not valid: {e}"),
        )
        .with_hint("run `backup-verify` on it; if it is not a copy of this repository, point the target elsewhere")
    })?;
    if config.format != crate::repo::FORMAT_NAME {
        return Err(Error::new(
            ExitCode::Usage,
            "external_not_a_repository",
            format!("{from} holds a config.json that is not a dotfiles-backup repository's"),
        )
        .with_hint("point the target at an empty directory or at a copy of this repository"));
    }
    if config.version > crate::repo::FORMAT_VERSION {
        return Err(Error::new(
            ExitCode::Corrupt,
            "unsupported_format",
            format!(
                "{from} uses repository format {}; this build understands up to {}",
                config.version,
                crate::repo::FORMAT_VERSION
            ),
        )
        .with_hint("upgrade dotfiles-backup; nothing was written"));
    }
    Ok(config)
}

/// Read `rel` from whichever side is a local directory (the copy there was
/// already checked), else from `src`.
fn read_near(src: &dyn Store, dst: &dyn Store, rel: &str, dst_has: bool) -> Result<Vec<u8>> {
    if dst_has && dst.local_path(rel).is_some() {
        dst.read(rel)
    } else if src.local_path(rel).is_some() {
        src.read(rel)
    } else if dst_has {
        dst.read(rel)
    } else {
        src.read(rel)
    }
}

/// Copy every object `dst` lacks from `src`, in commit order, checking each
/// after it lands and each snapshot's closure before its record is copied.
pub fn transfer(src: &dyn Store, dst: &dyn Store) -> Result<TransferReport> {
    let mut report = TransferReport::default();
    let src_list = src.list()?;
    let dst_list = dst.list()?;
    let mut have: BTreeSet<String> = dst_list.keys().cloned().collect();
    // An object whose size on the copy differs from the source's was damaged
    // there (objects never change): copy it again, over the damaged one.
    let damaged = |rel: &String, size: u64| -> bool {
        classify(rel) != Some(ObjectKind::Config) && dst_list.get(rel).is_some_and(|d| *d != size)
    };
    for (rel, size) in &src_list {
        if damaged(rel, *size) {
            have.remove(rel);
            report.repaired.push(rel.clone());
        }
    }
    let Some(&config_size) = src_list.get(layout::CONFIG) else {
        return Err(Error::new(
            ExitCode::Failed,
            "not_a_repository",
            format!("{} holds no repository (no config.json)", src.shown()),
        )
        .with_hint(
            "check the location; an external copy is created by `backup-create --sync-external`",
        ));
    };
    let src_config_bytes = src.read(layout::CONFIG)?;
    let src_config = parse_config(&src_config_bytes, &src.shown())?;
    if have.contains(layout::CONFIG) {
        let dst_config = parse_config(&dst.read(layout::CONFIG)?, &dst.shown())?;
        if dst_config.id != src_config.id {
            return Err(Error::new(
                ExitCode::Refused,
                "external_repository_mismatch",
                format!(
                    "{} holds a different repository (id {}…) than {} (id {}…); nothing was copied",
                    dst.shown(),
                    &dst_config.id[..dst_config.id.len().min(8)],
                    src.shown(),
                    &src_config.id[..src_config.id.len().min(8)]
                ),
            )
            .with_hint("use a separate directory (or remote path) for each repository"));
        }
        report.present += 1;
    } else {
        let want = Want {
            size: config_size,
            sha256: Hash::of(&src_config_bytes),
        };
        report.bytes += dst.put(layout::CONFIG, src, &want)?;
        report.copied.add(ObjectKind::Config);
        dst.flush("")?;
        have.insert(layout::CONFIG.into());
    }

    // Objects of one kind are independent: copy several at once (rclone calls
    // and network round trips dominate), then make the kind durable before the
    // next kind, which may refer to it, is started.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(PARALLEL_COPIES)
        .build()
        .map_err(|e| {
            Error::new(
                ExitCode::Internal,
                "internal_error",
                format!("starting copy threads: {e}"),
            )
        })?;
    for kind in COPY_ORDER {
        if matches!(kind, ObjectKind::Config | ObjectKind::Snapshot) {
            continue;
        }
        let mut todo: Vec<(&String, u64)> = Vec::new();
        for (rel, size) in src_list.iter().filter(|(r, _)| classify(r) == Some(kind)) {
            if have.contains(rel) {
                report.present += 1;
            } else {
                todo.push((rel, *size));
            }
        }
        let copy_one = |rel: &str, size: u64| -> Result<Option<u64>> {
            if kind == ObjectKind::Index {
                match index_packs_missing(src, rel, &have) {
                    Ok(false) => {}
                    // Its packs are not all on the copy (pruned or repacked at the
                    // source meanwhile): an index must never name a missing pack.
                    Ok(true) => return Ok(None),
                    Err(e) if vanished(src, rel, &e) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            let sha256 = match named_hash(rel) {
                Some(h) => h,
                None => match src.read(rel) {
                    Ok(bytes) => Hash::of(&bytes),
                    Err(e) if vanished(src, rel, &e) => return Ok(None),
                    Err(e) => return Err(e),
                },
            };
            match dst.put(rel, src, &Want { size, sha256 }) {
                Ok(n) => Ok(Some(n)),
                // Pruned from the source since it was listed: whatever referred
                // to it is held back by the closure check below.
                Err(e) if vanished(src, rel, &e) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let results: Vec<Result<Option<u64>>> = pool.install(|| {
            todo.par_iter()
                .map(|(rel, size)| copy_one(rel, *size))
                .collect()
        });
        let mut any = false;
        let mut first_error = None;
        for ((rel, _), result) in todo.iter().zip(results) {
            match result {
                Ok(Some(n)) => {
                    report.bytes += n;
                    report.copied.add(kind);
                    have.insert((*rel).clone());
                    any = true;
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if any {
            dst.flush(kind.dir())?;
        }
        if let Some(e) = first_error {
            return Err(e);
        }
    }

    // Snapshot records, each only when everything it refers to is on `dst`.
    let mut index: Option<Index> = None;
    let mut ready: Vec<(&String, u64, Hash)> = Vec::new();
    for (rel, size) in src_list
        .iter()
        .filter(|(r, _)| classify(r) == Some(ObjectKind::Snapshot))
    {
        if have.contains(rel) {
            report.present += 1;
            continue;
        }
        let Some(id) = named_hash(rel) else { continue };
        if index.is_none() {
            let mut idx = Index::default();
            for irel in have
                .iter()
                .filter(|r| classify(r) == Some(ObjectKind::Index))
            {
                let bytes = read_near(src, dst, irel, true)?;
                let path = Path::new(irel);
                if Some(Hash::of(&bytes)) != named_hash(irel) {
                    return Err(Error::corrupt(
                        "corrupt_index",
                        path,
                        format!(
                            "index file {irel} on {} does not match its checksum",
                            dst.shown()
                        ),
                    ));
                }
                for (b, loc) in Index::from_bytes(&bytes, path)?.blobs {
                    idx.blobs.entry(b).or_insert(loc);
                }
            }
            index = Some(idx);
        }
        let idx = index.as_ref().expect("index loaded above");
        match closure_gap(src, dst, rel, &id, idx, &have) {
            Ok(None) => ready.push((rel, *size, id)),
            Ok(Some(reason)) => report.held_back.push(Held {
                id: id.to_hex(),
                reason,
            }),
            // A record pruned from the source since it was listed: nothing to copy.
            Err(e) if vanished(src, rel, &e) => {}
            Err(e) => return Err(e),
        }
    }
    // Records are independent of each other: copy the complete ones together.
    let results: Vec<Result<Option<u64>>> = pool.install(|| {
        ready
            .par_iter()
            .map(|(rel, size, id)| {
                match dst.put(
                    rel,
                    src,
                    &Want {
                        size: *size,
                        sha256: *id,
                    },
                ) {
                    Ok(n) => Ok(Some(n)),
                    Err(e) if vanished(src, rel, &e) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .collect()
    });
    let mut any = false;
    let mut first_error = None;
    for (result, (rel, _, _)) in results.into_iter().zip(&ready) {
        match result {
            Ok(Some(n)) => {
                report.bytes += n;
                report.copied.add(ObjectKind::Snapshot);
                have.insert((*rel).clone());
                any = true;
            }
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if any {
        dst.flush("snapshots")?;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Does the index file `rel` name a pack that is not in `have`?
fn index_packs_missing(src: &dyn Store, rel: &str, have: &BTreeSet<String>) -> Result<bool> {
    let bytes = src.read(rel)?;
    let path = Path::new(rel);
    if Some(Hash::of(&bytes)) != named_hash(rel) {
        return Err(Error::corrupt(
            "corrupt_index",
            path,
            format!(
                "index file {rel} on {} does not match its checksum",
                src.shown()
            ),
        ));
    }
    let index = Index::from_bytes(&bytes, path)?;
    Ok(index
        .blobs
        .values()
        .any(|loc| !have.contains(&format!("packs/{}", loc.pack.to_hex()))))
}

/// Did `rel` disappear from a local source (pruned by a concurrent writer)?
fn vanished(src: &dyn Store, rel: &str, err: &Error) -> bool {
    err.code == "not_found" && src.local_path(rel).is_some_and(|p| !p.exists())
}

/// Why snapshot `rel` cannot be copied yet (`None`: everything it needs is on `dst`).
fn closure_gap(
    src: &dyn Store,
    dst: &dyn Store,
    rel: &str,
    id: &Hash,
    index: &Index,
    have: &BTreeSet<String>,
) -> Result<Option<String>> {
    let bytes = src.read(rel)?;
    let record = match decode_record(&bytes, id, Path::new(rel)) {
        Ok(r) => r,
        Err(e) => return Ok(Some(e.message)),
    };
    let tree_rel = format!("trees/{}.json", record.tree.to_hex());
    if !have.contains(&tree_rel) {
        return Ok(Some(format!("its tree {} is missing", record.tree.short())));
    }
    let tree_bytes = read_near(src, dst, &tree_rel, true)?;
    let tree = match decode_tree(&tree_bytes, &record.tree, Path::new(&tree_rel)) {
        Ok(t) => t,
        Err(e) => return Ok(Some(e.message)),
    };
    for (_, entry) in tree.entries() {
        if let Some(blob) = entry.content_id() {
            let Some(loc) = index.get(&blob) else {
                return Ok(Some(format!(
                    "blob {} is not in the copied index",
                    blob.short()
                )));
            };
            if !have.contains(&format!("packs/{}", loc.pack.to_hex())) {
                return Ok(Some(format!("pack {} is missing", loc.pack.short())));
            }
        }
        if let Some(sealed) = &entry.sealed {
            if !have.contains(&format!("keys/{}.age", sealed.key)) {
                return Ok(Some(format!("sealed key {} is missing", sealed.key)));
            }
        }
    }
    Ok(None)
}

/// The result for one target, as reported in the envelope's `external` list.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// Target name.
    pub name: String,
    /// Where it is (`~`-relative directory or `rclone:REMOTE:PATH`).
    pub location: String,
    /// `directory` or `rclone`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `synced`, `unreachable`, `failed` or `skipped`.
    pub status: &'static str,
    /// Attempts made (0 when skipped).
    pub attempts: u32,
    /// Objects copied per kind.
    pub copied: Copied,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Snapshots not copied yet because their data was incomplete.
    pub held_back: Vec<Held>,
    /// Failed attempts (code, message, delay before the next).
    pub failures: Vec<Attempt>,
    /// The final error, when not synced.
    pub error: Option<ErrorReport>,
    /// Objects found damaged on the copy and copied again (reported as warnings).
    #[serde(skip)]
    pub repaired: Vec<String>,
}

impl TargetResult {
    fn new(target: &ExternalTarget, status: &'static str) -> TargetResult {
        TargetResult {
            name: target.name.clone(),
            location: target.location.shown(),
            kind: match target.location {
                TargetLocation::Dir(_) => "directory",
                TargetLocation::Rclone(_) => "rclone",
            },
            status,
            attempts: 0,
            copied: Copied::default(),
            bytes_copied: 0,
            held_back: Vec::new(),
            failures: Vec::new(),
            error: None,
            repaired: Vec::new(),
        }
    }
}

/// Codes that mean "not there right now" rather than "broken".
pub(crate) fn unreachable_code(code: &str) -> bool {
    matches!(
        code,
        "external_unreachable"
            | "rclone_timeout"
            | "rclone_temporary"
            | "rclone_missing"
            | "lock_busy"
    )
}

/// A directory target, reachable and holding a repository copy (or
/// nothing yet): what a sync and an external prune both open first.
pub(crate) fn open_dir_target(root: &Path, name: &str) -> Result<DirStore> {
    let dir = DirStore::new(root);
    dir.probe(name)?;
    check_dir_target(&dir)?;
    Ok(dir)
}

/// Refuse a directory that holds something else than a repository copy.
fn check_dir_target(store: &DirStore) -> Result<()> {
    let root = store.root();
    if root.join(layout::CONFIG).exists() {
        return Ok(());
    }
    let listing = std::fs::read_dir(root).ctx("listing", root)?;
    for entry in listing.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = matches!(
            name.as_ref(),
            layout::LOCK
                | layout::KEYS
                | layout::PACKS
                | layout::INDEX
                | layout::TREES
                | layout::SNAPSHOTS
        ) || name.starts_with(crate::atomic::TEMP_PREFIX);
        if !ours {
            return Err(Error::new(
                ExitCode::Usage,
                "external_not_a_repository",
                format!(
                    "external target {} is not empty and holds no repository copy (found {name})",
                    display_path(root)
                ),
            )
            .with_path(root)
            .with_hint("point the target at an empty directory (e.g. a new dotfiles-backups folder on the drive)"));
        }
    }
    Ok(())
}

/// Create the directories a repository reader expects (an empty copy is still a repository).
pub(crate) fn ensure_layout(root: &Path) -> Result<()> {
    for sub in [
        layout::PACKS,
        layout::INDEX,
        layout::TREES,
        layout::SNAPSHOTS,
    ] {
        let p = root.join(sub);
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("creating directory", &p, &e)),
        }
    }
    Ok(())
}

/// One attempt at syncing the local repository to `target`.
fn sync_once(
    settings: &Settings,
    target: &ExternalTarget,
    command: &str,
) -> Result<TransferReport> {
    let local = DirStore::new(&settings.repo);
    match &target.location {
        TargetLocation::Dir(root) => {
            let dir = open_dir_target(root, &target.name)?;
            let _lock =
                crate::repo::lock::acquire(&root.join(layout::LOCK), command, settings.lock_wait)?;
            dir.remove_stale_temps()?;
            // Before config.json, so that a copy is a readable (empty) repository from the start.
            ensure_layout(root)?;
            transfer(&local, &dir).map_err(|e| {
                // The drive was unplugged (or the mount dropped) in the middle:
                // that is "unreachable", and worth another attempt.
                match dir.probe(&target.name) {
                    Err(gone) if gone.code == "external_unreachable" => gone,
                    _ => e,
                }
            })
        }
        TargetLocation::Rclone(_) => {
            let _lock = rclone_lock(settings, target, command)?;
            transfer(&local, open_target(target, settings)?.as_ref())
        }
    }
}

/// The lock that keeps this machine's syncs to an rclone target and its
/// external prune apart (rclone has no locks; a prune deleting a pack while
/// a sync copies a snapshot record that needs it would break the copy): the
/// lock of the target's cache copy, `<cache_dir>/<NAME>/lock`. Without a
/// usable cache directory a sync goes on unlocked, as before (a prune needs one).
pub(crate) fn rclone_lock(
    settings: &Settings,
    target: &ExternalTarget,
    command: &str,
) -> Result<Option<crate::repo::lock::LockGuard>> {
    let Some(base) = &settings.external.cache_dir else {
        return Ok(None);
    };
    let dir = base.join(&target.name);
    if make_private_dir(&dir).is_err() {
        return Ok(None);
    }
    crate::repo::lock::acquire(&dir.join("lock"), command, settings.lock_wait).map(Some)
}

/// Sync the local repository to one target, with retries.
pub fn sync_target(settings: &Settings, target: &ExternalTarget, command: &str) -> TargetResult {
    let what = format!("sync to {}", target.name);
    let outcome = retry(&settings.retry, &what, |_| {
        sync_once(settings, target, command)
    });
    let mut result = TargetResult::new(target, "synced");
    result.attempts = outcome.attempts;
    result.failures = outcome.failures;
    match outcome.result {
        Ok(report) => {
            result.copied = report.copied;
            result.bytes_copied = report.bytes;
            result.held_back = report.held_back;
            result.repaired = report.repaired;
        }
        Err(e) => {
            result.status = if unreachable_code(e.code) {
                "unreachable"
            } else {
                "failed"
            };
            result.error = Some((&e).into());
        }
    }
    result
}

fn put_results(env: &mut Envelope, results: &[TargetResult]) {
    for r in results {
        for rel in &r.repaired {
            env.warnings.push(Warning::new(
                "external_repaired",
                format!(
                    "{rel} on {} had the wrong size (damaged on the copy); it was copied again",
                    r.location
                ),
            ));
        }
    }
    let synced = results.iter().filter(|r| r.status == "synced").count() as u64;
    env.stat("external_targets", results.len() as u64);
    env.stat("external_synced", synced);
    env.stat(
        "external_objects_copied",
        results.iter().map(|r| r.copied.total()).sum::<u64>(),
    );
    env.stat(
        "external_bytes_copied",
        results.iter().map(|r| r.bytes_copied).sum::<u64>(),
    );
    env.stat(
        "external_attempts",
        results.iter().map(|r| u64::from(r.attempts)).sum::<u64>(),
    );
    env.put("external", results);
}

const CATCH_UP: &str =
    "run `backup-create --sync-external` when it is available to copy everything it missed";

fn warn_not_synced(env: &mut Envelope, r: &TargetResult) {
    let Some(e) = &r.error else { return };
    let code = if r.status == "unreachable" {
        "external_unreachable"
    } else {
        "external_sync_failed"
    };
    env.warnings.push(Warning::new(
        code,
        format!(
            "{} (gave up after {} attempt(s)); the snapshot is committed locally; {CATCH_UP}",
            e.message, r.attempts
        ),
    ));
    for h in &r.held_back {
        env.warnings.push(Warning::new(
            "external_held_back",
            format!(
                "snapshot {} was not copied to {}: {}",
                &h.id[..8],
                r.name,
                h.reason
            ),
        ));
    }
}

/// After a checkpoint or backup: sync to every configured target when that
/// is allowed, and report the degradation. Never fails the checkpoint.
pub fn after_write(settings: &Settings, env: &mut Envelope) {
    let targets = &settings.external.targets;
    if targets.is_empty() || env.dry_run || env.status == Status::Failed {
        return;
    }
    let why_skip = if settings.local_only {
        Some("BACKUP_LOCAL_ONLY (or general.local_only) is set")
    } else if !settings.external.auto_sync {
        Some("external.auto_sync is off")
    } else {
        None
    };
    if let Some(why) = why_skip {
        let results: Vec<TargetResult> = targets
            .iter()
            .map(|t| TargetResult::new(t, "skipped"))
            .collect();
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        env.degradation = Degradation::LocalOnly;
        env.warnings.push(Warning::new(
            "external_skipped",
            format!(
                "{why}: external target(s) {} not synced; the snapshot is committed locally; {CATCH_UP}",
                names.join(", ")
            ),
        ));
        put_results(env, &results);
        return;
    }
    let command = env.command.clone();
    let results: Vec<TargetResult> = targets
        .iter()
        .map(|t| sync_target(settings, t, &command))
        .collect();
    for r in &results {
        if r.status != "synced" {
            env.degradation = Degradation::LocalOnly;
            warn_not_synced(env, r);
        } else {
            if !r.held_back.is_empty() {
                // Some snapshot (maybe this one) is not on the copy yet.
                env.degradation = Degradation::LocalOnly;
            }
            for h in &r.held_back {
                env.warnings.push(Warning::new(
                    "external_held_back",
                    format!(
                        "snapshot {} was not copied to {}: {}; the next sync tries again",
                        &h.id[..8],
                        r.name,
                        h.reason
                    ),
                ));
            }
        }
    }
    put_results(env, &results);
}

/// The targets a command names: all, or the one called `name`.
pub(crate) fn chosen<'a>(
    settings: &'a Settings,
    name: Option<&str>,
    flag: &str,
) -> Result<Vec<&'a ExternalTarget>> {
    let targets = &settings.external.targets;
    if targets.is_empty() {
        return Err(Error::usage(
            "no_external_target",
            "no external target is configured",
        )
        .with_hint("add one under [external.targets] in the config (e.g. drive = \"/Volumes/Backup/dotfiles-backups\") or set BACKUP_EXTERNAL; see docs/config.md"));
    }
    match name {
        None => Ok(targets.iter().collect()),
        Some(n) => targets
            .iter()
            .find(|t| t.name == n)
            .map(|t| vec![t])
            .ok_or_else(|| {
                let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                Error::usage(
                    "unknown_external_target",
                    format!(
                        "no external target is called {n:?}; configured: {}",
                        names.join(", ")
                    ),
                )
                .with_hint(format!("use {flag}=NAME with one of the configured names"))
            }),
    }
}

/// One target for a read: the named one, or the only one.
fn single<'a>(
    settings: &'a Settings,
    name: Option<&str>,
    flag: &str,
) -> Result<&'a ExternalTarget> {
    let list = chosen(settings, name, flag)?;
    if list.len() > 1 {
        let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
        return Err(Error::usage(
            "ambiguous_external_target",
            format!(
                "several external targets are configured ({}); name one",
                names.join(", ")
            ),
        )
        .with_hint(format!("use {flag}=NAME")));
    }
    Ok(list[0])
}

/// `backup-create --sync-external[=NAME]`: copy what the targets lack.
pub fn sync_command(settings: &Settings, name: Option<&str>, env: &mut Envelope) -> Result<()> {
    let targets = chosen(settings, name, "--sync-external")?;
    if settings.local_only {
        env.degradation = Degradation::LocalOnly;
        env.skip("local_only");
        env.warnings.push(Warning::new(
            "external_skipped",
            "BACKUP_LOCAL_ONLY (or general.local_only) is set: nothing was synced; unset it to sync",
        ));
        let results: Vec<TargetResult> = targets
            .iter()
            .map(|t| TargetResult::new(t, "skipped"))
            .collect();
        put_results(env, &results);
        return Ok(());
    }
    Repository::open(&settings.repo)?;
    let command = env.command.clone();
    let results: Vec<TargetResult> = targets
        .iter()
        .map(|t| sync_target(settings, t, &command))
        .collect();
    put_results(env, &results);
    env.changed = results.iter().any(|r| r.copied.total() > 0);
    let failed: Vec<&TargetResult> = results.iter().filter(|r| r.status != "synced").collect();
    for r in &results {
        for h in &r.held_back {
            env.warnings.push(Warning::new(
                "external_held_back",
                format!(
                    "snapshot {} was not copied to {}: {}; the next sync tries again",
                    &h.id[..8],
                    r.name,
                    h.reason
                ),
            ));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    env.degradation = Degradation::LocalOnly;
    for r in &failed {
        if let Some(e) = &r.error {
            env.errors.push(e.clone());
        }
    }
    if failed.len() == results.len() {
        env.status = Status::Failed;
        let worst = failed
            .iter()
            .filter_map(|r| r.error.as_ref())
            .map(|e| exit_for(&e.code))
            .next()
            .unwrap_or(ExitCode::Failed);
        env.set_exit(worst);
    } else {
        env.status = Status::Partial;
        env.set_exit(ExitCode::Partial);
    }
    Ok(())
}

pub(crate) fn exit_for(code: &str) -> ExitCode {
    match code {
        "external_copy_mismatch" | "corrupt_config" | "corrupt_index" | "unsupported_format" => {
            ExitCode::Corrupt
        }
        "external_repository_mismatch" => ExitCode::Refused,
        "external_not_a_repository" | "external_not_a_directory" => ExitCode::Usage,
        "lock_busy" => ExitCode::LockBusy,
        "no_space" => ExitCode::NoSpace,
        _ => ExitCode::Failed,
    }
}

pub(crate) fn make_private_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .ctx("creating directory", path)
}

/// Pull `target` into the local directory `dest` (created when missing), with retries.
fn pull(
    settings: &Settings,
    target: &ExternalTarget,
    dest: &Path,
    command: &str,
    env: &mut Envelope,
) -> Result<TransferReport> {
    let what = format!("fetch from {}", target.name);
    let outcome = retry(&settings.retry, &what, |_| {
        let store = open_target(target, settings)?;
        if let TargetLocation::Dir(root) = &target.location {
            DirStore::new(root).probe(&target.name)?;
        }
        make_private_dir(dest)?;
        let _lock =
            crate::repo::lock::acquire(&dest.join(layout::LOCK), command, settings.lock_wait)?;
        ensure_layout(dest)?;
        transfer(store.as_ref(), &DirStore::new(dest))
    });
    let mut result = TargetResult::new(target, "synced");
    result.attempts = outcome.attempts;
    result.failures = outcome.failures;
    let out = match outcome.result {
        Ok(report) => {
            result.copied = report.copied.clone();
            result.bytes_copied = report.bytes;
            result.held_back = report.held_back.clone();
            result.repaired = report.repaired.clone();
            Ok(report)
        }
        Err(mut e) => {
            if e.code == "external_repository_mismatch" {
                e.hint = Some(format!(
                    "{} holds another repository; fetch into a new location with --repo NEW_PATH (or BACKUP_REPO)",
                    display_path(dest)
                ));
            }
            result.status = if unreachable_code(e.code) {
                "unreachable"
            } else {
                "failed"
            };
            result.error = Some((&e).into());
            env.degradation = Degradation::LocalOnly;
            Err(e)
        }
    };
    put_results(env, &[result]);
    out
}

/// Where a reading command finds an external copy: the directory itself, or
/// (rclone) a local copy fetched into the cache. `fresh` fetches into a new
/// directory (verify checks the remote, not an old cache) that the returned
/// guard removes.
pub fn external_repo(
    settings: &Settings,
    name: Option<&str>,
    fresh: bool,
    env: &mut Envelope,
) -> Result<(Settings, Option<ScratchDir>)> {
    let target = single(settings, name, "--external")?.clone();
    let mut read = settings.clone();
    env.repository = Some(target.location.shown());
    match &target.location {
        TargetLocation::Dir(root) => {
            let outcome = retry(&settings.retry, &format!("reach {}", target.name), |_| {
                DirStore::new(root).probe(&target.name)
            });
            let mut result = TargetResult::new(&target, "synced");
            result.attempts = outcome.attempts;
            result.failures = outcome.failures;
            if let Err(e) = outcome.result {
                result.status = "unreachable";
                result.error = Some((&e).into());
                env.degradation = Degradation::LocalOnly;
                env.put("external", vec![result]);
                return Err(e);
            }
            env.put("external", vec![result]);
            read.repo = root.clone();
            Ok((read, None))
        }
        TargetLocation::Rclone(_) => {
            let base = settings.external.cache_dir.clone().ok_or_else(|| {
                Error::usage(
                    "home_not_set",
                    "no cache directory for rclone targets: $HOME is not set",
                )
                .with_hint("set external.cache_dir in the config")
            })?;
            let (dest, guard) = if fresh {
                let d = base.join(format!(
                    "{}.{}.{}",
                    crate::atomic::TEMP_PREFIX,
                    std::process::id(),
                    target.name
                ));
                (d.clone(), Some(ScratchDir(d)))
            } else {
                (base.join(&target.name), None)
            };
            let command = env.command.clone();
            match pull(settings, &target, &dest, &command, env) {
                Ok(_) => {}
                // The remote was started afresh (another repository): the old
                // cache is worthless, fetch again from scratch.
                Err(e) if e.code == "external_repository_mismatch" && !fresh => {
                    std::fs::remove_dir_all(&dest).ctx("removing the stale cache", &dest)?;
                    pull(settings, &target, &dest, &command, env)?;
                }
                Err(e) => return Err(e),
            }
            read.repo = dest;
            Ok((read, guard))
        }
    }
}

/// A fetched copy removed when dropped.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `backup-restore --from-external[=NAME]`: bring the external copy's objects
/// into the local repository (creating it with the copy's id when it is
/// missing), so the restore that follows, its safety snapshot and later
/// checkpoints all work on a whole local repository again.
pub fn pull_into_local(settings: &Settings, name: Option<&str>, env: &mut Envelope) -> Result<()> {
    let target = single(settings, name, "--from-external")?.clone();
    let local = &settings.repo;
    if local.exists() && !Repository::exists(local) {
        let mut entries = std::fs::read_dir(local).ctx("listing", local)?;
        if entries.next().is_some() {
            return Err(Error::new(
                ExitCode::Usage,
                "not_a_repository",
                format!(
                    "{} exists, is not empty, and is not a backup repository; the external copy was not fetched into it",
                    display_path(local)
                ),
            )
            .with_path(local)
            .with_hint("point --repo (or BACKUP_REPO) at an empty or new directory"));
        }
    }
    let command = env.command.clone();
    pull(settings, &target, local, &command, env)?;
    // Creates the remaining directories (cache, logs) of a usable repository.
    Repository::open_or_create(local)?;
    Ok(())
}

/// `backup-restore --from-external[=NAME]`: where the restore reads from.
/// A dry run plans straight from the external copy and writes nothing
/// locally (the settings returned point at it); a real restore first pulls
/// the copy into the local repository ([`pull_into_local`]) and reads there
/// (`None`: keep `settings`). Without the option, `None` and nothing happens.
pub fn restore_source(
    settings: &Settings,
    from_external: Option<&TargetChoice>,
    dry_run: bool,
    env: &mut Envelope,
) -> Result<Option<Settings>> {
    let Some(choice) = from_external else {
        return Ok(None);
    };
    if dry_run {
        Ok(Some(external_repo(settings, choice.name(), false, env)?.0))
    } else {
        pull_into_local(settings, choice.name(), env)?;
        Ok(None)
    }
}

/// Human summary of a checkpoint or backup, plus one line per external target.
pub fn snapshot_taken_and_synced(env: &Envelope, settings: &Settings) -> String {
    let mut out = crate::human::snapshot_taken(env, settings);
    let Some(serde_json::Value::Array(results)) = env.extra.get("external") else {
        return out;
    };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for r in results {
        let get = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let objects = r
            .get("copied")
            .and_then(|c| c.as_object())
            .map(|c| c.values().filter_map(|v| v.as_u64()).sum::<u64>())
            .unwrap_or(0);
        let line = match get("status") {
            "synced" => format!("{objects} object(s) copied"),
            "skipped" => "skipped (local only)".to_string(),
            other => format!("{other}; run `backup-create --sync-external` later"),
        };
        out.push_str(&format!("  external {}: {line}\n", get("name")));
    }
    out
}

/// Human summary of `backup-create --sync-external`.
pub fn human(env: &Envelope, _settings: &Settings) -> String {
    let mut out = String::new();
    let Some(serde_json::Value::Array(results)) = env.extra.get("external") else {
        return out;
    };
    for r in results {
        let get = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let copied = r
            .get("copied")
            .and_then(|c| c.as_object())
            .map(|c| c.values().filter_map(|v| v.as_u64()).sum::<u64>())
            .unwrap_or(0);
        let bytes = r.get("bytes_copied").and_then(|v| v.as_u64()).unwrap_or(0);
        let attempts = r.get("attempts").and_then(|v| v.as_u64()).unwrap_or(0);
        out.push_str(&format!(
            "{} ({}): {}, {copied} object(s), {} copied{}\n",
            get("name"),
            get("location"),
            get("status"),
            crate::units::human_bytes(bytes),
            if attempts > 1 {
                format!(", {attempts} attempts")
            } else {
                String::new()
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use crate::ops::backup::{run_backup, BackupOptions};
    use crate::repo::snapshot::SnapshotKind;

    /// A source that lists what `inner` has, minus `hide`, plus `ghosts`
    /// (objects pruned after the listing: listed but gone).
    struct Skewed {
        inner: DirStore,
        hide: Vec<String>,
        ghosts: Vec<(String, u64)>,
    }

    impl Store for Skewed {
        fn shown(&self) -> String {
            self.inner.shown()
        }
        fn list(&self) -> Result<crate::external::Listing> {
            let mut l = self.inner.list()?;
            l.retain(|k, _| !self.hide.contains(k));
            l.extend(self.ghosts.iter().cloned());
            Ok(l)
        }
        fn read(&self, rel: &str) -> Result<Vec<u8>> {
            self.inner.read(rel)
        }
        fn local_path(&self, rel: &str) -> Option<PathBuf> {
            self.inner.local_path(rel)
        }
        fn put(&self, rel: &str, src: &dyn Store, want: &Want) -> Result<u64> {
            self.inner.put(rel, src, want)
        }
        fn flush(&self, dir: &str) -> Result<()> {
            self.inner.flush(dir)
        }
        fn remove(&self, rel: &str) -> Result<()> {
            self.inner.remove(rel)
        }
    }

    fn repo_with_snapshot(tmp: &Path) -> PathBuf {
        let home = tmp.join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join(".zshrc"), b"export A=1\n").unwrap();
        let repo = tmp.join("repo");
        let home_s = home.to_string_lossy().into_owned();
        let env = move |k: &str| (k == "HOME").then(|| home_s.clone());
        let over = Overrides {
            repo: Some(repo.clone()),
            paths: vec![home.join(".zshrc")],
            ..Default::default()
        };
        let settings = Settings::resolve(&over, &env).unwrap();
        let opts = BackupOptions {
            kind: SnapshotKind::Checkpoint,
            label: "one".into(),
            tags: vec![],
            dry_run: false,
            command: "test".into(),
            space: None,
            run: None,
            verify_after_write: true,
        };
        run_backup(&settings, &opts).unwrap();
        repo
    }

    fn problems(root: &Path) -> usize {
        let repo = Repository::open(root).unwrap();
        crate::ops::verify::verify(&repo, true)
            .unwrap()
            .problems
            .len()
    }

    #[test]
    fn objects_pruned_after_the_listing_are_skipped_and_the_copy_stays_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = repo_with_snapshot(tmp.path());
        let dst = tmp.path().join("copy");
        std::fs::create_dir(&dst).unwrap();
        let ghost = format!("snapshots/{}.json", "ab".repeat(32));
        let src = Skewed {
            inner: DirStore::new(&repo),
            hide: vec![],
            ghosts: vec![(format!("packs/{}", "cd".repeat(32)), 10), (ghost, 10)],
        };
        let report = transfer(&src, &DirStore::new(&dst)).unwrap();
        assert_eq!(report.copied.snapshots, 1);
        assert_eq!(report.copied.packs, 1);
        assert!(report.held_back.is_empty());
        assert_eq!(problems(&dst), 0);
    }

    #[test]
    fn an_object_damaged_on_the_copy_is_copied_again() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = repo_with_snapshot(tmp.path());
        let dst = tmp.path().join("copy");
        std::fs::create_dir(&dst).unwrap();
        transfer(&DirStore::new(&repo), &DirStore::new(&dst)).unwrap();
        let pack = DirStore::new(&dst)
            .list()
            .unwrap()
            .into_keys()
            .find(|k| k.starts_with("packs/"))
            .unwrap();
        let path = dst.join(&pack);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(problems(&dst), 1, "truncated on the copy");
        let report = transfer(&DirStore::new(&repo), &DirStore::new(&dst)).unwrap();
        assert_eq!(report.repaired, vec![pack]);
        assert_eq!(report.copied.packs, 1);
        assert_eq!(problems(&dst), 0);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_snapshot_whose_pack_is_not_on_the_copy_is_held_back() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = repo_with_snapshot(tmp.path());
        let dst = tmp.path().join("copy");
        std::fs::create_dir(&dst).unwrap();
        let packs: Vec<String> = DirStore::new(&repo)
            .list()
            .unwrap()
            .into_keys()
            .filter(|k| k.starts_with("packs/"))
            .collect();
        let src = Skewed {
            inner: DirStore::new(&repo),
            hide: packs,
            ghosts: vec![],
        };
        let report = transfer(&src, &DirStore::new(&dst)).unwrap();
        assert_eq!(report.copied.snapshots, 0);
        assert_eq!(report.held_back.len(), 1);
        assert!(
            report.held_back[0]
                .reason
                .contains("not in the copied index"),
            "{:?}",
            report.held_back
        );
        assert_eq!(problems(&dst), 0, "the copy refers to nothing it lacks");
        // The next sync (the pack listed again) completes it.
        let report = transfer(&DirStore::new(&repo), &DirStore::new(&dst)).unwrap();
        assert_eq!(
            report.copied.index_files, 1,
            "the index waited for its pack"
        );
        assert_eq!((report.copied.packs, report.copied.snapshots), (1, 1));
        assert_eq!(problems(&dst), 0);
        assert_eq!(
            Repository::open(&dst).unwrap().snapshots().unwrap().len(),
            1
        );
    }
}
