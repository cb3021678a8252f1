//! `backup-verify`: prove the repository is whole, and name what is not.
//!
//! Structure check (default): every snapshot record and tree matches its
//! checksum and parses, every index file matches its checksum, every blob a
//! snapshot references is in the index, and every pack the index names
//! exists and is long enough. `--read-data` also re-hashes every pack and
//! every blob. Each problem names the object and the snapshots and paths it
//! affects. Leftovers of interrupted runs (unreferenced packs, temp files)
//! are reported as warnings: they are harmless and prune removes them.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;

use serde::Serialize;

use crate::atomic::TEMP_PREFIX;
use crate::error::{IoContext, Result};
use crate::hash::Hash;
use crate::paths::display_path;
use crate::repo::index::{BlobLocation, Index, PackPresence};
use crate::repo::layout;
use crate::repo::snapshot::Snapshot;
use crate::repo::{decode_record, object_id, pack, Repository};
use crate::report::Warning;

/// One thing wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// Stable code: `corrupt_snapshot`, `missing_tree`, `corrupt_tree`, `corrupt_index`,
    /// `missing_blob`, `missing_pack`, `truncated_pack`, `corrupt_pack`, `corrupt_blob`.
    pub code: String,
    /// The damaged object's path.
    pub object: String,
    /// What is wrong.
    pub message: String,
    /// Affected snapshots (`<short id> <kind> <label>`).
    pub snapshots: Vec<String>,
    /// Affected file paths (first 50).
    pub paths: Vec<String>,
}

/// Counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyStats {
    /// Snapshot records checked.
    pub snapshots: u64,
    /// Trees checked.
    pub trees: u64,
    /// Index files checked.
    pub index_files: u64,
    /// Packs checked.
    pub packs: u64,
    /// Blobs checked (re-hashed with --read-data).
    pub blobs: u64,
    /// Bytes read and hashed.
    pub bytes_read: u64,
}

/// Result of a verification.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Problems (empty: the repository is whole).
    pub problems: Vec<Problem>,
    /// Harmless leftovers.
    pub warnings: Vec<Warning>,
    /// Counters.
    pub stats: VerifyStats,
    /// Secret-id keys that sealed entries use → (affected snapshots, paths).
    pub key_users: HashMap<String, (Vec<String>, Vec<String>)>,
}

type Users = HashMap<Hash, Vec<(usize, String)>>;

