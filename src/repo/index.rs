//! The index: which pack holds each blob, at which offset and length.
//!
//! One immutable index file is written per run that stored new blobs, named
//! by the SHA-256 of its bytes (so a damaged index is detected on load, never
//! silently used). Layout, little-endian:
//!
//! ```text
//! "DFBINDX1"
//! P u32, then P pack ids (32 bytes each)
//! B u32, then B records { blob id[32] flags u8 pack u32 offset u64 length u64 }
//! ```
//!
//! Loading reads every file in `index/`. A blob listed twice (after a crash
//! and a rerun, or stored again because its first pack went missing)
//! resolves to a location whose pack is in `packs/` when there is one: index
//! files load in name order, which is random, so "first" alone would let a
//! lost pack's entry hide the copy stored again after it.
//!
//! A writer deduplicates only against [`Index::load_for_reuse`], which leaves
//! out every location whose pack is not a regular file in `packs/`: a blob is
//! reused only if the pack holding it is there (docs/format.md, "The reuse
//! invariant"). The index file itself is kept as it is, because it is the
//! only record of what a lost pack held (repair and `--from-external` need it).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::layout;
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::repo::pack::FinishedPack;

const MAGIC: &[u8; 8] = b"DFBINDX1";
const RECORD: usize = 32 + 1 + 4 + 8 + 8;

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack's id.
    pub pack: Hash,
    /// Encoding flags.
    pub flags: u8,
    /// Offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub length: u64,
}

/// All blobs known to the repository.
#[derive(Debug, Default, Clone)]
pub struct Index {
    /// Blob id → location.
    pub blobs: HashMap<Hash, BlobLocation>,
    /// Index files that were loaded.
    pub files: Vec<Hash>,
    /// Packs named by an index file but absent from `packs/` (only filled by
    /// [`Index::load_for_reuse`]): (index file, pack).
    pub missing_packs: Vec<(Hash, Hash)>,
    /// Index files that could not be used (unreadable, wrong checksum, not
    /// parseable): (path, why). Their packs' blobs were recovered from the
    /// pack trailers instead.
    pub damaged: Vec<(PathBuf, String)>,
    /// Locations in packs that are not in `packs/`, kept apart until every
    /// file is read so that they only fill in blobs stored nowhere else.
    in_missing_packs: HashMap<Hash, BlobLocation>,
}

impl Index {
    /// Load every index file in `dir`, checking each against its name.
    pub fn load(dir: &Path) -> Result<Index> {
        let mut index = Index::load_filtered(dir, &dir.with_file_name(layout::PACKS))?;
        // A reader still wants a lost pack's locations (verify names what
        // they held, repair fetches them), but only where nothing better is.
        for (id, loc) in std::mem::take(&mut index.in_missing_packs) {
            index.blobs.entry(id).or_insert(loc);
        }
        index.missing_packs.clear();
        Ok(index)
    }

    /// Load every index file in `dir`, leaving out locations in packs that
    /// are not a regular file in `packs_dir` (recorded in `missing_packs`).
    /// What a writer deduplicates against.
    pub fn load_for_reuse(dir: &Path, packs_dir: &Path) -> Result<Index> {
        let mut index = Index::load_filtered(dir, packs_dir)?;
        index.in_missing_packs.clear();
        Ok(index)
    }

    fn load_filtered(dir: &Path, packs_dir: &Path) -> Result<Index> {
        let mut index = Index::default();
        let mut present = PackPresence::new(packs_dir);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).ctx("listing", dir)? {
            let entry = entry.ctx("listing", dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Ok(id) = name.parse::<Hash>() {
                names.push(id);
            }
        }
        names.sort();
        let mut named: HashSet<Hash> = HashSet::new();
        for id in names {
            let path = dir.join(id.to_hex());
            let mut usable = |pack: &Hash| {
                named.insert(*pack);
                present.is_present(pack)
            };
            match load_file(&path, id, &mut index, &mut usable) {
                Ok(missing) => {
                    index
                        .missing_packs
                        .extend(missing.into_iter().map(|p| (id, p)));
                    index.files.push(id);
                }
                // One damaged file must not block what it does not touch.
                Err(e) => index.damaged.push((path, e.message)),
            }
        }
        if !index.damaged.is_empty() {
            index.recover_from_trailers(packs_dir, &named)?;
        }
        Ok(index)
    }

