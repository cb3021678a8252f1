//! Walking tracked roots: what is included, excluded (and why), and each
//! entry's `lstat` facts. Symlinks are never followed.
//!
//! Exclusion uses gitignore syntax through the `ignore` crate's matcher,
//! rooted at `$HOME`: the config's `exclude` list, the ignore file
//! (`~/.config/dotfiles-backup/ignore`), directories with a valid
//! `CACHEDIR.TAG`, and the repository itself. Data classes (public, private,
//! secret) come from glob patterns over the `~`-relative path.

pub mod beneath;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rayon::prelude::*;
use serde::Serialize;

use crate::config::{Settings, TrackedRoot};
use crate::error::{Error, Result};
use crate::paths::{display_path, ByteName};
use crate::repo::snapshot::{EntryType, Xattr};

/// The reason given for the tool's own files (repository, config, ignore
/// file, recipients, identity, secret-id keys): never stored, never rolled back.
pub const TOOL_STATE: &str = "tool state";

/// The reason given for a temp file of ours found by a scan.
pub const INTERRUPTED_WRITE: &str = "temp file of an interrupted write";

const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Sensitivity of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    /// Ordinary.
    Public,
    /// Personal but storable as is.
    Private,
    /// Keys and tokens: never stored in plain text.
    Secret,
}

/// One scanned path with its `lstat` facts.
#[derive(Debug, Clone)]
pub struct ScanItem {
    /// Relative to the root, `/`-separated; empty for the root itself.
    pub rel: Vec<u8>,
    /// Absolute path.
    pub abs: PathBuf,
    /// Type.
    pub kind: EntryType,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// mtime ns.
    pub mtime_ns: i64,
    /// ctime ns.
    pub ctime_ns: i64,
    /// Size.
    pub size: u64,
    /// Inode.
    pub ino: u64,
    /// Device.
    pub dev: u64,
    /// Symlink target.
    pub target: Option<ByteName>,
    /// Class.
    pub class: DataClass,
    /// Number of hard links (`st_nlink`).
    pub nlink: u64,
    /// Recorded extended attributes ([`crate::sys::read_xattrs`]), filled
    /// in by the checkpoint after its files-cache lookup.
    pub xattrs: Vec<Xattr>,
    /// Why the extended attributes could not be read (a warning naming
    /// the path; the entry is stored without them).
    pub xattr_error: Option<String>,
    /// A directory that could not be listed (or only in part): what it
    /// holds is unknown, so it is stored as unreadable and a restore leaves
    /// its content alone rather than treat the missing names as deleted.
    pub unlisted: bool,
    /// User BSD file flags (macOS), not recorded: a warning names them
    /// ([`crate::sys::user_file_flags`]).
    pub file_flags: u32,
}

/// A root and what was found under it.
#[derive(Debug, Clone)]
pub struct ScannedRoot {
    /// The root as configured.
    pub root: TrackedRoot,
    /// Did it exist?
    pub present: bool,
    /// Entries in path order (root first).
    pub items: Vec<ScanItem>,
    /// Tracked because this symlink (absolute path as the user names it,
    /// through any links above it) resolves here; `None` for configured roots.
    pub link: Option<PathBuf>,
}

/// A path left out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    /// `~`-relative path.
    pub path: String,
    /// `exclude pattern`, `ignore file`, `CACHEDIR.TAG`, `tool state`, `special file`, `too large`.
    pub reason: String,
    /// Absolute path (rollback keeps the directories holding it).
    #[serde(skip)]
    pub abs: PathBuf,
}

/// Everything a scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Roots.
    pub roots: Vec<ScannedRoot>,
    /// Paths left out.
    pub excluded: Vec<Excluded>,
    /// Per-path problems (unreadable directories); the rest of the scan goes on.
    pub errors: Vec<Error>,
}

