"""Act 2 of `make demo`: a key has leaked, and an incident responder kills it over HTTP.

An operator starts an on-demand rotation of demo-orders through the API; while it is in its overlap
(two keys valid, the sample consumer already switched to the newer one) a responder with the
KeyRotation.Emergency role calls the emergency route. The demo measures how fast the call answers and
how many requests the emulators served before the old key was deleted, then checks that exactly one
key of the family is left, every older Key Vault version is disabled, the old keys are refused by the
target, and the sample consumer (`samples/consumer`, on its own devhost) holds the new key.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from rotation.naming import belongs_to_base, rotation_instance_id
from rotation.policy import Policy, Target
from tools import demo_report as report
from tools.consumer_stack import ConsumerHost, spec_from_policy, start_consumer_beside
from tools.devhost_launcher import POLICY, ROOT, DemoStack, StackError

TARGET = "demo-orders"
CONSUMER = "billing-worker"
OPERATOR = ("ops-oncall", "00000000-0000-0000-0000-0000000000e2", "KeyRotation.Operator")
RESPONDER = ("incident-responder", "00000000-0000-0000-0000-0000000000e1", "KeyRotation.Emergency")
LEAK_REASON = "demo: the key leaked in a build log"
POLL_SECONDS = 0.05
TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass
class EmergencyAct:
    """What act 2 did and measured; the key values it saw stay in memory, never printed."""

    on_demand_id: str = ""
    emergency_id: str = ""
    superseded_id: str | None = None
    accepted_status: int = 0
    accepted_ms: float = 0.0
    requests_until_deleted: int | None = None
    final: dict[str, Any] | None = None
    consumer_before: dict[str, Any] = field(default_factory=dict)
    consumer_after: dict[str, Any] = field(default_factory=dict)
    old_values: dict[str, str] = field(default_factory=dict)  # key name -> value, for the refusal probe
    refused: dict[str, int] = field(default_factory=dict)  # key name -> status the target answered


def mint_token(stack: DemoStack, name: str, object_id: str, role: str) -> str:
    """A bearer token devhost's Easy Auth accepts, as `python -m devhost token` prints it."""
    command = [sys.executable, "-m", "devhost", "token", "--name", name, "--role", role, "--oid", object_id]
    command += ["--state", str(stack.state_dir)]
    done = subprocess.run(  # noqa: S603 - our own interpreter and fixed arguments
        command, cwd=ROOT, env=stack.environment(), check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def call_api(stack: DemoStack, method: str, path: str, token: str, body: Mapping[str, Any]) -> requests.Response:
    response = requests.request(
        method, f"{stack.url}/api{path}", headers={"Authorization": f"Bearer {token}"}, json=body, timeout=30
    )
    stack.seen.setdefault(response.text, f"HTTP response to {method} /api{path}")
    return response


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise StackError(f"act 2: {what} did not happen within {timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def family_keys(stack: DemoStack, target: Target) -> dict[str, str]:
    keys = report.live_keys(stack.control_json("state"), target)
    return {name: value for name, value in keys.items() if belongs_to_base(target.base_key_name, name)}


def probe_status(stack: DemoStack, target: Target, value: str) -> int:
    """What the target answers a caller presenting `value` (the emulator's data-plane route for the app)."""
    assert target.probe is not None
    url = f"{stack.emulator['url']}/_targets/{target.function_app.default_host_name}{target.probe.path}"
    response = requests.get(url, headers={"x-functions-key": value}, verify=stack.ca_bundle, timeout=30)
    return response.status_code


def run_act(stack: DemoStack, policy: Policy, say: Callable[[str], None]) -> EmergencyAct:
    target = policy.target(TARGET)
    if target is None or target.probe is None:
        raise StackError(f"the local policy has no target {TARGET!r} with a probe; act 2 is built around it")
    act = EmergencyAct()
    instance = rotation_instance_id(TARGET)
    spec = spec_from_policy(stack.endpoints, ROOT / POLICY, TARGET, CONSUMER)
    say(f"    sample consumer {CONSUMER} for {TARGET} on its own devhost, subscribed to targets/{TARGET}")
    consumer: ConsumerHost = start_consumer_beside(stack.endpoints, stack.state_dir, spec, stack.state_dir / "consumer")
    try:
        operator = mint_token(stack, *OPERATOR)
        started = call_api(stack, "POST", f"/targets/{TARGET}/rotations", operator, {"reason": "demo: routine"})
        if started.status_code != 202:
            raise StackError(f"act 2: the on-demand rotation was refused: HTTP {started.status_code} {started.text}")
        act.on_demand_id = started.json()["rotationId"]
        say(f"    {OPERATOR[0]} started on-demand rotation {act.on_demand_id} (HTTP 202)")

        def in_overlap() -> bool:
            custom = (stack.status(instance) or {}).get("customStatus") or {}
            return custom.get("rotationId") == act.on_demand_id and custom.get("stage") == "overlap"

        wait_until("the on-demand rotation reaching its overlap", in_overlap)
        stack.set_auto_advance(False)  # hold the overlap open: two keys valid, as when a leak is found
        try:
            custom = (stack.status(instance) or {}).get("customStatus") or {}
            wait_until(
                f"{CONSUMER} switching to the on-demand key",
                lambda: consumer.state().get("version") == custom.get("version"),
            )
            act.consumer_before = consumer.state()
            act.old_values = family_keys(stack, target)
            say(
                f"    overlap: {len(act.old_values)} keys valid ({', '.join(sorted(act.old_values))}); "
                f"{CONSUMER} holds version {report.short_version(custom.get('version'))}"
            )
            responder = mint_token(stack, *RESPONDER)
            since = max((int(r["seq"]) for r in stack.control_json("requests")["value"]), default=0)
            began = time.perf_counter()
            response = call_api(
                stack, "POST", f"/targets/{TARGET}/emergency-rotation", responder, {"reason": LEAK_REASON}
            )
            act.accepted_ms = (time.perf_counter() - began) * 1000
        finally:
            stack.set_auto_advance(True)
        act.accepted_status = response.status_code
        if response.status_code != 202:
            raise StackError(f"act 2: the emergency call answered HTTP {response.status_code} {response.text}")
        body = response.json()
        act.emergency_id = body["rotationId"]
        act.superseded_id = body.get("supersededRotationId")
        say(
            f"    {RESPONDER[0]} called the emergency route: HTTP 202 in {act.accepted_ms:.0f} ms, "
            f"rotation {act.emergency_id} (ended {act.superseded_id or 'nothing'})"
        )

        def done() -> bool:
            status = stack.status(instance) or {}
            custom = status.get("customStatus") or {}
            return custom.get("rotationId") == act.emergency_id and status.get("runtimeStatus") in TERMINAL

        wait_until("the emergency rotation finishing", done)
        act.final = stack.status(instance)
        deletes = [
            int(r["seq"])
            for r in stack.control_json(f"requests?since={since}")["value"]
            if r.get("operation") in ("arm.delete_host_secret", "arm.delete_function_secret")
            and int(r.get("status") or 0) in (204, 404)
        ]
        if deletes:
            act.requests_until_deleted = max(deletes) - since
        new_version = ((act.final or {}).get("customStatus") or {}).get("version")
        wait_until(f"{CONSUMER} switching to the emergency key", lambda: consumer.state().get("version") == new_version)
        act.consumer_after = consumer.state()
        act.refused = {name: probe_status(stack, target, value) for name, value in act.old_values.items()}
    finally:
        consumer.stop()
    return act


def checks(stack: DemoStack, policy: Policy, act: EmergencyAct, state: Mapping[str, Any]) -> list[report.Check]:
    target = policy.target(TARGET)
    assert target is not None
    subject = f"{TARGET} (emergency)"
    final = act.final or {}
    custom = final.get("customStatus") or {}
    out: list[report.Check] = [
        report.Check(
            act.accepted_status == 202 and act.superseded_id == act.on_demand_id,
            subject,
            f"emergency call accepted in {act.accepted_ms:.0f} ms and ended the on-demand rotation in its overlap",
        ),
        report.Check(
            final.get("runtimeStatus") == "Completed" and (final.get("output") or {}).get("outcome") == "completed",
            subject,
            f"emergency rotation {act.emergency_id} completed",
        ),
    ]
    keys = report.live_keys(state, target)
    family = sorted(n for n in keys if belongs_to_base(target.base_key_name, n))
    out.append(
        report.Check(
            family == [custom.get("keyName")],
            subject,
            f"one key of the family left ({', '.join(family) or 'none'}); {len(act.old_values)} older keys revoked",
        )
    )
    versions = report.secret_versions(state, target)
    enabled = [v.get("version") for v in versions if v.get("enabled")]
    newest_value = next((v.get("value") for v in reversed(versions) if v.get("enabled")), None)
    out.append(
        report.Check(
            enabled == [custom.get("version")] and newest_value == keys.get(str(custom.get("keyName"))),
            subject,
            f"every older Key Vault version disabled; {report.short_version(custom.get('version'))} is the only "
            "enabled one and holds the live key",
        )
    )
    out.append(
        report.Check(
            bool(act.refused) and all(code == 401 for code in act.refused.values()),
            subject,
            "the target refuses every old key (HTTP "
            + ", ".join(f"{code}" for code in act.refused.values())
            + ")"
            + (
                f", deleted within {act.requests_until_deleted} emulator requests" if act.requests_until_deleted else ""
            ),
        )
    )
    revocation = custom.get("revocation") or {}
    deleted_at = next((s.get("at") for s in custom.get("steps") or [] if s.get("step") == "revoke"), None)
    first = revocation.get("firstRefusedAt")
    after = ""
    if first and deleted_at:
        seconds = (report.parse_time(first) - report.parse_time(deleted_at)).total_seconds()
        after = (
            f", {max(seconds, 0.0):.0f} s after the delete was confirmed" if seconds > 0 else ", in the delete's round"
        )
    out.append(
        report.Check(
            revocation.get("status") == "refused" and bool(first),
            subject,
            f"the status shows the leaked key first refused at {first or 'never'}{after} (probe.revokedWithin bound)",
        )
    )
    held_value = keys.get(str(custom.get("keyName")), "")
    out.append(
        report.Check(
            act.consumer_after.get("fingerprint") == fingerprint(held_value) and bool(held_value),
            subject,
            f"{CONSUMER} switched from {report.short_version(act.consumer_before.get('version'))} to "
            f"{report.short_version(act.consumer_after.get('version'))} by itself (Event Grid → Key Vault)",
        )
    )
    kinds = [
        str(row.get("type", "")).removeprefix(report.EVENT_PREFIX)
        for row in (state.get("eventgrid") or {}).get("events", [])
        if ((row.get("event") or {}).get("data") or {}).get("rotationId") == act.emergency_id
    ]
    wanted = ["RotationStarted", "NewKeyAvailable", "OldKeyRevoked", "RotationCompleted"]
    ordered = list(dict.fromkeys(kinds))
    out.append(
        report.Check(
            ordered == wanted,
            subject,
            "events " + " → ".join(wanted) + ("" if ordered == wanted else f" (received: {' → '.join(ordered)})"),
        )
    )
    return out
