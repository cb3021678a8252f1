#!/usr/bin/env python3
"""Make a write *fail* and carry on: no failed run may poison a later one (issue 16).

The crash group kills the process; here the process lives on and sees an error.
For each operation (checkpoint, rollback, prune) this counts the calls the real
binary makes to write, pwrite64, fsync, fdatasync, rename*, mkdir* and openat
(strace -c), then re-runs it with `strace -e inject=SYSCALL:error=ERRNO:when=N`
for ERRNO in ENOSPC, EIO and EACCES. After every failed (or partly failed) run:

  * `backup-verify --read-data` passes;
  * every snapshot that existed before still restores byte for byte, and one the
    faulted run reported as committed restores to the state it recorded;
  * a normal `backup-checkpoint` then succeeds, and a full restore of it equals
    the home (the case of issue 16 finding 1: a failed run's index poisoned the
    next run's deduplication, so the next snapshot did not restore).

The short form samples --points call numbers per (syscall, errno), spread so the
three errnos hit different calls (first and last included); --full tries every one.

Usage: faults.py --bin-dir target/debug [--full] [--points N] [--json out.json]
Exit status 1 when any case fails. Needs strace (installed by .ci/run).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crash"))
import crash_points as cp  # noqa: E402  (shared helpers: run, tree_state, make_home, ...)

SYSCALLS = ["write", "pwrite64", "fsync", "fdatasync", "rename", "renameat", "renameat2",
            "mkdir", "mkdirat", "openat"]
ERRNOS = ["ENOSPC", "EIO", "EACCES"]


def sample(n, k, j):
    """Up to k call numbers in 1..n for the j-th errno: the errnos share 3k evenly
    spaced numbers (first and last included), so together they cover 3k calls."""
    slots = k * len(ERRNOS)
    if n <= slots:
        return [i for i in range(1, n + 1) if (i - 1) % len(ERRNOS) == j] or [n]
    return sorted({1 + round(s * (n - 1) / (slots - 1)) for s in range(j, slots, len(ERRNOS))})


def counts_for(bins, args, home, repo):
    saved = cp.SYSCALLS
    cp.SYSCALLS = SYSCALLS
    try:
        return cp.count_calls(bins, args, home, repo)
    finally:
        cp.SYSCALLS = saved


def labels_of(bins, home, repo):
    env = cp.envelope(cp.run(bins, ["backup-list", "--json"], home, repo))
    return [s["label"] for s in (env or {}).get("snapshots", [])]


def after_checks(bins, home, repo, must_restore, problems, where):
    """verify; earlier snapshots restore; a normal checkpoint restores to the home."""
    cp.check_repo(bins, home, repo, list(must_restore), problems, where)
    for label, state in must_restore.items():
        cp.restore_equals(bins, home, repo, label, state, problems, where)
    p = cp.run(bins, ["backup-checkpoint", "manual", "after", "--json"] + cp.PATHS, home, repo)
    if p.returncode != 0:
        problems.append(f"{where}: the next checkpoint failed {p.returncode}: {p.stdout[-300:]}")
        return
    cp.restore_equals(bins, home, repo, "after", cp.tracked_state(home), problems, where + " (next checkpoint)")


def scenario(bins, work, name, setup, args, check, full, points):
    """Build the state with `setup`, then fault each sampled call of `args`."""
    base_dir = os.path.join(work, name)
    home, repo = os.path.join(base_dir, "home"), os.path.join(base_dir, "repo")
    ctx = setup(bins, home, repo)
    template = os.path.join(work, name + "-template")
    shutil.copytree(base_dir, template, symlinks=True)
    counts = counts_for(bins, args, home, repo)
    cases = [(sc, errno, i) for sc, n in sorted(counts.items()) for j, errno in enumerate(ERRNOS)
             for i in (range(1, n + 1) if full else sample(n, points, j))]
    failures = []
    for sc, errno, i in cases:
        shutil.rmtree(base_dir, ignore_errors=True)
        shutil.copytree(template, base_dir, symlinks=True)
        where = f"{name} {errno} at {sc}#{i}"
        p = cp.run(bins, args + ["--json"], home, repo,
                   strace=["-e", f"trace={sc}", "-e", f"inject={sc}:error={errno}:when={i}"])
        problems = []
        check(bins, home, repo, ctx, p, problems, where)
        failures.extend(problems)
    shutil.rmtree(template, ignore_errors=True)
    return {"operation": name, "points": len(cases), "failures": len(failures),
            "details": failures[:20], "calls": counts}


def setup_checkpoint(bins, home, repo):
    cp.make_home(home)
    cp.run(bins, ["backup-checkpoint", "manual", "base", "-q"] + cp.PATHS, home, repo, check=True)
    base = cp.tracked_state(home)
    cp.damage(home)
    return {"base": base, "next": cp.tracked_state(home)}


def check_checkpoint(bins, home, repo, ctx, p, problems, where):
    must = {"base": ctx["base"]}
    env = cp.envelope(p)
    if p.returncode == 0 and env and env.get("snapshot"):
        must["next"] = ctx["next"]  # reported committed: must restore exactly
    elif p.returncode == 3 and env and env.get("snapshot"):
        # Partial (a home path could not be read, and is named): what it
        # stored must restore, each file with the content it had.
        restore_subset(bins, home, repo, "next", ctx["next"], problems, where)
    after_checks(bins, home, repo, must, problems, where)


def restore_subset(bins, home, repo, label, expected, problems, where):
    target = tempfile.mkdtemp(prefix="faults-restore-")
    try:
        p = cp.run(bins, ["backup-restore", label, "--target", target, "--json"], home, repo)
        if p.returncode != 0:
            problems.append(f"{where}: restore of partial {label} exit {p.returncode}: {p.stdout[-400:]}")
            return
        for path, val in cp.tree_state(target).items():
            if val[0] == "file" and val[:2] != expected.get(path, (None, None))[:2]:
                problems.append(f"{where}: partial {label} restored {path} with other content")
    finally:
        shutil.rmtree(target, ignore_errors=True)


def setup_rollback(bins, home, repo):
    ctx = setup_checkpoint(bins, home, repo)
    return ctx


def check_rollback(bins, home, repo, ctx, p, problems, where):
    after_checks(bins, home, repo, {"base": ctx["base"]}, problems, where)
    p = cp.run(bins, ["backup-rollback", "base", "--json"], home, repo)
    if p.returncode != 0:
        problems.append(f"{where}: rerun of rollback failed {p.returncode}: {p.stdout[-300:]}")
    elif cp.tracked_state(home) != ctx["base"]:
        problems.append(f"{where}: rerun of rollback did not reach the checkpoint state")


def setup_prune(bins, home, repo):
    cp.make_home(home)
    config = os.path.join(os.path.dirname(home), "prune.toml")
    with open(config, "w") as f:
        f.write("[retention]\nkeep_per_phase = 1\nrepack_garbage_percent = 10\n")
    cp.EXTRA_ENV["BACKUP_CONFIG"] = config
    for i in range(3):
        with open(os.path.join(home, ".config/app/f0"), "wb") as f:
            f.write(b"generation %d\n" % i * 50)
        cp.run(bins, ["backup-checkpoint", "auto", "pre-dotfiles", "-q"] + cp.PATHS, home, repo, check=True)
    state = cp.tracked_state(home)
    cp.run(bins, ["backup-checkpoint", "manual", "keepme", "-q"] + cp.PATHS, home, repo, check=True)
    return {"state": state}


def check_prune(bins, home, repo, ctx, p, problems, where):
    after_checks(bins, home, repo, {"pre-dotfiles": ctx["state"], "keepme": ctx["state"]}, problems, where)
    p = cp.run(bins, ["backup-prune", "--json"], home, repo)
    if p.returncode != 0:
        problems.append(f"{where}: rerun of prune failed {p.returncode}: {p.stdout[-300:]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/debug")
    ap.add_argument("--json")
    ap.add_argument("--full", action="store_true", help="every call number, not a sample")
    ap.add_argument("--points", type=int, default=2, help="call numbers per (syscall, errno) in the short form")
    a = ap.parse_args()
    if shutil.which("strace") is None:
        if os.environ.get("CI") == "true":
            print("faults: strace not found; install it (apt-get install strace)", file=sys.stderr)
            return 2
        print("SKIP (strace not installed)")
        return 0
    bins = os.path.abspath(a.bin_dir)
    results = []
    with tempfile.TemporaryDirectory(prefix="dfb-faults-") as work:
        results.append(scenario(bins, work, "checkpoint", setup_checkpoint,
                                ["backup-checkpoint", "manual", "next"] + cp.PATHS,
                                check_checkpoint, a.full, a.points))
        results.append(scenario(bins, work, "rollback", setup_rollback,
                                ["backup-rollback", "base"], check_rollback, a.full, a.points))
        try:
            results.append(scenario(bins, work, "prune", setup_prune, ["backup-prune"],
                                    check_prune, a.full, a.points))
        finally:
            cp.EXTRA_ENV.pop("BACKUP_CONFIG", None)
    print(f"{'operation':<12} {'cases':>6} {'failures':>9}  calls")
    for r in results:
        print(f"{r['operation']:<12} {r['points']:>6} {r['failures']:>9}  {r['calls']}")
        for d in r["details"]:
            print("   ", d)
    total = sum(r["points"] for r in results)
    failed = sum(r["failures"] for r in results)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cases": total, "failures": failed,
                       "details": [d for r in results for d in r["details"]][:20],
                       "by_operation": {r["operation"]: r["points"] for r in results}}, f, indent=2)
    print(f"faults: {total - min(failed, total)} passed, {failed} failed")
    return 1 if failed or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
