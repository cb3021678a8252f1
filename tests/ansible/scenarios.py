#!/usr/bin/env python3
"""Real ansible-playbook runs against localhost, each scenario in its own throwaway HOME
(the repository, ~/.local/bin and the dotfiles all live under it).

Assertions read the JSON recap written by callback_plugins/json_recap.py (host stats,
set_stats data, task results, retries, failure and debug messages) and the tools' own JSON
envelopes, never loose text of the normal output. Scenarios run in parallel
(ANSIBLE_TIER_JOBS, default 3); a failing scenario keeps its directory and prints its logs.
"""
import argparse
import concurrent.futures
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATHS = '{"backup_checkpoint_paths": ["~/.zshrc", "~/.config"]}'
ORIGINAL_ZSHRC = b"# the user's own zshrc\nalias gs='git status'\n"
PHASES = ["pre-ansible", "pre-homebrew", "pre-dotfiles", "pre-applications", "post-setup", "bootstrap-complete"]
SKIP_MSG = "backup tool not yet installed, skipping {} checkpoint"
DISABLED_MSG = "backup checkpoints are disabled, skipping {} checkpoint"
TOOLS = ["backup-checkpoint", "backup-create", "backup-list", "backup-verify", "backup-restore",
         "backup-rollback", "backup-prune"]


# The release directory scripts/release made for this host (tests/ansible/run, --release-dir).
RELEASE_DIR = None


