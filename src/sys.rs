//! Every operating-system-specific call the library makes, chosen here per
//! target with the reason beside it. The two targets are Linux and macOS
//! (docs/platforms.md); other Unixes get the portable POSIX path.
//!
//! Layer: bottom (beside `error` and `paths`); it depends on nothing in the
//! crate, so `atomic`, `repo` and `ops` can all call it. Code elsewhere should
//! not grow its own `#[cfg(target_os)]`: add the call here instead, so
//! `scripts/test` (which lints for both Apple targets) sees every variant.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::Mode;

/// Number of times this process fell back from `F_FULLFSYNC` to `fsync`
/// because a file system refused the former (always 0 off macOS).
static FULLFSYNC_REFUSED: AtomicU64 = AtomicU64::new(0);

/// A permission word as rustix wants it (type bits, if any, are dropped by rustix).
///
/// Why: `mode_t` is `u32` on Linux but `u16` on macOS. Modes come from
/// `st_mode` and snapshots as `u32`; every bit they can carry (type and
/// `0o7777`) fits in 16 bits, so the narrowing on macOS loses nothing.
#[allow(clippy::unnecessary_cast)] // a no-op on Linux, a narrowing on macOS
pub fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits as rustix::fs::RawMode)
}

/// Make the content and metadata of an open file (or directory) durable,
/// through the drive's own write cache.
///
/// - Linux: `fsync(2)`, which issues a cache flush to the device.
/// - macOS: `fsync(2)` only hands the data to the drive, which may keep it
///   in its volatile cache across a power cut; `fcntl(F_FULLFSYNC)` asks the
///   drive to flush (what SQLite, restic and Apple's own guidance use).
///   Some file systems refuse it (SMB, some FUSE mounts: `ENOTSUP`,
///   `EINVAL`, `ENOTTY`); there `fsync` is the best available, and the
///   fallback is counted ([`fullfsync_refusals`]) for the health check.
pub fn sync_file(fd: impl AsFd) -> io::Result<()> {
    #[cfg(target_vendor = "apple")]
    {
        use rustix::io::Errno;
        match rustix::fs::fcntl_fullfsync(&fd) {
            Ok(()) => return Ok(()),
            Err(Errno::NOTSUP | Errno::INVAL | Errno::NOTTY) => {
                FULLFSYNC_REFUSED.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::fsync(fd).map_err(Into::into)
}

/// How many syncs in this process had to fall back to plain `fsync`.
pub fn fullfsync_refusals() -> u64 {
    FULLFSYNC_REFUSED.load(Ordering::Relaxed)
}

/// What [`sync_file`] achieves on the file system holding a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStrength {
    /// Linux `fsync`: data reaches stable storage (the kernel flushes the drive cache).
    Fsync,
    /// macOS `F_FULLFSYNC` accepted: the drive's cache is flushed.
    FullFsync,
    /// macOS file system refused `F_FULLFSYNC`: data reaches the drive,
    /// which may still lose its cache in a power cut.
    FsyncOnly,
}

/// `dir` opened read-only as a directory, for the probes below.
fn open_dir(dir: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::OFlags;
    Ok(rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Find out what [`sync_file`] does for `dir` by syncing the directory
/// itself (harmless: no data is written). For the health check.
pub fn probe_sync(dir: &Path) -> io::Result<SyncStrength> {
    let fd = open_dir(dir)?;
    #[cfg(target_vendor = "apple")]
    {
        use rustix::io::Errno;
        match rustix::fs::fcntl_fullfsync(&fd) {
            Ok(()) => Ok(SyncStrength::FullFsync),
            Err(Errno::NOTSUP | Errno::INVAL | Errno::NOTTY) => {
                rustix::fs::fsync(&fd)?;
                Ok(SyncStrength::FsyncOnly)
            }
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        rustix::fs::fsync(&fd)?;
        Ok(SyncStrength::Fsync)
    }
}

/// `syncfs(2)` on the file system holding `fd`: everything written there is
/// durable when this returns `true`. `false` means "not known", and the
/// caller fsyncs each file it changed instead.
///
/// - Linux 5.8+: `syncfs` reports writeback errors since `fd` was opened,
///   so one call per file system replaces many fsyncs (docs/performance.md).
/// - Older Linux: `syncfs` may swallow a writeback error: `false`.
/// - macOS: there is no `syncfs` (and `sync(2)` neither waits nor reports
///   errors): `false`, so every file gets its own `F_FULLFSYNC`.
pub fn sync_file_system(fd: impl AsFd) -> bool {
    #[cfg(target_os = "linux")]
    {
        syncfs_reports_errors() && rustix::fs::syncfs(fd).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        false
    }
}

/// Whether [`sync_file_system`] can ever return `true` on this machine.
pub fn has_reliable_syncfs() -> bool {
    #[cfg(target_os = "linux")]
    {
        syncfs_reports_errors()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Linux 5.8 or newer (syncfs returns writeback errors since then).
#[cfg(target_os = "linux")]
fn syncfs_reports_errors() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        let uname = rustix::system::uname();
        let release = uname.release().to_string_lossy();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) >= (5, 8)
    })
}

/// Ask the kernel to start writing `from..to` of `file` to disk now, without
/// waiting, so the final sync of a large file does not stall on all of it.
/// Advisory: an error changes nothing about durability and is ignored.
///
/// - Linux: `sync_file_range(SYNC_FILE_RANGE_WRITE)` (not in rustix).
/// - macOS: no equivalent (no `sync_file_range`; `F_FULLFSYNC` is all or
///   nothing and blocks), so nothing is done and the final sync writes it all.
pub fn start_writeback(file: &File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to.saturating_sub(from)))
        else {
            return;
        };
        // SAFETY: sync_file_range only reads its integer arguments; the
        // descriptor is valid for the duration of the call (borrowed `file`).
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, from, to);
    }
}

