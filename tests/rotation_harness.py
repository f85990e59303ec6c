"""Driving rotation orchestrations on a devhost: start, watch custom status, raise events, move the clock.

The devhost is a host process (tools/devhost_launcher.py) or the same host inside the pytest process
(tests/inprocess_stack.py); both answer the same requests, so tests drive them alike (`Host`)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import requests

from rotation import signing
from rotation.identity import Actor
from rotation.inputs import rotation_input
from rotation.policy import parse_policy, parse_target
from tests.inprocess_stack import ClockPermit, running_inprocess
from tools.devhost_launcher import ROOT, running_devhost

LOCAL_POLICY = ROOT / "config" / "rotation-policy.local.json"
TERMINAL = {"Completed", "Failed", "Terminated"}
PLACEHOLDER_ENV = {
    "KEY_VAULT_URL": "https://127.0.0.1:9",
    "LOG_ANALYTICS_WORKSPACE_ID": "00000000-0000-0000-0000-0000000000aa",
    "ARM_ENDPOINT": "https://127.0.0.1:9",
}
TEST_SIGNING_KEY = "scripted-stack-signing-key-" + "k" * 32
# App settings for a scripted app whose real start_rotation reads targets from the deployed policy.
SCRIPTED_POLICY_ENV = {
    "ROTATION_POLICY_PATH": str(LOCAL_POLICY),
    "KEYROTATION_SIGNING_KEY": TEST_SIGNING_KEY,
    **PLACEHOLDER_ENV,
}
DECISIONS = ("Approve", "Abort", "Extend")
_MTIMES = itertools.count(1)


def scripted_env(state: Path) -> dict[str, str]:
    """SCRIPTED_POLICY_ENV with a copy of the local policy the test may redeploy (`deploy_target`)."""
    path = state / "rotation-policy.json"
    reset_policy(path)
    return {**SCRIPTED_POLICY_ENV, "ROTATION_POLICY_PATH": str(path)}


def reset_policy(policy_path: Path) -> None:
    """The deployed policy back to the checked-in local one (what each test starts from)."""
    shutil.copy(LOCAL_POLICY, policy_path)
    stamp = time.time_ns() + next(_MTIMES) * 1_000_000
    os.utime(policy_path, ns=(stamp, stamp))


def deploy_target(policy_path: Path, target: dict[str, Any]) -> None:
    """Put `target` (policy JSON, merged) into the deployed policy in place of the target with its id, as a
    redeploy would. The file's mtime moves forward each time, so the app reads it again."""
    assert policy_path.resolve() != LOCAL_POLICY.resolve(), "the checked-in policy is never rewritten by a test"
    document = json.loads(policy_path.read_text())
    targets = [t for t in document["targets"] if t["id"] != target["id"]]
    document["targets"] = [*targets, target]
    policy_path.write_text(json.dumps(document, indent=1))
    stamp = time.time_ns() + next(_MTIMES) * 1_000_000
    os.utime(policy_path, ns=(stamp, stamp))


def signed_input(payload: dict[str, Any], key: str = TEST_SIGNING_KEY) -> dict[str, Any]:
    """A rotation input as the app's triggers write it, from the older test shape that carried the target's
    JSON (`target`): the target by id and fingerprint, signed."""
    target = parse_target(payload["target"])
    return rotation_input(
        target,
        payload["rotationId"],
        payload["mode"],
        Actor.from_json(payload["actor"]),
        payload.get("reason"),
        overlap=payload.get("overlap"),
        current_key_name=payload.get("currentKeyName"),
        replaces=payload.get("replaces"),
        key=key.encode(),
    )


def local_target(target_id: str, env: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """A target of the local demo policy as the orchestration input carries it (`Target.to_json()`)."""
    policy = parse_policy(json.loads(LOCAL_POLICY.read_text()), env or PLACEHOLDER_ENV)
    target = policy.target(target_id)
    assert target is not None, target_id
    return {**target.to_json(), **overrides}


class Host(Protocol):
    """What the tests use of a devhost, in a process of its own or in this one."""

    env: dict[str, str]

    @property
    def master_key(self) -> str: ...

    def system_key(self, name: str) -> str: ...

    def output(self) -> str: ...

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response: ...

    def get(self, path: str, **kwargs: Any) -> requests.Response: ...

    def post(self, path: str, **kwargs: Any) -> requests.Response: ...


@contextmanager
def scripted_devhost(state: Path, app: Path, env: dict[str, str], *, in_process: bool) -> Iterator[Host]:
    """A devhost for a scripted app (no emulators, virtual clock, no timers firing by themselves): in this
    process, for branch tests; or as a host process, for the tests that keep end-to-end fidelity."""
    if in_process:
        with running_inprocess(state, app, clock="virtual", timers=False, env=env) as inprocess:
            yield inprocess
    else:
        with running_devhost(state, app, emulators=False, clock="virtual", timers=False, env=env) as devhost:
            yield devhost


class Durable:
    """The public Durable HTTP API and the devhost clock of one devhost."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.code = {"code": host.system_key("durabletask_extension")}

    def start(self, orchestrator: str, instance_id: str, payload: Any) -> None:
        """Start an orchestration. A rotation input that still carries its target's JSON is turned into
        what the app writes: that definition is deployed into the host's policy file, and the input names
        it and is signed (rotation/inputs.py)."""
        if orchestrator == "rotation_orchestrator" and isinstance(payload, dict) and "target" in payload:
            policy_path = Path(self.host.env["ROTATION_POLICY_PATH"])
            if policy_path.resolve() != LOCAL_POLICY.resolve():
                deploy_target(policy_path, payload["target"])
            payload = signed_input(payload, self.host.env.get(signing.SIGNING_KEY_SETTING, TEST_SIGNING_KEY))
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

    def raise_event(self, instance_id: str, name: str, payload: Any, *, sign: bool = True) -> None:
        """Raise an event as the app's API does: signed for the rotation the instance runs now (and a
        decision for its current hold). `sign=False` raises it as a holder of the Durable system key could."""
        if sign:
            custom = self.status(instance_id).get("customStatus") or {}
            rotation_id = custom.get("rotationId") or (self.status(instance_id).get("input") or {}).get("rotationId")
            if name in DECISIONS and "heldAt" not in payload:
                payload = {**payload, "heldAt": (custom.get("hold") or {}).get("heldAt")}
            key = self.host.env.get(signing.SIGNING_KEY_SETTING, TEST_SIGNING_KEY).encode()
            payload = signing.sign_event(key, str(rotation_id), name, payload)
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
        """Until the instance ends (or its custom status shows `stage`). On an in-process host, a read that
        finds neither lets the virtual clock skip without its idle grace (inprocess_stack.ClockPermit)."""
        permit: ClockPermit | None = getattr(self.host, "clock_permit", None)
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        try:
            while time.monotonic() < deadline:
                read_at = time.monotonic()
                status = self.status(instance_id)
                custom = status.get("customStatus") or {}
                if stage is not None and isinstance(custom, dict) and custom.get("stage") == stage:
                    return status
                if status.get("runtimeStatus") in TERMINAL:
                    if stage is None:
                        return status
                    raise AssertionError(f"{instance_id} ended before stage {stage}: {json.dumps(status)[:2000]}")
                if permit is not None:
                    permit.unmet(read_at)
                time.sleep(0.03)
        finally:
            if permit is not None:
                permit.withdraw()
        raise TimeoutError(f"{instance_id} did not reach {stage or 'the end'}: {json.dumps(status)[:2000]}")


def read_calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
