//! The on-disk repository: layout, format file, and access to its objects.
//!
//! ```text
//! <repo>/                 0700
//!   config.json           format name and version, repository id (written first)
//!   lock                  writer lock (flock) + holder record
//!   packs/<sha256>        immutable pack files (blob contents)
//!   index/<sha256>        immutable index files (blob → pack, offset, length)
//!   trees/<sha256>.json   immutable snapshot contents
//!   snapshots/<sha256>.json  snapshot records; writing one commits a run
//!   cache/files           files cache (disposable)
//!   cache/packages        package-capture cache (disposable, `src/packages/cache.rs`)
//!   logs/                 run log (JSON lines)
//! ```
//!
//! Every file is 0600 and written through [`crate::atomic`]. Order of writes in
//! a run: packs → index → tree → snapshot record. Anything a crash leaves
//! behind before the record is unreferenced and harmless; `backup-verify`
//! reports it and prune removes it. See `docs/format.md`.

pub mod cache;
pub mod index;
pub mod layout;
pub mod lock;
pub mod pack;
pub mod pins;
pub mod snapshot;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::atomic::Dir;
use crate::error::{Error, IoContext, Result};
use crate::exit::ExitCode;
use crate::hash::Hash;
use crate::paths::display_path;

use self::cache::FilesCache;
use self::index::{BlobLocation, Index};
use self::snapshot::{Snapshot, SnapshotRecord, Tree, OBJECT_VERSION};

/// A repository object that cannot be used, and why.
pub type Damaged = (PathBuf, Error);

/// Name in `config.json` that marks a directory as ours.
pub const FORMAT_NAME: &str = "dotfiles-backup-repository";
/// The repository format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Subdirectories, created on first use.
pub use self::layout::SUBDIRS;

/// Contents of `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoConfig {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Format version.
    pub version: u32,
    /// Random id of this repository.
    pub id: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// An open repository.
#[derive(Debug)]
pub struct Repository {
    root: PathBuf,
    /// Parsed `config.json`.
    pub config: RepoConfig,
}

impl Repository {
    /// Open an existing repository (readers). Never creates anything.
    pub fn open(root: &Path) -> Result<Repository> {
        check_directory(root)?;
        let config = read_config(root)?;
        Ok(Repository {
            root: root.to_path_buf(),
            config,
        })
    }

    /// Does `root` hold a repository (a `config.json`)?
    pub fn exists(root: &Path) -> bool {
        root.join(layout::CONFIG).is_file()
    }

