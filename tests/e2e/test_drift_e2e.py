"""Drift end to end, with the real app and activities on devhost against the emulators: after a rotation,
the host regenerates one app's keys and someone deletes another target's key by hand; the next timer tick
restores the first from listkeys and rotates the second, each with a DriftDetected event, and Key Vault's
current version is a key the target accepts again (I2 broken only by the drift itself, never after the
repair). No key value anywhere outside the emulators (I1)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from emulators.core.invariants import Place, TargetRef, check_i2, parse_instant, scan, secret_values, state_files
from tests.e2e.test_rotation_e2e import (
    event_types,
    latest_enabled,
    policy_for,
    rotation_id_now,
    site_keys,
    start_rotation,
    wait_for,
)
from tools.demo_seed import OPERATOR, create_operator_keys, seed_sites
from tools.devhost_launcher import DemoStack

pytestmark = pytest.mark.slow


def scheduler_output(stack: DemoStack, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [i for i in stack.instances("scheduler-") if i.get("runtimeStatus") == "Completed"]
        if done:
            return dict(stack.status(done[0]["instanceId"])["output"])  # type: ignore[index]
        time.sleep(0.1)
    raise TimeoutError(f"no scheduler finished: {stack.tail()}")


def delete_by_hand(stack: DemoStack, target: Any, name: str) -> None:
    """An operator deletes the key through ARM (the official SDK, as the operator's identity)."""
    app = target.function_app
    with stack.web_client_as(OPERATOR, app.subscription_id) as web:
        web.web_apps.delete_function_secret(app.resource_group, app.name, target.key_scope.function, name)


def fixed_at(changes: list[dict[str, Any]], secret: str, tag: str, value: str) -> Any:
    """When Key Vault got the version that ended a target's drift (the first set with that tag)."""
    return min(
        parse_instant(c["ts"])
        for c in changes
        if c["kind"] == "keyvault.version_set"
        and c["detail"]["name"].lower() == secret.lower()
        and (c["detail"].get("tags") or {}).get(tag) == value
    )


def test_next_tick_restores_a_regenerated_key_and_rotates_a_deleted_one(tmp_path: Path) -> None:
    stack = DemoStack(tmp_path / "state")
    stack.start()
    try:
        policy = policy_for(stack)
        orders, reports = policy.target("demo-orders"), policy.target("demo-reports-export")
        assert orders is not None and reports is not None
        seed_sites(stack, list(policy))
        create_operator_keys(stack, list(policy))
        # Rotation ids carry their start time, which decides when a target is due: take it from the stack's
        # virtual clock, never from the calendar (ids of a fixed date become due once that date is 30 days old).
        start_rotation(stack, orders, rotation_id_now(stack, "demo-orders"))
        start_rotation(stack, reports, rotation_id_now(stack, "demo-reports-export"))
        first_orders, first_reports = (
            wait_for(stack, "rotation-demo-orders"),
            wait_for(stack, "rotation-demo-reports-export"),
        )
        assert first_orders["output"]["outcome"] == first_reports["output"]["outcome"] == "completed"
        orders_key, reports_key = first_orders["output"]["keyName"], first_reports["output"]["keyName"]

        # Behind the rotation's back: the orders host regenerates every key, an operator deletes reports' key.
        app = orders.function_app
        path = f"sites/{app.subscription_id}/{app.resource_group}/{app.name}/regenerate-keys"
        assert stack.control("POST", path).status_code == 200
        delete_by_hand(stack, reports, reports_key)

        assert stack.run_function("rotation_timer") == 202
        summary = scheduler_output(stack)
        drift = {d["targetId"]: d for d in summary["drift"]}
        assert drift["demo-orders"]["outcome"] == "restored" and drift["demo-orders"]["keyName"] == orders_key
        assert drift["demo-orders"]["repairOf"] == first_orders["output"]["version"]
        assert drift["demo-reports-export"]["outcome"] == "missing"
        assert set(drift) == {"demo-orders", "demo-reports-export"}  # the master key has no version yet
        assert summary["due"] == ["demo-reports-export"] and "driftError" not in summary
        [rotated] = summary["completed"]
        second = wait_for(stack, "rotation-demo-reports-export")
        assert second["output"]["rotationId"] == rotated["rotationId"] != first_reports["output"]["rotationId"]
        assert second["input"]["reason"].startswith("drift: key missing")

        state = stack.control_json("state")
        orders_keys, reports_keys = site_keys(state, orders), site_keys(state, reports)
        current = latest_enabled(state, orders)
        assert current is not None and current["value"] == orders_keys[orders_key]  # consumers read a live key
        current = latest_enabled(state, reports)
        assert current is not None and current["value"] == reports_keys[second["output"]["keyName"]]
        assert reports_key not in reports_keys
        assert event_types(state, "demo-orders")[-1] == "DriftDetected"
        reports_types = event_types(state, "demo-reports-export")
        drift_at = reports_types.index("DriftDetected")
        assert reports_types[drift_at + 1 :] == ["RotationStarted", "NewKeyAvailable", "OldKeyRevoked",
                                                 "RotationCompleted"], reports_types  # fmt: skip

        # I2: broken by the drift itself, whole again from the repair (orders) or the new key (reports) on.
        changes = stack.control_json("changes")["value"]
        fixed = {
            "demo-orders": fixed_at(
                changes, orders.key_vault.secret_name, "repairOf", drift["demo-orders"]["repairOf"]
            ),
            "demo-reports-export": fixed_at(
                changes, reports.key_vault.secret_name, "rotationId", rotated["rotationId"]
            ),
        }
        violations = check_i2(changes, [TargetRef.from_target(t) for t in policy])
        assert {v.target_id for v in violations} == set(fixed)
        assert all(parse_instant(v.at) < fixed[v.target_id] for v in violations), [str(v) for v in violations]

        events = [row["event"] for row in (state.get("eventgrid") or {}).get("events", [])]
        texts = [Place.text(label, text) for text, label in stack.seen.items()]
        texts += [Place.text("summary", json.dumps(summary)), Place.text("events", json.dumps(events))]
        stack.stop()
        findings = scan(
            secret_values(state), [*state_files(stack.state_dir, exclude=[stack.state_dir / "emulator"]), *texts]
        )
        assert not findings, [str(f) for f in findings[:5]]
    finally:
        stack.stop()
