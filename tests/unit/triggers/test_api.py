"""The operator API's pure parts: request parsing and refusals, the views of a durable status, and the
contracts it shares with the orchestrator (event names) and the log redaction (a key in a URL path)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest

from orchestrations import gate
from rotation.policy import parse_target
from rotation.redaction import redact
from tests.rotation_harness import local_target
from triggers import api_rotations, api_targets
from triggers.api_http import ApiError, json_body, no_query, reason_field
from triggers.api_views import Snapshot, rotation_view, target_view

KEY = "fr5V3_DuT3sj89nhoI-R-3L0Kmm_e87q7Dv-9QEBdNRYAzFu7A7yeA=="


def request(body: bytes = b"", params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://h/api/x", body=body, params=params or {}, headers={})


def refusal(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def test_an_extension_the_api_accepts_is_one_the_orchestrator_applies_unclamped() -> None:
    assert api_rotations.MAX_EXTEND == gate.MAX_EXTEND  # event names: both use rotation/stages.py Mail


def test_bodies_refuse_unknown_fields_without_repeating_a_pasted_key_as_their_name() -> None:
    err = refusal(lambda: json_body(request(json.dumps({KEY: 1}).encode()), {"reason": str}))
    assert err.status == 400 and err.code == "unknown_field" and KEY not in json.dumps(err.body())
    named = refusal(lambda: json_body(request(b'{"reasn": "x"}'), {"reason": str}))
    assert named.field == "reasn" and "known: reason" in named.message
    assert refusal(lambda: json_body(request(b"[1]"), {})).field == "body"
    assert refusal(lambda: json_body(request(b"\xff{"), {})).field == "body"
    assert refusal(lambda: json_body(request(b" " * (16 * 1024 + 1)), {})).status == 413
    assert json_body(request(b"  "), {"reason": str}) == {}


def test_reasons_are_bounded_plain_text_without_secrets() -> None:
    assert reason_field({"reason": "  leaked in a gist "}) == "leaked in a gist"
    assert reason_field({}) is None
    for bad in ("", " ", "x" * 501, "a\nb", f"it was {KEY}"):
        err = refusal(lambda bad=bad: reason_field({"reason": bad}))
        assert err.field == "reason" and KEY not in err.message
    assert refusal(lambda: reason_field({}, required=True)).field == "reason"


def test_a_function_key_in_the_query_is_refused_by_name_not_value() -> None:
    err = refusal(lambda: no_query(request(params={"code": KEY})))
    assert err.field == "code" and KEY not in err.message


def test_a_key_in_a_logged_url_path_is_masked() -> None:
    assert KEY not in redact(f"HTTP POST /api/targets/{KEY}/rotations")
    for glued in (f"x{KEY}tail", f"{KEY}=x", f"{KEY}==", f"a/{KEY}/b", f"{KEY}-_"):
        assert KEY not in redact(f"HTTP GET /api/targets/{glued}"), glued


def status(runtime: str, custom: dict[str, Any] | None, output: Any = None) -> Any:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return SimpleNamespace(
        instance_id="rotation-demo-orders",
        runtime_status=df.OrchestrationRuntimeStatus[runtime],
        custom_status=custom,
        output=output,
        input_={"rotationId": "demo-orders-20260102t030000z-s", "mode": "scheduled"},
        created_time=stamp,
        last_updated_time=stamp,
    )


ANNOUNCED = {
    "rotationId": "demo-orders-20260102t030000z-s",
    "mode": "scheduled",
    "stage": "overlap",
    "keyName": "orders-client-20260102t030000z-s",
    "version": "v2",
    "previousKeyName": "orders-client",
    "previousVersion": "v1",
    "steps": [{"step": "announce", "status": "done", "at": "2026-01-02T03:00:01.000Z"}],
}


def test_the_current_key_is_the_new_one_once_announced_and_not_compensated() -> None:
    assert Snapshot.of(status("Running", ANNOUNCED)).current_key() == ("orders-client-20260102t030000z-s", "v2")
    provisioning = {**ANNOUNCED, "stage": "provisioning", "steps": []}
    assert Snapshot.of(status("Running", provisioning)).current_key() == ("orders-client", "v1")
    compensated = status("Completed", {**ANNOUNCED, "stage": "failed"}, {"outcome": "failed", "compensated": True})
    assert Snapshot.of(compensated).current_key() == ("orders-client", "v1")


def test_target_view_in_flight_then_last_rotation_and_next_due() -> None:
    target = parse_target(local_target("demo-orders"))
    running = target_view(target, Snapshot.of(status("Running", ANNOUNCED)))
    assert running["inFlight"]["rotationId"] == ANNOUNCED["rotationId"] and running["inFlight"]["stage"] == "overlap"
    assert running["lastRotation"] is None and running["nextDue"] is None
    finished = status("Completed", {**ANNOUNCED, "stage": "completed"}, {"outcome": "completed"})
    done = target_view(target, Snapshot.of(finished))
    assert done["inFlight"] is None and done["lastRotation"]["outcome"] == "completed"
    assert done["nextDue"] == "2026-02-01T03:04:05.000Z"  # completion + the 30-day interval
    assert target_view(target, None)["currentKeyName"] is None


def test_a_terminated_rotation_says_so_and_why() -> None:
    snap = Snapshot.of(status("Terminated", ANNOUNCED, "ended by emergency rotation x requested by alice (oid)"))
    assert snap is not None and not snap.running
    view = rotation_view(snap)
    assert view["stage"] == "terminated" and view["outcome"] == "terminated"
    assert view["terminationReason"].startswith("ended by emergency rotation")
    assert Snapshot.of(SimpleNamespace(runtime_status=None)) is None


# -- a start that loses a race ----------------------------------------------------------------------


class RacedClient:
    """A durable client on which another request's on-demand start lands between this request's look and its
    own start: start_new is refused as the Python client refuses it (a bare Exception with the host's body)."""

    ON_DEMAND = "demo-orders-20260102t030000z-o"

    def __init__(self) -> None:
        self.current: Any = SimpleNamespace(runtime_status=None)  # nothing running when the request looks
        self.raised: list[tuple[str, dict[str, Any]]] = []

    def running(self, rotation_id: str, mode: str) -> Any:
        stamp = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)
        return SimpleNamespace(
            instance_id="rotation-demo-orders",
            runtime_status=df.OrchestrationRuntimeStatus.Running,
            custom_status={"rotationId": rotation_id, "mode": mode, "stage": "provisioning"},
            output=None,
            input_={"rotationId": rotation_id, "mode": mode},
            created_time=stamp,
            last_updated_time=stamp,
        )

    async def get_status(self, instance_id: str, show_input: bool = False) -> Any:
        return self.current

    async def start_new(self, name: str, instance_id: str, client_input: Any) -> str:
        self.current = self.running(self.ON_DEMAND, "on-demand")
        host_body = {"ExceptionType": "DurableTask.Core.Exceptions.OrchestrationAlreadyExistsException"}
        raise Exception(host_body)

    async def raise_event(self, instance_id: str, event: str, payload: dict[str, Any]) -> None:
        self.raised.append((event, payload))
        self.current = self.running(payload["rotationId"], "emergency")  # it handed over