/// Check `repo`; with `read_data`, re-hash every byte.
pub fn verify(repo: &Repository, read_data: bool) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    // Snapshots, individually so that one bad record does not hide the rest.
    let snap_dir = repo.sub(layout::SNAPSHOTS);
    let mut snapshots: Vec<Snapshot> = Vec::new();
    for entry in list_dir(&snap_dir)? {
        let entry = entry.ctx("listing", &snap_dir)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TEMP_PREFIX) {
            report.warnings.push(Warning::at(
                "leftover_temp",
                display_path(&entry.path()),
                "temp file of an interrupted write (harmless; prune removes it)",
            ));
            continue;
        }
        let Some(id) = object_id(&name, ".json") else {
            continue;
        };
        report.stats.snapshots += 1;
        let path = entry.path();
        match crate::repo::read_object(
            &path,
            "snapshot record",
            None,
            crate::repo::MAX_RECORD_BYTES,
        )
        .and_then(|b| decode_record(&b, &id, &path))
        {
            Ok(record) => snapshots.push(Snapshot { id, record }),
            Err(e) => report.problems.push(Problem {
                code: e.code.into(),
                object: display_path(&path),
                message: e.message,
                snapshots: vec![id.short()],
                paths: vec![],
            }),
        }
    }
    snapshots.sort_by(|a, b| a.record.created_at.cmp(&b.record.created_at));
    let names: Vec<String> = snapshots
        .iter()
        .map(|s| {
            format!(
                "{} {} {}",
                s.id.short(),
                s.record.kind.as_str(),
                s.record.label
            )
        })
        .collect();

    // Index files, individually.
    let index_dir = repo.sub(layout::INDEX);
    let mut index = Index::default();
    // A blob listed twice resolves to a pack that is there, as for readers
    // (`Index::absorb`): a lost pack's entry must not blame a blob stored again.
    let packs_dir = repo.sub(layout::PACKS);
    let mut present = PackPresence::new(&packs_dir);
    for entry in list_dir(&index_dir)? {
        let entry = entry.ctx("listing", &index_dir)?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.parse::<Hash>().ok()) else {
            continue;
        };
        report.stats.index_files += 1;
        let single = tempdir_index(&entry.path(), id);
        match single {
            Ok(part) => index.absorb(part, &mut present),
            Err(e) => report.problems.push(Problem {
                code: "corrupt_index".into(),
                object: display_path(&entry.path()),
                message: e.message,
                snapshots: vec![],
                paths: vec![],
            }),
        }
    }

    // Trees and blob references.
    let mut users: Users = HashMap::new();
    // Secret-id key name -> (snapshot, path) of the sealed entries that need it.
    let mut key_users: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    let mut trees_done: HashMap<Hash, bool> = HashMap::new();
    for (si, snap) in snapshots.iter().enumerate() {
        let tid = snap.record.tree;
        if trees_done.contains_key(&tid) {
            // Same tree: same users for blobs, add this snapshot.
            if let Some(true) = trees_done.get(&tid) {
                if let Ok(tree) = repo.tree(&tid) {
                    for (root, e) in tree.entries() {
                        if let Some(sealed) = &e.sealed {
                            key_users
                                .entry(sealed.key.clone())
                                .or_default()
                                .push((si, entry_path(&root.root.0, &e.path.0)));
                        }
                        if let Some(h) = e.content_id() {
                            users
                                .entry(h)
                                .or_default()
                                .push((si, entry_path(&root.root.0, &e.path.0)));
                        }
                    }
                }
            }
            continue;
        }
        report.stats.trees += 1;
        match repo.tree(&tid) {
            Ok(tree) => {
                trees_done.insert(tid, true);
                for (root, e) in tree.entries() {
                    if let Some(sealed) = &e.sealed {
                        key_users
                            .entry(sealed.key.clone())
                            .or_default()
                            .push((si, entry_path(&root.root.0, &e.path.0)));
                    }
                    if let Some(h) = e.content_id() {
                        users
                            .entry(h)
                            .or_default()
                            .push((si, entry_path(&root.root.0, &e.path.0)));
                    }
                }
            }
            Err(e) => {
                trees_done.insert(tid, false);
                report.problems.push(Problem {
                    code: e.code.into(),
                    object: e.path.clone().unwrap_or_default(),
                    message: e.message,
                    snapshots: vec![names[si].clone()],
                    paths: vec![],
                });
            }
        }
    }
    for (blob, who) in &users {
        if !index.contains(blob) {
            report.problems.push(problem_for(
                "missing_blob",
                "(index)",
                format!("blob {} is not in any pack", blob.short()),
                who,
                &names,
            ));
        }
    }

    // Secret-id keys: a sealed entry is restorable on another machine only
    // through `keys/<key>.age`, so it must exist and be an age file. (Its
    // content is checked with the identity by `run`.)
    let keys_dir = repo.sub(layout::KEYS);
    for (key, who) in &key_users {
        let path = keys_dir.join(format!("{key}.age"));
        let bad = match crate::repo::read_object(&path, "secret-id key", None, 1 << 20) {
            Err(e) if e.code == "repository_corrupt" => Some(("repository_corrupt", e.message)),
            Err(e) => Some(("missing_key", format!("secret-id key {key}: {}", e.message))),
            Ok(bytes) => age::Decryptor::new_buffered(&bytes[..]).err().map(|e| {
                (
                    "corrupt_key",
                    format!("secret-id key {key} is not a valid age file: {e}"),
                )
            }),
        };
        if let Some((code, message)) = bad {
            report.problems.push(problem_for(
                code,
                &display_path(&path),
                message,
                who,
                &names,
            ));
        }
    }
    report.key_users = key_users
        .into_iter()
        .map(|(k, who)| {
            let named = problem_for("", "", String::new(), &who, &names);
            (k, (named.snapshots, named.paths))
        })
        .collect();

    // Packs.
    let mut by_pack: HashMap<Hash, Vec<(Hash, BlobLocation)>> = HashMap::new();
    for (b, loc) in &index.blobs {
        by_pack.entry(loc.pack).or_default().push((*b, *loc));
    }
    if read_data {
        let total: u64 = by_pack
            .keys()
            .filter_map(|p| std::fs::metadata(pack::pack_path(&packs_dir, p)).ok())
            .map(|m| m.len())
            .sum();
        crate::progress::stage("verifying", by_pack.len() as u64, total);
    }
    for (pack_id, blobs) in &by_pack {
        report.stats.packs += 1;
        let path = pack::pack_path(&packs_dir, pack_id);
        let affected = |bs: &[(Hash, BlobLocation)]| -> Vec<(usize, String)> {
            bs.iter()
                .flat_map(|(b, _)| users.get(b).cloned().unwrap_or_default())
                .collect()
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => {
                report.problems.push(problem_for(
                    "missing_pack",
                    &display_path(&path),
                    format!("pack {} is missing", pack_id.short()),
                    &affected(blobs),
                    &names,
                ));
                continue;
            }
        };
        let need = blobs
            .iter()
            // Saturating: a crafted index may claim offset + length beyond u64.
            .map(|(_, l)| l.offset.saturating_add(l.length))
            .max()
            .unwrap_or(0);
        if meta.len() < need {
            report.problems.push(problem_for(
                "truncated_pack",
                &display_path(&path),
                format!(
                    "pack {} is {} bytes, but blobs reach byte {need}",
                    pack_id.short(),
                    meta.len()
                ),
                &affected(blobs),
                &names,
            ));
            continue;
        }
        report.stats.blobs += blobs.len() as u64;
        if !read_data {
            // The trailer is what a lost index is rebuilt from: a pack cut
            // inside it (blobs intact) is damage a quick check must see.
            if let Err(e) = pack::read_trailer(&path) {
                report.problems.push(problem_for(
                    corrupt_or(&e, "corrupt_pack"),
                    &display_path(&path),
                    e.message,
                    &affected(blobs),
                    &names,
                ));
            }
            continue;
        }
        let mut bytes = Vec::new();
        let read = crate::repo::open_object(&path, "pack", None, u64::MAX)
            .and_then(|(mut f, _)| f.read_to_end(&mut bytes).ctx("reading pack", &path));
        if let Err(e) = read {
            report.problems.push(problem_for(
                corrupt_or(&e, "unreadable_pack"),
                &display_path(&path),
                format!("reading pack {}: {}", pack_id.short(), e.message),
                &affected(blobs),
                &names,
            ));
            continue;
        }
        report.stats.bytes_read += bytes.len() as u64;
        crate::progress::advance(1, bytes.len() as u64);
        let mut bad: Vec<(Hash, BlobLocation)> = Vec::new();
        // Sealed (age) blobs are named by a keyed hash that only the identity's
        // holder can recompute; the pack's own SHA-256 covers their bytes.
        let mut sealed: Vec<(Hash, BlobLocation)> = Vec::new();
        for (b, loc) in blobs {
            if loc.flags == pack::FLAG_AGE {
                sealed.push((*b, *loc));
                continue;
            }
            // The size check above bounds every range, but the pack may have
            // changed since; never index out of bounds on repository data.
            let slice = usize::try_from(loc.offset)
                .ok()
                .zip(usize::try_from(loc.offset.saturating_add(loc.length)).ok())
                .and_then(|(start, end)| bytes.get(start..end));
            if slice.is_none_or(|s| Hash::of(s) != *b) {
                bad.push((*b, *loc));
            }
        }
        let pack_ok = Hash::of(&bytes) == *pack_id;
        if !pack_ok && !sealed.is_empty() {
            // We cannot tell which encrypted blob is damaged: name them all.
            bad.extend(sealed);
        }
        if !bad.is_empty() {
            report.problems.push(problem_for(
                "corrupt_blob",
                &display_path(&path),
                format!(
                    "{} blob(s) in pack {} do not match their checksums",
                    bad.len(),
                    pack_id.short()
                ),
                &affected(&bad),
                &names,
            ));
        } else if !pack_ok {
            report.problems.push(problem_for(
                "corrupt_pack",
                &display_path(&path),
                format!("pack {} does not match its checksum (its header or trailer is damaged; blob data is intact)", pack_id.short()),
                &[],
                &names,
            ));
        }
    }
    // Leftovers.
    if let Ok(listing) = std::fs::read_dir(&packs_dir) {
        for entry in listing.flatten() {
            let name = entry.file_name();
            let text = name.to_string_lossy();
            if text.starts_with(TEMP_PREFIX) {
                report.warnings.push(Warning::at(
                    "leftover_temp",
                    display_path(&entry.path()),
                    "temp file of an interrupted write (harmless; prune removes it)",
                ));
            } else if let Ok(id) = text.parse::<Hash>() {
                if !by_pack.contains_key(&id) {
                    report.warnings.push(Warning::at("unreferenced_pack", display_path(&entry.path()), "pack not named by any index (left by an interrupted run; harmless; prune removes it)"));
                }
            }
        }
    }
    report
        .problems
        .sort_by(|a, b| (&a.code, &a.object).cmp(&(&b.code, &b.object)));
    Ok(report)
}

