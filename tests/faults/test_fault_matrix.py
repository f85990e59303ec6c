"""The fault matrix (issue 5): a seeded sample that puts every fault kind on every call site and kills
the host at every crash point, against the real app on devhost and the emulators — and the checks that
judge each run, proven able to fail on states that break them.

`make test-faults N=500` runs a larger randomized campaign; FAULT_SEED picks this sample's seed.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emulators.core.faults import FaultRule
from tools import fault_checks
from tools.fault_campaign import RunResult, run_campaign, summary
from tools.fault_matrix import (
    CALL_SITES,
    CRASH_POINTS,
    TARGETS,
    Fault,
    campaign,
    combos,
    coverage,
    coverage_sample,
    random_schedule,
)

SEED = int(os.environ.get("FAULT_SEED", "20261122"))


# -- the matrix and its schedules --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 7, SEED])
def test_the_coverage_sample_reaches_every_fault_kind_at_every_call_site_and_every_crash_point(seed: int) -> None:
    sample = coverage_sample(seed)
    pairs, points = coverage(sample)
    assert pairs == set(combos())
    assert points == set(CRASH_POINTS)
    for schedule in sample:
        sites = [f.site for f in schedule.faults]
        assert len(sites) == len(set(sites)), schedule  # one fault per call site per run
        stalled = {c.split(":")[1].split("@")[0] for c in schedule.crashes if c.startswith("call:")}
        assert not stalled & set(sites), schedule  # a stalled call is not also faulted
    assert len(sample) <= 12  # the sample stays small enough for `make test`


def test_a_schedule_is_reproduced_from_its_seed_and_index() -> None:
    assert coverage_sample(42) == coverage_sample(42)
    assert random_schedule(42, 17) == random_schedule(42, 17)
    assert random_schedule(42, 17) != random_schedule(43, 17)
    listed = list(campaign(42, 30))
    assert listed[: len(coverage_sample(42))] == coverage_sample(42)
    assert listed[20] == random_schedule(42, 20)


def test_every_fault_rule_is_one_the_emulator_accepts() -> None:
    for site in CALL_SITES:
        for kind in site.kinds:
            for target in TARGETS:
                rule = Fault(site.name, kind, target, site.phases[0], 2, 1.0).rule()
                parsed = FaultRule.from_json(rule)  # raises on a field the fault API would refuse
                assert parsed.operation == site.operation


# -- the checks can fail --------------------------------------------------------------------------------


def _target(policy_targets: Any, target_id: str) -> Any:
    return next(t for t in policy_targets if t.id == target_id)


@pytest.fixture(scope="module")
def targets() -> list[Any]:
    from rotation.policy import load_policy

    env = {
        "KEY_VAULT_URL": "https://vault.example",
        "ARM_ENDPOINT": "https://arm.example",
        "LOG_ANALYTICS_WORKSPACE_ID": "00000000-0000-0000-0000-0000000000aa",
    }
    policy = load_policy(Path(__file__).resolve().parents[2] / "config" / "rotation-policy.local.json", env)
    return [t for t in policy if t.id in TARGETS]


def _target_site() -> str:
    sub = "00000000-0000-0000-0000-000000000000"
    return f"/subscriptions/{sub}/resourceGroups/keyrotation-demo/providers/Microsoft.Web/sites/demo-orders"


def _state(keys: dict[str, str], versions: list[dict[str, Any]], events: list[dict[str, Any]] = ()) -> dict[str, Any]:
    site = _target_site()
    rows = [{"scope": "functionKeys", "name": n, "value": v, "retired": None} for n, v in keys.items()]
    return {
        "arm": {"sites": [{"id": site, "instances": [{"slot": None, "keys": rows}]}]},
        "keyvault": {"secrets": {"demo-orders-client-key": {"versions": versions}}},
        "eventgrid": {"events": list(events)},
    }


def test_end_state_check_finds_an_orphaned_key_and_a_dead_enabled_version(targets: list[Any]) -> None:
    orders = [_target(targets, "demo-orders")]
    healthy = _state(
        {"orders-client-20261122t030000z-s": "NEW", "unrelated": "X"},
        [
            {"version": "a", "created": 1, "enabled": False, "value": "OLD"},
            {"version": "b", "created": 2, "enabled": True, "value": "NEW"},
        ],
    )
    assert fault_checks.check_end_state(healthy, orders) == []
    orphan = _state(
        {"orders-client": "OLD", "orders-client-20261122t030000z-s": "NEW"},
        [{"version": "b", "created": 2, "enabled": True, "value": "NEW"}],
    )
    (problem,) = fault_checks.check_end_state(orphan, orders)
    assert "orphaned" in problem and "orders-client" in problem and "NEW" not in problem and "OLD" not in problem
    dead = _state({"orders-client": "OLD"}, [{"version": "b", "created": 2, "enabled": True, "value": "NEW"}])
    assert any("refuses: ['b']" in p for p in fault_checks.check_end_state(dead, orders))
    latest_disabled = _state(
        {"orders-client": "OLD"},
        [
            {"version": "a", "created": 1, "enabled": True, "value": "OLD"},
            {"version": "b", "created": 2, "enabled": False, "value": "NEW"},
        ],
    )
    (problem,) = fault_checks.check_end_state(latest_disabled, orders)
    assert "newest version b is disabled" in problem


def _event(kind: str, rotation: str, event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": f"KeyRotation.{kind}",
        "subject": "targets/demo-orders",
        "event": {"data": {"rotationId": rotation}},
    }


def test_loud_check_wants_a_failure_event_and_a_reason() -> None:
    failed = {"runtimeStatus": "Completed", "output": {"outcome": "failed", "rotationId": "r1", "error": "boom"}}
    silent = _state({}, [], [_event("RotationStarted", "r1", "1")])
    (problem,) = fault_checks.check_loud({"demo-orders": failed}, silent)
    assert "without RotationFailed" in problem
    told = _state({}, [], [_event("RotationStarted", "r1", "1"), _event("RotationFailed", "r1", "2")])
    assert fault_checks.check_loud({"demo-orders": failed}, told) == []
    no_reason = {"runtimeStatus": "Completed", "output": {"outcome": "failed", "rotationId": "r1"}}
    assert "no reason" in fault_checks.check_loud({"demo-orders": no_reason}, told)[0]


def test_one_rotation_check_finds_interleaved_rotations() -> None:
    fine = [
        _event("RotationStarted", "r1", "1"),
        _event("RotationFailed", "r1", "2"),
        _event("RotationStarted", "r2", "3"),
    ]
    assert fault_checks.check_one_rotation_at_a_time(_state({}, [], fine), ["demo-orders"]) == []
    late_failure = [
        _event("RotationStarted", "r1", "1"),
        _event("RotationStarted", "r2", "2"),
        _event("RotationFailed", "r1", "3"),
    ]
    assert fault_checks.check_one_rotation_at_a_time(_state({}, [], late_failure), ["demo-orders"]) == []
    both = [
        _event("RotationStarted", "r1", "1"),
        _event("RotationStarted", "r2", "2"),
        _event("NewKeyAvailable", "r1", "3"),
    ]
    (problem,) = fault_checks.check_one_rotation_at_a_time(_state({}, [], both), ["demo-orders"])
    assert "r1 sent NewKeyAvailable after r2" in problem


def test_retry_after_check_flags_a_retry_that_came_too_early() -> None:
    def row(seq: int, ts: str, fault: str | None, status: int) -> dict[str, Any]:
        return {
            "seq": seq,
            "ts": ts,
            "method": "PUT",
            "path": "/secrets/x",
            "operation": "keyvault.set_secret",
            "fault": fault,
            "status": status,
            "duration_ms": 10,
        }

    waits = {"keyvault.set_secret": 1.0}
    early = [row(1, "2026-11-22T03:00:00.000Z", "status:429", 429), row(2, "2026-11-22T03:00:00.500Z", None, 200)]
    (problem,) = fault_checks.check_retry_after(early, waits, tries_per_call=3)
    assert "Retry-After 1 s ignored" in problem
    patient = [row(1, "2026-11-22T03:00:00.000Z", "status:429", 429), row(2, "2026-11-22T03:00:01.020Z", None, 200)]
    assert fault_checks.check_retry_after(patient, waits, tries_per_call=3) == []
    # After a call's last try, the next one is the step's durable retry, timed on the durable clock.
    gave_up = [row(1, "2026-11-22T03:00:00.000Z", "status:429", 429), row(2, "2026-11-22T03:00:00.300Z", None, 200)]
    assert fault_checks.check_retry_after(gave_up, waits, tries_per_call=1) == []
    # A try after the host was killed is the step's new attempt, not a retry inside the lost call.
    killed = datetime(2026, 11, 22, 3, 0, 0, 200_000, tzinfo=UTC).timestamp()
    assert fault_checks.check_retry_after(early, waits, tries_per_call=3, kills=[killed]) == []


# -- the seeded sample, run for real -------------------------------------------------------------------


@pytest.mark.slow
def test_the_seeded_fault_sample_breaks_no_invariant(tmp_path: Path) -> None:
    sample = coverage_sample(SEED)
    lines: list[str] = []
    results: list[RunResult] = run_campaign(sample, tmp_path, parallel=3, out=lines.append)
    report = "\n".join([*lines, *summary(results)])
    assert all(r.ok for r in results), report
    crashed = {point.split(" ")[0] for r in results for point in r.crashed}
    assert crashed == set(CRASH_POINTS), report  # every kill really happened
    fired = set().union(*(r.fired for r in results))
    assert fired == set(combos()), sorted(set(combos()) - fired)  # every fault kind hit every call site


def test_end_state_with_a_secret_left_deleted_judges_only_keys_a_rotation_made(targets: list[Any]) -> None:
    orders = [_target(targets, "demo-orders")]
    untouched = _state({"orders-client": "OLD"}, [])
    untouched["keyvault"]["secrets"] = {}  # deleted before the run, never recovered
    assert fault_checks.check_end_state(untouched, orders, soft_deleted=["demo-orders"]) == []
    assert fault_checks.check_end_state(untouched, orders)  # without the schedule's excuse: a finding
    left = _state({"orders-client": "OLD", "orders-client-20261122t030000z-s": "NEW"}, [])
    left["keyvault"]["secrets"] = {}
    (problem,) = fault_checks.check_end_state(left, orders, soft_deleted=["demo-orders"])
    assert "orders-client-20261122t030000z-s" in problem


def test_a_completed_rotation_that_revoked_nothing_is_a_finding(targets: list[Any]) -> None:
    orders = [_target(targets, "demo-orders")]
    new = "orders-client-20261122t030000z-s"
    done = {"demo-orders": {"runtimeStatus": "Completed", "output": {"outcome": "completed", "keyName": new}}}
    ours = {"managedBy": "keyrotation"}
    clean = _state({new: "NEW"}, [{"version": "b", "created": 2, "enabled": True, "value": "NEW", "tags": ours}])
    assert fault_checks.check_completed_cleanly(done, clean, orders) == []
    nothing_revoked = _state(
        {"orders-client": "OLD", new: "NEW"},
        [
            {"version": "a", "created": 1, "enabled": True, "value": "OLD", "tags": ours},
            {"version": "b", "created": 2, "enabled": True, "value": "NEW", "tags": ours},
        ],
    )
    assert fault_checks.check_end_state(nothing_revoked, orders) == []  # the end-state check alone passes it
    problems = fault_checks.check_completed_cleanly(done, nothing_revoked, orders)
    assert len(problems) == 2 and "orders-client" in problems[0] and "2 enabled versions" in problems[1]
