# -*- coding: utf-8 -*-
# Copyright: dotfiles-backup maintainers
# MIT License (see LICENSE)
"""Private helper of the dotfiles_backup.tools modules: find the backup-* binaries, run one
with --json in the protected home's environment, and read its JSON envelope.

Like community.general's CmdRunner (used by its kopia and homebrew modules) the argument
list is built from named options in one place, but this runner also owns what every module
needs from these tools: the binary search order, HOME/BACKUP_* environment, lock-busy
retries and an envelope even when the tool printed none (a foreign or broken binary).
"""
from __future__ import annotations

import json
import os
import time

# Where a binary is looked for after an explicit bin_dir: PATH, then Homebrew's and cargo's
# prefixes, then ~/.local/bin (scripts/install and the role's install step).
HOMEBREW_BINS = ("/opt/homebrew/bin", "/usr/local/bin", "/home/linuxbrew/.linuxbrew/bin")

# Arguments every module takes (merged into its argument_spec).
COMMON_ARGS = dict(
    bin_dir=dict(type="path"),
    home=dict(type="path"),
    repo=dict(type="path"),
    config=dict(type="path"),
    paths=dict(type="list", elements="str", default=[]),
    lock_wait=dict(type="int", default=10),
    retries=dict(type="int", default=3),
    retry_delay=dict(type="int", default=2),
    local_only=dict(type="bool", default=False),
    packages=dict(type="raw"),
    run_id=dict(type="str"),
    # Extra variables may carry keys or tokens (BACKUP_KEY_DIR, rclone credentials).
    environment=dict(type="dict", default={}, no_log=True),
)

FOREIGN_HINT = ("the file is not a program for this machine (another OS or CPU?): install the build for "
                "this host's triple (see the role's install step) or rebuild it here")


def home_of(module):
    return module.params["home"] or os.environ.get("HOME") or os.path.expanduser("~")


def find_tool(module, name):
    """Absolute path of backup tool `name`, or None. The search order is documented in the
    modules' DOCUMENTATION (bin_dir option)."""
    home = home_of(module)
    dirs = []
    if module.params["bin_dir"]:
        dirs.append(module.params["bin_dir"])
    dirs += [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += list(HOMEBREW_BINS) + [os.path.join(home, ".cargo", "bin"), os.path.join(home, ".local", "bin")]
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def root_on_user_home(module):
    """A reason to refuse, or None: running as root on a home that belongs to someone else
    would leave root-owned files (the repository) there, the trap of a `become: true` play."""
    if os.geteuid() != 0 or module.params.get("allow_root_on_user_home"):
        return None
    home = home_of(module)
    try:
        uid = os.stat(home).st_uid
    except OSError:
        return None
    if uid == 0:
        return None
    return ("refusing to run as root on %s, which belongs to uid %d: the repository would be left owned by root. "
            "Run as that user (the role's backup_checkpoint_user, i.e. become_user), or set "
            "allow_root_on_user_home: true" % (home, uid))


def searched(module):
    """The search order as words, for messages (the same as scripts/checkpoint-or-skip says)."""
    home = home_of(module)
    first = [module.params["bin_dir"]] if module.params["bin_dir"] else []
    out = []
    for d in first + ["PATH"] + list(HOMEBREW_BINS) + [home + "/.cargo/bin", home + "/.local/bin"]:
        if d not in out:
            out.append(d)
    return ", ".join(out)


def packages_switch(value):
    """BACKUP_PACKAGES for the `packages` option: true/false, or capture names joined by commas
    (the tool rejects unknown names with a message listing the valid ones)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        names = [str(v).strip() for v in value if str(v).strip()]
        return ",".join(names) if names else "false"
    text = str(value).strip()
    low = text.lower()
    if low in ("true", "yes", "on", "1"):
        return "true"
    if low in ("false", "no", "off", "0", ""):
        return "false"
    return text


def tool_env(module):
    """Environment of every tool run: HOME (so ~/... means the protected home), the
    BACKUP_* switches the options stand for, and any extra variables given."""
    env = {"HOME": home_of(module)}
    p = module.params
    if p["local_only"]:
        env["BACKUP_LOCAL_ONLY"] = "true"
    if p["packages"] is not None:
        env["BACKUP_PACKAGES"] = packages_switch(p["packages"])
    if p.get("run_id"):
        # Tools without run ids ignore it.
        env["BACKUP_RUN_ID"] = p["run_id"]
    env.update({k: str(v) for k, v in (p["environment"] or {}).items()})
    return env


def common_argv(module, tool, *words):
    p = module.params
    argv = [tool, *words, "--json", "--wait", str(p["lock_wait"])]
    if p["repo"]:
        argv += ["--repo", p["repo"]]
    if p["config"]:
        argv += ["--config", p["config"]]
    argv += ["--path=" + x for x in p["paths"]]
    return argv


def no_envelope(rc, out, err, argv):
    """A failed envelope for a run that printed no JSON, keeping what it did print."""
    detail = (err or out or "").strip()
    foreign = rc in (126, 127) or "Exec format error" in detail or "cannot execute binary" in detail
    message = "%s printed no JSON (exit %s)%s" % (os.path.basename(argv[0]), rc, (": " + detail[-400:]) if detail else "")
    return {"status": "failed", "changed": False, "snapshot": None, "warnings": [], "skip_reason": None,
            "errors": [{"code": "foreign_binary" if foreign else "no_envelope", "retryable": False,
                        "path": argv[0], "message": message,
                        "hint": FOREIGN_HINT if foreign else "run it by hand with --json -v"}]}


def run(module, argv, retry=True):
    """Run argv in the tool environment; return (rc, envelope). Retries lock-busy runs
    (exit 4) and failures the envelope marks retryable; the tool's --wait does the waiting."""
    env = tool_env(module)
    tries = 1 + (max(0, module.params["retries"]) if retry else 0)
    attempt = 0
    while True:
        attempt += 1
        try:
            rc, out, err = module.run_command(argv, environ_update=env, check_rc=False, handle_exceptions=False)
        except OSError as e:  # a binary the kernel refuses (foreign architecture)
            rc, out, err = 126, "", str(e)
        text = (out or "").strip()
        env_ = None
        if text.startswith("{"):
            try:
                env_ = json.loads(text)
            except ValueError:
                env_ = None
        if env_ is None:
            env_ = no_envelope(rc, out, err, argv)
        env_.setdefault("errors", [])
        env_.setdefault("warnings", [])
        busy = rc == 4 or (env_.get("status") == "failed" and any(e.get("retryable") for e in env_["errors"]))
        if not busy or attempt >= tries:
            env_["_attempts"] = attempt
            return rc, env_
        time.sleep(max(0, module.params["retry_delay"]))


def errors_text(envelope):
    """The envelope's errors as one readable line: message (path) - hint."""
    parts = []
    for e in envelope.get("errors") or []:
        msg = e.get("message") or e.get("code") or "error"
        if e.get("path") and e["path"] not in msg:
            msg += " (%s)" % e["path"]
        if e.get("hint"):
            msg += " - hint: %s" % e["hint"]
        parts.append(msg)
    return "; ".join(parts)


def short(snapshot):
    return (snapshot or {}).get("short_id")
