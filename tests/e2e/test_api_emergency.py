"""Emergency rotation over the operator API, on the real app with the emulators: a leaked key is dead
within a handful of API round trips, exactly one rotation owns the target, and the state conflicts of
the other routes answer 409 without changing anything.

The figures (call latency, time and requests until the old key is refused) are printed (`pytest -s`):
DESIGN budgets them but they are measured, not asserted beyond a generous sanity bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.api_stack import BILLING, MASTER, ORDERS, ApiStack, api_stack
from tools import demo_report

pytestmark = pytest.mark.slow

RESPONDER = "responder"
EMERGENCY = "KeyRotation.Emergency"
PROBE_MARK = "by=responder"  # our own probes of the data plane, told apart in the request log


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    with api_stack(tmp_path_factory.mktemp("api-emergency")) as stack:
        yield stack


def family_keys(api: ApiStack) -> dict[str, str]:
    return {n: v for n, v in api.live_keys("demo-orders").items() if n.startswith("orders-client")}


def accepted(api: ApiStack, key: str, path: str = "demo-orders.azurewebsites.net/api/ping") -> bool:
    """One call to the target's data plane with a key, as an attacker holding the leaked key would."""
    url = f"{api.stack.emulator['url']}/_targets/{path}?{PROBE_MARK}"
    response = requests.get(url, headers={"x-functions-key": key}, verify=api.stack.ca_bundle, timeout=10)
    assert response.status_code in (200, 401), response.status_code
    return response.status_code == 200


def events_of(api: ApiStack, target_id: str) -> list[tuple[str, str]]:
    """(type, rotation id) received for the target, in order, redeliveries (same id) counted once."""
    seen: set[str] = set()
    out = []
    for row in api.emulator_state()["eventgrid"]["events"]:
        if row.get("subject") != f"targets/{target_id}" or row.get("id") in seen:
            continue
        seen.add(row["id"])
        data = (row.get("event") or {}).get("data") or {}
        out.append((str(row["type"]).removeprefix("KeyRotation."), data.get("rotationId")))
    return out


def scheduled_rotation_in_overlap(api: ApiStack) -> str:
    """One scheduler tick (the timer, run by hand): demo-orders' scheduled rotation, held in its overlap
    because the virtual clock does not move on its own here."""
    headers = {"x-functions-key": api.host.master_key}
    assert api.host.post("/admin/functions/rotation_timer", headers=headers, json={"input": ""}).status_code == 202
    deadline = time.monotonic() + 30
    while not api.status("rotation-demo-orders") and time.monotonic() < deadline:
        time.sleep(0.05)
    status = api.wait("rotation-demo-orders", stage="overlap")
    assert status["customStatus"]["mode"] == "scheduled"
    return status["customStatus"]["rotationId"]