def host_triple():
    import platform
    return {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[platform.machine()] + "-unknown-linux-musl"


def cargo_version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        return re.search(r'(?m)^version = "([^"]+)"', f.read()).group(1)


class Failure(AssertionError):
    pass


class Home:
    """A throwaway HOME with a user's ~/.zshrc and ~/.config, and helpers to run playbooks."""

    def __init__(self, bins, name):
        self.dir = tempfile.mkdtemp(prefix=f"dfb-ansible-{name}-")
        self.home = os.path.join(self.dir, "home")
        os.makedirs(os.path.join(self.home, ".config"))
        with open(os.path.join(self.home, ".zshrc"), "wb") as f:
            f.write(ORIGINAL_ZSHRC)
        with open(os.path.join(self.home, ".config", "git.conf"), "wb") as f:
            f.write(b"[user]\n\tname = Test\n")
        self.bins = bins
        self.repo = os.path.join(self.home, ".dotfiles-backups")
        self.runs = 0
        self.last_log = ""

    def play(self, playbook, *extra, env=None, check=False, paths=True, on_line=None):
        """Run a playbook (playbooks/NAME or a path under ROOT); return the JSON recap."""
        self.runs += 1
        recap = os.path.join(self.dir, f"recap{self.runs}.json")
        e = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
        e.update({"HOME": self.home, "JSON_RECAP_FILE": recap,
                  # Ansible's own state stays outside the home, so "writes nothing" is exact.
                  "ANSIBLE_HOME": os.path.join(self.dir, "ansible-home"),
                  "ANSIBLE_LOCAL_TEMP": os.path.join(self.dir, "ansible-tmp"),
                  "ANSIBLE_REMOTE_TEMP": os.path.join(self.dir, "ansible-tmp")})
        e.update(env or {})
        book = playbook if "/" in playbook else os.path.join("playbooks", playbook)
        cmd = ["ansible-playbook", "-i", "localhost,", "-c", "local",
               "-e", f"ansible_python_interpreter={sys.executable}",
               "-e", f"backup_checkpoint_install_src={self.bins}"]
        if paths:
            cmd += ["-e", PATHS]
        cmd += [os.path.join(ROOT, book), *extra]
        if check:
            cmd.append("--check")
        log = os.path.join(self.dir, f"log{self.runs}.txt")
        self.last_log = log
        with open(log, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            p = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
            for line in p.stdout:
                f.write(line)
                if on_line:
                    on_line(line)
            p.wait()
        try:
            with open(recap) as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {"hosts": {}, "custom": {}, "per_host": {}, "tasks": [], "retries": [], "failures": [], "messages": []}
        data["rc"] = p.returncode
        data["log"] = log
        return data

    def tool(self, name, *args, env=None):
        exe = os.path.join(self.home, ".local/bin", name)
        if not os.path.exists(exe):
            exe = os.path.join(self.bins, name)
        e = {"HOME": self.home, "PATH": os.environ["PATH"]}
        e.update(env or {})
        p = subprocess.run([exe, *args, "--json"], capture_output=True, text=True, env=e)
        return p.returncode, json.loads(p.stdout)

    def path(self, rel):
        return os.path.join(self.home, rel)

    def read(self, rel):
        with open(self.path(rel), "rb") as f:
            return f.read()

    def write(self, rel, data):
        with open(self.path(rel), "wb") as f:
            f.write(data)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def tree(path):
    """Every entry under path: relative name -> (type, mode, content digest or link target)."""
    out = {}
    if not os.path.lexists(path):
        return out
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest())
    return out


def stats(r):
    return r["hosts"].get("localhost", {})


def custom(r, host="localhost"):
    """The set_stats data the role exported for one host (per_host)."""
    return r.get("per_host", {}).get(host, {})


def report(r, host="localhost"):
    """The set_stats report of one host: phase -> entry, in the order the phases ran."""
    return {c["phase"]: c for c in custom(r, host).get("backup_checkpoint_report", [])}


def expect(cond, what, r=None):
    if not cond:
        raise Failure(what + (f"\n    (ansible log: {r['log']})" if r else ""))


def ran(r, prefix):
    """Tasks whose name starts with prefix and that actually ran (not skipped)."""
    return [t for t in r["tasks"] if t["task"].startswith(prefix) and t["status"] != "skipped"]


def succeeded(r, what):
    expect(r["rc"] == 0 and stats(r).get("failures") == 0 and not r["failures"],
           f"{what}: the play must succeed (rc={r['rc']}, stats={stats(r)}, failures={r['failures']})", r)


def is_hex(s, n):
    return isinstance(s, str) and re.fullmatch(f"[0-9a-f]{{{n}}}", s) is not None


# ----------------------------------------------------------------------------- scenarios

def scenario_bootstrap_then_idempotent(h):
    """bootstrap.yml: a checkpoint per phase, in the report; verify clean; second run changed=0."""
    r = h.play("bootstrap.yml")
    succeeded(r, "bootstrap")
    rep = report(r)
    expect(list(rep) == PHASES, f"one report entry per phase, in order: {list(rep)}", r)
    pre = rep["pre-ansible"]
    expect(pre["status"] == "skipped" and pre["reason"] == "not installed"
           and pre["message"] == SKIP_MSG.format("pre-ansible"),
           f"pre-ansible runs before the install and skips with the message: {pre}", r)
    rc, lst = h.tool("backup-list")
    by_id = {s["id"]: s for s in lst["snapshots"]}
    for phase in PHASES[1:]:
        c = rep[phase]
        # Nothing runs between post-setup and bootstrap-complete: that one stores nothing new.
        want = "unchanged" if phase == "bootstrap-complete" else "created"
        expect(c["status"] == want and is_hex(c["snapshot_id"], 64) and c["snapshot"] == c["snapshot_id"][:8],
               f"{phase} checkpoint {want} with an id: {c}", r)
        expect(c["files"] >= 1 and c["bytes"] > 0 and c["degradation"] == "full" and c["errors"] == [],
               f"{phase} sizes and degradation reported: {c}", r)
        expect(c["snapshot_id"] in by_id and by_id[c["snapshot_id"]]["label"] == phase,
               f"{phase}: the reported snapshot is in backup-list with its label", r)
    expect(rep["pre-homebrew"]["snapshot_id"] != rep["pre-dotfiles"]["snapshot_id"],
           "the phases between checkpoints changed something, so the snapshots differ", r)
    rc, v = h.tool("backup-verify", "--read-data")
    expect(rc == 0 and v["status"] == "success" and v["problems"] == [] and v["errors"] == [],
           f"backup-verify --read-data is clean: rc={rc} {v.get('problems')} {v.get('errors')}")
    expect(all(os.access(h.path(f".local/bin/{t}"), os.X_OK) for t in TOOLS), "every tool installed, executable")

    report_file = os.path.join(h.dir, "report.json")
    r2 = h.play("bootstrap.yml", "-e", f"backup_checkpoint_report_file={report_file}")
    succeeded(r2, "second bootstrap")
    with open(report_file) as f:
        expect(json.load(f) == {"checkpoints": custom(r2)["backup_checkpoint_report"]},
               "backup_checkpoint_report_file holds the same report as set_stats", r2)
    changed = [t["task"] for t in r2["tasks"] if t["changed"]]
    expect(stats(r2)["changed"] == 0, f"the second run reports changed=0: {stats(r2)}; changed tasks: {changed}", r2)
    rep2 = report(r2)
    expect(list(rep2) == PHASES and all(c["status"] == "unchanged" and c["snapshot"] for c in rep2.values()),
           f"every checkpoint (pre-ansible too, the tool is installed now) is unchanged: "
           f"{ {p: c['status'] for p, c in rep2.items()} }", r2)


def scenario_tool_absent(h):
    """No binary, install disabled: pre-ansible skips with the message, pre-homebrew fails with the hint."""
    r = h.play("bootstrap.yml", "-e", "backup_checkpoint_install=false")
    expect(r["rc"] == 2 and stats(r)["failures"] == 1, f"a required phase fails the play: rc={r['rc']} {stats(r)}", r)
    rep = report(r)
    expect(list(rep) == ["pre-ansible", "pre-homebrew"], f"the play stops at the first required phase: {list(rep)}", r)
    expect(rep["pre-ansible"]["status"] == "skipped" and rep["pre-ansible"]["message"] == SKIP_MSG.format("pre-ansible"),
           f"the optional phase skipped with the message: {rep['pre-ansible']}", r)
    hb = rep["pre-homebrew"]
    expect(hb["status"] == "failed" and hb["reason"] == "not installed"
           and "scripts/install" in hb["message"] and "backup_checkpoint_install" in hb["message"],
           f"the required phase fails saying how to install: {hb}", r)
    expect(r["failures"] == [{"task": "Stop because this checkpoint failed - pre-homebrew", "msg": hb["message"], "rc": None}],
           f"the play fails on that task with that message: {r['failures']}", r)
    expect(not os.path.exists(h.repo) and not os.path.exists(h.path(".local/bin")), "nothing was written")

    # Every phase optional: the bootstrap goes on without checkpoints (the seed's level 3).
    r = h.play("bootstrap.yml", "-e", "backup_checkpoint_install=false",
               "-e", json.dumps({"backup_checkpoint_optional_phases": PHASES}))
    succeeded(r, "all phases optional")
    rep = report(r)
    expect(list(rep) == PHASES and all(c["status"] == "skipped" and c["message"] == SKIP_MSG.format(p)
                                       for p, c in rep.items()),
           f"every phase skipped with the message: {rep}", r)

    # The shell helper prints the same messages and has the same exit semantics.
    env = {"HOME": h.home, "PATH": "/usr/bin:/bin"}
    helper = os.path.join(ROOT, "scripts", "checkpoint-or-skip")
    p = subprocess.run(["sh", helper, "pre-ansible"], env=env, capture_output=True, text=True)
    expect(p.returncode == 0 and p.stdout.strip() == SKIP_MSG.format("pre-ansible"),
           f"checkpoint-or-skip pre-ansible: exit {p.returncode}, {p.stdout!r}")
    p = subprocess.run(["sh", helper, "pre-homebrew"], env=env, capture_output=True, text=True)
    first = hb["message"].split(". ")[0]
    expect(p.returncode == 1 and p.stderr.startswith(first) and "scripts/install" in p.stderr,
           f"checkpoint-or-skip pre-homebrew: exit {p.returncode}, {p.stderr!r}; the role says {first!r}")

    # Install off, the tools on PATH only (cargo install, Homebrew): found there. A fake brew
    # on PATH shows whether package lists are captured: off with backup_checkpoint_packages=false,
    # the tool's default (on for phases) when unset.
    fake = os.path.join(h.dir, "fakebin")
    os.makedirs(fake)
    marker = os.path.join(h.dir, "brew-ran")
    with open(os.path.join(fake, "brew"), "w") as f:
        f.write(f"#!/bin/sh\ntouch '{marker}'\necho 'git 2.43.0'\n")
    os.chmod(os.path.join(fake, "brew"), 0o755)
    path = f"{fake}:{h.bins}:{os.environ['PATH']}"
    book = "tests/ansible/playbooks/role-main.yml"
    r = h.play(book, "-e", "backup_checkpoint_install=false", "-e", "backup_checkpoint_phase=pre-homebrew",
               "-e", "backup_checkpoint_packages=false", env={"PATH": path})
    succeeded(r, "tools on PATH, packages off")
    expect(report(r)["pre-homebrew"]["status"] == "created" and not os.path.exists(h.path(".local/bin")),
           f"the checkpoint used the tool on PATH: {report(r)}", r)
    expect(not os.path.exists(marker), "backup_checkpoint_packages=false: no package manager ran", r)
    r = h.play(book, "-e", "backup_checkpoint_install=false", "-e", "backup_checkpoint_phase=pre-dotfiles",
               env={"PATH": path})
    succeeded(r, "tools on PATH, packages default")
    expect(os.path.exists(marker), "unset: the tool's default captures package lists at phases", r)
    # A list limits the captures to those managers (BACKUP_PACKAGES=apt): brew does not run.
    os.remove(marker)
    r = h.play(book, "-e", "backup_checkpoint_install=false", "-e", "backup_checkpoint_phase=pre-ansible",
               "-e", '{"backup_checkpoint_packages": ["apt"]}', env={"PATH": path})
    succeeded(r, "tools on PATH, packages limited to apt")
    expect(not os.path.exists(marker), "backup_checkpoint_packages=[apt]: brew did not run", r)


def _disabled(h, label, env, extra):
    r = h.play("bootstrap.yml", *extra, env=env)
    succeeded(r, label)
    rep = report(r)
    expect(list(rep) == PHASES and all(c["status"] == "skipped" and c["reason"] == "disabled"
                                       and c["message"] == DISABLED_MSG.format(p) for p, c in rep.items()),
           f"{label}: every checkpoint skipped as disabled, with the message: {rep}", r)
    expect(ran(r, "Run backup-checkpoint") == [] and ran(r, "Look for the checkpoint tool") == [],
           f"{label}: no checkpoint task ran: {ran(r, 'Run backup-checkpoint')}", r)
    expect(not os.path.exists(h.repo), f"{label}: no repository created")


def scenario_disabled_by_env(h):
    """BACKUP_DISABLED=true: every checkpoint task skipped with a message, the play succeeds."""
    _disabled(h, "BACKUP_DISABLED=true", {"BACKUP_DISABLED": "true"}, [])
    # The shell helper says the same and exits 0, even with the tool installed.
    p = subprocess.run(["sh", os.path.join(ROOT, "scripts", "checkpoint-or-skip"), "pre-dotfiles"],
                       env={"HOME": h.home, "PATH": "/usr/bin:/bin", "BACKUP_DISABLED": "true",
                            "BACKUP_BIN_DIR": h.bins}, capture_output=True, text=True)
    expect(p.returncode == 0 and p.stdout.strip() == DISABLED_MSG.format("pre-dotfiles"),
           f"checkpoint-or-skip with BACKUP_DISABLED: exit {p.returncode}, {p.stdout!r}")
    expect(not os.path.exists(h.repo), "the helper wrote nothing")


def scenario_disabled_by_role_flag(h):
    """backup_checkpoint_enabled=false: the same; then seed 003's names (role `backup`,
    checkpoint_phase, backup_enabled) work as aliases."""
    _disabled(h, "backup_checkpoint_enabled=false", {}, ["-e", "backup_checkpoint_enabled=false"])
    seed = "tests/ansible/playbooks/seed-003.yml"
    r = h.play(seed, "-e", "backup_enabled=false")
    succeeded(r, "seed 003 disabled")
    expect({p: c["reason"] for p, c in report(r).items()} == {"pre-ansible": "disabled", "post-setup": "disabled"},
           f"backup_enabled=false skips both: {report(r)}", r)
    expect(not os.path.exists(h.repo) and not os.path.exists(h.path(".local/bin")), "nothing installed or written", r)
    r = h.play(seed)
    succeeded(r, "seed 003")
    rep = report(r)
    expect(rep["pre-ansible"]["message"] == SKIP_MSG.format("pre-ansible") and rep["post-setup"]["status"] == "created",
           f"role backup: pre-ansible skips before the install, post-setup is created: {rep}", r)


def scenario_degradation_levels(h):
    """Local-only (backup_checkpoint_local_only: warn, continue); disabled by the tool's own config (skipped)."""
    os.makedirs(h.path("cfg"))
    with open(h.path("cfg/disabled.toml"), "w") as f:
        f.write("[general]\ndisabled = true\n")
    book = "tests/ansible/playbooks/role-main.yml"
    r = h.play(book, "-e", "backup_checkpoint_phase=pre-dotfiles", "-e", "backup_checkpoint_local_only=true")
    succeeded(r, "local-only")
    c = report(r)["pre-dotfiles"]
    expect(c["status"] == "created" and c["degradation"] == "local-only", f"local-only: stored, degraded: {c}", r)
    notes = [n for m in r["messages"] for n in (m if isinstance(m, list) else [m])]
    expect(any(isinstance(n, str) and n.startswith("WARNING pre-dotfiles checkpoint stored locally only") for n in notes),
           "local-only: a warning is shown", r)
    r = h.play(book, "-e", "backup_checkpoint_phase=pre-applications",
               "-e", f"backup_checkpoint_config={h.path('cfg/disabled.toml')}")
    succeeded(r, "disabled by the tool's config")
    c = report(r)["pre-applications"]
    expect(c["status"] == "skipped" and c["reason"] == "disabled" and c["snapshot"] is None,
           f"the tool answered skipped (disabled): {c}", r)
    expect(len(ran(r, "Run backup-checkpoint")) == 1, "the tool did run and said so", r)


def scenario_rollback_and_undo(h):
    """A phase breaks ~/.zshrc; rollback.yml (plan, then apply) restores it byte for byte; undo works."""
    r = h.play("bootstrap.yml")
    succeeded(r, "bootstrap")
    pre_dotfiles = report(r)["pre-dotfiles"]["snapshot_id"]
    broken = h.read(".zshrc")
    expect(broken != ORIGINAL_ZSHRC, "the dotfiles phase replaced ~/.zshrc")

    r = h.play("rollback.yml", "-e", "phase=pre-dotfiles", "-e", "dry_run=true")
    succeeded(r, "rollback dry run")
    rb = custom(r)["backup_checkpoint_rollback"]
    expect(stats(r)["changed"] == 0 and rb["applied"] is False and h.read(".zshrc") == broken,
           f"a dry run changes nothing: {stats(r)} {rb}", r)
    expect({"action": "update", "path": "~/.zshrc"} in [{k: a[k] for k in ("action", "path")} for a in rb["actions"]],
           f"the plan updates ~/.zshrc: {rb['actions']}", r)
    r = h.play("rollback.yml", "-e", "phase=pre-dotfiles", check=True)
    succeeded(r, "rollback --check")
    expect(custom(r)["backup_checkpoint_rollback"]["applied"] is False and h.read(".zshrc") == broken,
           "--check only plans", r)

    r = h.play("rollback.yml", "-e", "phase=pre-dotfiles")
    succeeded(r, "rollback")
    rb = custom(r)["backup_checkpoint_rollback"]
    expect(stats(r)["changed"] >= 1 and rb["applied"] is True and is_hex(rb["safety_snapshot"], 8),
           f"rollback applied with a safety snapshot: {stats(r)} {rb}", r)
    expect(rb["source"]["id"] == pre_dotfiles and rb["source"]["label"] == "pre-dotfiles",
           f"it rolled back to the bootstrap's pre-dotfiles checkpoint: {rb['source']}", r)
    order = [t["task"] for t in r["tasks"] if t["status"] != "skipped"]
    expect(order.index("Plan the rollback") < order.index("Apply the rollback (a safety snapshot is committed first)"),
           f"the plan runs before the apply: {order}", r)
    expect(h.read(".zshrc") == ORIGINAL_ZSHRC, "~/.zshrc is back byte for byte")
    expect(not os.path.exists(h.path(".config/app.json")) and os.path.exists(h.path(".config/packages.txt")),
           "a file created after the checkpoint is removed (it is in the safety snapshot); one from before stays")

    r = h.play("rollback.yml", "-e", "phase=pre-dotfiles")
    succeeded(r, "second rollback")
    expect(stats(r)["changed"] == 0 and custom(r)["backup_checkpoint_rollback"]["actions"] == [],
           f"rolling back again changes nothing: {stats(r)}", r)

    r = h.play("rollback.yml", "-e", "undo=true")
    succeeded(r, "undo")
    expect(custom(r)["backup_checkpoint_rollback"]["applied"] is True, "undo applied", r)
    expect(h.read(".zshrc") == broken, "undo brings the bootstrap's ~/.zshrc back byte for byte")
    expect(os.path.exists(h.path(".config/app.json")), "undo brings the later files back")

    r = h.play("rollback.yml", "-e", "phase=no-such-checkpoint")
    # The rollback module refuses in its planning step (it used to be a separate fail task).
    expect(r["rc"] != 0 and len(r["failures"]) == 1 and r["failures"][0]["task"] == "Plan the rollback"
           and "no-such-checkpoint" in r["failures"][0]["msg"],
           f"an unknown checkpoint fails naming it: {r['failures']}", r)


def scenario_rerun_then_rollback_restores_good(h):
    """Issue 18 through the role: a bootstrap whose dotfiles phase writes a bad ~/.zshrc runs
    twice (the second recap changed=0, every checkpoint unchanged), then rollback.yml -e
    phase=pre-dotfiles restores the user's own ~/.zshrc (the first run's pre-dotfiles: the
    re-run changed nothing); the role's per-phase report, the tool's completion report and
    backup-list --phases agree on every phase's snapshot, status, run and rollback hint."""
    r1 = h.play("bootstrap.yml")
    succeeded(r1, "first bootstrap")
    bad = h.read(".zshrc")
    expect(bad != ORIGINAL_ZSHRC, "the dotfiles phase wrote a bad ~/.zshrc", r1)
    r2 = h.play("bootstrap.yml")
    succeeded(r2, "second bootstrap")
    checkpoints = [t for t in r2["tasks"] if t["task"].startswith("Run backup-checkpoint")]
    expect(len(checkpoints) == len(PHASES) and not any(t["changed"] for t in checkpoints)
           and stats(r2)["changed"] == 0,
           f"the second recap says changed=0, for the checkpoints too: {stats(r2)}", r2)
    rc, ph = h.tool("backup-list", "--phases")
    expect(rc == 0 and len(ph["runs"]) == 2, f"two bootstrap runs listed: {ph.get('runs')}")
    for r, run in ((r1, ph["runs"][1]), (r2, ph["runs"][0])):
        rep = report(r)
        listed = {p["phase"]: p for p in run["phases"]}
        # The tool's completion report, as the role prints it (after the role's own lines).
        lines = [m for m in r["messages"] if isinstance(m, str) and "bytes added; roll back with:" in m]
        completion = {m.split(":", 1)[0]: m for m in lines}
        taken = [p for p in PHASES if rep[p]["snapshot_id"]]
        expect(sorted(listed) == sorted(taken) and sorted(completion) == sorted(taken),
               f"the same phases everywhere: role {taken}, list {sorted(listed)}, completion {sorted(completion)}", r)
        for i, p in enumerate(taken):
            c, lst = rep[p], listed[p]
            expect(c["snapshot_id"] == lst["id"] and c["run_id"] == run["run"],
                   f"{p}: role and backup-list --phases name the same snapshot and run: {c} / {lst}", r)
            expect(c["rollback"] == f"backup-rollback {c['snapshot']}"
                   and completion[p] == f"{p}: {c['status']} - snapshot {c['snapshot']}, {c['files']} files, "
                   f"{c['new_bytes']} bytes added; roll back with: backup-rollback {c['snapshot']}",
                   f"{p}: the role's line and the completion report agree (status, snapshot, hint): "
                   f"{c['status']} {c['rollback']} / {completion[p]}", r)
            if i + 1 < len(taken):
                nxt = rep[taken[i + 1]]
                expect(bool(lst["state_changed"]) == (nxt["status"] == "created"),
                       f"{p}: backup-list --phases says the phase changed the state exactly when the next "
                       f"checkpoint stored a new one: {lst} / {nxt['phase']} {nxt['status']}", r)
        skipped = [p for p in PHASES if not rep[p]["snapshot_id"]]
        expect(all(rep[p]["rollback"] is None for p in skipped), f"no rollback hint for skipped phases {skipped}", r)
    expect(all(c["status"] == "unchanged" for c in report(r2).values()), "every re-run checkpoint unchanged", r2)

    r = h.play("rollback.yml", "-e", "phase=pre-dotfiles")
    succeeded(r, "rollback after the re-run")
    rb = custom(r)["backup_checkpoint_rollback"]
    expect(rb["applied"] is True and rb["source"]["id"] == report(r1)["pre-dotfiles"]["snapshot_id"],
           f"pre-dotfiles resolves to the run in which the dotfiles phase changed something: {rb['source']}", r)
    expect(h.read(".zshrc") == ORIGINAL_ZSHRC, "~/.zshrc is good again, byte for byte")


def scenario_check_mode_writes_nothing(h):
    """--check on a fresh machine and after a bootstrap: nothing is written anywhere."""
    before = tree(h.home)
    r = h.play("bootstrap.yml", check=True)
    succeeded(r, "--check on a fresh machine")
    expect(tree(h.home) == before, "--check on a fresh machine wrote nothing (no tools, no repository)", r)
    rep = report(r)
    expect(list(rep) == PHASES and all(c["status"] == "skipped" and c["reason"] == "not installed" for c in rep.values()),
           f"without the tool every checkpoint skips in check mode: {rep}", r)

    r = h.play("bootstrap.yml")
    succeeded(r, "bootstrap")
    h.write(".zshrc", b"edited by hand after the bootstrap\n")
    before = tree(h.home)
    r = h.play("bootstrap.yml", check=True)
    succeeded(r, "--check after a bootstrap")
    rep = report(r)
    expect(list(rep) == PHASES and all(c["status"] == "dry-run" for c in rep.values()),
           f"every checkpoint ran with --dry-run: { {p: c['status'] for p, c in rep.items()} }", r)
    expect(rep["pre-ansible"]["reason"] == "would store new data" and rep["pre-ansible"]["snapshot"],
           f"the dry run says the edited ~/.zshrc would be stored: {rep['pre-ansible']}", r)
    expect(stats(r)["changed"] >= 1, "check mode reports what would change", r)
    after = tree(h.home)
    diff = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    expect(diff == [], f"--check wrote nothing (repository and home identical): {diff}", r)


def scenario_health_check(h):
    """health-check.yml passes on a good repository, fails naming the cause on a corrupted one."""
    r = h.play("bootstrap.yml")
    succeeded(r, "bootstrap")
    r = h.play("health-check.yml", "-e", "read_data=true")
    succeeded(r, "health check on a good repository")
    hc = custom(r)["backup_checkpoint_health"]
    expect(hc["health"] == "green" and hc["red"] == [] and hc["checks"] and hc["verify"]["status"] == "success",
           f"all green: {hc}", r)

    packs = os.path.join(h.repo, "packs")
    victim = os.path.join(packs, sorted(os.listdir(packs))[0])
    with open(victim, "r+b") as f:
        size = os.path.getsize(victim)
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0x55]))

    r = h.play("health-check.yml")
    expect(r["rc"] != 0 and stats(r)["failures"] == 1, f"the health check fails on a corrupted repository: {stats(r)}", r)
    hc = custom(r)["backup_checkpoint_health"]
    red = [c["name"] for c in hc["red"]]
    expect(hc["health"] == "red" and "verify" in red, f"the red check names the damage: {hc['red']}", r)
    msg = r["failures"][0]["msg"]
    expect(all(f"{c['name']}: {c['message']}" in msg for c in hc["red"]),
           f"the failure message lists every red check: {msg}", r)

    r = h.play("health-check.yml", "-e", "read_data=true")
    expect(r["rc"] != 0, "with read_data the health check fails too", r)
    v = custom(r)["backup_checkpoint_health"]["verify"]
    expect(v["status"] == "failed" and v["exit_code"] == 6 and v["problems"]
           and all(p["code"].startswith("corrupt") for p in v["problems"])
           and any(os.path.basename(victim) in p.get("object", "") for p in v["problems"]),
           f"backup-verify --read-data names the damaged pack: {v}", r)
    expect(any(os.path.basename(victim)[:8] in m for m in r["failures"][0]["msg"].split("; ")),
           f"and the failure message names it too: {r['failures'][0]['msg']}", r)


