//! A repository copy in a local directory: an external drive, a network
//! mount, the local repository itself (as the source of a sync or the
//! destination of a pull), or a cache of a remote copy.
//!
//! Every object is written through [`crate::atomic`]: a temp file in the
//! destination directory, fsynced, read back and checked (size + SHA-256 of
//! what actually landed), then renamed into place. The directory is fsynced
//! once per kind ([`Store::flush`]) before any object of the next kind, which
//! may refer to it, is written.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::atomic::Dir;
use crate::error::{Error, IoContext, Result};
use crate::exit::ExitCode;
use crate::hash::Hash;
use crate::paths::display_path;

use super::{classify, Listing, Store, Want};
use crate::repo::layout;

/// Subdirectories that hold copied objects.
const OBJECT_DIRS: [&str; 5] = [
    layout::KEYS,
    layout::PACKS,
    layout::INDEX,
    layout::TREES,
    layout::SNAPSHOTS,
];

/// A repository copy in a directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

/// Size and SHA-256 of a file, read in full.
pub fn hash_file(path: &Path) -> Result<(u64, Hash)> {
    let mut f = File::open(path).ctx("reading back", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).ctx("reading back", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, Hash::from_hasher(hasher)))
}

/// The error for an object whose landed copy is not what was sent.
pub fn mismatch(shown: &str, rel: &str, want: &Want, got: (u64, Hash)) -> Error {
    Error::new(
        ExitCode::Corrupt,
        "external_copy_mismatch",
        format!(
            "the copy of {rel} on {shown} is {} bytes with SHA-256 {}, expected {} bytes with {}; it was discarded",
            got.0,
            got.1.short(),
            want.size,
            want.sha256.short()
        ),
    )
    .with_hint("the source object may be damaged: run `backup-verify --read-data` on the local repository; otherwise check the target's disk or connection and sync again")
}

impl DirStore {
    /// A store rooted at `root` (which need not exist yet).
    pub fn new(root: &Path) -> DirStore {
        DirStore {
            root: root.to_path_buf(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Check the target is there: a missing directory is an unmounted drive
    /// or an absent mount (transient); something else there is permanent.
    pub fn probe(&self, name: &str) -> Result<()> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::new(
                ExitCode::Usage,
                "external_not_a_directory",
                format!(
                    "external target {name} ({}) is not a directory",
                    display_path(&self.root)
                ),
            )
            .with_path(&self.root)
            .with_hint("point external.targets at a directory on the drive or mount")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::new(
                ExitCode::Failed,
                "external_unreachable",
                format!(
                    "external target {name} ({}) is not reachable: the directory does not exist (drive not mounted?)",
                    display_path(&self.root)
                ),
            )
            .with_path(&self.root)
            .with_hint(format!(
                "mount the drive (or create the directory once with `mkdir -p {}` if this is its first use), then run `backup-create --sync-external`",
                display_path(&self.root)
            ))
            .retryable(true)),
            Err(e) => {
                let mut err = Error::io("inspecting external target", &self.root, &e);
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTCONN) | Some(libc::EHOSTDOWN) | Some(libc::EHOSTUNREACH)
                        | Some(libc::ESTALE) | Some(libc::ETIMEDOUT) | Some(libc::EIO)
                ) {
                    // A network mount that is gone or stale.
                    err.code = "external_unreachable";
                    err.retryable = true;
                }
                Err(err)
            }
        }
    }

    /// Remove temp files of interrupted copies whose process is gone.
    pub fn remove_stale_temps(&self) -> Result<usize> {
        let mut removed = 0;
        for sub in std::iter::once("").chain(OBJECT_DIRS) {
            let path = self.root.join(sub);
            if path.is_dir() {
                removed += Dir::open(&path)?.remove_stale_temps()?;
            }
        }
        Ok(removed)
    }
}

impl Store for DirStore {
    fn shown(&self) -> String {
        display_path(&self.root)
    }

    fn list(&self) -> Result<Listing> {
        let mut out = Listing::new();
        match std::fs::metadata(self.root.join(layout::CONFIG)) {
            Ok(m) => {
                out.insert(layout::CONFIG.into(), m.len());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("inspecting", &self.root.join(layout::CONFIG), &e)),
        }
        for sub in OBJECT_DIRS {
            let dir = self.root.join(sub);
            let listing = match std::fs::read_dir(&dir) {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("listing", &dir, &e)),
            };
            for entry in listing {
                let entry = entry.ctx("listing", &dir)?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let rel = format!("{sub}/{name}");
                if classify(&rel).is_none() {
                    continue;
                }
                let meta = entry.metadata().ctx("inspecting", &entry.path())?;
                if meta.is_file() {
                    out.insert(rel, meta.len());
                }
            }
        }
        Ok(out)
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let path = self.root.join(rel);
        std::fs::read(&path).ctx("reading", &path)
    }

    fn local_path(&self, rel: &str) -> Option<PathBuf> {
        Some(self.root.join(rel))
    }

    fn put(&self, rel: &str, src: &dyn Store, want: &Want) -> Result<u64> {
        let (sub, name) = match rel.rsplit_once('/') {
            Some((s, n)) => (s, n),
            None => ("", rel),
        };
        let root = Dir::open(&self.root)?;
        let dir = if sub.is_empty() {
            root
        } else {
            root.open_beneath(sub.as_bytes(), true, 0o700)?
        };
        let mut file = dir.create_atomic(OsStr::new(name), 0o600)?;
        let dest = file.final_path();
        if let Some(path) = src.local_path(rel) {
            let mut input = File::open(&path).ctx("reading", &path)?;
            std::io::copy(&mut input, file.file()).map_err(|e| {
                // Name the side that failed: a read error is the source's, anything else ours.
                if e.raw_os_error().is_some() && std::fs::metadata(&path).is_err() {
                    Error::io("reading", &path, &e)
                } else {
                    Error::io("writing", &dest, &e)
                }
            })?;
        } else if let Some(remote) = src.as_rclone() {
            let out = file.file();
            remote.cat(rel, &mut |chunk| out.write_all(chunk).ctx("writing", &dest))?;
        } else {
            return Err(Error::new(
                ExitCode::Internal,
                "internal_error",
                format!("no way to read {rel} from {}", src.shown()),
            ));
        }
        file.file().sync_all().ctx("syncing", &dest)?;
        let got = hash_file(&file.temp_path())?;
        if got != (want.size, want.sha256) {
            return Err(mismatch(&self.shown(), rel, want, got));
        }
        file.commit(false)?;
        Ok(want.size)
    }

    fn flush(&self, dir: &str) -> Result<()> {
        let path = self.root.join(dir);
        if path.is_dir() {
            Dir::open(&path)?.sync()?;
        }
        Ok(())
    }

    fn remove(&self, rel: &str) -> Result<()> {
        let path = self.root.join(rel);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &path, &e)),
        }
    }
}
