"""End to end with the real app and activities on devhost: a rotation terminated mid-overlap through the
Durable API is abandoned by the next timer tick, which rotates the target; at the end the target holds exactly
one key of the family and Key Vault's newest enabled version is it (no orphans), with I1 and I2 checked."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from emulators.core.invariants import Place
from tests.e2e.test_rotation_e2e import (
    check_invariants,
    event_types,
    latest_enabled,
    policy_for,
    rotation_id_now,
    site_keys,
    start_rotation,
)
from tools import demo_report
from tools.demo_seed import create_operator_keys, seed_sites
from tools.devhost_launcher import DemoStack

pytestmark = pytest.mark.slow


def wait_until(stack: DemoStack, instance: str, done: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        status = stack.status(instance)
        if status is not None and done(status):
            return status
        time.sleep(0.05)
    raise TimeoutError(f"{instance}: {json.dumps(status)[:1500]} {stack.tail()}")


def test_rotation_terminated_in_overlap_is_abandoned_by_next_tick(tmp_path: Path) -> None:
    stack = DemoStack(tmp_path / "state")
    stack.start()
    try:
        policy = policy_for(stack)
        orders = policy.target("demo-orders")
        assert orders is not None
        targets = [t for t in policy if t.schedulable]
        seed_sites(stack, targets)
        create_operator_keys(stack, targets)
        stack.set_auto_advance(False)  # the overlap waits on the virtual clock until it is terminated
        stuck_id = rotation_id_now(stack, "demo-orders")
        start_rotation(stack, orders, stuck_id)
        wait_until(stack, "rotation-demo-orders", lambda s: (s.get("customStatus") or {}).get("stage") == "overlap")
        response = stack.durable("POST", "/rotation-demo-orders/terminate", params={"reason": "operator cleanup"})
        assert response.status_code == 202, response.text
        terminated = wait_until(stack, "rotation-demo-orders", lambda s: s["runtimeStatus"] == "Terminated")
        stuck_key = terminated["customStatus"]["keyName"]
        keys = site_keys(stack.control_json("state"), orders)
        assert stuck_key in keys and "orders-client" in keys  # both valid: the stuck rotation never revoked

        stack.set_auto_advance(True)
        assert stack.run_function("rotation_timer") == 202  # the next tick
        final = wait_until(
            stack,
            "rotation-demo-orders",
            lambda s: (
                s["runtimeStatus"] in ("Completed", "Failed") and (s.get("input") or {}).get("rotationId") != stuck_id
            ),
        )
        assert final["runtimeStatus"] == "Completed" and final["output"]["outcome"] == "completed", final
        abandon = next(s for s in final["customStatus"]["steps"] if s["step"] == "abandon")
        assert stuck_id in abandon["detail"] and "kept (announced)" in abandon["detail"]
        # The tick learns the rotation ended at its next read of the instance (a durable timer away).
        (tick,) = [i["instanceId"] for i in stack.instances("scheduler-")]
        scheduler = wait_until(stack, tick, lambda s: s["runtimeStatus"] == "Completed")
        assert [a["targetId"] for a in scheduler["output"]["abandoned"]] == ["demo-orders"]
        assert "demo-orders" in [c["targetId"] for c in scheduler["output"]["completed"]]

        state = stack.control_json("state")
        keys = site_keys(state, orders)
        family = [n for n in keys if n.startswith("orders-client")]
        assert family == [final["output"]["keyName"]]  # exactly one key of the family: no orphans
        latest = latest_enabled(state, orders)
        assert latest is not None and latest["version"] == final["output"]["version"]
        assert latest["value"] == keys[final["output"]["keyName"]]
        enabled = [v for v in demo_report.secret_versions(state, orders) if v.get("enabled")]
        assert len(enabled) == 1  # every other version of ours disabled
        events = [
            e
            for e in (state.get("eventgrid") or {}).get("events", [])
            if e["event"]["subject"] == "targets/demo-orders"
        ]
        failed = [e["event"]["data"] for e in events if e["event"]["type"] == "KeyRotation.RotationFailed"]
        assert [f["rotationId"] for f in failed] == [stuck_id]
        assert failed[0]["error"] == "abandoned: instance Terminated at stage overlap (operator cleanup)"
        assert event_types(state, "demo-orders") == [
            "RotationStarted",
            "NewKeyAvailable",
            "RotationFailed",  # the stuck rotation's story, closed by the tick
            "RotationStarted",
            "NewKeyAvailable",
            "OldKeyRevoked",
            "RotationCompleted",
        ]
        revoked = next(e["event"]["data"] for e in events if e["event"]["type"] == "KeyRotation.OldKeyRevoked")
        assert sorted(revoked["revokedKeyNames"]) == sorted(["orders-client", stuck_key])

        texts = [Place.text(label, text) for text, label in stack.seen.items()]
        texts.append(Place.text("final status", json.dumps(final)))
        check_invariants(stack, policy, state, texts)
    finally:
        stack.stop()