def test_emergency_mid_overlap_kills_both_old_keys_fast_and_owns_the_target(api: ApiStack) -> None:
    scheduled = scheduled_rotation_in_overlap(api)
    old = family_keys(api)
    assert len(old) == 2, sorted(old)  # the operator's original key and the scheduled rotation's new one
    assert all(accepted(api, value) for value in old.values())
    responder = api.token(RESPONDER, EMERGENCY)
    seq0 = api.last_seq()

    started = time.monotonic()
    response = api.call(
        "POST", "targets/demo-orders/emergency-rotation", as_=responder, json={"reason": "key pasted in a public issue"}
    )
    call_seconds = time.monotonic() - started
    assert response.status_code == 202, response.text
    body = response.json()
    emergency = body["rotationId"]
    assert emergency.endswith("-e") and body["targetId"] == ORDERS
    assert body["statusUrl"] == f"/api/rotations/{emergency}" == response.headers["Location"]
    assert body["supersededRotationId"] == scheduled

    alive = dict(old)
    probes = 0
    while alive and time.monotonic() - started < 30:
        for name, value in list(alive.items()):
            probes += 1
            if not accepted(api, value):
                del alive[name]
    dead_seconds = time.monotonic() - started
    assert not alive, f"still accepted after 30 s: {sorted(alive)}"

    log = [r for r in api.request_log(since=seq0) if PROBE_MARK not in str(r.get("query") or "")]
    last_refusal = max(int(r["seq"]) for r in api.request_log(since=seq0) if PROBE_MARK in str(r.get("query") or ""))
    before = [r for r in log if int(r["seq"]) < last_refusal]
    by_service: dict[str, int] = {}
    for r in before:
        by_service[r["service"]] = by_service.get(r["service"], 0) + 1
    print(
        f"\nemergency figures: call answered in {call_seconds * 1000:.0f} ms; both old keys refused "
        f"{dead_seconds * 1000:.0f} ms after the call; {len(before)} API requests by the app in between "
        f"({', '.join(f'{k} {v}' for k, v in sorted(by_service.items()))}; operations: "
        f"{', '.join(r['operation'] for r in before)}); {probes} probes by the test"
    )
    assert call_seconds < 5 and dead_seconds < 30  # sanity only: the figures above are the measurement

    # A second emergency call while this one runs returns it: no second new key.
    again = api.call("POST", "targets/demo-orders/emergency-rotation", as_=responder, json={"reason": "again"})
    assert again.status_code == 200 and again.json()["rotationId"] == emergency, again.text
    api.wait("rotation-demo-orders", stage="watching")
    assert len(family_keys(api)) == 1

    api.advance(3600)  # past the post-revocation watch
    final = api.wait("rotation-demo-orders")
    assert final["runtimeStatus"] == "Completed" and final["output"]["outcome"] == "completed", final
    # The scheduler that started the superseded rotation is not left waiting: the instance continued as
    # the emergency, and the scheduler's summary reports the emergency's outcome.
    (tick,) = [i for i in api.instances() if i.startswith("scheduler-")]
    deadline = time.monotonic() + 10
    while ORDERS in (api.status(tick).get("customStatus") or {}).get("running", []) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ORDERS not in api.status(tick)["customStatus"]["running"]
    keys = family_keys(api)
    new_key = final["output"]["keyName"]
    assert list(keys) == [new_key] and not set(old) & set(keys)
    assert accepted(api, keys[new_key]) and not any(accepted(api, v) for v in old.values())

    state = api.emulator_state()
    orders = api.policy().target(ORDERS)
    assert orders is not None
    versions = demo_report.secret_versions(state, orders)
    enabled = [v for v in versions if v["enabled"]]
    assert [v["version"] for v in enabled] == [final["output"]["version"]]
    assert enabled[0]["value"] == keys[new_key]
    scheduled_versions = [v for v in versions if v["tags"].get("rotationId") == scheduled]
    assert scheduled_versions and all(not v["enabled"] and v["tags"]["stage"] == "revoked" for v in scheduled_versions)

    assert events_of(api, ORDERS) == [
        ("RotationStarted", scheduled),
        ("NewKeyAvailable", scheduled),
        ("RotationFailed", scheduled),  # superseded: its story is closed before the emergency's begins
        ("RotationStarted", emergency),
        ("NewKeyAvailable", emergency),
        ("OldKeyRevoked", emergency),
        ("RotationCompleted", emergency),
    ]
    started_event = next(
        row["event"]["data"]
        for row in state["eventgrid"]["events"]
        if row["type"].endswith("RotationStarted") and row["event"]["data"]["rotationId"] == emergency
    )
    assert started_event["actor"]["name"] == RESPONDER and started_event["mode"] == "emergency"
    assert started_event["reason"] == "key pasted in a public issue"
    revoked = next(
        (row["event"]["data"] for row in state["eventgrid"]["events"] if row["type"].endswith("OldKeyRevoked")), {}
    )
    assert sorted(revoked.get("revokedKeyNames") or []) == sorted(old)

    # Who and why, in the status the API serves; the replaced scheduled rotation is a 404 that says so.
    reader = api.token("reader", "KeyRotation.Reader")
    shown = api.call("GET", f"rotations/{emergency}", as_=reader).json()
    assert shown["mode"] == "emergency" and shown["stage"] == "completed"
    assert shown["trigger"]["actor"]["name"] == RESPONDER
    assert shown["trigger"]["reason"] == "key pasted in a public issue"
    gone = api.call("GET", f"rotations/{scheduled}", as_=reader)
    assert gone.status_code == 404 and emergency in gone.json()["error"]["message"]
    target = api.call("GET", "targets/demo-orders", as_=reader).json()
    assert target["currentKeyName"] == new_key and target["inFlight"] is None
    assert target["lastRotation"]["rotationId"] == emergency and target["lastRotation"]["outcome"] == "completed"
    assert target["nextDue"] > target["lastRotation"]["at"]


