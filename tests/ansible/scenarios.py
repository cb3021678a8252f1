#!/usr/bin/env python3
"""Real ansible-playbook runs against localhost, each with a throwaway HOME.

Assertions read the JSON recap written by callback_plugins/json_recap.py (host stats,
set_stats data, failure and debug messages) and the tools' own JSON, never loose text.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATHS = '{"backup_checkpoint_paths": ["~/.zshrc", "~/.config"]}'
ORIGINAL_ZSHRC = b"# the user's own zshrc\nalias gs='git status'\n"


class Home:
    def __init__(self, bins):
        self.dir = tempfile.mkdtemp(prefix="dfb-ansible-")
        self.home = os.path.join(self.dir, "home")
        os.makedirs(os.path.join(self.home, ".config"))
        with open(os.path.join(self.home, ".zshrc"), "wb") as f:
            f.write(ORIGINAL_ZSHRC)
        self.bins = bins
        self.repo = os.path.join(self.home, ".dotfiles-backups")
        self.runs = 0

    def play(self, playbook, *extra, env=None, check=False):
        self.runs += 1
        recap = os.path.join(self.dir, f"recap{self.runs}.json")
        e = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
        e.update({"HOME": self.home, "JSON_RECAP_FILE": recap})
        e.update(env or {})
        cmd = ["ansible-playbook", "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={sys.executable}",
               "-e", f"backup_checkpoint_install_src={self.bins}",
               "-e", PATHS, os.path.join(ROOT, "playbooks", playbook), *extra]
        if check:
            cmd.append("--check")
        p = subprocess.run(cmd, env=e, capture_output=True, text=True, cwd=ROOT)
        with open(os.path.join(self.dir, f"log{self.runs}.txt"), "w") as f:
            f.write(p.stdout + p.stderr)
        with open(recap) as f:
            data = json.load(f)
        data["rc"] = p.returncode
        data["log"] = p.stdout[-3000:] + p.stderr[-2000:]
        return data

    def tool(self, name, *args):
        exe = os.path.join(self.home, ".local/bin", name)
        if not os.path.exists(exe):
            exe = os.path.join(self.bins, name)
        p = subprocess.run([exe, *args, "--json"], capture_output=True, text=True,
                           env={"HOME": self.home, "PATH": os.environ["PATH"]})
        return p.returncode, json.loads(p.stdout)

    def read(self, rel):
        with open(os.path.join(self.home, rel), "rb") as f:
            return f.read()

    def tree_digest(self, path):
        h = hashlib.sha256()
        for dirpath, dirs, files in sorted(os.walk(path)):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(dirpath, name)
                if "/logs/" in full:
                    continue  # the run log records even read-only runs' envelopes
                h.update(full.encode())
                with open(full, "rb") as f:
                    h.update(f.read())
        return h.hexdigest()

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def stats(r):
    return r["hosts"]["localhost"]


def report(r):
    return {c["phase"]: c for c in r["custom"].get("backup_checkpoint_report", [])}


def expect(cond, what, r=None):
    if not cond:
        raise AssertionError(what + ("\n--- log tail ---\n" + r["log"] if r else ""))


PHASES = ["pre-ansible", "pre-homebrew", "pre-dotfiles", "pre-applications", "post-setup", "bootstrap-complete"]


def scenario_bootstrap_then_idempotent(h):
    r = h.play("bootstrap.yml")
    expect(r["rc"] == 0 and stats(r)["failures"] == 0, "bootstrap must succeed", r)
    rep = report(r)
    expect(list(rep) == PHASES, f"one report entry per phase: {list(rep)}", r)
    expect(rep["pre-ansible"]["status"] == "skipped" and rep["pre-ansible"]["reason"] == "tool not installed",
           "pre-ansible skips: the tool is installed after it", r)
    expect(any("backup tool not yet installed, skipping pre-ansible checkpoint" in m for m in r["messages"]),
           "the skip message is shown", r)
    for phase in PHASES[1:]:
        expect(rep[phase]["status"] in ("created", "unchanged") and rep[phase]["snapshot"], f"{phase} checkpointed", r)
    rc, v = h.tool("backup-verify", "--read-data")
    expect(rc == 0 and v["status"] == "success", f"repository verifies clean: {v}")
    rc, lst = h.tool("backup-list")
    labels = {s["label"] for s in lst["snapshots"]}
    expect(set(PHASES[1:]) <= labels, f"every phase is in the repository: {labels}")
    r2 = h.play("bootstrap.yml")
    expect(r2["rc"] == 0 and stats(r2)["changed"] == 0, f"second run reports changed=0: {stats(r2)}", r2)
    expect(all(c["status"] == "unchanged" for c in report(r2).values()), f"all unchanged: {report(r2)}", r2)


def scenario_tool_absent(h):
    r = h.play("bootstrap.yml", "-e", "backup_checkpoint_install=false")
    expect(r["rc"] != 0 and stats(r)["failures"] == 1, "a required phase fails without the tool", r)
    expect(any("backup tool not yet installed, skipping pre-ansible checkpoint" in m for m in r["messages"]),
           "the optional phase skipped with the message", r)
    msg = r["failures"][0]["msg"]
    expect("pre-homebrew" in msg and "install" in msg, f"the failure names the phase and how to install: {msg}", r)
    expect(not os.path.exists(h.repo), "nothing was written")


def scenario_disabled(h):
    for label, env, extra in [("BACKUP_DISABLED", {"BACKUP_DISABLED": "true"}, []),
                              ("role flag", {}, ["-e", "backup_checkpoint_enabled=false"])]:
        r = h.play("bootstrap.yml", *extra, env=env)
        expect(r["rc"] == 0 and stats(r)["failures"] == 0, f"{label}: play succeeds", r)
        rep = report(r)
        expect(all(c["status"] == "skipped" and c["reason"] == "disabled" for c in rep.values()),
               f"{label}: every checkpoint skipped as disabled: {rep}", r)
        expect(not os.path.exists(h.repo), f"{label}: no repository created")


def scenario_rollback_and_undo(h):
    r = h.play("bootstrap.yml")
    expect(r["rc"] == 0, "bootstrap", r)
    broken = h.read(".zshrc")
    expect(broken != ORIGINAL_ZSHRC, "the dotfiles phase replaced ~/.zshrc")
    r = h.play("rollback.yml", "-e", "phase=pre-dotfiles")
    expect(r["rc"] == 0 and stats(r)["changed"] >= 1, "rollback applies", r)
    expect(any(".zshrc" in m for m in r["messages"]), "the plan listing names ~/.zshrc", r)
    expect(h.read(".zshrc") == ORIGINAL_ZSHRC, "~/.zshrc is back byte for byte")
    r = h.play("rollback.yml", "-e", "undo=true")
    expect(r["rc"] == 0, "undo applies", r)
    expect(h.read(".zshrc") == broken, "undo brings the bootstrap's version back")
    r = h.play("rollback.yml", "-e", "phase=pre-dotfiles", "-e", "dry_run=true")
    expect(r["rc"] == 0 and stats(r)["changed"] == 0 and h.read(".zshrc") == broken, "a dry run changes nothing", r)


def scenario_check_mode_writes_nothing(h):
    r = h.play("bootstrap.yml")
    expect(r["rc"] == 0, "bootstrap", r)
    with open(os.path.join(h.home, ".zshrc"), "wb") as f:
        f.write(b"edited by hand after the bootstrap\n")
    before_repo = h.tree_digest(h.repo)
    before_home = h.tree_digest(os.path.join(h.home, ".config"))
    r = h.play("bootstrap.yml", check=True)
    expect(r["rc"] == 0 and stats(r)["failures"] == 0, "--check run succeeds", r)
    rep = report(r)
    expect(rep["pre-dotfiles"]["status"] == "dry-run", f"checkpoints ran with --dry-run: {rep}", r)
    expect(h.tree_digest(h.repo) == before_repo, "--check wrote nothing to the repository")
    expect(h.tree_digest(os.path.join(h.home, ".config")) == before_home, "--check wrote nothing to the home")
    expect(h.read(".zshrc") == b"edited by hand after the bootstrap\n", "--check left ~/.zshrc alone")


def scenario_health_check(h):
    r = h.play("bootstrap.yml")
    expect(r["rc"] == 0, "bootstrap", r)
    r = h.play("health-check.yml")
    expect(r["rc"] == 0 and stats(r)["failures"] == 0, "health check passes on a good repository", r)
    packs = os.path.join(h.repo, "packs")
    victim = os.path.join(packs, sorted(os.listdir(packs))[0])
    with open(victim, "r+b") as f:
        f.seek(8)
        b = f.read(1)
        f.seek(8)
        f.write(bytes([b[0] ^ 1]))
    r = h.play("health-check.yml")
    expect(r["rc"] != 0 and stats(r)["failures"] == 1, "health check fails on a corrupted repository", r)
    msg = r["failures"][0]["msg"]
    expect("verify" in msg and "problem" in msg, f"the failure names the cause: {msg}", r)


SCENARIOS = [
    scenario_bootstrap_then_idempotent,
    scenario_tool_absent,
    scenario_disabled,
    scenario_rollback_and_undo,
    scenario_check_mode_writes_nothing,
    scenario_health_check,
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    a = ap.parse_args()
    bins = os.path.abspath(a.bin_dir)
    passed = failed = 0
    for sc in SCENARIOS:
        h = Home(bins)
        try:
            sc(h)
            passed += 1
            print(f"PASS {sc.__name__}")
            h.cleanup()
        except Exception:  # noqa: BLE001 - report every scenario
            failed += 1
            print(f"FAIL {sc.__name__} (files kept in {h.dir})")
            traceback.print_exc()
    print(f"ansible: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
