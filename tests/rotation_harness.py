"""Driving rotation orchestrations on a devhost: start, watch custom status, raise events, move the clock."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rotation.policy import parse_policy
from tests.devhost_process import ROOT, Devhost

LOCAL_POLICY = ROOT / "config" / "rotation-policy.local.json"
TERMINAL = {"Completed", "Failed", "Terminated"}
PLACEHOLDER_ENV = {
    "KEY_VAULT_URL": "https://127.0.0.1:9",
    "LOG_ANALYTICS_WORKSPACE_ID": "00000000-0000-0000-0000-0000000000aa",
    "ARM_ENDPOINT": "https://127.0.0.1:9",
}
# App settings for a scripted app whose real start_rotation reads targets from the deployed policy.
SCRIPTED_POLICY_ENV = {"ROTATION_POLICY_PATH": str(LOCAL_POLICY), **PLACEHOLDER_ENV}


def local_target(target_id: str, env: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """A target of the local demo policy as the orchestration input carries it (`Target.to_json()`)."""
    policy = parse_policy(json.loads(LOCAL_POLICY.read_text()), env or PLACEHOLDER_ENV)
    target = policy.target(target_id)
    assert target is not None, target_id
    return {**target.to_json(), **overrides}


class Durable:
    """The public Durable HTTP API and the devhost clock of one devhost."""

    def __init__(self, host: Devhost) -> None:
        self.host = host
        self.code = {"code": host.system_key("durabletask_extension")}

    def start(self, orchestrator: str, instance_id: str, payload: Any) -> None:
        response = self.host.post(
            f"/runtime/webhooks/durabletask/orchestrators/{orchestrator}/{instance_id}", params=self.code, json=payload
        )
        assert response.status_code == 202, response.text

    def status(self, instance_id: str) -> dict[str, Any]:
        response = self.host.get(
            f"/runtime/webhooks/durabletask/instances/{instance_id}", params={**self.code, "showHistory": "true"}
        )
        return response.json() if response.status_code in (200, 202) else {}

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        response = self.host.get(
            f"/admin/devhost/durable/instances/{instance_id}/history", headers={"x-functions-key": self.host.master_key}
        )
        response.raise_for_status()
        body = response.json()
        return body["history"] if isinstance(body, dict) else body

    def raise_event(self, instance_id: str, name: str, payload: Any) -> None:
        response = self.host.post(
            f"/runtime/webhooks/durabletask/instances/{instance_id}/raiseEvent/{name}", params=self.code, json=payload
        )
        assert response.status_code == 202, response.text

    def clock(self, **body: Any) -> dict[str, Any]:
        headers = {"x-functions-key": self.host.master_key}
        if body:
            self.host.post("/admin/devhost/clock", headers=headers, json=body).raise_for_status()
        return self.host.get("/admin/devhost/clock", headers=headers).json()

    def wait(self, instance_id: str, *, stage: str | None = None, timeout: float = 30) -> dict[str, Any]:
        """Until the instance ends (or its custom status shows `stage`)."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(instance_id)
            custom = status.get("customStatus") or {}
            if stage is not None and isinstance(custom, dict) and custom.get("stage") == stage:
                return status
            if status.get("runtimeStatus") in TERMINAL:
                if stage is None:
                    return status
                raise AssertionError(f"{instance_id} ended before stage {stage}: {json.dumps(status)[:2000]}")
            time.sleep(0.03)
        raise TimeoutError(f"{instance_id} did not reach {stage or 'the end'}: {json.dumps(status)[:2000]}")


def read_calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
