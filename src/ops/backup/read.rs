//! The reader pipeline of a snapshot: which files must be read (the files
//! cache keeps the hash of the others), reading them on all cores (small
//! files in batches) or streamed (large ones), hashing, credential
//! detection, packing new content, and sealing the secret class.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::{BackupOptions, BackupStats};
use crate::atomic::Dir;
use crate::error::{Error, IoContext, Result};
use crate::exit::ExitCode;
use crate::hash::Hash;
use crate::paths::ByteName;
use crate::repo::cache::FilesCache;
use crate::repo::cache::StatKey;
use crate::repo::index::Index;
use crate::repo::layout;
use crate::repo::pack::FinishedPack;
use crate::repo::pack::{PackWriter, FLAG_AGE, FLAG_PLAIN};
use crate::repo::snapshot::{EntryType, Sealed};
use crate::repo::Repository;
use crate::report::Warning;
use crate::scan::beneath::{open_scanned, RootDir};
use crate::scan::DataClass;
use crate::scan::{self, Rules, ScanItem};
use crate::secrets::{detect, SealUnavailable, Sealer};
use std::time::Instant;

/// Files up to this size are read whole into memory on a worker thread.
pub(super) const SMALL_FILE_MAX: u64 = 4 << 20;
/// How often a file that keeps changing under us is re-read.
pub(super) const READ_ATTEMPTS: usize = 3;
/// Small files read by one worker task, sent to the packer in batches of at
/// most this many files ...
pub(super) const SMALL_BATCH_FILES: usize = 64;
/// ... or this many bytes, whichever comes first.
pub(super) const SMALL_BATCH_BYTES: usize = 256 << 10;
/// Batches waiting for the packer: bounds the memory of a first snapshot.
pub(super) const SMALL_BATCHES_IN_FLIGHT: usize = 4;

/// Why a file's attributes could not be read, for the `xattrs_unreadable`
/// warning. E2BIG is Linux's `listxattr` limit (XATTR_LIST_MAX, 64 KiB of
/// names): no buffer size gets past it, so those attributes cannot be
/// recorded here at all, and rollback keeps such a file as it is.
fn xattr_error_text(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(rustix::io::Errno::TOOBIG.raw_os_error()) {
        return "its attribute names exceed the 64 KiB that Linux's listxattr can return; a rollback will not replace or remove it".into();
    }
    e.to_string()
}

/// Read the extended attributes of every directory and of every file the
/// files cache did not vouch for (`hashes` set by a cache hit), on all cores.
///
/// Why not for cache hits: the cache keeps only files that had no
/// attributes, and setting or removing one changes the ctime the cache
/// entry is keyed by, so a hit means "still none". A no-change checkpoint
/// then makes no `listxattr` call per file, which would cost about as much
/// as the `lstat` that is its floor (docs/performance.md).
pub(super) fn read_xattrs(roots: &mut [scan::ScannedRoot], hashes: &[Vec<Option<Hash>>]) {
    for (root, cached) in roots.iter_mut().zip(hashes) {
        root.items
            .par_iter_mut()
            .zip(cached.par_iter())
            .filter(|(item, hit)| match item.kind {
                EntryType::Symlink => false,
                EntryType::File => hit.is_none(),
                EntryType::Dir => true,
            })
            .for_each(|(item, _)| match crate::sys::read_xattrs(&item.abs) {
                Ok(list) => {
                    item.xattrs = list
                        .into_iter()
                        .map(|(name, value)| crate::repo::snapshot::Xattr {
                            name: ByteName(name),
                            value: ByteName(value),
                        })
                        .collect();
                }
                Err(e) => item.xattr_error = Some(xattr_error_text(&e)),
            });
    }
}

#[derive(Clone, Copy)]
pub(super) struct FileWork {
    pub(super) root: usize,
    pub(super) item: usize,
}

pub(super) fn secret_skipped(item: &ScanItem, why: &SealUnavailable) -> Warning {
    Warning::at(
        "secret_skipped",
        scan::shown(item),
        format!(
            "{} is in the secret class and was not stored: {}",
            scan::shown(item),
            why.0
        ),
    )
}

pub(super) fn stat_key(item: &ScanItem) -> StatKey {
    StatKey {
        size: item.size,
        mtime_ns: item.mtime_ns,
        ctime_ns: item.ctime_ns,
        ino: item.ino,
        dev: item.dev,
    }
}