/// Make the next reads of `file` come from the device rather than the page
/// cache (verify after write reads back what it just wrote and synced).
///
/// - Linux: `posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file; the
///   pages are clean after the fsync, so the kernel drops them.
/// - macOS: `fcntl(F_NOCACHE)` on the descriptor (no fadvise there).
///
/// Best effort: where neither works the read-back comes from the cache and
/// still catches a write the kernel got wrong bytes for.
pub fn drop_cached_pages(file: &File) {
    use std::os::fd::AsRawFd;
    #[cfg(target_os = "linux")]
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor
    // is valid for the duration of the call (borrowed `file`).
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    #[cfg(target_vendor = "apple")]
    // SAFETY: F_NOCACHE takes an integer flag; the descriptor is valid.
    unsafe {
        libc::fcntl(file.as_raw_fd(), libc::F_NOCACHE, 1);
    }
    #[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
    let _ = file.as_raw_fd();
}

/// Whether the file system holding `path` is mounted read-only (`statvfs`
/// `ST_RDONLY`); false when that cannot be read.
pub fn read_only_mount(path: &Path) -> bool {
    rustix::fs::statvfs(path)
        .map(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
        .unwrap_or(false)
}

/// Bytes available to an unprivileged user on the file system holding `path`.
///
/// - Linux: `statvfs`, `f_bavail * f_frsize` (`f_frsize` is the unit of the
///   block counts; `f_bsize` is only the preferred I/O size).
/// - macOS: `statfs`, `f_bavail * f_bsize`. Its `statvfs` has 32-bit block
///   counts (`fsblkcnt_t` is `unsigned int`), which cannot describe a
///   volume over 16 TiB; `statfs` counts in 64 bits and its `f_bsize` is the
///   fundamental block size there.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    #[cfg(target_vendor = "apple")]
    {
        let st = rustix::fs::statfs(path)?;
        Ok(st.f_bavail.saturating_mul(u64::from(st.f_bsize)))
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        let st = rustix::fs::statvfs(path)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// How a directory's file system compares names (for restore's clash check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameFolding {
    /// Byte-exact: `Foo`, `foo` and the NFC/NFD spellings of `é` are four names.
    Exact,
    /// Unicode NFC and NFD spellings are one name; case matters (APFS
    /// case-sensitive volumes; HFS+ stores NFD).
    Normalization,
    /// Case and normalization both ignored (APFS and HFS+ defaults; ext4,
    /// f2fs and tmpfs directories with the casefold flag, `chattr +F`).
    CaseAndNormalization,
}

/// How the file system holding directory `dir` compares names.
///
/// - macOS: per volume: `fpathconf(_PC_CASE_SENSITIVE)` is 0 on a
///   case-insensitive volume; every APFS volume is normalization-insensitive
///   and HFS+ stores NFD, so names are at least normalization-folded there.
/// - Linux: the `FS_CASEFOLD_FL` inode flag (`chattr +F`, inherited by new
///   subdirectories; its `utf8` encoding compares NFD case-folded names).
///   Other folding file systems carry no flag (vfat, CIFS/SMB mounts of a
///   Mac or Windows share, FUSE ones such as ciopfs), so without the flag
///   the directory is asked directly ([`probe_folding`]).
/// - An answer that cannot be had counts as the most folding: refusing a
///   restore is safer than merging two files.
pub fn name_folding(dir: &Path) -> io::Result<NameFolding> {
    let fd = open_dir(dir)?;
    #[cfg(target_vendor = "apple")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fpathconf only reads its integer arguments; `fd` is open.
        let sensitive = unsafe { libc::fpathconf(fd.as_raw_fd(), libc::_PC_CASE_SENSITIVE) };
        Ok(if sensitive > 0 {
            NameFolding::Normalization
        } else {
            NameFolding::CaseAndNormalization
        })
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        #[cfg(target_os = "linux")]
        {
            // FS_CASEFOLD_FL from <linux/fs.h>; rustix's IFlags has no name for it.
            const FS_CASEFOLD_FL: u32 = 0x4000_0000;
            if let Ok(flags) = rustix::fs::ioctl_getflags(&fd) {
                if flags.bits() & FS_CASEFOLD_FL != 0 {
                    return Ok(NameFolding::CaseAndNormalization);
                }
            }
        }
        probe_folding(&fd)
    }
}