def scenario_schedule(h):
    """backup_checkpoint_schedule: daily installs the systemd user units (once: the second
    run is changed=false, byte-identical), an unquoted YAML off (false) removes them,
    off again changes nothing, and the default ("") leaves a schedule alone. No user bus here: the play goes on with a warning."""
    book = "tests/ansible/playbooks/role-main.yml"
    units = [h.path(f".config/systemd/user/dotfiles-backup-scheduled.{k}") for k in ("service", "timer")]
    env = {"XDG_CONFIG_HOME": ""}
    task = "Apply backup_checkpoint_schedule="

    def applied(r):
        t = ran(r, task)
        expect(len(t) == 1, f"the schedule task ran once: {[x['task'] for x in r['tasks'] if x['task'].startswith(task)]}", r)
        return t[0]

    r = h.play(book, "-e", "backup_checkpoint_name=s1", "-e", "backup_checkpoint_schedule=daily", env=env)
    succeeded(r, "schedule daily")
    expect(applied(r)["changed"], "installing the schedule is a change", r)
    expect(all(os.path.isfile(u) for u in units), f"both units written: {units}", r)
    with open(units[1]) as f:
        expect("OnCalendar=daily" in f.read(), "the timer is daily", r)
    first = [h.read(u) for u in units]

    r = h.play(book, "-e", "backup_checkpoint_name=s1", "-e", "backup_checkpoint_schedule=daily", env=env)
    succeeded(r, "schedule daily again")
    expect(not applied(r)["changed"], "the second run changes nothing", r)
    expect([h.read(u) for u in units] == first, "byte-identical units", r)

    r = h.play(book, "-e", "backup_checkpoint_name=s1", "-e", '{"backup_checkpoint_schedule": false}', env=env)
    succeeded(r, "schedule off (YAML false)")
    expect(applied(r)["changed"], "removing the schedule is a change", r)
    expect(not any(os.path.exists(u) for u in units), "both units removed", r)

    r = h.play(book, "-e", "backup_checkpoint_name=s1", "-e", "backup_checkpoint_schedule=off", env=env)
    succeeded(r, "schedule off again")
    expect(not applied(r)["changed"], "off twice changes nothing", r)

    # The default ("") leaves a schedule installed by hand alone.
    r = h.play(book, "-e", "backup_checkpoint_name=s1", "-e", "backup_checkpoint_schedule=hourly", env=env)
    succeeded(r, "schedule hourly")
    r = h.play(book, "-e", "backup_checkpoint_name=s1", env=env)
    succeeded(r, "default schedule setting")
    expect(ran(r, task) == [], "the default does not touch the schedule", r)
    expect(all(os.path.isfile(u) for u in units), "the hourly units are still there", r)

    r = h.play(book, "-e", "backup_checkpoint_name=s1", "-e", "backup_checkpoint_schedule=weekly", env=env)
    expect(r["rc"] != 0 and any("off, daily or hourly" in f["msg"] for f in r["failures"]),
           f"an unknown interval is refused naming the choices: {r['failures']}", r)


