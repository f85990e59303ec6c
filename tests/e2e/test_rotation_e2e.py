"""End to end with the real app, the real activities and the emulators, through devhost.

`tests/e2e/test_demo.py` runs the happy path (timer → scheduler → rotations, a HELD rotation approved) with
every final-state, I1 and I2 check; here: a `kill -9` at every stage boundary of a rotation, and a
target that never accepts its new key.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from emulators.core.invariants import Place, TargetRef, check_i2, parse_instant, scan, secret_values, state_files
from rotation.naming import Mode, rotation_id
from rotation.policy import Policy, load_policy
from tests.rotation_harness import deploy_target, signed_input
from tools import demo_report
from tools.demo_seed import create_operator_keys, seed_sites
from tools.devhost_launcher import POLICY, DemoStack

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("provisioning", "verifying", "overlap", "gate", "revoking", "watching")


def policy_for(stack: DemoStack) -> Policy:
    env = {"KEY_VAULT_URL": stack.emulator["keyVault"], **stack.app_settings()}
    return load_policy(ROOT / POLICY, env)


def wait_for(stack: DemoStack, instance: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = stack.status(instance)
        if status and status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            return status
        time.sleep(0.05)
    raise TimeoutError(f"{instance} did not finish: {stack.tail()}")


def event_types(state: dict[str, Any], target_id: str) -> list[str]:
    """Types received for the target, in order, a re-published id (at-least-once) counted once."""
    return [kind for kind, _ in demo_report.event_types((state.get("eventgrid") or {}).get("events", []), target_id)]


def site_keys(state: dict[str, Any], target: Any) -> dict[str, str]:
    """Live keys of the target's scope from the emulator snapshot (name -> value)."""
    return demo_report.live_keys(state, target)


def latest_enabled(state: dict[str, Any], target: Any) -> dict[str, Any] | None:
    enabled = [v for v in demo_report.secret_versions(state, target) if v.get("enabled")]
    return enabled[-1] if enabled else None


def check_invariants(stack: DemoStack, policy: Policy, state: dict[str, Any], texts: list[Place]) -> None:
    changes = stack.control_json("changes")["value"]
    served = stack.control_json("requests")["value"]
    violations = check_i2(changes, [TargetRef.from_target(t) for t in policy], served)
    assert not violations, [str(v) for v in violations[:5]]
    stack.stop()
    findings = scan(
        secret_values(state), [*state_files(stack.state_dir, exclude=[stack.state_dir / "emulator"]), *texts]
    )
    assert not findings, [str(f) for f in findings[:5]]


def test_a_kill_at_every_stage_boundary_still_completes_the_rotation(tmp_path: Path) -> None:
    stack = DemoStack(tmp_path / "state")
    stack.start()
    try:
        policy = policy_for(stack)
        targets = [t for t in policy if t.schedulable]
        seed_sites(stack, targets)
        create_operator_keys(stack, targets)
        assert stack.run_function("rotation_timer") == 202
        crashed: list[str] = []
        deadline = time.monotonic() + 120
        final: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            status = stack.status("rotation-demo-orders")
            if status is None:
                time.sleep(0.02)
                continue
            if status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
                final = status
                break
            stage = (status.get("customStatus") or {}).get("stage")
            if stage in STAGES and stage not in crashed:
                crashed.append(stage)
                assert stack.process is not None
                stack.process.kill()  # SIGKILL: no cleanup, in-flight work is left as it was
                stack.process.wait()
                stack.start()
            time.sleep(0.02)
        assert final is not None, f"rotation did not finish; crashed at {crashed}; {stack.tail()}"
        assert final["runtimeStatus"] == "Completed" and final["output"]["outcome"] == "completed", final
        assert len(crashed) >= 4, crashed  # stages that pass in milliseconds can slip between two polls
        reports = wait_for(stack, "rotation-demo-reports-export")
        assert reports["runtimeStatus"] == "Completed"

        state = stack.control_json("state")
        orders = policy.target("demo-orders")
        assert orders is not None
        keys = site_keys(state, orders)
        new_key = final["output"]["keyName"]
        assert "orders-client" not in keys and new_key in keys  # old key gone, new key live
        latest = latest_enabled(state, orders)
        assert latest is not None and latest["value"] == keys[new_key]
        # At-least-once: a step re-run after a kill may publish its events again (same ids); order holds.
        types = event_types(state, "demo-orders")
        assert types == ["RotationStarted", "NewKeyAvailable", "OldKeyRevoked", "RotationCompleted"], types

        # A second rotation replaces the first: its key is deleted and its Key Vault version disabled.
        first_version = final["output"]["version"]
        start_rotation(stack, orders, rotation_id_now(stack, "demo-orders"))
        second = wait_for(stack, "rotation-demo-orders")
        assert second["output"]["outcome"] == "completed", second
        state = stack.control_json("state")
        keys = site_keys(state, orders)
        assert new_key not in keys and second["output"]["keyName"] in keys
        versions = {v["version"]: v for v in demo_report.secret_versions(state, orders)}
        assert versions[first_version]["enabled"] is False
        assert versions[first_version]["tags"]["stage"] == "revoked"
        latest = latest_enabled(state, orders)
        assert latest is not None and latest["version"] == second["output"]["version"]
        assert latest["value"] == keys[second["output"]["keyName"]]

        texts = [Place.text(label, text) for text, label in stack.seen.items()]
        texts += [Place.text("final status", json.dumps(final)), Place.text("second status", json.dumps(second))]
        check_invariants(stack, policy, state, texts)
    finally:
        stack.stop()


