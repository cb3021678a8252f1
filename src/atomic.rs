//! The crash-safe write path: temp file in the same directory, content,
//! final mode, `fsync`, `rename`, `fsync` of the directory.
//!
//! Every file this project writes, in the repository or in the user's home,
//! goes through [`Dir::create_atomic`] and [`AtomicFile::commit`]. After a
//! crash at any instant a reader sees either the old file or the complete new
//! one, never a torn mix; an interrupted write leaves at most a temp file
//! whose name starts with `.dfb-tmp`, which is never mistaken for data.
//!
//! Directories are handled as open file descriptors ([`Dir`]) so that callers
//! restoring into a home can resolve paths component by component with
//! `O_NOFOLLOW` (see `crate::restore`) and still use this same path.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, IoContext, Result};

/// Prefix of every temp file this project creates.
pub const TEMP_PREFIX: &str = ".dfb-tmp";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// An open directory, remembered with the path it was opened by (for messages).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Open a directory by path (following symlinks in the path, as `open(2)` does).
    pub fn open(path: &Path) -> Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("opening directory", path, &e.into()))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Open the child directory `name` without following a symlink there.
    pub fn open_child(&self, name: &OsStr) -> Result<Dir> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("opening directory", &path, &e.into()))?;
        Ok(Dir { fd, path })
    }

    /// The path this directory was reached by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw descriptor, for `*at` calls.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second descriptor of the same open directory (same open file description).
    pub fn try_clone(&self) -> Result<Dir> {
        Ok(Dir {
            fd: rustix::io::dup(&self.fd)
                .map_err(|e| Error::io("opening", &self.path, &e.into()))?,
            path: self.path.clone(),
        })
    }

    /// `syncfs(2)` on this directory's file system: everything written there
    /// is durable when it returns `true`. `false` means "not known" (failed,
    /// or not Linux 5.8+, where a writeback error could go unreported); the
    /// caller then fsyncs what it changed one by one. The kernel reports
    /// errors that happened since this descriptor was *opened*, so open it
    /// before the writes it is to cover.
    pub fn sync_file_system_since_open(&self) -> bool {
        crate::sys::sync_file_system(&self.fd)
    }

    /// Make renames and creations in this directory durable.
    pub fn sync(&self) -> Result<()> {
        crate::sys::sync_file(&self.fd).map_err(|e| Error::io("syncing directory", &self.path, &e))
    }

    /// Start writing `name` in this directory through a temp file.
    pub fn create_atomic(&self, name: &OsStr, mode: u32) -> Result<AtomicFile<'_>> {
        AtomicFile::create(DirRef::Borrowed(self), name, mode)
    }

    /// [`create_atomic`](Self::create_atomic) for a directory shared by many
    /// files that are committed later together ([`sync_all_files`]).
    pub fn create_atomic_shared(
        dir: &Rc<Dir>,
        name: &OsStr,
        mode: u32,
    ) -> Result<AtomicFile<'static>> {
        AtomicFile::create(DirRef::Shared(Rc::clone(dir)), name, mode)
    }

    /// Write `bytes` to `name` atomically and durably, including the directory entry.
    pub fn write_atomic(&self, name: &OsStr, bytes: &[u8], mode: u32) -> Result<()> {
        let mut file = self.create_atomic(name, mode)?;
        file.write_all_ctx(bytes)?;
        file.commit(true)
    }

    /// Open (creating with `mode` when missing) the directory at relative
    /// path `rel` beneath this one, one component at a time, never following
    /// a symlink: a planted link anywhere on the way is an error.
    pub fn open_beneath(&self, rel: &[u8], create: bool, mode: u32) -> Result<Dir> {
        let mut cur = self.try_clone()?;
        for comp in rel.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            let name = OsStr::from_bytes(comp);
            if comp == b".." || comp == b"." {
                return Err(Error::new(
                    crate::exit::ExitCode::Refused,
                    "unsafe_path",
                    format!(
                        "refusing path component {:?} under {}",
                        name,
                        self.path.display()
                    ),
                ));
            }
            match cur.open_child(name) {
                Ok(next) => cur = next,
                Err(e) if create && e.code == "not_found" => {
                    match rustix::fs::mkdirat(&cur.fd, name, crate::sys::mode(mode)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(err) => {
                            return Err(Error::io(
                                "creating directory",
                                &cur.path.join(name),
                                &err.into(),
                            ))
                        }
                    }
                    cur = cur.open_child(name)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cur)
    }

    /// Remove temp files left by interrupted writes of processes that are
    /// gone (the pid is part of the name); returns how many were removed.
    pub fn remove_stale_temps(&self) -> Result<usize> {
        let mut removed = 0;
        let entries = std::fs::read_dir(&self.path).ctx("listing", &self.path)?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.as_bytes().strip_prefix(TEMP_PREFIX.as_bytes()) else {
                continue;
            };
            let pid: Option<i32> = rest
                .strip_prefix(b".")
                .and_then(|r| r.split(|b| *b == b'.').next())
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| p.parse().ok());
            let alive = pid.is_some_and(|p| {
                p == std::process::id() as i32
                    || rustix::process::Pid::from_raw(p)
                        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
            });
            if pid.is_some() && !alive {
                let flags = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    rustix::fs::AtFlags::REMOVEDIR
                } else {
                    rustix::fs::AtFlags::empty()
                };
                if rustix::fs::unlinkat(&self.fd, &name, flags).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// `.dfb-tmp.<pid>.<n>.<name>`, cut so the whole stays under NAME_MAX.
fn temp_name_for(name: &OsStr) -> OsString {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = format!("{TEMP_PREFIX}.{}.{n}.", std::process::id()).into_bytes();
    let room = 200usize.saturating_sub(out.len());
    let bytes = name.as_bytes();
    out.extend_from_slice(&bytes[..bytes.len().min(room)]);
    OsString::from_vec(out)
}

/// The directory a temp file lives in: borrowed for one write, shared when
/// many staged files of one directory wait for a common sync.
enum DirRef<'d> {
    Borrowed(&'d Dir),
    Shared(Rc<Dir>),
}

impl std::ops::Deref for DirRef<'_> {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        match self {
            DirRef::Borrowed(d) => d,
            DirRef::Shared(d) => d,
        }
    }
}