/// The entries of an object directory; a missing one is empty (an external
/// copy on an object store has no empty directories).
fn list_dir(dir: &std::path::Path) -> Result<Vec<std::io::Result<std::fs::DirEntry>>> {
    match std::fs::read_dir(dir) {
        Ok(listing) => Ok(listing.collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(crate::error::Error::io("listing", dir, &e)),
    }
}

/// With the identity at hand, decrypt every `keys/<key>.age` that sealed
/// entries use: a flipped bit in an age file is only visible to its reader.
/// Without one, say what was not checked.
fn check_keys_with_identity(
    repo: &Repository,
    settings: &crate::config::Settings,
    report: &mut VerifyReport,
) {
    if report.key_users.is_empty() {
        return;
    }
    let opener = match crate::secrets::Opener::load(&settings.secrets) {
        Ok(Some(o)) => o,
        _ => {
            report.warnings.push(Warning::new(
                "keys_not_decrypted",
                "no usable identity: the secret-id keys in keys/ were checked for presence and format only",
            ));
            return;
        }
    };
    let mut keys: Vec<_> = report.key_users.iter().collect();
    keys.sort();
    let mut found = Vec::new();
    for (key, (snapshots, paths)) in keys {
        let path = repo.sub(layout::KEYS).join(format!("{key}.age"));
        let Ok(bytes) = crate::repo::read_object(&path, "secret-id key", None, 1 << 20) else {
            continue; // reported as missing_key already
        };
        if let Err(why) = opener.check_wrapped(&bytes) {
            if report
                .problems
                .iter()
                .any(|p| p.object == display_path(&path))
            {
                continue;
            }
            found.push(Problem {
                code: "corrupt_key".into(),
                object: display_path(&path),
                message: format!("secret-id key {key} does not decrypt with the identity: {why}"),
                snapshots: snapshots.clone(),
                paths: paths.clone(),
            });
        }
    }
    report.problems.extend(found);
}

fn tempdir_index(path: &std::path::Path, id: Hash) -> Result<Index> {
    let bytes = crate::repo::read_object(path, "index file", None, crate::repo::MAX_TREE_BYTES)?;
    if Hash::of(&bytes) != id {
        return Err(crate::error::Error::corrupt(
            "corrupt_index",
            path,
            format!(
                "index file {} does not match its checksum",
                display_path(path)
            ),
        ));
    }
    Index::from_bytes(&bytes, path)
}

fn entry_path(root: &[u8], rel: &[u8]) -> String {
    if rel.is_empty() {
        String::from_utf8_lossy(root).into_owned()
    } else {
        format!(
            "{}/{}",
            String::from_utf8_lossy(root),
            String::from_utf8_lossy(rel)
        )
    }
}

fn problem_for(
    code: &str,
    object: &str,
    message: String,
    who: &[(usize, String)],
    names: &[String],
) -> Problem {
    let snaps: BTreeSet<usize> = who.iter().map(|(s, _)| *s).collect();
    let paths: BTreeSet<&String> = who.iter().map(|(_, p)| p).collect();
    Problem {
        code: code.into(),
        object: object.into(),
        message,
        snapshots: snaps.into_iter().map(|i| names[i].clone()).collect(),
        paths: paths.into_iter().take(50).cloned().collect(),
    }
}

/// `backup-verify`: open, verify, fill the envelope (exit 6 on problems).
pub fn run(
    settings: &crate::config::Settings,
    read_data: bool,
    env: &mut crate::report::Envelope,
) -> Result<()> {
    let repo = Repository::open(&settings.repo)?;
    let mut report = verify(&repo, read_data)?;
    check_keys_with_identity(&repo, settings, &mut report);
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&report.stats) {
        env.stats = map;
    }
    env.warnings.extend(report.warnings);
    if !report.problems.is_empty() {
        env.status = crate::report::Status::Failed;
        env.set_exit(crate::exit::ExitCode::Corrupt);
        let e = crate::error::Error::new(
            crate::exit::ExitCode::Corrupt,
            "repository_corrupt",
            format!("{} problem(s) found in {}", report.problems.len(), display_path(repo.root())),
        )
        .with_path(repo.root())
        .with_hint("snapshots not listed as affected are intact and restorable; run `backup-verify --repair` (with `--from-external` when a copy exists) so that checkpoints work again, then take a new checkpoint to protect the current state");
        env.errors.push((&e).into());
    }
    env.put("problems", &report.problems);
    Ok(())
}