/// Ask a directory how it compares names: create a temp file under one
/// spelling and look it up under another (upper/lower case; NFC/NFD `é`),
/// then remove it. Only called where two names could clash, so rarely.
pub fn probe_folding(dir: impl AsFd) -> io::Result<NameFolding> {
    use rustix::fs::{AtFlags, OFlags};
    let base = format!(".dfb-tmp-fold-{}-", std::process::id());
    let created = format!("{base}Ab\u{e9}");
    let fd = rustix::fs::openat(
        &dir,
        &created,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    )?;
    drop(fd);
    let finds = |other: String| rustix::fs::statat(&dir, &other, AtFlags::SYMLINK_NOFOLLOW).is_ok();
    let case = finds(format!("{base}aB\u{e9}"));
    let norm = finds(format!("{base}Abe\u{301}"));
    rustix::fs::unlinkat(&dir, &created, AtFlags::empty())?;
    Ok(match (case, norm) {
        (true, _) => NameFolding::CaseAndNormalization,
        (false, true) => NameFolding::Normalization,
        (false, false) => NameFolding::Exact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_user_flags_are_named_never_system_ones() {
        assert_eq!(file_flag_names(0x8002), ["uchg", "hidden"]);
        assert_eq!(
            file_flag_names(0x1 | 0x4 | 0x8),
            ["nodump", "uappnd", "opaque"]
        );
        // SF_ARCHIVED, SF_IMMUTABLE (schg), SF_APPEND, SF_RESTRICTED, and the
        // system-set UF_COMPRESSED and UF_TRACKED: none is a user flag.
        assert!(
            file_flag_names(0x1_0000 | 0x2_0000 | 0x4_0000 | 0x8_0000 | 0x20 | 0x40).is_empty()
        );
        let meta = std::fs::metadata(std::env::temp_dir()).unwrap();
        #[cfg(not(target_os = "macos"))]
        assert_eq!(user_file_flags(&meta), 0, "Linux has no BSD file flags");
        #[cfg(target_os = "macos")]
        assert_eq!(user_file_flags(&meta) & !0x800f, 0);
    }

    #[test]
    #[allow(clippy::useless_conversion)] // RawMode is u32 on Linux
    fn mode_keeps_every_permission_bit() {
        for bits in [0o7777u32, 0o4755, 0o644, 0o600, 0] {
            assert_eq!(u32::from(mode(bits).as_raw_mode()), bits);
            // A type word (from st_mode) gives its permission bits, as on Linux.
            assert_eq!(u32::from(mode(0o100000 | bits).as_raw_mode()), bits);
        }
    }

    #[test]
    fn sync_file_and_probe_work_on_a_local_directory() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("x")).unwrap();
        sync_file(&f).unwrap();
        let strength = probe_sync(dir.path()).unwrap();
        #[cfg(target_os = "linux")]
        assert_eq!(strength, SyncStrength::Fsync);
        let _ = strength;
        assert_eq!(fullfsync_refusals(), 0);
        assert!(probe_sync(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn available_bytes_is_at_most_the_size_of_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let avail = available_bytes(dir.path()).unwrap();
        let st = rustix::fs::statvfs(dir.path()).unwrap();
        assert!(avail <= st.f_blocks.saturating_mul(st.f_frsize));
        assert!(available_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn an_ordinary_directory_is_byte_exact_and_the_probe_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        #[cfg(target_os = "linux")]
        assert_eq!(name_folding(dir.path()).unwrap(), NameFolding::Exact);
        let _ = name_folding(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(name_folding(&dir.path().join("missing")).is_err());
    }
}

/// How [`open_beneath`] may resolve a path below its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beneath {
    /// Symlinks are followed while they stay below the directory.
    FollowInside,
    /// No symlink is followed at all.
    NoSymlinks,
}

/// `openat2(dir, rel, flags, RESOLVE_BENEATH …)`: `None` where the call does
/// not exist (macOS and other Unixes have no equivalent; callers then walk
/// the path component by component with `O_NOFOLLOW`).
///
/// Why here: `openat2` is Linux-only (5.6+); the kernel check for escapes is
/// atomic, which a userspace walk can only approximate.
pub fn open_beneath(
    dir: impl AsFd,
    rel: &[u8],
    flags: rustix::fs::OFlags,
    how: Beneath,
) -> Option<rustix::io::Result<std::os::fd::OwnedFd>> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::ResolveFlags;
        let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        if how == Beneath::NoSymlinks {
            resolve |= ResolveFlags::NO_SYMLINKS;
        }
        Some(rustix::fs::openat2(dir, rel, flags, Mode::empty(), resolve))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (dir.as_fd(), rel, flags, how);
        None
    }
}

/// Flags for opening an intermediate directory of a component walk: a
/// path-only handle on Linux (`O_PATH`, no read permission needed), a plain
/// read-only directory elsewhere (macOS has no `O_PATH`).
pub fn walk_dir_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    let base = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return base | OFlags::PATH;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return base | OFlags::RDONLY;
}

