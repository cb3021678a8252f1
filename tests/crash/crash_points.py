#!/usr/bin/env python3
"""Crash at every mutating system call, then prove nothing committed was lost.

For each operation (checkpoint, rollback) this counts the mutating syscalls the
real binary makes (strace -c), then re-runs it once per call site with
`strace -e inject=SYSCALL:signal=KILL:when=N`, i.e. the process is killed right
before that call. After every kill:

  * `backup-verify --read-data` passes (leftover temp files and unreferenced
    packs are warnings, not problems);
  * the snapshot committed before the run is listed and restores byte for byte;
  * the interrupted snapshot is absent or whole (restores to exactly the new state);
  * for rollback, every tracked file in the home holds either its old or its new
    content, never anything else; a rerun succeeds and `--undo` still works;
  * the repository accepts the next run (it is usable).

Usage: crash_points.py --bin-dir target/debug [--json out.json]
Exit status 1 when any point fails. Needs strace (installed by .ci/run).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SYSCALLS = [
    "write", "pwrite64", "fsync", "fdatasync", "rename", "renameat", "renameat2",
    "unlink", "unlinkat", "mkdir", "mkdirat", "ftruncate", "fchmod", "fchmodat",
    "symlinkat", "utimensat", "fchown",
]


EXTRA_ENV = {}


def run(bins, args, home, repo, strace=None, check=False):
    env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "BACKUP_REPO": repo, **EXTRA_ENV}
    cmd = [os.path.join(bins, args[0])] + args[1:]
    if strace:
        cmd = ["strace", "-f", "-qq", "-o", "/dev/null"] + strace + cmd
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def envelope(p):
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


def tree_state(root):
    """path -> ('file', bytes, mode) | ('dir', mode) | ('link', target)"""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                out[rel] = ("dir", st.st_mode & 0o7777)
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", f.read(), st.st_mode & 0o7777)
    return out


def count_calls(bins, args, home, repo):
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as tmp:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "BACKUP_REPO": repo, **EXTRA_ENV}
        subprocess.run(["strace", "-f", "-qq", "-c", "-o", tmp.name, "-e", "trace=" + ",".join(SYSCALLS),
                        os.path.join(bins, args[0])] + args[1:], env=env, capture_output=True)
        text = tmp.read()
    counts = {}
    for line in text.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) in SYSCALLS:
            counts[m.group(2)] = int(m.group(1))
    return counts


def make_home(home):
    os.makedirs(os.path.join(home, ".config/app/sub"), exist_ok=True)
    for i in range(6):
        with open(os.path.join(home, f".config/app/f{i}"), "wb") as f:
            f.write(f"original {i}\n".encode() * (i + 1))
    with open(os.path.join(home, ".zshrc"), "wb") as f:
        f.write(b"export A=1\n")
    os.symlink("f1", os.path.join(home, ".config/app/link"))
    os.makedirs(os.path.join(home, ".config/empty"), exist_ok=True)


def damage(home):
    with open(os.path.join(home, ".zshrc"), "wb") as f:
        f.write(b"broken\n")
    os.remove(os.path.join(home, ".config/app/f2"))
    with open(os.path.join(home, ".config/app/f3"), "wb") as f:
        f.write(b"changed three\n")
    with open(os.path.join(home, ".config/app/new"), "wb") as f:
        f.write(b"new file\n")
    os.chmod(os.path.join(home, ".config/app/f4"), 0o600)


PATHS = ["--path", "~/.zshrc", "--path", "~/.config"]


def check_repo(bins, home, repo, must_have, problems, where):
    p = run(bins, ["backup-verify", "--read-data", "--json"], home, repo)
    env = envelope(p)
    if p.returncode != 0:
        problems.append(f"{where}: verify exit {p.returncode}: {env and env.get('errors')}")
        return None
    p = run(bins, ["backup-list", "--json"], home, repo)
    env = envelope(p)
    labels = [s["label"] for s in (env or {}).get("snapshots", [])]
    for label in must_have:
        if label not in labels:
            problems.append(f"{where}: committed snapshot {label} lost (have {labels})")
    return labels


def restore_equals(bins, home, repo, label, expected, problems, where):
    target = tempfile.mkdtemp(prefix="crash-restore-")
    try:
        p = run(bins, ["backup-restore", label, "--target", target, "--json"], home, repo)
        if p.returncode != 0:
            problems.append(f"{where}: restore {label} exit {p.returncode}: {p.stdout[-400:]}")
            return
        got = tree_state(target)
        if got != expected:
            diff = sorted(set(got.items()) ^ set(expected.items()))[:4]
            problems.append(f"{where}: restored {label} differs: {diff}")
    finally:
        shutil.rmtree(target, ignore_errors=True)


def tracked_state(home):
    st = tree_state(home)
    return {k: v for k, v in st.items() if k == ".zshrc" or k == ".config" or k.startswith(".config/")}


def crash_checkpoint(bins, work, results, quick):
    base_dir = os.path.join(work, "cp")
    home, repo = os.path.join(base_dir, "home"), os.path.join(base_dir, "repo")
    make_home(home)
    run(bins, ["backup-checkpoint", "manual", "base", "-q"] + PATHS, home, repo, check=True)
    base_state = tracked_state(home)
    damage(home)
    new_state = tracked_state(home)
    template = os.path.join(work, "cp-template")
    shutil.copytree(base_dir, template, symlinks=True)
    args = ["backup-checkpoint", "manual", "next", "-q"] + PATHS
    counts = count_calls(bins, args, home, repo)
    shutil.rmtree(base_dir)
    points = [(sc, i) for sc, n in sorted(counts.items()) for i in range(1, n + 1)]
    failures = []
    for sc, i in points:
        shutil.rmtree(base_dir, ignore_errors=True)
        shutil.copytree(template, base_dir, symlinks=True)
        where = f"checkpoint kill before {sc}#{i}"
        run(bins, args, home, repo, strace=["-e", f"trace={sc}", "-e", f"inject={sc}:signal=KILL:when={i}"])
        problems = []
        labels = check_repo(bins, home, repo, ["base"], problems, where)
        # Restores must be compared against the home as it was at each snapshot (the
        # home is under the template's copy, so paths map 1:1).
        def mapped(state):
            return {(".zshrc" if k == ".zshrc" else k): v for k, v in state.items()}
        if labels is not None:
            restore_equals(bins, home, repo, "base", mapped(base_state), problems, where)
            if "next" in labels:
                restore_equals(bins, home, repo, "next", mapped(new_state), problems, where)
        p = run(bins, args, home, repo)
        if p.returncode != 0:
            problems.append(f"{where}: the next run failed with {p.returncode}: {p.stderr[-300:]}")
        failures.extend(problems)
    shutil.rmtree(template, ignore_errors=True)
    results.append({"operation": "checkpoint", "points": len(points), "failures": len(failures), "details": failures[:20]})


def crash_rollback(bins, work, results, quick):
    base_dir = os.path.join(work, "rb")
    home, repo = os.path.join(base_dir, "home"), os.path.join(base_dir, "repo")
    make_home(home)
    run(bins, ["backup-checkpoint", "manual", "base", "-q"] + PATHS, home, repo, check=True)
    base_state = tracked_state(home)
    damage(home)
    damaged_state = tracked_state(home)
    template = os.path.join(work, "rb-template")
    shutil.copytree(base_dir, template, symlinks=True)
    args = ["backup-rollback", "base", "-q"]
    counts = count_calls(bins, args, home, repo)
    points = [(sc, i) for sc, n in sorted(counts.items()) for i in range(1, n + 1)]
    failures = []
    for sc, i in points:
        shutil.rmtree(base_dir, ignore_errors=True)
        shutil.copytree(template, base_dir, symlinks=True)
        where = f"rollback kill before {sc}#{i}"
        run(bins, args, home, repo, strace=["-e", f"trace={sc}", "-e", f"inject={sc}:signal=KILL:when={i}"])
        problems = []
        check_repo(bins, home, repo, ["base"], problems, where)
        now = tracked_state(home)
        for path, val in now.items():
            if os.path.basename(path).startswith(".dfb-tmp"):
                continue  # an invisible temp name; the rerun below must clean it
            if val[0] == "file" and val != base_state.get(path) and val != damaged_state.get(path):
                problems.append(f"{where}: {path} holds neither its old nor its new content")
        for path in set(base_state) | set(damaged_state):
            if path not in now and path in base_state and path in damaged_state and base_state[path][0] == "file":
                problems.append(f"{where}: {path} vanished (it exists before and after)")
        p = run(bins, ["backup-rollback", "base", "--json"], home, repo)
        if p.returncode != 0:
            problems.append(f"{where}: rerun of rollback failed {p.returncode}: {p.stdout[-300:]}")
        elif tracked_state(home) != base_state:
            left = sorted(set(tracked_state(home)) ^ set(base_state))[:4]
            problems.append(f"{where}: rerun of rollback did not reach the checkpoint state: {left}")
        p = run(bins, ["backup-rollback", "--undo", "--json"], home, repo)
        if p.returncode != 0:
            problems.append(f"{where}: --undo failed {p.returncode}: {p.stdout[-300:]}")
        failures.extend(problems)
    shutil.rmtree(template, ignore_errors=True)
    results.append({"operation": "rollback", "points": len(points), "failures": len(failures), "details": failures[:20]})


def crash_prune(bins, work, results, quick):
    base_dir = os.path.join(work, "pr")
    home, repo = os.path.join(base_dir, "home"), os.path.join(base_dir, "repo")
    make_home(home)
    config = os.path.join(work, "prune.toml")
    with open(config, "w") as f:
        f.write("[retention]\nkeep_per_phase = 1\nrepack_garbage_percent = 10\n")
    EXTRA_ENV["BACKUP_CONFIG"] = config
    try:
        for i in range(3):
            with open(os.path.join(home, ".config/app/f0"), "wb") as f:
                f.write(b"generation %d\n" % i * 50)
            run(bins, ["backup-checkpoint", "auto", "pre-dotfiles", "-q"] + PATHS, home, repo, check=True)
        newest_state = tracked_state(home)
        run(bins, ["backup-checkpoint", "manual", "keepme", "-q"] + PATHS, home, repo, check=True)
        template = os.path.join(work, "pr-template")
        shutil.copytree(base_dir, template, symlinks=True)
        args = ["backup-prune", "-q"]
        counts = count_calls(bins, args, home, repo)
        points = [(sc, i) for sc, n in sorted(counts.items()) for i in range(1, n + 1)]
        failures = []
        for sc, i in points:
            shutil.rmtree(base_dir, ignore_errors=True)
            shutil.copytree(template, base_dir, symlinks=True)
            where = f"prune kill before {sc}#{i}"
            run(bins, args, home, repo, strace=["-e", f"trace={sc}", "-e", f"inject={sc}:signal=KILL:when={i}"])
            problems = []
            labels = check_repo(bins, home, repo, ["pre-dotfiles", "keepme"], problems, where)
            if labels is not None:
                restore_equals(bins, home, repo, "pre-dotfiles", newest_state, problems, where)
                restore_equals(bins, home, repo, "keepme", newest_state, problems, where)
            p = run(bins, args + ["--json"], home, repo)
            if p.returncode != 0:
                problems.append(f"{where}: rerun of prune failed {p.returncode}: {p.stdout[-300:]}")
            check_repo(bins, home, repo, ["pre-dotfiles", "keepme"], problems, where + " (after rerun)")
            failures.extend(problems)
        shutil.rmtree(template, ignore_errors=True)
        results.append({"operation": "prune", "points": len(points), "failures": len(failures), "details": failures[:20]})
    finally:
        EXTRA_ENV.pop("BACKUP_CONFIG", None)


def crash_sync(bins, work, results, quick):
    """Kill `backup-create --sync-external` before every mutating call: the
    external copy must verify whenever it exists, never list a snapshot the
    local repository lacks, and a rerun must complete it (issue 7)."""
    base_dir = os.path.join(work, "sy")
    home, repo, ext = (os.path.join(base_dir, d) for d in ("home", "repo", "ext"))
    make_home(home)
    run(bins, ["backup-checkpoint", "manual", "first", "-q"] + PATHS, home, repo, check=True)
    damage(home)
    run(bins, ["backup-checkpoint", "manual", "second", "-q"] + PATHS, home, repo, check=True)
    second_state = tracked_state(home)
    os.makedirs(ext)
    EXTRA_ENV.update({"BACKUP_EXTERNAL": "drive=" + ext, "BACKUP_RETRIES": "1"})
    try:
        template = os.path.join(work, "sy-template")
        shutil.copytree(base_dir, template, symlinks=True)
        args = ["backup-create", "--sync-external", "-q"]
        counts = count_calls(bins, args, home, repo)
        points = [(sc, i) for sc, n in sorted(counts.items()) for i in range(1, n + 1)]
        if quick:
            points = points[::3]
        failures = []
        for sc, i in points:
            shutil.rmtree(base_dir, ignore_errors=True)
            shutil.copytree(template, base_dir, symlinks=True)
            where = f"sync kill before {sc}#{i}"
            run(bins, args, home, repo, strace=["-e", f"trace={sc}", "-e", f"inject={sc}:signal=KILL:when={i}"])
            problems = []
            if os.path.exists(os.path.join(ext, "config.json")):
                labels = check_repo(bins, home, ext, [], problems, where + " (external copy)")
                for label in labels or []:
                    if label not in ("first", "second"):
                        problems.append(f"{where}: the copy lists an unknown snapshot {label}")
            p = run(bins, args + ["--json"], home, repo)
            if p.returncode != 0:
                problems.append(f"{where}: rerun of the sync failed {p.returncode}: {p.stdout[-300:]}")
            check_repo(bins, home, ext, ["first", "second"], problems, where + " (after rerun)")
            restore_equals(bins, home, ext, "second", second_state, problems, where + " (from the copy)")
            failures.extend(problems)
        shutil.rmtree(template, ignore_errors=True)
        results.append({"operation": "sync", "points": len(points), "failures": len(failures), "details": failures[:20]})
    finally:
        for k in ("BACKUP_EXTERNAL", "BACKUP_RETRIES"):
            EXTRA_ENV.pop(k, None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/debug")
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if shutil.which("strace") is None:
        print("crash: strace not found; install it (apt-get install strace)", file=sys.stderr)
        return 2
    bins = os.path.abspath(a.bin_dir)
    results = []
    with tempfile.TemporaryDirectory(prefix="dfb-crash-") as work:
        crash_checkpoint(bins, work, results, a.quick)
        crash_rollback(bins, work, results, a.quick)
        crash_prune(bins, work, results, a.quick)
        crash_sync(bins, work, results, a.quick)
    print(f"{'operation':<12} {'points':>7} {'failures':>9}")
    for r in results:
        print(f"{r['operation']:<12} {r['points']:>7} {r['failures']:>9}")
        for d in r["details"]:
            print("   ", d)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    total = sum(r["points"] for r in results)
    failed = sum(r["failures"] for r in results)
    print(f"crash: {total - min(failed, total)} passed, {failed} failed")
    return 1 if failed or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
