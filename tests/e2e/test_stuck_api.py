"""The operator path over a stuck rotation, on the real app with the emulators: GET shows it in flight and
stuck; an on-demand or emergency rotation on that target is accepted (202), says which rotation it replaced,
and abandons it first; after the emergency exactly one key of the family is left."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api_stack import ApiStack, api_stack

pytestmark = pytest.mark.slow

INSTANCE = "rotation-demo-orders"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    with api_stack(tmp_path_factory.mktemp("api-stuck")) as stack:
        yield stack


def terminate(api: ApiStack, reason: str) -> None:
    """What an operator does with the Durable API (not the operator API): the rotation stops mid-way."""
    response = api.host.post(
        f"/runtime/webhooks/durabletask/instances/{INSTANCE}/terminate", params={**api.durable.code, "reason": reason}
    )
    assert response.status_code == 202, response.text
    api.wait(INSTANCE)


def failed_events(api: ApiStack) -> dict[str, dict[str, Any]]:
    rows = api.emulator_state()["eventgrid"]["events"]
    return {
        r["event"]["data"]["rotationId"]: r["event"]["data"]
        for r in rows
        if r["type"] == "KeyRotation.RotationFailed" and r.get("subject") == "targets/demo-orders"
    }


def test_operator_rotation_on_a_target_whose_rotation_was_terminated_replaces_it(api: ApiStack) -> None:
    stuck = api.fresh_rotation("demo-orders")
    terminate(api, "operator cleanup")
    reader = api.token("reader", "KeyRotation.Reader")

    target = api.call("GET", "targets/demo-orders", as_=reader).json()
    in_flight = target["inFlight"]
    assert in_flight["rotationId"] == stuck and in_flight["runtimeStatus"] == "Terminated"
    assert in_flight["stage"] == "overlap" and in_flight["stuck"]["announced"] is True
    assert in_flight["stuck"]["reason"] == "abandoned: instance Terminated at stage overlap (operator cleanup)"
    rotation = api.call("GET", f"rotations/{stuck}", as_=reader).json()
    assert rotation["stuck"]["runtimeStatus"] == "Terminated"

    operator = api.token("operator", "KeyRotation.Operator")
    response = api.call("POST", "targets/demo-orders/rotations", as_=operator)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["replaces"]["rotationId"] == stuck and body["replaces"]["stage"] == "overlap"
    status = api.wait(INSTANCE, stage="overlap")
    assert status["customStatus"]["rotationId"] == body["rotationId"]
    abandon = next(s for s in status["customStatus"]["steps"] if s["step"] == "abandon")
    assert abandon["status"] == "done" and stuck in abandon["detail"]
    view = api.call("GET", f"rotations/{body['rotationId']}", as_=reader).json()
    assert view["replaces"]["rotationId"] == stuck and "stuck" not in view
    assert failed_events(api)[stuck]["error"].startswith("abandoned: instance Terminated at stage overlap")


def test_emergency_on_a_stuck_target_abandons_it_and_leaves_one_key(api: ApiStack) -> None:
    stuck = api.fresh_rotation("demo-orders")
    terminate(api, "wrong button")
    responder = api.token("responder", "KeyRotation.Emergency")
    response = api.call(
        "POST", "targets/demo-orders/emergency-rotation", as_=responder, json={"reason": "key in a public gist"}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["replaces"]["rotationId"] == stuck and body["replaces"]["runtimeStatus"] == "Terminated"
    api.wait(INSTANCE, stage="watching")
    api.advance(3600)  # past the watch
    final = api.wait(INSTANCE)
    assert final["output"]["outcome"] == "completed" and final["output"]["rotationId"] == body["rotationId"]
    family = [n for n in api.live_keys("demo-orders") if n.startswith("orders-client")]
    assert family == [final["output"]["keyName"]]  # the stuck rotation's key and every older one are gone
    assert failed_events(api)[stuck]["error"] == "abandoned: instance Terminated at stage overlap (wrong button)"