pub(super) fn fstat_key(meta: &std::fs::Metadata) -> StatKey {
    StatKey {
        size: meta.len(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        ino: meta.ino(),
        dev: meta.dev(),
    }
}

pub(super) fn changed_error(path: &Path) -> Error {
    Error::new(
        ExitCode::Partial,
        "file_changed",
        format!(
            "{} kept changing while it was read ({READ_ATTEMPTS} attempts); it was not stored",
            crate::paths::display_path(path)
        ),
    )
    .with_path(path)
    .with_hint("run the checkpoint again when the program writing it is done")
    .retryable(true)
}

/// Read a small file whole, consistently: the fstat before and after must
/// agree. Opened beneath its root, and only if it is still the scanned inode
/// (`scan::beneath`).
pub(super) fn read_small(root: &RootDir, item: &ScanItem) -> Result<(Hash, Vec<u8>, StatKey)> {
    let path = item.abs.as_path();
    for _ in 0..READ_ATTEMPTS {
        let (mut f, meta) = open_scanned(root, item)?;
        let before = fstat_key(&meta);
        let mut data = Vec::with_capacity(before.size as usize);
        // `take` keeps std from re-statting and seeking for a size hint we already
        // have (two syscalls per file); one byte more than expected reveals growth.
        (&mut f)
            .take(before.size + 1)
            .read_to_end(&mut data)
            .ctx("reading", path)?;
        let after = fstat_key(&f.metadata().ctx("inspecting", path)?);
        if before == after && data.len() as u64 == after.size {
            return Ok((Hash::of(&data), data, after));
        }
    }
    Err(changed_error(path))
}

/// What [`read_and_pack`] did with each work item, and the files whose
/// content matched a detection rule (read, not packed).
pub(super) type ReadOutcome<'w> = (
    Vec<(&'w FileWork, Result<Hash>)>,
    Vec<(FileWork, &'static str)>,
);

/// A small file's content, hash and stat facts, and the rule its content matched, if any.
pub(super) type ReadResult = (Hash, Vec<u8>, StatKey, Option<&'static str>);

/// [`read_small`], then the content check (`secrets::detect`) on the worker,
/// before the bytes can reach a plain-text pack.
pub(super) fn read_and_detect(root: &RootDir, item: &ScanItem) -> Result<ReadResult> {
    let (hash, data, key) = read_small(root, item)?;
    // The base name of the path itself: a root that is a file (`~/.bashrc`)
    // has an empty `rel`, and the name decides whether the assignment rule runs.
    let name = item
        .abs
        .file_name()
        .map_or(&b""[..], std::os::unix::ffi::OsStrExt::as_bytes);
    let rule = detect::detect(name, &data);
    Ok((hash, data, key, rule))
}

/// Read every file in `work`; small ones in parallel, large ones streamed.
/// Returns each work item's outcome; updates items' stat facts to what was
/// read. A small file whose content looks like a credential is not packed
/// but listed in `detected` with the rule, unless `rules` mark it public.
pub(super) fn read_and_pack<'w>(
    roots: &mut [scan::ScannedRoot],
    work: &'w [FileWork],
    rules: &Rules,
    index: &Index,
    seen: &mut HashSet<Hash>,
    mut writer: Option<&mut PackWriter<'_>>,
    stats: &mut BackupStats,
) -> Result<ReadOutcome<'w>> {
    let mut detected = Vec::new();
    let dirs: Vec<RootDir> = roots
        .iter()
        .map(|r| RootDir::open(r, rules.home()))
        .collect();
    let (small, large): (Vec<&FileWork>, Vec<&FileWork>) = work
        .iter()
        .partition(|w| roots[w.root].items[w.item].size <= SMALL_FILE_MAX);
    let mut results: Vec<(&FileWork, Result<Hash>)> = Vec::with_capacity(work.len());
    let abort = AtomicBool::new(false);
    let paths: Vec<(&RootDir, &ScanItem)> = small
        .iter()
        .map(|w| (&dirs[w.root], &roots[w.root].items[w.item]))
        .collect();
    let mut fresh: Vec<(usize, StatKey)> = Vec::new();
    let mut fatal: Option<Error> = None;
    std::thread::scope(|s| {
        // Results travel in batches (about 256 KiB or 64 files each): one
        // channel hand-off per file cost ~54k futex calls at 20k files.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(usize, Result<ReadResult>)>>(
            SMALL_BATCHES_IN_FLIGHT,
        );
        let abort = &abort;
        let paths = &paths;
        s.spawn(move || {
            (0..paths.len())
                .into_par_iter()
                .chunks(SMALL_BATCH_FILES)
                .for_each_with(tx, |tx, chunk| {
                    let mut batch = Vec::with_capacity(chunk.len());
                    let mut bytes = 0;
                    for i in chunk {
                        if abort.load(Ordering::Relaxed) {
                            return;
                        }
                        let res = read_and_detect(paths[i].0, paths[i].1);
                        bytes += res.as_ref().map_or(0, |r| r.1.len());
                        batch.push((i, res));
                        if bytes >= SMALL_BATCH_BYTES {
                            if tx.send(std::mem::take(&mut batch)).is_err() {
                                return;
                            }
                            bytes = 0;
                        }
                    }
                    if !batch.is_empty() {
                        let _ = tx.send(batch);
                    }
                });
        });
        for (i, res) in rx.into_iter().flatten() {
            let w = small[i];
            match res {
                Ok((_, _, _, Some(rule))) if !rules.marked_public(&paths[i].1.abs) => {
                    detected.push((*w, rule));
                }
                Ok((hash, data, key, _)) => {
                    stats.files_read += 1;
                    stats.bytes_read += data.len() as u64;
                    crate::progress::advance(1, data.len() as u64);
                    if !index.contains(&hash) && seen.insert(hash) {
                        stats.new_blobs += 1;
                        stats.new_bytes += data.len() as u64;
                        if let Some(wr) = writer.as_deref_mut() {
                            if let Err(e) = wr.add(hash, FLAG_PLAIN, &data) {
                                abort.store(true, Ordering::Relaxed);
                                fatal = Some(e);
                                break;
                            }
                        }
                    }
                    fresh.push((results.len(), key));
                    results.push((w, Ok(hash)));
                }
                Err(e) => results.push((w, Err(e))),
            }
        }
        abort.store(true, Ordering::Relaxed);
    });
    if let Some(e) = fatal {
        return Err(e);
    }
    for (pos, key) in fresh {
        let w = results[pos].0;
        apply_key(&mut roots[w.root].items[w.item], key);
    }
    for w in large {
        let item = &roots[w.root].items[w.item];
        match read_large(
            &dirs[w.root],
            item,
            index,
            seen,
            writer.as_deref_mut(),
            stats,
        )? {
            Ok((hash, key)) => {
                apply_key(&mut roots[w.root].items[w.item], key);
                results.push((w, Ok(hash)));
            }
            Err(e) => results.push((w, Err(e))),
        }
    }
    Ok((results, detected))
}