    /// Add the blobs of every pack in `packs` that no usable index file names,
    /// read from the pack's own trailer (docs/format.md, "Packs"). A pack
    /// whose trailer is damaged too is left out (verify names it).
    fn recover_from_trailers(&mut self, packs: &Path, named: &HashSet<Hash>) -> Result<()> {
        let listing = match std::fs::read_dir(packs) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("listing", packs, &e)),
        };
        for entry in listing {
            let entry = entry.ctx("listing", packs)?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Hash>().ok())
            else {
                continue;
            };
            if named.contains(&id) {
                continue;
            }
            let Ok(blobs) = crate::repo::pack::read_trailer(&entry.path()) else {
                continue;
            };
            for b in blobs {
                self.blobs.entry(b.id).or_insert(BlobLocation {
                    pack: id,
                    flags: b.flags,
                    offset: b.offset,
                    length: b.length,
                });
            }
        }
        Ok(())
    }

    /// Parse one index file's bytes (checksum already checked by the caller).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Index> {
        let mut index = Index::default();
        index.merge_file(bytes, path, &mut |_| true)?;
        Ok(index)
    }

    /// Merge one file's records whose pack is `usable`; returns the packs it
    /// names that are not.
    fn merge_file(
        &mut self,
        bytes: &[u8],
        path: &Path,
        usable: &mut dyn FnMut(&Hash) -> bool,
    ) -> Result<Vec<Hash>> {
        let (packs, records) = parse(bytes).map_err(|why| {
            Error::corrupt(
                "corrupt_index",
                path,
                format!("index file {}: {why}", path.display()),
            )
        })?;
        let ok: Vec<bool> = packs.iter().map(&mut *usable).collect();
        for (id, flags, pack_no, offset, length) in records {
            let location = BlobLocation {
                pack: packs[pack_no as usize],
                flags,
                offset,
                length,
            };
            let into = if ok[pack_no as usize] {
                &mut self.blobs
            } else {
                &mut self.in_missing_packs
            };
            into.entry(id).or_insert(location);
        }
        Ok(packs
            .iter()
            .zip(ok)
            .filter(|(_, ok)| !ok)
            .map(|(p, _)| *p)
            .collect())
    }

    /// Merge the locations of one index file read on its own (verify reads
    /// them one by one to name a damaged one): a blob already known keeps
    /// its location unless that pack is absent and `part`'s is present, the
    /// rule [`Index::load`] follows (module docs).
    pub fn absorb(&mut self, part: Index, packs: &mut PackPresence) {
        for (blob, loc) in part.blobs {
            match self.blobs.entry(blob) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(loc);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if !packs.is_present(&o.get().pack) && packs.is_present(&loc.pack) {
                        o.insert(loc);
                    }
                }
            }
        }
    }

    /// Is this blob stored?
    pub fn contains(&self, id: &Hash) -> bool {
        self.blobs.contains_key(id)
    }

    /// Location of a blob.
    pub fn get(&self, id: &Hash) -> Option<&BlobLocation> {
        self.blobs.get(id)
    }

    /// Record blobs of freshly written packs in memory.
    pub fn add_packs(&mut self, packs: &[FinishedPack]) {
        for p in packs {
            for b in &p.blobs {
                self.blobs.entry(b.id).or_insert(BlobLocation {
                    pack: p.id,
                    flags: b.flags,
                    offset: b.offset,
                    length: b.length,
                });
            }
        }
    }
}

type Record = (Hash, u8, u32, u64, u64);