    /// Open the repository for writing, creating it (0700) on first use.
    /// Returns whether it was created.
    ///
    /// Creation is safe to interrupt and to race: `config.json` is published
    /// last and without replacing (the first creator wins, the others use
    /// its file), and a directory holding nothing but what an interrupted
    /// creation leaves (temp files, the lock, empty subdirectories) is
    /// finished rather than refused.
    pub fn open_or_create(root: &Path) -> Result<(Repository, bool)> {
        let created = match std::fs::symlink_metadata(root) {
            Ok(_) => finish_creation(root)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = root.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)
                        .ctx("creating directory", parent)?;
                }
                match std::fs::DirBuilder::new().mode(0o700).create(root) {
                    Ok(()) => {
                        // The umask may have narrowed it; make it exactly 0700.
                        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                            .ctx("setting mode of", root)?;
                        write_new_config(root)?
                    }
                    // Another process is creating it at this moment.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        finish_creation(root)?
                    }
                    Err(e) => return Err(Error::io("creating repository", root, &e)),
                }
            }
            Err(e) => return Err(Error::io("inspecting", root, &e)),
        };
        let config = read_config(root)?;
        let repo = Repository {
            root: root.to_path_buf(),
            config,
        };
        for sub in SUBDIRS {
            let p = root.join(sub);
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                        .ctx("setting mode of", &p)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("creating directory", &p, &e)),
            }
        }
        if created {
            Dir::open(root)?.sync()?;
        }
        Ok((repo, created))
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Is the repository directory owned by the user running this process?
    /// Only then are the owners and setuid/setgid bits in its trees applied
    /// (a foreign one is opened only with `--allow-foreign-repo`).
    pub fn owned_by_caller(&self) -> bool {
        std::fs::metadata(&self.root).is_ok_and(|m| m.uid() == crate::host::euid())
    }

    /// Size of every regular file in the object directories (packs, index,
    /// trees, snapshots): what the quota and `repository_bytes` count.
    pub fn size_bytes(&self) -> u64 {
        let mut total = 0;
        for sub in [
            layout::PACKS,
            layout::INDEX,
            layout::TREES,
            layout::SNAPSHOTS,
        ] {
            if let Ok(listing) = std::fs::read_dir(self.sub(sub)) {
                total += listing
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>();
            }
        }
        total
    }

    /// Path of a subdirectory.
    pub fn sub(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Take the writer lock.
    pub fn lock(&self, command: &str, wait: Duration) -> Result<lock::LockGuard> {
        lock::acquire(&self.root.join(layout::LOCK), command, wait)
    }

    /// Take the lock shared, for a reader that cannot write the repository
    /// ([`lock::acquire_shared`]): `Ok(Err(why))` when no lock is possible.
    pub fn lock_shared(
        &self,
        wait: Duration,
    ) -> Result<std::result::Result<lock::SharedLock, String>> {
        lock::acquire_shared(&self.root.join("lock"), wait)
    }

    /// Load all snapshot records, oldest first. A record that does not match
    /// its checksum or does not parse is an error naming the file.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let (out, damaged) = self.snapshots_and_damaged()?;
        match damaged.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(out),
        }
    }

    /// Every snapshot record that loads (oldest first), and apart from them
    /// every damaged one (not a regular file, too large, checksum or decode
    /// failure: an error with exit 6) with why. Other I/O errors still end
    /// the listing: a record that cannot be read now is not damaged.
    pub fn snapshots_and_damaged(&self) -> Result<(Vec<Snapshot>, Vec<Damaged>)> {
        let dir = self.sub(layout::SNAPSHOTS);
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((out, damaged)),
            Err(e) => return Err(Error::io("listing", &dir, &e)),
        };
        for entry in listing {
            let entry = entry.ctx("listing", &dir)?;
            let name = entry.file_name();
            let Some(id) = object_id(&name, ".json") else {
                continue;
            };
            let path = entry.path();
            let loaded = read_object(&path, "snapshot record", None, MAX_RECORD_BYTES)
                .and_then(|bytes| decode_record(&bytes, &id, &path));
            match loaded {
                Ok(record) => out.push(Snapshot { id, record }),
                Err(e) if e.exit == crate::exit::ExitCode::Corrupt => damaged.push((path, e)),
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| {
            a.record
                .created_at
                .cmp(&b.record.created_at)
                .then(a.id.cmp(&b.id))
        });
        damaged.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, damaged))
    }

    /// Move a damaged object (`snapshots/<name>`, whatever its file type) to
    /// `quarantine/snapshots/<name>` (`<name>.1`, `.2`, ... when that is
    /// taken), syncing both directories: nothing is deleted, and readers never
    /// see it again. Returns where it went. The caller holds the writer lock.
    pub fn quarantine(&self, path: &Path) -> Result<PathBuf> {
        let (parent, name) = crate::atomic::split_parent(path)?;
        let kind = parent.file_name().unwrap_or_default();
        let qdir = self.sub(layout::QUARANTINE).join(kind);
        let created = !qdir.is_dir();
        std::fs::create_dir_all(&qdir).ctx("creating the quarantine directory", &qdir)?;
        // A damaged record only ever moves inside the repository (0700): a
        // quarantine that is a symlink would carry it elsewhere.
        for dir in [self.sub(layout::QUARANTINE), qdir.clone()] {
            if !dir.symlink_metadata().is_ok_and(|m| m.file_type().is_dir()) {
                return Err(Error::corrupt(
                    "repository_corrupt",
                    &dir,
                    format!(
                        "{} is not a plain directory (a symlink?); nothing was moved",
                        display_path(&dir)
                    ),
                )
                .with_hint(
                    "move it out of the repository, then run `backup-verify --repair` again",
                ));
            }
        }
        if created {
            crate::atomic::Dir::open(&self.sub(layout::QUARANTINE))?.sync()?;
            crate::atomic::Dir::open(self.root())?.sync()?;
        }
        let mut dest = qdir.join(name);
        let mut n = 0;
        while dest.symlink_metadata().is_ok() {
            n += 1;
            let mut alt = name.to_os_string();
            alt.push(format!(".{n}"));
            dest = qdir.join(alt);
        }
        std::fs::rename(path, &dest).ctx("moving a damaged object to quarantine", path)?;
        crate::atomic::Dir::open(&qdir)?.sync()?;
        crate::atomic::Dir::open(parent)?.sync()?;
        Ok(dest)
    }

    /// Load a tree and check it against its id.
    pub fn tree(&self, id: &Hash) -> Result<Tree> {
        let path = self.tree_path(id);
        let bytes = read_object(&path, "tree", Some("missing_tree"), MAX_TREE_BYTES)?;
        decode_tree(&bytes, id, &path)
    }

    /// Where a tree lives.
    pub fn tree_path(&self, id: &Hash) -> PathBuf {
        self.sub(layout::TREES)
            .join(format!("{}.json", id.to_hex()))
    }

    /// Where a snapshot record lives.
    pub fn snapshot_path(&self, id: &Hash) -> PathBuf {
        self.sub(layout::SNAPSHOTS)
            .join(format!("{}.json", id.to_hex()))
    }

    /// Load the index.
    pub fn index(&self) -> Result<Index> {
        Index::load(&self.sub(layout::INDEX))
    }

    /// Load the index a writer may deduplicate against: only blobs whose
    /// pack is present (docs/format.md, "The reuse invariant").
    pub fn index_for_reuse(&self) -> Result<Index> {
        Index::load_for_reuse(&self.sub(layout::INDEX), &self.sub(layout::PACKS))
    }

    /// Read a plain blob and check it against its id.
    pub fn read_blob(&self, id: &Hash, loc: &BlobLocation) -> Result<Vec<u8>> {
        let buf = self.read_stored(loc)?;
        if Hash::of(&buf) != *id {
            let path = pack::pack_path(&self.sub(layout::PACKS), &loc.pack);
            return Err(Error::corrupt(
                "corrupt_blob",
                &path,
                format!(
                    "blob {} in pack {} does not match its checksum",
                    id.short(),
                    loc.pack.short()
                ),
            ));
        }
        Ok(buf)
    }

    /// Read a blob's stored bytes as they are (a sealed blob is checked by
    /// [`crate::secrets::Opener::open`] after decryption).
    pub fn read_stored(&self, loc: &BlobLocation) -> Result<Vec<u8>> {
        let path = pack::pack_path(&self.sub(layout::PACKS), &loc.pack);
        let (mut f, _) = open_object(&path, "pack", Some("missing_pack"), u64::MAX)?;
        f.seek(SeekFrom::Start(loc.offset))
            .ctx("seeking in pack", &path)?;
        let len = usize::try_from(loc.length).map_err(|_| {
            Error::corrupt("corrupt_index", &path, "blob length does not fit in memory")
        })?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|_| {
            Error::corrupt(
                "corrupt_index",
                &path,
                format!("blob length {len} is absurd"),
            )
        })?;
        (&mut f)
            .take(loc.length)
            .read_to_end(&mut buf)
            .ctx("reading pack", &path)?;
        if buf.len() as u64 != loc.length {
            return Err(Error::corrupt(
                "truncated_pack",
                &path,
                format!(
                    "pack {} ends before the blob at offset {} does",
                    loc.pack.short(),
                    loc.offset
                ),
            ));
        }
        Ok(buf)
    }

    /// Load the files cache; `Ok(None)` when absent, `Err` text when damaged.
    pub fn load_cache(&self) -> std::result::Result<Option<FilesCache>, String> {
        let path = self.sub(layout::CACHE).join(layout::FILES_CACHE);
        match read_object(&path, "files cache", None, MAX_CACHE_BYTES) {
            // An older version's cache is simply not used (no warning).
            Ok(bytes) if cache::is_older_format(&bytes) => Ok(None),
            Ok(bytes) => FilesCache::decode_owned(bytes)
                .map(Some)
                .ok_or_else(|| format!("{} is damaged; it will be rebuilt", display_path(&path))),
            Err(e) if e.code == "not_found" => Ok(None),
            Err(e) => Err(format!("{}; it will be rebuilt", e.message)),
        }
    }

    /// Save the files cache atomically (temp file and rename), without the
    /// fsyncs: its safety does not depend on it being durable (`cache`
    /// module docs), and they were two of a checkpoint's 13.
    pub fn save_cache(&self, encoded: &[u8]) -> Result<()> {
        let dir = Dir::open(&self.sub(layout::CACHE))?;
        let mut file = dir.create_atomic(OsStr::new(layout::FILES_CACHE), 0o600)?;
        file.write_all_ctx(encoded)?;
        file.apply_mode()?;
        file.rename_synced()
    }
}

