#!/usr/bin/env python3
"""Side-by-side benchmark: the project vs restic, borg, rsync, tar and physical floors.

Run it through `scripts/bench` (which adds `nice`). Python 3 standard library only.

What it does (issue 8, methodology in docs/performance.md):

* generates deterministic synthetic homes (fixed seed) under target/bench/homes;
* installs the peers if missing (apt-get: restic borgbackup rsync time);
* builds the project (`cargo build --release`; cargo decides whether it is stale);
* runs every tool into its own fresh repository on the same file system, several
  repetitions each, caches warm, `sync` before every timed run;
* scenarios: first snapshot, no-change snapshot, snapshot after changing 1% of the
  files, full restore into an empty directory, rollback of a damaged small home
  (project) vs in-place restore (peers), `--version` start-up, peak memory
  (`/usr/bin/time -v`), and optionally scaling (2k / 20k / 200k files);
* prints a table (median, min, max, project ÷ tool), marks the issue's targets
  met / not met, and writes target/bench/results.json and target/bench/results.md.

A failing command never stops the run: its cell records `"error": "..."`.
Exit status (never depends on timing):
  0  every required cell ran: the project's checkpoint scenarios (first, no change,
     1% change, --version) and every peer / floor command;
  1  a required cell failed (see "required failures" at the end of the output);
  2  bad arguments.
`--allow-missing` makes every failure non-fatal; `--strict` also requires the
project's restore and rollback cells.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import random
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GEN_VERSION = 1
DEFAULT_SEED = 20241125
RACY_WAIT_S = 2.1  # the engine (like git/borg) does not trust files changed < 2 s before a scan
FIXED_MTIME = 1_700_000_000  # generated files get old, deterministic mtimes
RESULTS_SCHEMA = 1

# --------------------------------------------------------------------------- homes


@dataclasses.dataclass
class HomeSpec:
    name: str
    files: int  # regular files (symlinks and directories come on top)
    bytes: int  # total bytes of regular files (approximate)
    big: list  # sizes of the few big files (part of `bytes`)
    symlinks: int
    projects: bool  # add a `projects/` source tree (large homes)

    def describe(self) -> str:
        return f"{self.files:,} files, {fmt_bytes(self.bytes)}"


MB = 1_000_000
PRESETS = {
    "tiny": HomeSpec("tiny", 150, 1 * MB, [300_000], 4, False),
    "small": HomeSpec("small", 300, 2_500_000, [], 6, False),
    "large": HomeSpec("large", 20_000, 320 * MB, [48 * MB, 32 * MB, 24 * MB, 16 * MB, 12 * MB], 100, True),
    "2k": HomeSpec("2k", 2_000, 20 * MB, [], 20, True),
    "20k": HomeSpec("20k", 20_000, 200 * MB, [], 100, True),
    "200k": HomeSpec("200k", 200_000, 2_000 * MB, [], 1000, True),
}

WORDS = (
    "alpha amber anchor apple arrow aspen atlas aurora autumn badger bamboo basil beacon birch bison "
    "blossom bramble breeze bronze canyon cedar cherry cinder citrus clover cobalt comet coral cosmos "
    "cotton coyote crane crimson crystal cypress dahlia delta desert dune eagle ember falcon fern fig "
    "flint forest fossil fox frost galaxy garnet gecko ginger glacier granite harbor hazel heron hickory "
    "honey horizon indigo iris ivory jade jasper juniper kelp kestrel lagoon lantern lark lava lemon lilac "
    "lime linden lotus lunar lynx magnet mango maple marble meadow mesa meteor mint mist moss nebula "
    "nectar nimbus nutmeg oak oasis ocean olive onyx orbit orchid otter owl palm panda pearl pebble "
    "pepper pine plum polar poppy prairie prism quartz quill rain raven reed ridge river robin ruby "
    "rust saffron sage salmon sand sapphire sequoia shadow sierra silver sky slate sparrow spruce storm "
    "summit sun swift tango thistle thunder tide tiger timber topaz tulip tundra umber valley velvet "
    "violet walnut willow wind winter wolf yarrow zephyr zinc"
).split()

# (path, nominal size, mode): what a real dotfiles setup has. No name matches the
# engine's default excludes or secret patterns, so every tool stores the same set.
CORE_FILES = [
    (".profile", 700, 0o644), (".bashrc", 4200, 0o644), (".bash_profile", 300, 0o644),
    (".bash_aliases", 1800, 0o644), (".bash_logout", 220, 0o644), (".zshrc", 6500, 0o644),
    (".zshenv", 400, 0o644), (".zprofile", 350, 0o644), (".inputrc", 900, 0o644),
    (".gitconfig", 1500, 0o644), (".gitignore_global", 400, 0o644), (".tmux.conf", 3200, 0o644),
    (".config/vim/vimrc", 9000, 0o644), (".ssh/config", 1200, 0o600), (".ssh/known_hosts", 5000, 0o600),
    (".ssh/authorized_keys", 800, 0o600), (".config/nvim/init.lua", 5000, 0o644),
    (".config/nvim/lazy-lock.json", 3000, 0o644), (".config/nvim/lua/config/options.lua", 2500, 0o644),
    (".config/nvim/lua/config/keymaps.lua", 3500, 0o644), (".config/nvim/lua/config/autocmds.lua", 1800, 0o644),
    (".config/nvim/lua/plugins/lsp.lua", 6000, 0o644), (".config/nvim/lua/plugins/ui.lua", 4000, 0o644),
    (".config/nvim/lua/plugins/editor.lua", 5200, 0o644), (".config/nvim/lua/plugins/treesitter.lua", 1600, 0o644),
    (".config/git/config", 1100, 0o644), (".config/git/ignore", 300, 0o644),
    (".config/fish/config.fish", 2200, 0o644), (".config/fish/functions/fish_prompt.fish", 1400, 0o644),
    (".config/starship.toml", 2600, 0o644), (".config/alacritty/alacritty.toml", 3100, 0o644),
    (".config/kitty/kitty.conf", 8000, 0o644), (".config/htop/htoprc", 1300, 0o644),
    (".config/Code/User/settings.json", 4500, 0o644), (".config/Code/User/keybindings.json", 2000, 0o644),
    (".config/lazygit/config.yml", 900, 0o644), (".config/bat/config", 400, 0o644),
    (".config/ripgrep/config", 200, 0o644), (".config/mpv/mpv.conf", 700, 0o644),
    (".config/dunst/dunstrc", 5000, 0o644), (".config/i3/config", 7000, 0o644),
    (".config/waybar/config.jsonc", 3000, 0o644), (".config/waybar/style.css", 2500, 0o644),
    (".local/bin/update-all", 1200, 0o755), (".local/bin/backup-now", 600, 0o755),
    (".local/bin/tmux-sessionizer", 900, 0o755),
]
# (link, target): relative targets; one points at a directory, one dangles.
CORE_LINKS = [
    (".vimrc", ".config/vim/vimrc"),
    (".config/nvim/current", "lua/config"),
    (".local/bin/bn", "backup-now"),
    (".config/theme.toml", "alacritty/themes/removed.toml"),
]
TREE_ROOTS_PLAIN = [(".config", 0.75), (".local/share", 0.15), (".local/state", 0.05), (".local/bin", 0.05)]
TREE_ROOTS_PROJECTS = [(".config", 0.30), (".local/share", 0.25), ("projects", 0.40), (".local/state", 0.05)]
EXTS = {
    ".config": [".toml", ".json", ".conf", ".lua", ".yml", ".ini", ".vim", ".css", ""],
    ".local/share": [".json", ".txt", ".db", ".dat", ".png", ".ttf", ".md", ".xml"],
    ".local/state": [".log", ".json", ".hist"],
    ".local/bin": [""],
    "projects": [".py", ".rs", ".go", ".md", ".js", ".ts", ".c", ".h", ".json", ".toml", ".png", ".txt"],
}
BINARY_EXTS = {".db", ".dat", ".png", ".ttf", ".img"}
FILES_PER_DIR = 10
MAX_DEPTH = 7

_TEXT_WEIGHTS = (
    b"e" * 12 + b"t" * 9 + b"a" * 8 + b"o" * 8 + b"i" * 7 + b"n" * 7 + b"s" * 6 + b"h" * 6 + b"r" * 6
    + b"d" * 4 + b"l" * 4 + b"c" * 3 + b"u" * 3 + b"mmwwffggyyppbb" + b"vkjxqz" + b" " * 36 + b"\n" * 6
    + b"=-_.:/\"'{}()#,;[]" + b"0123456789"
)
TEXT_TABLE = bytes(_TEXT_WEIGHTS[i % len(_TEXT_WEIGHTS)] for i in range(256))


def text_bytes(rng: random.Random, n: int) -> bytes:
    """Unique, text-like bytes (about 5 bits of entropy per byte)."""
    return rng.randbytes(n).translate(TEXT_TABLE) if n > 0 else b""


def content_for(rng: random.Random, rel: str, n: int) -> bytes:
    if os.path.splitext(rel)[1] in BINARY_EXTS:
        return rng.randbytes(n)
    return text_bytes(rng, n)


@dataclasses.dataclass
class Home:
    spec: HomeSpec
    path: Path
    files: list  # [relpath, size, is_big]
    links: list  # [relpath, target]
    dirs: list  # relpaths

    @property
    def name(self) -> str:
        return self.spec.name

    def total_bytes(self) -> int:
        return sum(f[1] for f in self.files)

    def summary(self) -> dict:
        return {
            "path": str(self.path),
            "files": len(self.files),
            "bytes": self.total_bytes(),
            "dirs": len(self.dirs),
            "symlinks": len(self.links),
            "big_files": [f[1] for f in self.files if f[2]],
            "spec": dataclasses.asdict(self.spec),
        }


def generate_home(spec: HomeSpec, root: Path, seed: int) -> Home:
    """Write a deterministic home for `spec` at `root` (replacing what is there)."""
    rmtree(root)
    root.mkdir(parents=True)
    rng = random.Random(f"{seed}:{GEN_VERSION}:{spec.name}:{spec.files}:{spec.bytes}")
    files: list = []
    dirs: set = set()
    used: set = set()

    def add_dirs(rel: str):
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))

    n_big = min(len(spec.big), spec.files)
    core = CORE_FILES[: max(0, min(len(CORE_FILES), spec.files - n_big))]
    for rel, size, mode in core:
        files.append([rel, size, False, mode])
        used.add(rel)
        add_dirs(rel)
    for i, size in enumerate(spec.big[:n_big]):
        rel = f".local/share/vm-images/{WORDS[(i * 7) % len(WORDS)]}-{i}.img"
        files.append([rel, int(size), True, 0o644])
        used.add(rel)
        add_dirs(rel)

    # The rest: a nested tree, about FILES_PER_DIR files per directory.
    n_tree = max(0, spec.files - len(files))
    roots = TREE_ROOTS_PROJECTS if spec.projects else TREE_ROOTS_PLAIN
    root_names = [r for r, _ in roots]
    weights = [w for _, w in roots]
    tree_dirs = {r: [] for r in root_names}
    tree: list = []
    for _ in range(n_tree):
        top = rng.choices(root_names, weights)[0]
        if top == ".local/bin":
            d = top
        elif not tree_dirs[top] or rng.random() < 1.0 / FILES_PER_DIR:
            parent = rng.choice(tree_dirs[top] + [top])
            if parent.count("/") >= MAX_DEPTH:
                parent = top
            name = rng.choice(WORDS)
            d = f"{parent}/{name}"
            k = 2
            while d in dirs or d in used:
                d = f"{parent}/{name}{k}"
                k += 1
            tree_dirs[top].append(d)
        else:
            d = rng.choice(tree_dirs[top])
        ext = rng.choice(EXTS[top])
        base = rng.choice(WORDS) + ("-" + rng.choice(WORDS) if rng.random() < 0.5 else "")
        rel = f"{d}/{base}{ext}"
        k = 2
        while rel in used or rel in dirs:
            rel = f"{d}/{base}{k}{ext}"
            k += 1
        used.add(rel)
        add_dirs(rel)
        mode = 0o755 if top == ".local/bin" else 0o644
        tree.append([rel, rng.lognormvariate(math.log(2000), 1.5), False, mode])

    # Scale the tree's sizes to the byte budget, capping single small files.
    budget = max(0, spec.bytes - sum(f[1] for f in files))
    cap = max(64 * 1024, budget // 40) if tree else 0
    cap = min(cap, 8 * MB)
    for _ in range(3):
        raw = sum(f[1] for f in tree) or 1
        scale = budget / raw
        for f in tree:
            f[1] = max(1, min(cap, f[1] * scale))
    for f in tree:
        f[1] = int(f[1])
    files.extend(tree)

    for rel, size, big, mode in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        frng = random.Random(f"{seed}:{spec.name}:file:{rel}")
        with open(p, "wb") as fh:
            if big:
                left = size
                while left > 0:
                    chunk = min(left, 8 * MB)
                    fh.write(frng.randbytes(chunk))
                    left -= chunk
            else:
                fh.write(content_for(frng, rel, size))
        os.chmod(p, mode)

    links: list = []
    for rel, target in CORE_LINKS[: spec.symlinks]:
        links.append([rel, target])
    candidates = [f[0] for f in files if not f[2]]
    dir_list = sorted(dirs)
    while len(links) < spec.symlinks and candidates and dir_list:
        tgt = rng.choice(candidates)
        d = rng.choice(dir_list)
        rel = f"{d}/{rng.choice(WORDS)}-link"
        if rel in used or rel in dirs:
            continue
        used.add(rel)
        links.append([rel, os.path.relpath(tgt, d)])
    for rel, target in links:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        add_dirs(rel)
        os.symlink(target, p)

    (root / ".ssh").exists() and os.chmod(root / ".ssh", 0o700)
    # Old, deterministic times everywhere (dirs last, deepest first).
    for i, (rel, *_rest) in enumerate(sorted(files)):
        os.utime(root / rel, (FIXED_MTIME + i, FIXED_MTIME + i))
    for rel, _t in links:
        os.utime(root / rel, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    for rel in sorted(dirs, key=lambda d: -d.count("/")):
        os.utime(root / rel, (FIXED_MTIME, FIXED_MTIME))
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))

    home = Home(spec, root, [[f[0], f[1], f[2]] for f in files], links, sorted(dirs))
    (root.parent / f"{spec.name}.manifest.json").write_text(json.dumps(home.summary(), indent=1))
    return home


def mutate(home: Home, rep: int, seed: int, fraction: float = 0.01) -> dict:
    """Change `fraction` of the (non-big) files: overwrite 64 bytes, append a line."""
    rng = random.Random(f"{seed}:{home.name}:mutate:{rep}")
    pool = [i for i, f in enumerate(home.files) if not f[2]]
    k = max(1, round(len(home.files) * fraction))
    chosen = rng.sample(pool, min(k, len(pool)))
    changed = 0
    for i in chosen:
        rel = home.files[i][0]
        p = home.path / rel
        data = p.read_bytes()
        pos = rng.randrange(max(1, len(data)))
        patch = text_bytes(rng, 64)
        new = data[:pos] + patch + data[pos + 64:] + f"\n# bench edit {rep}\n".encode()
        with open(p, "r+b") as fh:
            fh.write(new)
            fh.truncate()
        home.files[i][1] = len(new)
        changed += len(patch) + 20
    return {"files_changed": len(chosen), "bytes_written": changed}


def damage(home: Home, rep: int, seed: int) -> dict:
    """What a bad bootstrap phase does: edit 10%, delete 5%, add 5 files, retarget a link."""
    rng = random.Random(f"{seed}:{home.name}:damage:{rep}")
    regular = [f for f in home.files if not f[2]]
    n = len(regular)
    picks = rng.sample(range(n), min(n, max(2, n * 15 // 100)))
    edit = picks[: max(1, n // 10)]
    delete = picks[max(1, n // 10):]
    for i in edit:
        p = home.path / regular[i][0]
        p.write_bytes(text_bytes(rng, rng.randrange(50, 5000)))
    for i in delete:
        (home.path / regular[i][0]).unlink()
    created = 0
    for j in range(5):
        p = home.path / ".config" / f"phase-junk-{rep}-{j}.conf"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text_bytes(rng, 1000))
        created += 1
    relinked = 0
    for rel, _t in home.links[:1]:
        p = home.path / rel
        if p.is_symlink():
            p.unlink()
            os.symlink("somewhere/else", p)
            relinked = 1
    return {"edited": len(edit), "deleted": len(delete), "created": created, "relinked": relinked}


def tree_manifest(root: Path) -> dict:
    """rel -> (type, mode, size, sha256 or link target, mtime seconds)."""
    out = {}
    root = Path(root)
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", 0, 0, os.readlink(p), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), 0, "", 0)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_size, h.hexdigest(), int(st.st_mtime))
            else:
                out[rel] = ("?", 0, 0, "", 0)
    return out


def compare_trees(want: dict, got: dict) -> dict:
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    content = [k for k in want if k in got and (want[k][0], want[k][2], want[k][3]) != (got[k][0], got[k][2], got[k][3])]
    mode = [k for k in want if k in got and want[k][0] != "l" and want[k][1] != got[k][1]]
    mtime = [k for k in want if k in got and want[k][0] == "f" and want[k][4] != got[k][4]]
    return {
        "exact": not (missing or extra or content),
        "missing": len(missing),
        "extra": len(extra),
        "content_differs": len(content),
        "mode_differs": len(mode),
        "file_mtime_differs": len(mtime),
        "examples": (missing[:2] + extra[:2] + content[:2] + mode[:1])[:5],
    }


def compare_counts(want: dict, root: Path) -> dict:
    """Cheap check: same number of files, directories and symlinks, same total size."""
    got = {"f": 0, "d": 0, "l": 0, "bytes": 0}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode):
                got["l"] += 1
            elif stat.S_ISDIR(st.st_mode):
                got["d"] += 1
            elif stat.S_ISREG(st.st_mode):
                got["f"] += 1
                got["bytes"] += st.st_size
    exp = {"f": 0, "d": 0, "l": 0, "bytes": 0}
    for v in want.values():
        if v[0] in exp:
            exp[v[0]] += 1
        exp["bytes"] += v[2]
    return {"exact": got == exp, "counts_only": True, "expected": exp, "got": got}


def warm(home: Home):
    """Read every file once so the page cache holds the home (warm-cache runs)."""
    for rel, _size, _big in home.files:
        with open(home.path / rel, "rb") as fh:
            while fh.read(1 << 20):
                pass
    for _ in os.walk(home.path):
        pass


# --------------------------------------------------------------------------- running


@dataclasses.dataclass
class Cmd:
    argv: list
    env: dict
    cwd: str | None = None
    check: Callable | None = None  # (rc, stdout, stderr) -> (error | None, extra dict)
    stdout_null: bool = False


@dataclasses.dataclass
class RunResult:
    elapsed: float | None = None
    cpu: float | None = None  # user + system time of the child (less sensitive to other load)
    rss_kb: int | None = None
    rc: int | None = None
    error: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)


def tail(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])[:400]


def default_check(rc, out, err):
    if rc != 0:
        return f"exit {rc}: {tail(err) or tail(out) or 'no output'}", {}
    return None, {}


class Runner:
    """posix_spawn + wait4: wall time and the child's peak RSS with ~no overhead."""

    def __init__(self, scratch: Path, timeout: float):
        self.scratch = scratch
        self.timeout = timeout
        self._pid = None
        self._timed_out = False
        signal.signal(signal.SIGALRM, self._alarm)
        signal.signal(signal.SIGTERM, self._terminate)

    def _terminate(self, _signum, _frame):
        self.kill_child()
        raise KeyboardInterrupt

    def kill_child(self):
        if self._pid:
            try:
                os.killpg(self._pid, signal.SIGKILL)
            except OSError:
                pass

    def _alarm(self, _signum, _frame):
        self._timed_out = True
        if self._pid:
            try:
                os.killpg(self._pid, signal.SIGKILL)
            except OSError:
                pass

    def run(self, cmd: Cmd, time_v: bool = False) -> RunResult:
        argv = [str(a) for a in cmd.argv]
        exe = argv[0]
        if not os.path.isabs(exe):
            exe = shutil.which(exe, path=cmd.env.get("PATH")) or ""
        if not exe or not os.access(exe, os.X_OK):
            return RunResult(error=f"not found: {argv[0]}")
        timefile = self.scratch / "time-v.txt"
        if time_v:
            argv = ["/usr/bin/time", "-v", "-o", str(timefile)] + argv
            exe = "/usr/bin/time"
        out_path = self.scratch / "stdout.txt"
        err_path = self.scratch / "stderr.txt"
        wr = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null" if cmd.stdout_null else str(out_path), wr, 0o644),
            (os.POSIX_SPAWN_OPEN, 2, str(err_path), wr, 0o644),
        ]
        old = os.getcwd()
        self._timed_out = False
        try:
            if cmd.cwd:
                os.chdir(cmd.cwd)
            t0 = time.perf_counter()
            pid = os.posix_spawn(exe, argv, cmd.env, file_actions=actions, setsid=True)
        except OSError as e:
            return RunResult(error=f"cannot start {argv[0]}: {e}")
        finally:
            os.chdir(old)
        self._pid = pid
        signal.setitimer(signal.ITIMER_REAL, self.timeout)
        try:
            _, status, ru = os.wait4(pid, 0)
        except KeyboardInterrupt:
            self.kill_child()
            os.waitpid(pid, 0)
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._pid = None
        t1 = time.perf_counter()
        rc = os.waitstatus_to_exitcode(status)
        out = "" if cmd.stdout_null else out_path.read_text(errors="replace")
        err = err_path.read_text(errors="replace")
        # ru_maxrss is not used: posix_spawn shares the parent's memory until exec, so
        # wait4 reports at least this Python process's RSS. Peak memory comes from
        # `/usr/bin/time -v` (a forked, small parent) in the memory phase.
        res = RunResult(elapsed=t1 - t0, rc=rc, cpu=ru.ru_utime + ru.ru_stime)
        if time_v:
            try:
                for line in timefile.read_text().splitlines():
                    if "Maximum resident set size" in line:
                        res.rss_kb = int(line.rsplit(":", 1)[1])
                        res.extra["rss_source"] = "/usr/bin/time -v"
            except (OSError, ValueError):
                pass
        if self._timed_out:
            res.error = f"timed out after {self.timeout:.0f} s"
            return res
        error, extra = (cmd.check or default_check)(rc, out, err)
        res.error = error
        res.extra.update(extra)
        return res


