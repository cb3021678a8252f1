#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dotfiles-backup maintainers
# MIT License (see LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollback
short_description: Roll the tracked configuration back to a dotfiles-backup checkpoint, or undo a rollback
version_added: "0.1.0"
description:
  - Plans with C(backup-rollback --dry-run) first, then applies. The tool commits a safety
    snapshot of the current state before it changes anything; its id is returned and named in
    every failure, so a rollback can itself be undone.
  - Idempotent. Rolling back again to the same checkpoint plans nothing and reports
    C(changed=false). O(undo=true) goes back to the safety snapshot of the last rollback or
    restore (not of an earlier undo), so running the same undo twice changes nothing the second
    time (C(backup-rollback --undo) would flip back and forth).
  - Check mode only plans. Diff mode shows every planned path with its state now (before) and
    after the rollback, and, when the checkpoint holds package lists, one entry per package
    manager with what changed since the checkpoint (before) and the commands that would
    reverse it (after). The module never runs those commands (C(backup-rollback --packages plan)).
author: dotfiles-backup maintainers (@dotfiles-backup)
attributes:
  check_mode:
    support: full
    description: Runs the tool with C(--dry-run) (a plan), which writes nothing.
  diff_mode:
    support: full
    description: Shows the paths concerned, without file contents (they may hold secrets).
options:
  target:
    description: Checkpoint to roll back to (a phase, a manual name, a snapshot id or unique prefix, or C(latest)).
    type: str
  undo:
    description: Undo the last rollback or restore (go back to its safety snapshot).
    type: bool
    default: false
  undo_of:
    description: Undo this rollback, given by its safety snapshot id (as returned in RV(safety_snapshot_id)).
    type: str
  keep_new:
    description: Keep paths created after the checkpoint (C(--keep-new)) instead of deleting them.
    type: bool
    default: false
  allow_root_on_user_home:
    description:
      - Run even as root on a home that belongs to another user (files written there belong to root).
      - By default that is refused, naming the home and its owner.
    type: bool
    default: false
  bin_dir:
    description: Directory searched first for the binaries (then C(PATH), Homebrew, C(~/.cargo/bin), C(~/.local/bin)).
    type: path
  home:
    description: Home of the user whose configuration is restored (exported as C(HOME)).
    type: path
  repo:
    description: Repository (C(--repo)).
    type: path
  config:
    description: Config file (C(--config)).
    type: path
  paths:
    description: Only these paths (each C(--path)).
    type: list
    elements: str
    default: []
  lock_wait:
    description: Seconds the tool waits for the repository lock per try.
    type: int
    default: 10
  retries:
    description: Extra tries while the repository is locked.
    type: int
    default: 3
  retry_delay:
    description: Seconds between tries.
    type: int
    default: 2
  local_only:
    description: Export C(BACKUP_LOCAL_ONLY=true).
    type: bool
    default: false
  packages:
    description: Export C(BACKUP_PACKAGES) for the safety snapshot (true, false, or a list of capture names).
    type: raw
  run_id:
    description: Exported as C(BACKUP_RUN_ID).
    type: str
  environment:
    description: Extra environment variables for the tool.
    type: dict
    default: {}
seealso:
  - module: dotfiles_backup.tools.checkpoint
"""

EXAMPLES = r"""
- name: Roll back to the state before the dotfiles phase
  dotfiles_backup.tools.rollback:
    target: pre-dotfiles
  register: rb

- name: Take that rollback back
  dotfiles_backup.tools.rollback:
    undo_of: "{{ rb.safety_snapshot_id }}"
"""

RETURN = r"""
target:
  description: What was rolled back to (the request; for an undo the safety snapshot id).
  returned: always
  type: str
source:
  description: The snapshot restored from (id, short_id, label, kind, created_at, ...).
  returned: always
  type: dict
actions:
  description: The plan, one item per path (action, path, type, reason, bytes).
  returned: always
  type: list
  elements: dict
