"""A give-up is loud (issue 5): when a step's durable retries are exhausted the rotation ends with a reason
naming the step, the operation and the fault, publishes RotationFailed (or holds, for the gate's query),
logs one ERROR line — and it retried exactly as the target's policy said (`calls.step`). Real
orchestrator, scripted activities on devhost with a virtual clock (tests/rotation_app)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.integration.devhost.test_orchestration_lifecycle import (
    PROVISIONED,
    Scripted,
    host,  # noqa: F401 - the fixture
    run,  # noqa: F401 - the fixture
    steps,
)

THROTTLED = (
    "list host keys on /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-demo/providers"
    "/Microsoft.Web/sites/demo-orders-api: CallGaveUp HTTP 429: throttled: Retry-After 3600 s exceeds the "
    "policy's calls.maxRetryAfter (60 s)"
)
STEP = {"attempts": 3, "firstInterval": "PT10S", "backoff": 3, "maxInterval": "PT1M"}


def published(run: Scripted) -> list[dict[str, Any]]:  # noqa: F811
    path = Path(str(run.calls_path) + ".events")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def retry_waits(history: list[dict[str, Any]]) -> list[float]:
    """Seconds from each failed attempt to the durable timer that schedules the next one."""
    waits: list[float] = []
    failed_at: datetime | None = None
    for event in history:
        kind = event.get("EventType")
        if kind in ("TaskFailed", 6):
            failed_at = datetime.fromisoformat(event["Timestamp"].replace("Z", "+00:00"))
        elif kind in ("TimerCreated", 10) and failed_at is not None:
            fire_at = datetime.fromisoformat(event["FireAt"].replace("Z", "+00:00"))
            waits.append(round((fire_at - failed_at).total_seconds()))
            failed_at = None
    return waits


def test_a_provision_that_gives_up_ends_failed_naming_step_operation_and_fault(
    run: Scripted,  # noqa: F811
    host: Any,  # noqa: F811
) -> None:
    run.use(provision_new_key=[{"raise": THROTTLED}])
    instance = run.start(calls={"step": STEP})
    status = run.durable.wait(instance, timeout=60)

    output = status["output"]
    assert output["outcome"] == "failed" and output["error"] == THROTTLED  # not the host's wrapping
    assert ("provision", "failed") in steps(status)
    detail = next(s["detail"] for s in status["customStatus"]["steps"] if s["step"] == "provision")
    assert detail == THROTTLED and "Activity function" not in detail
    # Retried exactly as the target's policy says: 3 attempts, 10 s then 30 s apart (backoff 3), and the
    # give-up surfaces after one more timer (DTFx), capped by maxInterval (PT1M).
    assert len(run.calls("provision_new_key")) == 3
    assert retry_waits(run.durable.history(instance)) == [10, 30, 60]
    # Compensated before anyone is told, then the story closes with RotationFailed naming the fault.
    order = [c["activity"] for c in run.calls()]
    assert order.index("compensate_rotation") < len(order) - 1 and order[-1] == "publish_events"
    failed = [e for e in published(run) if e["type"].endswith("RotationFailed")]
    assert len(failed) == 1 and failed[0]["data"]["stage"] == "provision"
    assert "Retry-After 3600 s exceeds" in failed[0]["data"]["error"]
    # The publish that told subscribers carried the target's call budget.
    assert run.calls("publish_events")[-1]["request"]["calls"]["step"]["attempts"] == 3
    devhost = host[0]
    logged = [line for line in devhost.output().splitlines() if "gave up" in line or "failed at step" in line]
    assert any("ERROR" in line and "provision" in line and "Retry-After 3600 s" in line for line in logged), logged


def test_the_built_in_step_budget_applies_without_a_calls_section(run: Scripted) -> None:  # noqa: F811
    run.use(revoke_old_keys=[{"raise": "delete key orders-client on /subscriptions/x: HttpResponseError HTTP 503"}])
    instance = run.start()
    status = run.durable.wait(instance, timeout=90)
    assert status["output"]["outcome"] == "failed" and status["output"]["compensated"] is False
    assert len(run.calls("revoke_old_keys")) == 5
    assert retry_waits(run.durable.history(instance))[-5:] == [15, 30, 60, 120, 120]  # PT15S x2, at most PT2M


def test_a_gate_query_that_gives_up_holds_a_scheduled_rotation_naming_the_fault(run: Scripted) -> None:  # noqa: F811
    error = "query workspace: CallGaveUp HTTP 429: throttled: Retry-After 900 s exceeds the policy's 60 s"
    run.use(count_auth_failures=[{"raise": error}])
    instance = run.start(calls={"step": {"attempts": 5, "firstInterval": "PT5S"}})
    held = run.durable.wait(instance, stage="held", timeout=60)
    reason = held["customStatus"]["hold"]["reason"]
    assert reason == f"the failure signal could not be read: {error}"
    assert len(run.calls("count_auth_failures")) == 3  # queries: at most 3 attempts whatever the policy
    # The stage shows "held" before the RotationHeld publish ends: on a loaded machine, wait for it.
    deadline = time.monotonic() + 30
    while not (held_events := [e for e in published(run) if e["type"].endswith("RotationHeld")]):
        assert time.monotonic() < deadline, "RotationHeld was never published"
        time.sleep(0.05)
    assert "Retry-After 900 s" in json.dumps(held_events[-1]["data"])
    run.durable.raise_event(instance, "Abort", {"actor": {"name": "alice"}})
    assert run.durable.wait(instance)["output"]["outcome"] == "aborted"


def test_a_verify_that_gives_up_compensates_with_the_provisioned_version(run: Scripted) -> None:  # noqa: F811
    reason = "probe of demo-orders no verdict after 12 attempt(s) (last: GET /api/health -> 503)"
    run.use(verify_new_key=[{"raise": reason}])
    status = run.durable.wait(run.start(), timeout=60)
    assert status["output"]["outcome"] == "failed" and status["output"]["error"] == reason
    assert len(run.calls("verify_new_key")) == 2  # verify: at most 2 attempts (the probe retries inside)
    (compensate,) = run.calls("compensate_rotation")
    assert compensate["request"]["version"] == PROVISIONED["version"]
    assert run.event_types() == ["RotationStarted", "RotationFailed"]  # NewKeyAvailable never went out
