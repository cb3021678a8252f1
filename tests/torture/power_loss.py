#!/usr/bin/env python3
"""Power loss: nothing reported committed is lost when the machine dies.

Runs the real binaries on an ext4 file system in a loop-mounted image (home and
repository both on it) and cuts the power with the FS_IOC_SHUTDOWN ioctl and
EXT4_GOING_FLAGS_NOLOGFLUSH: the journal is not flushed, so whatever was not
fsynced is gone, exactly as if the disk had lost power. The file system is
then unmounted, the loop device detached and re-attached, and mounted again
(journal replay). The mount uses commit=300 (no background journal commit
during the test) and noauto_da_alloc (no implicit flush on rename-over), so
only the tool's own fsyncs make anything durable.

Before anything else a probe proves the cut really loses unsynced data and
keeps synced data; if it does not (or we are not root, or loop devices, mount
or the ioctl do not work) the test prints `power_loss: SKIP (<reason>)` and
exits 0.

Scenario A (cut after success), per round: change the home, run
`backup-checkpoint manual` and cut the power as soon as it reports success.
After remount: `backup-list` lists every snapshot id ever reported committed,
`backup-verify --read-data` passes, and the latest restores (into /tmp) byte
for byte, with modes and symlink targets, to the copy of the home taken when
the checkpoint ran. Then the home is damaged, `backup-rollback` runs to
success and the power is cut: after remount the home is exactly the checkpoint.

Scenario B (cut during a write), per round, with a printed seed:
  * a checkpoint of a home with a few MB of new data is cut at a random delay
    (0-200 ms): verify --read-data passes (leftover temp files and unreferenced
    packs are fine), every earlier committed snapshot is listed and restores,
    and the interrupted one is absent or whole (restores byte-exact); if it
    reported success before the cut it must be there;
  * a rollback of a damaged home is cut at a random delay (0-200 ms, or up to
    the measured duration of an uncut rollback when that is longer): every tracked file
    holds its old or its new content (never torn, never vanished), and
    `backup-rollback --undo` and re-running the rollback work and end with the
    checkpointed content exactly. A rollback cut while it runs meets EIO from
    then on and may still finish: if it reports success, the home must be
    exactly the checkpoint after remount; if partial (exit 3), every path not
    named in errors[] must be.

Scenario C (exact cut points; needs strace, skipped without it): the rollback
is stopped right before its Nth fsync (`strace -e inject=fsync:signal=STOP`),
the power is cut, and the process is let go on against the dead file system
(every call now fails with EIO, as on a disk that dies under it). Points: the
last fsyncs in the home, the last call, two at random. Whatever it reports as
done must be durable, and it may not report success over a directory sync in
the home that failed.

A final sweep cuts once more with nothing running, then restores every
committed checkpoint and compares it.

Usage: power_loss.py --bin-dir target/debug [--rounds N] [--seed S] [--max-delay-ms MS]
                     [--exact-points N] [--json OUT] [--keep]
Exit 1 when any case fails. Python 3.11 standard library only; needs root.
"""
import argparse
import ctypes
import fcntl
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

FS_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
NOLOGFLUSH = 2                # EXT4_GOING_FLAGS_NOLOGFLUSH: drop the journal, like a power cut
MOUNT_OPTS = "commit=300,noauto_da_alloc"

# Tracked by default (src/config.rs DEFAULT_CONFIG_ROOTS), relative to $HOME, as bytes.
ROOTS = [b".profile", b".bashrc", b".bash_profile", b".bash_aliases", b".zshrc", b".zshenv",
         b".zprofile", b".inputrc", b".gitconfig", b".gitignore_global", b".vimrc", b".tmux.conf",
         b".ssh/config", b".config"]
TMP_PREFIX = b".dfb-tmp"
NON_UTF8 = b".config/app/caf\xe9-latin1.conf"

CHILDREN = []  # running tool processes, killed in the finally block


class Skip(Exception):
    pass


def show(path):
    if isinstance(path, bytes):
        return path.decode("utf-8", "backslashreplace")
    return path


def sh(*cmd, check=True):
    p = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {p.returncode}: {p.stderr.strip()}")
    return p


_libc = None


def syncfs(path):
    """Make the harness's own changes durable (the tool's must be durable by itself)."""
    global _libc
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        if _libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


class Disk:
    """An ext4 image on a loop device, mounted at `mnt`; `cut()` is the power switch."""

    def __init__(self, work, size_mb):
        self.img = os.path.join(work, "disk.img")
        self.mnt = os.path.join(work, "mnt")
        self.size_mb = size_mb
        self.loop = None
        self.mounted = False
        self.cut_fd = None

    def create(self):
        os.makedirs(self.mnt, exist_ok=True)
        with open(self.img, "wb") as f:
            f.truncate(self.size_mb << 20)
        sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", self.img)

    def attach(self):
        self.loop = sh("losetup", "-f", "--show", self.img).stdout.strip()

    def detach(self):
        if self.loop:
            sh("losetup", "-d", self.loop)
            self.loop = None

    def mount(self):
        sh("mount", "-t", "ext4", "-o", MOUNT_OPTS, self.loop, self.mnt)
        self.mounted = True

    def umount(self):
        if not self.mounted:
            return
        self.close_cut_fd()
        for _attempt in range(50):
            p = sh("umount", self.mnt, check=False)
            if p.returncode == 0:
                self.mounted = False
                return
            time.sleep(0.1)
        raise RuntimeError(f"umount {self.mnt}: {p.stderr.strip()}")

    def arm(self):
        """Open the mount point ahead so the cut itself is one ioctl."""
        if self.cut_fd is None:
            self.cut_fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)

    def close_cut_fd(self):
        if self.cut_fd is not None:
            os.close(self.cut_fd)
            self.cut_fd = None

    def cut(self):
        self.arm()
        fcntl.ioctl(self.cut_fd, FS_IOC_SHUTDOWN, struct.pack("I", NOLOGFLUSH))

    def power_on(self):
        """After a cut: unmount, detach, re-attach, mount (the journal is replayed)."""
        self.umount()
        self.detach()
        self.attach()
        self.mount()

    def cleanup(self):
        self.close_cut_fd()
        if self.mounted:
            if sh("umount", self.mnt, check=False).returncode != 0:
                time.sleep(0.5)
                if sh("umount", self.mnt, check=False).returncode != 0:
                    sh("umount", "-l", self.mnt, check=False)
            self.mounted = False
        if self.loop:
            sh("losetup", "-d", self.loop, check=False)
            self.loop = None