/// Compiled rules for one run.
pub struct Rules {
    ignore: Gitignore,
    ignore_file: Option<Gitignore>,
    exclude_caches: bool,
    repo: PathBuf,
    /// The tool's own files (config, ignore file, recipients): never stored,
    /// so that no rollback deletes or rewrites them.
    tool_files: Vec<PathBuf>,
    secret: GlobSet,
    private: GlobSet,
    public: GlobSet,
    home: Option<PathBuf>,
    /// `$HOME` with its links resolved.
    home_real: Option<PathBuf>,
    /// Where symlink targets outside `$HOME` may be followed (canonical).
    follow_into: Vec<PathBuf>,
    /// Track the content a tracked symlink leads to (see [`follow_links`]).
    /// Off for the safety scan of a rollback, whose roots are the
    /// snapshot's (already resolved) roots.
    pub follow_links: bool,
    /// Files larger than this are excluded.
    pub max_file_size: u64,
    /// How secret-class files are stored (encrypted to recipients, or skipped).
    pub secrets: crate::config::SecretSettings,
}

fn globset(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::usage("bad_config", format!("class pattern {p:?}: {e}")))?;
        b.add(glob);
    }
    b.build()
        .map_err(|e| Error::usage("bad_config", format!("class patterns: {e}")))
}

impl Rules {
    /// Compile the settings' patterns.
    pub fn new(settings: &Settings) -> Result<Rules> {
        let base = settings.home.clone().unwrap_or_else(|| PathBuf::from("/"));
        let mut b = GitignoreBuilder::new(&base);
        for pat in &settings.excludes {
            b.add_line(None, pat)
                .map_err(|e| Error::usage("bad_config", format!("exclude pattern {pat:?}: {e}")))?;
        }
        let ignore = b
            .build()
            .map_err(|e| Error::usage("bad_config", format!("exclude patterns: {e}")))?;
        let ignore_file = match &settings.ignore_file {
            Some(path) if path.is_file() => {
                let mut b = GitignoreBuilder::new(&base);
                if let Some(e) = b.add(path) {
                    return Err(Error::usage(
                        "bad_ignore_file",
                        format!("{}: {e}", display_path(path)),
                    )
                    .with_path(path));
                }
                Some(b.build().map_err(|e| {
                    Error::usage("bad_ignore_file", format!("{}: {e}", display_path(path)))
                })?)
            }
            _ => None,
        };
        Ok(Rules {
            ignore,
            ignore_file,
            exclude_caches: settings.exclude_caches,
            repo: settings.repo.clone(),
            tool_files: [
                settings.config_file.as_ref(),
                settings.ignore_file.as_ref(),
                settings.secrets.recipients_file.as_ref(),
            ]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
            secret: globset(&settings.secret_patterns)?,
            private: globset(&settings.private_patterns)?,
            public: globset(&settings.public_patterns)?,
            home: settings.home.clone(),
            home_real: settings
                .home
                .as_ref()
                .and_then(|h| std::fs::canonicalize(h).ok()),
            follow_into: settings
                .follow_links_into
                .iter()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                .collect(),
            follow_links: true,
            max_file_size: settings.max_file_size,
            secrets: settings.secrets.clone(),
        })
    }