/// A file being written; invisible under its final name until [`commit`](Self::commit).
///
/// Dropping it without committing removes the temp file.
pub struct AtomicFile<'d> {
    dir: DirRef<'d>,
    file: File,
    tmp_name: OsString,
    final_name: OsString,
    mode: u32,
    done: bool,
}

impl<'d> AtomicFile<'d> {
    fn create(dir: DirRef<'d>, name: &OsStr, mode: u32) -> Result<AtomicFile<'d>> {
        let tmp_name = temp_name_for(name);
        // Created 0600 whatever the umask; the final mode is applied before the rename.
        let fd = rustix::fs::openat(
            &dir.fd,
            &tmp_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            crate::sys::mode(0o600),
        )
        .map_err(|e| Error::io("creating", &dir.path.join(&tmp_name), &e.into()))?;
        Ok(AtomicFile {
            dir,
            file: File::from(fd),
            tmp_name,
            final_name: name.to_os_string(),
            mode,
            done: false,
        })
    }

    /// Change the mode [`apply_mode`](Self::apply_mode) sets (narrowed by
    /// a caller that could not restore an ACL).
    pub fn set_mode(&mut self, mode: u32) {
        self.mode = mode;
    }

    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Where the temp file lives, for error messages.
    pub fn temp_path(&self) -> PathBuf {
        self.dir.path.join(&self.tmp_name)
    }

    /// The final path, for error messages.
    pub fn final_path(&self) -> PathBuf {
        self.dir.path.join(&self.final_name)
    }

    /// Change the name the file will get on commit (content-addressed files learn it last).
    pub fn set_final_name(&mut self, name: &OsStr) {
        self.final_name = name.to_os_string();
    }

    /// Set the modification time (ns since the epoch) before the file becomes visible.
    pub fn set_mtime(&mut self, mtime_ns: i64) -> Result<()> {
        let path = self.final_path();
        let ts = rustix::fs::Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
        };
        let times = rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        };
        rustix::fs::futimens(&self.file, &times)
            .map_err(|e| Error::io("setting time of", &path, &e.into()))
    }

    /// Set the owner before the file becomes visible (only meaningful as root).
    pub fn set_owner(&mut self, uid: u32, gid: u32) -> Result<()> {
        let path = self.final_path();
        rustix::fs::fchown(
            &self.file,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        )
        .map_err(|e| Error::io("setting owner of", &path, &e.into()))
    }

    /// Append bytes, naming the final path on error.
    pub fn write_all_ctx(&mut self, bytes: &[u8]) -> Result<()> {
        let path = self.final_path();
        self.file.write_all(bytes).ctx("writing", &path)
    }

    /// Apply the final mode, fsync, rename into place, and (if `sync_dir`) fsync the directory.
    ///
    /// Callers that commit many files into one directory pass `false` and
    /// call [`Dir::sync`] once afterwards, before anything refers to them.
    pub fn commit(mut self, sync_dir: bool) -> Result<()> {
        self.apply_mode()?;
        self.sync()?;
        self.rename_synced()?;
        if sync_dir {
            self.dir.sync()?;
        }
        Ok(())
    }

    /// Apply the final mode (the first half of [`commit`](Self::commit), for
    /// files staged to be synced together).
    pub fn apply_mode(&mut self) -> Result<()> {
        rustix::fs::fchmod(&self.file, crate::sys::mode(self.mode))
            .map_err(|e| Error::io("setting mode of", &self.final_path(), &e.into()))
    }

    /// fsync the temp file.
    pub fn sync(&self) -> Result<()> {
        crate::sys::sync_file(&self.file).ctx("syncing", &self.final_path())
    }

    /// Rename into place. Only for a file whose content is durable (after
    /// [`sync`](Self::sync), or after [`sync_all_files`] said so), or one
    /// whose loss in a power cut is harmless (the files cache).
    pub fn rename_synced(&mut self) -> Result<()> {
        rustix::fs::renameat(&self.dir.fd, &self.tmp_name, &self.dir.fd, &self.final_name)
            .map_err(|e| Error::io("renaming into place", &self.final_path(), &e.into()))?;
        self.done = true;
        Ok(())
    }
}

