"""Activity tests name their targets as the orchestrator does (`targetId`, `fingerprint`): the target is
first deployed into the policy file the app reads (ROTATION_POLICY_PATH), as a redeploy would put it there."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rotation.policy import Target, parse_target


def deploy(target: dict[str, Any]) -> dict[str, Any]:
    """Put `target` (policy JSON) into the deployed policy, replacing one with its id; returns the request
    fields that name it."""
    fingerprint = parse_target(target).fingerprint  # first: a target the policy would refuse is never written
    path = Path(os.environ["ROTATION_POLICY_PATH"])
    document = json.loads(path.read_text()) if path.exists() else {"version": 1, "targets": []}
    document["targets"] = [*(t for t in document["targets"] if t.get("id") != target["id"]), target]
    path.write_text(json.dumps(document))
    stamp = max(time.time_ns(), path.stat().st_mtime_ns + 1_000_000)
    os.utime(path, ns=(stamp, stamp))
    return {"targetId": target["id"], "fingerprint": fingerprint}


def ref(target: Target) -> dict[str, Any]:
    return deploy(target.to_json())