fn parse(bytes: &[u8]) -> Result<(Vec<Hash>, Vec<Record>), String> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(8)? != MAGIC {
        return Err("not an index file (bad magic)".into());
    }
    let pack_count = r.u32()? as usize;
    let mut packs = Vec::with_capacity(pack_count.min(bytes.len() / 32));
    for _ in 0..pack_count {
        packs.push(Hash(r.take(32)?.try_into().expect("32 bytes")));
    }
    let blob_count = r.u32()? as usize;
    if bytes.len() - r.pos != blob_count * RECORD {
        return Err(format!(
            "expected {blob_count} records, found {} bytes",
            bytes.len() - r.pos
        ));
    }
    let mut out = Vec::with_capacity(blob_count);
    for _ in 0..blob_count {
        let id = Hash(r.take(32)?.try_into().expect("32 bytes"));
        let flags = r.take(1)?[0];
        let pack = r.u32()?;
        if pack as usize >= packs.len() {
            return Err(format!(
                "record names pack #{pack}, only {pack_count} listed"
            ));
        }
        let offset = r.u64()?;
        let length = r.u64()?;
        out.push((id, flags, pack, offset, length));
    }
    Ok((packs, out))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err("truncated".into()),
        }
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// Serialize the index file for freshly written packs. Returns (id, bytes).
pub fn encode(packs: &[FinishedPack]) -> (Hash, Vec<u8>) {
    let blob_count: usize = packs.iter().map(|p| p.blobs.len()).sum();
    let mut out = Vec::with_capacity(16 + packs.len() * 32 + blob_count * RECORD);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(&p.id.0);
    }
    out.extend_from_slice(&(blob_count as u32).to_le_bytes());
    for (n, p) in packs.iter().enumerate() {
        for b in &p.blobs {
            out.extend_from_slice(&b.id.0);
            out.push(b.flags);
            out.extend_from_slice(&(n as u32).to_le_bytes());
            out.extend_from_slice(&b.offset.to_le_bytes());
            out.extend_from_slice(&b.length.to_le_bytes());
        }
    }
    (Hash::of(&out), out)
}

/// Read, check and merge one index file; returns the packs it names that are
/// not `usable`.
fn load_file(
    path: &Path,
    id: Hash,
    index: &mut Index,
    usable: &mut dyn FnMut(&Hash) -> bool,
) -> Result<Vec<Hash>> {
    let bytes = crate::repo::read_object(path, "index file", None, crate::repo::MAX_TREE_BYTES)?;
    if Hash::of(&bytes) != id {
        return Err(Error::corrupt(
            "corrupt_index",
            path,
            format!("index file {} does not match its checksum", path.display()),
        ));
    }
    // Parsed apart first, so that a file failing halfway adds nothing.
    let mut one = Index::default();
    let missing = one.merge_file(&bytes, path, usable)?;
    for (b, loc) in one.blobs {
        index.blobs.entry(b).or_insert(loc);
    }
    for (b, loc) in one.in_missing_packs {
        index.in_missing_packs.entry(b).or_insert(loc);
    }
    Ok(missing)
}

/// Which packs are a regular file in `packs/`: one lstat per pack, kept
/// (packs are up to 32 MiB, so there are few of them).
pub struct PackPresence {
    dir: PathBuf,
    seen: HashMap<Hash, bool>,
}

impl PackPresence {
    /// Packs in `dir` (a repository's `packs/`).
    pub fn new(dir: &Path) -> PackPresence {
        PackPresence {
            dir: dir.to_path_buf(),
            seen: HashMap::new(),
        }
    }

    /// Is `pack` there, as a regular file?
    pub fn is_present(&mut self, pack: &Hash) -> bool {
        let dir = &self.dir;
        *self.seen.entry(*pack).or_insert_with(|| {
            std::fs::symlink_metadata(dir.join(pack.to_hex()))
                .is_ok_and(|m| m.file_type().is_file())
        })
    }
}

