"""Every branch of the rotation lifecycle, with the real orchestrators and scripted activities on devhost.

The end-to-end tests (tests/e2e/test_rotation_e2e.py) run the real activities against the emulators; here
the activities are scripted so each branch (holds, acks, compensation, failures) is exercised exactly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.rotation_harness import (
    Durable,
    Host,
    local_target,
    read_calls,
    reset_policy,
    scripted_devhost,
    scripted_env,
    signed_input,
)
from tools.devhost_launcher import ROOT

APP = ROOT / "tests" / "rotation_app"
ORDERS_CONSUMERS = ("00000000-0000-0000-0000-00000000c001", "00000000-0000-0000-0000-00000000c002")
PROVISIONED = {
    "keyName": "orders-client-20261122t030000z-s",
    "version": "b" * 32,
    "secretId": "https://127.0.0.1:9/secrets/demo-orders-client-key/" + "b" * 32,
    "previousVersion": "a" * 32,
    "previousSecretId": "https://127.0.0.1:9/secrets/demo-orders-client-key/" + "a" * 32,
    "previousKeyName": "orders-client",
    "accepted": True,
    "probeAttempts": 1,
}
APPROVER = {"name": "alice", "objectId": "00000000-0000-0000-0000-0000000000a1"}
HISTORY_BUDGET = 100  # DESIGN, Performance budgets: events per rotation for overlaps up to 30 days
# Measured with announce as its own step (RotationStarted + NewKeyAvailable in one publish, OldKeyRevoked
# after revoke): a 30-day overlap, and one whose old key is never refused (all four revocation rounds).
HISTORY_30_DAYS = 68
HISTORY_NEVER_REFUSED = 96


class Scripted:
    def __init__(self, host: Host, script: Path, calls: Path) -> None:
        self.host = host
        self.durable = Durable(host)
        self.script = script
        self.calls_path = calls

    def use(self, **script: Any) -> None:
        base: dict[str, Any] = {
            "provision_new_key": [PROVISIONED],
            "verify_new_key": [{"verified": True, "attempts": 1, "lastStatus": 200}],
            "publish_events": [{"published": []}],
            "check_adoption": [{"readers": [], "error": None}],
            "count_auth_failures": [{"signal": "consumer-dependencies", "failures": 0, "baseline": 0, "error": None}],
            "revoke_old_keys": [{"deletedKeys": ["orders-client"], "disabledVersions": ["a" * 32]}],
            "compensate_rotation": [{"disabledVersion": "b" * 32, "restoredVersion": "a" * 32, "deletedKey": True}],
        }
        self.script.write_text(json.dumps({**base, **script}))
        self.calls_path.write_text("")
        Path(str(self.calls_path) + ".events").write_text("")
        self.durable.clock(autoAdvance=True)

    def calls(self, activity: str | None = None) -> list[dict[str, Any]]:
        return [c for c in read_calls(self.calls_path) if activity is None or c["activity"] == activity]

    def event_types(self) -> list[str]:
        published = Path(str(self.calls_path) + ".events")
        return [e["type"].split(".")[-1] for e in read_calls(published)]

    def start(self, target_id: str = "demo-orders", mode: str = "scheduled", **target: Any) -> str:
        rotation_id = f"{target_id}-20261122t030000z-{mode[0]}"
        payload = {
            "rotationId": rotation_id,
            "mode": mode,
            "target": local_target(target_id, **target),
            "actor": {"kind": "schedule", "name": "timer", "objectId": None},
            "reason": "test",
            "currentKeyName": "orders-client",
        }
        instance = f"rotation-{target_id}"
        self.durable.start("rotation_orchestrator", instance, payload)
        return instance


def scripted_host(factory: pytest.TempPathFactory, *, in_process: bool) -> Iterator[tuple[Host, Path, Path]]:
    """The scripted app's devhost with its script and call log: in the pytest process (`in_process`,
    the branch tests here) or a host process of its own (tests that keep end-to-end fidelity)."""
    state = factory.mktemp("lifecycle")
    script, calls = state / "script.json", state / "calls.jsonl"
    script.write_text("{}")
    env = {
        "ROTATION_SCRIPT": str(script),
        "ROTATION_CALLS": str(calls),
        "DEVHOST_CLOCK_IDLE_GRACE": "0.6",
        **scripted_env(state),
    }
    with scripted_devhost(state / "host", APP, env, in_process=in_process) as devhost:
        yield devhost, script, calls


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Path, Path]]:
    yield from scripted_host(tmp_path_factory, in_process=True)


@pytest.fixture
def run(host: tuple[Host, Path, Path]) -> Scripted:
    devhost, script, calls = host
    reset_policy(Path(devhost.env["ROTATION_POLICY_PATH"]))
    scripted = Scripted(devhost, script, calls)
    for instance in ("rotation-demo-orders", "rotation-demo-reports-export", "rotation-demo-orders-master"):
        devhost.request("DELETE", f"/runtime/webhooks/durabletask/instances/{instance}", params=scripted.durable.code)
    return scripted


def steps(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["step"], s["status"]) for s in status["customStatus"]["steps"]]


def test_scheduled_rotation_runs_every_stage_in_order(run: Scripted) -> None:
    run.use()
    status = run.durable.wait(run.start())
    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["outcome"] == "completed"
    assert steps(status) == [
        ("requested", "done"),
        ("provision", "done"),
        ("verify", "done"),
        ("announce", "done"),
        ("overlap", "done"),
        ("gate", "passed"),
        ("revoke", "done"),
        ("watch", "done"),
        ("done", "done"),
    ]
    assert run.event_types() == ["RotationStarted", "NewKeyAvailable", "OldKeyRevoked", "RotationCompleted"]
    (revoke,) = run.calls("revoke_old_keys")
    assert revoke["request"]["revokeKeyNames"] == ["orders-client"]
    assert revoke["request"]["revokeVersions"] == ["a" * 32]
    assert revoke["request"]["keepKeyName"] == PROVISIONED["keyName"]
    # Overlap ran its full length: the gate's window starts at the announcement and is two days long.
    (gate, _watch) = run.calls("count_auth_failures")
    window = gate["request"]["window"]
    length = datetime.fromisoformat(window["end"]) - datetime.fromisoformat(window["start"])
    assert timedelta(days=2) <= length < timedelta(days=2, minutes=1)
    assert len(run.calls("check_adoption")) == 2  # two polls inside a short overlap


def test_acknowledgements_from_every_consumer_end_the_overlap_early(run: Scripted) -> None:
    run.use()
    instance = run.start()
    run.durable.wait(instance, stage="overlap")
    run.durable.clock(autoAdvance=False)
    for oid in ORDERS_CONSUMERS:
        run.durable.raise_event(instance, "ConsumerAck", {"objectId": oid, "name": "worker"})
    run.durable.raise_event(instance, "ConsumerAck", {"objectId": "00000000-0000-0000-0000-0000000000ff"})
    run.durable.wait(instance, stage="watching", timeout=15)
    run.durable.clock(autoAdvance=True)
    status = run.durable.wait(instance)
    assert status["output"]["outcome"] == "completed"
    overlap = [s for s in status["customStatus"]["steps"] if s["step"] in ("ack", "overlap")]
    assert [s["step"] for s in overlap] == ["ack", "ack", "overlap"]
    assert overlap[-1]["detail"] == "every consumer switched"
    assert run.calls("check_adoption") == []  # no check was due yet


def test_key_vault_adoption_ends_the_overlap(run: Scripted) -> None:
    run.use(check_adoption=[{"readers": list(ORDERS_CONSUMERS), "error": None}])
    status = run.durable.wait(run.start())
    assert len(run.calls("check_adoption")) == 1
    assert ("adoption", "done") in steps(status)
    assert status["output"]["outcome"] == "completed"


@pytest.mark.parametrize(
    ("decision", "payload", "outcome"),
    [
        ("Approve", {"actor": APPROVER, "reason": "known test client"}, "completed"),
        ("Abort", {"actor": APPROVER}, "aborted"),
    ],
)
def test_failures_above_threshold_hold_until_an_approver_decides(
    run: Scripted, decision: str, payload: dict[str, Any], outcome: str
) -> None:
    run.use(count_auth_failures=[{"failures": 50, "baseline": 2, "error": None}, {"failures": 0, "baseline": 0}])
    instance = run.start()
    held = run.durable.wait(instance, stage="held")
    assert held["customStatus"]["hold"]["failures"] == 50
    run.durable.raise_event(instance, decision, payload)
    status = run.durable.wait(instance)
    assert status["output"]["outcome"] == outcome
    types = run.event_types()
    assert types[:3] == ["RotationStarted", "NewKeyAvailable", "RotationHeld"]
    decided = next(s for s in status["customStatus"]["steps"] if s["step"] == "hold")
    assert decided["actor"] == {"kind": "principal", **APPROVER}  # who decided, for the audit trail
    if outcome == "completed":
        assert types[3:] == ["OldKeyRevoked", "RotationCompleted"]
        assert ("hold", "approved") in steps(status)
    else:
        assert types[3:] == ["RotationFailed"]
        assert run.calls("revoke_old_keys") == [] and run.calls("compensate_rotation") == []


def test_extend_waits_then_gates_again(run: Scripted) -> None:
    run.use(count_auth_failures=[{"failures": 50, "baseline": 2}, {"failures": 1, "baseline": 2}])
    instance = run.start()
    run.durable.wait(instance, stage="held")
    run.durable.raise_event(instance, "Extend", {"by": "PT6H", "actor": APPROVER})
    status = run.durable.wait(instance)
    assert status["output"]["outcome"] == "completed"
    assert ("hold", "extended") in steps(status) and ("gate", "passed") in steps(status)
    first, second = run.calls("count_auth_failures")[:2]
    assert first["request"]["window"]["end"] < second["request"]["window"]["end"]


def test_hold_deadline_applies_the_policys_default_action(run: Scripted) -> None:
    run.use(count_auth_failures=[{"failures": 50, "baseline": 2}])
    status = run.durable.wait(run.start())  # nobody decides: the 1-day deadline passes on the virtual clock
    assert status["output"]["outcome"] == "aborted"  # the local policy's default action
    assert ("hold", "abort") in steps(status)


def test_unreadable_signal_holds_a_scheduled_rotation(run: Scripted) -> None:
    run.use(count_auth_failures=[{"failures": None, "baseline": None, "error": "PartialError"}])
    instance = run.start()
    held = run.durable.wait(instance, stage="held")
    assert "could not be read" in held["customStatus"]["hold"]["reason"]
    run.durable.raise_event(instance, "Approve", {"actor": APPROVER})
    assert run.durable.wait(instance)["output"]["outcome"] == "completed"


def test_probe_refusal_compensates_and_reports_failure(run: Scripted) -> None:
    run.use(verify_new_key=[{"verified": False, "attempts": 6, "lastStatus": 401}])
    status = run.durable.wait(run.start())
    assert status["output"]["outcome"] == "failed" and status["output"]["compensated"] is True
    (compensate,) = run.calls("compensate_rotation")
    assert compensate["request"]["version"] == PROVISIONED["version"]
    assert compensate["request"]["previousVersion"] == PROVISIONED["previousVersion"]
    assert run.event_types() == ["RotationStarted", "RotationFailed"]
    assert run.calls("revoke_old_keys") == []


def test_target_that_never_accepts_is_compensated_before_key_vault_is_touched(run: Scripted) -> None:
    run.use(provision_new_key=[{**PROVISIONED, "accepted": False, "version": None, "secretId": None}])
    status = run.durable.wait(run.start())
    assert status["output"]["outcome"] == "failed"
    assert run.calls("verify_new_key") == []
    assert run.calls("compensate_rotation")[0]["request"]["version"] is None


def test_revoke_failure_after_the_announcement_never_rolls_back(run: Scripted) -> None:
    run.use(revoke_old_keys=[{"raise": "ARM unavailable"}])
    status = run.durable.wait(run.start(), timeout=60)
    assert status["output"]["outcome"] == "failed" and status["output"]["compensated"] is False
    assert run.calls("compensate_rotation") == []
    assert run.event_types()[-1] == "RotationFailed"


def test_emergency_rotation_skips_overlap_and_gate_and_revokes_every_other_key(run: Scripted) -> None:
    run.use()
    status = run.durable.wait(run.start(mode="emergency"))
    assert status["output"]["outcome"] == "completed"
    assert run.calls("count_auth_failures")[0]["request"]["window"]["start"] > status["customStatus"]["steps"][0]["at"]
    assert ("overlap", "done") not in steps(status) and ("gate", "passed") not in steps(status)
    (revoke,) = run.calls("revoke_old_keys")
    assert revoke["request"]["revokeKeyNames"] is None and revoke["request"]["revokeVersions"] is None


def test_history_stays_within_budget_for_a_thirty_day_overlap(run: Scripted) -> None:
    run.use()
    instance = run.start(overlap="P30D", interval="P90D")
    status = run.durable.wait(instance, timeout=60)
    assert status["output"]["outcome"] == "completed"
    history = run.durable.history(instance)
    print(f"history events for a 30-day overlap with consumers: {len(history)}")
    assert len(history) <= HISTORY_30_DAYS <= HISTORY_BUDGET, len(history)


STILL_ACCEPTED = {
    "deletedKeys": ["orders-client"],
    "disabledVersions": [],
    "pendingVersions": ["a" * 32],
    "stillAccepted": ["orders-client"],
    "refused": False,
}


def test_a_revoked_key_still_accepted_is_probed_again_until_refused(run: Scripted) -> None:
    """Round 1 (inside revoke) and round 2 (a durable timer later) still see the old key; round 3 sees it
    refused: OldKeyRevoked and the status say when, the version is disabled then."""
    run.use(
        revoke_old_keys=[STILL_ACCEPTED],
        verify_revocation=[
            {"refused": False, "stillAccepted": ["orders-client"], "disabledVersions": []},
            {"refused": True, "stillAccepted": [], "disabledVersions": ["a" * 32]},
        ],
    )
    status = run.durable.wait(run.start(), timeout=60)
    assert status["output"]["outcome"] == "completed"
    assert status["output"]["disabledVersions"] == ["a" * 32]
    revoke = next(s for s in status["customStatus"]["steps"] if s["step"] == "revoke")
    deleted_at = datetime.fromisoformat(revoke["at"])
    rounds = run.calls("verify_revocation")
    assert [c["request"]["final"] for c in rounds] == [False, False]
    assert all(c["request"]["versions"] == ["a" * 32] for c in rounds)
    revocation = status["customStatus"]["revocation"]
    refused_at = datetime.fromisoformat(revocation["firstRefusedAt"])
    assert revocation["status"] == "refused"
    # probe.revokedWithin defaults to PT5M: rounds at 1/8 and 1/4 of it; the second saw the refusal.
    assert timedelta(seconds=74) <= refused_at - deleted_at <= timedelta(seconds=76)
    assert ("revocation", "verified") in steps(status)
    assert run.event_types() == ["RotationStarted", "NewKeyAvailable", "OldKeyRevoked", "RotationCompleted"]
    published = [json.loads(line) for line in Path(str(run.calls_path) + ".events").read_text().splitlines()]
    revoked = next(e for e in published if e["type"].endswith("OldKeyRevoked"))
    assert revoked["data"]["firstRefusedAt"] == revocation["firstRefusedAt"]


def test_a_revoked_key_accepted_past_the_bound_is_degraded_within_the_history_budget(run: Scripted) -> None:
    """Never refused: four rounds, the last one `final`; RotationDegraded (old-key-accepted) goes out with
    the completion, and the history of a 30-day overlap still fits DESIGN's budget."""
    still = {"refused": False, "stillAccepted": ["orders-client"], "disabledVersions": []}
    final = {**still, "disabledVersions": ["a" * 32]}
    run.use(revoke_old_keys=[STILL_ACCEPTED], verify_revocation=[still, still, still, final])
    instance = run.start(overlap="P30D", interval="P90D")
    status = run.durable.wait(instance, timeout=60)
    assert status["output"]["outcome"] == "completed"
    assert [c["request"]["final"] for c in run.calls("verify_revocation")] == [False, False, False, True]
    revocation = status["customStatus"]["revocation"]
    assert revocation["status"] == "still-accepted" and revocation["firstRefusedAt"] is None
    assert "still accepted orders-client PT5M after it was deleted" in revocation["detail"]
    assert run.event_types()[-3:] == ["OldKeyRevoked", "RotationDegraded", "RotationCompleted"]
    published = [json.loads(line) for line in Path(str(run.calls_path) + ".events").read_text().splitlines()]
    degraded = next(e for e in published if e["type"].endswith("RotationDegraded"))["data"]
    assert degraded["cause"] == "old-key-accepted" and degraded["acceptedKeyNames"] == ["orders-client"]
    assert degraded["failures"] is None
    history = run.durable.history(instance)
    print(f"history events for a 30-day overlap whose old key stays accepted: {len(history)}")
    assert len(history) <= HISTORY_NEVER_REFUSED <= HISTORY_BUDGET, len(history)