/// Make the content of many staged files durable at once; returns whether
/// that worked for all of them. `false` means "not known": the caller then
/// syncs each file with [`AtomicFile::sync`], which names the ones that fail.
///
/// Why: one `fsync` per file is one journal commit and one disk cache flush
/// each (50 small files: 10-12 ms here, docs/performance.md); `syncfs(2)`
/// writes them all and commits once (1.5-2 ms). Since Linux 5.8 `syncfs`
/// reports a writeback error of any file of the file system that happened
/// since the descriptor passed was opened, so it is called once per file
/// system on the *earliest opened* staged file there. Elsewhere (and on older
/// kernels, where an error could go unreported) each file is fsynced.
pub fn sync_all_files(files: &[&AtomicFile<'_>]) -> bool {
    if !crate::sys::has_reliable_syncfs() {
        return false;
    }
    let mut devs: Vec<u64> = Vec::new();
    for f in files {
        let Some(dev) = device_of(&f.file) else {
            return false;
        };
        if devs.contains(&dev) {
            continue;
        }
        devs.push(dev);
        if !crate::sys::sync_file_system(&f.file) {
            return false;
        }
    }
    true
}

/// The device (file system) an open file or directory is on.
pub fn device_of(fd: impl AsFd) -> Option<u64> {
    let st = rustix::fs::fstat(fd).ok()?;
    #[allow(clippy::unnecessary_cast)] // dev_t is not u64 everywhere
    Some(st.st_dev as u64)
}

impl Drop for AtomicFile<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ =
                rustix::fs::unlinkat(&self.dir.fd, &self.tmp_name, rustix::fs::AtFlags::empty());
        }
    }
}

/// Write a whole file atomically by path (opens the parent directory).
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let (parent, name) = split_parent(path)?;
    Dir::open(parent)?.write_atomic(name, bytes, mode)
}

/// Split a path into its parent directory and final name.
pub fn split_parent(path: &Path) -> Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            Ok((parent, name))
        }
        _ => Err(Error::usage(
            "bad_path",
            format!("{} has no file name", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn commit_makes_file_visible_with_final_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        dir.write_atomic(OsStr::new("a"), b"hello", 0o640).unwrap();
        let meta = std::fs::metadata(tmp.path().join("a")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(tmp.path().join("a")).unwrap(), b"hello");
        // No temp file left behind.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_write_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        {
            let mut f = dir.create_atomic(OsStr::new("b"), 0o600).unwrap();
            f.write_all_ctx(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn replaces_existing_file_whole() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("c"), b"old content").unwrap();
        write_file_atomic(&tmp.path().join("c"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("c")).unwrap(), b"new");
    }

    #[test]
    fn open_child_refuses_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", tmp.path().join("link")).unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        assert!(dir.open_child(OsStr::new("real")).is_ok());
        assert!(dir.open_child(OsStr::new("link")).is_err());
    }
}