def test_an_emergency_whose_start_loses_to_an_on_demand_one_supersedes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: the loser answered 409 (or 500, with the same rotation id); an emergency must take over."""
    import base64

    from rotation.policy import parse_policy
    from tests.rotation_harness import LOCAL_POLICY, PLACEHOLDER_ENV
    from triggers import api_http

    policy = parse_policy(json.loads(LOCAL_POLICY.read_text()), PLACEHOLDER_ENV)
    monkeypatch.setattr(api_http, "policy", lambda: policy)
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    monkeypatch.setenv("KEYROTATION_SIGNING_KEY", "unit-test-signing-key-" + "k" * 20)
    claims = [{"typ": "oid", "val": "00000000-0000-0000-0000-0000000000e1"}, {"typ": "name", "val": "responder"}]
    principal = {"auth_typ": "aad", "claims": [*claims, {"typ": "roles", "val": "KeyRotation.Emergency"}]}
    req = func.HttpRequest(
        "POST",
        "http://h/api/targets/demo-orders/emergency-rotation",
        body=b'{"reason": "leaked in a ticket"}',
        headers={"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode()},
        route_params={"target": "demo-orders"},
    )
    client = RacedClient()
    handler = api_targets.api_emergency_rotation._function.get_user_function().__wrapped__  # the client as is
    response = asyncio.run(handler(req, client))
    body = json.loads(response.get_body())
    assert response.status_code == 202, body
    assert body["supersededRotationId"] == RacedClient.ON_DEMAND and body["rotationId"].endswith("-e")
    assert [event for event, _ in client.raised] == ["Supersede"]
