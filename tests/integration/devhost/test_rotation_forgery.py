# ruff: noqa: F811 - `host` and `run` are fixtures imported from the lifecycle tests
"""Issue 12's repros as an attacker holding the Durable system key would run them, and an emergency taking
over at every stage with the clock standing still. Real orchestrator and resolve step, scripted key and
vault activities, on devhost (tests/rotation_app)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from emulators.core.invariants import parse_instant
from tests.integration.devhost.test_orchestration_lifecycle import (
    APPROVER,
    Scripted,
    emergency_input,
    host,  # noqa: F401 - the fixture
    local_target,
    run,  # noqa: F401 - the fixture
    steps,
    supersede,
    taken_over,
)
from tests.rotation_harness import signed_input

ATTACKER_URL = "https://attacker.example:8443"
CISO = {"name": "the CISO", "objectId": "00000000-0000-0000-0000-00000000c150"}


def start_raw(run: Scripted, instance: str, payload: dict[str, Any]) -> None:
    """Start rotation_orchestrator as a holder of the system key can: any input, no signature."""
    response = run.host.post(
        f"/runtime/webhooks/durabletask/orchestrators/rotation_orchestrator/{instance}",
        params=run.durable.code,
        json=payload,
    )
    assert response.status_code == 202, response.text


def scheduled_input(rotation_id: str, **extra: Any) -> dict[str, Any]:
    """A scheduled rotation of demo-orders as the app writes it (signed)."""
    return signed_input(
        {
            "rotationId": rotation_id,
            "mode": "scheduled",
            "target": local_target("demo-orders"),
            "actor": {"kind": "schedule", "name": "timer", "objectId": None},
            "reason": "test",
            **extra,
        }
    )


def forged_target() -> dict[str, Any]:
    target = local_target("demo-orders")
    return {**target, "probe": {**target["probe"], "baseUrl": ATTACKER_URL}, "overlap": "P3650D"}


def ignored(status: dict[str, Any], event: str) -> bool:
    return any(s["step"] == "event" and s["status"] == "ignored" and event in s["detail"] for s in status_steps(status))


def status_steps(status: dict[str, Any]) -> list[dict[str, Any]]:
    return list((status.get("customStatus") or {}).get("steps") or [])


def wait_until(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


# -- forged inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        "old-shape-with-target",
        "unsigned-by-id",
        "tampered-signed",
        "master-key-not-emergency",
        "other-instance",
        "future-dated",
    ],
)
def test_a_forged_input_is_refused_before_any_step(run: Scripted, variant: str) -> None:
    run.use()
    signed = scheduled_input("demo-orders-20261122t030000z-s")
    instance = "rotation-demo-orders"
    if variant == "old-shape-with-target":  # the repro: the target's JSON with the attacker's probe host
        payload = {k: v for k, v in signed.items() if k not in ("signature", "fingerprint")}
        payload["target"] = forged_target()
    elif variant == "unsigned-by-id":
        payload = {k: v for k, v in signed.items() if k != "signature"}
    elif variant == "tampered-signed":  # a signed input with its own target definition added
        payload = {**signed, "target": forged_target(), "overlap": "P3650D"}
    elif variant == "master-key-not-emergency":  # the master key renewed in a scheduled rotation
        master = local_target("demo-orders-master")
        payload = {**signed, "targetId": master["id"], "rotationId": "demo-orders-master-20261122t030000z-s"}
        instance = "rotation-demo-orders-master"
    elif variant == "future-dated":  # signed, but dated years ahead: later ticks would take it as "rotated since"
        payload = scheduled_input("demo-orders-20991231t000000z-s")
    else:  # a second rotation of demo-orders on another instance id: two rotations of one target (I3)
        payload = signed
        instance = "rotation-demo-orders-twin"
    start_raw(run, instance, payload)
    status = run.durable.wait(instance)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["outcome"] == "refused", status["output"]
    assert run.calls() == []  # no key created, no vault written, nothing published: no step ran
    assert run.event_types() == []
    run.host.request("DELETE", f"/runtime/webhooks/durabletask/instances/{instance}", params=run.durable.code)


def test_a_rotation_takes_its_overlap_from_the_policy_not_from_the_input(run: Scripted) -> None:
    """A signed scheduled input naming an overlap of ten years (the repro's `P3650D`) gets the policy's two days."""
    run.use()
    instance = "rotation-demo-orders"
    start_raw(run, instance, scheduled_input("demo-orders-20261122t030001z-s", overlap="P3650D"))
    waiting = run.durable.wait(instance, stage="overlap")
    ends, started = waiting["customStatus"]["overlapEndsAt"], waiting["customStatus"]["steps"][0]["at"]
    assert parse_instant(ends) - parse_instant(started) < timedelta(days=3)
    run.durable.wait(instance)


# -- forged events ------------------------------------------------------------------------------------


def test_an_approval_the_app_did_not_sign_is_ignored(run: Scripted) -> None:
    """The repro: `Approve` raised with the system key, naming the CISO, was honoured."""
    run.use(count_auth_failures=[{"failures": 50, "baseline": 2, "error": None}, {"failures": 0, "baseline": 0}])
    instance = run.start()
    run.durable.wait(instance, stage="held")
    run.durable.clock(autoAdvance=False)
    run.durable.raise_event(instance, "Approve", {"actor": CISO, "reason": "ship it"}, sign=False)
    wait_until(lambda: ignored(run.durable.status(instance), "Approve"))
    assert run.durable.status(instance)["customStatus"]["stage"] == "held"
    # A signed approval for an earlier hold (another heldAt) is no better than none.
    run.durable.raise_event(instance, "Approve", {"actor": CISO, "heldAt": "2026-01-01T00:00:00.000Z"})
    wait_until(lambda: sum(ignored_count(run, instance)) >= 2)
    assert run.durable.status(instance)["customStatus"]["stage"] == "held"
    run.durable.raise_event(instance, "Approve", {"actor": APPROVER, "reason": "known client"})
    run.durable.clock(autoAdvance=True)
    status = run.durable.wait(instance)
    assert status["output"]["outcome"] == "completed"
    decided = next(s for s in status_steps(status) if s["step"] == "hold")
    assert decided["actor"]["name"] == APPROVER["name"]  # the signed payload's actor, not the forged one
    assert all(s.get("actor", {}).get("name") != CISO["name"] for s in status_steps(status))


def ignored_count(run: Scripted, instance: str) -> list[int]:
    return [1 for s in status_steps(run.durable.status(instance)) if s["step"] == "event" and s["status"] == "ignored"]


def test_acks_the_app_did_not_sign_do_not_end_the_overlap(run: Scripted) -> None:
    run.use()
    instance = run.start()
    run.durable.wait(instance, stage="overlap")
    run.durable.clock(autoAdvance=False)
    for oid in ("00000000-0000-0000-0000-00000000c001", "00000000-0000-0000-0000-00000000c002"):
        run.durable.raise_event(instance, "ConsumerAck", {"objectId": oid, "name": "worker"}, sign=False)
    wait_until(lambda: len(ignored_count(run, instance)) >= 1)
    time.sleep(0.5)
    status = run.durable.status(instance)
    assert status["customStatus"]["stage"] == "overlap"
    assert not any(s["step"] == "ack" for s in status_steps(status))
    run.durable.clock(autoAdvance=True)
    run.durable.wait(instance)


def test_a_supersede_the_app_did_not_sign_hands_over_to_nobody(run: Scripted) -> None:
    """The repro: a `Supersede` whose `next` is a forged request was continued-as-new verbatim."""
    run.use()
    instance = run.start()
    run.durable.wait(instance, stage="overlap")
    run.durable.clock(autoAdvance=False)
    forged_next = {**emergency_input(), "target": forged_target()}
    payload = {"rotationId": forged_next["rotationId"], "actor": {"name": "attacker"}, "next": forged_next}
    run.durable.raise_event(instance, "Supersede", payload, sign=False)
    wait_until(lambda: ignored(run.durable.status(instance), "Supersede"))
    assert run.durable.status(instance)["customStatus"]["stage"] == "overlap"
    run.durable.clock(autoAdvance=True)
    status = run.durable.wait(instance)
    assert status["output"]["rotationId"] == "demo-orders-20261122t030000z-s"  # no continue-as-new
    assert status["output"]["outcome"] == "completed"


def test_a_forged_event_raised_before_anyone_listens_does_not_deafen_the_rotation(run: Scripted) -> None:
    """The Python SDK hands an event raised while no waiter is open to every later waiter of its name;
    a forged Supersede raised during provisioning must not end every later race at once, nor hide a real
    emergency."""
    run.use(verify_new_key=[{"raise": "host cache"}, {"verified": True, "attempts": 2, "lastStatus": 200}])
    instance = run.start()
    run.durable.wait(instance, stage="verifying")
    run.durable.raise_event(instance, "Supersede", {"rotationId": "x", "next": {}}, sign=False)
    run.durable.wait(instance, stage="overlap", timeout=60)
    run.durable.clock(autoAdvance=False)
    time.sleep(0.5)
    assert len(ignored_count(run, instance)) == 1  # judged once, then gone
    successor = emergency_input()
    supersede(run, instance, successor)
    taken_over(run, instance, successor)
    run.durable.clock(autoAdvance=True)
    assert run.durable.wait(instance)["output"]["outcome"] == "completed"


# -- an emergency takes over at once, wherever the running rotation is -------------------------------------


def reach(run: Scripted, instance: str, stage: str) -> None:
    if stage == "extended":
        run.durable.wait(instance, stage="held")
        run.durable.raise_event(instance, "Extend", {"actor": APPROVER, "by": "PT6H"})
    run.durable.wait(instance, stage=stage, timeout=60)


@pytest.mark.parametrize("stage", ["overlap", "held", "extended", "watching"])
def test_an_emergency_takes_over_at_once_with_the_clock_standing_still(run: Scripted, stage: str) -> None:
    held = stage in ("held", "extended")
    quiet = {"failures": 0, "baseline": 0}
    run.use(count_auth_failures=[{"failures": 50, "baseline": 2}, quiet] if held else [quiet])
    instance = run.start()
    reach(run, instance, stage)
    run.durable.clock(autoAdvance=False)
    time.sleep(0.3)  # the rotation is back in its wait
    revokes_before = len(run.calls("revoke_old_keys"))
    successor = emergency_input()
    raised = time.monotonic()
    supersede(run, instance, successor)
    wait_until(lambda: len(run.calls("revoke_old_keys")) > revokes_before, timeout=20)
    elapsed = time.monotonic() - raised
    print(f"emergency during {stage}: old keys revoked {elapsed:.2f} s after the event, clock standing still")
    emergency_revoke = run.calls("revoke_old_keys")[-1]["request"]
    assert emergency_revoke["rotationId"] == successor["rotationId"]
    assert emergency_revoke["revokeKeyNames"] is None  # every other key of the family
    assert elapsed < 10
    run.durable.clock(autoAdvance=True)
    final = run.durable.wait(instance)
    assert final["output"]["rotationId"] == successor["rotationId"] and final["output"]["outcome"] == "completed"
    assert ("handover", "done") not in steps(final)  # the successor's own timeline


def test_an_ack_after_the_overlaps_first_wake_point_ends_it_at_once(run: Scripted) -> None:
    """Past the first adoption check the overlap races a new timer; the consumer's ack raised then must end
    it without waiting for the next wake point (the clock stands still: only an immediate end passes)."""
    run.use(check_adoption=[{"readers": [], "error": None}])
    billing = {"name": "billing-worker", "objectId": "00000000-0000-0000-0000-00000000c001"}
    instance = run.start(consumers=[billing])
    run.durable.wait(instance, stage="overlap")
    run.durable.clock(autoAdvance=False)
    run.durable.clock(advanceBy=17 * 3600)  # past the first adoption check of the two-day overlap
    wait_until(lambda: bool(run.calls("check_adoption")))
    time.sleep(0.5)  # back in its wait
    run.durable.raise_event(instance, "ConsumerAck", {"objectId": billing["objectId"], "name": billing["name"]})
    wait_until(lambda: run.durable.status(instance)["customStatus"]["stage"] != "overlap")
    status = run.durable.status(instance)
    assert [s["step"] for s in status_steps(status) if s["step"] in ("ack", "overlap")] == ["ack", "overlap"]
    run.durable.clock(autoAdvance=True)
    assert run.durable.wait(instance)["output"]["outcome"] == "completed"


@pytest.mark.parametrize("step", ["check_adoption", "count_auth_failures"])
def test_an_emergency_raised_while_a_step_runs_between_two_waits_takes_over_when_it_ends(
    run: Scripted, step: str
) -> None:
    """Between two waits (an adoption check in the overlap, the gate's query before a hold) the SDK hands an
    event to a waiter of an earlier race that nobody awaits; the rotation must still take it at once, not at
    the next wake point or the hold's deadline (clock standing still)."""
    slow = {"sleep": 2.0}
    if step == "check_adoption":
        run.use(check_adoption=[{**slow, "readers": [], "error": None}])
    else:
        run.use(count_auth_failures=[{**slow, "failures": 50, "baseline": 2, "error": None}])
    instance = run.start()
    run.durable.wait(instance, stage="overlap")
    run.durable.clock(autoAdvance=False)
    run.durable.clock(advanceBy=17 * 3600 if step == "check_adoption" else 3 * 86400)
    wait_until(lambda: bool(run.calls(step)))  # the slow step is running now
    successor = emergency_input()
    supersede(run, instance, successor)
    taken_over(run, instance, successor)
    run.durable.clock(autoAdvance=True)
    assert run.durable.wait(instance)["output"]["outcome"] == "completed"


@pytest.mark.parametrize("while_busy", [False, True], ids=["waiting", "during-a-step"])
def test_two_acks_raised_together_after_a_wake_point_both_count_at_once(run: Scripted, while_busy: bool) -> None:
    """Two consumers acknowledging in the same instant, past the first adoption check: either while the
    overlap waits again, or while the check itself runs (no fresh waiter open then). Both must count and
    end the overlap at once; the SDK keeps one unheard event per name, so a lone waiter lost one of them."""
    run.use(check_adoption=[{"readers": [], "error": None, **({"sleep": 1.5} if while_busy else {})}])
    instance = run.start()
    run.durable.wait(instance, stage="overlap")
    run.durable.clock(autoAdvance=False)
    run.durable.clock(advanceBy=17 * 3600)  # past the first adoption check of the two-day overlap
    wait_until(lambda: bool(run.calls("check_adoption")))
    time.sleep(0.2 if while_busy else 0.5)  # inside the check, or back in its wait
    for oid in ("00000000-0000-0000-0000-00000000c001", "00000000-0000-0000-0000-00000000c002"):
        run.durable.raise_event(instance, "ConsumerAck", {"objectId": oid, "name": "worker"})
    wait_until(lambda: run.durable.status(instance)["customStatus"]["stage"] != "overlap")
    status = run.durable.status(instance)
    assert [s["step"] for s in status_steps(status) if s["step"] in ("ack", "overlap")] == ["ack", "ack", "overlap"]
    run.durable.clock(autoAdvance=True)
    assert run.durable.wait(instance)["output"]["outcome"] == "completed"