    /// Why `abs` is excluded by name, if it is. (A directory holding a
    /// `CACHEDIR.TAG` is excluded by the walk, which sees the tag in the
    /// listing it reads anyway: probing every directory for the tag cost one
    /// failed `openat` per directory.)
    pub fn exclusion(&self, abs: &Path, is_dir: bool) -> Option<&'static str> {
        if self.is_tool_state(abs) {
            return Some(TOOL_STATE);
        }
        let under_home = self.home.as_ref().is_some_and(|h| abs.starts_with(h));
        if under_home || self.home.is_none() {
            if self.ignore.matched(abs, is_dir).is_ignore() {
                return Some("exclude pattern");
            }
            if let Some(f) = &self.ignore_file {
                if f.matched(abs, is_dir).is_ignore() {
                    return Some("ignore file");
                }
            }
        } else if let Some(name) = abs.file_name() {
            // Outside $HOME, patterns apply to the base name only.
            if self.ignore.matched(Path::new(name), is_dir).is_ignore() {
                return Some("exclude pattern");
            }
        }
        None
    }

    /// `$HOME`, when known (reads of a root in it are resolved beneath it: `beneath`).
    pub fn home(&self) -> Option<&Path> {
        self.home.as_deref()
    }

    /// Is `abs` marked public by the `[classes] public` patterns? Such a file
    /// is stored as it is even when its content looks like a credential.
    pub fn marked_public(&self, abs: &Path) -> bool {
        let rel = match &self.home {
            Some(h) => abs.strip_prefix(h).unwrap_or(abs),
            None => abs,
        };
        self.public.is_match(rel)
    }

    /// `p` as shown and stored: `~/`-relative under `$HOME`.
    pub fn shown(&self, p: &Path) -> PathBuf {
        crate::paths::tilde_form(p, self.home.as_deref())
    }

    /// Where `abs` really is when a directory above it is a symlink that
    /// may be followed (see [`Rules::resolve_link`]); `None` when its parent
    /// has no link in it (or one that may not be followed).
    pub fn real_location(&self, abs: &Path) -> Option<PathBuf> {
        let (parent, name) = (abs.parent()?, abs.file_name()?);
        let real_parent = std::fs::canonicalize(parent).ok()?;
        let unchanged = real_parent == parent
            || self
                .home
                .as_ref()
                .zip(self.home_real.as_ref())
                .is_some_and(|(h, hr)| {
                    parent.strip_prefix(h).ok() == real_parent.strip_prefix(hr).ok()
                        && parent.starts_with(h)
                });
        if unchanged {
            return None;
        }
        Some(self.resolve_link(parent)?.join(name))
    }

    /// Where the symlink `link` leads now, if it may be followed: inside
    /// `$HOME` (named under `$HOME` as given, even when that path has links
    /// in it), or beneath a `track.follow_links_into` prefix. Never `$HOME`
    /// itself or a directory above it.
    pub fn resolve_link(&self, link: &Path) -> Option<PathBuf> {
        let real = std::fs::canonicalize(link).ok()?;
        if let (Some(home), Some(home_real)) = (&self.home, &self.home_real) {
            if let Ok(rest) = real.strip_prefix(home_real) {
                return (!rest.as_os_str().is_empty()).then(|| home.join(rest));
            }
            if home_real.starts_with(&real) {
                return None;
            }
        }
        self.follow_into
            .iter()
            .any(|p| real.starts_with(p))
            .then_some(real)
    }

    /// Is `abs` (or a directory above it) the tool's own state: the
    /// repository, its config, ignore file and recipients, the secret-id keys,
    /// or the private key that decrypts the secrets (storing it beside them
    /// would defeat the encryption)? A rollback past their creation must not
    /// remove them: the `--undo` it prints needs them.
    pub fn is_tool_state(&self, abs: &Path) -> bool {
        abs.starts_with(&self.repo)
            || self.tool_files.iter().any(|f| f == abs)
            || self.secrets.identity_file.as_deref() == Some(abs)
            || self
                .secrets
                .key_dir
                .as_deref()
                .is_some_and(|k| abs.starts_with(k))
    }

    /// The data class of a path.
    pub fn class_of(&self, abs: &Path) -> DataClass {
        let rel = match &self.home {
            Some(h) => abs.strip_prefix(h).unwrap_or(abs),
            None => abs,
        };
        if self.public.is_match(rel) {
            DataClass::Public
        } else if self.secret.is_match(rel) {
            DataClass::Secret
        } else if self.private.is_match(rel) {
            DataClass::Private
        } else {
            DataClass::Public
        }
    }
}

fn has_cachedir_tag(dir: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(dir.join("CACHEDIR.TAG")) else {
        return false;
    };
    let mut buf = [0u8; 43];
    f.read_exact(&mut buf).is_ok() && buf == CACHEDIR_SIGNATURE
}

