#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dotfiles-backup maintainers
# MIT License (see LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: health
short_description: Health of a dotfiles-backup setup, as facts for CI
version_added: "0.1.0"
description:
  - Runs C(backup-checkpoint --health-check) (and with O(read_data) C(backup-verify --read-data),
    which re-reads every stored byte) and sets the fact C(dotfiles_backup_health).
  - Fails naming every red check and every problem found, unless O(fail_on_red=false).
  - Never changes anything; runs the same in check mode.
author: dotfiles-backup maintainers (@dotfiles-backup)
attributes:
  check_mode:
    support: full
    description: Read-only either way.
  diff_mode:
    support: none
    description: Nothing to show.
  facts:
    support: full
    description: Sets C(dotfiles_backup_health).
options:
  read_data:
    description: Also run C(backup-verify --read-data).
    type: bool
    default: false
  fail_on_red:
    description: Fail when the health is red or verification found problems.
    type: bool
    default: true
  bin_dir:
    description: Directory searched first for the binaries (then C(PATH), Homebrew, C(~/.cargo/bin), C(~/.local/bin)).
    type: path
  home:
    description: Home of the user whose backups are checked (exported as C(HOME)).
    type: path
  repo:
    description: Repository (C(--repo)).
    type: path
  config:
    description: Config file (C(--config)).
    type: path
  paths:
    description: Paths the health check considers (each C(--path)).
    type: list
    elements: str
    default: []
  lock_wait:
    description: Seconds the tool waits for the repository lock.
    type: int
    default: 10
  retries:
    description: Unused by the health check (it does not retry); accepted for symmetry.
    type: int
    default: 0
  retry_delay:
    description: Unused by the health check.
    type: int
    default: 2
  local_only:
    description: Export C(BACKUP_LOCAL_ONLY=true).
    type: bool
    default: false
  packages:
    description: Unused by the health check.
    type: raw
  run_id:
    description: Exported as C(BACKUP_RUN_ID).
    type: str
  environment:
    description: Extra environment variables for the tool.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Fail CI when backups cannot be trusted
  dotfiles_backup.tools.health:
    read_data: true

- name: Only collect the facts
  dotfiles_backup.tools.health:
    fail_on_red: false
- name: Show them
  ansible.builtin.debug:
    var: dotfiles_backup_health.health
"""

RETURN = r"""
ansible_facts:
  description: C(dotfiles_backup_health) with the keys below.
  returned: always
  type: dict
  contains:
    dotfiles_backup_health:
      description: health (green, yellow, red), status, exit_code, checks, red, errors, verify.
      type: dict
health:
  description: green, yellow or red.
  returned: always
  type: str
checks:
  description: Every check (name, status, message).
  returned: always
  type: list
  elements: dict
red:
  description: The red checks.
  returned: always
  type: list
  elements: dict
verify:
  description: With O(read_data), backup-verify's status, exit_code, problems and errors; else null.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dotfiles_backup.tools.plugins.module_utils.runner import (
    COMMON_ARGS, common_argv, errors_text, find_tool, run, searched,
)


def main():
    spec = dict(COMMON_ARGS)
    spec.update(read_data=dict(type="bool", default=False), fail_on_red=dict(type="bool", default=True),
                retries=dict(type="int", default=0))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    tool = find_tool(module, "backup-checkpoint")
    if tool is None:
        module.fail_json(msg="backup tool not installed (looked in %s): run scripts/install, or include the role "
                             "with tasks_from: install" % searched(module))
    rc, env = run(module, common_argv(module, tool, "--health-check"), retry=False)
    checks = env.get("checks") or []
    report = {"health": env.get("health") or env.get("status"), "status": env.get("status"), "exit_code": rc,
              "checks": checks, "red": [c for c in checks if c.get("status") == "red"],
              "errors": env.get("errors") or [], "verify": None}
    if p["read_data"]:
        vtool = find_tool(module, "backup-verify")
        if vtool is None:
            module.fail_json(msg="backup-verify not installed (looked in %s)" % searched(module))
        p2 = dict(p, paths=[])
        module.params = p2
        vrc, venv = run(module, common_argv(module, vtool, "--read-data"), retry=False)
        module.params = p
        report["verify"] = {"status": venv.get("status"), "exit_code": vrc, "problems": venv.get("problems") or [],
                            "errors": venv.get("errors") or []}
    facts = {"dotfiles_backup_health": report}
    bad = report["health"] == "red" or report["status"] == "failed" or (
        report["verify"] is not None and report["verify"]["status"] != "success")
    if bad and p["fail_on_red"]:
        parts = ["%s: %s" % (c.get("name"), c.get("message")) for c in report["red"]]
        if report["errors"]:
            parts.append(errors_text(env))
        if report["verify"] is not None and report["verify"]["status"] != "success":
            parts += ["%s: %s" % (x.get("code"), x.get("message")) for x in report["verify"]["problems"]]
            if report["verify"]["errors"]:
                parts.append(errors_text(report["verify"]))
        module.fail_json(msg="backups cannot be trusted (health %s): %s" % (report["health"], "; ".join(parts)),
                         ansible_facts=facts, **report)
    module.exit_json(changed=False, ansible_facts=facts, **report)


if __name__ == "__main__":
    main()