/// Read, encrypt and pack secret-class files (few and small: sequential, never
/// cached, so a changed recipient set can never pair a path with a stale id).
/// Outer error: the pack failed; inner: this file could not be read.
// Eight plain inputs of one call site; a struct for them would only be unpacked here.
#[allow(clippy::too_many_arguments)]
pub(super) fn seal_secrets(
    repo: Option<&Repository>,
    index: &Index,
    sealer: &Sealer,
    roots: &mut [scan::ScannedRoot],
    rules: &Rules,
    work: &[FileWork],
    dry_run: bool,
    stats: &mut BackupStats,
) -> Result<(Vec<Result<Sealed>>, Vec<crate::repo::pack::FinishedPack>)> {
    let pack_dir = match (repo, dry_run) {
        (Some(r), false) => Some(Dir::open(&r.sub(layout::PACKS))?),
        _ => None,
    };
    let mut writer = pack_dir.as_ref().map(PackWriter::new);
    let mut seen: HashSet<Hash> = HashSet::new();
    let mut out = Vec::with_capacity(work.len());
    let dirs: Vec<RootDir> = roots
        .iter()
        .map(|r| RootDir::open(r, rules.home()))
        .collect();
    for w in work {
        let item = &mut roots[w.root].items[w.item];
        let (_, data, key) = match read_small(&dirs[w.root], item) {
            Ok(r) => r,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        apply_key(item, key);
        stats.files_read += 1;
        stats.bytes_read += data.len() as u64;
        stats.secrets_sealed += 1;
        let id = sealer.id(&data);
        if !index.contains(&id) && seen.insert(id) {
            let ciphertext = sealer.seal(&data)?;
            if let Some(wr) = writer.as_mut() {
                wr.add(id, FLAG_AGE, &ciphertext)?;
            }
            stats.new_blobs += 1;
            stats.new_bytes += ciphertext.len() as u64;
        }
        out.push(Ok(Sealed {
            id,
            key: sealer.key_name.clone(),
        }));
    }
    let packs = match writer {
        Some(w) => {
            stats.pack_bytes += w.bytes_written();
            w.finish()?
        }
        None => Vec::new(),
    };
    Ok((out, packs))
}

pub(super) fn apply_key(item: &mut ScanItem, key: StatKey) {
    item.size = key.size;
    item.mtime_ns = key.mtime_ns;
    item.ctime_ns = key.ctime_ns;
    item.ino = key.ino;
    item.dev = key.dev;
}

/// Stream a large file into the pack (or just hash it in a dry run).
/// Outer error: the pack failed (fatal); inner: this file could not be read.
pub(super) fn read_large(
    root: &RootDir,
    item: &ScanItem,
    index: &Index,
    seen: &mut HashSet<Hash>,
    writer: Option<&mut PackWriter<'_>>,
    stats: &mut BackupStats,
) -> Result<Result<(Hash, StatKey)>> {
    let mut writer = writer;
    let path = item.abs.as_path();
    for _ in 0..READ_ATTEMPTS {
        let (mut f, before) = match open_scanned(root, item) {
            Ok((f, m)) => (f, fstat_key(&m)),
            Err(e) => return Ok(Err(e)),
        };
        let stable = std::cell::Cell::new(true);
        let (hash, len) = match writer.as_deref_mut() {
            Some(w) => {
                let fref = &f;
                let keep = |h: &Hash| {
                    let ok = fref
                        .metadata()
                        .map(|m| fstat_key(&m) == before)
                        .unwrap_or(false);
                    stable.set(ok);
                    ok && !index.contains(h) && !seen.contains(h)
                };
                let mut reader: &File = &f;
                match w.add_stream(&mut reader, path, &keep)? {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e)),
                }
            }
            None => match hash_stream(&mut f, path) {
                Ok((h, len)) => {
                    let after = f.metadata().map(|m| fstat_key(&m)).ok();
                    stable.set(after == Some(before));
                    (h, len)
                }
                Err(e) => return Ok(Err(e)),
            },
        };
        if !stable.get() || len != before.size {
            continue;
        }
        stats.files_read += 1;
        stats.bytes_read += len;
        crate::progress::advance(1, len);
        if !index.contains(&hash) && seen.insert(hash) {
            stats.new_blobs += 1;
            stats.new_bytes += len;
        }
        return Ok(Ok((hash, before)));
    }
    Ok(Err(changed_error(path)))
}

