//! Snapshots and trees: what a snapshot is, as stored.
//!
//! A snapshot is two objects:
//!
//! * a **tree** (`trees/<sha256>.json`): every tracked root and every entry
//!   under it with the metadata needed to restore it exactly. It holds
//!   nothing about *when* or *why*, so two checkpoints of identical state
//!   share one tree, and "is this content new?" is one hash comparison.
//! * a **record** (`snapshots/<sha256>.json`): kind, label, tags, parent,
//!   host, user, time, the tree's id and a summary. Its id is the SHA-256 of
//!   its bytes. Writing the record is the commit point of a run.
//!
//! Both are JSON so that a person can read them with `jq`; names that are
//! not UTF-8 use [`ByteName`]'s `{"b64": ...}` form.

use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::paths::ByteName;

/// Version written into trees and records; readers refuse newer ones.
pub const OBJECT_VERSION: u32 = 1;

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Before a bootstrap phase, or a named manual checkpoint.
    Checkpoint,
    /// An ordinary backup (`backup-create`).
    Backup,
    /// Taken automatically before a restore or rollback changes anything.
    Safety,
}

impl SnapshotKind {
    /// Lower-case name as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Checkpoint => "checkpoint",
            SnapshotKind::Backup => "backup",
            SnapshotKind::Safety => "safety",
        }
    }
}

/// Counts stored with each record so that listing needs no tree reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Regular files with content.
    pub files: u64,
    /// Directories (including empty ones).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Total bytes of regular files.
    pub bytes: u64,
    /// Bytes of content this run stored that the repository did not have.
    pub new_bytes: u64,
    /// Number of blobs this run stored.
    pub new_blobs: u64,
    /// Entries recorded without content (secret without a key, unreadable).
    pub omitted: u64,
}

/// The stored snapshot record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRecord {
    /// Object format version.
    pub version: u32,
    /// Why it was taken.
    pub kind: SnapshotKind,
    /// Phase or name (`pre-dotfiles`, `before-nvim-change`, `backup`, `before-rollback`).
    pub label: String,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The newest snapshot when this one was taken.
    pub parent: Option<Hash>,
    /// Host name.
    pub host: String,
    /// User name.
    pub user: String,
    /// `$HOME` of the run that took it (absolute). Selection, `latest`,
    /// labels and undo look at the current home's snapshots only (a
    /// repository shared by several homes). Absent in records written
    /// before it existed: those belong to every home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<ByteName>,
    /// RFC 3339 UTC time with nanoseconds.
    pub created_at: String,
    /// The tree with the entries.
    pub tree: Hash,
    /// Tracked roots, `~/`-relative where under `$HOME`.
    pub roots: Vec<ByteName>,
    /// Counts.
    pub summary: Summary,
    /// Package-manager lists captured with this checkpoint (`brew list --versions`, …).
    /// Optional: absent in records written before it existed and when capture is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<PackageList>>,
    /// The bootstrap run a phase checkpoint belongs to (`ops::phases`).
    /// Optional: absent in records written before runs existed, and on
    /// manual checkpoints, backups and safety snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// One command's package list as stored in a record (see `src/packages.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageList {
    /// Name of the capture (`brew`, `apt`, `pip`, `code`, `npm`, or a configured name).
    pub name: String,
    /// The command as run: program as found on `PATH`, then its arguments.
    pub command: Vec<String>,
    /// SHA-256 of the raw stdout: equal lists have equal ids.
    pub sha256: Hash,
    /// Length of the raw stdout in bytes.
    pub bytes: u64,
    /// The stdout as text (invalid UTF-8 replaced by U+FFFD).
    pub output: String,
    /// `failed` or `timeout` when the command ran and gave no usable list:
    /// `output` is then empty and says nothing about what is installed (a
    /// package plan must treat it as unknown, never as "nothing installed").
    /// Absent when the list was captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl PackageList {
    /// The list `command` printed as `stdout` (kept as text, hashed and
    /// measured as the raw bytes).
    pub fn captured(name: &str, command: Vec<String>, stdout: &[u8]) -> PackageList {
        PackageList {
            name: name.to_string(),
            command,
            sha256: Hash::of(stdout),
            bytes: stdout.len() as u64,
            output: String::from_utf8_lossy(stdout).into_owned(),
            status: None,
        }
    }

    /// Whether this is a real list (not a failed or timed-out capture's marker).
    pub fn is_known(&self) -> bool {
        self.status.is_none()
    }
}