def probe(disk):
    """Raise Skip unless this machine can mount an image and lose unsynced data on a cut."""
    if os.geteuid() != 0:
        raise Skip("needs root for loop devices and mount")
    for tool in ("losetup", "mount", "umount", "mkfs.ext4"):
        if shutil.which(tool) is None:
            raise Skip(f"{tool} not found")
    try:
        with open("/proc/filesystems") as f:
            if "ext4" not in f.read():
                raise Skip("the kernel has no ext4")
    except OSError:
        pass
    try:
        disk.create()
    except Exception as e:
        raise Skip(f"cannot make an ext4 image: {e}") from e
    try:
        disk.attach()
    except Exception as e:
        raise Skip(f"loop devices do not work: {e}") from e
    try:
        disk.mount()
    except Exception as e:
        raise Skip(f"cannot mount a loop device: {e}") from e
    synced, unsynced = os.path.join(disk.mnt, "probe-synced"), os.path.join(disk.mnt, "probe-unsynced")
    with open(synced, "wb") as f:
        f.write(b"S" * 8192)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(disk.mnt, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    with open(unsynced, "wb") as f:
        f.write(b"U" * 8192)
    try:
        disk.cut()
    except OSError as e:
        raise Skip(f"FS_IOC_SHUTDOWN does not work here: {e}") from e
    try:
        disk.power_on()
    except Exception as e:
        raise Skip(f"cannot remount after a shutdown: {e}") from e
    try:
        with open(synced, "rb") as f:
            ok = f.read() == b"S" * 8192
    except OSError:
        ok = False
    if not ok:
        raise Skip("an fsynced file did not survive the shutdown ioctl (the simulation is not trustworthy)")
    if os.path.exists(unsynced):
        raise Skip("an unsynced file survived the shutdown ioctl (it does not simulate a power cut here)")
    os.remove(synced)
    syncfs(disk.mnt)


# ---------------------------------------------------------------- the home


def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path):
        os.remove(path)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def text(rng, lines):
    words = ["alias", "export", "set", "bind", "source", "path", "color", "font", "theme", "key"]
    return "".join(f"{rng.choice(words)} {rng.choice(words)}_{rng.randrange(10**6)}\n"
                   for _ in range(lines)).encode()


def make_home(home, rng):
    hb = os.fsencode(home)
    def j(rel):
        return os.path.join(hb, rel)
    write(j(b".bashrc"), b"# bashrc\n" + text(rng, 20))
    write(j(b".zshrc"), b"# zshrc\n" + text(rng, 30))
    write(j(b".profile"), text(rng, 5))
    write(j(b".gitconfig"), b"[user]\n\tname = Test\n" + text(rng, 8))
    write(j(b".vimrc"), text(rng, 40))
    write(j(b".tmux.conf"), text(rng, 12))
    write(j(b".inputrc"), b"")  # empty file
    os.makedirs(j(b".ssh"), mode=0o700, exist_ok=True)
    os.chmod(j(b".ssh"), 0o700)
    write(j(b".ssh/config"), b"Host *\n  ServerAliveInterval 60\n", 0o600)
    for i in range(8):
        write(j(b".config/nvim/lua/plugins/p%d.lua" % i), text(rng, 10 + i))
    write(j(b".config/nvim/init.lua"), text(rng, 25))
    os.symlink(b"lua/plugins/p1.lua", j(b".config/nvim/current.lua"))
    os.symlink(b"/nonexistent/dangling/target", j(b".config/nvim/dangling"))
    for i in range(6):
        write(j(b".config/fish/functions/f%d.fish" % i), text(rng, 4))
    write(j(b".config/git/ignore"), b"*.o\n*.swp\n")
    write(j(b".config/app/settings.json"), json.dumps({"n": rng.randrange(10**9)}).encode())
    write(j(b".config/app/secret-ish.conf"), text(rng, 3), 0o600)
    write(j(NON_UTF8), b"latin-1 name\n" + text(rng, 3))
    write(j(b".config/bin/tool.sh"), b"#!/bin/sh\necho hi\n", 0o755)
    for i in range(6):
        write(j(b".config/deep/a/b/c/d%d.txt" % i), text(rng, 2))
    os.makedirs(j(b".config/empty-dir"), exist_ok=True)
    os.chmod(j(b".config/deep/a"), 0o750)
    write(j(b".config/medium.bin"), rng.randbytes(200_000))
    for i in range(4):
        write(j(b".config/big/blob%d.bin" % i), rng.randbytes(768 * 1024))
    # Not tracked (outside the roots): must not matter.
    write(j(b"notes/untracked.txt"), text(rng, 3))


