#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dotfiles-backup maintainers
# MIT License (see LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: checkpoint
short_description: Take a dotfiles-backup checkpoint of a bootstrap phase or a manual name
version_added: "0.1.0"
description:
  - Runs C(backup-checkpoint auto PHASE) or C(backup-checkpoint manual NAME) with C(--json) and
    turns its JSON envelope into the module result (C(changed) is the envelope's C(changed)).
  - When the checkpoint is disabled, or the tool is not installed and the checkpoint is not
    required, the result is C(skipped) with the same message as C(scripts/checkpoint-or-skip).
  - Lock-busy runs (exit 4) and failures the tool marks retryable are retried.
  - In check mode the tool runs with C(--dry-run) and writes nothing; C(changed) says whether
    the checkpoint would store new data.
  - In diff mode the paths that changed since the newest snapshot are shown (C(backup-list --diff)).
author: dotfiles-backup maintainers (@dotfiles-backup)
attributes:
  check_mode:
    support: full
    description: Runs the tool with C(--dry-run) (a plan), which writes nothing.
  diff_mode:
    support: full
    description: Shows the paths concerned, without file contents (they may hold secrets).
options:
  phase:
    description: Bootstrap phase (an C(auto) checkpoint). Exactly one of O(phase) and O(name).
    type: str
    choices: [pre-ansible, pre-homebrew, pre-dotfiles, pre-applications, post-setup, bootstrap-complete]
  name:
    description: Manual checkpoint name ([A-Za-z0-9._-], 1..64 characters, not starting with C(.) or C(-)).
    type: str
  enabled:
    description: V(false) skips the checkpoint with a message (nothing runs).
    type: bool
    default: true
  required:
    description:
      - When the tool is not installed, V(true) fails with how to install it; V(false) skips
        with "backup tool not yet installed, skipping LABEL checkpoint".
    type: bool
    default: true
  allow_root_on_user_home:
    description:
      - Run even as root on a home that belongs to another user (files written there belong to root).
      - By default that is refused, naming the home and its owner.
    type: bool
    default: false
  bin_dir:
    description:
      - Directory searched first for the binaries. Then C(PATH), C(/opt/homebrew/bin),
        C(/usr/local/bin), C(/home/linuxbrew/.linuxbrew/bin), C(~/.cargo/bin), C(~/.local/bin)
        (C(~) is O(home)).
    type: path
  home:
    description: Home of the user whose configuration is protected, exported as C(HOME) to the tool. Default the module's C(HOME).
    type: path
  repo:
    description: Repository (C(--repo)); default the tool's (C(BACKUP_REPO), else C(~/.dotfiles-backups)).
    type: path
  config:
    description: Config file (C(--config)).
    type: path
  paths:
    description: Paths tracked by this run (each C(--path)); empty for the configured set.
    type: list
    elements: str
    default: []
  lock_wait:
    description: Seconds the tool waits for the repository lock per try (C(--wait)).
    type: int
    default: 10
  retries:
    description: Extra tries for lock-busy and retryable failures.
    type: int
    default: 3
  retry_delay:
    description: Seconds between tries.
    type: int
    default: 2
  local_only:
    description: Export C(BACKUP_LOCAL_ONLY=true) (no external storage; a warning, not a failure).
    type: bool
    default: false
  packages:
    description:
      - Export C(BACKUP_PACKAGES) (package-list captures on or off); unset keeps the config's choice.
      - A list of capture names (or a comma-separated string such as C(apt,npm)) turns captures on for
        those package managers only.
    type: raw
  run_id:
    description: Exported as C(BACKUP_RUN_ID) so every checkpoint of one bootstrap run shares an id (older tools ignore it).
    type: str
  environment:
    description: Extra environment variables for the tool.
    type: dict
    default: {}
  fail_on_partial:
    description: A partial checkpoint (some paths unreadable, the rest stored) fails the task.
    type: bool
    default: false
notes:
  - Needs the dotfiles-backup binaries on the target; nothing beyond ansible-core on the controller.
seealso:
  - module: dotfiles_backup.tools.rollback
  - module: dotfiles_backup.tools.health
"""

EXAMPLES = r"""
- name: Checkpoint before the dotfiles phase
  dotfiles_backup.tools.checkpoint:
    phase: pre-dotfiles
    paths: ["~/.zshrc", "~/.config"]

- name: A manual checkpoint that may skip while the tool is not installed
  dotfiles_backup.tools.checkpoint:
    name: before-nvim-change
    required: false
    packages: false
"""

RETURN = r"""
status:
  description: created, unchanged, partial, skipped, failed or dry-run.
  returned: always
  type: str
  sample: created
reason:
  description: Why it was skipped (disabled, not installed, the tool's skip reason) or what a dry run found.
  returned: always
  type: str
message:
  description: One readable line saying what happened.
  returned: always
  type: str
  sample: "pre-dotfiles checkpoint created: snapshot 1a2b3c4d, 12 files, 3400 bytes (3400 new)"
snapshot:
  description: Short id of the snapshot taken (or reused).
  returned: when the tool ran
  type: str
snapshot_id:
  description: Full id of the snapshot.
  returned: when the tool ran
  type: str
files:
  description: Files in the snapshot.
  returned: always
  type: int
bytes:
  description: Bytes in the snapshot.
  returned: always
  type: int
new_bytes:
  description: Bytes stored by this checkpoint.
  returned: always
  type: int
degradation:
  description: full, local-only, ... (the envelope's degradation).
  returned: when the tool ran
  type: str
warnings_list:
  description: The tool's warning messages.
  returned: always
  type: list
  elements: str
errors:
  description: The envelope's errors (code, message, path, hint, retryable).
  returned: always
  type: list
  elements: dict
exit_code:
  description: The tool's exit code.
  returned: when the tool ran
  type: int
attempts:
  description: Runs of the tool (more than 1 after lock-busy retries).
  returned: when the tool ran
  type: int
tool:
  description: The binary that ran.
  returned: when the tool ran
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dotfiles_backup.tools.plugins.module_utils.runner import (
    COMMON_ARGS, common_argv, errors_text, find_tool, root_on_user_home, run, searched,
)


def entry(label, kind, **kw):
    e = {"phase": label, "kind": kind, "status": "", "reason": "", "message": "", "snapshot": None,
         "snapshot_id": None, "files": 0, "bytes": 0, "new_bytes": 0, "degradation": None,
         "warnings_list": [], "errors": [], "exit_code": None}
    e.update(kw)
    return e


def describe(label, env, rc):
    snap = env.get("snapshot") or {}
    dry = bool(env.get("dry_run"))
    st = env.get("status")
    status = ("failed" if st == "failed" or rc not in (0, 3) else "skipped" if st == "skipped"
              else "partial" if st == "partial" else "dry-run" if dry
              else "created" if env.get("changed") else "unchanged")
    if status in ("created", "unchanged", "dry-run", "partial") and snap:
        msg = "%s checkpoint%s %s: snapshot %s, %s files, %s bytes (%s new)" % (
            label, " would be" if dry else "", "created" if env.get("changed") else "unchanged",
            snap.get("short_id"), snap.get("files", 0), snap.get("bytes", 0), snap.get("new_bytes", 0))
    else:
        msg = "%s checkpoint %s" % (label, st or status)
    if env.get("skip_reason"):
        msg += " (%s)" % env["skip_reason"]
    if env.get("errors"):
        msg += ("; " if status == "partial" else ": ") + errors_text(env)
    reason = env.get("skip_reason") or ""
    if dry and not reason:
        reason = "would store new data" if env.get("changed") else "nothing new to store"
    return status, reason, msg


def live_diff(module, label, kind):
    """Paths changed since the newest snapshot, for diff mode (read-only; no lock)."""
    tool = find_tool(module, "backup-list")
    if not tool:
        return None
    argv = common_argv(module, tool, "--diff", "latest")
    rc, env = run(module, argv, retry=False)
    if rc != 0 or env.get("status") == "failed":
        return None
    lines = []
    for c in env.get("diff") or []:
        sign = {"added": "+", "removed": "-"}.get(c.get("change"), "~")
        what = (" (%s)" % ", ".join(c["changes"])) if c.get("changes") else ""
        lines.append("%s %s%s" % (sign, c.get("path"), what))
    return {"before_header": "newest snapshot", "after_header": "%s checkpoint (%s)" % (label, kind),
            "prepared": "\n".join(lines) + ("\n" if lines else "no tracked path changed\n")}


def main():
    spec = dict(phase=dict(type="str", choices=["pre-ansible", "pre-homebrew", "pre-dotfiles", "pre-applications",
                                                "post-setup", "bootstrap-complete"]),
                name=dict(type="str"), enabled=dict(type="bool", default=True),
                required=dict(type="bool", default=True), fail_on_partial=dict(type="bool", default=False),
                allow_root_on_user_home=dict(type="bool", default=False))
    spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_one_of=[("phase", "name")], mutually_exclusive=[("phase", "name")])
    p = module.params
    label, kind = (p["phase"], "auto") if p["phase"] else (p["name"], "manual")

    if not p["enabled"]:
        module.exit_json(changed=False, **entry(label, kind, status="skipped", reason="disabled",
                         message="backup checkpoints are disabled, skipping %s checkpoint" % label))
    tool = find_tool(module, "backup-checkpoint")
    if tool is None:
        if not p["required"] or module.check_mode:
            msg = "backup tool not yet installed, skipping %s checkpoint" % label
            if p["required"]:
                msg += " (check mode: nothing was installed)"
            module.exit_json(changed=False, **entry(label, kind, status="skipped", reason="not installed", message=msg))
        msg = ("backup tool not installed (looked in %s), and the %s checkpoint is required. Install it first: "
               "run scripts/install, or enable backup_checkpoint_install (include_role backup_checkpoint with "
               "tasks_from: install before this phase); or add %s to backup_checkpoint_optional_phases to let it skip."
               % (searched(module), label, label))
        module.fail_json(msg=msg, changed=False, **entry(label, kind, status="failed", reason="not installed", message=msg))

    why = root_on_user_home(module)
    if why:
        module.fail_json(msg=why, changed=False, **entry(label, kind, status="failed", reason="wrong user", message=why))
    diff = live_diff(module, label, kind) if module._diff else None
    argv = common_argv(module, tool, kind) + (["--dry-run"] if module.check_mode else []) + ["--", label]
    rc, env = run(module, argv)
    status, reason, msg = describe(label, env, rc)
    snap = env.get("snapshot") or {}
    result = entry(label, kind, status=status, reason=reason, message=msg, snapshot=snap.get("short_id"),
                   snapshot_id=snap.get("id"), files=snap.get("files", 0), bytes=snap.get("bytes", 0),
                   new_bytes=snap.get("new_bytes", 0), degradation=env.get("degradation"),
                   warnings_list=[w.get("message", "") for w in env.get("warnings") or []],
                   errors=env.get("errors") or [], exit_code=rc, attempts=env.get("_attempts"), tool=tool,
                   completion=env.get("completion"))
    changed = bool(env.get("changed")) and status != "failed"
    if diff is not None:
        result["diff"] = diff
    if status == "failed" or (status == "partial" and p["fail_on_partial"]):
        module.fail_json(msg=msg, changed=changed, **result)
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