/// Largest snapshot record this build reads (package lists are capped far lower).
pub const MAX_RECORD_BYTES: u64 = 64 << 20;
/// Largest tree or index file this build reads (millions of entries).
pub const MAX_TREE_BYTES: u64 = 2 << 30;
/// Largest files cache this build reads.
pub const MAX_CACHE_BYTES: u64 = 2 << 30;

/// Open a repository file for reading as the format allows it to be: never
/// through a symlink, never blocking (a FIFO planted in the repository would
/// hang a reader forever), a regular file, at most `max` bytes. Anything else
/// is `repository_corrupt` (exit 6) naming the file. A missing file is
/// `missing` (a corruption code) when given, else the I/O error.
pub fn open_object(
    path: &Path,
    what: &str,
    missing: Option<&'static str>,
    max: u64,
) -> Result<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let hostile = |why: String| {
        Error::corrupt(
            "repository_corrupt",
            path,
            format!("{what} {} {why}", display_path(path)),
        )
        .with_hint("the repository holds a file it never writes there: move it away (or restore the repository from an external copy), then run `backup-verify --read-data`")
    };
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(hostile("is a symbolic link, not a regular file".into()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let err = Error::io(&format!("opening {what}"), path, &e);
            return Err(match missing {
                Some(code) => Error::corrupt(code, path, err.message),
                None => err,
            });
        }
        Err(e) => return Err(Error::io(&format!("opening {what}"), path, &e)),
    };
    let meta = f.metadata().ctx("inspecting", path)?;
    if !meta.file_type().is_file() {
        return Err(hostile(
            "is not a regular file (a FIFO, device or directory)".into(),
        ));
    }
    if meta.len() > max {
        return Err(hostile(format!(
            "is {} bytes, more than any such file can be ({max})",
            meta.len()
        )));
    }
    Ok((f, meta.len()))
}

