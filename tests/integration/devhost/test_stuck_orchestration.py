"""A rotation that replaces a stuck one, with the real orchestrators and scripted activities on devhost:
it abandons the stuck rotation before anything else, survives a failed abandonment, sweeps at revoke, stays
within the history budget, and the scheduler rotates stuck targets whether they are due or not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from activities.events_publish import check_event
from tests.integration.devhost.test_orchestration_lifecycle import (
    HISTORY_30_DAYS,
    HISTORY_BUDGET,
    PROVISIONED,
    Scripted,
    host,  # noqa: F401 - the fixture
    run,  # noqa: F401 - the fixture
    steps,
)
from tests.rotation_harness import local_target, read_calls

STUCK = "demo-orders-20261120t030000z-s"
OWN = "demo-orders-20261122t030000z-o"


def stuck_record(*, announced: bool, stage: str, mode: str = "scheduled") -> dict[str, Any]:
    return {
        "rotationId": STUCK if mode != "emergency" else STUCK[:-1] + "e",
        "mode": mode,
        "trigger": {"actor": {"kind": "schedule", "name": "timer", "objectId": None}, "reason": "interval-elapsed"},
        "startedAt": "2026-11-20T03:00:00.000Z",
        "stage": stage,
        "runtimeStatus": "Terminated",
        "detail": "operator cleanup",
        "announced": announced,
        "keyName": "orders-client-20261120t030000z-s",
        "version": "c" * 32,
        "previousVersion": "a" * 32,
        "reason": f"abandoned: instance Terminated at stage {stage} (operator cleanup)",
    }


def start(run: Scripted, replaces: dict[str, Any], **target: Any) -> str:  # noqa: F811
    payload = {
        "rotationId": OWN,
        "mode": "on-demand",
        "target": local_target("demo-orders", **target),
        "actor": {"kind": "principal", "name": "operator", "objectId": None},
        "reason": "test",
        "currentKeyName": "orders-client-20261120t030000z-s",
        "replaces": replaces,
    }
    run.durable.start("rotation_orchestrator", "rotation-demo-orders", payload)
    return "rotation-demo-orders"


def published(run: Scripted) -> list[dict[str, Any]]:  # noqa: F811
    return read_calls(Path(str(run.calls_path) + ".events"))


def test_rotation_replacing_one_terminated_in_overlap_closes_it_first_and_sweeps_its_keys(run: Scripted) -> None:  # noqa: F811
    run.use()
    status = run.durable.wait(start(run, stuck_record(announced=True, stage="overlap")))
    assert status["output"]["outcome"] == "completed"
    # Announced: nothing to undo, so no activity (the history budget); its RotationFailed goes out first.
    assert run.calls("abandon_rotation") == [] and run.calls()[0]["activity"] == "provision_new_key"
    failed, started, _ = run.calls("publish_events")[0]["request"]["events"]  # the announce
    assert failed["type"] == "KeyRotation.RotationFailed" and failed["data"]["rotationId"] == STUCK
    assert failed["data"]["error"] == "abandoned: instance Terminated at stage overlap (operator cleanup)"
    assert failed["data"]["stage"] == "overlap" and failed["data"]["compensated"] is False
    assert failed["data"]["actor"]["kind"] == "schedule"  # the stuck rotation's own story: who started it
    assert started["type"] == "KeyRotation.RotationStarted" and started["data"]["rotationId"] == OWN
    types = [(e["type"].split(".")[-1], e["data"]["rotationId"]) for e in published(run)]
    assert types[:2] == [("RotationFailed", STUCK), ("RotationStarted", OWN)]
    abandoned = next(s for s in status["customStatus"]["steps"] if s["step"] == "abandon")
    assert abandoned["status"] == "done" and "kept (announced)" in abandoned["detail"]
    # Its keys stay valid until this rotation's revoke, which sweeps every other key of the family.
    (revoke,) = run.calls("revoke_old_keys")
    assert revoke["request"]["sweep"] is True and revoke["request"]["revokeKeyNames"] == ["orders-client"]


def test_rotation_replacing_one_stuck_in_verifying_undoes_it_before_anything_else(run: Scripted) -> None:  # noqa: F811
    run.use(abandon_rotation=[{"abandoned": STUCK, "compensated": True, "undone": {}, "currentKeyName": None}])
    status = run.durable.wait(start(run, stuck_record(announced=False, stage="verifying")))
    assert status["output"]["outcome"] == "completed"
    calls = [c["activity"] for c in run.calls()]
    assert calls[:2] == ["abandon_rotation", "provision_new_key"]  # step 0
    (abandon,) = run.calls("abandon_rotation")
    assert abandon["request"]["replaces"]["rotationId"] == STUCK and abandon["request"]["rotationId"] == OWN
    assert "events" not in abandon["request"]  # one side effect: the undo; announce closes its story
    failed = run.calls("publish_events")[0]["request"]["events"][0]
    assert failed["data"]["rotationId"] == STUCK and failed["data"]["stage"] == "verify"
    assert failed["data"]["compensated"] is True  # what the undo reported
    types = [(e["type"].split(".")[-1], e["data"]["rotationId"]) for e in published(run)]
    assert types[:2] == [("RotationFailed", STUCK), ("RotationStarted", OWN)]


def test_a_replacement_stopped_early_closes_the_rotation_it_was_replacing_too(run: Scripted) -> None:  # noqa: F811
    run.use()
    middle = {**stuck_record(announced=False, stage="provisioning"), "rotationId": "demo-orders-20261121t030000z-s"}
    middle["replaces"] = stuck_record(announced=True, stage="overlap")
    run.durable.wait(start(run, middle))
    firsts = [(e["type"].split(".")[-1], e["data"]["rotationId"]) for e in published(run)][:3]
    assert ("RotationFailed", STUCK) in firsts and ("RotationFailed", middle["rotationId"]) in firsts


def test_rotation_replacing_one_stuck_before_its_announcement_starts_from_the_restored_key(run: Scripted) -> None:  # noqa: F811
    undone = {"disabledVersion": "c" * 32, "restoredVersion": "d" * 32, "deletedKey": True}
    run.use(
        abandon_rotation=[
            {
                "abandoned": STUCK,
                "compensated": True,
                "undone": undone,
                "currentKeyName": "orders-client-20261101t030000z-s",
            }
        ]
    )
    status = run.durable.wait(start(run, stuck_record(announced=False, stage="verifying")))
    assert status["output"]["outcome"] == "completed"
    started = next(e for e in published(run) if e["type"].endswith("RotationStarted"))
    assert started["data"]["previousKeyName"] == "orders-client-20261101t030000z-s"  # not the undone key
    assert ("abandon", "done") in steps(status)


def test_a_failed_abandonment_does_not_block_the_new_rotation(run: Scripted) -> None:  # noqa: F811
    run.use(abandon_rotation=[{"raise": "ARM unavailable"}])
    status = run.durable.wait(start(run, stuck_record(announced=False, stage="provisioning")), timeout=120)
    assert status["output"]["outcome"] == "completed"
    assert ("abandon", "failed") in steps(status)
    first, second, _ = run.calls("publish_events")[0]["request"]["events"]  # its story is still closed, first
    assert first["type"].endswith("RotationFailed") and first["data"]["rotationId"] == STUCK
    assert first["data"]["compensated"] is False  # nothing was undone: this rotation's revoke sweeps it
    assert second["type"].endswith("RotationStarted")


@pytest.mark.parametrize(("announced", "stage"), [(True, "held"), (False, "verifying")])
def test_history_stays_within_budget_when_a_thirty_day_rotation_replaces_a_stuck_one(
    run: Scripted,  # noqa: F811
    announced: bool,
    stage: str,
) -> None:
    run.use()
    instance = start(run, stuck_record(announced=announced, stage=stage), overlap="P30D", interval="P90D")
    status = run.durable.wait(instance, timeout=60)
    assert status["output"]["outcome"] == "completed"
    history = run.durable.history(instance)
    print(f"history events for a 30-day overlap replacing a stuck rotation stopped at {stage}: {len(history)}")
    # Measured: 68 (announced: no abandon activity), 72 (one abandon activity); its events ride the announce.
    assert len(history) <= HISTORY_30_DAYS + (0 if announced else 4) <= HISTORY_BUDGET, len(history)


def make_stuck(run: Scripted, target_id: str, rotation_id: str, stage: str) -> None:  # noqa: F811
    """A real rotation of `target_id`, terminated by an operator at `stage`: what the tick finds on the
    instance (start_rotation takes the `replaces` record from there, never from the tick's input)."""
    instance = f"rotation-{target_id}"
    mode = "emergency" if rotation_id.endswith("-e") else "scheduled"
    payload = {
        "rotationId": rotation_id,
        "mode": mode,
        "target": local_target(target_id),
        "actor": {"kind": "schedule", "name": "timer", "objectId": None},
        "reason": "interval-elapsed",
    }
    run.durable.start("rotation_orchestrator", instance, payload)
    run.durable.wait(instance, stage=stage, timeout=30)
    code = run.durable.code
    response = run.host.post(
        f"/runtime/webhooks/durabletask/instances/{instance}/terminate", params={**code, "reason": "operator cleanup"}
    )
    assert response.status_code == 202, response.text
    run.durable.wait(instance)


def test_scheduler_rotates_stuck_targets_now_and_resumes_a_stuck_emergency(run: Scripted) -> None:  # noqa: F811
    run.use()
    run.durable.clock(autoAdvance=False)  # the overlap waits while the operator steps in
    make_stuck(run, "demo-orders", STUCK, "overlap")  # announced: its keys are left to the next revoke
    run.use(verify_new_key=[{"raise": "host down"}])
    run.durable.clock(autoAdvance=False)  # the step's retries wait too
    emergency = {**stuck_record(announced=False, stage="verifying", mode="emergency")}
    emergency["rotationId"] = "demo-reports-export-20261120t030000z-e"
    make_stuck(run, "demo-reports-export", emergency["rotationId"], "verifying")  # before its announcement
    due = [{"targetId": "demo-orders", "reason": "interval-elapsed", "target": local_target("demo-orders")}]
    run.use(
        find_due_targets=[{"due": due, "notDue": [{"targetId": "demo-reports-export"}], "skipped": []}],
        provision_new_key=[PROVISIONED],
        check_drift=[{"drift": []}],
    )
    stuck_input = [
        {
            "targetId": "demo-orders",
            "target": local_target("demo-orders"),
            "replaces": stuck_record(announced=True, stage="overlap"),
        },
        {"targetId": "demo-reports-export", "target": local_target("demo-reports-export"), "replaces": emergency},
    ]
    run.durable.start(
        "scheduler_orchestrator",
        "scheduler-stuck",
        {
            "tick": "2026-11-22T03:00:00.000Z",
            "maxConcurrency": 2,
            "stuck": stuck_input,
            "inFlight": ["demo-orders", "demo-reports-export"],
        },
    )
    summary = run.durable.wait("scheduler-stuck", timeout=120)["output"]
    assert sorted(c["targetId"] for c in summary["completed"]) == ["demo-orders", "demo-reports-export"]
    assert {a["targetId"]: a["rotationId"] for a in summary["abandoned"]} == {
        "demo-orders": STUCK,
        "demo-reports-export": emergency["rotationId"],
    }
    started = {e["data"]["targetId"]: e["data"] for e in published(run) if e["type"].endswith("RotationStarted")}
    assert started["demo-orders"]["mode"] == "scheduled"  # a scheduled rotation replaces a stuck scheduled one
    assert started["demo-reports-export"]["mode"] == "emergency"  # a stuck emergency is resumed as one
    failed = {e["data"]["rotationId"] for e in published(run) if e["type"].endswith("RotationFailed")}
    assert failed == {STUCK, emergency["rotationId"]}  # both stuck rotations' stories are closed
    abandons = {
        c["request"]["replaces"]["rotationId"]: c["request"]["rotationId"] for c in run.calls("abandon_rotation")
    }
    assert list(abandons) == [emergency["rotationId"]]  # only the unannounced one had something to undo
    revokes = {c["request"]["rotationId"]: c["request"] for c in run.calls("revoke_old_keys")}
    emergency_revoke = revokes[started["demo-reports-export"]["rotationId"]]
    assert emergency_revoke["revokeKeyNames"] is None  # every other key of the family: it leaked


def test_a_stuck_rotation_with_a_poisoned_reason_is_still_abandoned_and_its_event_is_clean(run: Scripted) -> None:  # noqa: F811
    """Issue 12: a forged near-expiry event put a key value plus control characters into a rotation's
    reason; that rotation crashed, and every later one failed at `abandoning` building its RotationFailed."""
    key = "fr5V3_DuT3sj89nhoI-R-3L0Kmm_e87q7Dv-9QEBdNRYAzFu7A7yeA=="
    poison = f"Key Vault reported version {key}\x00\x1b[2J\u202e\u2028 of orders near expiry " + "f" * 200_000
    record = stuck_record(announced=True, stage="overlap")
    record["trigger"] = {"actor": {"kind": "hacker", "name": poison, "objectId": "x"}, "reason": poison}
    record["reason"] = record["detail"] = poison
    run.use()
    status = run.durable.wait(start(run, record))
    assert status["runtimeStatus"] == "Completed", status["output"]
    assert status["output"]["outcome"] == "completed" and ("abandon", "done") in steps(status)
    failed = next(e for e in published(run) if e["data"]["rotationId"] == STUCK)
    check_event(failed, 0)  # what publish_events checks before sending: the schema and no secret value
    assert key not in json.dumps(failed) and len(failed["data"]["reason"]) <= 1024
    assert failed["data"]["actor"]["kind"] == "system" and failed["data"]["actor"]["objectId"] is None
