# Test-only callback: writes the play recap, set_stats data, failure messages and
# debug messages to the JSON file named by $JSON_RECAP_FILE, so the Ansible tier
# asserts on data rather than on text that could match by accident.
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: json_recap
    type: aggregate
    short_description: write the recap as JSON for tests
    description: Writes stats, custom stats, failures and debug messages to $JSON_RECAP_FILE.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "json_recap"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self):
        super().__init__()
        self.failures = []
        self.messages = []

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self.failures.append({"task": result.task_name, "msg": str(result._result.get("msg", ""))})

    def v2_runner_on_ok(self, result):
        if result._task.action in ("debug", "ansible.builtin.debug") and "msg" in result._result:
            self.messages.append(str(result._result["msg"]))

    def v2_runner_item_on_ok(self, result):
        if result._task.action in ("debug", "ansible.builtin.debug") and "msg" in result._result:
            self.messages.append(str(result._result["msg"]))

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("JSON_RECAP_FILE")
        if not path:
            return
        hosts = {h: stats.summarize(h) for h in sorted(stats.processed)}
        custom = stats.custom.get("_run", {}) if hasattr(stats, "custom") else {}
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"hosts": hosts, "custom": custom, "failures": self.failures, "messages": self.messages}, f, indent=1, default=str)