/// [`open_object`] and read it whole (never more than its `max`).
pub fn read_object(
    path: &Path,
    what: &str,
    missing: Option<&'static str>,
    max: u64,
) -> Result<Vec<u8>> {
    let (f, len) = open_object(path, what, missing, max)?;
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(max)
        .read_to_end(&mut bytes)
        .ctx(&format!("reading {what}"), path)?;
    Ok(bytes)
}

/// Parse `<64 hex><suffix>` names.
pub fn object_id(name: &OsStr, suffix: &str) -> Option<Hash> {
    name.to_str()?.strip_suffix(suffix)?.parse().ok()
}

/// Decode a snapshot record, checking its checksum and version.
pub fn decode_record(bytes: &[u8], id: &Hash, path: &Path) -> Result<SnapshotRecord> {
    if Hash::of(bytes) != *id {
        return Err(Error::corrupt(
            "corrupt_snapshot",
            path,
            format!(
                "snapshot {} does not match its checksum",
                display_path(path)
            ),
        ));
    }
    let record: SnapshotRecord = serde_json::from_slice(bytes).map_err(|e| {
        Error::corrupt(
            "corrupt_snapshot",
            path,
            format!("snapshot {} is not valid: {e}", display_path(path)),
        )
    })?;
    if record.version > OBJECT_VERSION {
        return Err(newer_format(path, record.version));
    }
    Ok(record)
}

