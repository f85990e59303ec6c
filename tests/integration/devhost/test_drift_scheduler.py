"""The scheduler's drift step with the real orchestrators and scripted activities on devhost: a key gone
from its target is rotated in the same tick, a restored one shows in the tick's summary, running rotations
are passed to the check, and a failing check never stops the scheduled rotations."""

from __future__ import annotations

from typing import Any

from tests.integration.devhost.test_orchestration_lifecycle import (
    PROVISIONED,
    Scripted,
    host,  # noqa: F401 - the fixture
    run,  # noqa: F401 - the fixture
)
from tests.rotation_harness import local_target

TICK = "2026-11-22T03:00:00.000Z"
VERSION = "c" * 32
SECRET = "https://127.0.0.1:9/secrets/demo-reports-export-key/"


def due(target_id: str, reason: str = "interval-elapsed") -> dict[str, Any]:
    return {"targetId": target_id, "reason": reason, "target": local_target(target_id), "currentKeyName": None}


def missing(target_id: str) -> dict[str, Any]:
    return {
        "targetId": target_id,
        "outcome": "missing",
        "keyName": "reports-20261001t030000z-s",
        "rotationId": f"{target_id}-20261001t030000z-s",
        "version": VERSION,
        "secretId": SECRET + VERSION,
        "reason": "key reports-20261001t030000z-s is no longer on the target",
        "target": local_target(target_id),
    }


RESTORED = {
    "targetId": "demo-orders",
    "outcome": "restored",
    "keyName": "orders-client",
    "rotationId": "demo-orders-20261001t030000z-s",
    "version": "d" * 32,
    "secretId": "https://127.0.0.1:9/secrets/demo-orders-client-key/" + "d" * 32,
    "repairOf": "a" * 32,
    "reason": "key orders-client had another value on the target",
}


def tick(run: Scripted, instance: str, **request: Any) -> dict[str, Any]:  # noqa: F811
    run.durable.start("scheduler_orchestrator", instance, {"tick": TICK, "maxConcurrency": 2, **request})
    status = run.durable.wait(instance, timeout=90)
    assert status["runtimeStatus"] == "Completed", status
    return status["output"]


def test_key_missing_on_target_is_rotated_in_the_same_tick_and_restored_shows_in_the_summary(
    run: Scripted,  # noqa: F811
) -> None:
    run.use(
        find_due_targets=[{"due": [], "notDue": [{"targetId": "demo-orders"}], "skipped": []}],
        check_drift=[{"checkId": "drift-20261122t030000z", "drift": [RESTORED, missing("demo-reports-export")]}],
    )
    summary = tick(run, "scheduler-drift-1", inFlight=["demo-orders-master"])

    [checked] = run.calls("check_drift")
    assert checked["request"]["inFlight"] == ["demo-orders-master"]  # running rotations are never touched
    assert checked["request"]["checkId"] == "drift-20261122t030000z"
    assert summary["drift"] == [
        {k: RESTORED[k] for k in ("targetId", "outcome", "keyName", "version", "repairOf", "reason")},
        {
            "targetId": "demo-reports-export",
            "outcome": "missing",
            "keyName": "reports-20261001t030000z-s",
            "version": VERSION,
            "reason": "key reports-20261001t030000z-s is no longer on the target",
        },
    ]
    assert summary["due"] == ["demo-reports-export"]  # not due by age: queued by the drift
    assert [c["targetId"] for c in summary["completed"]] == ["demo-reports-export"]
    [provisioned] = run.calls("provision_new_key")
    assert provisioned["request"]["targetId"] == "demo-reports-export"
    rotation = run.durable.status("rotation-demo-reports-export")
    assert rotation["input"]["reason"].startswith("drift: key missing")
    assert rotation["input"]["currentKeyName"] == "reports-20261001t030000z-s"
    assert "driftError" not in summary


def test_a_missing_key_on_a_due_target_is_rotated_once(run: Scripted) -> None:  # noqa: F811
    run.use(
        find_due_targets=[{"due": [due("demo-reports-export")], "notDue": [], "skipped": []}],
        check_drift=[{"drift": [missing("demo-reports-export")]}],
    )
    summary = tick(run, "scheduler-drift-2")
    assert summary["due"] == ["demo-reports-export"]
    assert len(run.calls("provision_new_key")) == 1
    assert run.durable.status("rotation-demo-reports-export")["input"]["reason"].startswith("interval-elapsed")


def test_a_failing_drift_check_never_stops_the_scheduled_rotations(run: Scripted) -> None:  # noqa: F811
    run.use(
        find_due_targets=[{"due": [due("demo-orders")], "notDue": [], "skipped": []}],
        check_drift=[{"raise": "Key Vault unavailable"}],
        provision_new_key=[PROVISIONED],
    )
    summary = tick(run, "scheduler-drift-3")
    assert "Key Vault unavailable" in summary["driftError"] and summary["drift"] == []
    assert len(run.calls("check_drift")) >= 2  # retried before giving up
    assert [c["targetId"] for c in summary["completed"]] == ["demo-orders"]


def test_drift_events_the_check_found_are_published_by_the_tick(run: Scripted) -> None:  # noqa: F811
    event = {"id": "e1", "type": "KeyRotation.DriftDetected", "subject": "targets/demo-orders"}
    run.use(
        find_due_targets=[{"due": [], "notDue": [], "skipped": []}],
        check_drift=[{"drift": [RESTORED], "events": [event]}],
    )
    summary = tick(run, "scheduler-drift-4")
    assert [c["request"]["events"] for c in run.calls("publish_events")] == [[event]]
    assert summary["drift"][0]["outcome"] == "restored" and "driftError" not in summary