def scenario_role_entry_point_and_arguments(h):
    """roles: [backup_checkpoint] installs and checkpoints; argument_specs reject an unknown phase."""
    book = "tests/ansible/playbooks/role-main.yml"
    r = h.play(book, "-e", "backup_checkpoint_phase=pre-nonsense")
    expect(r["rc"] != 0 and len(r["failures"]) == 1 and "arg spec" in r["failures"][0]["task"]
           and "pre-nonsense" in r["failures"][0]["msg"],
           f"an unknown phase is rejected by argument validation: {r['failures']}", r)
    expect([t for t in r["tasks"] if t["status"] != "skipped" and "arg spec" not in t["task"]] == [],
           "before anything runs", r)
    expect(not os.path.exists(h.path(".local")) and not os.path.exists(h.repo), "nothing was written")

    r = h.play(book, "-e", json.dumps({"backup_checkpoint_retries": "many"}), "-e", "backup_checkpoint_phase=pre-dotfiles")
    expect(r["rc"] != 0 and "arg spec" in r["failures"][0]["task"], "a non-integer retry count is rejected", r)

    r = h.play(book, "-e", "backup_checkpoint_name=x", "-e", f"backup_checkpoint_install_src={h.dir}/no-such-dir")
    expect(r["rc"] != 0 and r["failures"][0]["task"] == "Explain how to get the binaries"
           and "scripts/install" in r["failures"][0]["msg"], f"install without binaries says how: {r['failures']}", r)

    r = h.play(book, "-e", "backup_checkpoint_name=before-nvim-change")
    succeeded(r, "manual checkpoint through main")
    c = report(r)["before-nvim-change"]
    expect(c["status"] == "created" and c["kind"] == "manual" and is_hex(c["snapshot_id"], 64), f"manual checkpoint: {c}", r)
    rc, lst = h.tool("backup-list")
    expect(any(s["id"] == c["snapshot_id"] and s["label"] == "before-nvim-change" for s in lst["snapshots"]),
           "the manual checkpoint is in the repository")

    r = h.play(book, "-e", "backup_checkpoint_name=-bad")
    expect(r["rc"] != 0, "an unsafe manual name fails", r)
    c = report(r)["-bad"]
    expect(c["status"] == "failed" and c["exit_code"] == 2 and [e["code"] for e in c["errors"]] == ["unsafe_name"]
           and r["failures"][-1]["msg"] == c["message"],
           f"the tool's refusal is reported from its envelope: {c} {r['failures']}", r)