/// Bytes of `work` whose content the repository does not hold yet, found
/// by hashing each file (read twice in this rare case: here and when it is
/// stored). A file that cannot be read here counts as new.
fn new_bytes_exactly(
    roots: &[scan::ScannedRoot],
    work: &[FileWork],
    index: &Index,
    rules: &Rules,
) -> u64 {
    let dirs: Vec<RootDir> = roots
        .iter()
        .map(|r| RootDir::open(r, rules.home()))
        .collect();
    work.par_iter()
        .map(|w| {
            let item = &roots[w.root].items[w.item];
            let known = open_scanned(&dirs[w.root], item)
                .and_then(|(mut f, _)| hash_stream(&mut f, &item.abs))
                .is_ok_and(|(h, _)| index.contains(&h));
            if known {
                0
            } else {
                item.size
            }
        })
        .sum()
}

/// SHA-256 of a whole stream.
pub fn hash_stream(f: &mut dyn Read, path: &Path) -> Result<(Hash, u64)> {
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading", path, &e)),
        };
        sha2::Digest::update(&mut hasher, &buf[..n]);
        len += n as u64;
    }
    Ok((Hash::from_hasher(hasher), len))
}

/// What the reader pipeline produced, per (root, item) of the scan.
pub(super) struct Contents {
    /// Content hash of each file (cached or read).
    pub(super) hashes: Vec<Vec<Option<Hash>>>,
    /// Why a file's content is not stored (`secret`, `unreadable`).
    pub(super) omitted: Vec<Vec<Option<&'static str>>>,
    /// The sealed (encrypted) form of each secret-class file.
    pub(super) sealed: Vec<Vec<Option<Sealed>>>,
    /// Packs written and not yet committed.
    pub(super) new_packs: Vec<FinishedPack>,
}