fn item_from(
    rel: Vec<u8>,
    abs: PathBuf,
    meta: &std::fs::Metadata,
    rules: &Rules,
) -> Option<ScanItem> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        EntryType::File
    } else if ft.is_dir() {
        EntryType::Dir
    } else if ft.is_symlink() {
        EntryType::Symlink
    } else {
        return None;
    };
    let target = if kind == EntryType::Symlink {
        std::fs::read_link(&abs)
            .ok()
            .map(|t| ByteName::from(t.as_os_str()))
    } else {
        None
    };
    let class = if kind == EntryType::File {
        rules.class_of(&abs)
    } else {
        DataClass::Public
    };
    Some(ScanItem {
        rel,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        size: match kind {
            EntryType::Dir => 0,
            _ => meta.len(),
        },
        ino: meta.ino(),
        dev: meta.dev(),
        target,
        class,
        nlink: meta.nlink(),
        // Read later, only where the files cache cannot vouch for them
        // (ops::backup::read_xattrs).
        xattrs: Vec::new(),
        xattr_error: None,
        unlisted: false,
        file_flags: crate::sys::user_file_flags(meta),
        abs,
    })
}

fn special_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "named pipe"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// Walk every root, then (unless `rules.follow_links` is off) the content
/// tracked symlinks lead to.
pub fn scan(roots: &[TrackedRoot], rules: &Rules) -> ScanResult {
    let mut out = ScanResult::default();
    for root in roots {
        // A root below a symlinked directory (`~/.ssh/config` while `~/.ssh`
        // links into `~/dotfiles`) is tracked where it really is, marked
        // with the path it was named by: a rollback writes beneath root
        // without following links, and could not write through that one.
        let real = rules
            .follow_links
            .then(|| rules.real_location(&root.abs))
            .flatten();
        let scanned = match real {
            Some(abs) => {
                let tracked = TrackedRoot {
                    shown: rules.shown(&abs),
                    abs,
                };
                let mut sr = scan_root(&tracked, rules, &mut out);
                classify_by_link(&mut sr, &root.abs, rules, &mut out.excluded);
                sr.link = Some(root.abs.clone());
                sr
            }
            None => scan_root(root, rules, &mut out),
        };
        out.roots.push(scanned);
    }
    if rules.follow_links {
        follow_links(&mut out, rules);
    }
    out
}

/// At most this many roots are added by following links (a home of links
/// to links ends here instead of scanning without end).
const MAX_LINKED_ROOTS: usize = 256;