def scenario_lock_busy_is_retried(h):
    """Another writer holds the lock: the role retries (the tool's --wait does the waiting)."""
    book = "tests/ansible/playbooks/role-main.yml"
    r = h.play(book, "-e", "backup_checkpoint_name=first")
    succeeded(r, "first checkpoint")
    h.write(".zshrc", b"changed while locked\n")
    lock = open(os.path.join(h.repo, "lock"), "r+")
    fcntl.flock(lock, fcntl.LOCK_EX)

    def release_on_retry(line):
        # Synchronisation only (the assertions below read the JSON recap): let the writer
        # in once Ansible has seen the first lock-busy attempt.
        if "RETRYING" in line and not lock.closed:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    try:
        r = h.play(book, "-e", "backup_checkpoint_name=second", "-e", "backup_checkpoint_install=false",
                   "-e", "backup_checkpoint_lock_wait=1", "-e", "backup_checkpoint_retries=10",
                   "-e", "backup_checkpoint_retry_delay=1", on_line=release_on_retry)
    finally:
        if not lock.closed:
            lock.close()
    succeeded(r, "checkpoint after the lock is released")
    expect(len(r["retries"]) >= 1 and all(x["rc"] == 4 for x in r["retries"]),
           f"the lock-busy run (exit 4) was retried: {r['retries']}", r)
    c = report(r)["second"]
    expect(c["status"] == "created" and c["exit_code"] == 0, f"and then succeeded: {c}", r)

    # Retries exhausted: the failure is the tool's lock_busy error, marked retryable.
    lock = open(os.path.join(h.repo, "lock"), "r+")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        r = h.play(book, "-e", "backup_checkpoint_name=third", "-e", "backup_checkpoint_install=false",
                   "-e", "backup_checkpoint_lock_wait=1", "-e", "backup_checkpoint_retries=1",
                   "-e", "backup_checkpoint_retry_delay=1")
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    expect(r["rc"] != 0 and len(r["retries"]) == 1, f"retries exhausted: the play fails: {r['retries']}", r)
    c = report(r)["third"]
    expect(c["status"] == "failed" and c["exit_code"] == 4
           and [(e["code"], e["retryable"]) for e in c["errors"]] == [("lock_busy", True)],
           f"the report carries the tool's lock_busy error: {c}", r)


def _outside_play(h, text, inventory, *extra, cfg_lines=()):
    """Run a playbook written outside the repository with its own ansible.cfg (so nothing of the
    checkout is found by accident); return the JSON recap."""
    h.runs += 1
    book = os.path.join(h.dir, f"play{h.runs}.yml")
    with open(book, "w") as f:
        f.write(text)
    inv = os.path.join(h.dir, f"inventory{h.runs}.ini")
    with open(inv, "w") as f:
        f.write(inventory)
    cfg = os.path.join(h.dir, "ansible.cfg")
    with open(cfg, "w") as f:
        f.write("[defaults]\nretry_files_enabled = false\nshow_custom_stats = true\n" + "".join(cfg_lines))
    recap = os.path.join(h.dir, f"recap{h.runs}.json")
    e = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    e.update({"HOME": h.home, "JSON_RECAP_FILE": recap, "ANSIBLE_CONFIG": cfg,
              "ANSIBLE_HOME": os.path.join(h.dir, "ansible-home"),
              "ANSIBLE_LOCAL_TEMP": os.path.join(h.dir, "ansible-tmp"),
              "ANSIBLE_REMOTE_TEMP": os.path.join(h.dir, "ansible-tmp")})
    cmd = ["ansible-playbook", "-i", inv, "-e", f"ansible_python_interpreter={sys.executable}", book, *extra]
    log = os.path.join(h.dir, f"log{h.runs}.txt")
    h.last_log = log
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.run(cmd, env=e, stdout=f, stderr=subprocess.STDOUT, cwd=h.dir)
    with open(recap) as f:
        data = json.load(f)
    data["rc"] = p.returncode
    data["log"] = log
    return data


