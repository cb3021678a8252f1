//! Differences between two states of the tracked paths: two snapshots, or a
//! snapshot and the live home (scanned the way a checkpoint scans it).
//!
//! Two layers:
//!
//! * [`compare`] looks at one path present on both sides and says which facts
//!   differ (type, content, symlink target, mode, owner, mtime). The rollback
//!   and restore planner (`ops::restore::plan`) uses it too, so "what changed"
//!   means the same thing in `backup-list --diff` and in a rollback plan;
//! * [`diff`] walks two flattened states in path order and lists every path
//!   added, removed or changed, with sizes. A modification time alone is not
//!   a change here (touching a file is not news to someone asking "what did
//!   this phase change?"); the planner still restores it.
//!
//! Paths are compared as bytes, so names that are not UTF-8 keep their
//! identity; each reported item carries the exact bytes as `path_b64` (the
//! envelope's convention) when they are not UTF-8.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::repo::snapshot::{Entry, EntryType, Tree};

/// Which facts differ between two entries for the same path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Differences {
    /// File, directory and symlink are not interchangeable.
    pub kind: bool,
    /// Regular-file content (by content id; by size and mtime when one side
    /// has no stored content, e.g. an omitted secret).
    pub content: bool,
    /// Symlink target bytes.
    pub target: bool,
    /// Permission bits.
    pub mode: bool,
    /// uid or gid.
    pub owner: bool,
    /// Modification time.
    pub mtime: bool,
    /// Extended attributes or ACLs.
    pub xattrs: bool,
    /// Which earlier path the file is a hard link of (or none).
    pub hardlink: bool,
}

impl Differences {
    /// The path's data differs (what a rollback must rewrite).
    pub fn data(&self) -> bool {
        self.kind || self.content || self.target || self.hardlink
    }

    /// Anything a diff reports (everything but a bare mtime change).
    pub fn reported(&self) -> bool {
        self.data() || self.mode || self.owner || self.xattrs
    }

    /// Names of the reported differences, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        if self.kind {
            // Everything else about a path that changed type is moot.
            return vec!["type"];
        }
        let mut out = Vec::new();
        for (set, name) in [
            (self.content, "content"),
            (self.target, "target"),
            (self.hardlink, "hardlink"),
            (self.mode, "mode"),
            (self.owner, "owner"),
            (self.xattrs, "xattrs"),
        ] {
            if set {
                out.push(name);
            }
        }
        out
    }
}

/// Compare the entries one path has on two sides.
pub fn compare(old: &Entry, new: &Entry) -> Differences {
    let kind = old.kind != new.kind;
    let content = !kind
        && old.kind == EntryType::File
        && match (old.content_id(), new.content_id()) {
            (Some(a), Some(b)) => a != b,
            // No stored content on one side (secret, unreadable): the stat
            // facts are the best evidence there is.
            _ => old.size != new.size || old.mtime_ns != new.mtime_ns,
        };
    let target = !kind && old.kind == EntryType::Symlink && old.target != new.target;
    Differences {
        kind,
        content,
        target,
        mode: !kind && old.mode != new.mode,
        owner: old.uid != new.uid || old.gid != new.gid,
        mtime: old.mtime_ns != new.mtime_ns,
        xattrs: !kind && old.xattrs != new.xattrs,
        hardlink: !kind && old.kind == EntryType::File && old.hardlink != new.hardlink,
    }
}

/// Entries keyed by full path bytes (`~/.zshrc`, `~/.config/nvim/init.lua`).
pub type Flat<'t> = BTreeMap<Vec<u8>, &'t Entry>;

/// Flatten a tree into full paths (root, `/`, relative path), as `backup-list --files` shows them.
pub fn flatten(tree: &Tree) -> Flat<'_> {
    let mut out = Flat::new();
    for root in &tree.roots {
        for e in &root.entries {
            out.insert(full_path(&root.root.0, &e.path.0), e);
        }
    }
    out
}