/// `st_dev` as the `u64` the scan records (`dev_t` is `i32` on macOS).
#[allow(clippy::unnecessary_cast)] // a no-op on Linux, a widening on macOS
pub fn dev_of(st: &rustix::fs::Stat) -> u64 {
    st.st_dev as u64
}

/// The user-settable BSD file flags (macOS `chflags`) a file carries, as a
/// mask of the ones named in [`file_flag_names`]; always 0 on Linux, whose
/// `chattr` attributes are another mechanism.
///
/// Decision (docs/platforms.md): snapshots do not record these flags, and
/// the checkpoint says so per file (`file_flags_not_recorded`) instead of
/// dropping them silently. Why not record and restore them: `uchg`/`uappnd`
/// make the file refuse the rename, mode and time changes a restore makes,
/// so restoring them means clearing them before every overwrite and setting
/// them after the rename, through a path that has never run on a Mac here;
/// getting that wrong leaves a user's file immutable or half-restored. The
/// system flags (`SF_*`: `schg`, `restricted`, ...) are root's and SIP's and
/// are never touched either way; `compressed` and `tracked` are set by the
/// system, not the user, and are left out.
pub fn user_file_flags(meta: &std::fs::Metadata) -> u32 {
    #[cfg(target_os = "macos")]
    {
        use std::os::macos::fs::MetadataExt;
        meta.st_flags() & USER_FLAGS.iter().fold(0, |m, (bit, _)| m | bit)
    }
    #[cfg(not(target_os = "macos"))]
    {
        let _ = meta;
        0
    }
}