def scenario_collection_by_fqcn_three_hosts_and_tags(h):
    """The built collection, installed elsewhere, used by FQCN from a playbook outside the
    repository on three hosts with their own homes, under --tags: three per-host reports."""
    out = os.path.join(h.dir, "dist")
    p = subprocess.run(["ansible-galaxy", "collection", "build", ROOT, "--output-path", out],
                       capture_output=True, text=True, cwd=h.dir,
                       env=dict(os.environ, ANSIBLE_HOME=os.path.join(h.dir, "ansible-home")))
    expect(p.returncode == 0, f"ansible-galaxy collection build: {p.stdout} {p.stderr}")
    tarballs = os.listdir(out)
    expect(tarballs == ["dotfiles_backup-tools-0.1.0.tar.gz"], f"one collection tarball: {tarballs}")
    names = subprocess.run(["tar", "tzf", os.path.join(out, tarballs[0])], capture_output=True, text=True).stdout.split()
    expect("plugins/modules/checkpoint.py" in names and "roles/backup_checkpoint/tasks/checkpoint.yml" in names
           and "LICENSE" in names and "meta/runtime.yml" in names
           and not any(n.startswith(("src/", "target/", "collections/", "fuzz/", "Cargo"))
                       or (n.startswith("tests/") and n != "tests/" and not n.startswith("tests/sanity")) for n in names),
           f"the tarball holds the modules, role, LICENSE and runtime, not the Rust parts: {names}")
    coll = os.path.join(h.dir, "collections")
    # --force: the checkout's own collections/ link (ansible.cfg) would make it "already installed".
    p = subprocess.run(["ansible-galaxy", "collection", "install", "--force", os.path.join(out, tarballs[0]), "-p", coll],
                       capture_output=True, text=True, cwd=h.dir,
                       env=dict(os.environ, ANSIBLE_HOME=os.path.join(h.dir, "ansible-home")))
    expect(p.returncode == 0, f"ansible-galaxy collection install: {p.stdout} {p.stderr}")

    homes = {}
    for n in ("h1", "h2", "h3"):
        d = os.path.join(h.dir, "home-" + n)
        shutil.copytree(h.home, d, symlinks=True)
        homes[n] = d
    inventory = "".join(f"{n} ansible_connection=local host_home={d}\n" for n, d in homes.items())
    play = f"""---
- name: A user's own bootstrap
  hosts: all
  gather_facts: false
  vars:
    backup_checkpoint_home: "{{{{ host_home }}}}"
    backup_checkpoint_bin_dir: {h.bins}
    backup_checkpoint_paths: "~/.zshrc"
  tasks:
    - name: Checkpoint before the dotfiles
      ansible.builtin.include_role:
        name: dotfiles_backup.tools.backup_checkpoint
        tasks_from: checkpoint
      vars:
        backup_checkpoint_phase: pre-dotfiles
      tags: [dotfiles]
    - name: The dotfiles phase
      ansible.builtin.copy:
        content: "managed\\n"
        dest: "{{{{ host_home }}}}/.zshrc"
        mode: "0644"
      tags: [dotfiles]
    - name: A manual checkpoint with the module itself
      dotfiles_backup.tools.checkpoint:
        name: after-dotfiles
        home: "{{{{ host_home }}}}"
        bin_dir: {h.bins}
        paths: ["~/.zshrc"]
      tags: [dotfiles]
    - name: Report
      ansible.builtin.include_role:
        name: dotfiles_backup.tools.backup_checkpoint
        tasks_from: report
      tags: [dotfiles]
"""
    r = _outside_play(h, play, inventory, "--tags", "dotfiles", "--diff", cfg_lines=[f"collections_path = {coll}\n"])
    expect(r["rc"] == 0 and all(s["failures"] == 0 for s in r["hosts"].values()) and sorted(r["hosts"]) == ["h1", "h2", "h3"],
           f"the play succeeds on three hosts: {r['hosts']} {r['failures']}", r)
    ids = set()
    for n, d in homes.items():
        c = report(r, n).get("pre-dotfiles")
        expect(c is not None and c["status"] == "created" and c["home"] == d and c["files"] == 1,
               f"{n}: its own report, a checkpoint of its home, one path (a string is one path): {c}", r)
        expect(re.fullmatch(r"\d{8}T\d{6}Z-[a-z0-9]{6}", c["run_id"] or "") is not None, f"{n}: a run id: {c}", r)
        rc, lst = Home.tool(type("H", (), {"home": d, "bins": h.bins})(), "backup-list")
        labels = [s["label"] for s in lst["snapshots"]]
        expect(sorted(labels) == ["after-dotfiles", "pre-dotfiles"] and c["snapshot_id"] in [s["id"] for s in lst["snapshots"]],
               f"{n}: its repository holds its checkpoints: {labels}", r)
        ids.add(c["snapshot_id"])
    expect(not os.path.exists(h.repo), "the controller's home got no repository", r)
    mods = [t for t in r["tasks"] if t["action"] == "dotfiles_backup.tools.checkpoint" and t["status"] == "changed"]
    expect(len(mods) == 6, f"the module ran by FQCN, changed, for the role and directly on every host: {len(mods)}", r)
    direct = [t["diff"] for t in r["tasks"] if t["task"] == "A manual checkpoint with the module itself"]
    expect(len(direct) == 3 and all(d and "~ ~/.zshrc (content)" in d.get("prepared", "") for d in direct),
           f"--diff: each manual checkpoint shows what changed since the phase's checkpoint: {direct}", r)


def scenario_check_diff_and_idempotent_undo(h):
    """--check --diff shows the rollback's per-path diff and changes nothing; rollback and
    undo re-runs report changed=0."""
    r = h.play("bootstrap.yml")
    succeeded(r, "bootstrap")
    broken = h.read(".zshrc")
    before = tree(h.home)
    r = h.play("rollback.yml", "-e", "phase=pre-dotfiles", "--diff", check=True)
    succeeded(r, "rollback --check --diff")
    expect(tree(h.home) == before, "--check --diff changed nothing (home and repository)", r)
    diffs = [d for t in r["tasks"] if t["task"].startswith("Apply the rollback") for d in (t["diff"] or [])]
    zsh = [d for d in diffs if d.get("before_header") == "~/.zshrc (now)"]
    expect(len(zsh) == 1 and zsh[0]["before"].startswith("file, ") and "update" in zsh[0]["after"],
           f"a per-path diff for ~/.zshrc: {diffs}", r)
    expect(any(d["before_header"] == "~/.config/app.json (now)" and d["after"].startswith("absent") for d in diffs),
           f"and the later file would be removed: {diffs}", r)

    r = h.play("rollback.yml", "-e", "phase=pre-dotfiles")
    succeeded(r, "rollback")
    rb = custom(r)["backup_checkpoint_rollback"]
    expect(h.read(".zshrc") == ORIGINAL_ZSHRC and is_hex(rb["safety_snapshot_id"], 64), f"rolled back: {rb}", r)
    r = h.play("rollback.yml", "-e", "undo=true")
    succeeded(r, "undo")
    expect(stats(r)["changed"] >= 1 and h.read(".zshrc") == broken, f"undo restores the bootstrap's state: {stats(r)}", r)
    r = h.play("rollback.yml", "-e", "undo=true")
    succeeded(r, "second undo")
    expect(stats(r)["changed"] == 0 and h.read(".zshrc") == broken,
           f"undoing again changes nothing (no flip back): {stats(r)}", r)
    expect(custom(r)["backup_checkpoint_rollback"]["undo_of"] == rb["safety_snapshot_id"],
           f"both undos go to the rollback's safety snapshot: {custom(r)['backup_checkpoint_rollback']}", r)

    # A partial rollback (files rewritten, one failed): a fake backup-rollback plans with the
    # real one and answers the apply the way the tool does when one path cannot be written.
    fake = os.path.join(h.dir, "fakebin")
    os.makedirs(fake)
    safety = "ab" * 32
    envelope = json.dumps({"status": "partial", "changed": True, "snapshot": {"id": safety, "short_id": safety[:8]},
                           "warnings": [], "stats": {"restored": 2},
                           "errors": [{"code": "io", "message": "could not write ~/.config/app.json: Permission denied",
                                       "path": "~/.config/app.json", "hint": "fix its permissions and run again",
                                       "retryable": False}]})
    with open(os.path.join(fake, "backup-rollback"), "w") as f:
        f.write("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --dry-run ] && exec '"
                + os.path.join(h.home, ".local/bin/backup-rollback") + "' \"$@\"; done\n"
                + f"echo '{envelope}'\nexit 3\n")
    os.chmod(os.path.join(fake, "backup-rollback"), 0o755)
    r = h.play("rollback.yml", "-e", "phase=pre-dotfiles", "-e", f"backup_checkpoint_bin_dir={fake}")
    fail = r["failures"][0] if r["failures"] else {}
    applied = [t for t in r["tasks"] if t["task"].startswith("Apply the rollback")]
    expect(r["rc"] != 0 and fail.get("task", "") == "Stop because the rollback failed or was only partly applied"
           and "partly applied" in fail["msg"] and safety[:8] in fail["msg"] and "undo" in fail["msg"]
           and "could not write ~/.config/app.json" in fail["msg"] and len(fail["msg"]) < 800,
           f"a partial rollback fails in one readable line with the safety snapshot: {fail}", r)
    expect(applied and applied[0]["changed"] and stats(r)["changed"] >= 1 and stats(r)["failures"] == 1,
           f"and the recap says files were changed: {stats(r)} {applied}", r)
    expect(custom(r)["backup_checkpoint_rollback"]["safety_snapshot_id"] == safety,
           f"the exported rollback names the safety snapshot: {custom(r)['backup_checkpoint_rollback']}", r)


def _release_bins(h):
    """The binaries of the real release tarball for this host, unpacked once per scenario."""
    import tarfile
    out = os.path.join(h.dir, "release-unpacked")
    if not os.path.isdir(out):
        (tgz,) = [n for n in os.listdir(RELEASE_DIR) if n.endswith(f"-{host_triple()}.tar.gz")]
        with tarfile.open(os.path.join(RELEASE_DIR, tgz)) as t:
            t.extractall(out, filter="data")
        (top,) = os.listdir(out)
        out = os.path.join(out, top, "bin")
        os.symlink(out, os.path.join(h.dir, "release-bin"))
    return os.path.join(h.dir, "release-bin")


