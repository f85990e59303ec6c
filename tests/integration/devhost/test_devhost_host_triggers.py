"""Timer triggers, the admin run API and the Event Grid webhook, against a devhost process."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.devhost_launcher import HOST_APP, Devhost, devhost_command, running_devhost

pytestmark = pytest.mark.slow

YEARLY = "0 0 0 1 1 *"
EVENTGRID = "runtime/webhooks/EventGrid"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    state = tmp_path_factory.mktemp("devhost")
    # tick missed its (yearly) occurrence while the host was down: the schedule monitor catches up
    (state / "timers.json").write_text(
        json.dumps({"tick": {"Last": "2020-01-01T00:00:00+00:00", "Next": "2021-01-01T00:00:00+00:00"}})
    )
    env = {"TICK_SCHEDULE": YEARLY, "FAST_SCHEDULE": "* * * * * *"}
    with running_devhost(state, HOST_APP, emulators=False, env=env) as running:
        yield running


def calls(host: Devhost, kind: str, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
    """Wait until the app recorded ``count`` calls of ``kind``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [c for c in host.get("api/calls").json() if c["kind"] == kind]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def admin_run(host: Devhost, name: str, payload: Any = None, key: str | None = None) -> int:
    body = {"input": payload if payload is not None else ""}
    return host.post(
        f"admin/functions/{name}", json=body, headers={"x-functions-key": key or host.master_key}
    ).status_code


def webhook(host: Devhost, function: str, body: Any, event_type: str | None = "Notification", **kwargs: Any) -> Any:
    headers = {"aeg-event-type": event_type} if event_type else {}
    headers.update(kwargs.pop("headers", {}))
    params = {"functionName": function, "code": kwargs.pop("code", host.system_key("eventgrid_extension"))}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return host.post(EVENTGRID, params=params, data=data, headers=headers, **kwargs)


# -- timers ---------------------------------------------------------------------------------------


def test_missed_occurrence_fires_once_past_due_at_startup(host: Devhost) -> None:
    ticks = calls(host, "tick")
    assert len(ticks) == 1
    assert ticks[0]["past_due"] is True
    assert ticks[0]["type"] == "TimerRequest"
    assert ticks[0]["status"]["Last"].startswith("2020-01-01")
    assert ticks[0]["status"]["Next"].startswith("2021-01-01")  # the missed occurrence


def test_schedule_from_app_setting_fires_by_itself(host: Devhost) -> None:
    fast = calls(host, "fast_tick", count=2)
    assert len(fast) >= 2
    assert not any(c["past_due"] for c in fast)


def test_admin_run_invokes_a_timer_function_on_demand(host: Devhost) -> None:
    before = len(calls(host, "tick"))
    assert admin_run(host, "TICK") == 202  # function names are case-insensitive
    ticks = calls(host, "tick", count=before + 1)
    assert len(ticks) == before + 1
    assert ticks[-1]["past_due"] is False
    assert ticks[-1]["status"]["Next"].endswith("-01-01T00:00:00+00:00")


def test_admin_run_needs_the_master_key_and_a_known_non_http_function(host: Devhost) -> None:
    assert admin_run(host, "tick", key=host.function_key) == 401
    assert admin_run(host, "no_such_function") == 404
    assert admin_run(host, "item") == 400


def test_admin_run_delivers_an_event_grid_event(host: Devhost) -> None:
    event = {"id": "admin-1", "subject": "s", "eventType": "Custom.Thing", "data": {"n": 1}, "dataVersion": "1"}
    assert admin_run(host, "on_event", json.dumps(event)) == 202
    assert any(c["id"] == "admin-1" and c["cls"] == "EventGridEvent" for c in calls(host, "event"))