package_plan:
  description:
    - What the package managers changed since the checkpoint and the commands reversing it (the
      tool's C(package_plan), docs/json.md); shown only, never run by this module.
  returned: when the checkpoint holds package lists
  type: dict
applied:
  description: Whether the plan was applied (false in check mode and when there was nothing to do).
  returned: always
  type: bool
safety_snapshot:
  description: Short id of the safety snapshot holding the state before this rollback.
  returned: when applied
  type: str
safety_snapshot_id:
  description: Its full id (pass it as O(undo_of) to take this rollback back).
  returned: when applied
  type: str
stats:
  description: The tool's counts (restored, deleted, bytes, ...).
  returned: always
  type: dict
message:
  description: One readable line.
  returned: always
  type: str
outcome:
  description: success, partial (some paths restored, the rest failed) or failed (nothing changed).
  returned: when applied
  type: str
"""

import os
import shlex
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dotfiles_backup.tools.plugins.module_utils.runner import (
    COMMON_ARGS, common_argv, errors_text, find_tool, root_on_user_home, home_of, run, searched,
)


def live_state(module, path):
    """One line for a path as it is now (no content: it may hold secrets)."""
    full = os.path.join(home_of(module), path[2:]) if path.startswith("~/") else path
    try:
        st = os.lstat(full)
    except OSError:
        return "absent"
    if stat.S_ISLNK(st.st_mode):
        return "symlink -> %s" % os.readlink(full)
    if stat.S_ISDIR(st.st_mode):
        return "directory, mode %04o" % stat.S_IMODE(st.st_mode)
    return "file, %d bytes, mode %04o" % (st.st_size, stat.S_IMODE(st.st_mode))


def after_state(a):
    act = a.get("action")
    if act == "delete":
        return "absent (%s)" % (a.get("reason") or "not in the checkpoint")
    if act in ("skip", "conflict"):
        return "left as it is: %s" % (a.get("reason") or act)
    kind = a.get("type") or "file"
    size = (", %s bytes" % a["bytes"]) if kind == "file" and a.get("bytes") is not None else ""
    return "%s%s (%s: %s)" % (kind, size, act, a.get("reason") or "")


def plan_diff(module, actions, source):
    src = (source or {}).get("short_id") or "checkpoint"
    return [{"before_header": "%s (now)" % a.get("path"), "after_header": "%s (from %s)" % (a.get("path"), src),
             "before": live_state(module, a.get("path") or "") + "\n", "after": after_state(a) + "\n"}
            for a in actions]


def package_diff(package_plan):
    """One diff entry per package manager of the tool's package plan (nothing is run)."""
    out = []
    for m in (package_plan or {}).get("managers") or []:
        name = m.get("name") or "?"
        head = {"before_header": "packages %s (now)" % name, "after_header": "packages %s (reversal)" % name}
        if m.get("status") == "unknown":
            out.append(dict(head, before="unknown\n", after="nothing planned: %s\n" % m.get("reason")))
            continue

        def pkg(x):
            return ("%s %s" % (x.get("name"), x.get("version"))).strip()
        before = ["+ %s" % pkg(x) for x in m.get("installed") or []] \
            + ["- %s" % pkg(x) for x in m.get("removed") or []] \
            + ["~ %s %s -> %s" % (c.get("name"), c.get("from"), c.get("to")) for c in m.get("upgraded") or []]
        after = ["$ %s" % " ".join(shlex.quote(a) for a in c) for c in m.get("commands") or []] \
            + ["not reversible: %s" % n for n in m.get("not_reversible") or []]
        out.append(dict(head, before="\n".join(before) + "\n", after="\n".join(after or ["(nothing to run)"]) + "\n"))
    return out


def undo_target(module):
    """The safety snapshot of the last rollback or restore: the newest safety snapshot that
    is neither the tool's own undo (before-undo) nor taken by an undo of ours (a rollback to
    another safety snapshot, tagged for:<that id>)."""
    tool = find_tool(module, "backup-list")
    if tool is None:
        return None, "backup-list not installed (looked in %s)" % searched(module)
    p = module.params
    argv = [tool, "--json", "--kind", "safety"] + (["--repo", p["repo"]] if p["repo"] else []) \
        + (["--config", p["config"]] if p["config"] else [])
    rc, env = run(module, argv, retry=False)
    if rc != 0 or env.get("status") == "failed":
        return None, errors_text(env)
    snaps = [s for s in env.get("snapshots") or [] if s.get("kind", "safety") == "safety"]
    shorts = set(s.get("short_id") or s["id"][:8] for s in snaps)
    snaps.sort(key=lambda s: s.get("created_at") or "", reverse=True)
    for s in snaps:
        undone = any(t.startswith("for:") and t[4:12] in shorts for t in s.get("tags") or [])
        if s.get("label") != "before-undo" and not undone:
            return s["id"], None
    return None, "there is no rollback or restore to undo (no safety snapshot)"


def main():
    spec = dict(target=dict(type="str"), undo=dict(type="bool", default=False), undo_of=dict(type="str"),
                keep_new=dict(type="bool", default=False), allow_root_on_user_home=dict(type="bool", default=False))
    spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[("target", "undo_of")])
    p = module.params
    if len([x for x in (p["target"], p["undo"], p["undo_of"]) if x]) != 1:
        module.fail_json(msg="say what to roll back to: exactly one of target (a phase, name or id), undo: true, "
                             "or undo_of: SAFETY_SNAPSHOT_ID")
    tool = find_tool(module, "backup-rollback")
    if tool is None:
        module.fail_json(msg="backup tool not installed (looked in %s): run scripts/install, or include the role "
                             "with tasks_from: install" % searched(module))
    why = root_on_user_home(module)
    if why:
        module.fail_json(msg=why, changed=False)
    what = p["target"]
    if p["undo"] or p["undo_of"]:
        what, why = (p["undo_of"], None) if p["undo_of"] else undo_target(module)
        if what is None:
            module.fail_json(msg="cannot undo: %s" % why, changed=False)
    words = ["--keep-new"] if p["keep_new"] else []
    argv = common_argv(module, tool, *words)
    rc, plan = run(module, argv + ["--dry-run", "--", what])
    label = ("the last rollback (safety snapshot %s)" % what[:8]) if what != p["target"] else what
    if rc != 0 or plan.get("status") == "failed":
        module.fail_json(msg="cannot roll back to %s: %s" % (label, errors_text(plan)), changed=False,
                         target=what, errors=plan.get("errors"), exit_code=rc)
    actions = (plan.get("plan") or {}).get("actions") or []
    result = dict(target=what, source=plan.get("source"), actions=actions, package_plan=plan.get("package_plan"),
                  applied=False,
                  stats=plan.get("stats") or {}, safety_snapshot=None, safety_snapshot_id=None)
    if module._diff:
        result["diff"] = plan_diff(module, actions, plan.get("source")) + package_diff(plan.get("package_plan"))
    if not actions:
        module.exit_json(changed=False, message="nothing to change: the tracked paths already match %s" % label, **result)
    if module.check_mode:
        module.exit_json(changed=True, message="would change %d path(s) to match %s (check mode)" % (len(actions), label),
                         **result)

    rc, env = run(module, argv + ["--", what])
    safety = env.get("snapshot") or {}
    changed = bool(env.get("changed"))
    result.update(applied=True, stats=env.get("stats") or result["stats"], safety_snapshot=safety.get("short_id"),
                  safety_snapshot_id=safety.get("id"), errors=env.get("errors"), exit_code=rc,
                  outcome="success" if rc == 0 and env.get("status") not in ("failed", "partial")
                  else ("partial" if env.get("status") == "partial" or changed else "failed"))
    undo_hint = ("undo with the rollback module's undo_of: %s (or backup-rollback %s)" % (safety.get("id"), safety.get("short_id"))
                 if safety else "no safety snapshot was committed, so nothing was changed")
    if rc != 0 or env.get("status") in ("failed", "partial"):
        msg = "rollback to %s %s: %s. Safety snapshot %s holds the state before; %s" % (
            label, "partly applied" if env.get("status") == "partial" or changed else "failed",
            errors_text(env) or "exit %s" % rc, safety.get("short_id") or "-", undo_hint)
        result["message"] = msg
        module.fail_json(msg=msg, changed=changed, **result)
    msg = "rolled back to %s; safety snapshot %s holds the state before: %s" % (label, safety.get("short_id"), undo_hint)
    module.exit_json(changed=changed, message=msg, **result)


if __name__ == "__main__":
    main()
