# Test-only callback: writes the play recap (per-host stats), the set_stats data, every
# task result (name, action, status), retries, failure messages and debug messages to the
# JSON file named by $JSON_RECAP_FILE, so the Ansible tier asserts on data rather than on
# text that could match by accident. ansible-core ships no JSON stdout callback
# (ansible.posix.json is a collection), and the normal stdout callback stays on for the logs.
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: json_recap
    type: aggregate
    short_description: write the recap as JSON for tests
    description: Writes host stats, custom stats, task results, retries, failures and debug messages to $JSON_RECAP_FILE.
"""


def _msg(result):
    r = result._result
    msg = r.get("msg", "")
    if not isinstance(msg, str):
        msg = json.dumps(msg, default=str)
    return msg


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "json_recap"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self):
        super().__init__()
        self.tasks = []
        self.failures = []
        self.messages = []
        self.retries = []

    def _record(self, result, status):
        self.tasks.append({
            "task": result.task_name,
            "action": result._task.action,
            "status": status,
            "changed": bool(result._result.get("changed", False)),
            # --diff output of modules that support it (the rollback's per-path plan).
            "diff": result._result.get("diff"),
        })

    def _debug(self, result):
        if result._task.action in ("debug", "ansible.builtin.debug") and "msg" in result._result:
            self.messages.append(result._result["msg"] if isinstance(result._result["msg"], str)
                                 else json.loads(json.dumps(result._result["msg"], default=str)))

    def v2_runner_on_ok(self, result):
        self._record(result, "changed" if result._result.get("changed") else "ok")
        self._debug(result)

    def v2_runner_item_on_ok(self, result):
        self._debug(result)

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "ignored" if ignore_errors else "failed")
        if not ignore_errors:
            self.failures.append({"task": result.task_name, "msg": _msg(result),
                                  "rc": result._result.get("rc", result._result.get("exit_code"))})

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")
        self.failures.append({"task": result.task_name, "msg": _msg(result), "rc": None})

    def v2_runner_retry(self, result):
        self.retries.append({"task": result.task_name, "attempts": result._result.get("attempts"),
                             "rc": result._result.get("rc", result._result.get("exit_code"))})

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("JSON_RECAP_FILE")
        if not path:
            return
        hosts = {h: stats.summarize(h) for h in sorted(stats.processed)}
        # set_stats data: run-wide (no per_host) and per host (per_host: true, the role's choice).
        raw = stats.custom if hasattr(stats, "custom") else {}
        custom = dict(raw.get("_run", {}))
        per_host = {h: d for h, d in raw.items() if h != "_run"}
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"hosts": hosts, "custom": custom, "per_host": per_host, "tasks": self.tasks, "retries": self.retries,
                       "failures": self.failures, "messages": self.messages}, f, indent=1, default=str)
