"""Test-only app: the real orchestrations with scripted activities, to exercise every branch of the
lifecycle quickly and deterministically (the end-to-end tests run the real activities).

The script is a JSON file named by ROTATION_SCRIPT: per activity, a list of results consumed in order
(the last one repeats) — a result `{"raise": "message"}` makes the activity fail, `"sleep": seconds` makes it
take that long. Every call is
appended to ROTATION_CALLS (JSON lines) so tests can assert what was asked, and every event a call
would have published to ROTATION_CALLS + ".events".
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from activities.rotation_starts import rotation_progress, start_rotation
from activities.targets import resolve_target, verify_event
from orchestrations.rotation import bp as rotation_lifecycle
from orchestrations.scheduler import bp as scheduler

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(rotation_lifecycle)
app.register_functions(scheduler)

_lock = threading.Lock()


def _scripted(name: str, request: dict[str, Any]) -> dict[str, Any]:
    with _lock:
        with open(os.environ["ROTATION_CALLS"], "a", encoding="utf-8") as calls:
            calls.write(json.dumps({"activity": name, "request": request}) + "\n")
        with open(os.environ["ROTATION_SCRIPT"], encoding="utf-8") as file:
            script = json.load(file)
        results = script.get(name) or [{}]
        counts = script.setdefault("_counts", {})
        index = counts.get(name, 0)
        counts[name] = index + 1
        with open(os.environ["ROTATION_SCRIPT"], "w", encoding="utf-8") as file:
            json.dump(script, file)
    result = results[min(index, len(results) - 1)]
    if "sleep" in result:  # a step that takes this long (real seconds): events raised meanwhile
        time.sleep(float(result["sleep"]))
        result = {k: v for k, v in result.items() if k != "sleep"}
    if "raise" in result:
        raise RuntimeError(result["raise"])
    succeeded = result.get("accepted", True) and result.get("verified", True) and result.get("refused", True)
    published = request.get("events") if name != "publish_events" else request["events"]
    if succeeded and published:
        # Like the real activities: the events of a step are published once the step succeeded.
        with _lock, open(os.environ["ROTATION_CALLS"] + ".events", "a", encoding="utf-8") as out:
            for event in published:
                out.write(json.dumps(event) + "\n")
    return result


def _activity(name: str) -> None:
    def run(request: dict) -> dict[str, Any]:  # a bare class: the worker refuses dict[str, Any] here
        return _scripted(name, request)

    run.__name__ = name
    app.activity_trigger(input_name="request")(run)


for _name in (
    "find_due_targets",
    "check_drift",
    "provision_new_key",
    "verify_new_key",
    "compensate_rotation",
    "abandon_rotation",
    "revoke_old_keys",
    "verify_revocation",
    "publish_events",
    "check_adoption",
    "count_auth_failures",
):
    _activity(_name)

# A rotation's first step and the event check are the real ones: they read only the policy and a setting.
for _check in (resolve_target, verify_event):
    app.activity_trigger(input_name="request")(_check)

# The scheduler's start and progress activities are the real ones: they only talk to the durable engine.
for _real in (start_rotation, rotation_progress):
    app.activity_trigger(input_name="request")(app.durable_client_input(client_name="client")(_real))
