//! The files cache: `stat` facts of each file at its last checkpoint and the
//! SHA-256 of its content, so unchanged files are never read again.
//!
//! Like git's index and borg's files cache, an entry is trusted only when
//! size, mtime (ns), ctime (ns), inode and device all match. It lives in
//! `<repo>/cache/files`, is not part of any snapshot, and can be deleted at
//! any time (the next run just reads everything). A damaged cache is
//! detected by its checksum and ignored with a warning.
//!
//! A cached hash must never name a blob that is gone (prune removes blobs no
//! snapshot uses), so the cache records the tree it was built with, whose
//! files are exactly its entries: it is used only while a snapshot of that
//! tree exists, since then all those blobs are live. That rule, not the order
//! of writes, keeps it safe, so the cache is written without fsync: after a
//! power cut it is the old one, the new one, or damaged, and each is fine.
//!
//! Racy files: a file whose mtime is within [`RACY_WINDOW_NS`] of the scan's
//! start may still be changed in the same timestamp tick after we read it,
//! so it is not cached and will be read again next time.

use std::hash::Hasher;
use std::path::Path;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use crate::hash::Hash;

/// Format 3: as 2, but a file with extended attributes is never an entry
/// (a hit vouches for "no attributes"; `ops::backup::read_xattrs`). A
/// format-2 cache may hold such files, so it is not used.
const MAGIC: &[u8; 8] = b"DFBCACH3";
/// Bytes of one entry after its path: size, mtime, ctime, inode, device, SHA-256.
const RECORD: usize = 8 * 5 + 32;

/// Files modified this close to the scan start are not cached (coarse
/// kernel timestamps are jiffy- or second-granular on some file systems).
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// Stat facts that must all match for a cached hash to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatKey {
    /// Size in bytes.
    pub size: u64,
    /// mtime, ns.
    pub mtime_ns: i64,
    /// ctime, ns.
    pub ctime_ns: i64,
    /// Inode.
    pub ino: u64,
    /// Device.
    pub dev: u64,
}

/// The tree a cache was built with: its id, and its
/// [fingerprint](crate::repo::snapshot::Tree::fingerprint), which lets a
/// checkpoint that finds the same tree again skip encoding it to learn its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeStamp {
    /// The tree's id (SHA-256 of its JSON).
    pub id: Hash,
    /// [`Tree::fingerprint`](crate::repo::snapshot::Tree::fingerprint).
    pub fingerprint: Hash,
}

/// One entry to encode: absolute path bytes, stat facts, content hash.
pub type CacheEntry<'a> = (&'a [u8], StatKey, Hash);

/// The loaded cache: its encoded bytes, and a table of entry offsets found
/// by a hash of the path (FxHash: the keys are our own paths, not
/// attacker-chosen, and SipHash showed up in profiles).
///
/// Why not a map of owned paths: at 20k files that was a 3.2 MB table plus
/// 1.1 MB of path copies next to the 2.2 MB file; offsets take 128 KB
/// (peak memory, docs/performance.md).
#[derive(Default)]
pub struct FilesCache {
    /// The tree whose file entries these are (`None`: built by no snapshot).
    pub tree: Option<TreeStamp>,
    bytes: Vec<u8>,
    table: HashTable<u32>,
}

impl std::fmt::Debug for FilesCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesCache")
            .field("tree", &self.tree)
            .field("entries", &self.len())
            .finish()
    }
}

/// A cache written by an older version (format 1 had no tree stamp,
/// format 2 kept files with extended attributes).
pub fn is_older_format(bytes: &[u8]) -> bool {
    bytes.starts_with(b"DFBCACH1") || bytes.starts_with(b"DFBCACH2")
}

fn path_hash(path: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(path);
    h.finish()
}

impl FilesCache {
    /// Decode; `None` when the bytes are damaged or of another format.
    pub fn decode(bytes: &[u8]) -> Option<FilesCache> {
        FilesCache::decode_owned(bytes.to_vec())
    }

