//! External copies of the repository: where they live and how objects move.
//!
//! An external copy is a complete repository of its own (same `config.json`,
//! same layout), so `backup-verify --repo DIR` works on it and a new machine
//! can restore from it. Only the immutable, self-checking objects travel:
//!
//! | relative path | checked by |
//! |---|---|
//! | `config.json` | size + SHA-256 of the source bytes |
//! | `keys/<name>.age` | size + SHA-256 of the source bytes (sealed keys only) |
//! | `packs/<sha256>` | its name (SHA-256 of the file) |
//! | `index/<sha256>` | its name |
//! | `trees/<sha256>.json` | its name |
//! | `snapshots/<sha256>.json` | its name |
//!
//! Nothing else is ever copied ([`classify`] is the one filter): not the
//! files cache, the run log, the lock, temp files, nor anything under
//! `keys/` that is not a sealed `.age` key (defence in depth: the plain
//! secret-id keys live outside the repository, and must never leave the
//! machine even if someone puts one inside it).
//!
//! A [`Store`] is one side of a copy: [`dir::DirStore`] (a local directory:
//! the repository itself, a drive, a mount, a cache) or [`rclone::RcloneStore`]
//! (a remote reached through the `rclone` binary). The order of copies and
//! the closure check that keeps a copy consistent live in `crate::ops::sync`.

pub mod dir;
pub mod rclone;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{ExternalTarget, Settings, TargetLocation};
use crate::error::Result;
use crate::hash::Hash;
use crate::repo::layout;

/// What an object is; also the order in which a sync copies them.
/// Which external target an option means: `--external` alone (the only
/// configured target) or `--external=NAME`. Parsed once here instead of each
/// binary decoding clap's empty `default_missing_value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetChoice {
    /// The flag without a value: the only configured target.
    Only,
    /// `=NAME`: the target with that name.
    Named(String),
}

impl TargetChoice {
    /// The name given, if any (what target selection takes).
    pub fn name(&self) -> Option<&str> {
        match self {
            TargetChoice::Only => None,
            TargetChoice::Named(n) => Some(n),
        }
    }
}

/// For clap: a bare `--external` arrives as `default_missing_value = ""`, and
/// `--external=` (an empty name) means the same, as it always has.
impl std::str::FromStr for TargetChoice {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(if s.is_empty() {
            TargetChoice::Only
        } else {
            TargetChoice::Named(s.to_string())
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// `config.json`: marks the copy as a repository; first.
    Config,
    /// `keys/<name>.age`: sealed secret-id keys, needed to restore secrets.
    Key,
    /// `packs/<id>`: blob contents.
    Pack,
    /// `index/<id>`: which pack holds each blob.
    Index,
    /// `trees/<id>.json`: snapshot contents.
    Tree,
    /// `snapshots/<id>.json`: commits a snapshot; always last.
    Snapshot,
}

impl ObjectKind {
    /// Subdirectory holding this kind (`""` for `config.json`).
    pub fn dir(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Key => layout::KEYS,
            ObjectKind::Pack => layout::PACKS,
            ObjectKind::Index => layout::INDEX,
            ObjectKind::Tree => layout::TREES,
            ObjectKind::Snapshot => layout::SNAPSHOTS,
        }
    }

    /// Name used in stats and messages.
    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "keys",
            ObjectKind::Pack => "packs",
            ObjectKind::Index => "index_files",
            ObjectKind::Tree => "trees",
            ObjectKind::Snapshot => "snapshots",
        }
    }
}

/// Every kind, in copy order.
pub const COPY_ORDER: [ObjectKind; 6] = [
    ObjectKind::Config,
    ObjectKind::Key,
    ObjectKind::Pack,
    ObjectKind::Index,
    ObjectKind::Tree,
    ObjectKind::Snapshot,
];

/// The kinds a prune removes, in the order it removes them: records first
/// (snapshot records, then the index files that name dropped packs), then
/// the data nothing kept refers to (packs, trees), so that a crash between
/// two steps never leaves a record naming missing data. The order
/// `ops::prune::collect_garbage` follows in a local repository.
pub const REMOVE_ORDER: [ObjectKind; 4] = [
    ObjectKind::Snapshot,
    ObjectKind::Index,
    ObjectKind::Pack,
    ObjectKind::Tree,
];