/// Type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
}

impl EntryType {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::File => "file",
            EntryType::Dir => "dir",
            EntryType::Symlink => "symlink",
        }
    }
}

/// One file, directory or symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Path relative to its root, `/`-separated; empty for the root itself.
    pub path: ByteName,
    /// Entry type.
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Size in bytes (files), target length (symlinks), 0 (dirs).
    pub size: u64,
    /// SHA-256 of the content (files stored with content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Hash>,
    /// Symlink target, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ByteName>,
    /// Why a file's content was not stored (`secret`, `unreadable`); restore and rollback leave it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omitted: Option<String>,
    /// A secret-class file stored age-encrypted: no plain hash is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Box<Sealed>>,
    /// A regular file that is a hard link of an earlier entry of this
    /// snapshot (tree order): that entry's full path (root, `/`, path, as
    /// in [`crate::diff::full_path`]). The content is recorded here as
    /// well, so the file can be restored alone; restore links it to that
    /// path when it writes or finds the same content there. Absent for the
    /// first path of each inode and in trees written before hard links
    /// were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink: Option<ByteName>,
    /// Extended attributes recorded for this entry, sorted by name
    /// ([`crate::sys::xattr_recorded`]: `user.*` and the POSIX ACLs on
    /// Linux, all on macOS). Absent when there are none and in trees
    /// written before they were recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

/// One extended attribute with its raw value (POSIX ACLs in the kernel's
/// `system.posix_acl_*` encoding).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xattr {
    /// Name with its namespace (`user.mime_type`, `system.posix_acl_access`).
    pub name: ByteName,
    /// Value bytes (text when UTF-8, else `{"b64": ...}`).
    pub value: ByteName,
}

/// Where an encrypted file's content is: a keyed blob id and the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// HMAC-SHA256 of the plaintext under the secret-id key `key`; the blob's id.
    pub id: Hash,
    /// Name of the secret-id key (16 hex digits; `keys/<key>.age`).
    pub key: String,
}

impl Entry {
    /// The id of the blob holding this file's content, plain or sealed.
    pub fn content_id(&self) -> Option<Hash> {
        self.sha256.or(self.sealed.as_ref().map(|s| s.id))
    }
}

/// One tracked root and everything under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootTree {
    /// The root as configured: `~/.zshrc`, `~/.config/nvim`, `/etc/hosts`.
    pub root: ByteName,
    /// False when the root did not exist at snapshot time (rollback removes it if it appears later).
    pub present: bool,
    /// Entries sorted by path bytes; the root itself (path "") first when present.
    pub entries: Vec<Entry>,
    /// Tracked because this symlink (`~/`-relative where under `$HOME`,
    /// itself an entry of another root) resolved here when the snapshot was
    /// taken (symlinked dotfiles, docs/cli.md). Absent for configured roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<ByteName>,
}

/// The content of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Object format version.
    pub version: u32,
    /// Roots in configured order.
    pub roots: Vec<RootTree>,
    /// Entries carry their extended attributes (`Entry::xattrs`; empty
    /// means none). False in trees written before attributes were
    /// recorded: there an empty list means "not known", and restore leaves
    /// the attributes a path has alone (removing an ACL and applying the
    /// stored mode, whose group bits were the mask, would widen access).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub xattrs_recorded: bool,
}

impl Tree {
    /// Canonical bytes and id.
    pub fn encode(&self) -> (Hash, Vec<u8>) {
        let mut bytes = Vec::new();
        self.write_json(&mut bytes)
            .expect("writing to memory never fails");
        (Hash::of(&bytes), bytes)
    }

