//! Opening a scanned file for reading, safely when root backs up a home that
//! its owner can change while the checkpoint runs.
//!
//! The file is opened relative to its tracked root's directory handle,
//! never by absolute path, and no symlink anywhere below the root is
//! followed: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the
//! kernel has it (Linux 5.6+), otherwise one `openat(O_NOFOLLOW)` per
//! component. The opened file must then be the very inode the scan saw
//! (device and inode), else it is reported as changed and not stored. So a
//! user who swaps a directory of their home for a symlink to `/etc` while
//! root checkpoints gets an error, never `/etc/shadow` stored under their
//! path (tests/hostile_race.rs).
//!
//! Opens are non-blocking so that a FIFO swapped in cannot hang the run
//! (reading a regular file ignores `O_NONBLOCK`).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags};

use crate::sys::{self, Beneath};

use super::{ScanItem, ScannedRoot};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::paths::display_path;
use crate::repo::snapshot::EntryType;

/// Cleared the first time `openat2` turns out to be missing (old kernel, or
/// a seccomp filter); the component walk is used from then on.
static OPENAT2: AtomicBool = AtomicBool::new(true);

const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// A tracked root, opened once per run for the reads beneath it.
pub enum RootDir {
    /// The root is a directory and is the one the scan walked.
    Dir(OwnedFd),
    /// The root is a file, opened by its path (last component `O_NOFOLLOW`).
    File,
    /// The root is a file in a home the caller does not own: opened beneath
    /// the home's directory (the handle), by this path relative to it.
    FileInHome(OwnedFd, PathBuf),
    /// The root directory was replaced since the scan, or reaching it from
    /// the home left the home: nothing under it is read.
    Replaced,
}

impl RootDir {
    /// Open `root` and check that it is the directory the scan walked.
    ///
    /// The path of a root in a home that the caller does not own (root
    /// checkpointing a user's home) is resolved beneath that home: symlinks
    /// its owner made (a stow-folded `~/.ssh`) are followed only while they
    /// stay inside it, so `~/.ssh` pointing at `/root/.ssh` reads nothing.
    /// Otherwise the configured path is opened as it is: it is the config's,
    /// and its owner can read whatever it leads to anyway.
    pub fn open(root: &ScannedRoot, home: Option<&Path>) -> RootDir {
        let Some(top) = root.items.first() else {
            return RootDir::File;
        };
        let anchor = home.filter(|h| !owned_by_caller(h)).and_then(|h| {
            let rel = root.root.abs.strip_prefix(h).ok()?;
            (!rel.as_os_str().is_empty()).then(|| (h, rel.to_path_buf()))
        });
        let home_fd = match &anchor {
            Some((h, _)) => match rustix::fs::open(*h, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => Some(fd),
                Err(_) => return RootDir::Replaced,
            },
            None => None,
        };
        match (top.kind, home_fd, anchor) {
            (EntryType::Dir, Some(hfd), Some((_, rel))) => check_dir(
                open_in_home(&hfd, rel.as_os_str().as_bytes(), DIR_FLAGS),
                top,
            ),
            (EntryType::Dir, _, _) => check_dir(
                rustix::fs::open(&root.root.abs, DIR_FLAGS, Mode::empty()),
                top,
            ),
            (_, Some(hfd), Some((_, rel))) => RootDir::FileInHome(hfd, rel),
            _ => RootDir::File,
        }
    }
}

fn owned_by_caller(path: &Path) -> bool {
    rustix::fs::stat(path).is_ok_and(|st| st.st_uid == rustix::process::geteuid().as_raw())
}

fn check_dir(opened: rustix::io::Result<OwnedFd>, top: &ScanItem) -> RootDir {
    match opened.and_then(|fd| Ok((rustix::fs::fstat(&fd)?, fd))) {
        Ok((st, fd)) if sys::dev_of(&st) == top.dev && st.st_ino == top.ino => RootDir::Dir(fd),
        _ => RootDir::Replaced,
    }
}

/// `rel` beneath the home `dir`, following symlinks only while they stay
/// inside it (`RESOLVE_BENEATH`); without `openat2`, following none.
fn open_in_home(dir: &OwnedFd, rel: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    if OPENAT2.load(Ordering::Relaxed) {
        match sys::open_beneath(dir, rel, flags, Beneath::FollowInside) {
            None | Some(Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM)) => {
                OPENAT2.store(false, Ordering::Relaxed);
            }
            Some(Err(rustix::io::Errno::AGAIN)) => {}
            Some(other) => return other,
        }
    }
    open_by_components(dir, rel, flags | OFlags::NOFOLLOW)
}

/// Open `item` (a regular file found by the scan under `root`) for reading.
/// Returns the file and its `fstat`; fails with `file_changed` when a
/// symlink is now in its path or another file is in its place.
pub fn open_scanned(root: &RootDir, item: &ScanItem) -> Result<(File, std::fs::Metadata)> {
    let opened = match root {
        RootDir::Replaced => return Err(replaced(&item.abs, "its tracked root was replaced")),
        RootDir::File => rustix::fs::open(&item.abs, READ_FLAGS, Mode::empty()),
        RootDir::FileInHome(home, rel) => {
            open_in_home(home, rel.as_os_str().as_bytes(), READ_FLAGS)
        }
        RootDir::Dir(dir) => open_beneath(dir, &item.rel),
    };
    let fd = opened.map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV | rustix::io::Errno::NOTDIR => {
            replaced(&item.abs, "a symlink is now in its path")
        }
        e => Error::io("opening", &item.abs, &e.into()),
    })?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| Error::io("inspecting", &item.abs, &e))?;
    if meta.dev() != item.dev || meta.ino() != item.ino || !meta.is_file() {
        return Err(replaced(&item.abs, "another file is in its place"));
    }
    Ok((file, meta))
}