def test_scheduler_fans_out_and_one_failure_does_not_stop_the_others(run: Scripted) -> None:
    due = [
        {"targetId": "demo-orders", "reason": "interval-elapsed", "target": local_target("demo-orders")},
        {
            "targetId": "demo-reports-export",
            "reason": "no-current-version",
            "target": local_target("demo-reports-export"),
        },
    ]
    run.use(
        find_due_targets=[{"due": due, "notDue": [], "skipped": []}],
        provision_new_key=[PROVISIONED, {"raise": "host runtime unavailable"}],
    )
    run.durable.start(
        "scheduler_orchestrator", "scheduler-test", {"tick": "2026-11-22T03:00:00.000Z", "maxConcurrency": 1}
    )
    status = run.durable.wait("scheduler-test", timeout=90)
    summary = status["output"]
    assert [c["targetId"] for c in summary["completed"]] == ["demo-orders"]
    assert [f["targetId"] for f in summary["failed"]] == ["demo-reports-export"]


def test_a_tick_completes_and_lists_a_held_target_as_in_flight(run: Scripted) -> None:
    """Under the framework's duplicate-start rule (a start onto a running instance id is dropped and its
    parent never told), a tick must not wait on the held target: it reports it in flight, rotates the
    others, and completes; the held rotation is untouched and still decides its own fate."""
    run.use(
        count_auth_failures=[{"failures": 50, "baseline": 2, "error": None}, {"failures": 0, "baseline": 0}],
        find_due_targets=[
            {
                "due": [
                    {"targetId": "demo-orders", "reason": "interval-elapsed", "target": local_target("demo-orders")},
                    {
                        "targetId": "demo-reports-export",
                        "reason": "interval-elapsed",
                        "target": local_target("demo-reports-export"),
                    },
                ],
                "notDue": [],
                "skipped": [],
            }
        ],
    )
    instance = run.start()
    held = run.durable.wait(instance, stage="held")
    run.durable.start(
        "scheduler_orchestrator", "scheduler-held", {"tick": "2026-11-22T03:00:00.000Z", "maxConcurrency": 2}
    )
    summary = run.durable.wait("scheduler-held", timeout=90)["output"]
    assert summary["inFlight"] == [
        {"targetId": "demo-orders", "rotationId": held["input"]["rotationId"], "stage": "held", "runtime": "Running"}
    ]
    assert [c["targetId"] for c in summary["completed"]] == ["demo-reports-export"]
    assert summary["failed"] == [] and summary["superseded"] == []
    # The tick's start onto the held instance never happened: one execution, the held rotation's own, which
    # went on to end by its own rule (here the hold deadline, passed while the other target's overlap ran).
    final = run.durable.wait(instance)
    assert final["input"]["rotationId"] == held["input"]["rotationId"]
    assert [e["EventType"] for e in run.durable.history(instance)].count(0) == 1  # ExecutionStarted