    /// [`decode`](Self::decode), keeping `bytes` as the cache's storage.
    pub fn decode_owned(bytes: Vec<u8>) -> Option<FilesCache> {
        if bytes.len() < 8 + 1 + 32 || &bytes[..8] != MAGIC {
            return None;
        }
        let body_len = bytes.len() - 32;
        let (body, sum) = bytes.split_at(body_len);
        if Hash::of(body).0 != sum {
            return None;
        }
        let (tree, start) = match body[8] {
            0 => (None, 9),
            1 => {
                let id = Hash(body.get(9..41)?.try_into().ok()?);
                let fingerprint = Hash(body.get(41..73)?.try_into().ok()?);
                (Some(TreeStamp { id, fingerprint }), 73)
            }
            _ => return None,
        };
        // Offsets are u32: a cache over 4 GiB is not one of ours.
        u32::try_from(body_len).ok()?;
        let mut offsets = Vec::new();
        let mut at = start;
        while at < body_len {
            let len = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
            let end = at.checked_add(4 + len + RECORD)?;
            if end > body_len {
                return None;
            }
            offsets.push(at as u32);
            at = end;
        }
        let mut table = HashTable::with_capacity(offsets.len());
        for off in offsets {
            let path = path_at(body, off);
            let h = path_hash(path);
            match table.entry(
                h,
                |o: &u32| path_at(body, *o) == path,
                |o: &u32| path_hash(path_at(body, *o)),
            ) {
                hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = off,
                hashbrown::hash_table::Entry::Vacant(e) => {
                    e.insert(off);
                }
            }
        }
        let mut bytes = bytes;
        bytes.truncate(body_len);
        Some(FilesCache { tree, bytes, table })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The stat facts and hash cached for `path`.
    pub fn get(&self, path: &[u8]) -> Option<(StatKey, Hash)> {
        let off = *self
            .table
            .find(path_hash(path), |o| path_at(&self.bytes, *o) == path)?;
        let at = off as usize + 4 + path.len();
        let rec = &self.bytes[at..at + RECORD];
        let u = |i: usize| u64::from_le_bytes(rec[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let key = StatKey {
            size: u(0),
            mtime_ns: u(1) as i64,
            ctime_ns: u(2) as i64,
            ino: u(3),
            dev: u(4),
        };
        Some((key, Hash(rec[40..72].try_into().expect("32 bytes"))))
    }

    /// The cached hash for `path` if every stat fact matches.
    pub fn lookup(&self, path: &Path, key: &StatKey) -> Option<Hash> {
        use std::os::unix::ffi::OsStrExt;
        match self.get(path.as_os_str().as_bytes()) {
            Some((k, h)) if k == *key => Some(h),
            _ => None,
        }
    }

    /// Whether a cache of `tree` with these `len` entries (paths unique, any
    /// order) would equal this one.
    pub fn same_as<'a>(
        &self,
        tree: Option<TreeStamp>,
        len: usize,
        mut entries: impl Iterator<Item = CacheEntry<'a>>,
    ) -> bool {
        self.tree == tree
            && self.len() == len
            && entries.all(|(k, s, h)| self.get(k).is_some_and(|(os, oh)| os == s && oh == h))
    }

    /// Encode a cache of `tree` (sorted in place, so equal caches encode
    /// equally; paths unique), with a trailing checksum.
    pub fn encode_entries(tree: Option<TreeStamp>, entries: &mut [CacheEntry<'_>]) -> Vec<u8> {
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        FilesCache::encode_sorted(tree, entries.iter().copied())
    }

    /// [`encode_entries`](Self::encode_entries) for entries already sorted by path.
    pub fn encode_sorted<'a, I>(tree: Option<TreeStamp>, entries: I) -> Vec<u8>
    where
        I: Iterator<Item = CacheEntry<'a>> + Clone,
    {
        let mut out = Vec::with_capacity(
            8 + 33
                + 32
                + entries
                    .clone()
                    .map(|e| 4 + e.0.len() + RECORD)
                    .sum::<usize>(),
        );
        out.extend_from_slice(MAGIC);
        match &tree {
            None => out.push(0),
            Some(t) => {
                out.push(1);
                out.extend_from_slice(&t.id.0);
                out.extend_from_slice(&t.fingerprint.0);
            }
        }
        for (k, s, h) in entries {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            for v in [s.size, s.mtime_ns as u64, s.ctime_ns as u64, s.ino, s.dev] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&h.0);
        }
        let sum = Hash::of(&out);
        out.extend_from_slice(&sum.0);
        out
    }
}

/// The path of the entry at `off` (offsets come from a validated walk).
fn path_at(body: &[u8], off: u32) -> &[u8] {
    let at = off as usize;
    let len = u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes")) as usize;
    &body[at + 4..at + 4 + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StatKey {
        StatKey {
            size: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            ino: 4,
            dev: 5,
        }
    }

    #[test]
    fn round_trip_and_damage_detection() {
        let key = key();
        let tree = Some(TreeStamp {
            id: Hash::of(b"tree"),
            fingerprint: Hash::of(b"fingerprint"),
        });
        let odd = [b'/', 0xff];
        let mut entries = vec![
            (&b"/h/.zshrc"[..], key, Hash::of(b"x")),
            (&odd[..], key, Hash::of(b"y")),
        ];
        let bytes = FilesCache::encode_entries(tree, &mut entries);
        let c = FilesCache::decode(&bytes).unwrap();
        assert_eq!(c.tree, tree);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&odd), Some((key, Hash::of(b"y"))));
        assert!(c.same_as(tree, 2, entries.iter().copied()));
        assert!(!c.same_as(None, 2, entries.iter().copied()));
        assert!(!c.same_as(tree, 1, entries[..1].iter().copied()));
        let mut bad = bytes.clone();
        bad[12] ^= 1;
        assert!(FilesCache::decode(&bad).is_none());
        assert!(FilesCache::decode(&bytes[..bytes.len() - 1]).is_none());
        let other = StatKey { ctime_ns: 9, ..key };
        assert!(c.lookup(Path::new("/h/.zshrc"), &key).is_some());
        assert!(c.lookup(Path::new("/h/.zshrc"), &other).is_none());
        assert!(c.lookup(Path::new("/h/.bashrc"), &key).is_none());
        let treeless = FilesCache::decode(&FilesCache::encode_entries(None, &mut [])).unwrap();
        assert_eq!(treeless.tree, None);
        assert!(treeless.is_empty());
    }

    #[test]
    fn an_entry_running_past_the_end_is_damage() {
        let key = key();
        let mut entries = vec![(&b"/h/a"[..], key, Hash::of(b"x"))];
        let mut bytes = FilesCache::encode_entries(None, &mut entries);
        // Claim a longer path, then re-seal the checksum so only the walk can notice.
        bytes[9] = 200;
        let body = bytes.len() - 32;
        let sum = Hash::of(&bytes[..body]);
        bytes[body..].copy_from_slice(&sum.0);
        assert!(FilesCache::decode(&bytes).is_none());
    }
}