/// Where the pipeline reports: the run's counters, warnings and per-path errors.
pub(super) struct Tally<'a> {
    pub(super) stats: &'a mut BackupStats,
    pub(super) warnings: &'a mut Vec<Warning>,
    pub(super) errors: &'a mut Vec<Error>,
}

/// Decide per file (cached, omitted, or to be read), check free space and
/// quota before the first write, then read, hash and pack what is needed,
/// and seal the secret class (files found to hold a credential join it).
///
/// Over 100 lines on purpose: after [`decide_reads`], the read, the
/// detection and the sealing fill the same per-file tables in this order
/// (a detected credential moves a file from the plain packs to the sealed
/// ones); split further, the tables and the sealer would travel as six
/// arguments between the steps.
pub(super) fn read_contents(
    repo: Option<&Repository>,
    index: &Index,
    old_cache: &FilesCache,
    scanned_roots: &mut [scan::ScannedRoot],
    rules: &Rules,
    opts: &BackupOptions,
    mut tally: Tally<'_>,
) -> Result<Contents> {
    // Secret-class files are stored only encrypted; without recipients (or
    // the key) they are skipped, never stored in plain text.
    let has_secrets = scanned_roots.iter().any(|r| {
        r.items
            .iter()
            .any(|i| i.kind == EntryType::File && i.class == DataClass::Secret)
    });
    let mut sealer = if has_secrets {
        Some(Sealer::prepare(repo, &rules.secrets, opts.dry_run)?)
    } else {
        None
    };
    let t1 = Instant::now();
    let Decided {
        mut hashes,
        mut omitted,
        work,
        mut secret_work,
    } = decide_reads(scanned_roots, old_cache, sealer.as_ref(), &mut tally);
    read_xattrs(scanned_roots, &hashes);

    // Free space and quota, before anything is written.
    if let (Some(r), Some(space)) = (repo, &opts.space) {
        let upper: u64 = work
            .iter()
            .map(|w| scanned_roots[w.root].items[w.item].size)
            .sum();
        let checked = match crate::space::check_before_write(r, upper, space) {
            // The upper bound counts every file the files cache cannot vouch
            // for as new. Near a full disk that refuses runs that store next
            // to nothing (and the cache never settles), so learn what is new.
            Err(e) if e.code == "insufficient_space" || e.code == "quota_exceeded" => {
                let exact = new_bytes_exactly(scanned_roots, &work, index, rules);
                crate::space::check_before_write(r, exact, space)
            }
            other => other,
        };
        tally.warnings.extend(checked?);
    }

    // Read, hash and pack what is needed.
    crate::progress::stage(
        "reading",
        work.len() as u64,
        work.iter()
            .map(|w| scanned_roots[w.root].items[w.item].size)
            .sum(),
    );
    let mut new_packs = Vec::new();
    let mut pack_dir = None;
    let mut detected: Vec<(FileWork, &'static str)> = Vec::new();
    if !work.is_empty() {
        if let (Some(r), false) = (repo, opts.dry_run) {
            pack_dir = Some(Dir::open(&r.sub(layout::PACKS))?);
        }
        let mut writer = pack_dir.as_ref().map(PackWriter::new);
        let mut seen: HashSet<Hash> = HashSet::new();
        let outcome;
        (outcome, detected) = read_and_pack(
            scanned_roots,
            &work,
            rules,
            index,
            &mut seen,
            writer.as_mut(),
            tally.stats,
        )?;
        for (w, res) in outcome {
            match res {
                Ok(h) => hashes[w.root][w.item] = Some(h),
                Err(e) => {
                    omitted[w.root][w.item] = Some("unreadable");
                    tally.errors.push(e);
                }
            }
        }
        if let Some(w) = writer {
            tally.stats.pack_bytes = w.bytes_written();
            new_packs = w.finish()?;
        }
    }
    // Files whose content looks like a credential join the secret class.
    for (w, rule) in detected {
        let item = &scanned_roots[w.root].items[w.item];
        tally.warnings.push(Warning::at(
            "secret_detected",
            scan::shown(item),
            format!(
                "{} looks like it holds a credential (rule {rule}), so it is treated as a secret; if it does not, list it under [classes] public in the config",
                scan::shown(item)
            ),
        ));
        if sealer.is_none() {
            sealer = Some(Sealer::prepare(repo, &rules.secrets, opts.dry_run)?);
        }
        if let Some(Err(why)) = &sealer {
            omitted[w.root][w.item] = Some("secret");
            tally.warnings.push(secret_skipped(item, why));
        } else {
            secret_work.push(w);
        }
    }
    let mut sealed: Vec<Vec<Option<Sealed>>> = scanned_roots
        .iter()
        .map(|r| vec![None; r.items.len()])
        .collect();
    if let Some(Ok(sealer)) = &sealer {
        if !secret_work.is_empty() {
            let (outcome, packs) = seal_secrets(
                repo,
                index,
                sealer,
                scanned_roots,
                rules,
                &secret_work,
                opts.dry_run,
                tally.stats,
            )?;
            new_packs.extend(packs);
            for (w, res) in secret_work.iter().zip(outcome) {
                match res {
                    Ok(s) => sealed[w.root][w.item] = Some(s),
                    Err(e) => {
                        omitted[w.root][w.item] = Some("unreadable");
                        tally.errors.push(e);
                    }
                }
            }
        }
    }
    tally.stats.read_ms = t1.elapsed().as_millis() as u64;

    Ok(Contents {
        hashes,
        omitted,
        sealed,
        new_packs,
    })
}

/// What [`decide_reads`] found, per (root, item) of the scan.
struct Decided {
    hashes: Vec<Vec<Option<Hash>>>,
    omitted: Vec<Vec<Option<&'static str>>>,
    /// Files to read (not in the files cache).
    work: Vec<FileWork>,
    /// Secret-class files to seal.
    secret_work: Vec<FileWork>,
}

/// Decide per file: kept from the files cache (its hash known without
/// opening it), omitted (a secret that cannot be sealed), to be sealed, or
/// to be read; and count what the scan found.
fn decide_reads(
    scanned_roots: &[scan::ScannedRoot],
    old_cache: &FilesCache,
    sealer: Option<&std::result::Result<Sealer, SealUnavailable>>,
    tally: &mut Tally<'_>,
) -> Decided {
    let mut secret_work: Vec<FileWork> = Vec::new();

    let mut hashes: Vec<Vec<Option<Hash>>> = scanned_roots
        .iter()
        .map(|r| vec![None; r.items.len()])
        .collect();
    let mut omitted: Vec<Vec<Option<&'static str>>> = scanned_roots
        .iter()
        .map(|r| vec![None; r.items.len()])
        .collect();
    let mut work: Vec<FileWork> = Vec::new();
    for (ri, root) in scanned_roots.iter().enumerate() {
        for (ii, item) in root.items.iter().enumerate() {
            match item.kind {
                EntryType::Dir => {
                    tally.stats.dirs_scanned += 1;
                    if item.unlisted {
                        // Its content is unknown: never a claim that it was empty.
                        omitted[ri][ii] = Some("unreadable");
                    }
                }
                EntryType::Symlink => tally.stats.symlinks_scanned += 1,
                EntryType::File => {
                    tally.stats.files_scanned += 1;
                    tally.stats.bytes_scanned += item.size;
                    if item.class == DataClass::Secret {
                        if let Some(Err(why)) = sealer {
                            omitted[ri][ii] = Some("secret");
                            tally.warnings.push(secret_skipped(item, why));
                        } else {
                            secret_work.push(FileWork { root: ri, item: ii });
                        }
                        continue;
                    }
                    if let Some(h) = old_cache.lookup(&item.abs, &stat_key(item)) {
                        hashes[ri][ii] = Some(h);
                        tally.stats.files_unchanged += 1;
                    } else {
                        work.push(FileWork { root: ri, item: ii });
                    }
                }
            }
        }
    }
    Decided {
        hashes,
        omitted,
        work,
        secret_work,
    }
}