/// `root` joined with `rel` (empty `rel`: the root itself).
pub fn full_path(root: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut full = root.to_vec();
    if !rel.is_empty() {
        full.push(b'/');
        full.extend_from_slice(rel);
    }
    full
}

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only on the new side.
    Added,
    /// Only on the old side.
    Removed,
    /// On both sides, with reported differences.
    Changed,
}

/// One path in a diff.
#[derive(Debug, Clone, Serialize)]
pub struct DiffItem {
    /// Added, removed or changed.
    pub change: Change,
    /// Full path (lossy UTF-8).
    pub path: String,
    /// The exact path bytes in base64 when they are not UTF-8.
    pub path_b64: Option<String>,
    /// Type on the new side (removed: on the old side).
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Type on the old side when it changed.
    pub old_type: Option<EntryType>,
    /// Size on the new side (removed: on the old side); files and symlinks.
    pub size: u64,
    /// Size on the old side (changed only).
    pub old_size: Option<u64>,
    /// For changed paths: `type`, or any of `content`, `target`, `mode`, `owner`.
    pub changes: Vec<&'static str>,
    /// Mode on the new side (removed: old side), 4 octal digits.
    pub mode: String,
    /// Mode on the old side when it changed.
    pub old_mode: Option<String>,
}

/// Counts over a diff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiffStats {
    /// Paths added.
    pub added: u64,
    /// Paths removed.
    pub removed: u64,
    /// Paths changed.
    pub changed: u64,
    /// Bytes of files added.
    pub added_bytes: u64,
    /// Bytes of files removed.
    pub removed_bytes: u64,
    /// Bytes of changed files on the new side.
    pub changed_bytes: u64,
}