/// Decode a tree, checking its checksum and version.
pub fn decode_tree(bytes: &[u8], id: &Hash, path: &Path) -> Result<Tree> {
    if Hash::of(bytes) != *id {
        return Err(Error::corrupt(
            "corrupt_tree",
            path,
            format!("tree {} does not match its checksum", display_path(path)),
        ));
    }
    let tree: Tree = serde_json::from_slice(bytes).map_err(|e| {
        Error::corrupt(
            "corrupt_tree",
            path,
            format!("tree {} is not valid: {e}", display_path(path)),
        )
    })?;
    if tree.version > OBJECT_VERSION {
        return Err(newer_format(path, tree.version));
    }
    // Values no scan produces and that would reach chmod/chown as something
    // else: file-type bits in `mode`, and uid/gid -1 ("leave unchanged").
    for root in &tree.roots {
        for e in &root.entries {
            if e.mode > 0o7777 || e.uid == u32::MAX || e.gid == u32::MAX {
                return Err(Error::corrupt(
                    "corrupt_tree",
                    path,
                    format!(
                        "tree {} lists {:?} with mode {:o}, uid {}, gid {}, which no file can have",
                        display_path(path),
                        e.path.lossy(),
                        e.mode,
                        e.uid,
                        e.gid
                    ),
                ));
            }
        }
    }
    Ok(tree)
}

fn newer_format(path: &Path, found: u32) -> Error {
    Error::new(
        ExitCode::Corrupt,
        "unsupported_format",
        format!(
            "{} uses format version {found}; this build of dotfiles-backup understands up to {FORMAT_VERSION}",
            display_path(path)
        ),
    )
    .with_path(path)
    .with_hint("upgrade dotfiles-backup; the repository was left untouched")
}

/// Environment variable that, like `--allow-foreign-repo`, lets a command
/// use a repository owned by another user.
pub const ALLOW_FOREIGN_ENV: &str = "BACKUP_ALLOW_FOREIGN_REPO";

static ALLOW_FOREIGN: AtomicBool = AtomicBool::new(false);

/// Accept repositories owned by another user for the rest of this process
/// (`--allow-foreign-repo`). Restore then applies no owner, setuid or setgid
/// bit from them ([`Repository::owned_by_caller`]).
pub fn allow_foreign_owner(allow: bool) {
    ALLOW_FOREIGN.store(allow, Ordering::Relaxed);
}