def mutate(home, rng, big=False):
    """A few edits of the kind a bootstrap makes; with big, new content in the large files."""
    hb = os.fsencode(home)
    def j(rel):
        return os.path.join(hb, rel)
    for rel in rng.sample([b".bashrc", b".zshrc", b".vimrc", b".config/nvim/init.lua",
                           b".config/app/settings.json", b".config/git/ignore", NON_UTF8,
                           b".config/fish/functions/f2.fish", b".ssh/config"], 4):
        mode = os.lstat(j(rel)).st_mode & 0o7777 if os.path.lexists(j(rel)) else 0o644
        write(j(rel), text(rng, rng.randrange(1, 40)), mode)
    n = rng.randrange(10**6)
    write(j(b".config/new/added-%d.conf" % n), text(rng, 5))
    added = sorted(os.listdir(j(b".config/new")))
    if len(added) > 3:
        os.remove(j(b".config/new/" + added[0]))
    p = j(b".config/fish/functions/f%d.fish" % rng.randrange(6))
    os.chmod(p, rng.choice([0o600, 0o644, 0o755]))
    link = j(b".config/nvim/current.lua")
    os.remove(link)
    os.symlink(b"lua/plugins/p%d.lua" % rng.randrange(8), link)
    if big:
        for i in range(4):
            write(j(b".config/big/blob%d.bin" % i), rng.randbytes(768 * 1024))
    syncfs(home)


def damage(home, rng):
    """What a failed bootstrap step leaves: rewritten, deleted, new and chmodded files."""
    hb = os.fsencode(home)
    def j(rel):
        return os.path.join(hb, rel)
    write(j(b".zshrc"), b"broken by a bad step\n")
    write(j(b".bashrc"), b"")
    write(j(b".config/nvim/init.lua"), text(rng, 3))
    write(j(b".config/big/blob%d.bin" % rng.randrange(4)), rng.randbytes(1536 * 1024))
    write(j(b".config/big/blob%d.bin" % rng.randrange(4)), b"truncated")
    os.remove(j(b".config/nvim/lua/plugins/p%d.lua" % rng.randrange(2, 8)))
    os.remove(j(b".config/fish/functions/f0.fish"))
    write(j(b".config/junk/new-%d.txt" % rng.randrange(10**6)), text(rng, 50))
    write(j(b".config/app/new-file"), b"created after the checkpoint\n")
    os.chmod(j(b".config/bin/tool.sh"), 0o600)
    os.remove(j(b".config/nvim/current.lua"))
    os.symlink(b"somewhere/else", j(b".config/nvim/current.lua"))
    syncfs(home)


def tree_state(root, roots=ROOTS):
    """rel path (bytes) -> ('file', bytes, mode) | ('dir', mode) | ('link', target)"""
    rb = os.fsencode(root)
    out = {}

    def entry(full, rel):
        st = os.lstat(full)
        if os.path.islink(full):
            out[rel] = ("link", os.readlink(full))
        elif os.path.isdir(full):
            out[rel] = ("dir", st.st_mode & 0o7777)
        else:
            with open(full, "rb") as f:
                out[rel] = ("file", f.read(), st.st_mode & 0o7777)

    for r in roots:
        full = os.path.join(rb, r)
        if not os.path.lexists(full):
            continue
        entry(full, r)
        if os.path.isdir(full) and not os.path.islink(full):
            for dirpath, dirnames, filenames in os.walk(full):
                for name in dirnames + filenames:
                    f = os.path.join(dirpath, name)
                    entry(f, os.path.relpath(f, rb))
    return out


def is_tmp(rel):
    return os.path.basename(rel).startswith(TMP_PREFIX)


def describe(v):
    if v is None:
        return "absent"
    if v[0] == "file":
        return f"file {len(v[1])} B mode {v[2]:o}"
    if v[0] == "dir":
        return f"dir mode {v[1]:o}"
    return f"symlink -> {show(v[1])}"


def diff_states(got, want, limit=4):
    keys = sorted(set(got) | set(want))
    out = []
    for k in keys:
        if got.get(k) != want.get(k):
            out.append(f"{show(k)}: got {describe(got.get(k))}, want {describe(want.get(k))}")
            if len(out) >= limit:
                out.append("...")
                break
    return out


# ---------------------------------------------------------------- the tool