# --------------------------------------------------------------------------- tools


def check_envelope(rc, out, err):
    """The project's --json envelope: exit 0 and status success/skipped."""
    try:
        doc = json.loads(out)
    except ValueError:
        return f"exit {rc}: no JSON envelope on stdout; stderr: {tail(err) or '-'}", {}
    extra = {"duration_ms": doc.get("duration_ms"), "changed": doc.get("changed"), "status": doc.get("status")}
    snap = doc.get("snapshot") or {}
    for k in ("files", "dirs", "symlinks", "bytes", "new_bytes", "reused", "kind", "label"):
        if k in snap:
            extra[k] = snap[k]
    if doc.get("stats"):
        extra["stats"] = doc["stats"]
    if doc.get("warnings"):
        extra["warnings"] = [f"{w.get('code')}: {w.get('message')}" for w in doc["warnings"][:5]]
    errors = doc.get("errors") or []
    if rc != 0 or doc.get("status") not in ("success", "skipped"):
        first = errors[0] if errors else {}
        return (
            f"exit {rc}, status {doc.get('status')}: {first.get('code', '?')}: {first.get('message', tail(err))}",
            extra,
        )
    return None, extra


def restic_inplace_check(rc, out, err):
    """restic 0.14 cannot overwrite an existing symlink; the rest of an in-place restore is done."""
    if rc == 1:
        errs = [line for line in err.splitlines() if line.startswith("ignoring error for")]
        if errs and all("Symlink:" in line and "file exists" in line for line in errs):
            return None, {"note": f"restic could not overwrite {len(errs)} existing symlink(s) in place"}
    return default_check(rc, out, err)


