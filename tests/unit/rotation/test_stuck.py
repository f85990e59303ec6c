"""Stuck rotations, the pure parts: what counts as stuck, the `replaces` record every door builds, what the
API shows, how the scheduler queues stuck targets, and the stuck rotation's RotationFailed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import azure.durable_functions as df
import pytest

from activities.events_publish import check_event
from orchestrations.predecessor import Predecessor, PredecessorError
from orchestrations.scheduler import start_request
from orchestrations.scheduler_discovery import with_stuck
from rotation import stuck
from rotation.policy import parse_policy, parse_target
from tests.rotation_harness import LOCAL_POLICY, PLACEHOLDER_ENV, local_target
from triggers import schedule
from triggers.api_views import Snapshot, rotation_view, target_view

KEY = "fr5V3_DuT3sj89nhoI-R-3L0Kmm_e87q7Dv-9QEBdNRYAzFu7A7yeA=="
RID = "demo-orders-20260102t030000z-s"
TRIGGER = {"actor": {"kind": "schedule", "name": "timer", "objectId": None}, "reason": "interval-elapsed"}
OVERLAP = {
    "rotationId": RID,
    "targetId": "demo-orders",
    "mode": "scheduled",
    "stage": "overlap",
    "keyName": "orders-client-20260102t030000z-s",
    "version": "b" * 32,
    "previousKeyName": "orders-client",
    "previousVersion": "a" * 32,
    "trigger": TRIGGER,
    "steps": [
        {"step": "requested", "status": "done", "at": "2026-01-02T03:00:00.000Z"},
        {"step": "provision", "status": "done", "at": "2026-01-02T03:00:02.000Z"},
        {"step": "announce", "status": "done", "at": "2026-01-02T03:00:03.000Z"},
    ],
}
VERIFYING = {**OVERLAP, "stage": "verifying", "steps": OVERLAP["steps"][:2]}


def status(runtime: str, custom: dict[str, Any] | None, output: Any = None, given: Any = None) -> Any:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return SimpleNamespace(
        instance_id="rotation-demo-orders",
        runtime_status=df.OrchestrationRuntimeStatus[runtime],
        custom_status=custom,
        output=output,
        input_=given or {"rotationId": RID, "mode": "scheduled", **TRIGGER},
        created_time=stamp,
        last_updated_time=stamp,
    )


def snap(runtime: str, custom: dict[str, Any] | None, output: Any = None, given: Any = None) -> Snapshot:
    found = Snapshot.of(status(runtime, custom, output, given))
    assert found is not None
    return found


# -- what is stuck ----------------------------------------------------------------------------------


def test_a_rotation_terminated_in_overlap_is_stuck_and_keeps_its_announced_key() -> None:
    record = snap("Terminated", OVERLAP, "operator cleanup").replaces()
    assert record is not None
    assert record["rotationId"] == RID and record["announced"] is True
    assert record["stage"] == "overlap" and record["runtimeStatus"] == "Terminated"
    assert record["reason"] == "abandoned: instance Terminated at stage overlap (operator cleanup)"
    assert record["trigger"] == TRIGGER and record["startedAt"] == "2026-01-02T03:00:00.000Z"
    assert (record["keyName"], record["version"], record["previousVersion"]) == (
        OVERLAP["keyName"],
        "b" * 32,
        "a" * 32,
    )


def test_a_rotation_failed_before_its_announcement_is_stuck_and_unannounced() -> None:
    failure = f"Orchestrator function 'rotation_orchestrator' failed: boom {KEY}\n  at line 3"
    record = snap("Failed", VERIFYING, failure).replaces()
    assert record is not None and record["announced"] is False and record["stage"] == "verifying"
    assert KEY not in json.dumps(record)  # the failure text is redacted and kept to one line
    assert "line 3" not in record["reason"] and record["reason"].startswith("abandoned: instance Failed at stage")


def test_a_rotation_that_failed_and_could_not_undo_its_new_key_is_left_to_the_next_one() -> None:
    steps = [
        *VERIFYING["steps"],
        {"step": "compensate", "status": "failed", "at": "2026-01-02T03:00:05.000Z", "detail": "SafeError: HTTP 503"},
        {"step": "verify", "status": "failed", "at": "2026-01-02T03:00:05.000Z", "detail": "probe refused"},
    ]
    ended = snap("Completed", {**VERIFYING, "stage": "failed", "steps": steps}, {"outcome": "failed"})
    record = ended.replaces()
    assert record is not None and record["announced"] is False and record["stage"] == "compensating"
    assert record["reason"] == "abandoned: it failed and could not undo its new key (SafeError: HTTP 503)"
    undone = [{**s, "status": "done"} if s["step"] == "compensate" else s for s in steps]
    assert snap("Completed", {**VERIFYING, "stage": "failed", "steps": undone}).replaces() is None


@pytest.mark.parametrize(
    ("runtime", "custom"),
    [
        ("Running", OVERLAP),  # running: the door refuses (409) or supersedes, never abandons
        ("Completed", {**OVERLAP, "stage": "completed"}),
        ("Terminated", {**OVERLAP, "stage": "completed"}),  # terminated after its last step: nothing left
        ("Failed", {**OVERLAP, "stage": "failed"}),  # it published RotationFailed itself
        ("Terminated", {**OVERLAP, "stage": "superseded"}),
        ("Terminated", None),  # never ran a step (terminated while pending)
        ("Failed", {"stage": "provisioning"}),  # no rotation id: nothing to name in an event
    ],
)
def test_what_is_not_stuck(runtime: str, custom: dict[str, Any] | None) -> None:
    found = snap(runtime, custom)
    assert not found.stuck and found.replaces() is None


def test_a_rotation_stopped_while_abandoning_passes_its_own_predecessor_on() -> None:
    original = snap("Terminated", OVERLAP).replaces()
    middle = {**OVERLAP, "rotationId": "demo-orders-20260103t030000z-s", "stage": "abandoning", "steps": []}
    given = {"rotationId": middle["rotationId"], "mode": "scheduled", "replaces": original}
    assert snap("Terminated", middle, "x", given).replaces() == original
    # Stopped later, at its own provisioning: it is the one to abandon, and it names the one it replaced
    # (whose RotationFailed it may not have published yet); one level only.
    later = snap(
        "Terminated", {**middle, "stage": "provisioning"}, "x", {**given, "replaces": {**original, "replaces": {}}}
    )
    record = later.replaces()
    assert record is not None and record["rotationId"] == middle["rotationId"]
    assert record["replaces"] == original and "replaces" not in record["replaces"]
    chained = Predecessor.from_json(record, "demo-orders", "demo-orders-20260104t030000z-s")
    assert chained.earlier is not None and chained.earlier.rotation_id == RID


def test_an_unattended_door_resumes_a_stuck_emergency_as_an_emergency() -> None:
    emergency = snap("Failed", {**VERIFYING, "mode": "emergency"}).replaces()
    assert stuck.successor_mode(emergency, "scheduled") == "emergency"
    assert stuck.successor_mode(snap("Failed", VERIFYING).replaces(), "scheduled") == "scheduled"
    assert stuck.successor_mode(None, "scheduled") == "scheduled"


# -- what the API shows -----------------------------------------------------------------------------


def test_a_stuck_rotation_is_shown_in_flight_with_what_happens_next() -> None:
    target = parse_target(local_target("demo-orders"))
    view = target_view(target, snap("Terminated", OVERLAP, "operator cleanup"))
    in_flight = view["inFlight"]
    assert in_flight["rotationId"] == RID and in_flight["runtimeStatus"] == "Terminated"
    assert in_flight["stage"] == "overlap" and in_flight["stuck"]["announced"] is True
    assert "abandons it" in in_flight["stuck"]["next"]
    assert view["currentKeyName"] == OVERLAP["keyName"]  # announced: consumers were told to use it
    rotation = rotation_view(snap("Terminated", OVERLAP, "operator cleanup"))
    assert rotation["stuck"]["reason"].startswith("abandoned: instance Terminated at stage overlap")
    assert "stuck" not in rotation_view(snap("Running", OVERLAP))


# -- the scheduler's queue --------------------------------------------------------------------------


def test_stuck_targets_join_the_due_queue_with_their_replaces_record() -> None:
    record = snap("Terminated", OVERLAP).replaces()
    emergency_rec = {**snap("Failed", VERIFYING).replaces(), "mode": "emergency"}  # type: ignore[dict-item]
    due = [{"targetId": "demo-orders", "reason": "interval-elapsed", "target": {"id": "demo-orders"}}]
    stuck_input = [
        {"targetId": "demo-orders", "target": {"id": "demo-orders"}, "replaces": record},
        {"targetId": "demo-reports-export", "target": {"id": "demo-reports-export"}, "replaces": emergency_rec},
        {"targetId": "ghost", "replaces": record},  # no target document: cannot be rotated, left out
    ]
    queue = with_stuck(due, stuck_input)
    assert [i["targetId"] for i in queue] == ["demo-orders", "demo-reports-export"]
    orders, reports = queue
    assert orders["replaces"] == record and orders["mode"] == "scheduled"
    assert orders["reason"] == f"stuck rotation {RID} abandoned"
    assert reports["mode"] == "emergency" and reports["reason"].startswith("resumes emergency rotation")
    request = start_request(reports, "demo-reports-export-20260104t030000z-e", "tick", "2026-01-04T03:00:00Z")
    assert request.reason == f"{reports['reason']} (tick tick)"
    assert "replaces" not in request.to_json()  # start_rotation takes it from the instance, never the tick
    assert with_stuck(due, None) == due


def test_the_timer_lists_stuck_enabled_targets_and_survives_an_unreadable_instance() -> None:
    policy = parse_policy(json.loads(LOCAL_POLICY.read_text()), PLACEHOLDER_ENV)
    stuck_status = status("Terminated", OVERLAP, "operator cleanup")

    class Client:
        async def get_status(self, instance_id: str, show_input: bool = False) -> Any:
            assert show_input  # the input carries an inherited predecessor
            if instance_id == "rotation-demo-orders":
                return stuck_status
            if instance_id == "rotation-demo-reports-export":
                raise ConnectionError("durable extension unavailable")
            return SimpleNamespace(runtime_status=None)

    ids = [t.id for t in policy]
    instances = asyncio.run(schedule.rotation_instances(Client(), ids))  # type: ignore[arg-type]
    assert "demo-reports-export" not in instances  # unknown: neither idle nor stuck
    assert instances["demo-orders"] is not None and all(instances[t] is None for t in instances if t != "demo-orders")
    listed = schedule.stuck_targets(policy, instances)
    assert [s["targetId"] for s in listed] == ["demo-orders"]
    assert listed[0]["target"]["id"] == "demo-orders" and listed[0]["replaces"]["rotationId"] == RID

    # What the timer hands the scheduler: the stuck list, and the targets drift repair must not touch.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schedule, "current_policy", lambda: policy)
        looked = asyncio.run(schedule.look_at_rotations(Client()))  # type: ignore[arg-type]
    assert [s["targetId"] for s in looked["stuck"]] == ["demo-orders"]
    assert looked["inFlight"] == ["demo-orders", "demo-reports-export"]  # stuck, and unreadable


# -- the stuck rotation's RotationFailed ------------------------------------------------------------


def test_the_stuck_rotations_failure_event_is_its_own_and_valid() -> None:
    record = snap("Terminated", OVERLAP, "operator cleanup").replaces()
    predecessor = Predecessor.from_json(record, "demo-orders", "demo-orders-20260104t030000z-s")
    at = datetime(2026, 1, 4, 3, 0, 1, tzinfo=UTC)
    event = check_event(predecessor.failed_event("demo-orders", at), 0)
    data = event["data"]
    assert data["rotationId"] == RID and data["stage"] == "overlap" and data["compensated"] is False
    assert data["error"] == "abandoned: instance Terminated at stage overlap (operator cleanup)"
    assert data["actor"] == TRIGGER["actor"] and data["startedAt"] == "2026-01-02T03:00:00.000Z"
    again = Predecessor.from_json(record, "demo-orders", "demo-orders-20260105t030000z-o").failed_event(
        "demo-orders", at
    )
    assert again["id"] == event["id"]  # whoever abandons it, the event is the same one
    unannounced = Predecessor.from_json(
        snap("Failed", VERIFYING).replaces(), "demo-orders", "demo-orders-20260104t030000z-s"
    )
    assert unannounced.failed_event("demo-orders", at)["data"]["compensated"] is True  # the plan: undo it


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ("x", "replaces"),
        ({"rotationId": "nope", "stage": "overlap"}, "replaces.rotationId"),
        ({"rotationId": "demo-reports-export-20260102t030000z-s", "stage": "overlap"}, "replaces.rotationId"),
        ({"rotationId": "demo-orders-20260104t030000z-s", "stage": "overlap"}, "replaces.rotationId"),  # itself
        ({"rotationId": RID}, "replaces.stage"),
    ],
)
def test_a_replaces_record_that_names_no_stuck_rotation_of_this_target_is_refused(record: Any, field: str) -> None:
    with pytest.raises(PredecessorError, match=field.replace(".", r"\.") + ":"):
        Predecessor.from_json(record, "demo-orders", "demo-orders-20260104t030000z-s")


def test_a_poisoned_reason_from_before_issue_12_is_neither_shown_nor_passed_on() -> None:
    """A rotation started by a forged near-expiry event carried a key value and control characters in its
    reason: the API's view and the `replaces` record its successor carries show it cleaned and masked."""
    poisoned = {**OVERLAP, "trigger": {**TRIGGER, "reason": f"version {KEY}\x1b[2J\u202e" + "f" * 5000}}
    stopped = snap("Terminated", poisoned, "operator cleanup")
    shown = rotation_view(stopped)["trigger"]["reason"]
    record = stopped.replaces()
    assert record is not None
    for text in (shown, record["trigger"]["reason"]):
        assert KEY not in text and "\x1b" not in text and "\u202e" not in text and len(text) <= 1024