    /// Write the canonical bytes to `w` (the tree file is written this way,
    /// so its encoding is never held in memory).
    pub fn write_json(&self, w: impl std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer(w, self).map_err(std::io::Error::from)
    }

    /// The id, without holding the encoding: a no-change checkpoint only
    /// needs the id (the tree is stored already), and the buffer was the
    /// largest allocation of such a run (8 MB at 20k files,
    /// docs/performance.md).
    pub fn id(&self) -> Hash {
        struct HashingWriter(sha2::Sha256);
        impl std::io::Write for HashingWriter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                sha2::Digest::update(&mut self.0, buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = std::io::BufWriter::with_capacity(
            64 << 10,
            HashingWriter(<sha2::Sha256 as sha2::Digest>::new()),
        );
        self.write_json(&mut w).expect("hashing never fails");
        let HashingWriter(hasher) = w
            .into_inner()
            .unwrap_or_else(|_| unreachable!("hashing never fails"));
        Hash::from_hasher(hasher)
    }

    /// A SHA-256 over an unambiguous binary encoding of every field, which
    /// the files cache keeps beside the tree's id: when the next scan gives
    /// the same fingerprint, the tree is the same, and its id is known
    /// without serializing it as JSON (the largest cost of a no-change
    /// checkpoint after the scan itself, about 10 ms at 20k files).
    ///
    /// The destructuring below is exhaustive on purpose: a field added to
    /// a tree type without being added here does not compile.
    pub fn fingerprint(&self) -> Hash {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let bytes = |h: &mut sha2::Sha256, b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        let opt = |h: &mut sha2::Sha256, b: Option<&[u8]>| match b {
            None => h.update([0u8]),
            Some(b) => {
                h.update([1u8]);
                bytes(h, b);
            }
        };
        let Tree {
            version,
            roots,
            xattrs_recorded,
        } = self;
        h.update(b"dfb-tree-fingerprint-2");
        h.update(version.to_le_bytes());
        h.update([u8::from(*xattrs_recorded)]);
        h.update((roots.len() as u64).to_le_bytes());
        for RootTree {
            root,
            present,
            entries,
            link,
        } in roots
        {
            bytes(&mut h, &root.0);
            h.update([u8::from(*present)]);
            opt(&mut h, link.as_ref().map(|l| &l.0[..]));
            h.update((entries.len() as u64).to_le_bytes());
            for Entry {
                path,
                kind,
                mode,
                uid,
                gid,
                mtime_ns,
                size,
                sha256,
                target,
                omitted,
                sealed,
                hardlink,
                xattrs,
            } in entries
            {
                bytes(&mut h, &path.0);
                h.update([*kind as u8]);
                h.update(mode.to_le_bytes());
                h.update(uid.to_le_bytes());
                h.update(gid.to_le_bytes());
                h.update(mtime_ns.to_le_bytes());
                h.update(size.to_le_bytes());
                opt(&mut h, sha256.as_ref().map(|x| &x.0[..]));
                opt(&mut h, target.as_ref().map(|t| &t.0[..]));
                opt(&mut h, omitted.as_ref().map(|o| o.as_bytes()));
                match sealed.as_deref() {
                    None => h.update([0u8]),
                    Some(Sealed { id, key }) => {
                        h.update([1u8]);
                        h.update(id.0);
                        bytes(&mut h, key.as_bytes());
                    }
                }
                opt(&mut h, hardlink.as_ref().map(|l| &l.0[..]));
                h.update((xattrs.len() as u64).to_le_bytes());
                for Xattr { name, value } in xattrs {
                    bytes(&mut h, &name.0);
                    bytes(&mut h, &value.0);
                }
            }
        }
        Hash::from_hasher(h)
    }

    /// Every entry with its root.
    pub fn entries(&self) -> impl Iterator<Item = (&RootTree, &Entry)> {
        self.roots
            .iter()
            .flat_map(|r| r.entries.iter().map(move |e| (r, e)))
    }
}

impl SnapshotRecord {
    /// Was it taken in `home` (or before homes were recorded)?
    pub fn of_home(&self, home: Option<&std::path::Path>) -> bool {
        use std::os::unix::ffi::OsStrExt;
        match (&self.home, home) {
            (None, _) => true,
            (Some(mine), Some(h)) => mine.0 == h.as_os_str().as_bytes(),
            (Some(_), None) => false,
        }
    }