/// `rel` (`/`-separated, from the scan) beneath `dir`, following no symlink.
fn open_beneath(dir: &OwnedFd, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
    if OPENAT2.load(Ordering::Relaxed) {
        match sys::open_beneath(dir, rel, READ_FLAGS, Beneath::NoSymlinks) {
            None | Some(Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM)) => {
                OPENAT2.store(false, Ordering::Relaxed);
            }
            // Raced with a rename elsewhere on the system: the kernel asks to retry.
            Some(Err(rustix::io::Errno::AGAIN)) => return open_by_components(dir, rel, READ_FLAGS),
            Some(other) => return other,
        }
    }
    open_by_components(dir, rel, READ_FLAGS)
}

/// The portable walk: every component opened with `O_NOFOLLOW` relative to
/// the previous one; `..`, `.` and empty components are refused outright.
fn open_by_components(dir: &OwnedFd, rel: &[u8], last: OFlags) -> rustix::io::Result<OwnedFd> {
    let mut parts = rel.split(|&b| b == b'/').peekable();
    let mut current: Option<OwnedFd> = None;
    while let Some(part) = parts.next() {
        if part.is_empty() || part == b"." || part == b".." {
            return Err(rustix::io::Errno::XDEV);
        }
        let name = std::ffi::OsStr::from_bytes(part);
        let at = current.as_ref().unwrap_or(dir);
        if parts.peek().is_none() {
            return rustix::fs::openat(at, name, last | OFlags::NOFOLLOW, Mode::empty());
        }
        current = Some(rustix::fs::openat(
            at,
            name,
            sys::walk_dir_flags(),
            Mode::empty(),
        )?);
    }
    Err(rustix::io::Errno::NOENT)
}

/// The error for a file that is no longer the one the scan saw.
pub fn replaced(path: &Path, why: &str) -> Error {
    Error::new(
        ExitCode::Partial,
        "file_changed",
        format!(
            "{} changed between the scan and the read ({why}); it was not stored",
            display_path(path)
        ),
    )
    .with_path(path)
    .with_hint("run the checkpoint again when nothing is moving files in that directory")
    .retryable(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &Path) -> OwnedFd {
        rustix::fs::open(p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn both_ways_refuse_symlinks_and_escapes_at_every_component() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"inside").unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f"), b"outside").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink("b", root.join("a/rel")).unwrap();
        std::os::unix::fs::symlink("b/f", root.join("a/flink")).unwrap();
        let d = dir(&root);
        let read = |fd: OwnedFd| {
            std::fs::read_to_string(format!("/proc/self/fd/{}", {
                use std::os::fd::AsRawFd;
                fd.as_raw_fd()
            }))
            .unwrap()
        };
        type Open = fn(&OwnedFd, &[u8]) -> rustix::io::Result<OwnedFd>;
        for (name, open) in [
            ("openat2", open_beneath as Open),
            ("components", |d, r| open_by_components(d, r, READ_FLAGS)),
        ] {
            assert_eq!(read(open(&d, b"a/b/f").unwrap()), "inside", "{name}");
            for bad in [
                &b"link/f"[..],
                b"a/rel/f",
                b"a/flink",
                b"../outside/f",
                b"/etc/passwd",
            ] {
                let e = open(&d, bad).expect_err(name);
                assert!(
                    matches!(
                        e,
                        rustix::io::Errno::LOOP
                            | rustix::io::Errno::XDEV
                            | rustix::io::Errno::NOTDIR
                    ),
                    "{name} {}: {e:?}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
        // The walk refuses `..` even where it would stay inside.
        assert!(open_by_components(&d, b"a/../a/b/f", READ_FLAGS).is_err());
    }

    #[test]
    fn a_fifo_or_another_file_in_place_of_the_scanned_one_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("f"), b"scanned").unwrap();
        let meta = std::fs::symlink_metadata(root.join("f")).unwrap();
        let item = ScanItem {
            rel: b"f".to_vec(),
            abs: root.join("f"),
            kind: EntryType::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            size: 7,
            ino: meta.ino(),
            dev: meta.dev(),
            target: None,
            class: super::super::DataClass::Public,
            nlink: 1,
            xattrs: Vec::new(),
            xattr_error: None,
            unlisted: false,
            file_flags: 0,
        };
        let rd = RootDir::Dir(dir(root));
        let (_, m) = open_scanned(&rd, &item).unwrap();
        assert_eq!(m.ino(), item.ino);
        // Replaced by another file: refused.
        std::fs::write(root.join("g"), b"other").unwrap();
        std::fs::rename(root.join("g"), root.join("f")).unwrap();
        assert_eq!(open_scanned(&rd, &item).unwrap_err().code, "file_changed");
        // A FIFO with no writer: opening must not block.
        std::fs::remove_file(root.join("f")).unwrap();
        let c = std::ffi::CString::new(root.join("f").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert_eq!(open_scanned(&rd, &item).unwrap_err().code, "file_changed");
        // A symlink in its place.
        std::fs::remove_file(root.join("f")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("f")).unwrap();
        assert_eq!(open_scanned(&rd, &item).unwrap_err().code, "file_changed");
        // The root directory itself replaced since the scan.
        let root_item = ScanItem {
            rel: Vec::new(),
            abs: root.to_path_buf(),
            kind: EntryType::Dir,
            ino: 1,
            ..item.clone()
        };
        let scanned = ScannedRoot {
            root: crate::config::TrackedRoot {
                abs: root.to_path_buf(),
                shown: root.to_path_buf(),
            },
            present: true,
            items: vec![root_item],
            link: None,
        };
        assert!(matches!(RootDir::open(&scanned, None), RootDir::Replaced));
    }
}