def test_missing_schedule_setting_stops_startup_with_its_name(tmp_path: Path) -> None:
    command = devhost_command(tmp_path, HOST_APP, emulators=False)
    env = {"PYTHONPATH": str(HOST_APP.parents[1]), "FAST_SCHEDULE": YEARLY, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "TICK_SCHEDULE" in done.stderr and "'tick'" in done.stderr
    assert not (tmp_path / "endpoints.json").exists()


# -- Event Grid webhook ---------------------------------------------------------------------------


def test_subscription_validation_handshake(host: Devhost) -> None:
    body = [
        {
            "id": "v1",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "subject": "",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
            "dataVersion": "1",
            "eventTime": "2026-01-01T00:00:00Z",
        }
    ]
    response = webhook(host, "on_event", body, "SubscriptionValidation")
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}


def test_cloudevents_options_handshake(host: Devhost) -> None:
    params = {"functionName": "on_event", "code": host.system_key("eventgrid_extension")}
    response = host.request(
        "OPTIONS", EVENTGRID, params=params, headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


def test_event_grid_schema_batch_is_one_invocation_per_event(host: Devhost) -> None:
    events = [
        {
            "id": f"eg-{n}",
            "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
            "subject": f"secret-{n}",
            "eventType": "Microsoft.KeyVault.SecretNearExpiry",
            "eventTime": "2026-01-01T00:00:00Z",
            "data": {"ObjectName": f"secret-{n}"},
            "dataVersion": "1",
        }
        for n in (1, 2)
    ]
    assert webhook(host, "on_event", events).status_code == 202
    seen = {c["id"]: c for c in calls(host, "event") if c["id"].startswith("eg-")}
    assert seen.keys() == {"eg-1", "eg-2"}
    assert seen["eg-2"] == {
        "kind": "event",
        "cls": "EventGridEvent",
        "id": "eg-2",
        "type": "Microsoft.KeyVault.SecretNearExpiry",
        "subject": "secret-2",
        "data": {"ObjectName": "secret-2"},
    }


def cloud_event(event_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/keyrotation",
        "type": "KeyRotation.NewKeyAvailable",
        "subject": "targets/demo",
        "time": "2026-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": {"rotationId": "r1"},
    }


def test_structured_cloud_event_and_batch(host: Devhost) -> None:
    single = webhook(
        host, "on_event", cloud_event("ce-1"), None, headers={"Content-Type": "application/cloudevents+json"}
    )
    assert single.status_code == 202
    batch = [cloud_event("ce-2"), cloud_event("ce-3")]
    batch_headers = {"Content-Type": "application/cloudevents-batch+json"}
    assert webhook(host, "on_event", batch, headers=batch_headers).status_code == 202
    seen = {c["id"]: c for c in calls(host, "event", count=3) if c["id"].startswith("ce-")}
    assert seen.keys() == {"ce-1", "ce-2", "ce-3"}
    assert seen["ce-1"]["cls"] == "CloudEvent"
    assert seen["ce-1"]["type"] == "KeyRotation.NewKeyAvailable"
    assert seen["ce-1"]["subject"] == "targets/demo"
    assert seen["ce-1"]["data"] == {"rotationId": "r1"}


def test_webhook_requires_the_event_grid_system_key(host: Devhost) -> None:
    event = [cloud_event("ce-nokey")]
    assert webhook(host, "on_event", event, code="").status_code == 401
    assert webhook(host, "on_event", event, code=host.function_key).status_code == 401
    assert webhook(host, "on_event", event, code=host.system_key("durabletask_extension")).status_code == 401
    assert not any(c["id"] == "ce-nokey" for c in host.get("api/calls").json() if c["kind"] == "event")


def test_webhook_errors(host: Devhost) -> None:
    assert webhook(host, "no_such_function", [cloud_event("x")]).status_code == 404
    assert webhook(host, "item", [cloud_event("x")]).status_code == 404  # not an Event Grid function
    assert webhook(host, "on_event", [cloud_event("x")], "Bogus").status_code == 400
    assert webhook(host, "on_event", b"not json").status_code == 400
    assert webhook(host, "on_event", [], "Unsubscribe").status_code == 202


def test_failing_function_is_a_500_without_its_message(host: Devhost) -> None:
    response = webhook(host, "failing_event", [cloud_event("ce-fail")])
    assert response.status_code == 500
    assert "s3cr3t" not in response.text
    assert "s3cr3t" not in Path(host.endpoints["logFile"]).read_text()
