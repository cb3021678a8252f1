//! `backup-verify --repair --from-external`: before the index is rebuilt,
//! fetch from an external copy what the local repository needs and has lost.
//!
//! Only what the local repository still refers to is fetched, so a snapshot
//! pruned here is never brought back from a copy that keeps everything:
//!
//! * a snapshot record that exists here but does not match its name (the
//!   SHA-256 of its bytes) is replaced by the copy's record of that name;
//! * a tree named by a local record that is missing or damaged;
//! * every pack holding content that a local tree needs and that no intact
//!   local pack holds (a pack deleted, truncated, bit-flipped or replaced
//!   by something that is not a file): found through the copy's index and
//!   replaced whole.
//!
//! Each object goes through [`crate::external::Store::put`]: a temp file,
//! fsynced, read back and checked against its name (size + SHA-256), then
//! renamed over the damaged one, its directory fsynced before the next kind
//! (packs before trees before records). A copy whose object is damaged too
//! is reported and left out; the repair that follows reports what is still
//! lost. Local index files are not fetched: the repair rebuilds the index
//! from the packs' trailers anyway. The caller holds the writer lock.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::exit::ExitCode;
use crate::external::dir::DirStore;
use crate::external::{Store, Want};
use crate::hash::Hash;
use crate::paths::display_path;
use crate::repo::Repository;

/// What the fetch did (`repair.fetched`, `repair.fetch_failed` in docs/json.md).
#[derive(Debug, Default, Serialize)]
pub struct FetchReport {
    /// Objects fetched, as `packs/<id>`, `trees/<id>.json`, `snapshots/<id>.json`.
    pub fetched: Vec<String>,
    /// Objects the copy could not give intact, with why.
    pub failed: Vec<FetchFailure>,
}

/// One object the external copy could not replace.
#[derive(Debug, Serialize)]
pub struct FetchFailure {
    /// Relative path in the repository.
    pub object: String,
    /// Why (missing on the copy, damaged there too, an I/O error).
    pub message: String,
}

/// Fetch what `repo` lost from the external copy at `copy` (a directory; an
/// rclone target is fetched into its cache directory first by the caller).
pub fn refetch(repo: &Repository, copy: &Path) -> Result<FetchReport> {
    let ext = Repository::open(copy)?;
    if ext.config.id != repo.config.id {
        return Err(Error::new(
            ExitCode::Refused,
            "external_repository_mismatch",
            format!(
                "the external copy {} belongs to another repository (id {}, this one is {}); nothing was fetched",
                display_path(copy),
                ext.config.id,
                repo.config.id
            ),
        )
        .with_path(copy)
        .with_hint("name the target that holds this repository's copy with --from-external=NAME"));
    }
    let src = DirStore::new(copy);
    let dst = DirStore::new(repo.root());
    let listing = src.list()?;
    let mut report = FetchReport::default();
    let mut fetch = |rel: String, id: Hash| {
        let Some(&size) = listing.get(&rel) else {
            report.failed.push(FetchFailure {
                message: format!("{rel} is not on the external copy {}", src.shown()),
                object: rel,
            });
            return;
        };
        match dst.put(&rel, &src, &Want { size, sha256: id }) {
            Ok(_) => report.fetched.push(rel),
            Err(e) => report.failed.push(FetchFailure {
                object: rel,
                message: e.message,
            }),
        }
    };

    // Records that exist here but are damaged (never ones that are gone: prune removed those).
    for (id, path) in objects(&repo.sub("snapshots"), ".json")? {
        if intact(&path, &id).is_none() {
            fetch(format!("snapshots/{}.json", id.to_hex()), id);
        }
    }
    dst.flush("snapshots")?;

    // Trees of the local records, and the content they need.
    let mut needed: HashSet<Hash> = HashSet::new();
    // A record the copy could not replace either is left to the repair's quarantine.
    for s in repo.snapshots_and_damaged()?.0 {
        let tree = match repo.tree(&s.record.tree) {
            Ok(t) => Some(t),
            Err(_) => {
                fetch(
                    format!("trees/{}.json", s.record.tree.to_hex()),
                    s.record.tree,
                );
                dst.flush("trees")?;
                repo.tree(&s.record.tree).ok()
            }
        };
        for (_, e) in tree.iter().flat_map(|t| t.entries()) {
            needed.extend(e.content_id());
        }
    }

    // Content no intact local pack holds: the copy's index says which pack has it.
    let mut have: HashSet<Hash> = HashSet::new();
    for (id, path) in objects(&repo.sub("packs"), "")? {
        if intact(&path, &id).is_some() {
            if let Ok(blobs) = crate::repo::pack::read_trailer(&path) {
                have.extend(blobs.iter().map(|b| b.id));
            }
        }
    }
    let ext_index = ext.index()?;
    let packs: BTreeSet<Hash> = needed
        .iter()
        .filter(|h| !have.contains(h))
        .filter_map(|h| ext_index.get(h).map(|loc| loc.pack))
        .collect();
    for pack in packs {
        fetch(format!("packs/{}", pack.to_hex()), pack);
    }
    dst.flush("packs")?;
    Ok(report)
}

/// The objects in `dir` named `<64 hex><suffix>`, with their ids.
fn objects(dir: &Path, suffix: &str) -> Result<Vec<(Hash, std::path::PathBuf)>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", dir, &e)),
    };
    let mut out = Vec::new();
    for entry in listing {
        let entry = entry.ctx("listing", dir)?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<Hash>().ok())
        else {
            continue;
        };
        out.push((id, entry.path()));
    }
    Ok(out)
}

/// `Some(())` when the object at `path` is a regular file whose SHA-256 is
/// its name (opened without following symlinks or blocking).
fn intact(path: &Path, id: &Hash) -> Option<()> {
    let (mut f, _) = crate::repo::open_object(path, "object", None, u64::MAX).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    (Hash::from_hasher(hasher) == *id).then_some(())
}