    /// Canonical bytes and id.
    pub fn encode(&self) -> (Hash, Vec<u8>) {
        let mut bytes = serde_json::to_vec_pretty(self).expect("records always serialize");
        bytes.push(b'\n');
        (Hash::of(&bytes), bytes)
    }
}

/// A record with its id, as listed.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// SHA-256 of the record file.
    pub id: Hash,
    /// The record.
    pub record: SnapshotRecord,
}

/// Phases of a bootstrap, in order.
pub const PHASES: [&str; 6] = [
    "pre-ansible",
    "pre-homebrew",
    "pre-dotfiles",
    "pre-applications",
    "post-setup",
    "bootstrap-complete",
];

/// Why a label is not acceptable as a manual checkpoint name, if it is not.
///
/// Names become part of messages, shell commands users copy, and Ansible
/// variables, so they are kept to a boring alphabet.
pub fn invalid_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is empty".into());
    }
    if name.len() > 64 {
        return Some(format!(
            "the name is {} bytes long; at most 64 are allowed",
            name.len()
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Some("the name must not start with `.` or `-`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "the name contains {c:?}; use letters, digits, `.`, `_` and `-` only"
        ));
    }
    if name == "latest" {
        return Some("`latest` is reserved (it selects the newest snapshot)".into());
    }
    None
}