/// Symlinked dotfiles (GNU Stow, yadm, chezmoi's symlink mode): a tracked
/// symlink is recorded as the link, and the file or directory it resolves
/// to now is added as a root of its own, marked with the link, so that a
/// rollback puts back both the link and the content. Targets are resolved
/// once, here; only targets inside `$HOME` or beneath a
/// `track.follow_links_into` prefix are followed, never the tool's own
/// state or an excluded path, and never content that a root holds already.
/// Links inside added roots are followed in turn.
fn follow_links(out: &mut ScanResult, rules: &Rules) {
    let mut added = 0;
    // The name the user knows each root by: through the link that led there.
    let mut logicals: Vec<Option<PathBuf>> = out.roots.iter().map(|r| r.link.clone()).collect();
    let mut next = 0;
    while next < out.roots.len() {
        let logical_base = logicals[next].clone();
        let root_abs = out.roots[next].root.abs.clone();
        let links: Vec<(PathBuf, PathBuf)> = out.roots[next]
            .items
            .iter()
            .filter(|i| i.kind == EntryType::Symlink)
            .map(|i| {
                let logical = match (&logical_base, i.abs.strip_prefix(&root_abs)) {
                    (Some(base), Ok(rest)) if !rest.as_os_str().is_empty() => base.join(rest),
                    (Some(base), _) => base.clone(),
                    (None, _) => i.abs.clone(),
                };
                (i.abs.clone(), logical)
            })
            .collect();
        next += 1;
        for (link, logical) in links {
            // Dangling links are recorded as links only.
            let Some(real) = rules.resolve_link(&link) else {
                continue;
            };
            if out
                .roots
                .iter()
                .any(|r| real.starts_with(&r.root.abs) || r.root.abs.starts_with(&real))
            {
                // Its content is tracked already (or holds a tracked root,
                // which would be tracked twice).
                continue;
            }
            let is_dir = real.is_dir();
            if let Some(reason) = rules.exclusion(&real, is_dir) {
                out.excluded.push(Excluded {
                    path: display_path(&real),
                    abs: real.clone(),
                    reason: reason.into(),
                });
                continue;
            }
            if added == MAX_LINKED_ROOTS {
                out.excluded.push(Excluded {
                    path: display_path(&real),
                    abs: real.clone(),
                    reason: format!("more than {MAX_LINKED_ROOTS} symlinked roots"),
                });
                continue;
            }
            added += 1;
            let tracked = TrackedRoot {
                shown: crate::paths::tilde_form(&real, rules.home.as_deref()),
                abs: real,
            };
            let mut sr = scan_root(&tracked, rules, out);
            sr.link = Some(link);
            classify_by_link(&mut sr, &logical, rules, &mut out.excluded);
            out.roots.push(sr);
            logicals.push(Some(logical));
        }
    }
}

/// Content reached through a link is classified and excluded by the name
/// the user knows it by as well (`~/.ssh/id_ed25519` when `~/.ssh` links to
/// `~/dotfiles/ssh`): the more sensitive class wins, and an exclude pattern
/// matching either name leaves the entry (and what is below it) out.
fn classify_by_link(
    sr: &mut ScannedRoot,
    logical: &Path,
    rules: &Rules,
    excluded: &mut Vec<Excluded>,
) {
    let rank = |c: DataClass| match c {
        DataClass::Public => 0,
        DataClass::Private => 1,
        DataClass::Secret => 2,
    };
    let mut dropped: Option<Vec<u8>> = None;
    sr.items.retain_mut(|item| {
        if let Some(d) = &dropped {
            if item.rel.starts_with(d) && item.rel.get(d.len()) == Some(&b'/') {
                return false;
            }
        }
        let name = if item.rel.is_empty() {
            logical.to_path_buf()
        } else {
            logical.join(os(&item.rel))
        };
        if !item.rel.is_empty() {
            if let Some(reason) = rules.exclusion(&name, item.kind == EntryType::Dir) {
                excluded.push(Excluded {
                    path: display_path(&item.abs),
                    abs: item.abs.clone(),
                    reason: reason.into(),
                });
                dropped = Some(item.rel.clone());
                return false;
            }
        }
        if item.kind == EntryType::File {
            let c = rules.class_of(&name);
            if rank(c) > rank(item.class) {
                item.class = c;
            }
        }
        true
    });
}

fn scan_root(root: &TrackedRoot, rules: &Rules, out: &mut ScanResult) -> ScannedRoot {
    let mut sr = ScannedRoot {
        root: root.clone(),
        present: false,
        items: Vec::new(),
        link: None,
    };
    let meta = match std::fs::symlink_metadata(&root.abs) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return sr,
        Err(e) => {
            out.errors.push(Error::io("inspecting", &root.abs, &e));
            return sr;
        }
    };
    sr.present = true;
    match item_from(Vec::new(), root.abs.clone(), &meta, rules) {
        Some(item) => {
            let is_dir = item.kind == EntryType::Dir;
            if is_dir || admit_file(&item, rules, &mut out.excluded) {
                sr.items.push(item);
            }
            if is_dir {
                let walk = walk_dir(&root.abs, b"", rules, 0);
                if let Some(top) = sr.items.last_mut().filter(|_| walk.unlisted) {
                    top.unlisted = true;
                }
                sr.items.extend(walk.items);
                out.excluded.extend(walk.excluded);
                out.errors.extend(walk.errors);
            }
        }
        None => {
            sr.present = false;
            out.excluded.push(Excluded {
                path: display_path(&root.abs),
                abs: root.abs.clone(),
                reason: special_kind(&meta.file_type()).into(),
            });
        }
    }
    sr
}