class Tool:
    name = "?"
    label = "?"
    short = "?"
    kind = "peer"  # project | peer | floor

    def __init__(self, bench: Bench):
        self.b = bench

    def init(self, home: Home, repo: Path) -> Cmd | None:
        repo.mkdir(parents=True, exist_ok=True)
        return None

    def snapshot(self, home: Home, repo: Path, label: str) -> Cmd | None:
        return None

    def restore(self, home: Home, repo: Path, target: Path):
        return None, None

    def rollback(self, home: Home, repo: Path) -> Cmd | None:
        return None

    def version(self) -> Cmd | None:
        return None


class Project(Tool):
    name, label, kind, short = "project", "project", "project", "backup-checkpoint"

    def __init__(self, bench):
        super().__init__(bench)
        self.bins: dict = {}
        self.last: dict = {}

    def _cmd(self, binary: str, args: list, home: Home) -> Cmd:
        exe = self.bins.get(binary) or str(self.b.release_dir / binary)  # missing: the run says "not found"
        return Cmd([exe] + args, self.b.project_env(home), check=check_envelope)

    def init(self, home, repo):
        return None  # the first checkpoint creates the repository (included in its time)

    def snapshot(self, home, repo, label):
        self.last[str(repo)] = label
        return self._cmd("backup-checkpoint", ["manual", label, "--path", home.path, "--repo", repo, "--json"], home)

    def restore(self, home, repo, target):
        # `latest` is the newest checkpoint or backup (never a safety snapshot, which
        # every restore commits); the comparison after each run would catch a regression.
        cmd = self._cmd("backup-restore", ["latest", "--target", target, "--repo", repo, "--json"], home)
        return cmd, None  # root found after the run (target itself or target/<abs home>)

    def rollback(self, home, repo):
        return self._cmd("backup-rollback", ["bench-base", "--path", home.path, "--repo", repo, "--json"], home)

    def version(self):
        exe = self.bins.get("backup-checkpoint") or str(self.b.release_dir / "backup-checkpoint")
        return Cmd([exe, "--version"], self.b.base_env())


class Restic(Tool):
    name, label, short = "restic", "restic", "restic"

    def init(self, home, repo):
        return Cmd(["restic", "-r", repo, "init", "-q"], self.b.peer_env())

    def snapshot(self, home, repo, label):
        tag = ["--tag", "bench-base"] if label == "bench-base" else []
        return Cmd(["restic", "-r", repo, "backup", "-q"] + tag + [home.path], self.b.peer_env())

    def restore(self, home, repo, target):
        cmd = Cmd(["restic", "-r", repo, "restore", "latest", "--target", target, "-q"], self.b.peer_env())
        return cmd, Path(str(target) + str(home.path))

    def rollback(self, home, repo):
        return Cmd(["restic", "-r", repo, "restore", "latest", "--tag", "bench-base", "--target", "/", "-q"],
                   self.b.peer_env(), check=restic_inplace_check)

    def version(self):
        return Cmd(["restic", "version"], self.b.peer_env())


class Borg(Tool):
    name, label, short = "borg", "borg", "borg"

    def __init__(self, bench):
        super().__init__(bench)
        self.last: dict = {}

    def init(self, home, repo):
        repo.parent.mkdir(parents=True, exist_ok=True)
        return Cmd(["borg", "init", "--encryption", "none", repo], self.b.peer_env())

    def snapshot(self, home, repo, label):
        self.last[str(repo)] = label
        return Cmd(["borg", "create", f"{repo}::{label}", home.path], self.b.peer_env())

    def restore(self, home, repo, target):
        cmd = Cmd(["borg", "extract", f"{repo}::{self.last.get(str(repo), 'missing')}"], self.b.peer_env(),
                  cwd=str(target))
        return cmd, Path(target) / str(home.path).lstrip("/")

    def rollback(self, home, repo):
        return Cmd(["borg", "extract", f"{repo}::bench-base"], self.b.peer_env(), cwd="/")

    def version(self):
        return Cmd(["borg", "--version"], self.b.peer_env())


class Rsync(Tool):
    name, label, short = "rsync", "rsync -a", "rsync"

    def snapshot(self, home, repo, label):
        return Cmd(["rsync", "-a", f"{home.path}/", f"{repo}/mirror/"], self.b.base_env())

    def restore(self, home, repo, target):
        return Cmd(["rsync", "-a", f"{repo}/mirror/", f"{target}/"], self.b.base_env()), Path(target)

    def rollback(self, home, repo):
        return Cmd(["rsync", "-a", "--delete", f"{repo}/mirror/", f"{home.path}/"], self.b.base_env())

    def version(self):
        return Cmd(["rsync", "--version"], self.b.base_env())


class RsyncLink(Tool):
    name, label = "rsync-link", "rsync --link-dest"

    def __init__(self, bench):
        super().__init__(bench)
        self.prev: dict = {}

    def snapshot(self, home, repo, label):
        dest = repo / label
        argv = ["rsync", "-a"]
        prev = self.prev.get(str(repo))
        if prev:
            argv.append(f"--link-dest={prev}")
        self.prev[str(repo)] = str(dest)
        return Cmd(argv + [f"{home.path}/", f"{dest}/"], self.b.base_env())

    def init(self, home, repo):
        self.prev.pop(str(repo), None)
        return super().init(home, repo)


class Tar(Tool):
    name, label, kind, short = "tar", "tar -cf (floor)", "floor", "tar"

    def snapshot(self, home, repo, label):
        name = "base.tar" if label == "bench-base" else "home.tar"
        return Cmd(["tar", "-cf", repo / name, "-C", home.path, "."], self.b.base_env())

    def restore(self, home, repo, target):
        return Cmd(["tar", "-xf", repo / "home.tar", "-C", target], self.b.base_env()), Path(target)

    def rollback(self, home, repo):
        return Cmd(["tar", "-xf", repo / "base.tar", "-C", home.path], self.b.base_env())

    def version(self):
        return Cmd(["tar", "--version"], self.b.base_env())


class Sha(Tool):
    name, label, kind = "sha256sum", "sha256sum (floor)", "floor"

    def snapshot(self, home, repo, label):
        script = 'cd "$1" && find . -type f -print0 | xargs -0 sha256sum >/dev/null'
        return Cmd(["/bin/bash", "-c", script, "sha", home.path], self.b.base_env())


class StatWalk(Tool):
    name, label, kind = "statwalk", "stat walk (floor)", "floor"

    def snapshot(self, home, repo, label):
        return Cmd(["find", home.path, "-printf", r"%s %T@ %i\n"], self.b.base_env(), stdout_null=True)


class TrueFloor(Tool):
    name, label, kind, short = "true", "/bin/true (spawn floor)", "floor", "/bin/true (spawn floor)"

    def version(self):
        return Cmd(["/bin/true"], self.b.base_env())


class Variant(Tool):
    """One way of running the project in a scenario of its own (phase checkpoints)."""

    def __init__(self, bench, name, label):
        super().__init__(bench)
        self.name, self.label, self.kind, self.short = name, label, "project", label


# Package managers of a typical dotfiles machine, as the phase scenario fakes them when they
# are not installed: (capture, program, seconds per call, packages). Delays are what the real
# commands take on the reference machine or a Mac with ~150 formulae (brew list ~0.3 s,
# brew bundle dump ~1.2 s, pip list ~0.45 s, npm ls -g ~0.25 s, code --list-extensions ~0.5 s).
FAKE_MANAGERS = [
    ("apt", "apt-mark", 0.06, 400),
    ("brew", "brew", 0.30, 150),
    ("pip", "pip", 0.45, 80),
    ("npm", "npm", 0.25, 12),
    ("code", "code", 0.50, 30),
]