/// What `backup-verify --repair` did (the `repair` payload, docs/json.md).
#[derive(Debug, Default, Serialize)]
pub struct RepairReport {
    /// Packs whose trailer was read into the new index.
    pub packs_indexed: u64,
    /// Blobs in the new index.
    pub blobs_indexed: u64,
    /// The index file written (hex), if any pack was found.
    pub index_file: Option<String>,
    /// Old index files removed (damaged, dangling, or merely superseded).
    pub index_files_removed: u64,
    /// Packs left out because their trailer is damaged (left in place).
    pub unreadable_packs: Vec<String>,
    /// Per snapshot ("<short id> <kind> <label>"), every path whose content is gone.
    pub lost: Vec<LostPaths>,
    /// Snapshot records damaged beyond repair, moved to `quarantine/snapshots/`:
    /// those snapshots are lost (the others are not touched).
    pub quarantined: Vec<Quarantined>,
    /// With `--from-external`: objects fetched from the copy before the rebuild.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched: Option<Vec<String>>,
    /// With `--from-external`: objects the copy could not give intact, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch_failed: Option<Vec<super::refetch::FetchFailure>>,
}

/// A damaged snapshot record moved aside by the repair.
#[derive(Debug, Serialize)]
pub struct Quarantined {
    /// Where the record was (`<repo>/snapshots/<hex>.json`).
    pub record: String,
    /// Where it is now (`<repo>/quarantine/snapshots/<hex>.json[.N]`).
    pub moved_to: String,
    /// Why it could not be used.
    pub reason: String,
}