class Tool:
    def __init__(self, bins, home, repo, config):
        self.bins = bins
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "BACKUP_REPO": repo,
                    "BACKUP_PACKAGES": "0", "BACKUP_CONFIG": config, "BACKUP_EXTERNAL": "",
                    "NO_COLOR": "1", "LC_ALL": "C.UTF-8"}

    def cmd(self, args):
        return [os.path.join(self.bins, args[0])] + args[1:]

    def run(self, args, timeout=120):
        p = subprocess.run(self.cmd(args), env=self.env, capture_output=True, text=True,
                           errors="replace", timeout=timeout)
        return p.returncode, envelope(p.stdout), p

    def start(self, args):
        p = subprocess.Popen(self.cmd(args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, errors="replace")
        CHILDREN.append(p)
        return p

    def finish(self, p, timeout=20):
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        if p in CHILDREN:
            CHILDREN.remove(p)
        return p.returncode, envelope(out), err


def envelope(stdout):
    try:
        return json.loads(stdout)
    except (ValueError, TypeError):
        return None


def committed_env(rc, env):
    """The run reported a commit: success (exit 0) or partial (exit 3: committed, some paths failed)."""
    return env is not None and rc in (0, 3) and env.get("status") in ("success", "partial") \
        and env.get("snapshot") and env["snapshot"].get("id")


def rollback_expect(run, args, want, what, problems, ignore_tmp=False):
    """Run `backup-rollback ARGS --json`, record its safety snapshot as committed, and
    check the home ends as `want` (temp files of a cut run ignored when asked)."""
    rc, env, p = run.tool.run(["backup-rollback", *args, "--json"])
    if rc != 0:
        problems.append(f"{what} exit {rc}: {brief(env, p.stderr)}")
        return
    if committed_env(rc, env):
        run.committed[env["snapshot"]["id"]] = env["snapshot"].get("label")
    got = tree_state(run.home)
    if ignore_tmp:
        got = {k: v for k, v in got.items() if not is_tmp(k)}
    if got != want:
        problems.append(f"{what} did not end as expected: " + "; ".join(diff_states(got, want)))


def error_paths(env, home):
    """Home-relative paths (bytes) that a partial run names in errors[]: those may hold either state."""
    out = set()
    hb = os.fsencode(home).rstrip(b"/")
    for e in (env or {}).get("errors") or []:
        if not isinstance(e, dict):
            continue
        # `path` may name the pack that could not be read; the home path is then in the message
        # ("~/.zshrc: not restored: opening pack …").
        cands = [e.get("path") or ""] + re.findall(r"(~/[^:\s]+)", e.get("message") or "")
        for path in cands:
            b = os.fsencode(path)
            if b in (b"~", hb):
                out.add(b"")
            elif b.startswith(b"~/"):
                out.add(b[2:].rstrip(b"/"))
            elif b.startswith(hb + b"/"):
                out.add(b[len(hb) + 1:].rstrip(b"/"))
    return out


def excused(rel, paths):
    """rel is named by an error, or lies under a directory that is (a failed directory sync)."""
    return any(rel == p or p == b"" or rel.startswith(p + b"/") for p in paths)


def brief(env, p_stderr=""):
    if env is None:
        return f"no envelope; stderr: {p_stderr.strip()[-300:]}"
    return f"status {env.get('status')} errors {json.dumps(env.get('errors'))[:400]}"


class Run:
    """State shared by the scenarios: what was reported committed and what it held."""

    def __init__(self, disk, tool, work, home):
        self.disk, self.tool, self.work, self.home = disk, tool, work, home
        self.committed = {}   # id -> label (every id ever reported committed, or seen whole after a cut)
        self.expected = {}    # id -> path of the copy of the home it must restore to
        self.excused = {}     # id -> paths a partial checkpoint named as failed (not compared)
        self.copies = 0
        self.rollback_ms = []  # durations of uncut rollbacks (scenario A), to aim the cuts in B2
        self.cases = 0
        self.failed_cases = 0
        self.details = []

    def keep_copy(self, tag):
        """Copy the home (modes, symlink targets) to /tmp; return (path, state)."""
        self.copies += 1
        dst = os.path.join(self.work, "states", f"{self.copies:03d}-{tag}")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copytree(self.home, dst, symlinks=True)
        return dst, tree_state(dst)

    def case(self, name, problems):
        self.cases += 1
        if problems:
            self.failed_cases += 1
            for msg in problems:
                self.details.append({"case": name, "problem": msg})
            print(f"  FAIL {name}")
            for msg in problems:
                print(f"       {msg}")
        else:
            print(f"  ok   {name}")

    def listed(self, problems, where):
        rc, env, p = self.tool.run(["backup-list", "--json"])
        if rc != 0 or env is None:
            problems.append(f"{where}: backup-list exit {rc}: {brief(env, p.stderr)}")
            return None
        return {s["id"]: s for s in env.get("snapshots", [])}

    def check_repo(self, problems, where):
        """verify --read-data passes and every committed id is listed; return the listing."""
        rc, env, p = self.tool.run(["backup-verify", "--read-data", "--json"])
        if env is not None and (env.get("problems") or env.get("warnings")):
            notes = {}
            for w in (env.get("problems") or []) + (env.get("warnings") or []):
                m = w.get("message", json.dumps(w)) if isinstance(w, dict) else str(w)
                notes[m] = notes.get(m, 0) + 1
            print(f"       verify reports ({where}): " + "; ".join(f"{n} x {m}" for m, n in notes.items())[:600])
        if rc != 0:
            problems.append(f"{where}: backup-verify --read-data exit {rc}: {brief(env, p.stderr)} "
                            f"problems {json.dumps((env or {}).get('problems'))[:600]}")
        listing = self.listed(problems, where)
        if listing is not None:
            for sid, label in self.committed.items():
                if sid not in listing:
                    problems.append(f"{where}: snapshot {sid[:12]} ({label}) was reported committed "
                                    f"and is no longer listed")
        return listing

    def restore_equals(self, sid, problems, where):
        want = tree_state(self.expected[sid])
        skip = self.excused.get(sid, set())
        target_parent = tempfile.mkdtemp(prefix="dfb-power-restore-", dir=self.work)
        target = os.path.join(target_parent, "t")
        try:
            rc, env, p = self.tool.run(["backup-restore", sid, "--target", target, "--json"])
            if rc != 0:
                problems.append(f"{where}: backup-restore {sid[:12]} exit {rc}: {brief(env, p.stderr)}")
                return
            if committed_env(rc, env):
                self.committed[env["snapshot"]["id"]] = env["snapshot"].get("label")
            got = tree_state(target)
            if skip:
                got = {k: v for k, v in got.items() if not excused(k, skip)}
                want = {k: v for k, v in want.items() if not excused(k, skip)}
            if got != want:
                problems.append(f"{where}: {sid[:12]} ({self.committed.get(sid)}) does not restore byte for "
                                f"byte: " + "; ".join(diff_states(got, want)))
        finally:
            shutil.rmtree(target_parent, ignore_errors=True)

    def cut_and_power_on(self):
        self.disk.cut()
        for p in list(CHILDREN):
            if p.poll() is None:
                p.kill()
        self.disk.power_on()


# ---------------------------------------------------------------- scenarios


def scenario_after_success(run, rounds, base_seed):
    print("scenario A: cut right after a reported success (checkpoint, then rollback)")
    for k in range(1, rounds + 1):
        seed = base_seed * 1000 + 100 + k
        rng = random.Random(seed)
        name = f"A{k} checkpoint, cut after success (seed {seed})"
        problems = []
        mutate(run.home, rng)
        copy, _ = run.keep_copy(f"A{k}")
        label = f"round-a{k}"
        rc, env, p = run.tool.run(["backup-checkpoint", "manual", label, "--json"])
        if not committed_env(rc, env):
            problems.append(f"checkpoint {label} did not succeed: exit {rc}, {brief(env, p.stderr)}")
            run.case(name, problems)
            continue
        sid = env["snapshot"]["id"]
        run.cut_and_power_on()  # at once: the envelope said success
        run.committed[sid] = label
        run.expected[sid] = copy
        run.check_repo(problems, f"A{k}")
        run.restore_equals(sid, problems, f"A{k}")
        run.case(name, problems)

        # The same for a rollback: once it reports success, the home is the checkpoint for good.
        name = f"A{k} rollback, cut after success (seed {seed})"
        problems = []
        base = tree_state(copy)
        damage(run.home, rng)
        t0 = time.monotonic()
        rc, env, p = run.tool.run(["backup-rollback", label, "--json"])
        run.rollback_ms.append((time.monotonic() - t0) * 1000)
        if not committed_env(rc, env):
            problems.append(f"rollback to {label} did not succeed: exit {rc}, {brief(env, p.stderr)}")
            run.case(name, problems)
            continue
        run.cut_and_power_on()
        run.committed[env["snapshot"]["id"]] = env["snapshot"].get("label")
        now = tree_state(run.home)
        if now != base:
            problems.append("the rollback reported success (exit 0, then the power was cut) but after "
                            "remount the home is not the checkpoint: " + "; ".join(diff_states(now, base)))
        run.check_repo(problems, f"A{k} rollback")
        syncfs(run.home)
        run.case(name, problems)


def scenario_checkpoint_cut(run, rounds, base_seed, max_delay):
    print("scenario B1: cut during a checkpoint")
    for k in range(1, rounds + 1):
        seed = base_seed * 1000 + 200 + k
        rng = random.Random(seed)
        delay = rng.uniform(0, max_delay)
        label = f"round-b{k}"
        problems = []
        mutate(run.home, rng, big=True)
        copy, _ = run.keep_copy(f"B{k}")
        before = run.listed(problems, f"B{k} before") or {}
        previous = [sid for sid in run.expected]
        run.disk.arm()
        t0 = time.monotonic()
        p = run.tool.start(["backup-checkpoint", "manual", label, "--json"])
        time.sleep(delay)
        finished_before_cut = p.poll() is not None
        run.disk.cut()
        cut_ms = (time.monotonic() - t0) * 1000
        rc, env, err = run.tool.finish(p)
        run.disk.power_on()
        reported = committed_env(rc, env)
        state = ("after it finished" if finished_before_cut else "while it ran") + \
            (", it reported success" if reported else f", exit {rc}")
        name = f"B{k} checkpoint, cut at {cut_ms:.0f} ms {state} (seed {seed})"
        if reported:
            run.committed[env["snapshot"]["id"]] = label
            run.expected[env["snapshot"]["id"]] = copy
            if rc == 3:
                run.excused[env["snapshot"]["id"]] = error_paths(env, run.home)
        listing = run.check_repo(problems, f"B{k}")
        if listing is not None:
            new = [sid for sid, s in listing.items() if sid not in before and s.get("label") == label]
            for sid in new:
                # The interrupted snapshot survived the cut: it must be whole.
                run.committed[sid] = label
                run.expected[sid] = copy
                run.restore_equals(sid, problems, f"B{k} (interrupted snapshot present)")
            print(f"       interrupted snapshot: {'present' if new else 'absent'}")
            if previous:
                run.restore_equals(previous[-1], problems, f"B{k} (the one before)")
        run.case(name, problems)


def check_cut_home(run, rc, env, reported, finished_before_cut, base, damaged, problems):
    """After a cut rollback: each path old or new, nothing vanished; a reported success is durable."""
    now = tree_state(run.home)
    tmp_left = sorted(show(k2) for k2 in now if is_tmp(k2))
    if tmp_left:
        print(f"       temp files left in the home: {tmp_left[:4]}")
    if reported:
        # exit 0: everything is done; exit 3 (partial): everything not named in errors[] is done.
        failed_paths = error_paths(env, run.home) if rc == 3 else set()
        keys = {k2 for k2 in set(now) | set(base) if not excused(k2, failed_paths)}
        got_ok = {k2: now[k2] for k2 in keys if k2 in now}
        want_ok = {k2: base[k2] for k2 in keys if k2 in base}
        if got_ok != want_ok:
            why = ("it was still running when the power was cut: its later writes/fsyncs failed with EIO "
                   "and it did not report them" if not finished_before_cut else "it had exited before the cut")
            problems.append(
                f"the rollback reported {env.get('status')} (exit {rc}; stats {json.dumps(env.get('stats'))}; "
                f"{len(failed_paths)} paths named in errors[]) but after remount paths it did not report as "
                f"failed are not the checkpoint ({why}): " + "; ".join(diff_states(got_ok, want_ok))
                + f" [errors[]: {json.dumps([(e.get('path'), e.get('message')) for e in env.get('errors') or []])[:700]}]")
    for path, val in now.items():
        if is_tmp(path):
            continue
        if val != base.get(path) and val != damaged.get(path):
            problems.append(f"{show(path)} is neither old nor new after the cut: {describe(val)} "
                            f"(old {describe(damaged.get(path))}, checkpoint {describe(base.get(path))})")
    for path in set(base) & set(damaged):
        if path not in now:
            problems.append(f"{show(path)} vanished (it exists both before and after the rollback)")
    return now


def scenario_rollback_cut(run, rounds, base_seed, max_delay):
    upper = max_delay
    if run.rollback_ms:
        # Aim the cuts at the run itself: an uncut rollback of this home takes about `typical` ms.
        typical = sorted(run.rollback_ms)[len(run.rollback_ms) // 2]
        upper = max(max_delay, typical * 1.15 / 1000)
        print(f"scenario B2: cut during a rollback (cuts in 0-{upper * 1000:.0f} ms; "
              f"an uncut rollback took ~{typical:.0f} ms)")
    else:
        print("scenario B2: cut during a rollback")
    for k in range(1, rounds + 1):
        seed = base_seed * 1000 + 300 + k
        rng = random.Random(seed)
        delay = rng.uniform(0, upper)
        label = f"round-rb{k}"
        problems = []
        mutate(run.home, rng)
        rc, env, p = run.tool.run(["backup-checkpoint", "manual", label, "--json"])
        if not committed_env(rc, env):
            run.case(f"RB{k} rollback (seed {seed})",
                     [f"checkpoint {label} did not succeed: exit {rc}, {brief(env, p.stderr)}"])
            continue
        copy, base = run.keep_copy(f"RB{k}-checkpoint")
        run.committed[env["snapshot"]["id"]] = label
        run.expected[env["snapshot"]["id"]] = copy
        damage(run.home, rng)
        damaged = tree_state(run.home)
        before = run.listed(problems, f"RB{k} before") or {}
        run.disk.arm()
        t0 = time.monotonic()
        p = run.tool.start(["backup-rollback", label, "--json"])
        time.sleep(delay)
        finished_before_cut = p.poll() is not None
        run.disk.cut()
        cut_ms = (time.monotonic() - t0) * 1000
        rc, env, err = run.tool.finish(p)
        run.disk.power_on()
        reported = committed_env(rc, env)
        state = ("after it finished" if finished_before_cut else "while it ran") + \
            (", it reported success" if reported else f", exit {rc}")
        name = f"RB{k} rollback, cut at {cut_ms:.0f} ms {state} (seed {seed})"
        if reported:
            run.committed[env["snapshot"]["id"]] = "before-rollback"

        now = check_cut_home(run, rc, env, reported, finished_before_cut, base, damaged, problems)
        listing = run.check_repo(problems, f"RB{k}")
        mid = {sid: s for sid, s in (listing or {}).items() if sid not in before and s.get("kind") == "safety"}
        for sid in mid:
            run.committed[sid] = mid[sid].get("label")
        print(f"       safety snapshot of the cut rollback: {'present, checking --undo' if mid else 'absent'}")
        if mid:
            # The safety snapshot of the cut rollback is durable: --undo must give the damaged home back.
            rollback_expect(run, ["--undo"], damaged, "--undo after the cut (pre-rollback home)",
                            problems, ignore_tmp=True)
        rollback_expect(run, [label], base, "re-running the rollback (checkpoint)", problems)
        if not mid:
            # Undo the re-run (back to the state the cut left), then roll back again.
            pre_rerun = {k2: v for k2, v in now.items() if not is_tmp(k2)}
            rollback_expect(run, ["--undo"], pre_rerun, "--undo of the re-run (state after the cut)",
                            problems, ignore_tmp=True)
            rollback_expect(run, [label], base, "rollback after --undo (checkpoint)", problems)
        syncfs(run.home)
        run.case(name, problems)


def sync_calls(run, args, syscall="fsync"):
    """The paths of the `syscall` (fsync or syncfs) calls of the main thread of one uncut
    run, in order (strace counts `when=` per thread and per syscall)."""
    out = os.path.join(run.work, "strace-count.txt")
    subprocess.run(["strace", "-f", "-qq", "-y", "-o", out, "-e", f"trace={syscall}"] + run.tool.cmd(args),
                   env=run.tool.env, capture_output=True, timeout=120)
    per_tid = {}
    pattern = re.compile(rb"(\d+)\s+" + syscall.encode() + rb"\(\d+(?:<([^>]*)>)?")
    with open(out, "rb") as f:
        for line in f:
            m = pattern.match(line)
            if m:
                per_tid.setdefault(m.group(1), []).append(m.group(2) or b"?")
    return max(per_tid.values(), key=len) if per_tid else []


def scenario_rollback_exact(run, points, base_seed):
    """Stop the rollback right before its Nth fsync (strace signal injection), cut, let it go on.

    The process survives the cut and meets EIO from then on, as on a disk that dies under it;
    whatever it reports as done must be durable. Aimed at the last fsyncs, where the new
    content of the home becomes durable, which random delays rarely hit."""
    if shutil.which("strace") is None:
        print("scenario C: exact cut points skipped (strace not found)")
        return
    print("scenario C: cut right before the Nth fsync of a rollback (the process continues)")
    seed = base_seed * 1000 + 400
    rng = random.Random(seed)
    label = "round-exact"
    mutate(run.home, rng)
    rc, env, p = run.tool.run(["backup-checkpoint", "manual", label, "--json"])
    if not committed_env(rc, env):
        run.case(f"C rollback setup (seed {seed})", [f"checkpoint {label}: exit {rc}, {brief(env, p.stderr)}"])
        return
    copy, base = run.keep_copy("C-checkpoint")
    run.committed[env["snapshot"]["id"]] = label
    run.expected[env["snapshot"]["id"]] = copy
    dseed = seed + 1
    damage(run.home, random.Random(dseed))
    sync_calls(run, ["backup-rollback", label, "-q"])  # the first run also stores the damaged content
    damage(run.home, random.Random(dseed))
    calls = sync_calls(run, ["backup-rollback", label, "-q"])  # as every cut run below will see it
    syncfs(run.home)
    # Written files and the home's directories are made durable by syncfs (one per group
    # of files, one at the end); fsync there only when syncfs fails. Cut before each one.
    damage(run.home, random.Random(dseed))
    scalls = sync_calls(run, ["backup-rollback", label, "-q"], "syncfs")
    syncfs(run.home)
    n = len(calls)
    if n == 0:
        run.case(f"C rollback (seed {seed})", ["strace saw no fsync in the rollback"])
        return
    hb = os.fsencode(run.home)
    in_home = [i + 1 for i, path in enumerate(calls) if path == hb or path.startswith(hb + b"/")]
    # The last syncs in the home (where the new content becomes durable), the last call, two at random.
    chosen = sorted(set(in_home[-points:] + [n] + rng.sample(range(1, n + 1), min(2, n))))
    print(f"       the rollback makes {n} fsyncs ({len(in_home)} in the home) and {len(scalls)} syncfs; "
          f"cutting before fsync #{', #'.join(map(str, chosen))} and every syncfs (seed {seed})")
    cuts = [("fsync", i, n) for i in chosen] + [("syncfs", j, len(scalls)) for j in range(1, len(scalls) + 1)]
    for call, i, total in cuts:
        problems = []
        if tree_state(run.home) != base:
            run.tool.run(["backup-rollback", label, "--json"])
        damage(run.home, random.Random(dseed))
        damaged = tree_state(run.home)
        out = os.path.join(run.work, f"strace-stop-{call}-{i}.txt")
        if os.path.exists(out):
            os.remove(out)
        run.disk.arm()
        proc = subprocess.Popen(["strace", "-f", "-qq", "-y", "-o", out, "-e", "trace=fsync,syncfs,openat",
                                 "-e", f"inject={call}:signal=STOP:when={i}"]
                                + run.tool.cmd(["backup-rollback", label, "--json"]),
                                env=run.tool.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace")
        CHILDREN.append(proc)
        stopped_pid, deadline = None, time.monotonic() + 30
        while stopped_pid is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
            try:
                with open(out, errors="replace") as f:
                    for line in f:
                        if "stopped by SIGSTOP" in line:
                            stopped_pid = int(line.split()[0])
                            break
            except OSError:
                pass
        run.disk.cut()
        if stopped_pid is not None:
            try:
                os.kill(stopped_pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        rc, env, err = run.tool.finish(proc)
        run.disk.power_on()
        reported = committed_env(rc, env)
        name = (f"C rollback, cut before {call} #{i}/{total} "
                + ("(stopped there)" if stopped_pid else "(never stopped: cut after it ended)")
                + (", it reported " + env.get("status") if reported else f", exit {rc}"))
        if reported:
            run.committed[env["snapshot"]["id"]] = env["snapshot"].get("label")
        before_home_check = len(problems)
        check_cut_home(run, rc, env, reported, stopped_pid is None, base, damaged, problems)
        lost = len(problems) > before_home_check
        if reported:
            # A success means durable: it may not be reported over a failed fsync of the home.
            hb = os.fsencode(run.home)
            failed = []
            with open(out, "rb") as f:
                for line in f:
                    if b"= -1 EIO" not in line:
                        continue
                    m = re.search(rb"fsync\(\d+<([^>]*)>\)", line)
                    # openat(AT_FDCWD, "/abs", …) or openat(5</dir>, "name", …): a directory it
                    # could not even open for its sync counts the same.
                    o = re.search(rb'openat\((?:AT_FDCWD(?:<[^>]*>)?|\d+<([^>]*)>), "([^"]*)"[^)]*O_DIRECTORY', line)
                    path = m.group(1) if m else (os.path.join(o.group(1) or b"", o.group(2)) if o else None)
                    # A written file's own fsync (after a failed syncfs) names its temp file;
                    # errors[] names the file it was to become.
                    path = re.sub(rb"/\.dfb-tmp\.\d+\.\d+\.([^/]*)$", rb"/\1", path) if path else path
                    if path and (path == hb or path.startswith(hb + b"/")):
                        failed.append(show(path[len(hb):] or b"/"))
            unreported = [f2 for f2 in failed if not excused(os.fsencode(f2.lstrip("/")), error_paths(env, run.home))]
            if unreported:
                problems.append(
                    f"the rollback reported {env.get('status')} (exit {rc}) although {len(unreported)} directory "
                    f"syncs in the home (fsync, or the open for it) failed with EIO after the cut and errors[] "
                    f"does not name them: "
                    f"~{', ~'.join(unreported[:6])}"
                    + (" (and the home lost what it reported done, above)" if lost else
                       " (on this ext4 the journal happened to make the renames durable anyway; a reported "
                       "success must not depend on that)"))
        run.check_repo(problems, f"C {call} #{i}")
        rc2, env2, p2 = run.tool.run(["backup-rollback", label, "--json"])
        if rc2 != 0:
            problems.append(f"re-running the rollback exit {rc2}: {brief(env2, p2.stderr)}")
        elif tree_state(run.home) != base:
            problems.append("re-running the rollback did not end at the checkpoint: "
                            + "; ".join(diff_states(tree_state(run.home), base)))
        elif committed_env(rc2, env2):
            run.committed[env2["snapshot"]["id"]] = env2["snapshot"].get("label")
        syncfs(run.home)
        run.case(name, problems)


def final_sweep(run):
    print("final: every committed checkpoint is listed and restores byte for byte")
    problems = []
    # One more cut with nothing running: everything reported so far must be durable.
    run.cut_and_power_on()
    run.check_repo(problems, "final")
    for sid in run.expected:
        run.restore_equals(sid, problems, "final")
    run.case(f"final sweep ({len(run.expected)} checkpoints, {len(run.committed)} committed ids)", problems)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description="Cut the power (ext4 shutdown ioctl) around checkpoints and rollbacks.")
    ap.add_argument("--bin-dir", default="target/debug")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per scenario (default 5)")
    ap.add_argument("--seed", type=int, help="base seed (default: from the clock; printed)")
    ap.add_argument("--max-delay-ms", type=float, default=200.0,
                    help="latest cut during a write (default 200; a rollback is cut up to its measured duration if longer)")
    ap.add_argument("--exact-points", type=int, default=4,
                    help="scenario C: cut before the last N fsyncs of a rollback in the home, the last one and 2 random "
                         "ones (needs strace; 0: off; default 4)")
    ap.add_argument("--json", help="write a JSON report here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (image, copies)")
    a = ap.parse_args()
    bins = os.path.abspath(a.bin_dir)
    if os.geteuid() != 0:
        print("power_loss: SKIP (needs root for loop devices and mount)")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"test": "power_loss", "cases": 0, "failures": 0, "skipped": True,
                           "reason": "needs root for loop devices and mount", "details": []}, f, indent=2)
        return 0
    for b in ("backup-checkpoint", "backup-list", "backup-verify", "backup-restore", "backup-rollback"):
        if not os.access(os.path.join(bins, b), os.X_OK):
            print(f"power_loss: {b} not found in {bins} (run cargo build)", file=sys.stderr)
            return 2
    base_seed = a.seed if a.seed is not None else int(time.time()) % 100000
    rounds = max(1, a.rounds)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    work = tempfile.mkdtemp(prefix="dfb-power-")
    disk = Disk(work, size_mb=max(128, 64 + 14 * rounds))
    report = {"test": "power_loss", "cases": 0, "failures": 0, "skipped": False, "details": []}
    t_start = time.monotonic()
    run = None
    try:
        try:
            probe(disk)
        except Skip as e:
            print(f"power_loss: SKIP ({e})")
            report.update(skipped=True, reason=str(e))
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(report, f, indent=2)
            return 0
        print(f"power_loss: ext4 image {disk.size_mb} MB on {disk.loop}, mounted at {disk.mnt} "
              f"({MOUNT_OPTS}); base seed {base_seed}; {rounds} rounds per scenario")
        home = os.path.join(disk.mnt, "home")
        repo = os.path.join(disk.mnt, "repo")
        config = os.path.join(work, "config.toml")
        with open(config, "w") as f:
            # The image is small: the free-space guard would refuse; keep every safety snapshot
            # so "everything reported committed is listed" is exact.
            f.write("[space]\nrefuse_below_mb = 0\nwarn_below_mb = 0\nstrong_warn_below_mb = 0\n"
                    "[safety]\nkeep = 10000\n")
        os.makedirs(home)
        make_home(home, random.Random(base_seed))
        syncfs(disk.mnt)
        run = Run(disk, Tool(bins, home, repo, config), work, home)
        scenario_after_success(run, rounds, base_seed)
        scenario_checkpoint_cut(run, rounds, base_seed, a.max_delay_ms / 1000.0)
        scenario_rollback_cut(run, rounds, base_seed, a.max_delay_ms / 1000.0)
        if a.exact_points > 0:
            scenario_rollback_exact(run, a.exact_points, base_seed)
        final_sweep(run)
    except KeyboardInterrupt:
        print("power_loss: interrupted", file=sys.stderr)
        if run is not None:
            run.details.append({"case": "interrupted", "problem": "interrupted before the end"})
            run.failed_cases += 1
        else:
            return 130
    except Exception as e:  # a broken harness step is a failure, not a pass
        import traceback
        traceback.print_exc()
        if run is None:
            print(f"power_loss: 0 cases, 1 failures\n  setup failed: {e}")
            return 1
        run.details.append({"case": "harness", "problem": f"{type(e).__name__}: {e}"})
        run.failed_cases += 1
    finally:
        for p in list(CHILDREN):
            if p.poll() is None:
                p.kill()
                p.wait()
        disk.cleanup()
        if a.keep:
            print(f"power_loss: work directory kept at {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report.update(cases=run.cases, failures=run.failed_cases, details=run.details,
                  seed=base_seed, rounds=rounds, seconds=round(time.monotonic() - t_start, 1))
    print(f"power_loss: {report['seconds']} s, base seed {base_seed} (rerun: --seed {base_seed} --rounds {rounds})")
    print(f"power_loss: {run.cases} cases, {run.failed_cases} failures")
    for d in run.details:
        print(f"  {d['case']}: {d['problem']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    return 1 if run.failed_cases else 0


if __name__ == "__main__":
    sys.exit(main())