fn hex_name(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Which object a relative path is, or `None` when it must never be copied.
pub fn classify(rel: &str) -> Option<ObjectKind> {
    if rel == layout::CONFIG {
        return Some(ObjectKind::Config);
    }
    let (dir, name) = rel.split_once('/')?;
    if name.contains('/') {
        return None;
    }
    match dir {
        // Secret-id key names are 16 hex digits (`crate::secrets::key_name`).
        layout::KEYS => name
            .strip_suffix(".age")
            .filter(|n| hex_name(n, 16))
            .map(|_| ObjectKind::Key),
        layout::PACKS => hex_name(name, 64).then_some(ObjectKind::Pack),
        layout::INDEX => hex_name(name, 64).then_some(ObjectKind::Index),
        layout::TREES => name
            .strip_suffix(".json")
            .filter(|n| hex_name(n, 64))
            .map(|_| ObjectKind::Tree),
        layout::SNAPSHOTS => name
            .strip_suffix(".json")
            .filter(|n| hex_name(n, 64))
            .map(|_| ObjectKind::Snapshot),
        _ => None,
    }
}

/// The SHA-256 a content-addressed object must have (from its name).
pub fn named_hash(rel: &str) -> Option<Hash> {
    match classify(rel)? {
        ObjectKind::Pack | ObjectKind::Index | ObjectKind::Tree | ObjectKind::Snapshot => {
            let name = rel.rsplit('/').next()?;
            name.trim_end_matches(".json").parse().ok()
        }
        ObjectKind::Config | ObjectKind::Key => None,
    }
}

/// Objects a store holds: relative path → size. Only classified paths.
pub type Listing = BTreeMap<String, u64>;

/// What a copied object must be once it has landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: Hash,
}

/// One side of a copy. `Sync`: objects of one kind are copied in parallel.
pub trait Store: Sync {
    /// Where it is, for messages (`~/mnt/drive/backups`, `rclone:nas:dotfiles`).
    fn shown(&self) -> String;
    /// The objects present (temp files and anything [`classify`] rejects are left out).
    fn list(&self) -> Result<Listing>;
    /// Read a (small) object whole.
    fn read(&self, rel: &str) -> Result<Vec<u8>>;
    /// The object's path on this machine, when the store is a local directory.
    fn local_path(&self, rel: &str) -> Option<PathBuf>;
    /// This store as an rclone remote, for copies from it.
    fn as_rclone(&self) -> Option<&rclone::RcloneStore> {
        None
    }
    /// Copy `rel` from `src` under a temp name, check that what landed is
    /// `want` (size and SHA-256), then rename it into place. Returns the bytes copied.
    fn put(&self, rel: &str, src: &dyn Store, want: &Want) -> Result<u64>;
    /// Make the objects copied into `dir` durable before anything refers to them.
    fn flush(&self, dir: &str) -> Result<()>;
    /// Delete an object (external prune). One that is already gone is not an error.
    fn remove(&self, rel: &str) -> Result<()>;
}

/// Open the store of a configured target.
pub fn open_target(target: &ExternalTarget, settings: &Settings) -> Result<Box<dyn Store>> {
    Ok(match &target.location {
        TargetLocation::Dir(p) => Box::new(dir::DirStore::new(p)),
        TargetLocation::Rclone(remote) => {
            Box::new(rclone::RcloneStore::new(remote, settings.external.timeout)?)
        }
    })
}

/// The local directory of a target, if it is one.
pub fn target_dir(target: &ExternalTarget) -> Option<&Path> {
    match &target.location {
        TargetLocation::Dir(p) => Some(p),
        TargetLocation::Rclone(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_choice_reads_a_bare_flag_as_the_only_target() {
        assert_eq!("".parse::<TargetChoice>().unwrap(), TargetChoice::Only);
        assert_eq!("".parse::<TargetChoice>().unwrap().name(), None);
        let nas = "nas".parse::<TargetChoice>().unwrap();
        assert_eq!(nas, TargetChoice::Named("nas".into()));
        assert_eq!(nas.name(), Some("nas"));
    }

    #[test]
    fn only_repository_objects_are_copied() {
        let h = "ab".repeat(32);
        assert_eq!(classify("config.json"), Some(ObjectKind::Config));
        assert_eq!(classify(&format!("packs/{h}")), Some(ObjectKind::Pack));
        assert_eq!(classify(&format!("index/{h}")), Some(ObjectKind::Index));
        assert_eq!(classify(&format!("trees/{h}.json")), Some(ObjectKind::Tree));
        assert_eq!(
            classify(&format!("snapshots/{h}.json")),
            Some(ObjectKind::Snapshot)
        );
        assert_eq!(classify("keys/0123456789abcdef.age"), Some(ObjectKind::Key));
        for never in [
            "lock",
            "cache/files",
            "logs/runs.jsonl",
            "keys/0123456789abcdef.key",
            "keys/0123456789abcdef",
            "keys/sub/0123456789abcdef.age",
            "keys/../config.json",
            ".dfb-tmp.1.2.config.json",
            &format!("packs/.dfb-tmp.1.2.{h}"),
            &format!("packs/{h}.json"),
            &format!("trees/{h}"),
            "packs/ABCD",
        ] {
            assert_eq!(classify(never), None, "{never}");
        }
    }

    #[test]
    fn content_addressed_names_give_their_hash() {
        let h = "cd".repeat(32);
        assert_eq!(named_hash(&format!("trees/{h}.json")).unwrap().to_hex(), h);
        assert_eq!(named_hash("keys/0123456789abcdef.age"), None);
        assert_eq!(named_hash("config.json"), None);
    }
}