fn check_directory(root: &Path) -> Result<()> {
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::new(
                ExitCode::Failed,
                "repository_missing",
                format!("no backup repository at {}", display_path(root)),
            )
            .with_path(root)
            .with_hint("it is created by the first `backup-checkpoint` or `backup-create`; or point --repo / BACKUP_REPO at an existing one"));
        }
        Err(e) => return Err(Error::io("inspecting repository", root, &e)),
    };
    if !meta.is_dir() {
        return Err(Error::new(
            ExitCode::Usage,
            "repository_not_a_directory",
            format!(
                "the repository path {} is not a directory",
                display_path(root)
            ),
        )
        .with_path(root)
        .with_hint("point --repo (or BACKUP_REPO) at a directory"));
    }
    // Root too: whoever owns a repository chooses every byte, mode and owner
    // in it (a setuid-root record, docs/security.md).
    let me = crate::host::euid();
    if meta.uid() != me && !ALLOW_FOREIGN.load(Ordering::Relaxed) {
        return Err(Error::new(
            ExitCode::Refused,
            "repository_foreign_owner",
            format!(
                "the repository {} is owned by uid {}, not by you (uid {me})",
                display_path(root),
                meta.uid()
            ),
        )
        .with_path(root)
        .with_hint(format!("use your own repository, or fix ownership with chown; to read it anyway (owners, setuid and setgid bits are then not restored) pass --allow-foreign-repo or set {ALLOW_FOREIGN_ENV}=1")));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(Error::new(
            ExitCode::Refused,
            "repository_world_writable",
            format!(
                "the repository {} is world-writable (mode {:o}); anyone could plant data in it",
                display_path(root),
                meta.mode() & 0o7777
            ),
        )
        .with_path(root)
        .with_hint(format!(
            "run `chmod 700 {}` after checking its contents",
            display_path(root)
        )));
    }
    Ok(())
}

fn read_config(root: &Path) -> Result<RepoConfig> {
    let path = root.join(layout::CONFIG);
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::new(
                ExitCode::Usage,
                "not_a_repository",
                format!(
                    "{} is not a backup repository (no config.json)",
                    display_path(root)
                ),
            )
            .with_path(root)
            .with_hint("point --repo (or BACKUP_REPO) at a repository")
        } else if e.kind() == std::io::ErrorKind::IsADirectory {
            Error::corrupt(
                "corrupt_config",
                &path,
                format!(
                    "{} is a directory, not the repository's format file",
                    display_path(&path)
                ),
            )
        } else {
            Error::io("reading", &path, &e)
        }
    })?;
    #[derive(Deserialize)]
    struct Probe {
        format: Option<String>,
        version: Option<u32>,
    }
    let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(
            "corrupt_config",
            &path,
            format!("{} is not valid JSON: {e}", display_path(&path)),
        )
    })?;
    if probe.format.as_deref() != Some(FORMAT_NAME) {
        return Err(Error::corrupt(
            "not_a_repository",
            &path,
            format!(
                "{} does not describe a dotfiles-backup repository",
                display_path(&path)
            ),
        ));
    }
    match probe.version {
        Some(v) if v > FORMAT_VERSION => return Err(newer_format(&path, v)),
        Some(_) => {}
        None => {
            return Err(Error::corrupt(
                "corrupt_config",
                &path,
                format!("{} has no format version", display_path(&path)),
            ))
        }
    }
    let config: RepoConfig = serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(
            "corrupt_config",
            &path,
            format!("{} is not valid: {e}", display_path(&path)),
        )
    })?;
    // The id names the directory of the plain secret-id keys
    // (`<key_dir>/<id>/`), so a crafted id such as `../../x` must never reach
    // a path join. Ids this tool writes are 64 hex digits.
    let id_ok = !config.id.is_empty()
        && config.id.len() <= 128
        && config
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(Error::corrupt(
            "corrupt_config",
            &path,
            format!(
                "{} has a malformed repository id {:?} (expected letters and digits)",
                display_path(&path),
                config.id
            ),
        ));
    }
    Ok(config)
}

/// `root` exists: a repository (nothing to do), an empty directory or one an
/// interrupted creation left (create the format file), or anything else
/// (refused). Returns whether this process created the repository.
fn finish_creation(root: &Path) -> Result<bool> {
    check_directory(root)?;
    if root.join(layout::CONFIG).exists() {
        return Ok(false);
    }
    let entries = std::fs::read_dir(root).ctx("listing", root)?;
    for entry in entries {
        let entry = entry.ctx("listing", root)?;
        if !left_by_creation(root, &entry.file_name()) {
            return Err(Error::new(
                ExitCode::Usage,
                "not_a_repository",
                format!(
                    "{} exists, is not empty, and is not a backup repository (no config.json; it holds {})",
                    display_path(root),
                    display_path(Path::new(&entry.file_name()))
                ),
            )
            .with_path(root)
            .with_hint("choose an empty or new directory with --repo (or BACKUP_REPO)"));
        }
    }
    write_new_config(root)
}