def write_script(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o755)


def sh_printer(delay: float, lines: list, first: str = "") -> str:
    """A /bin/sh body that sleeps `delay` s and prints `lines` (after `first` if given)."""
    body = "\n".join(([first] if first else []) + lines) + "\n"
    return f"sleep {delay}\ncat <<'EOF_LIST'\n{body}EOF_LIST\n"


def make_fake_managers(root: Path, path: str) -> tuple:
    """Fakes for the package managers missing from `path`, laid out like the real ones so the
    cache rules apply (a Homebrew prefix with a Cellar, pip with a Python #! line, npm with a
    global root, an extensions directory): (PATH prefix, extra environment, names faked)."""
    rmtree(root)
    binp = root / "bin"
    binp.mkdir(parents=True)
    env, faked, prefix = {}, [], [str(binp)]
    for name, prog, delay, n in FAKE_MANAGERS:
        if shutil.which(prog, path=path):
            continue
        faked.append(name)
        names = [f"{WORDS[i % len(WORDS)]}{i}" for i in range(n)]
        if name == "brew":
            bp = root / "homebrew"
            for i, pkg in enumerate(names):
                (bp / "Cellar" / pkg / f"1.{i}.0").mkdir(parents=True)
            (bp / "Caskroom").mkdir()
            (bp / "Library" / "Taps" / "homebrew").mkdir(parents=True)
            listing = [f"{pkg} 1.{i}.0" for i, pkg in enumerate(names)]
            bundle = [f'brew "{pkg}"' for pkg in names]
            write_script(bp / "bin" / "brew", "#!/bin/sh\nif [ \"$1\" = bundle ]; then\n"
                         + sh_printer(1.2, bundle) + "exit 0\nfi\n" + sh_printer(delay, listing))
            prefix.append(str(bp / "bin"))
        elif name == "pip":
            lines = [f"{pkg}==1.{i}.0" for i, pkg in enumerate(names)]
            write_script(binp / "pip", f"#!{sys.executable}\nimport time\ntime.sleep({delay})\n"
                         f"print({chr(10).join(lines)!r})\n")
        elif name == "npm":
            groot = root / "npm-global" / "lib" / "node_modules"
            for pkg in names:
                (groot / pkg).mkdir(parents=True)
            listing = [f"+-- {pkg}@1.{i}.0" for i, pkg in enumerate(names)]
            write_script(binp / "npm", f"#!/bin/sh\nif [ \"$1\" = root ]; then sleep 0.15; echo '{groot}'; exit 0; fi\n"
                         + sh_printer(delay, listing, str(groot.parent.parent)))
        elif name == "code":
            ext = root / "vscode-extensions"
            for i, pkg in enumerate(names):
                (ext / f"pub.{pkg}-1.{i}.0").mkdir(parents=True)
            env["VSCODE_EXTENSIONS"] = str(ext)
            write_script(binp / "code", "#!/bin/sh\n"
                         + sh_printer(delay, [f"pub.{pkg}@1.{i}.0" for i, pkg in enumerate(names)]))
        else:
            write_script(binp / prog, "#!/bin/sh\n" + sh_printer(delay, names))
    return ":".join(prefix), env, faked


def check_phase(rc, out, err):
    """check_envelope, plus how the package captures went (cached, captured, failed)."""
    error, extra = check_envelope(rc, out, err)
    try:
        doc = json.loads(out)
    except ValueError:
        return error, extra
    outs = doc.get("packages") or []
    extra["captures"] = {o["name"]: ("cached" if o.get("cached") else o["status"]) for o in outs}
    return error, extra


check_envelope_nostdout = default_check  # output discarded (memory runs): the exit status decides



TOOL_CLASSES = [Project, Restic, Borg, Rsync, RsyncLink, Tar, Sha, StatWalk, TrueFloor]
SNAPSHOT_TOOLS = ["project", "restic", "borg", "rsync", "rsync-link", "tar", "sha256sum", "statwalk"]
RESTORE_TOOLS = ["project", "restic", "borg", "rsync", "tar"]
VERSION_TOOLS = ["project", "restic", "borg", "rsync", "tar", "true"]
MEMORY_TOOLS = ["project", "restic", "borg", "rsync", "tar"]
SCALING_TOOLS = ["project", "restic", "borg", "rsync", "rsync-link", "statwalk"]
INIT_TIMED = {"restic", "borg"}

SCENARIOS = {
    "init": "repository init (not part of the first snapshot; restic: scrypt key derivation)",
    "first": "first snapshot into a fresh repository",
    "nochange": "snapshot, nothing changed",
    "change1": "snapshot after changing 1% of the files",
    "restore": "full restore into an empty directory",
    "rollback": "rollback of the damaged home (project) vs in-place restore (peers)",
    "open": "restic: open the repository (scrypt key derivation), `restic cat config`",
    "version": "`--version` start-up (process spawn to exit)",
    "memfirst": "peak RSS, first snapshot (/usr/bin/time -v)",
    "memnochange": "peak RSS, no-change snapshot (/usr/bin/time -v)",
    "memlistfiles": "peak RSS, `backup-list latest --files --json` (/usr/bin/time -v)",
    "phase": "phase checkpoint, nothing changed, default package captures (issue 21)",
}

SHORT = {
    "init": "repository init",
    "first": "first snapshot",
    "nochange": "no-change snapshot",
    "change1": "1%-change snapshot",
    "restore": "full restore",
    "rollback": "rollback (peers: in-place restore)",
    "open": "restic repository open (KDF)",
    "version": "--version",
    "memfirst": "first snapshot",
    "memnochange": "no-change snapshot",
    "memlistfiles": "backup-list --files",
    "phase": "phase checkpoint, no change",
}

# --------------------------------------------------------------------------- results


class Results:
    def __init__(self):
        self.scenarios: dict = {}

    def cell(self, kind: str, home: str, tool: Tool, label: str | None = None) -> dict:
        sid = f"{kind}@{home}"
        scn = self.scenarios.setdefault(
            sid, {"id": sid, "kind": kind, "home": home, "title": SCENARIOS.get(kind, kind), "meta": {}, "tools": {}}
        )
        return scn["tools"].setdefault(
            tool.name,
            {"tool": tool.name, "label": label or tool.label, "role": tool.kind, "times_s": [], "cpu_s": [], "rss_kb": [], "errors": [],
             "extra": {}},
        )

    def meta(self, kind: str, home: str) -> dict:
        sid = f"{kind}@{home}"
        return self.scenarios.setdefault(
            sid, {"id": sid, "kind": kind, "home": home, "title": SCENARIOS.get(kind, kind), "meta": {}, "tools": {}}
        )["meta"]

    def add(self, kind: str, home: str, tool: Tool, res: RunResult, label: str | None = None):
        c = self.cell(kind, home, tool, label)
        if res.error:
            c["errors"].append(res.error)
        elif res.elapsed is not None:
            c["times_s"].append(res.elapsed)
            if res.cpu is not None:
                c["cpu_s"].append(res.cpu)
            if res.rss_kb is not None:
                c["rss_kb"].append(res.rss_kb)
        if res.extra:
            c["extra"] = res.extra  # the last run's details
        return c

    def add_error(self, kind: str, home: str, tool: Tool, message: str):
        self.cell(kind, home, tool)["errors"].append(message)

    @staticmethod
    def summarize(c: dict) -> dict:
        t = c["times_s"]
        out = {"runs": len(t)}
        if t:
            out.update(median_s=statistics.median(t), min_s=min(t), max_s=max(t))
        if c.get("cpu_s"):
            out["median_cpu_s"] = statistics.median(c["cpu_s"])
        if c["rss_kb"]:
            out["peak_rss_kb"] = max(c["rss_kb"])
        if c["errors"]:
            out["error"] = c["errors"][0]
            out["failed_runs"] = len(c["errors"])
        return out

    def median(self, kind: str, home: str, tool: str) -> float | None:
        c = self.scenarios.get(f"{kind}@{home}", {}).get("tools", {}).get(tool)
        if not c or not c["times_s"] or c["errors"]:
            return None
        return statistics.median(c["times_s"])

    def rss(self, kind: str, home: str, tool: str) -> int | None:
        c = self.scenarios.get(f"{kind}@{home}", {}).get("tools", {}).get(tool)
        if not c or not c["rss_kb"] or c["errors"]:
            return None
        return max(c["rss_kb"])

    def to_json(self) -> list:
        out = []
        for scn in self.scenarios.values():
            tools = {}
            project = self.median(scn["kind"], scn["home"], "project")
            for name, c in scn["tools"].items():
                s = self.summarize(c)
                med = s.get("median_s")
                if project is not None and med and name != "project" and "error" not in s:
                    s["project_over_tool"] = project / med
                tools[name] = {**c, **s}
            out.append({**scn, "tools": tools})
        return out