/// The paths of one snapshot whose content no pack holds any more.
#[derive(Debug, Serialize)]
pub struct LostPaths {
    /// `<short id> <kind> <label>`.
    pub snapshot: String,
    /// Every lost path (or the tree itself, when it is gone).
    pub paths: Vec<String>,
}

/// Rebuild the index from the packs' own trailers (docs/format.md, "Packs"),
/// under the writer lock: one new index file of every blob in every readable
/// pack, then every other index file removed. What no pack holds is dropped
/// from the index and reported exactly (snapshot and path); snapshots are
/// kept, since every path not listed still restores. With `external` (a
/// local directory holding the external copy), what the repository lost is
/// first fetched from it ([`super::refetch`]).
pub fn repair(
    repo: &Repository,
    command: &str,
    wait: std::time::Duration,
    external: Option<&std::path::Path>,
) -> Result<RepairReport> {
    use std::ffi::OsStr;
    let _guard = repo.lock(command, wait)?;
    let mut report = RepairReport::default();
    if let Some(copy) = external {
        let fetched = super::refetch::refetch(repo, copy)?;
        report.fetched = Some(fetched.fetched);
        report.fetch_failed = Some(fetched.failed);
    }
    // A record damaged beyond what the copy gave back would stop every
    // command: move it aside (never delete it) and count it as lost.
    for (path, why) in repo.snapshots_and_damaged()?.1 {
        let moved = repo.quarantine(&path)?;
        report.quarantined.push(Quarantined {
            record: display_path(&path),
            moved_to: display_path(&moved),
            reason: why.message,
        });
    }
    let packs_dir = repo.sub(layout::PACKS);
    let mut packs = Vec::new();
    for entry in list_dir(&packs_dir)? {
        let entry = entry.ctx("listing", &packs_dir)?;
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Hash>().ok())
        else {
            continue;
        };
        match crate::repo::pack::read_trailer(&entry.path()) {
            Ok(blobs) => packs.push(crate::repo::pack::FinishedPack { id, blobs, size: 0 }),
            Err(_) => report.unreadable_packs.push(display_path(&entry.path())),
        }
    }
    packs.sort_by_key(|p| p.id);
    let index_dir = crate::atomic::Dir::open(&repo.sub(layout::INDEX))?;
    let new_id = if packs.is_empty() {
        None
    } else {
        let (id, bytes) = crate::repo::index::encode(&packs);
        index_dir.write_atomic(OsStr::new(&id.to_hex()), &bytes, 0o600)?;
        report.index_file = Some(id.to_hex());
        Some(id)
    };
    for entry in list_dir(index_dir.path())? {
        let entry = entry.ctx("listing", index_dir.path())?;
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Hash>().ok())
        else {
            continue;
        };
        if Some(id) != new_id {
            std::fs::remove_file(entry.path()).ctx("removing old index", &entry.path())?;
            report.index_files_removed += 1;
        }
    }
    index_dir.sync()?;
    let index = repo.index()?;
    report.packs_indexed = packs.len() as u64;
    report.blobs_indexed = index.blobs.len() as u64;
    report.lost = lost_paths(repo, &index)?;
    for q in &report.quarantined {
        report.lost.push(LostPaths {
            snapshot: format!("(damaged record {})", q.record),
            paths: vec![format!(
                "(every path: the record was moved to {})",
                q.moved_to
            )],
        });
    }
    Ok(report)
}

/// Every (snapshot, path) whose content the index does not hold.
fn lost_paths(repo: &Repository, index: &Index) -> Result<Vec<LostPaths>> {
    let mut out = Vec::new();
    for s in repo.snapshots()? {
        let name = format!(
            "{} {} {}",
            s.id.short(),
            s.record.kind.as_str(),
            s.record.label
        );
        let paths = match repo.tree(&s.record.tree) {
            Err(e) => vec![format!("(every path: {})", e.message)],
            Ok(tree) => tree
                .entries()
                .filter(|(_, e)| e.content_id().is_some_and(|h| !index.contains(&h)))
                .map(|(root, e)| entry_path(&root.root.0, &e.path.0))
                .collect(),
        };
        if !paths.is_empty() {
            out.push(LostPaths {
                snapshot: name,
                paths,
            });
        }
    }
    Ok(out)
}

/// The problem code for a pack error: `repository_corrupt` when the file
/// itself is hostile (not a regular file, too large), else `fallback`.
fn corrupt_or(e: &crate::error::Error, fallback: &'static str) -> &'static str {
    if e.code == "repository_corrupt" {
        "repository_corrupt"
    } else {
        fallback
    }
}