def _elf_interpreter(path):
    """Whether an ELF64 file asks for a dynamic loader (a PT_INTERP program header)."""
    import struct
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def _artifact(h, name, triple, version=None, checkpoint_bytes=None):
    """A release directory in the ARTIFACT layout, repacked from the real release's
    binaries under another name or with backup-checkpoint replaced (the refusal cases)."""
    import tarfile
    version = version or cargo_version()
    bins = _release_bins(h)
    d = os.path.join(h.dir, name)
    os.makedirs(d, exist_ok=True)
    top = f"dotfiles-backup-{version}-{triple}"
    tgz = os.path.join(d, top + ".tar.gz")
    with tarfile.open(tgz, "w:gz") as t:
        for tool in TOOLS:
            src = os.path.join(bins, tool)
            if tool == "backup-checkpoint" and checkpoint_bytes is not None:
                src = os.path.join(h.dir, "foreign-bin")
                with open(src, "wb") as f:
                    f.write(checkpoint_bytes)
                os.chmod(src, 0o755)
            t.add(src, arcname=f"{top}/bin/{tool}")
        for extra in ("README.md", "LICENSE"):
            t.add(os.path.join(ROOT, extra), arcname=f"{top}/{extra}")
    with open(tgz, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(d, "SHA256SUMS"), "a") as f:
        f.write(f"{digest}  {top}.tar.gz\n")
    return d