/// The report's view of a snapshot lives here, beside the snapshot, so
/// that `report` (a lower layer) does not import the repository.
impl crate::report::SnapshotInfo {
    /// From a stored snapshot.
    pub fn from_snapshot(s: &Snapshot, reused: bool) -> Self {
        let r = &s.record;
        crate::report::SnapshotInfo {
            id: s.id.to_hex(),
            short_id: s.id.short(),
            kind: r.kind.as_str().into(),
            label: r.label.clone(),
            tags: r.tags.clone(),
            created_at: r.created_at.clone(),
            host: r.host.clone(),
            home: r.home.as_ref().map(|h| h.lossy()),
            tree: r.tree.to_hex(),
            parent: r.parent.map(|p| p.to_hex()),
            roots: r.roots.iter().map(|b| b.lossy()).collect(),
            files: r.summary.files,
            dirs: r.summary.dirs,
            symlinks: r.summary.symlinks,
            bytes: r.summary.bytes,
            new_bytes: r.summary.new_bytes,
            omitted: r.summary.omitted,
            reused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_tree() -> Tree {
        let file = Entry {
            path: ByteName(b"a".to_vec()),
            kind: EntryType::File,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime_ns: 3,
            size: 4,
            sha256: Some(Hash::of(b"x")),
            target: None,
            omitted: None,
            sealed: None,
            hardlink: None,
            xattrs: Vec::new(),
        };
        Tree {
            version: OBJECT_VERSION,
            roots: vec![RootTree {
                root: ByteName(b"~".to_vec()),
                present: true,
                entries: vec![file],
                link: None,
            }],
            xattrs_recorded: true,
        }
    }

    /// The fingerprint stands in for the JSON id: every field must move it,
    /// and moving bytes between fields must too.
    #[test]
    fn fingerprint_changes_with_every_field() {
        let base = sample_tree();
        assert_eq!(base.fingerprint(), sample_tree().fingerprint());
        type Edit = Box<dyn Fn(&mut Tree)>;
        let edits: Vec<Edit> = vec![
            Box::new(|t| t.version += 1),
            Box::new(|t| t.xattrs_recorded = false),
            Box::new(|t| t.roots[0].root = ByteName(b"~/x".to_vec())),
            Box::new(|t| t.roots[0].present = false),
            Box::new(|t| t.roots[0].link = Some(ByteName(b"~/l".to_vec()))),
            Box::new(|t| t.roots[0].entries[0].path = ByteName(b"b".to_vec())),
            Box::new(|t| t.roots[0].entries[0].kind = EntryType::Symlink),
            Box::new(|t| t.roots[0].entries[0].mode = 0o600),
            Box::new(|t| t.roots[0].entries[0].uid = 9),
            Box::new(|t| t.roots[0].entries[0].gid = 9),
            Box::new(|t| t.roots[0].entries[0].mtime_ns = 9),
            Box::new(|t| t.roots[0].entries[0].size = 9),
            Box::new(|t| t.roots[0].entries[0].sha256 = None),
            Box::new(|t| t.roots[0].entries[0].target = Some(ByteName(b"t".to_vec()))),
            Box::new(|t| t.roots[0].entries[0].omitted = Some("secret".into())),
            Box::new(|t| {
                t.roots[0].entries[0].sealed = Some(Box::new(Sealed {
                    id: Hash::of(b"s"),
                    key: "k".into(),
                }))
            }),
            Box::new(|t| t.roots[0].entries[0].hardlink = Some(ByteName(b"~/b".to_vec()))),
            Box::new(|t| {
                t.roots[0].entries[0].xattrs = vec![Xattr {
                    name: ByteName(b"user.a".to_vec()),
                    value: ByteName(b"1".to_vec()),
                }]
            }),
            // The same bytes split between name and value another way.
            Box::new(|t| {
                t.roots[0].entries[0].xattrs = vec![Xattr {
                    name: ByteName(b"user.a1".to_vec()),
                    value: ByteName(Vec::new()),
                }]
            }),
            // "a" + root "~" vs "" + root "~a": lengths keep fields apart.
            Box::new(|t| {
                t.roots[0].root = ByteName(b"~a".to_vec());
                t.roots[0].entries[0].path = ByteName(Vec::new());
            }),
            Box::new(|t| t.roots.push(t.roots[0].clone())),
        ];
        let mut seen = std::collections::HashSet::new();
        seen.insert(base.fingerprint());
        for (i, edit) in edits.iter().enumerate() {
            let mut t = sample_tree();
            edit(&mut t);
            assert!(
                seen.insert(t.fingerprint()),
                "edit {i} did not change the fingerprint"
            );
        }
    }

    /// Trees written before hard links and xattrs were recorded read
    /// unchanged and keep their ids (the new fields are left out when empty).
    #[test]
    fn old_trees_read_unchanged_and_keep_their_ids() {
        let old = br#"{"version":1,"roots":[{"root":"~/.zshrc","present":true,"entries":[{"path":"","type":"file","mode":420,"uid":1,"gid":1,"mtime_ns":5,"size":3,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}]}]}"#;
        let t: Tree = serde_json::from_slice(old).unwrap();
        assert_eq!(t.roots[0].entries[0].hardlink, None);
        assert!(t.roots[0].entries[0].xattrs.is_empty());
        assert_eq!(t.encode().1, old.to_vec());
    }

    #[test]
    fn names() {
        assert!(invalid_name("before-nvim-change").is_none());
        assert!(invalid_name("v1.2_x").is_none());
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a\0b",
            "latest",
            "sp ace",
            &"x".repeat(65),
        ] {
            assert!(invalid_name(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tree_ids_are_stable_and_content_based() {
        let t = Tree {
            version: 1,
            roots: vec![RootTree {
                root: ByteName::from("~/.zshrc"),
                present: true,
                entries: vec![Entry {
                    path: ByteName::default(),
                    kind: EntryType::File,
                    mode: 0o644,
                    uid: 1,
                    gid: 1,
                    mtime_ns: 5,
                    size: 3,
                    sha256: Some(Hash::of(b"abc")),
                    target: None,
                    omitted: None,
                    sealed: None,
                    hardlink: None,
                    xattrs: Vec::new(),
                }],
                link: None,
            }],
            xattrs_recorded: false,
        };
        let (a, bytes) = t.encode();
        let back: Tree = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.encode().0, a);
        let mut t2 = t.clone();
        t2.roots[0].entries[0].mode = 0o600;
        assert_ne!(t2.encode().0, a);
    }
}
