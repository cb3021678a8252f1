//! The files cache: `stat` facts of each file at its last checkpoint and the
//! SHA-256 of its content, so unchanged files are never read again.
//!
//! Like git's index and borg's files cache, an entry is trusted only when
//! size, mtime (ns), ctime (ns), inode and device all match. It lives in
//! `<repo>/cache/files`, is not part of any snapshot, and can be deleted at
//! any time (the next run just reads everything). Prune deletes it because a
//! cached hash may name a blob that prune removed. A damaged cache is
//! detected by its checksum and ignored with a warning.
//!
//! Racy files: a file whose mtime is within [`RACY_WINDOW_NS`] of the scan's
//! start may still be changed in the same timestamp tick after we read it,
//! so it is not cached and will be read again next time.

use std::path::Path;

use rustc_hash::FxHashMap;

use crate::hash::Hash;

const MAGIC: &[u8; 8] = b"DFBCACH1";

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

/// Absolute path bytes → (stat facts, content hash). FxHash: the keys are
/// our own paths, not attacker-chosen, and SipHash showed up in profiles.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FilesCache {
    /// Entries.
    pub entries: FxHashMap<Vec<u8>, (StatKey, Hash)>,
}

impl FilesCache {
    /// Decode; `None` when the bytes are damaged or of another format.
    pub fn decode(bytes: &[u8]) -> Option<FilesCache> {
        if bytes.len() < 8 + 32 || &bytes[..8] != MAGIC {
            return None;
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Hash::of(body).0 != sum {
            return None;
        }
        // Count first: sizing the table from the byte length overshot to the
        // next power of two (6.4 MB instead of 3.2 MB at 20k files, and the
        // cache is held twice during a run: peak memory, docs/performance.md).
        let mut count = 0usize;
        let mut at = 8usize;
        while let Some(len) = body.get(at..at + 4) {
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            at = at.checked_add(4 + len + 8 * 5 + 32)?;
            count += 1;
        }
        let mut pos = 8;
        let mut entries = FxHashMap::with_capacity_and_hasher(count, Default::default());
        let take = |pos: &mut usize, n: usize| -> Option<&[u8]> {
            let s = body.get(*pos..*pos + n)?;
            *pos += n;
            Some(s)
        };
        while pos < body.len() {
            let len = u32::from_le_bytes(take(&mut pos, 4)?.try_into().ok()?) as usize;
            let path = take(&mut pos, len)?.to_vec();
            let rec = take(&mut pos, 8 * 5 + 32)?;
            let u = |i: usize| u64::from_le_bytes(rec[i * 8..i * 8 + 8].try_into().expect("8"));
            let key = StatKey {
                size: u(0),
                mtime_ns: u(1) as i64,
                ctime_ns: u(2) as i64,
                ino: u(3),
                dev: u(4),
            };
            let hash = Hash(rec[40..72].try_into().ok()?);
            entries.insert(path, (key, hash));
        }
        Some(FilesCache { entries })
    }

    /// Encode with a trailing checksum; entries sorted so equal caches encode equally.
    pub fn encode(&self) -> Vec<u8> {
        let mut keys: Vec<&Vec<u8>> = self.entries.keys().collect();
        keys.sort();
        let mut out = Vec::with_capacity(8 + keys.len() * 120);
        out.extend_from_slice(MAGIC);
        for k in keys {
            let (s, h) = &self.entries[k];
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

    /// The cached hash for `path` if every stat fact matches.
    pub fn lookup(&self, path: &Path, key: &StatKey) -> Option<Hash> {
        use std::os::unix::ffi::OsStrExt;
        match self.entries.get(path.as_os_str().as_bytes()) {
            Some((k, h)) if k == key => Some(*h),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let mut c = FilesCache::default();
        let key = StatKey {
            size: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            ino: 4,
            dev: 5,
        };
        c.entries
            .insert(b"/h/.zshrc".to_vec(), (key, Hash::of(b"x")));
        c.entries.insert(vec![b'/', 0xff], (key, Hash::of(b"y")));
        let bytes = c.encode();
        assert_eq!(FilesCache::decode(&bytes).unwrap(), c);
        let mut bad = bytes.clone();
        bad[12] ^= 1;
        assert!(FilesCache::decode(&bad).is_none());
        assert!(FilesCache::decode(&bytes[..bytes.len() - 1]).is_none());
        let other = StatKey { ctime_ns: 9, ..key };
        assert!(c.lookup(Path::new("/h/.zshrc"), &key).is_some());
        assert!(c.lookup(Path::new("/h/.zshrc"), &other).is_none());
    }
}