def policy_copy(tmp_path: Path) -> str:
    """A copy of the local policy a test may redeploy (`deploy_target`)."""
    path = tmp_path / "rotation-policy.json"
    shutil.copy(POLICY, path)
    return str(path)


def rotation_id_now(stack: DemoStack, target_id: str, mode: Mode = "on-demand") -> str:
    """A rotation id stamped with the stack's virtual clock: ids carry their start time, which decides when a
    target is next due, so a fixed date would make the test depend on the calendar."""
    return rotation_id(target_id, mode, parse_instant(stack.clock()["now"]))


def start_rotation(stack: DemoStack, target: Any, rotation_id: str, **target_overrides: Any) -> None:
    """An on-demand rotation with a chosen id, started on the Durable HTTP API with the input the app's
    API would write (it names the target and is signed with the stack's key). Overrides of the target's
    definition are deployed into the stack's policy first (its `policy` must be a copy: `policy_copy`)."""
    definition = {**target.to_json(), **target_overrides}
    if target_overrides:
        deploy_target(Path(stack.policy), definition)
    request = {
        "rotationId": rotation_id,
        "mode": "on-demand",
        "target": definition,
        "actor": {"kind": "principal", "name": "operator", "objectId": None},
        "reason": "test",
    }
    payload = signed_input(request, str(stack.emulator["appSigningKey"]))
    response = stack._host(
        "POST",
        f"/runtime/webhooks/durabletask/orchestrators/rotation_orchestrator/rotation-{target.id}",
        key=str(stack.endpoints["systemKeys"]["durabletask_extension"]),
        json=payload,
    )
    assert response.status_code == 202, response.text


def test_a_target_that_never_accepts_the_new_key_keeps_its_old_key(tmp_path: Path) -> None:
    stack = DemoStack(tmp_path / "state", policy=policy_copy(tmp_path))
    stack.start()
    try:
        policy = policy_for(stack)
        orders = policy.target("demo-orders")
        assert orders is not None
        seed_sites(stack, [orders])
        create_operator_keys(stack, [orders])
        app = orders.function_app
        # A target that keeps refusing the new key: every probe gets 401.
        rule = {"operation": "target.invoke", "status": 401, "match": app.name, "times": None}
        stack.control("POST", "faults", json=rule).raise_for_status()
        before = site_keys(stack.control_json("state"), orders)
        probe = {**orders.to_json()["probe"], "attempts": 2, "delay": "PT1S"}
        start_rotation(stack, orders, rotation_id_now(stack, "demo-orders"), probe=probe)
        final = wait_for(stack, "rotation-demo-orders", timeout=120)
        assert final["output"]["outcome"] == "failed" and final["output"]["compensated"] is True
        state = stack.control_json("state")
        assert site_keys(state, orders) == before  # the new key was deleted, the old one untouched
        assert latest_enabled(state, orders) is None  # nothing was ever stored in Key Vault (I2)
        assert event_types(state, "demo-orders") == ["RotationStarted", "RotationFailed"]
        texts = [Place.text(label, text) for text, label in stack.seen.items()]
        check_invariants(stack, policy, state, texts)
    finally:
        stack.stop()


def test_an_event_grid_outage_during_provision_delays_events_but_rolls_nothing_back(tmp_path: Path) -> None:
    stack = DemoStack(tmp_path / "state", policy=policy_copy(tmp_path))
    stack.start()
    try:
        policy = policy_for(stack)
        orders = policy.target("demo-orders")
        assert orders is not None
        seed_sites(stack, [orders])
        create_operator_keys(stack, [orders])
        # Every publish attempt of the provision step fails (the SDK's own retries included).
        rule = {"operation": "eventgrid.publish", "status": 503, "times": 4}
        stack.control("POST", "faults", json=rule).raise_for_status()
        start_rotation(stack, orders, rotation_id_now(stack, "demo-orders"), overlap="PT1H")
        final = wait_for(stack, "rotation-demo-orders", timeout=120)
        assert final["output"]["outcome"] == "completed", final
        state = stack.control_json("state")
        # RotationStarted was sent late, ahead of the announcement: subscribers still see it first.
        assert event_types(state, "demo-orders") == [
            "RotationStarted",
            "NewKeyAvailable",
            "OldKeyRevoked",
            "RotationCompleted",
        ]
        assert list(k for k in site_keys(state, orders) if k.startswith("orders-client")) == [
            final["output"]["keyName"]
        ]
        (fault,) = stack.control_json("faults")["value"]
        assert fault["hits"] == 4  # the outage really happened, inside the provision step
        history = stack.admin("GET", "/admin/devhost/durable/instances/rotation-demo-orders/history").json()
        provisions = [e for e in history if e.get("EventType") == 4 and e.get("Name") == "provision_new_key"]
        assert len(provisions) == 1  # the step was not failed and retried over an event it could not send
    finally:
        stack.stop()