fn b64_if_not_utf8(bytes: &[u8]) -> Option<String> {
    use base64::Engine as _;
    std::str::from_utf8(bytes)
        .is_err()
        .then(|| base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn file_bytes(e: &Entry) -> u64 {
    if e.kind == EntryType::File {
        e.size
    } else {
        0
    }
}

fn shown_size(e: &Entry) -> u64 {
    if e.kind == EntryType::Dir {
        0
    } else {
        e.size
    }
}

/// Every path added, removed or changed from `old` to `new`, in path order.
pub fn diff(old: &Flat<'_>, new: &Flat<'_>) -> (Vec<DiffItem>, DiffStats) {
    let mut items = Vec::new();
    let mut stats = DiffStats::default();
    let item = |change, path: &[u8], e: &Entry| DiffItem {
        change,
        path: String::from_utf8_lossy(path).into_owned(),
        path_b64: b64_if_not_utf8(path),
        kind: e.kind,
        old_type: None,
        size: shown_size(e),
        old_size: None,
        changes: Vec::new(),
        mode: format!("{:04o}", e.mode),
        old_mode: None,
    };
    // Both maps are sorted by the same byte order: one merge pass.
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            std::cmp::Ordering::Less => {
                let (path, e) = a.next().expect("peeked");
                stats.removed += 1;
                stats.removed_bytes += file_bytes(e);
                items.push(item(Change::Removed, path, e));
            }
            std::cmp::Ordering::Greater => {
                let (path, e) = b.next().expect("peeked");
                stats.added += 1;
                stats.added_bytes += file_bytes(e);
                items.push(item(Change::Added, path, e));
            }
            std::cmp::Ordering::Equal => {
                let (path, was) = a.next().expect("peeked");
                let (_, now) = b.next().expect("peeked");
                let d = compare(was, now);
                if !d.reported() {
                    continue;
                }
                stats.changed += 1;
                stats.changed_bytes += file_bytes(now);
                let mut it = item(Change::Changed, path, now);
                it.old_type = d.kind.then_some(was.kind);
                it.old_size = Some(shown_size(was));
                it.old_mode = (was.mode != now.mode).then(|| format!("{:04o}", was.mode));
                it.changes = d.names();
                items.push(it);
            }
        }
    }
    (items, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;
    use crate::paths::ByteName;
    use crate::repo::snapshot::RootTree;

    fn file(path: &str, body: &[u8], mode: u32) -> Entry {
        Entry {
            path: ByteName::from(path),
            kind: EntryType::File,
            mode,
            uid: 1,
            gid: 1,
            mtime_ns: 1,
            size: body.len() as u64,
            sha256: Some(Hash::of(body)),
            target: None,
            omitted: None,
            sealed: None,
            hardlink: None,
            xattrs: Vec::new(),
        }
    }

    fn tree(entries: Vec<Entry>) -> Tree {
        Tree {
            version: 1,
            roots: vec![RootTree {
                root: ByteName::from("~/.config"),
                present: true,
                entries,
                link: None,
            }],
            xattrs_recorded: true,
        }
    }

    #[test]
    fn added_removed_changed_in_path_order() {
        let old = tree(vec![
            file("a", b"same", 0o644),
            file("b", b"old", 0o644),
            file("c", b"gone", 0o644),
            file("m", b"m", 0o644),
        ]);
        let mut touched = file("a", b"same", 0o644);
        touched.mtime_ns = 99; // mtime alone is not reported
        let new = tree(vec![
            touched,
            file("b", b"newer", 0o644),
            file("d", b"new!", 0o644),
            file("m", b"m", 0o600),
        ]);
        let (items, stats) = diff(&flatten(&old), &flatten(&new));
        let got: Vec<(Change, &str, Vec<&str>)> = items
            .iter()
            .map(|i| (i.change, i.path.as_str(), i.changes.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Change::Changed, "~/.config/b", vec!["content"]),
                (Change::Removed, "~/.config/c", vec![]),
                (Change::Added, "~/.config/d", vec![]),
                (Change::Changed, "~/.config/m", vec!["mode"]),
            ]
        );
        assert_eq!(items[0].old_size, Some(3));
        assert_eq!(items[0].size, 5);
        assert_eq!(items[3].old_mode.as_deref(), Some("0644"));
        assert_eq!(
            stats,
            DiffStats {
                added: 1,
                removed: 1,
                changed: 2,
                added_bytes: 4,
                removed_bytes: 4,
                changed_bytes: 6
            }
        );
    }

    #[test]
    fn type_change_hides_the_rest_and_targets_compare_bytes() {
        let mut link = file("x", b"", 0o777);
        link.kind = EntryType::Symlink;
        link.sha256 = None;
        link.target = Some(ByteName(b"t\xff".to_vec()));
        let mut link2 = link.clone();
        link2.target = Some(ByteName(b"t\xfe".to_vec()));
        let d = compare(&link, &link2);
        assert!(d.target && !d.content && !d.kind);
        assert_eq!(d.names(), vec!["target"]);
        let f = file("x", b"abc", 0o644);
        let d = compare(&f, &link);
        assert_eq!(d.names(), vec!["type"]);
        assert!(d.data());
    }

    #[test]
    fn non_utf8_paths_keep_their_bytes() {
        let old = tree(vec![]);
        let new = tree(vec![Entry {
            path: ByteName(b"caf\xe9".to_vec()),
            ..file("", b"x", 0o644)
        }]);
        let (items, _) = diff(&flatten(&old), &flatten(&new));
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(items[0].path_b64.as_ref().unwrap())
            .unwrap();
        assert_eq!(raw, b"~/.config/caf\xe9");
    }

    #[test]
    fn omitted_content_falls_back_to_stat_facts() {
        let mut a = file("s", b"k1", 0o600);
        a.sha256 = None;
        a.omitted = Some("secret".into());
        let mut b = a.clone();
        assert!(!compare(&a, &b).content);
        b.size = 9;
        assert!(compare(&a, &b).content);
    }
}