def emergency_input(rotation_id: str = "demo-orders-20261122t040000z-e") -> dict[str, Any]:
    return {
        "rotationId": rotation_id,
        "mode": "emergency",
        "target": local_target("demo-orders"),
        "actor": {"kind": "principal", "name": "responder", "objectId": "00000000-0000-0000-0000-0000000000e1"},
        "reason": "leaked",
    }


def supersede(run: Scripted, instance: str, successor: dict[str, Any]) -> None:
    """The event the emergency API raises on the running rotation."""
    payload = {"rotationId": successor["rotationId"], "actor": successor["actor"], "next": signed_input(successor)}
    run.durable.raise_event(instance, "Supersede", payload)


def taken_over(run: Scripted, instance: str, successor: dict[str, Any], timeout: float = 15) -> None:
    """Until the instance runs as the successor (continued as new), without the clock having to move."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = run.durable.status(instance)
        if (status.get("input") or {}).get("rotationId") == successor["rotationId"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"not taken over by {successor['rotationId']}: {status.get('customStatus')}")


@pytest.mark.parametrize("stage", ["overlap", "held"])
def test_an_emergency_takes_over_a_waiting_rotation_at_once(run: Scripted, stage: str) -> None:
    quiet = {"failures": 0, "baseline": 0}
    failures = [{"failures": 50, "baseline": 2}, quiet] if stage == "held" else [quiet]
    run.use(count_auth_failures=failures)
    instance = run.start()
    run.durable.wait(instance, stage=stage)
    successor = emergency_input()
    supersede(run, instance, successor)
    status = run.durable.wait(instance)
    # The same instance continued as the emergency rotation: one rotation per target at any time (I3).
    assert status["output"]["rotationId"] == successor["rotationId"]
    assert status["output"]["mode"] == "emergency" and status["output"]["outcome"] == "completed"
    types = run.event_types()
    first_end = types.index("RotationFailed")  # the superseded rotation's story is closed for subscribers
    assert types[:2] == ["RotationStarted", "NewKeyAvailable"]
    assert types[first_end + 1 :] == ["RotationStarted", "NewKeyAvailable", "OldKeyRevoked", "RotationCompleted"]
    revoke = run.calls("revoke_old_keys")
    assert len(revoke) == 1 and revoke[0]["request"]["revokeKeyNames"] is None  # only the emergency revoked


def test_an_emergency_late_in_an_overlap_takes_over_without_waiting_for_the_next_wake_point(run: Scripted) -> None:
    """Past the overlap's first wake point (an adoption check) the rotation races a new timer against
    Supersede; the SDK leaves a waiter already yielded in one task_any out of the next, so a reused
    waiter let the emergency wait for the next wake point, hours later. The clock stands still here:
    only a take-over at once passes."""
    run.use(check_adoption=[{"readers": [], "error": None}])
    instance = run.start()
    run.durable.wait(instance, stage="overlap")
    run.durable.clock(autoAdvance=False)
    run.durable.clock(advanceBy=17 * 3600)  # past the first adoption check of the two-day overlap
    deadline = time.monotonic() + 20
    while not run.calls("check_adoption") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.calls("check_adoption"), "the overlap never reached its first wake point"
    time.sleep(0.5)  # back in its wait, racing the next wake point against Supersede
    successor = emergency_input()
    supersede(run, instance, successor)
    taken_over(run, instance, successor)
    run.durable.clock(autoAdvance=True)
    final = run.durable.wait(instance)
    assert final["output"]["mode"] == "emergency" and final["output"]["outcome"] == "completed"


def test_an_emergency_takes_over_a_held_rotation_after_an_earlier_decision_at_once(run: Scripted) -> None:
    """Held, an approver's malformed extend is ignored and the hold waits again: that second race hears
    Supersede too, with the clock standing still."""
    run.use(count_auth_failures=[{"failures": 50, "baseline": 2, "error": None}])
    instance = run.start()
    run.durable.wait(instance, stage="held")
    run.durable.clock(autoAdvance=False)
    run.durable.raise_event(instance, "Extend", {"actor": APPROVER, "by": "soon"})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        steps = (run.durable.status(instance).get("customStatus") or {}).get("steps") or []
        if any(s["step"] == "hold" and s["status"] == "ignored" for s in steps):
            break
        time.sleep(0.05)
    time.sleep(0.5)  # waiting again for a decision
    successor = emergency_input("demo-orders-20261122t040003z-e")
    supersede(run, instance, successor)
    taken_over(run, instance, successor)
    run.durable.clock(autoAdvance=True)
    assert run.durable.wait(instance)["output"]["outcome"] == "completed"


def test_an_emergency_waits_for_a_busy_step_then_takes_over(run: Scripted) -> None:
    run.use(verify_new_key=[{"raise": "host cache"}, {"verified": True, "attempts": 2, "lastStatus": 200}])
    instance = run.start()
    run.durable.wait(instance, stage="verifying")
    successor = emergency_input("demo-orders-20261122t040001z-e")
    supersede(run, instance, successor)
    status = run.durable.wait(instance)
    assert status["output"]["rotationId"] == successor["rotationId"]
    assert status["output"]["outcome"] == "completed"
    assert run.calls("compensate_rotation") == []  # nothing rolled back: the emergency revokes the keys


def test_an_emergency_during_a_failing_step_is_not_lost(run: Scripted) -> None:
    run.use(verify_new_key=[{"raise": "host down"}])  # verify keeps failing: the rotation rolls back...
    instance = run.start()
    run.durable.wait(instance, stage="verifying")
    successor = emergency_input("demo-orders-20261122t040002z-e")
    supersede(run, instance, successor)
    run.use(verify_new_key=[{"verified": True, "attempts": 1, "lastStatus": 200}])  # ...the host recovers
    status = run.durable.wait(instance, timeout=60)
    # ...and still hands over: the event is heard at the rotation's last publish.
    assert status["output"]["rotationId"] == successor["rotationId"]
    assert status["output"]["outcome"] == "completed"


def test_acks_raised_before_the_overlap_listens_do_not_wedge_the_rotation(run: Scripted) -> None:
    run.use(verify_new_key=[{"raise": "host cache"}, {"verified": True, "attempts": 2, "lastStatus": 200}])
    instance = run.start()
    run.durable.wait(instance, stage="verifying")
    for oid in ORDERS_CONSUMERS:  # too early: the API refuses this; the Durable webhook does not
        run.durable.raise_event(instance, "ConsumerAck", {"objectId": oid})
    status = run.durable.wait(instance, timeout=60)
    assert status["runtimeStatus"] == "Completed" and status["output"]["outcome"] == "completed"