/// Path of an index file.
pub fn index_path(dir: &Path, id: &Hash) -> PathBuf {
    dir.join(id.to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::PackedBlob;

    fn sample() -> Vec<FinishedPack> {
        vec![FinishedPack {
            id: Hash::of(b"pack"),
            size: 100,
            blobs: vec![
                PackedBlob {
                    id: Hash::of(b"a"),
                    flags: 0,
                    offset: 8,
                    length: 1,
                },
                PackedBlob {
                    id: Hash::of(b"b"),
                    flags: 0,
                    offset: 9,
                    length: 1,
                },
            ],
        }]
    }

    #[test]
    fn encode_then_load() {
        let tmp = tempfile::tempdir().unwrap();
        let (id, bytes) = encode(&sample());
        std::fs::write(index_path(tmp.path(), &id), &bytes).unwrap();
        let idx = Index::load(tmp.path()).unwrap();
        assert_eq!(idx.blobs.len(), 2);
        let loc = idx.get(&Hash::of(b"b")).unwrap();
        assert_eq!(
            (loc.pack, loc.offset, loc.length),
            (Hash::of(b"pack"), 9, 1)
        );
    }

    fn one_pack(pack: &[u8], blobs: &[&[u8]]) -> FinishedPack {
        FinishedPack {
            id: Hash::of(pack),
            size: 100,
            blobs: blobs
                .iter()
                .enumerate()
                .map(|(i, b)| PackedBlob {
                    id: Hash::of(b),
                    flags: 0,
                    offset: 8 + i as u64,
                    length: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn a_blob_stored_again_resolves_to_the_pack_that_is_there_whatever_the_file_order() {
        // Attack finding 09: a pack went missing, the next checkpoint stored
        // its blob again in a new pack; a reader must find the new copy
        // whichever of the two index files sorts first.
        let mut orders = HashSet::new();
        for variant in 0..16u8 {
            let repo = tempfile::tempdir().unwrap();
            let (index_dir, packs_dir) = (repo.path().join("index"), repo.path().join("packs"));
            std::fs::create_dir_all(&index_dir).unwrap();
            std::fs::create_dir_all(&packs_dir).unwrap();
            let lost = one_pack(&[b'l', variant], &[b"data", &[b'x', variant]]);
            let again = one_pack(b"again", &[b"data"]);
            let (lost_id, lost_bytes) = encode(std::slice::from_ref(&lost));
            let (again_id, again_bytes) = encode(std::slice::from_ref(&again));
            std::fs::write(index_path(&index_dir, &lost_id), lost_bytes).unwrap();
            std::fs::write(index_path(&index_dir, &again_id), again_bytes).unwrap();
            std::fs::write(packs_dir.join(again.id.to_hex()), b"pack").unwrap();
            orders.insert(lost_id < again_id);

            let read = Index::load(&index_dir).unwrap();
            assert_eq!(read.get(&Hash::of(b"data")).unwrap().pack, again.id);
            // What only the lost pack held is still known to a reader.
            assert_eq!(read.get(&Hash::of(&[b'x', variant])).unwrap().pack, lost.id);
            let reuse = Index::load_for_reuse(&index_dir, &packs_dir).unwrap();
            assert_eq!(reuse.get(&Hash::of(b"data")).unwrap().pack, again.id);
            assert!(!reuse.contains(&Hash::of(&[b'x', variant])));
        }
        assert_eq!(orders.len(), 2, "both file orders were exercised");
    }

    #[test]
    fn damaged_index_is_named_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let (id, mut bytes) = encode(&sample());
        bytes[20] ^= 1;
        std::fs::write(index_path(tmp.path(), &id), &bytes).unwrap();
        // Issue 16, finding 2: one damaged index file must not block the
        // snapshots it does not touch. It is named, and nothing of it is used.
        let idx = Index::load(tmp.path()).unwrap();
        assert!(idx.blobs.is_empty());
        assert_eq!(idx.damaged.len(), 1);
        assert!(idx.damaged[0].0.to_str().unwrap().contains(&id.to_hex()));
        assert!(idx.damaged[0].1.contains("checksum"));
    }

    #[test]
    fn parser_rejects_truncation_at_every_length() {
        let (_, bytes) = encode(&sample());
        for n in 0..bytes.len() {
            assert!(parse(&bytes[..n]).is_err(), "accepted {n} bytes");
        }
        assert!(parse(&bytes).is_ok());
    }
}
