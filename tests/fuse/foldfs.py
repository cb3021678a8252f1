#!/usr/bin/env python3
"""A case- and normalization-insensitive FUSE passthrough: the stand-in for a
macOS APFS volume (case-insensitive, case-preserving, NFC = NFD) that the name
clash tests in tests/casefold.rs run on, where the kernel has no ext4 casefold.

    foldfs.py BACKING MOUNTPOINT      (stays in the foreground; umount MOUNTPOINT ends it)

Every name is looked up the way APFS does: an exact match first, else any entry
whose Unicode NFD + full case folding (Python's str.casefold) equals the wanted
name's. So `Foo` and `foo`, or `café` spelled NFC and NFD, are one name: writing
`foo` when `Foo` exists writes into `Foo`, and the backing directory never holds
two spellings of one name. The folding is Python's own Unicode tables, not the
Rust code under test (src/ops/names.rs).

The kernel must not cache names or attributes (entry, negative and attribute
timeouts are 0), or a lookup under another spelling would be answered from the
dentry cache without asking this file system. Single-threaded on purpose: the
rename below is two steps. mfusepy (pip, scripts/fuse-tools) over libfuse3.
"""
import ctypes
import errno
import os
import sys
import unicodedata

# mfusepy looks for libfuse 2 first; where both are installed that one's
# fusermount refuses a non-empty mount point (the tests mount over a home
# that has files). libfuse3 is what scripts/fuse-tools and .ci/run provide.
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

import mfusepy as fuse  # noqa: E402  (after choosing the library)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
_libc = ctypes.CDLL(None, use_errno=True)


def fold(name):
    """The key two names share when this file system treats them as one."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


class FoldFS(fuse.Operations):
    use_ns = True

    def __init__(self, root):
        self.root = os.path.realpath(root)

    # -- names ---------------------------------------------------------------
    def real(self, path):
        """The backing path for `path`: each component matched exactly, else by fold."""
        cur = self.root
        for comp in (p for p in path.split("/") if p):
            exact = os.path.join(cur, comp)
            if not os.path.lexists(exact):
                key = fold(comp)
                try:
                    found = next((n for n in sorted(os.listdir(cur)) if fold(n) == key), None)
                except (FileNotFoundError, NotADirectoryError):
                    found = None
                if found is not None:
                    exact = os.path.join(cur, found)
            cur = exact
        return cur

    # -- attributes ----------------------------------------------------------
    def getattr(self, path, fh=None):
        st = os.fstat(fh) if path is None else os.lstat(self.real(path))
        out = {k: getattr(st, k) for k in ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid",
                                            "st_size", "st_blocks", "st_blksize", "st_rdev")}
        out.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return out

    def access(self, path, amode):
        if not os.access(self.real(path), amode, follow_symlinks=False):
            raise fuse.FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self.real(path), mode)

    def chown(self, path, uid, gid):
        os.lchown(self.real(path), uid, gid)

    def utimens(self, path, times=None):
        # Present so mfusepy registers the call; FoldFUSE.utimens_fuse_3 does it
        # with the raw timespecs (UTIME_OMIT and UTIME_NOW kept).
        os.utime(self.real(path), ns=times, follow_symlinks=False)

    def truncate(self, path, length, fh=None):
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self.real(path), length)

    def statfs(self, path):
        sv = os.statvfs(self.real(path))
        return {k: getattr(sv, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                            "f_files", "f_ffree", "f_favail", "f_flag", "f_namemax")}

    # -- directories -----------------------------------------------------------
    def readdir(self, path, fh):
        return [".", ".."] + sorted(os.listdir(self.real(path)))

    def mkdir(self, path, mode):
        os.mkdir(self.real(path), mode)

    def rmdir(self, path):
        os.rmdir(self.real(path))

    def fsyncdir(self, path, datasync, fh):
        fd = os.open(self.real(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- links and names -------------------------------------------------------
    def readlink(self, path):
        return os.readlink(self.real(path))

    def symlink(self, target, source):  # mfusepy: the link is `target`, its content `source`
        os.symlink(source, self.real(target))

    def link(self, target, source):
        os.link(self.real(source), self.real(target))

    def mknod(self, path, mode, dev):
        os.mknod(self.real(path), mode, dev)

    def unlink(self, path):
        os.unlink(self.real(path))

    def rename(self, old, new, flags=0):
        src, dst = self.real(old), self.real(new)
        if flags & RENAME_EXCHANGE:
            raise fuse.FuseOSError(errno.EINVAL)
        wanted = os.path.join(os.path.dirname(dst), os.path.basename(new))
        if os.path.lexists(dst) and not os.path.samestat(os.lstat(src), os.lstat(dst)):
            if flags & RENAME_NOREPLACE:
                raise fuse.FuseOSError(errno.EEXIST)
            # Replaces the other spelling; the name keeps the new spelling (case-preserving).
            os.rename(src, dst)
            src = dst
        os.rename(src, wanted)

    # -- files -----------------------------------------------------------------
    def open(self, path, flags):
        return os.open(self.real(path), flags & ~os.O_CREAT)

    def create(self, path, mode, flags):
        return os.open(self.real(path), flags | os.O_CREAT, mode)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        (os.fdatasync if datasync else os.fsync)(fh)

    def release(self, path, fh):
        os.close(fh)


class FoldFUSE(fuse.FUSE):
    """mfusepy drops rename's flags and turns UTIME_OMIT/UTIME_NOW into times:
    pass both through unchanged (a rename with RENAME_NOREPLACE must not replace)."""

    def rename_fuse_3(self, old, new, flags):
        return self.operations.rename(old.decode(self.encoding, self.errors),
                                      new.decode(self.encoding, self.errors), flags)

    def utimens_fuse_3(self, path, buf, fip):
        if path is None:
            rc = _libc.futimens(fip.contents.fh, buf)
        else:
            real = self.operations.real(path.decode(self.encoding, self.errors))
            rc = _libc.utimensat(AT_FDCWD, os.fsencode(real), buf, AT_SYMLINK_NOFOLLOW)
        return -ctypes.get_errno() if rc != 0 else 0


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: foldfs.py BACKING MOUNTPOINT")
    backing, mountpoint = sys.argv[1], sys.argv[2]
    FoldFUSE(FoldFS(backing), mountpoint, foreground=True, nothreads=True, fsname="foldfs",
             entry_timeout=0, negative_timeout=0, attr_timeout=0, hard_remove=True)


if __name__ == "__main__":
    main()
