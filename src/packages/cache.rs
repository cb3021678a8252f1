//! The package-capture cache: `<repo>/cache/packages`, one entry per capture
//! name with the [key](super::key) it was taken under and the list itself.
//!
//! Format: the line `DFBPKGC1 <sha256 of the rest>` then a JSON body. A file
//! whose checksum, magic or JSON does not match is ignored as a whole (every
//! capture runs, and the next write replaces it): a cache is never trusted
//! beyond what it can prove. It is written through the atomic path (temp
//! file, fsync, rename), so a crash leaves the old file or the new one; two
//! checkpoints writing at once leave one of the two, and each entry in
//! either is keyed by the stats taken before its command ran, so neither can
//! vouch for a state it did not see.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::key::Witness;
use crate::hash::Hash;
use crate::repo::snapshot::PackageList;

const MAGIC: &str = "DFBPKGC1";

/// An entry older than this runs again whatever its key says: it bounds
/// what the blind spots of a key rule can hide (docs/cli.md#package-lists).
pub const MAX_AGE_SECS: i64 = 24 * 3600;

/// One cached capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// [`Key::digest`](super::key::Key) the list was captured under.
    pub key: Hash,
    /// Witnesses learned by asking the manager (pip's paths, npm's root).
    pub discovered: Vec<Witness>,
    /// When it was captured (Unix seconds).
    pub captured_at: i64,
    /// How long the capture took (ms), shown when it is reused.
    pub duration_ms: u64,
    /// The list as stored in a record.
    pub list: PackageList,
}

/// All entries, by capture name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// Entries by capture name.
    pub entries: BTreeMap<String, Entry>,
}

impl Cache {
    /// Decode a cache file; `None` when anything about it is off.
    pub fn decode(bytes: &[u8]) -> Option<Cache> {
        let nl = bytes.iter().position(|b| *b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..nl]).ok()?;
        let (magic, sum) = head.split_once(' ')?;
        let body = &bytes[nl + 1..];
        if magic != MAGIC || sum != Hash::of(body).to_hex() {
            return None;
        }
        let cache: Cache = serde_json::from_slice(body).ok()?;
        // An entry whose list does not match its own hash was not written by us.
        cache
            .entries
            .iter()
            .all(|(name, e)| {
                &e.list.name == name
                    && e.list.is_known()
                    && e.list.bytes == e.list.output.len() as u64
                    && e.list.sha256 == Hash::of(e.list.output.as_bytes())
            })
            .then_some(cache)
    }

    /// Read `path`; missing, unreadable or damaged: `None`.
    pub fn load(path: &Path) -> Option<Cache> {
        Cache::decode(&std::fs::read(path).ok()?)
    }

    /// Encode as written to disk.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let body = serde_json::to_vec(self).ok()?;
        let mut out = format!("{MAGIC} {}\n", Hash::of(&body)).into_bytes();
        out.extend_from_slice(&body);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, output: &str) -> Entry {
        Entry {
            key: Hash::of(b"k"),
            discovered: vec![Witness::Stat("/x".into())],
            captured_at: 1,
            duration_ms: 5,
            list: PackageList::captured(name, vec![name.into()], output.as_bytes()),
        }
    }

    #[test]
    fn round_trips_and_rejects_any_damage() {
        let mut c = Cache::default();
        c.entries.insert("apt".into(), entry("apt", "curl\ngit\n"));
        let bytes = c.encode().unwrap();
        assert_eq!(Cache::decode(&bytes), Some(c.clone()));
        // Every single-byte change and every truncation is caught.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert_eq!(Cache::decode(&b), None, "flip at {i}");
            assert_eq!(Cache::decode(&bytes[..i]), None, "cut at {i}");
        }
        assert_eq!(Cache::decode(b""), None);
        assert_eq!(Cache::decode(b"garbage\n{}"), None);
    }

    #[test]
    fn a_valid_file_with_an_inconsistent_entry_is_ignored() {
        let mut c = Cache::default();
        let mut e = entry("apt", "curl\n");
        e.list.output = "curl\nevil\n".into(); // hash no longer matches
        c.entries.insert("apt".into(), e);
        assert_eq!(Cache::decode(&c.encode().unwrap()), None);
        let mut c = Cache::default();
        c.entries.insert("pip".into(), entry("apt", "curl\n"));
        assert_eq!(Cache::decode(&c.encode().unwrap()), None, "name mismatch");
        let mut c = Cache::default();
        let mut e = entry("apt", "");
        e.list.status = Some("failed".into());
        c.entries.insert("apt".into(), e);
        assert_eq!(
            Cache::decode(&c.encode().unwrap()),
            None,
            "failed lists are never cached"
        );
    }
}
