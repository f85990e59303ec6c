"""Revocation is verified, end to end: the real app, activities and emulators on devhost's virtual clock.

The emulated target runs two host instances with the Functions host's key caches (emulators/arm/host_cache.py).
An emergency rotation's status and its OldKeyRevoked say when the old key was first refused; when an
instance that missed the sentinel-file change keeps granting the old key past `probe.revokedWithin`, the
rotation publishes RotationDegraded (cause old-key-accepted), logs an ERROR and says why in its status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from emulators.core.invariants import Place, parse_instant, scan, secret_values, state_files
from rotation.policy import Policy, Target
from tests.e2e.test_rotation_e2e import (
    check_invariants,
    event_types,
    policy_copy,
    policy_for,
    rotation_id_now,
    site_keys,
    start_rotation,
    wait_for,
)
from tests.rotation_harness import signed_input
from tools.demo_seed import create_operator_keys, seed_sites
from tools.devhost_launcher import DemoStack

pytestmark = pytest.mark.slow


def site_path(target: Target) -> str:
    app = target.function_app
    return f"sites/{app.subscription_id}/{app.resource_group}/{app.name}"


def opens(stack: DemoStack, target: Target, value: str, host_instance: int) -> bool:
    """Whether host instance `host_instance` of the target opens its probe route with `value` now."""
    assert target.probe is not None
    host = target.function_app.default_host_name
    response = requests.get(
        f"{stack.emulator['url']}/_targets/{host}{target.probe.path}",
        headers={"x-functions-key": value, "x-emulator-instance": str(host_instance)},
        verify=stack.ca_bundle,
        timeout=10,
    )
    return response.status_code == 200


def start_emergency(stack: DemoStack, target: Target) -> str:
    """An emergency rotation with the input the API writes (signed with the stack's key)."""
    rotation = rotation_id_now(stack, target.id, "emergency")
    request = {
        "rotationId": rotation,
        "mode": "emergency",
        "target": target.to_json(),
        "actor": {"kind": "principal", "name": "responder", "objectId": None},
        "reason": "key leaked in a public log",
    }
    payload = signed_input(request, str(stack.emulator["appSigningKey"]))
    response = stack._host(
        "POST",
        f"/runtime/webhooks/durabletask/orchestrators/rotation_orchestrator/rotation-{target.id}",
        key=str(stack.endpoints["systemKeys"]["durabletask_extension"]),
        json=payload,
    )
    assert response.status_code == 202, response.text
    return rotation


def two_instance_stack(tmp_path: Path) -> tuple[DemoStack, Policy, Target]:
    """The demo stack with demo-orders on two host instances, its operator keys created (the caller stops it)."""
    stack = DemoStack(tmp_path / "state", policy=policy_copy(tmp_path))
    stack.start()
    try:
        policy = policy_for(stack)
        orders = policy.target("demo-orders")
        assert orders is not None and orders.probe is not None
        seed_sites(stack, [orders])
        stack.control("PUT", site_path(orders), json={"hostInstances": 2}).raise_for_status()
        create_operator_keys(stack, [orders])
    except BaseException:
        stack.stop()
        raise
    return stack, policy, orders


def received(state: dict[str, Any], rotation: str, kind: str) -> dict[str, Any]:
    rows = (state.get("eventgrid") or {}).get("events", [])
    data = [(r.get("event") or {}).get("data") or {} for r in rows if r.get("type") == f"KeyRotation.{kind}"]
    found = [d for d in data if d.get("rotationId") == rotation]
    assert found, (kind, [r.get("type") for r in rows])
    return dict(found[-1])


def test_an_emergency_shows_when_the_leaked_key_was_first_refused(tmp_path: Path) -> None:
    stack, policy, orders = two_instance_stack(tmp_path)
    try:
        leaked = site_keys(stack.control_json("state"), orders)[orders.base_key_name]
        assert opens(stack, orders, leaked, 0) and opens(stack, orders, leaked, 1)  # warm: both cached it

        rotation = start_emergency(stack, orders)
        final = wait_for(stack, "rotation-demo-orders", timeout=120)
        assert final["output"]["outcome"] == "completed", final["output"]
        revocation = final["customStatus"]["revocation"]
        revoke = next(s for s in final["customStatus"]["steps"] if s["step"] == "revoke")
        assert revocation["status"] == "refused"
        # Both instances saw the delete (the writer itself, the other through the sentinel file): refused
        # in the first round, right after the delete.
        assert parse_instant(revocation["firstRefusedAt"]) <= parse_instant(revoke["at"])
        state = stack.control_json("state")
        assert received(state, rotation, "OldKeyRevoked")["firstRefusedAt"] == revocation["firstRefusedAt"]
        assert "RotationDegraded" not in event_types(state, "demo-orders")
        assert not opens(stack, orders, leaked, 0) and not opens(stack, orders, leaked, 1)
        view = stack.api_as(
            "reader", "00000000-0000-0000-0000-0000000000d1", "KeyRotation.Reader", "GET", f"/rotations/{rotation}"
        )
        assert view == 200
        texts = [Place.text(label, text) for text, label in stack.seen.items()]
        check_invariants(stack, policy, state, texts)
    finally:
        stack.stop()


def test_an_instance_that_keeps_the_old_key_past_the_bound_degrades_the_rotation(tmp_path: Path) -> None:
    stack, _policy, orders = two_instance_stack(tmp_path)
    try:
        # A first rotation, so the key in service has a Key Vault version the later rounds can read.
        start_rotation(stack, orders, rotation_id_now(stack, "demo-orders"))
        first = wait_for(stack, "rotation-demo-orders", timeout=180)
        assert first["output"]["outcome"] == "completed", first["output"]
        in_service = first["output"]["keyName"]
        value = site_keys(stack.control_json("state"), orders)[in_service]
        # Instance 1 now misses sentinel-file changes (its watcher is not running) and has granted the key.
        stack.control("PUT", site_path(orders), json={"unwatchedHostInstances": [1]}).raise_for_status()
        assert opens(stack, orders, value, 1)

        rotation = start_emergency(stack, orders)
        final = wait_for(stack, "rotation-demo-orders", timeout=180)
        assert final["output"]["outcome"] == "completed", final["output"]
        revocation = final["customStatus"]["revocation"]
        assert revocation["status"] == "still-accepted" and revocation["firstRefusedAt"] is None
        assert in_service in revocation["stillAccepted"]
        assert "still accepted" in revocation["detail"] and "PT5M" in revocation["detail"]
        assert ("revocation", "degraded") in [(s["step"], s["status"]) for s in final["customStatus"]["steps"]]
        state = stack.control_json("state")
        degraded = received(state, rotation, "RotationDegraded")
        assert degraded["cause"] == "old-key-accepted" and degraded["acceptedKeyNames"] == [in_service]
        window = parse_instant(degraded["windowEnd"]) - parse_instant(degraded["windowStart"])
        assert window.total_seconds() >= orders.probe.revoked_within.total_seconds()
        assert received(state, rotation, "OldKeyRevoked")["firstRefusedAt"] is None
        assert "are still accepted by the target after probe.revokedWithin" in stack.host_log.read_text()
        assert opens(stack, orders, value, 1) and not opens(stack, orders, value, 0)  # still: nothing clears it
        # I1 only: instance 1 also lags on new keys (a minute at most), which the I2 checker counts against
        # the emergency's store; the test is about the old key.
        stack.stop()
        texts = [Place.text(label, text) for text, label in stack.seen.items()]
        findings = scan(
            secret_values(state), [*state_files(stack.state_dir, exclude=[stack.state_dir / "emulator"]), *texts]
        )
        assert not findings, [str(f) for f in findings[:5]]
    finally:
        stack.stop()
