"""The scheduler's contracts (rotation/scheduling.py): what a tick sends and reads back keeps the wire keys
older histories hold, and a scheduler input nobody checked is read without failing the tick."""

from __future__ import annotations

import pytest

from rotation.scheduling import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    DueQuery,
    DueTargets,
    Progress,
    ProgressRequest,
    StartAnswer,
    StartRequest,
    Tick,
)

RID = "demo-orders-20261122t030000z-s"


def test_a_start_request_names_the_target_and_rotation_and_never_carries_a_definition_or_replaces() -> None:
    request = StartRequest("demo-orders", RID, "interval-elapsed (tick t)", "2026-11-22T03:00:00.000Z", "orders-a")
    wire = request.to_json()
    assert set(wire) == {"targetId", "rotationId", "reason", "since", "currentKeyName"}
    assert StartRequest.from_json(wire) == request


def test_start_answers_recorded_before_the_contract_existed_still_read_the_same() -> None:
    recorded = [
        {"started": True, "targetId": "demo-orders"},
        {"started": False, "targetId": "demo-orders", "notInPolicy": True},
        {"started": False, "targetId": "demo-orders", "refused": "rotation id 'x' is not a scheduled rotation"},
        {"started": False, "targetId": "demo-orders", "rotatedSince": RID},
        {"started": False, "targetId": "demo-orders", "inFlight": {"rotationId": RID, "stage": "held"}},
    ]
    for wire in recorded:
        assert StartAnswer.from_json(wire).to_json() == wire
    assert StartAnswer.from_json(recorded[4]).in_flight == {"rotationId": RID, "stage": "held"}


def test_progress_entries_round_trip_and_the_request_lists_started_rotations_in_target_order() -> None:
    ended = {"targetId": "demo-orders", "rotationId": RID, "state": "ended", "runtime": "Completed", "outcome": "ok"}
    assert Progress.from_json(ended).to_json() == ended
    replaced = Progress.from_json({"targetId": "a-1", "rotationId": RID, "state": "replaced", "by": "other"})
    assert replaced.by == "other" and replaced.outcome is None
    wire = ProgressRequest({"zz-target": "z", "aa-target": "a"}).to_json()
    assert [r["targetId"] for r in wire["rotations"]] == ["aa-target", "zz-target"]
    assert ProgressRequest.from_json(wire).started == {"aa-target": "a", "zz-target": "z"}


def test_a_tick_input_written_by_hand_is_read_with_defaults_and_bounded_concurrency() -> None:
    assert Tick.from_json(None) == Tick()
    odd = Tick.from_json({"maxConcurrency": "1000", "stuck": "nope", "inFlight": "x", "maxStartsPerMinute": []})
    assert odd.max_concurrency == MAX_CONCURRENCY and odd.stuck == () and odd.in_flight is None
    assert odd.max_starts_per_minute is None
    assert Tick.from_json({"maxConcurrency": "eight"}).max_concurrency == DEFAULT_CONCURRENCY
    assert Tick.from_json({"maxConcurrency": 0}).max_concurrency == 1


def test_a_tick_carried_across_continue_as_new_reads_back_as_it_was_written() -> None:
    stuck = ({"targetId": "demo-orders", "replaces": {"rotationId": RID}},)
    tick = Tick("2026-11-22T03:00:00.000Z", True, 4, "30", stuck, ("demo-orders",), {"queue": [], "started": {}})
    assert Tick.from_json(tick.to_json()) == tick
    assert "resume" not in Tick("2026-11-22T03:00:00.000Z").to_json()


def test_a_second_read_replaces_only_the_targets_whose_vault_could_not_be_read() -> None:
    first = DueTargets.from_json(
        {
            "due": [{"targetId": "a-due", "reason": "interval-elapsed"}],
            "notDue": [],
            "skipped": [
                {"targetId": "b-throttled", "reason": "Key Vault read failed: 429", "unreadable": True},
                {"targetId": "c-off", "reason": "disabled"},
            ],
        }
    )
    assert first.unreadable() == ["b-throttled"]
    merged = first.reread(DueTargets(due=({"targetId": "b-throttled", "reason": "expires-soon"},)))
    assert [e["targetId"] for e in merged.due] == ["a-due", "b-throttled"]
    assert [e["targetId"] for e in merged.skipped] == ["c-off"] and merged.unreadable() == []


def test_a_due_query_names_only_target_ids() -> None:
    assert DueQuery.from_json(DueQuery("2026-11-22T03:00:00.000Z", ("a-1",)).to_json()).only == ("a-1",)
    assert "only" not in DueQuery("2026-11-22T03:00:00.000Z").to_json()
    with pytest.raises(ValueError, match="only: a list of target ids"):
        DueQuery.from_json({"now": "2026-11-22T03:00:00.000Z", "only": "a-1"})