/// Can `name` in a directory without `config.json` have been left by an
/// interrupted or concurrent creation: a temp file, the lock file, or an
/// empty subdirectory of the layout?
fn left_by_creation(root: &Path, name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    bytes.starts_with(crate::atomic::TEMP_PREFIX.as_bytes())
        || bytes == layout::LOCK.as_bytes()
        || SUBDIRS.iter().any(|s| s.as_bytes() == bytes)
            && std::fs::read_dir(root.join(name)).is_ok_and(|mut d| d.next().is_none())
}

/// Publish a new `config.json` unless one appeared meanwhile; returns
/// whether this process's file is the one in place.
fn write_new_config(root: &Path) -> Result<bool> {
    let mut seed = Vec::new();
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(crate::time::now_rfc3339().as_bytes());
    seed.extend_from_slice(root.as_os_str().as_encoded_bytes());
    let mut random = [0u8; 16];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = f.read_exact(&mut random);
    }
    seed.extend_from_slice(&random);
    let config = RepoConfig {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        id: Hash::of(&seed).to_hex(),
        created_at: crate::time::now_rfc3339(),
    };
    let mut bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
    bytes.push(b'\n');
    let dir = Dir::open(root)?;
    let mut file = dir.create_atomic(OsStr::new(layout::CONFIG), 0o600)?;
    file.write_all_ctx(&bytes)?;
    file.commit_no_replace()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_repository_is_private_and_reopens() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/b/repo");
        let (repo, created) = Repository::open_or_create(&root).unwrap();
        assert!(created);
        assert_eq!(
            std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let cfg = std::fs::metadata(root.join("config.json")).unwrap();
        assert_eq!(cfg.permissions().mode() & 0o777, 0o600);
        let (again, created) = Repository::open_or_create(&root).unwrap();
        assert!(!created);
        assert_eq!(again.config, repo.config);
        assert!(repo.snapshots().unwrap().is_empty());
    }

    #[test]
    fn newer_format_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        Repository::open_or_create(&root).unwrap();
        let text =
            format!(r#"{{"format":"{FORMAT_NAME}","version":99,"id":"x","created_at":"y"}}"#);
        std::fs::write(root.join("config.json"), &text).unwrap();
        let err = Repository::open_or_create(&root).unwrap_err();
        assert_eq!(err.code, "unsupported_format");
        assert_eq!(err.exit, ExitCode::Corrupt);
        assert_eq!(
            std::fs::read_to_string(root.join("config.json")).unwrap(),
            text
        );
    }

    #[test]
    fn crafted_repository_ids_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        Repository::open_or_create(&root).unwrap();
        for id in ["../../x", "a/b", "", ".", r"x\u0000y"] {
            let text =
                format!(r#"{{"format":"{FORMAT_NAME}","version":1,"id":"{id}","created_at":"y"}}"#);
            std::fs::write(root.join("config.json"), &text).unwrap();
            let err = Repository::open(&root).unwrap_err();
            assert_eq!(err.code, "corrupt_config", "{id:?}");
            assert_eq!(err.exit, ExitCode::Corrupt);
        }
        std::fs::remove_file(root.join("config.json")).unwrap();
        std::fs::create_dir(root.join("config.json")).unwrap();
        assert_eq!(Repository::open(&root).unwrap_err().code, "corrupt_config");
    }

    #[test]
    fn file_or_foreign_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            Repository::open_or_create(&file).unwrap_err().code,
            "repository_not_a_directory"
        );
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        assert_eq!(
            Repository::open_or_create(&dir).unwrap_err().code,
            "not_a_repository"
        );
    }
}