fn admit_file(item: &ScanItem, rules: &Rules, excluded: &mut Vec<Excluded>) -> bool {
    if item.kind == EntryType::File && item.size > rules.max_file_size {
        excluded.push(Excluded {
            path: display_path(&item.abs),
            abs: item.abs.clone(),
            reason: format!(
                "too large ({} bytes > max_file_size {})",
                item.size, rules.max_file_size
            ),
        });
        return false;
    }
    true
}

/// What one directory subtree contributed.
#[derive(Default)]
struct Walk {
    items: Vec<ScanItem>,
    excluded: Vec<Excluded>,
    errors: Vec<Error>,
    /// The directory holds a valid `CACHEDIR.TAG` (and was not walked).
    cache_tagged: bool,
    /// The directory itself could not be listed, or only in part.
    unlisted: bool,
}

impl Walk {
    fn append(&mut self, mut other: Walk) {
        self.items.append(&mut other.items);
        self.excluded.append(&mut other.excluded);
        self.errors.append(&mut other.errors);
    }
}

/// Subtrees this shallow are walked on all cores (rayon keeps the order).
const PARALLEL_DEPTH: usize = 3;

fn walk_dir(dir: &Path, rel: &[u8], rules: &Rules, depth: usize) -> Walk {
    let mut walk = Walk::default();
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) => {
            walk.errors.push(Error::io("listing directory", dir, &e));
            walk.unlisted = true;
            return walk;
        }
    };
    let mut children: Vec<(Vec<u8>, std::fs::DirEntry)> = Vec::new();
    for entry in listing {
        match entry {
            Ok(e) => children.push((e.file_name().as_bytes().to_vec(), e)),
            Err(e) => {
                walk.errors.push(Error::io("listing directory", dir, &e));
                walk.unlisted = true;
            }
        }
    }
    // The root itself is walked even when tagged: it was asked for by name.
    if depth > 0
        && rules.exclude_caches
        && children.iter().any(|(n, _)| n == b"CACHEDIR.TAG")
        && has_cachedir_tag(dir)
    {
        walk.cache_tagged = true;
        return walk;
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    let visit = |(name, entry): (Vec<u8>, std::fs::DirEntry)| -> Walk {
        let mut w = Walk::default();
        let abs = entry.path();
        // DirEntry::metadata does not follow symlinks.
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return w, // vanished mid-scan
            Err(e) => {
                w.errors.push(Error::io("inspecting", &abs, &e));
                return w;
            }
        };
        let is_dir = meta.is_dir();
        if name.starts_with(crate::atomic::TEMP_PREFIX.as_bytes()) {
            // A write of ours that was interrupted; never back it up. Restore cleans it.
            w.excluded.push(Excluded {
                path: display_path(&abs),
                abs: abs.clone(),
                reason: INTERRUPTED_WRITE.into(),
            });
            return w;
        }
        if let Some(reason) = rules.exclusion(&abs, is_dir) {
            w.excluded.push(Excluded {
                path: display_path(&abs),
                abs: abs.clone(),
                reason: reason.into(),
            });
            return w;
        }
        let mut child_rel = Vec::with_capacity(rel.len() + 1 + name.len());
        child_rel.extend_from_slice(rel);
        if !rel.is_empty() {
            child_rel.push(b'/');
        }
        child_rel.extend_from_slice(&name);
        match item_from(child_rel.clone(), abs.clone(), &meta, rules) {
            Some(mut item) => {
                if is_dir {
                    let sub = walk_dir(&abs, &child_rel, rules, depth + 1);
                    item.unlisted = sub.unlisted;
                    if sub.cache_tagged {
                        w.excluded.push(Excluded {
                            path: display_path(&abs),
                            abs: abs.clone(),
                            reason: "CACHEDIR.TAG".into(),
                        });
                    } else {
                        w.items.push(item);
                        w.append(sub);
                    }
                } else if admit_file(&item, rules, &mut w.excluded) {
                    w.items.push(item);
                }
            }
            None => w.excluded.push(Excluded {
                path: display_path(&abs),
                abs: abs.clone(),
                reason: special_kind(&meta.file_type()).into(),
            }),
        }
        w
    };
    let parts: Vec<Walk> = if depth < PARALLEL_DEPTH && children.len() > 1 {
        children.into_par_iter().map(visit).collect()
    } else {
        children.into_iter().map(visit).collect()
    };
    for part in parts {
        walk.append(part);
    }
    walk
}