/// `<sys/stat.h>`'s user flags, with `chflags`' names for them.
const USER_FLAGS: [(u32, &str); 5] = [
    (0x0000_0001, "nodump"), // UF_NODUMP
    (0x0000_0002, "uchg"),   // UF_IMMUTABLE
    (0x0000_0004, "uappnd"), // UF_APPEND
    (0x0000_0008, "opaque"), // UF_OPAQUE
    (0x0000_8000, "hidden"), // UF_HIDDEN
];

/// The `chflags` names of the flags in `mask` ([`user_file_flags`]).
pub fn file_flag_names(mask: u32) -> Vec<&'static str> {
    USER_FLAGS
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// One extended attribute: name and raw value.
pub type XattrPair = (Vec<u8>, Vec<u8>);

/// Is this extended attribute recorded in snapshots and restored?
///
/// Why per target: Linux has namespaces. `user.*` is the user's own data
/// and the two POSIX ACL attributes carry permissions (their raw values are
/// the kernel's portable encoding); `trusted.*` and `security.*` belong to
/// root and the security module (SELinux labels are set by the policy on
/// restore, not copied). macOS has no namespaces: every attribute a file
/// carries (`com.apple.*` Finder info, resource forks, quarantine, and
/// whatever a program set) is the user's and is recorded.
pub fn xattr_recorded(name: &[u8]) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        name.starts_with(b"user.")
            || name == b"system.posix_acl_access"
            || name == b"system.posix_acl_default"
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        !name.is_empty()
    }
}

/// The recorded extended attributes of `path` (not followed if a symlink),
/// sorted by name. A file system without extended attributes gives none.
/// Errors are what a caller reports as a warning (EACCES on a file the
/// caller may not inspect).
pub fn read_xattrs(path: &Path) -> io::Result<Vec<XattrPair>> {
    use rustix::io::Errno;
    use std::os::unix::ffi::OsStrExt;
    let names = loop {
        let len = match rustix::fs::llistxattr_query(path) {
            Ok(n) => n,
            Err(Errno::NOTSUP | Errno::NOSYS) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; len];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                break buf;
            }
            // Grew between the two calls: ask again.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| xattr_recorded(n)) {
        let cname = std::ffi::OsStr::from_bytes(name);
        let value = loop {
            let len = match rustix::fs::lgetxattr_query(path, cname) {
                Ok(n) => n,
                // Removed between listing and reading.
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            };
            let mut buf = vec![0u8; len];
            match rustix::fs::lgetxattr(path, cname, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    break Some(buf);
                }
                Err(Errno::RANGE) => continue,
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(v) = value {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// Make the recorded extended attributes of the open file `fd` exactly
/// `want`: recorded-class attributes not in `want` are removed (an ACL
/// inherited from a directory's default ACL would otherwise grant more than
/// the snapshot did). Returns the names that could not be set or removed,
/// with the error (ENOTSUP on a file system without them, EPERM).
pub fn write_xattrs(fd: impl AsFd, want: &[XattrPair]) -> Vec<(Vec<u8>, io::Error)> {
    use rustix::fs::XattrFlags;
    use rustix::io::Errno;
    use std::os::unix::ffi::OsStrExt;
    let fd = fd.as_fd();
    let mut failed = Vec::new();
    let present: Vec<Vec<u8>> = match rustix::fs::flistxattr_query(fd) {
        Ok(0) | Err(Errno::NOTSUP | Errno::NOSYS) => Vec::new(),
        Ok(len) => {
            let mut buf = vec![0u8; len + 256];
            match rustix::fs::flistxattr(fd, &mut buf[..]) {
                Ok(n) => buf[..n]
                    .split(|b| *b == 0)
                    .filter(|n| xattr_recorded(n))
                    .map(<[u8]>::to_vec)
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
        Err(_) => Vec::new(),
    };
    for name in present {
        if want.iter().any(|(n, _)| *n == name) {
            continue;
        }
        match rustix::fs::fremovexattr(fd, std::ffi::OsStr::from_bytes(&name)) {
            Ok(()) | Err(Errno::NODATA) => {}
            Err(e) => failed.push((name, e.into())),
        }
    }
    for (name, value) in want {
        let cname = std::ffi::OsStr::from_bytes(name);
        if let Err(e) = rustix::fs::fsetxattr(fd, cname, value, XattrFlags::empty()) {
            failed.push((name.clone(), e.into()));
        }
    }
    failed
}