# --------------------------------------------------------------------------- formatting


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    if r < 1:
        return f"{r:.2f} ({1 / r:.1f}× faster)"
    return f"{r:.2f} ({r:.1f}× slower)"


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out).resolve()
        self.run_dir = self.out / "run"
        self.homes_dir = self.out / "homes"
        target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
        if not target_dir.is_absolute():
            target_dir = ROOT / target_dir
        self.release_dir = target_dir / "release"
        self.res = Results()
        self.notes: list = []
        self.phase_errors: list = []
        self.label_n = 0
        self.info: dict = {}
        self.tools = {cls.name: cls(self) for cls in TOOL_CLASSES}
        wanted = set(args.tools.split(",")) if args.tools else None
        if wanted:
            wanted |= {"project", "true"}
            self.tools = {k: v for k, v in self.tools.items() if k in wanted}
        self.homes: dict = {}

    # environments ------------------------------------------------------------
    def base_env(self) -> dict:
        return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8", "TZ": "UTC", "HOME": str(self.run_dir / "peer-home")}

    def peer_env(self) -> dict:
        env = self.base_env()
        env.update(
            RESTIC_PASSWORD="bench-password",
            RESTIC_CACHE_DIR=str(self.run_dir / "restic-cache"),
            BORG_BASE_DIR=str(self.run_dir / "borg-base"),
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        )
        return env

    def project_env(self, home: Home) -> dict:
        env = self.base_env()
        env["HOME"] = str(home.path)  # the synthetic home is $HOME: `~` roots, default excludes apply
        return env

    # helpers -----------------------------------------------------------------
    def log(self, msg: str):
        print(msg, file=sys.stderr, flush=True)

    def pick(self, names) -> list:
        return [self.tools[n] for n in names if n in self.tools]

    def next_label(self) -> str:
        self.label_n += 1
        return f"bench-{self.label_n}"

    def repo(self, tool: Tool, home: Home, purpose: str = "main") -> Path:
        return self.run_dir / "repos" / f"{home.name}-{purpose}" / tool.name

    def settle(self):
        os.sync()

    def timed(self, kind: str, home: Home, tool: Tool, cmd: Cmd | None, note: str = "", time_v=False):
        if cmd is None:
            return None
        res = self.runner.run(cmd, time_v=time_v)
        self.res.add(kind, home.name, tool, res)
        what = f"error: {res.error}" if res.error else fmt_time(res.elapsed)
        if res.rss_kb and not res.error:
            what += f"  peak RSS {fmt_bytes(res.rss_kb * 1024)}"
        self.log(f"  [{kind}@{home.name}] {tool.label:<24} {note:<8} {what}")
        return res

    def save(self):
        self.out.mkdir(parents=True, exist_ok=True)
        doc = self.document()
        (self.out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")

    # setup -------------------------------------------------------------------
    def machine(self):
        cpu = "?"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        mem = None
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal"):
                    mem = int(line.split()[1]) * 1024
        except OSError:
            pass
        fs = "?"
        try:
            best = ""
            for line in Path("/proc/mounts").read_text().splitlines():
                dev, mnt, typ = line.split()[:3]
                if str(self.out).startswith(mnt) and len(mnt) >= len(best):
                    best, fs = mnt, f"{typ} ({dev} on {mnt})"
        except OSError:
            pass
        return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem, "kernel": platform.release(),
                "filesystem": fs, "python": platform.python_version(), "loadavg_start": os.getloadavg(),
                "niceness": os.nice(0)}

    def ensure_peers(self):
        need = [("restic", "restic"), ("borg", "borgbackup"), ("rsync", "rsync"), ("/usr/bin/time", "time")]
        missing = [pkg for exe, pkg in need if not (os.path.exists(exe) if exe.startswith("/") else shutil.which(exe))]
        if not missing:
            return
        if self.args.quick:
            # The smoke run (scripts/test, CI) never installs packages and never fails
            # because a peer is absent: it checks that the harness and the project work.
            absent = {"restic": ["restic"], "borgbackup": ["borg"], "rsync": ["rsync", "rsync-link"]}
            for pkg in missing:
                for name in absent.get(pkg, []):
                    self.tools.pop(name, None)
            self.notes.append(f"--quick: not installed, skipped: {' '.join(missing)}")
            return
        if self.args.no_install:
            self.notes.append(f"not installed (--no-install): {' '.join(missing)}")
            return
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            self.notes.append(f"cannot install {' '.join(missing)}: needs root and apt-get")
            return
        self.log(f"installing {' '.join(missing)} (apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q"] + missing):
            p = subprocess.run(argv, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                self.notes.append(f"`{' '.join(argv)}` failed: {tail(p.stderr)}")
                return

    def build_project(self):
        proj = self.tools["project"]
        info = {"release_dir": str(self.release_dir), "build": "skipped (--no-build)"}
        if not self.args.no_build:
            if shutil.which("cargo"):
                self.log("cargo build --release (no-op when fresh) ...")
                t0 = time.perf_counter()
                p = subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, capture_output=True,
                                   text=True)
                info["build_s"] = round(time.perf_counter() - t0, 1)
                if p.returncode == 0:
                    info["build"] = "ok"
                else:
                    info["build"] = "failed"
                    info["build_error"] = tail(p.stderr, 6)
                    self.notes.append("cargo build --release failed: " + tail(p.stderr, 3))
            else:
                info["build"] = "cargo not found"
                self.notes.append("cargo not found; using existing binaries if any")
        # Measure a private copy: a concurrent `cargo build` must not swap binaries mid-run.
        bindir = self.out / "bin"
        rmtree(bindir)
        bindir.mkdir(parents=True)
        digests = {}
        for b in ("backup-checkpoint", "backup-create", "backup-list", "backup-verify", "backup-restore",
                  "backup-rollback"):
            p = self.release_dir / b
            if p.exists():
                shutil.copy2(p, bindir / b)
                proj.bins[b] = str(bindir / b)
                digests[b] = hashlib.sha256((bindir / b).read_bytes()).hexdigest()[:16]
                info.setdefault("binary_mtime", time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(p.stat().st_mtime)))
        info["binary_sha256"] = digests
        info["binaries"] = sorted(proj.bins)
        if info.get("build") == "failed" and proj.bins:
            self.notes.append("measuring binaries left over from an earlier build (may be stale)")
        try:
            rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                                   cwd=ROOT, capture_output=True, text=True).stdout.strip()
            info["git_commit"] = rev
            info["source_dirty"] = bool(dirty)
        except OSError:
            pass
        self.info["project"] = info

    def versions(self) -> dict:
        out = {}
        for argv in (["restic", "version"], ["borg", "--version"], ["rsync", "--version"], ["tar", "--version"],
                     ["sha256sum", "--version"], ["find", "--version"],
                     [str(self.release_dir / "backup-checkpoint"), "--version"]):
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
                out[os.path.basename(argv[0])] = (p.stdout or p.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.SubprocessError):
                out[os.path.basename(argv[0])] = None
        return out

    def make_home(self, spec: HomeSpec) -> Home:
        t0 = time.perf_counter()
        home = generate_home(spec, self.homes_dir / spec.name, self.args.seed)
        warm(home)
        self.log(f"home {spec.name}: {len(home.files):,} files, {fmt_bytes(home.total_bytes())}, "
                 f"{len(home.dirs):,} dirs, {len(home.links)} symlinks (generated in {time.perf_counter() - t0:.1f} s)")
        self.homes[spec.name] = home.summary()
        return home

    # phases ------------------------------------------------------------------
    def phase_snapshots(self, home: Home, tool_names, kinds=("first", "change1", "nochange"), first_reps=None):
        tools = self.pick(tool_names)
        reps = self.args.reps
        n_first = first_reps or reps
        for r in range(n_first):
            for t in rotate(tools, r):
                repo = self.repo(t, home)
                rmtree(repo)
                icmd = t.init(home, repo)
                if icmd is not None:
                    ires = self.runner.run(icmd)
                    if t.name in INIT_TIMED:
                        self.res.add("init", home.name, t, ires)
                    if ires.error:
                        self.res.add_error("first", home.name, t, f"init failed: {ires.error}")
                        continue
                self.settle()
                res = self.timed("first", home, t, t.snapshot(home, repo, self.next_label()), f"{r + 1}/{n_first}")
                if t.name == "project" and res and not res.error and "files" in res.extra:
                    if res.extra["files"] != len(home.files) or res.extra.get("symlinks") != len(home.links):
                        self.notes.append(
                            f"project stored {res.extra['files']} files / {res.extra.get('symlinks')} symlinks of "
                            f"{len(home.files)} / {len(home.links)} in home {home.name}")
        if "change1" not in kinds and "nochange" not in kinds:
            return
        for r in range(reps):
            t_mut = time.time()
            m = mutate(home, r, self.args.seed)
            self.res.meta("change1", home.name).setdefault("mutations", []).append(m)
            wait = t_mut + RACY_WAIT_S - time.time()
            if wait > 0:
                time.sleep(wait)
            for t in rotate(tools, r):
                self.settle()
                self.timed("change1", home, t, t.snapshot(home, self.repo(t, home), self.next_label()),
                           f"{r + 1}/{reps}")
            for t in rotate(tools, r):
                self.settle()
                self.timed("nochange", home, t, t.snapshot(home, self.repo(t, home), self.next_label()),
                           f"{r + 1}/{reps}")

    def phase_restore(self, home: Home):
        tools = self.pick(RESTORE_TOOLS)
        want = tree_manifest(home.path)
        for r in range(self.args.reps):
            for t in rotate(tools, r):
                target = self.run_dir / "restore" / t.name
                rmtree(target)
                target.mkdir(parents=True)
                cmd, root = t.restore(home, self.repo(t, home), target)
                self.settle()
                res = self.timed("restore", home, t, cmd, f"{r + 1}/{self.args.reps}")
                if res is not None and not res.error:
                    if root is None:  # project: `~` roots land in target itself
                        alt = Path(str(target) + str(home.path))
                        root = alt if alt.is_dir() else target
                    c = self.res.cell("restore", home.name, t)
                    if r == 0 or home.total_bytes() < 50 * MB:
                        v = compare_trees(want, tree_manifest(root))
                    else:  # large homes: full comparison once, then counts
                        v = compare_counts(want, root)
                    c.setdefault("verify", []).append(v)
                    if not v["exact"]:
                        self.log(f"    restore by {t.label} differs from the home: {v}")
                rmtree(target)

    def reset_home(self, pristine: Path, home: Home):
        if shutil.which("rsync"):
            subprocess.run(["rsync", "-a", "--delete", f"{pristine}/", f"{home.path}/"], check=True)
        else:
            rmtree(home.path)
            subprocess.run(["cp", "-a", str(pristine), str(home.path)], check=True)

    def phase_rollback(self, home: Home):
        tools = self.pick(RESTORE_TOOLS)
        pristine = self.run_dir / f"pristine-{home.name}"
        rmtree(pristine)
        subprocess.run(["cp", "-a", str(home.path), str(pristine)], check=True)
        want = tree_manifest(home.path)
        ready = []
        for t in tools:
            res = self.runner.run(t.snapshot(home, self.repo(t, home), "bench-base"))
            if res.error:
                self.res.add_error("rollback", home.name, t, f"base snapshot failed: {res.error}")
            else:
                ready.append(t)
        for r in range(self.args.reps):
            for t in rotate(ready, r):
                self.reset_home(pristine, home)
                d = damage(home, r, self.args.seed)
                self.res.meta("rollback", home.name)["damage"] = d
                self.settle()
                res = self.timed("rollback", home, t, t.rollback(home, self.repo(t, home)), f"{r + 1}/{self.args.reps}")
                if res is not None and not res.error:
                    v = compare_trees(want, tree_manifest(home.path))
                    c = self.res.cell("rollback", home.name, t)
                    c.setdefault("verify", []).append(v)
        self.reset_home(pristine, home)
        rmtree(pristine)

    def phase_version(self, home: Home):
        n = self.args.version_runs
        for t in self.pick(VERSION_TOOLS):
            cmd = t.version()
            if cmd is None:
                continue
            for _rep in range(self.args.reps):
                for _ in range(n):
                    res = self.runner.run(cmd)
                    self.res.add("version", "-", t, res, label=f"{t.short} --version" if t.name != "true" else t.short)
                    if res.error:
                        break
            c = self.res.cell("version", "-", t)
            med = statistics.median(c["times_s"]) if c["times_s"] else None
            self.log(f"  [version] {t.label:<24} {fmt_time(med)} (median of {len(c['times_s'])})"
                     + (f" error: {c['errors'][0]}" if c["errors"] else ""))
        if "restic" in self.tools:
            t = self.tools["restic"]
            repo = self.repo(t, home)
            for r in range(self.args.reps):
                self.timed("open", home, t, Cmd(["restic", "-r", repo, "cat", "config"], self.peer_env()),
                           f"{r + 1}/{self.args.reps}")

    def phase_memory(self, home: Home):
        have_time = os.path.exists("/usr/bin/time")
        if not have_time:
            self.notes.append("/usr/bin/time missing: peak RSS from wait4(2) instead")
        for t in self.pick(MEMORY_TOOLS):
            repo = self.repo(t, home, "mem")
            rmtree(repo)
            icmd = t.init(home, repo)
            if icmd is not None:
                ires = self.runner.run(icmd)
                if ires.error:
                    self.res.add_error("memfirst", home.name, t, f"init failed: {ires.error}")
                    continue
            self.settle()
            self.timed("memfirst", home, t, t.snapshot(home, repo, self.next_label()), "time -v", time_v=have_time)
            self.settle()
            self.timed("memnochange", home, t, t.snapshot(home, repo, self.next_label()), "time -v",
                       time_v=have_time)
            rmtree(repo)

    def phase_packages(self, home: Home):
        """Issue 21: a phase checkpoint of an unchanged home with the default package captures,
        cold (cache emptied) and warm (unchanged system), next to captures off."""
        proj = self.tools["project"]
        exe = proj.bins.get("backup-checkpoint") or str(self.release_dir / "backup-checkpoint")
        base = self.project_env(home)
        prefix, extra, faked = make_fake_managers(self.run_dir / "pkgfakes", base["PATH"])
        self.res.meta("phase", home.name)["faked_managers"] = faked
        made = time.time()
        repo = self.run_dir / "repos" / f"{home.name}-phase"
        rmtree(repo)
        on = dict(base, PATH=f"{prefix}:{base['PATH']}", BACKUP_RUN_ID="bench-phase", **extra)
        off = dict(on, BACKUP_PACKAGES="false")
        argv = [exe, "auto", "pre-dotfiles", "--path", home.path, "--repo", repo, "--json"]
        variants = {
            "off": Variant(self, "phase-off", "captures off"),
            "cold": Variant(self, "phase-cold", "captures, cache empty"),
            "warm": Variant(self, "phase-warm", "captures, unchanged"),
        }
        # The fakes were just written: wait out the racy window of the cache key (a real
        # package manager's state is older than 2 s too).
        wait = made + RACY_WAIT_S - time.time()
        if wait > 0:
            time.sleep(wait)
        first = self.runner.run(Cmd(argv, on, check=check_phase))  # creates the repository
        if first.error:
            self.res.add_error("phase", home.name, variants["warm"], f"first checkpoint failed: {first.error}")
            return
        cache = repo / "cache" / "packages"
        for r in range(self.args.reps):
            for key in ("cold", "warm", "off"):
                if key == "cold" and cache.exists():
                    cache.unlink()
                self.settle()
                res = self.timed("phase", home, variants[key],
                                 Cmd(argv, off if key == "off" else on, check=check_phase),
                                 f"{r + 1}/{self.args.reps}")
                if res and not res.error and key == "warm":
                    caps = res.extra.get("captures", {})
                    ran = [n for n, st in caps.items() if st not in ("cached", "missing")]
                    if ran:
                        self.notes.append(f"phase checkpoint (warm): not from the cache: {', '.join(ran)} ({caps})")

    def run_memory_scaling(self, home: Home):
        """Peak memory of a no-change checkpoint and of `backup-list --files` at this size."""
        proj = self.tools["project"]
        repo = self.repo(proj, home)
        self.settle()
        self.timed("memnochange", home, proj, proj.snapshot(home, repo, self.next_label()), "time -v",
                   time_v=True)
        exe = proj.bins.get("backup-list") or str(self.release_dir / "backup-list")
        self.settle()
        self.timed("memlistfiles", home, proj,
                   Cmd([exe, "latest", "--files", "--json", "--repo", repo], self.project_env(home),
                       check=check_envelope_nostdout, stdout_null=True), "time -v", time_v=True)

    def main_only(self):
        """`--only`: just the issue 21 scenarios (phase checkpoints; engine margins)."""
        a = self.args
        only = set(a.only.split(","))
        if "phase" in only:
            home = self.make_home(PRESETS["tiny" if a.quick else "small"])
            self.guard(f"phase@{home.name}", self.phase_packages, home)
            self.save()
        if "margins" in only:
            small = self.make_home(PRESETS["small"])
            self.guard("rollback@small", self.phase_rollback, small)
            self.save()
            rmtree(small.path)
            large = self.make_home(PRESETS["large"])
            self.guard("snapshots@large", self.phase_snapshots, large, ["project", "tar", "statwalk"])
            self.save()
            rmtree(large.path)
            rmtree(self.run_dir / "repos" / "large-main")
        if "margins200k" in only:
            big = self.make_home(PRESETS["200k"])
            self.guard("scaling@200k", self.phase_snapshots, big, ["project", "statwalk"],
                       ("first", "change1", "nochange"), 1)
            self.guard("memory@200k", self.run_memory_scaling, big)
            self.save()
            rmtree(big.path)
            rmtree(self.run_dir / "repos" / "200k-main")

    def run_home(self, spec: HomeSpec, rollback: bool):
        home = self.make_home(spec)
        self.guard(f"snapshots@{home.name}", self.phase_snapshots, home, SNAPSHOT_TOOLS)
        self.save()
        self.guard(f"restore@{home.name}", self.phase_restore, home)
        self.save()
        if rollback:
            self.guard(f"rollback@{home.name}", self.phase_rollback, home)
            self.save()
        return home

    def wait_quiet(self, what: str):
        """With --wait-load L: before a phase, wait (at most --wait-max s) for the load average to drop below L."""
        limit = self.args.wait_load
        if not limit:
            return
        deadline = time.time() + self.args.wait_max
        announced = False
        while os.getloadavg()[0] >= limit and time.time() < deadline:
            if not announced:
                self.log(f"  waiting for load average < {limit} before {what} (now {os.getloadavg()[0]:.2f})")
                announced = True
            time.sleep(5)
        if os.getloadavg()[0] >= limit:
            self.notes.append(f"{what}: load average still {os.getloadavg()[0]:.2f} after waiting "
                              f"{self.args.wait_max:.0f} s")

    def guard(self, what: str, fn, *a):
        self.wait_quiet(what)
        self.info.setdefault("loadavg_by_phase", []).append([what, round(os.getloadavg()[0], 2)])
        try:
            fn(*a)
        except Exception as e:  # a harness bug must not lose the other cells
            self.phase_errors.append(f"{what}: {type(e).__name__}: {e}")
            self.log(f"!! phase {what} failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")

    def main(self) -> int:
        a = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        rmtree(self.run_dir)
        (self.run_dir / "peer-home").mkdir(parents=True)
        self.runner = Runner(self.run_dir, a.timeout)
        self.started = time.time()
        self.info["machine"] = self.machine()
        if self.info["machine"]["loadavg_start"][0] > 0.5:
            self.notes.append(f"load average {self.info['machine']['loadavg_start'][0]:.2f} at start: "
                              f"other work was running, expect noise")
        self.ensure_peers()
        self.build_project()
        self.info["versions"] = self.versions()
        self.log(f"project {self.info['project']}")

        if a.only:
            self.main_only()
            return self.finish([])
        specs = self.home_specs()
        smallest = min(specs, key=lambda s: s.files)
        largest = max(specs, key=lambda s: s.bytes)
        homes = {}
        for spec in specs:
            homes[spec.name] = self.run_home(spec, rollback=spec.files <= 5000 or spec is smallest)
            if spec is not smallest and spec is not largest:
                rmtree(homes[spec.name].path)
        self.guard(f"phase@{smallest.name}", self.phase_packages, homes[smallest.name])
        self.guard("version", self.phase_version, homes[smallest.name])
        self.guard("memory", self.phase_memory, homes[largest.name])
        self.save()
        if a.scaling or a.scaling_full:
            for name in ["2k", "20k"] + (["200k"] if a.scaling_full else []):
                spec = PRESETS[name]
                home = self.make_home(spec)
                self.guard(f"scaling@{name}", self.phase_snapshots, home, SCALING_TOOLS,
                           ("first", "change1", "nochange"), 1)
                self.guard(f"memory@{name}", self.run_memory_scaling, home)
                self.save()
                rmtree(home.path)
                rmtree(self.run_dir / "repos" / f"{name}-main")
        return self.finish(specs)

    def finish(self, specs) -> int:
        a = self.args
        self.info["machine"]["loadavg_end"] = os.getloadavg()
        self.info["wall_s"] = round(time.time() - self.started, 1)
        self.save()
        doc = self.document()
        text = render_console(doc)
        print(text)
        md = render_markdown(doc)
        (self.out / "results.md").write_text(md)
        if not a.keep:
            rmtree(self.run_dir)
            for spec in specs:
                rmtree(self.homes_dir / spec.name)
        failures = self.required_failures()
        doc["required_failures"] = failures
        (self.out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"\nresults: {self.out / 'results.json'}  {self.out / 'results.md'}")
        if failures:
            print("\nrequired failures:" + "".join(f"\n  - {f}" for f in failures))
            if a.allow_missing:
                print("(--allow-missing: not fatal)")
                return 0
            return 1
        return 0

    def home_specs(self) -> list:
        a = self.args
        if a.files or a.bytes:
            files = a.files or 1000
            nbytes = a.bytes or files * 8000
            big = [int(x) for x in a.big.split(",")] if a.big else []
            return [HomeSpec("custom", files, nbytes, big, max(1, files // 200), files > 1000)]
        names = ["tiny"] if a.quick else [h for h in a.homes.split(",") if h]
        for n in names:
            if n not in PRESETS:
                raise SystemExit(f"unknown home preset {n!r}; choose from {', '.join(PRESETS)}")
        return [PRESETS[n] for n in names]

    def required_failures(self) -> list:
        out = []
        for scn in self.res.scenarios.values():
            for _name, c in scn["tools"].items():
                if not c["errors"]:
                    continue
                role = c["role"]
                required = role != "project" or scn["kind"] in ("first", "nochange", "change1", "version", "phase")
                if role == "project" and self.args.strict:
                    required = True
                if required:
                    out.append(f"{scn['id']} {c['label']}: {c['errors'][0]}")
        out.extend(f"harness phase {e}" for e in self.phase_errors)
        return out

    def document(self) -> dict:
        return {
            "schema": RESULTS_SCHEMA,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "scripts/bench " + " ".join(sys.argv[1:]),
            "caches": "warm: every home is read once after generation; sync(2) before each timed run; "
                      "repositories and homes on the same file system",
            "reps": self.args.reps,
            "seed": self.args.seed,
            "quick": self.args.quick,
            **self.info,
            "homes": self.homes,
            "notes": self.notes,
            "phase_errors": self.phase_errors,
            "scenarios": self.res.to_json(),
            "targets": evaluate_targets(self.res, self.args.quick),
        }


def rotate(items: list, r: int) -> list:
    if not items:
        return items
    k = r % len(items)
    return items[k:] + items[:k]


def rmtree(p: Path):
    p = Path(p)
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        shutil.rmtree(p, ignore_errors=True)
        if p.exists():  # read-only dirs from a restore
            subprocess.run(["chmod", "-R", "u+rwx", str(p)], capture_output=True)
            shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------- targets


def evaluate_targets(res: Results, quick: bool) -> list:
    out = []

    def row(name, target, measured, ok, detail=""):
        out.append({"target": name, "goal": target, "measured": measured,
                    "met": None if ok is None else bool(ok), "detail": detail})

    def ratio(a, b):
        return a / b if a is not None and b else None

    L, S = "large", "small"
    p = res.median("nochange", L, "project")
    r = ratio(p, res.median("nochange", L, "statwalk"))
    row("no-change checkpoint, 20k files", "≤ 2× stat walk", r and f"{r:.2f}× stat walk", r is not None and r <= 2)
    for peer in ("restic", "borg"):
        r = ratio(res.median("nochange", L, peer), p)
        row("no-change checkpoint, 20k files", f"≥ 6× faster than {peer}", r and f"{r:.1f}× faster",
            r is not None and r >= 6)
    p = res.median("first", L, "project")
    r = ratio(p, res.median("first", L, "tar"))
    row("first checkpoint, 20k files / 320 MB", "≤ 2× tar to a file", r and f"{r:.2f}× tar", r is not None and r <= 2)
    r = ratio(res.median("first", L, "restic"), p)
    row("first checkpoint, 20k files / 320 MB", "≥ 4× faster than restic", r and f"{r:.1f}× faster",
        r is not None and r >= 4)
    for kind, what in (("first", "first"), ("nochange", "no change"), ("change1", "1% changed")):
        p = res.median(kind, S, "project")
        row(f"300-file checkpoint ({what})", "≤ 20 ms", p and fmt_time(p), p is not None and p <= 0.020)
        r = ratio(res.median(kind, S, "borg"), p)
        row(f"300-file checkpoint ({what})", "≥ 12× faster than borg", r and f"{r:.1f}× faster",
            r is not None and r >= 12)
    p = res.median("rollback", S, "project")
    row("rollback of 300 files incl. safety snapshot", "≤ 50 ms", p and fmt_time(p), p is not None and p <= 0.050)
    p = res.median("version", "-", "project")
    row("`--version`", "< 5 ms", p and fmt_time(p), p is not None and p < 0.005)
    for kind, what in (("memfirst", "first snapshot"), ("memnochange", "no-change snapshot")):
        pr, rr = res.rss(kind, L, "project"), res.rss(kind, L, "restic")
        r = ratio(pr, rr)
        row(f"peak memory, 20k files ({what})", "≤ 1/3 of restic's",
            r and f"{fmt_bytes(pr * 1024)} vs {fmt_bytes(rr * 1024)} ({r:.2f})", r is not None and r <= 1 / 3)
    # Issue 21: the engine's margins, and the phase checkpoint users wait for.
    p = res.median("nochange", L, "project")
    r = ratio(p, res.median("nochange", L, "statwalk"))
    row("no-change checkpoint, 20k files (issue 21)", "≤ 1.5× stat walk", r and f"{r:.2f}× stat walk",
        r is not None and r <= 1.5)
    r = ratio(res.median("first", L, "project"), res.median("first", L, "tar"))
    row("first checkpoint, 20k files / 320 MB (issue 21)", "≤ 1.5× tar to a file", r and f"{r:.2f}× tar",
        r is not None and r <= 1.5)
    p = res.median("rollback", S, "project")
    row("rollback of the 300-file home incl. safety snapshot (issue 21)", "≤ 30 ms", p and fmt_time(p),
        p is not None and p <= 0.030)
    p = res.median("nochange", "200k", "project")
    r = ratio(p, res.median("nochange", "200k", "statwalk"))
    row("no-change checkpoint, 200k files (issue 21)", "≤ 1.5× stat walk", r and f"{r:.2f}× stat walk",
        r is not None and r <= 1.5)
    m = res.rss("memnochange", "200k", "project")
    row("peak memory, no-change checkpoint, 200k files (issue 21)", "≤ 60 MB", m and fmt_bytes(m * 1024),
        m is not None and m * 1024 <= 60e6)
    m = res.rss("memlistfiles", "200k", "project")
    row("peak memory, `backup-list --files`, 200k files (issue 21)", "≤ 30 MB (streams)",
        m and fmt_bytes(m * 1024), m is not None and m * 1024 <= 30e6)
    for home in (S, "tiny"):
        off, warm = res.median("phase", home, "phase-off"), res.median("phase", home, "phase-warm")
        if off is not None and warm is not None:
            d = warm - off
            row(f"phase checkpoint, unchanged system, default captures ({home} home)",
                "≤ 5 ms more than captures off", f"{d * 1e3:+.1f} ms ({fmt_time(warm)} vs {fmt_time(off)})",
                d <= 0.005)
            break
    else:
        row("phase checkpoint, unchanged system, default captures", "≤ 5 ms more than captures off", None, None)
    for t in out:
        if t["measured"] is None:
            t["met"] = None
            t["measured"] = "not measured" + (" (--quick)" if quick else "")
    return out


# --------------------------------------------------------------------------- rendering

ORDER = ["project", "restic", "borg", "rsync", "rsync-link", "tar", "sha256sum", "statwalk", "true",
         "phase-off", "phase-cold", "phase-warm"]
KIND_ORDER = ["init", "first", "nochange", "change1", "restore", "rollback", "open", "version", "memfirst",
              "memnochange", "memlistfiles", "phase"]
MEM_KINDS = ("memfirst", "memnochange", "memlistfiles")


def scenario_order(doc) -> list:
    homes = list(doc["homes"])
    def key(s):
        h = homes.index(s["home"]) if s["home"] in homes else -1
        return (KIND_ORDER.index(s["kind"]) if s["kind"] in KIND_ORDER else 99, h)
    return sorted(doc["scenarios"], key=key)


def home_label(doc, home: str) -> str:
    h = doc["homes"].get(home)
    if not h:
        return home
    return f"{home} ({h['files']:,} files, {fmt_bytes(h['bytes'])})"


def is_scaling(doc, s) -> bool:
    return s["home"] in ("2k", "20k", "200k")


def render_console(doc) -> str:
    lines = []
    m = doc.get("machine", {})
    lines.append("=" * 100)
    lines.append(f"dotfiles-backup benchmark — {doc['generated_at']} — {m.get('cpu')} × {m.get('cores')} cores, "
                 f"{fmt_bytes(m.get('memory_bytes'))} RAM, {m.get('filesystem')}")
    pj = doc.get("project", {})
    lines.append(f"project: {pj.get('git_commit')}{' + uncommitted src changes' if pj.get('source_dirty') else ''}"
                 f", build {pj.get('build')}; reps {doc['reps']}; caches WARM ({doc['caches']})")
    lines.append("ratio = project ÷ tool (median ÷ median wall time): < 1 means the project is faster; "
                 "cpu = median user+sys time of the process tree")
    for s in scenario_order(doc):
        if s["kind"] in MEM_KINDS:
            continue
        home = "" if s["home"] == "-" else " — " + home_label(doc, s["home"])
        lines.append("")
        lines.append(f"## {s['title']}{home}")
        lines.append(f"   {'tool':<26}{'median':>11}{'min':>11}{'max':>11}{'cpu':>11}   project ÷ tool")
        for name in ORDER:
            c = s["tools"].get(name)
            if not c:
                continue
            if "error" in c:
                lines.append(f"   {c['label']:<26}  ERROR: {c['error'][:200]}")
                continue
            lines.append(f"   {c['label']:<26}{fmt_time(c.get('median_s')):>11}{fmt_time(c.get('min_s')):>11}"
                         f"{fmt_time(c.get('max_s')):>11}{fmt_time(c.get('median_cpu_s')):>11}"
                         f"   {fmt_ratio(c.get('project_over_tool'))}")
            if c.get("extra", {}).get("note"):
                lines.append(f"   {'':<26}  note: {c['extra']['note']}")
            v = c.get("verify")
            vs = v if isinstance(v, list) else [v] if v else []
            bad = [x for x in vs if not x.get("exact")]
            if bad:
                x = bad[0]
                if x.get("counts_only"):
                    lines.append(f"   {'':<26}  result differs in {len(bad)}/{len(vs)} runs: expected "
                                 f"{x['expected']}, got {x['got']}")
                else:
                    lines.append(f"   {'':<26}  result differs in {len(bad)}/{len(vs)} runs: missing "
                                 f"{x['missing']}, extra {x['extra']}, content {x['content_differs']}"
                                 + (f" (e.g. {', '.join(x['examples'][:3])})" if x.get("examples") else ""))
            elif vs:
                lines.append(f"   {'':<26}  result verified identical to the home ({len(vs)} runs)")
        meta = s.get("meta") or {}
        if meta.get("mutations"):
            mm = meta["mutations"][0]
            lines.append(f"   (each rep changes {mm['files_changed']} files, ~{mm['bytes_written']} bytes)")
        if meta.get("damage"):
            lines.append(f"   (damage per rep: {meta['damage']})")
    mem = [s for s in scenario_order(doc) if s["kind"] in MEM_KINDS]
    if mem:
        lines.append("")
        lines.append("## peak memory (Maximum resident set size, /usr/bin/time -v)")
        for s in mem:
            cells = []
            for name in ORDER:
                c = s["tools"].get(name)
                if c:
                    cells.append(f"{c['label']}: " + ("ERROR" if "error" in c else fmt_bytes(c.get("peak_rss_kb", 0) * 1024)))
            lines.append(f"   {s['title']} — {home_label(doc, s['home'])}: " + "; ".join(cells))
    lines.append("")
    lines.append("## targets (issue 8)")
    for t in doc["targets"]:
        mark = {True: "MET    ", False: "NOT MET", None: "n/a    "}[t["met"]]
        lines.append(f"   [{mark}] {t['target']}: {t['goal']} — measured {t['measured']}")
    if doc.get("notes"):
        lines.append("")
        lines.append("## notes")
        lines.extend(f"   - {n}" for n in doc["notes"])
    if doc.get("phase_errors"):
        lines.append("## harness errors")
        lines.extend(f"   - {n}" for n in doc["phase_errors"])
    return "\n".join(lines)


def md_cell(c) -> str:
    if not c:
        return ""
    if "error" in c:
        return "error"
    med = c.get("median_s")
    if c.get("runs", 0) > 1:
        return f"{fmt_time(med)} ({fmt_time(c['min_s'])}–{fmt_time(c['max_s'])})"
    return fmt_time(med)


def render_markdown(doc) -> str:
    m = doc.get("machine", {})
    pj = doc.get("project", {})
    out = []
    out.append(f"<!-- generated by `{doc['command']}` at {doc['generated_at']} -->")
    out.append("")
    out.append(f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {fmt_bytes(m.get('memory_bytes'))} RAM, "
               f"Linux {m.get('kernel')}, {m.get('filesystem')}. Load average at start "
               f"{m.get('loadavg_start', [0])[0]:.2f}, niceness {m.get('niceness')}. "
               f"Project {pj.get('git_commit')}{' (+ uncommitted engine changes)' if pj.get('source_dirty') else ''}. "
               f"{doc['reps']} repetitions, median (min–max), caches warm.")
    out.append("")
    v = doc.get("versions", {})
    out.append("Peers: " + ", ".join(f"{k}: {v[k]}" for k in ("restic", "borg", "rsync", "tar") if v.get(k)) + ".")
    out.append("")
    main = [s for s in scenario_order(doc) if s["kind"] not in MEM_KINDS + ("version", "phase")
            and not is_scaling(doc, s)]
    cols = [n for n in ORDER if n != "true" and any(n in s["tools"] for s in main)]
    labels = {n: next((s["tools"][n]["label"] for s in main if n in s["tools"]), n) for n in cols}
    out.append("### Wall time")
    out.append("")
    out.append("| scenario | home | " + " | ".join(labels[n] for n in cols) + " |")
    out.append("|---|---|" + "---|" * len(cols))
    for s in main:
        out.append(f"| {SHORT.get(s['kind'], s['title'])} | {s['home']} | " + " | ".join(md_cell(s["tools"].get(n)) for n in cols) + " |")
    out.append("")
    out.append("### Ratios: project ÷ tool (median; < 1 = project faster)")
    out.append("")
    rcols = [n for n in cols if n != "project"]
    out.append("| scenario | home | " + " | ".join(labels[n] for n in rcols) + " |")
    out.append("|---|---|" + "---|" * len(rcols))
    for s in main:
        if "project" not in s["tools"]:
            continue
        cells = []
        for n in rcols:
            c = s["tools"].get(n)
            r = c.get("project_over_tool") if c else None
            cells.append(f"{r:.2f}" if r is not None else "")
        out.append(f"| {SHORT.get(s['kind'], s['title'])} | {s['home']} | " + " | ".join(cells) + " |")
    out.append("")
    ver = [s for s in doc["scenarios"] if s["kind"] == "version"]
    if ver:
        out.append("### Start-up (`--version`)")
        out.append("")
        out.append("| tool | median | min–max | runs |")
        out.append("|---|---|---|---|")
        for n in ORDER:
            c = ver[0]["tools"].get(n)
            if c:
                out.append(f"| {c['label']} | {fmt_time(c.get('median_s'))} | {fmt_time(c.get('min_s'))}–"
                           f"{fmt_time(c.get('max_s'))} | {c.get('runs')} |" if "error" not in c else
                           f"| {c['label']} | error | | |")
        out.append("")
    ph = [s for s in doc["scenarios"] if s["kind"] == "phase"]
    if ph:
        out.append("### Phase checkpoint with package captures (issue 21)")
        out.append("")
        out.append("| home | captures off | captures, cache empty | captures, unchanged system | faked managers |")
        out.append("|---|---|---|---|---|")
        for s in ph:
            cells = [md_cell(s["tools"].get(n)) for n in ("phase-off", "phase-cold", "phase-warm")]
            fk = ", ".join(s.get("meta", {}).get("faked_managers", [])) or "none"
            out.append(f"| {s['home']} | " + " | ".join(cells) + f" | {fk} |")
        out.append("")
    mem = [s for s in scenario_order(doc) if s["kind"] in MEM_KINDS]
    if mem:
        out.append("### Peak memory (Maximum resident set size, `/usr/bin/time -v`)")
        out.append("")
        mcols = [n for n in ORDER if any(n in s["tools"] for s in mem)]
        out.append("| scenario | home | " + " | ".join(mem[0]["tools"].get(n, {}).get("label", n) for n in mcols) + " |")
        out.append("|---|---|" + "---|" * len(mcols))
        for s in mem:
            cells = []
            for n in mcols:
                c = s["tools"].get(n)
                cells.append("" if not c else "error" if "error" in c else fmt_bytes(c.get("peak_rss_kb", 0) * 1024))
            out.append(f"| {SHORT.get(s['kind'], s['title'])} | {s['home']} | " + " | ".join(cells) + " |")
        out.append("")
    scal = [s for s in scenario_order(doc) if is_scaling(doc, s)]
    if scal:
        out.append("### Scaling (median)")
        out.append("")
        scols = [n for n in ORDER if any(n in s["tools"] for s in scal)]
        out.append("| scenario | files | " + " | ".join(scal[0]["tools"].get(n, {}).get("label", n) for n in scols) + " |")
        out.append("|---|---|" + "---|" * len(scols))
        for s in scal:
            out.append(f"| {SHORT.get(s['kind'], s['title'])} | {s['home']} | " + " | ".join(md_cell(s["tools"].get(n)) for n in scols) + " |")
        out.append("")
    out.append("### Targets (issue 8)")
    out.append("")
    out.append("| target | goal | measured | |")
    out.append("|---|---|---|---|")
    for t in doc["targets"]:
        mark = {True: "met", False: "**not met**", None: "n/a"}[t["met"]]
        out.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {mark} |")
    out.append("")
    errs = []
    for s in doc["scenarios"]:
        for c in s["tools"].values():
            if "error" in c:
                errs.append(f"- {s['id']} / {c['label']}: `{c['error'][:300]}`")
    if errs:
        out.append("Errors:")
        out.append("")
        out.extend(errs)
        out.append("")
    if doc.get("notes"):
        out.append("Notes:")
        out.append("")
        out.extend(f"- {n}" for n in doc["notes"])
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark the project against restic, borg, rsync, tar and physical floors (issue 8).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Presets: " + ", ".join(f"{k} ({v.describe()})" for k, v in PRESETS.items())
        + "\n\nExit status: 0 when every required cell ran (the project's checkpoint scenarios and every peer),"
          "\n1 otherwise; never depends on timing. See docs/performance.md.",
    )
    p.add_argument("--quick", action="store_true", help="tiny home, 1 rep, no scaling: CI smoke test (< 1 min)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per scenario (default 5; --quick: 1)")
    p.add_argument("--homes", default="small,large", help="comma-separated presets (default small,large)")
    p.add_argument("--files", type=int, help="custom home: number of regular files (replaces --homes)")
    p.add_argument("--bytes", type=int, help="custom home: total bytes")
    p.add_argument("--big", help="custom home: comma-separated sizes of big files (part of --bytes)")
    p.add_argument("--scaling", action="store_true", help="also no-change / 1%%-change at 2k and 20k files")
    p.add_argument("--scaling-full", action="store_true", help="--scaling plus 200k files (~2 GB)")
    p.add_argument("--tools", help="only these tools (comma-separated; the project always runs): "
                   + ",".join(c.name for c in TOOL_CLASSES))
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"generator seed (default {DEFAULT_SEED})")
    p.add_argument("--version-runs", type=int, default=None, help="spawns per rep for --version (default 20)")
    p.add_argument("--timeout", type=float, default=900, help="seconds before one command is killed (default 900)")
    p.add_argument("--out", default=None, help="output directory (default target/bench; --quick: target/bench/quick)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing peers")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    p.add_argument("--allow-missing", action="store_true",
                   help="exit 0 even when a required cell failed (while the engine is landing)")
    p.add_argument("--strict", action="store_true", help="also require the project's restore and rollback cells")
    p.add_argument("--keep", action="store_true", help="keep homes and repositories under target/bench")
    p.add_argument("--only", default=None, metavar="LIST",
                   help="only these issue-21 scenarios: phase (phase checkpoint with package captures), "
                        "margins (rollback of the small home; first/no-change at 20k vs tar and the stat "
                        "walk), margins200k (no-change, peak memory and backup-list --files memory at 200k)")
    p.add_argument("--wait-load", type=float, default=None, metavar="L",
                   help="before each phase wait until the 1-minute load average is below L")
    p.add_argument("--wait-max", type=float, default=600, metavar="S",
                   help="longest wait for --wait-load, seconds (default 600)")
    a = p.parse_args(argv)
    if a.reps is None:
        a.reps = 1 if a.quick else 5
    if a.version_runs is None:
        a.version_runs = 5 if a.quick else 20
    if a.reps < 1 or a.version_runs < 1:
        p.error("--reps and --version-runs must be at least 1")
    if a.only and set(a.only.split(",")) - {"phase", "margins", "margins200k"}:
        p.error("--only takes phase, margins and/or margins200k")
    if a.quick and (a.scaling or a.scaling_full):
        p.error("--quick does not combine with --scaling")
    if a.out is None:
        tdir = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
        # --quick (run by scripts/test) gets its own directory so it cannot wipe a full run in progress.
        a.out = str((tdir if tdir.is_absolute() else ROOT / tdir) / "bench" / ("quick" if a.quick else ""))
    return a


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    bench = Bench(args)
    try:
        return bench.main()
    except KeyboardInterrupt:
        print("interrupted: partial results in " + str(bench.out / "results.json"), file=sys.stderr)
        try:
            bench.save()
        except Exception:
            pass
        return 130


if __name__ == "__main__":
    sys.exit(main())