def scenario_install_from_artifact_and_on_error(h):
    """Install from the release directory scripts/release made for this host (triple from
    facts, SHA-256 verified) with no cargo on PATH; a tampered tarball, a foreign binary and
    a missing triple fail clearly; on_error=warn goes on; disabled without binaries never
    fails at install."""
    book = "tests/ansible/playbooks/role-main.yml"
    triple = host_triple()
    version = cargo_version()
    good = os.path.join(h.dir, "release")
    shutil.copytree(RELEASE_DIR, good, ignore=shutil.ignore_patterns(".stamp-*"))
    expect(os.listdir(good).count(f"dotfiles-backup-{version}-{triple}.tar.gz") == 1,
           f"scripts/release made the {triple} tarball: {os.listdir(good)}")
    # A machine without Rust: nothing on the play's PATH but the system and Ansible's venv.
    no_cargo = "/usr/bin:/bin:" + os.path.dirname(sys.executable)
    expect(shutil.which("cargo", path=no_cargo) is None, f"cargo is not on {no_cargo}")
    r = h.play(book, "-e", f"backup_checkpoint_install_artifact={good}", "-e", "backup_checkpoint_name=from-artifact",
               "-e", f"backup_checkpoint_install_src={h.dir}/no-build-here", env={"PATH": no_cargo})
    succeeded(r, "install from the artifact")
    expect(report(r)["from-artifact"]["status"] == "created", f"checkpoint with the installed tool: {report(r)}", r)
    for t in TOOLS:
        with open(h.path(f".local/bin/{t}"), "rb") as a, open(os.path.join(_release_bins(h), t), "rb") as b:
            expect(a.read() == b.read(), f"{t} installed from the release tarball")
    p = subprocess.run([h.path(".local/bin/backup-checkpoint"), "--version"], capture_output=True, text=True,
                       env={"PATH": no_cargo})
    expect(p.returncode == 0 and version in p.stdout, f"the installed tool prints the Cargo version: {p.stdout!r}")
    expect(not _elf_interpreter(h.path(".local/bin/backup-list")),
           "a static musl binary (no ELF interpreter), not the host's debug build")

    bad = os.path.join(h.dir, "tampered")
    shutil.copytree(RELEASE_DIR, bad, ignore=shutil.ignore_patterns(".stamp-*"))
    tgz = os.path.join(bad, f"dotfiles-backup-{version}-{triple}.tar.gz")
    with open(tgz, "ab") as f:
        f.write(b"x")
    r = h.play(book, "-e", f"backup_checkpoint_install_artifact={bad}", "-e", "backup_checkpoint_name=x")
    expect(r["rc"] != 0 and "has SHA-256" in r["failures"][0]["msg"] and "expected" in r["failures"][0]["msg"],
           f"a tampered tarball is refused: {r['failures']}", r)

    elsewhere = _artifact(h, "other-os", "aarch64-apple-darwin")
    r = h.play(book, "-e", f"backup_checkpoint_install_artifact={elsewhere}", "-e", "backup_checkpoint_name=x")
    msg = r["failures"][0]["msg"] if r["failures"] else ""
    expect(r["rc"] != 0 and triple in msg and "aarch64-apple-darwin" in msg,
           f"no build for this host: the message names the host triple and what there is: {msg}", r)

    # An aarch64 ELF header labelled as this host's build (a mislabelled artifact).
    foreign = _artifact(h, "foreign", triple, checkpoint_bytes=b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\xb7\x00" + b"\0" * 44)
    os.remove(h.path(".local/bin/backup-checkpoint"))
    r = h.play(book, "-e", f"backup_checkpoint_install_artifact={foreign}", "-e", "backup_checkpoint_name=x")
    msg = r["failures"][0]["msg"] if r["failures"] else ""
    expect(r["rc"] != 0 and r["failures"][0]["task"] == "Refuse a binary built for another OS or CPU"
           and f"host triple {triple}" in msg, f"a foreign binary is refused naming the triples: {r['failures']}", r)

    # backup_checkpoint_on_error=warn: a failed required checkpoint is reported and the play goes on.
    empty = os.path.join(h.dir, "empty-home")
    r = h.play("bootstrap.yml", "-e", "backup_checkpoint_install=false", "-e", f"backup_checkpoint_bin_dir={empty}",
               "-e", "backup_checkpoint_on_error=warn", env={"PATH": "/usr/bin:/bin:" + os.path.dirname(sys.executable)})
    # The foreign binary is still in ~/.local/bin: every checkpoint fails with its message.
    succeeded(r, "on_error=warn")
    rep = report(r)
    expect(list(rep) == PHASES and rep["pre-homebrew"]["status"] == "failed"
           and rep["pre-homebrew"]["errors"][0]["code"] == "foreign_binary",
           f"the failures are in the report: { {p: (c['status'], c['errors']) for p, c in rep.items()} }", r)
    notes = [n for m in r["messages"] for n in (m if isinstance(m, list) else [m])]
    expect(any(isinstance(n, str) and "checkpoint FAILED and the play goes on" in n for n in notes),
           "a loud warning per failed checkpoint", r)

    # Disabled and no binaries anywhere: the install step does not fail (issue 22, point 2).
    r = h.play(book, "-e", "backup_checkpoint_enabled=false", "-e", f"backup_checkpoint_install_src={h.dir}/nothing",
               "-e", "backup_checkpoint_phase=pre-dotfiles")
    succeeded(r, "disabled without binaries")
    expect(report(r)["pre-dotfiles"]["reason"] == "disabled", f"skipped as disabled: {report(r)}", r)


def scenario_become_user(h):
    """backup_checkpoint_user: a play run as root checkpoints a second user's home as that user."""
    if os.geteuid() != 0:
        expect(os.environ.get("CI") != "true", "CI runs as root: the become_user scenario must run there")
        return
    import pwd
    expect(os.path.exists("/usr/bin/python3"), "the become_user scenario needs /usr/bin/python3 for the second user")
    user = "dfbt" + os.path.basename(h.dir)[-6:].lower().replace("_", "x")
    uhome = os.path.join(h.dir, "userhome")
    os.chmod(h.dir, 0o755)
    p = subprocess.run(["useradd", "-M", "-d", uhome, "-s", "/bin/sh", user], capture_output=True, text=True)
    expect(p.returncode == 0, f"useradd: {p.stderr}")
    try:
        shutil.copytree(h.home, uhome, symlinks=True)
        ent = pwd.getpwnam(user)
        subprocess.run(["chown", "-R", f"{ent.pw_uid}:{ent.pw_gid}", uhome], check=True)
        os.chmod(h.bins, 0o755)
        # su: root needs no password for it, and the test machines have no sudo.
        r = h.play("tests/ansible/playbooks/role-main.yml", "-e", f"backup_checkpoint_user={user}",
                   "-e", "ansible_become_method=su",
                   # The venv's interpreter may sit in root's home; the modules need only the stdlib.
                   "-e", "ansible_python_interpreter=/usr/bin/python3",
                   "-e", "backup_checkpoint_phase=pre-dotfiles")
        succeeded(r, "become_user")
        c = report(r)["pre-dotfiles"]
        expect(c["status"] == "created" and c["home"] == uhome and c["user"] == user,
               f"the user's home (from the user database) was checkpointed: {c}", r)
        repo = os.path.join(uhome, ".dotfiles-backups")
        owners = {os.lstat(os.path.join(dp, n)).st_uid for dp, ds, fs in os.walk(repo) for n in ds + fs}
        owners.add(os.lstat(repo).st_uid)
        expect(owners == {ent.pw_uid}, f"the repository belongs to the user: uids {owners}", r)
        expect(all(os.lstat(os.path.join(uhome, ".local/bin", t)).st_uid == ent.pw_uid for t in TOOLS),
               "the installed tools belong to the user", r)
        expect(not os.path.exists(h.repo), "the connecting user's home got nothing", r)

        # The old trap: root pointed at the user's home without become_user. Refused, naming why.
        snaps = sorted(os.listdir(os.path.join(repo, "snapshots")))
        h.write(".zshrc", b"changed\n")
        r = h.play("tests/ansible/playbooks/role-main.yml", "-e", f"backup_checkpoint_home={uhome}",
                   "-e", "backup_checkpoint_install=false", "-e", "backup_checkpoint_name=as-root")
        c = report(r).get("as-root", {})
        expect(r["rc"] != 0 and c.get("reason") == "wrong user" and "refusing to run as root" in c.get("message", "")
               and "backup_checkpoint_user" in c.get("message", ""), f"root on the user's home is refused: {c}", r)
        expect(sorted(os.listdir(os.path.join(repo, "snapshots"))) == snaps, "and nothing was written", r)
    finally:
        subprocess.run(["userdel", user], capture_output=True)


def scenario_package_plan_in_check_diff(h):
    """A fake brew on PATH: the bootstrap's checkpoints capture its lists; after two formulae
    and a cask are installed, rollback.yml --check --diff shows the package plan (what was
    installed, the exact uninstall commands) per manager, returns it as package_plan, and
    runs no package command."""
    fake = os.path.join(h.dir, "fakebin")
    os.makedirs(fake)
    state, calls = os.path.join(h.dir, "brew-state"), os.path.join(h.dir, "brew-calls")
    with open(state, "w") as f:
        f.write("git 2.43.0\n")
    brew = os.path.join(fake, "brew")
    with open(brew, "w") as f:
        f.write("#!/bin/sh\n"
                f"echo \"$*\" >> '{calls}'\n"
                "case \"$1\" in\n"
                f"  list) sed 's/^cask://' '{state}' ;;\n"
                f"  bundle) while read -r n v; do case \"$n\" in cask:*) echo \"cask \\\"${{n#cask:}}\\\"\";; "
                f"*) echo \"brew \\\"$n\\\"\";; esac; done < '{state}' ;;\n"
                "  *) exit 1 ;;\n"
                "esac\n")
    os.chmod(brew, 0o755)
    env = {"PATH": fake + os.pathsep + os.environ["PATH"], "BACKUP_PACKAGES": "brew,brewfile"}
    r = h.play("bootstrap.yml", env=env)
    succeeded(r, "bootstrap with a fake brew")
    with open(state, "w") as f:
        f.write("git 2.43.0\njq 1.7\nfzf 0.50\ncask:iterm2 3.5\n")
    open(calls, "w").close()
    r = h.play("rollback.yml", "-e", "phase=pre-homebrew", "--diff", env=env, check=True)
    succeeded(r, "rollback --check --diff")
    diffs = [d for t in r["tasks"] if t["task"].startswith("Apply the rollback") for d in (t["diff"] or [])]
    brew_diff = [d for d in diffs if d.get("before_header") == "packages brew (now)"]
    expect(len(brew_diff) == 1, f"one package diff for brew: {diffs}", r)
    d = brew_diff[0]
    expect("+ brew jq 1.7" in d["before"] and "+ cask iterm2 3.5" in d["before"],
           f"the diff names what was installed: {d}", r)
    expect(f"$ {brew} uninstall --cask iterm2" in d["after"] and f"$ {brew} uninstall fzf jq" in d["after"],
           f"and the exact reversal: {d}", r)
    plan = [t for t in r["tasks"] if t["task"].startswith("Apply the rollback")]
    with open(calls) as f:
        ran = [line.split()[0] for line in f if line.strip()]
    expect(set(ran) <= {"list", "bundle"}, f"only lists were asked for, nothing was uninstalled: {ran}", r)
    expect(plan, "the apply task ran in check mode", r)


SCENARIOS = [
    scenario_bootstrap_then_idempotent,
    scenario_tool_absent,
    scenario_disabled_by_env,
    scenario_disabled_by_role_flag,
    scenario_degradation_levels,
    scenario_rollback_and_undo,
    scenario_rerun_then_rollback_restores_good,
    scenario_check_mode_writes_nothing,
    scenario_health_check,
    scenario_role_entry_point_and_arguments,
    scenario_schedule,
    scenario_lock_busy_is_retried,
    scenario_collection_by_fqcn_three_hosts_and_tags,
    scenario_check_diff_and_idempotent_undo,
    scenario_package_plan_in_check_diff,
    scenario_install_from_artifact_and_on_error,
    scenario_become_user,
]


def run_one(sc, bins, keep):
    h = Home(bins, sc.__name__.removeprefix("scenario_"))
    t0 = time.monotonic()
    try:
        sc(h)
        ok, detail = True, ""
    except Exception as e:  # noqa: BLE001 - report every scenario
        ok = False
        detail = (str(e) if isinstance(e, Failure) else traceback.format_exc())
        if h.last_log:
            with open(h.last_log) as f:
                tail = f.read()[-4000:]
            detail += f"\n--- tail of {h.last_log} ---\n{tail}"
    dt = time.monotonic() - t0
    if ok and not keep:
        h.cleanup()
    return sc, ok, dt, detail, h.dir


def real_home_state():
    """What the playbooks would write if `~` ever resolved to the real home (it once did:
    a local connection expands `~` through the passwd entry, not $HOME)."""
    import pwd
    real = pwd.getpwuid(os.getuid()).pw_dir
    names = [".zshrc", ".config/packages.txt", ".config/app.json", ".config/git.conf"]
    names += [f".local/bin/{t}" for t in TOOLS]
    state = {}
    for n in names:
        try:
            st = os.lstat(os.path.join(real, n))
            state[n] = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            state[n] = None
    return real, state


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--release-dir", required=True,
                    help="scripts/release output for this host (tarball + SHA256SUMS)")
    ap.add_argument("--prior", nargs=2, type=int, default=[0, 0], metavar=("PASSED", "FAILED"),
                    help="results of the checks the runner did before (lint, syntax)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("ANSIBLE_TIER_JOBS", "3")))
    ap.add_argument("--keep", action="store_true", help="keep every scenario's directory")
    ap.add_argument("only", nargs="*", help="run only scenarios whose name contains one of these")
    a = ap.parse_args()
    global RELEASE_DIR
    RELEASE_DIR = os.path.abspath(a.release_dir)
    # A snapshot of the binaries (debug info stripped: 10 MB instead of 90 MB each), so a
    # concurrent `cargo build` cannot swap them mid-run and every install copies little.
    bins = tempfile.mkdtemp(prefix="dfb-ansible-bin-")
    for t in TOOLS:
        src = os.path.join(os.path.abspath(a.bin_dir), t)
        dst = os.path.join(bins, t)
        if shutil.which("strip") and subprocess.run(["strip", "--strip-debug", "-o", dst, src]).returncode == 0:
            continue
        shutil.copy2(src, dst)
    chosen = [s for s in SCENARIOS if not a.only or any(o in s.__name__ for o in a.only)]
    passed, failed = a.prior
    real, real_before = real_home_state()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futures = [pool.submit(run_one, sc, bins, a.keep) for sc in chosen]
        for fut in concurrent.futures.as_completed(futures):
            sc, ok, dt, detail, d = fut.result()
            if ok:
                passed += 1
                print(f"PASS {sc.__name__} ({dt:.1f} s)", flush=True)
            else:
                failed += 1
                print(f"FAIL {sc.__name__} ({dt:.1f} s; files kept in {d})\n    {sc.__doc__}\n{detail}", flush=True)
    shutil.rmtree(bins, ignore_errors=True)
    _, real_after = real_home_state()
    touched = sorted(n for n in real_before if real_before[n] != real_after[n])
    if touched:
        failed += 1
        print(f"FAIL the real home {real} was written: {touched}")
    else:
        passed += 1
        print(f"PASS the real home {real} was not touched")
    print(f"ansible: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