/// The name of a scanned item for messages.
pub fn shown(item: &ScanItem) -> String {
    display_path(&item.abs)
}

/// Turn bytes into an `OsStr`.
pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn settings(home: &Path, paths: &[&str]) -> Settings {
        let h = home.to_str().unwrap().to_string();
        let env = move |k: &str| (k == "HOME").then(|| h.clone());
        let over = Overrides {
            paths: paths.iter().map(PathBuf::from).collect(),
            ..Default::default()
        };
        Settings::resolve(&over, &env).unwrap()
    }

    #[test]
    fn walks_sorted_excludes_caches_and_classifies() {
        let tmp = tempfile::tempdir().unwrap();
        let h = tmp.path();
        std::fs::create_dir_all(h.join(".config/nvim/lua")).unwrap();
        std::fs::write(h.join(".config/nvim/init.lua"), b"x").unwrap();
        std::fs::write(h.join(".config/nvim/lua/b.lua"), b"y").unwrap();
        std::fs::create_dir_all(h.join(".config/app/.cache")).unwrap();
        std::fs::write(h.join(".config/app/.cache/junk"), b"z").unwrap();
        std::fs::create_dir_all(h.join(".config/tagged")).unwrap();
        std::fs::write(h.join(".config/tagged/CACHEDIR.TAG"), CACHEDIR_SIGNATURE).unwrap();
        std::fs::create_dir_all(h.join(".ssh")).unwrap();
        std::fs::write(h.join(".ssh/id_ed25519"), b"k").unwrap();
        std::fs::write(h.join(".ssh/id_ed25519.pub"), b"p").unwrap();
        std::fs::write(h.join(".ssh/config"), b"c").unwrap();
        std::os::unix::fs::symlink("nvim", h.join(".config/link")).unwrap();
        let s = settings(h, &["~/.config", "~/.ssh", "~/.missing"]);
        let rules = Rules::new(&s).unwrap();
        let res = scan(&s.roots, &rules);
        assert!(res.errors.is_empty());
        let rels: Vec<String> = res.roots[0]
            .items
            .iter()
            .map(|i| String::from_utf8_lossy(&i.rel).into_owned())
            .collect();
        assert_eq!(
            rels,
            vec![
                "",
                "app",
                "link",
                "nvim",
                "nvim/init.lua",
                "nvim/lua",
                "nvim/lua/b.lua"
            ]
        );
        let reasons: Vec<&str> = res.excluded.iter().map(|e| e.reason.as_str()).collect();
        assert!(reasons.contains(&"exclude pattern"));
        assert!(reasons.contains(&"CACHEDIR.TAG"));
        let ssh = &res.roots[1].items;
        let class = |n: &str| ssh.iter().find(|i| i.rel == n.as_bytes()).unwrap().class;
        assert_eq!(class("id_ed25519"), DataClass::Secret);
        assert_eq!(class("id_ed25519.pub"), DataClass::Public);
        assert_eq!(class("config"), DataClass::Private);
        assert!(!res.roots[2].present);
    }
}