def test_state_conflicts_answer_409_and_change_nothing(api: ApiStack) -> None:
    running = api.fresh_rotation(ORDERS, "overlap")
    operator = api.token("operator", "KeyRotation.Operator")
    approver = api.token("approver", "KeyRotation.Approver")
    consumer = api.token(BILLING[0], "KeyRotation.Consumer", oid=BILLING[1])
    starts, raised, seq = api.starts(), api.raised_events("rotation-demo-orders"), api.last_seq()

    second = api.call("POST", "targets/demo-orders/rotations", as_=operator, json={"reason": "routine"})
    assert second.status_code == 409 and running in second.json()["error"]["message"]
    for action, body in (("approve", {}), ("abort", {"reason": "no"}), ("extend", {"by": "PT6H"})):
        refused = api.call("POST", f"rotations/{running}/{action}", as_=approver, json=body)
        assert refused.status_code == 409, (action, refused.text)
        assert refused.json()["error"]["code"] == "wrong_stage" and "overlap" in refused.json()["error"]["message"]
    assert api.starts() == starts and api.raised_events("rotation-demo-orders") == raised
    assert [r for r in api.request_log(since=seq) if r["service"] != "control"] == []

    # In the overlap: only a registered consumer may acknowledge, and its ack shows in the timeline.
    stranger = api.token("stranger", "KeyRotation.Consumer")
    refused = api.call("POST", f"rotations/{running}/ack", as_=stranger, json={})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_a_consumer"
    assert api.raised_events("rotation-demo-orders") == raised
    acked = api.call("POST", f"rotations/{running}/ack", as_=consumer, json={})
    assert acked.status_code == 202, acked.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        s["step"] == "ack" for s in api.status("rotation-demo-orders")["customStatus"]["steps"]
    ):
        time.sleep(0.03)
    ack_step = next(s for s in api.status("rotation-demo-orders")["customStatus"]["steps"] if s["step"] == "ack")
    assert ack_step["actor"]["objectId"] == BILLING[1]
    raised += 1

    # Held: an acknowledgement is too late; a decision is what it waits for.
    api.advance(3 * 86400)
    api.wait("rotation-demo-orders", stage="held")
    late = api.call("POST", f"rotations/{running}/ack", as_=consumer, json={})
    assert late.status_code == 409 and "held" in late.json()["error"]["message"]
    assert api.raised_events("rotation-demo-orders") == raised
    approved = api.call("POST", f"rotations/{running}/approve", as_=approver, json={"reason": "signal is down"})
    assert approved.status_code == 202, approved.text
    api.wait("rotation-demo-orders", stage="watching")
    api.advance(3600)
    final = api.wait("rotation-demo-orders")
    assert final["output"]["outcome"] == "completed"
    hold_step = next(s for s in final["customStatus"]["steps"] if s["status"] == "approved")
    assert hold_step["actor"]["name"] == "approver" and "signal is down" in hold_step["detail"]

    # Finished: every action is a 409.
    for action, token, body in (
        ("ack", consumer, {}),
        ("approve", approver, {}),
        ("abort", approver, {}),
        ("extend", approver, {"by": "PT1H"}),
    ):
        assert api.call("POST", f"rotations/{running}/{action}", as_=token, json=body).status_code == 409


def test_master_key_is_emergency_only_without_overlap(api: ApiStack) -> None:
    operator = api.token("operator", "KeyRotation.Operator")
    responder = api.token(RESPONDER, EMERGENCY)
    starts = api.starts()
    refused = api.call("POST", f"targets/{MASTER}/rotations", as_=operator, json={})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "master_key_emergency_only"
    overlap = api.call(
        "POST", f"targets/{MASTER}/emergency-rotation", as_=responder, json={"reason": "leak", "overlap": "PT1M"}
    )
    assert overlap.status_code == 400 and overlap.json()["error"]["field"] == "overlap"
    assert api.starts() == starts

    old_master = api.live_keys("demo-orders", scope="masterKey")["_master"]
    response = api.call("POST", f"targets/{MASTER}/emergency-rotation", as_=responder, json={"reason": "leak"})
    assert response.status_code == 202, response.text
    api.wait(f"rotation-{MASTER}", stage="watching")
    api.advance(3600)
    final = api.wait(f"rotation-{MASTER}")
    assert final["output"]["outcome"] == "completed", final
    assert not accepted(api, old_master)
    assert accepted(api, api.live_keys("demo-orders", scope="masterKey")["_master"])


@pytest.mark.parametrize("where", ["held", "late-overlap"])
def test_an_emergency_kills_the_old_keys_at_once_while_held_or_late_in_an_overlap(api: ApiStack, where: str) -> None:
    """Issue 12, finding 2: with a rotation held by the gate, or past its overlap's first wake point, the
    emergency answered `handover: pending` and the leaked key kept working until an approval or the next
    wake point (hours). The virtual clock stands still here: only a take-over at once passes."""
    running = api.fresh_rotation(ORDERS, "held" if where == "held" else "overlap")
    if where == "late-overlap":
        api.advance(17 * 3600)  # past the first adoption check of the two-day overlap, still overlapping
        time.sleep(1.0)  # the check runs, and the rotation waits again for the next wake point
        assert api.stage("rotation-demo-orders") == "overlap"
    old = family_keys(api)
    assert len(old) == 2 and all(accepted(api, value) for value in old.values())
    responder = api.token(RESPONDER, EMERGENCY)
    started = time.monotonic()
    response = api.call("POST", "targets/demo-orders/emergency-rotation", as_=responder, json={"reason": "leaked"})
    call_seconds = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert response.json()["supersededRotationId"] == running and "handover" not in response.json()
    alive = dict(old)
    while alive and time.monotonic() - started < 30:
        alive = {name: value for name, value in alive.items() if accepted(api, value)}
    dead_seconds = time.monotonic() - started
    print(
        f"\nemergency during {where}: call answered in {call_seconds * 1000:.0f} ms; both old keys refused "
        f"{dead_seconds * 1000:.0f} ms after the call, the virtual clock standing still"
    )
    assert not alive, f"still accepted after 30 s: {sorted(alive)}"
    api.wait("rotation-demo-orders", stage="watching")
    api.advance(3600)
    final = api.wait("rotation-demo-orders")
    assert final["output"]["mode"] == "emergency" and final["output"]["outcome"] == "completed"
