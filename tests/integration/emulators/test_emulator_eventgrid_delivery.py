"""Event Grid webhook subscriptions: validation handshakes, filters, delivery shapes, retries,
dead-lettering and delivery resumed after an emulator restart.

The subscriber is a small aiohttp app on a background thread whose answers each test scripts per
path. Delivery is at-least-once, so assertions count distinct event ids, never raw requests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from tests.emulator_process import Emulator, running_emulator

TOPIC_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/keyrotation-local"
    "/providers/Microsoft.EventGrid/topics/keyrotation-events"
)


@dataclass
class Hook:
    """How one receiver path answers: handshake behaviour and a queue of notification statuses."""

    handshake: str = "ok"  # ok | refuse | wrong-code
    statuses: list[int] = field(default_factory=list)  # consumed per notification; then `then`
    then: int = 200


class Receiver:
    """A webhook endpoint (plain http on loopback, as devhost serves) recording every request."""

    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rsplit("/", 1)[-1]
        body = await request.read()
        with self.lock:
            self.requests.append(
                {"path": path, "method": request.method, "headers": dict(request.headers), "body": body}
            )
            hook = self.hooks.setdefault(path, Hook())
        if request.method == "OPTIONS":
            if hook.handshake == "refuse":
                return web.Response(status=200)
            return web.Response(headers={"WebHook-Allowed-Origin": request.headers["WebHook-Request-Origin"]})
        if request.headers.get("aeg-event-type") == "SubscriptionValidation":
            code = json.loads(body)[0]["data"]["validationCode"]
            if hook.handshake == "refuse":
                return web.Response(status=403)
            return web.json_response({"validationResponse": code if hook.handshake == "ok" else "nope"})
        with self.lock:
            status = hook.statuses.pop(0) if hook.statuses else hook.then
        return web.Response(status=status)

    def start(self) -> None:
        self.thread.start()

        async def serve() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("*", "/hooks/{name}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            return runner

        self.runner = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def endpoint(self, path: str, hook: Hook | None = None) -> str:
        with self.lock:
            self.hooks[path] = hook or Hook()
        return f"{self.url}/hooks/{path}?functionName=consumer&code=secret-function-key"

    def seen(self, path: str, method: str = "POST", kind: str = "Notification") -> list[dict[str, Any]]:
        with self.lock:
            return [
                r
                for r in self.requests
                if r["path"] == path
                and r["method"] == method
                and (method != "POST" or r["headers"].get("aeg-event-type") == kind)
            ]

    def event_ids(self, path: str) -> set[str]:
        ids = set()
        for r in self.seen(path):
            payload = json.loads(r["body"])
            for event in payload if isinstance(payload, list) else [payload]:
                ids.add(event["id"])
        return ids


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.start()
    yield rec
    rec.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def subscribe(emulator: Emulator, name: str, endpoint: str, **body: Any) -> Any:
    return emulator.control("PUT", f"eventgrid/subscriptions/{name}", json={"endpoint": endpoint, **body})


def deliveries(emulator: Emulator, subscription: str) -> list[dict[str, Any]]:
    return emulator.control("GET", f"eventgrid/deliveries?subscription={subscription}").json()["value"]


def settled(emulator: Emulator, subscription: str, count: int) -> list[dict[str, Any]] | None:
    rows = deliveries(emulator, subscription)
    done = [r for r in rows if r["state"] in ("delivered", "dropped")]
    return rows if len(rows) == count and len(done) == count else None


def publish(emulator: Emulator, events: Any) -> None:
    client = EventGridPublisherClient(
        emulator.endpoints["eventGridTopic"], AzureKeyCredential(emulator.endpoints["eventGridTopicKey"])
    )
    client.send(events, connection_verify=emulator.ca)


def key_event(subject: str, type_: str = "KeyRotation.NewKeyAvailable") -> CloudEvent:
    return CloudEvent(source="/keyrotation", type=type_, subject=subject, data={"target": subject})


def test_cloud_events_subscription_handshakes_with_options_and_delivers_one_structured_event_per_request(
    emulator: Emulator, receiver: Receiver
) -> None:
    created = subscribe(emulator, "ce-basic", receiver.endpoint("ce-basic"), retrySchedule=[0.1])
    assert created.status_code == 201, created.text
    assert created.json()["deliverySchema"] == "CloudEventSchemaV1_0"  # the topic's schema by default
    (options,) = receiver.seen("ce-basic", method="OPTIONS")
    assert options["headers"]["WebHook-Request-Origin"] == "eventgrid.azure.net"

    events = [key_event("targets/app1"), key_event("targets/app2")]
    publish(emulator, events)
    rows = wait_until(lambda: settled(emulator, "ce-basic", 2))
    assert {r["state"] for r in rows} == {"delivered"} and {r["eventId"] for r in rows} == {e.id for e in events}

    requests = receiver.seen("ce-basic")
    assert receiver.event_ids("ce-basic") == {e.id for e in events}
    first = next(r for r in requests if json.loads(r["body"])["id"] == events[0].id)
    assert first["headers"]["Content-Type"] == "application/cloudevents+json; charset=utf-8"
    assert first["headers"]["aeg-subscription-name"] == "ce-basic"
    assert first["headers"]["aeg-delivery-count"] == "0"
    delivered = json.loads(first["body"])
    assert delivered["subject"] == "targets/app1" and delivered["data"] == {"target": "targets/app1"}
    assert delivered["specversion"] == "1.0" and delivered["source"] == "/keyrotation"

    listed = emulator.control("GET", "eventgrid/subscriptions").json()["value"]
    assert "ce-basic" in {s["name"] for s in listed}
    snapshot = emulator.state()["eventgrid"]
    assert {"ce-basic"} <= {s["name"] for s in snapshot["subscriptions"]}
    assert {e.id for e in events} <= {d["eventId"] for d in snapshot["deliveries"]}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"endpoint": "http://example.com/hook"}, "endpoint"),
        ({"endpoint": "ftp://127.0.0.1/hook"}, "endpoint"),
        ({"deliverySchema": "EventGridSchema"}, "deliverySchema"),
        ({"filter": {"advancedFilters": []}}, "advancedFilters"),
        ({"maxDeliveryAttempts": 31}, "maxDeliveryAttempts"),
        ({"retrySchedule": []}, "retrySchedule"),
    ],
)
def test_invalid_subscriptions_are_refused_with_the_field_named(
    emulator: Emulator, receiver: Receiver, body: dict[str, Any], named: str
) -> None:
    response = emulator.control(
        "PUT", "eventgrid/subscriptions/bad-sub", json={"endpoint": receiver.endpoint("bad-sub"), **body}
    )
    assert response.status_code == 400 and named in response.json()["error"]["message"]
    assert emulator.control("GET", "eventgrid/subscriptions/bad-sub").status_code == 404


def test_a_failed_cloud_events_handshake_creates_no_subscription(emulator: Emulator, receiver: Receiver) -> None:
    response = subscribe(emulator, "ce-refuses", receiver.endpoint("ce-refuses", Hook(handshake="refuse")))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "WebHook-Allowed-Origin" in message and "secret-function-key" not in message
    assert emulator.control("GET", "eventgrid/subscriptions/ce-refuses").status_code == 404
    publish(emulator, key_event("targets/app1"))
    assert deliveries(emulator, "ce-refuses") == []


def test_filters_pick_which_events_a_subscription_gets(emulator: Emulator, receiver: Receiver) -> None:
    hook = receiver.endpoint("filtered")
    selective = {
        "subjectBeginsWith": "targets/app-",
        "subjectEndsWith": "-prod",
        "includedEventTypes": ["KeyRotation.NewKeyAvailable", "KeyRotation.OldKeyRevoked"],
    }
    assert subscribe(emulator, "filtered", hook, filter=selective).status_code == 201
    wanted = [
        key_event("targets/app-1-prod"),
        key_event("TARGETS/APP-2-PROD", "keyrotation.oldkeyrevoked"),  # Azure matches case-insensitively
    ]
    unwanted = [
        key_event("targets/app-1-test"),
        key_event("targets/other-prod"),
        key_event("targets/app-1-prod", "KeyRotation.RotationHeld"),
        CloudEvent(source="/keyrotation", type="KeyRotation.NewKeyAvailable", data=None),  # no subject
    ]
    publish(emulator, wanted + unwanted)
    rows = wait_until(lambda: settled(emulator, "filtered", 2))
    assert {r["eventId"] for r in rows} == {e.id for e in wanted}
    assert receiver.event_ids("filtered") == {e.id for e in wanted}

    case_sensitive = {"subjectBeginsWith": "targets/", "isSubjectCaseSensitive": True}
    assert (
        subscribe(emulator, "filtered-cs", receiver.endpoint("filtered-cs"), filter=case_sensitive).status_code == 201
    )
    lower, upper = key_event("targets/x"), key_event("TARGETS/x")
    publish(emulator, [lower, upper])
    rows = wait_until(lambda: settled(emulator, "filtered-cs", 1))
    assert [r["eventId"] for r in rows] == [lower.id]


def test_a_500_is_retried_per_schedule_until_delivered(emulator: Emulator, receiver: Receiver) -> None:
    hook = receiver.endpoint("flaky", Hook(statuses=[500, 503]))
    assert subscribe(emulator, "flaky", hook, retrySchedule=[0.1, 0.2]).status_code == 201
    event = key_event("targets/app1")
    publish(emulator, event)
    (row,) = wait_until(lambda: settled(emulator, "flaky", 1))
    assert row["state"] == "delivered" and row["attempts"] == 3 and row["lastStatus"] == 200
    counts = [r["headers"]["aeg-delivery-count"] for r in receiver.seen("flaky")]
    assert counts == ["0", "1", "2"]
    assert receiver.event_ids("flaky") == {event.id}
    journal = [
        c for c in emulator.control("GET", "changes").json()["value"] if c["subject"] == "eventgrid/subscriptions/flaky"
    ]
    outcomes = [(c["detail"]["attempt"], c["detail"]["state"]) for c in journal if c["kind"] == "eventgrid.delivery"]
    assert outcomes == [(1, "retrying"), (2, "retrying"), (3, "delivered")]
    assert all("secret-function-key" not in json.dumps(c) for c in journal)


@pytest.mark.parametrize("status", [400, 401, 413])
def test_a_non_retryable_status_drops_the_event_after_one_attempt(
    emulator: Emulator, receiver: Receiver, status: int
) -> None:
    name = f"final-{status}"
    hook = receiver.endpoint(name, Hook(statuses=[status]))
    assert subscribe(emulator, name, hook, retrySchedule=[0.05]).status_code == 201
    refused, later = key_event("targets/a"), key_event("targets/b")
    publish(emulator, refused)
    (row,) = wait_until(lambda: settled(emulator, name, 1))
    assert row["state"] == "dropped" and row["attempts"] == 1 and row["lastStatus"] == status
    assert row["deadLetterReason"] == f"NonRetryableStatus:{status}" and row["nextAttempt"] is None
    publish(emulator, later)  # a later event still flows, and the dropped one was not retried meanwhile
    wait_until(lambda: settled(emulator, name, 2))
    bodies = [json.loads(r["body"])["id"] for r in receiver.seen(name)]
    assert bodies == [refused.id, later.id]


def test_max_delivery_attempts_ends_retrying(emulator: Emulator, receiver: Receiver) -> None:
    hook = receiver.endpoint("always-down", Hook(then=503))
    assert subscribe(emulator, "always-down", hook, retrySchedule=[0.05], maxDeliveryAttempts=3).status_code == 201
    publish(emulator, key_event("targets/app1"))
    (row,) = wait_until(lambda: settled(emulator, "always-down", 1))
    assert (row["state"], row["attempts"], row["deadLetterReason"]) == ("dropped", 3, "MaxDeliveryAttemptsExceeded")
    assert len(receiver.seen("always-down")) == 3


def test_deleting_a_subscription_drops_its_pending_deliveries(emulator: Emulator, receiver: Receiver) -> None:
    hook = receiver.endpoint("doomed", Hook(then=500))
    assert subscribe(emulator, "doomed", hook, retrySchedule=[3600]).status_code == 201
    publish(emulator, key_event("targets/app1"))
    wait_until(lambda: [r for r in deliveries(emulator, "doomed") if r["state"] == "retrying"])
    assert emulator.control("DELETE", "eventgrid/subscriptions/doomed").status_code == 204
    (row,) = deliveries(emulator, "doomed")
    assert (row["state"], row["deadLetterReason"]) == ("dropped", "SubscriptionDeleted")
    assert emulator.control("DELETE", "eventgrid/subscriptions/doomed").status_code == 404


@pytest.fixture
def event_grid_topic(emulator: Emulator) -> Iterator[Emulator]:
    """The topic switched to the Event Grid input schema for one test, then back to CloudEvents."""
    for sub in emulator.control("GET", "eventgrid/subscriptions").json()["value"]:
        emulator.control("DELETE", f"eventgrid/subscriptions/{sub['name']}")
    switched = emulator.control("PUT", "eventgrid/topic", json={"inputSchema": "EventGridSchema"})
    assert switched.status_code == 200 and switched.json()["inputSchema"] == "EventGridSchema"
    yield emulator
    for sub in emulator.control("GET", "eventgrid/subscriptions").json()["value"]:
        emulator.control("DELETE", f"eventgrid/subscriptions/{sub['name']}")
    emulator.control("PUT", "eventgrid/topic", json={"inputSchema": "CloudEventSchemaV1_0"}).raise_for_status()


def test_event_grid_schema_topic_validates_by_post_and_delivers_arrays_or_translated_cloud_events(
    event_grid_topic: Emulator, receiver: Receiver
) -> None:
    emulator = event_grid_topic
    assert (
        subscribe(emulator, "eg-wrong", receiver.endpoint("eg-wrong", Hook(handshake="wrong-code"))).status_code == 400
    )
    assert subscribe(emulator, "eg-sub", receiver.endpoint("eg-sub")).status_code == 201
    (validation,) = receiver.seen("eg-sub", kind="SubscriptionValidation")
    (validation_event,) = json.loads(validation["body"])
    assert validation_event["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert validation_event["data"]["validationCode"]
    as_cloud = subscribe(emulator, "eg-as-ce", receiver.endpoint("eg-as-ce"), deliverySchema="CloudEventSchemaV1_0")
    assert as_cloud.status_code == 201  # Event Grid schema input may be delivered as CloudEvents
    assert receiver.seen("eg-as-ce", method="OPTIONS")

    event = EventGridEvent(
        subject="targets/app1", event_type="KeyRotation.NewKeyAvailable", data={"n": 1}, data_version="1.0"
    )
    publish(emulator, event)
    wait_until(lambda: settled(emulator, "eg-sub", 1) and settled(emulator, "eg-as-ce", 1))

    (notification,) = receiver.seen("eg-sub")
    assert notification["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert notification["headers"]["aeg-data-version"] == "1.0"
    (delivered,) = json.loads(notification["body"])  # an array of exactly one event
    assert delivered["id"] == str(event.id) and delivered["eventType"] == "KeyRotation.NewKeyAvailable"
    assert delivered["topic"] == TOPIC_ID and delivered["metadataVersion"] == "1" and delivered["data"] == {"n": 1}

    (translated_request,) = receiver.seen("eg-as-ce")
    translated = json.loads(translated_request["body"])
    assert translated["id"] == str(event.id) and translated["type"] == "KeyRotation.NewKeyAvailable"
    assert translated["source"] == TOPIC_ID and translated["subject"] == "targets/app1"
    assert translated["specversion"] == "1.0" and translated["data"] == {"n": 1}

    refused = emulator.control("PUT", "eventgrid/topic", json={"inputSchema": "CloudEventSchemaV1_0"})
    assert refused.status_code == 400 and "eg-sub" in refused.json()["error"]["message"]


def test_pending_deliveries_resume_after_an_emulator_restart(tmp_path: Path, receiver: Receiver) -> None:
    hook = Hook(then=503)
    with running_emulator(tmp_path) as first:
        assert subscribe(first, "durable", receiver.endpoint("durable", hook), retrySchedule=[0.2]).status_code == 201
        event = key_event("targets/app1")
        publish(first, event)
        wait_until(lambda: [r for r in deliveries(first, "durable") if r["state"] == "retrying"])
    attempts_before = len(receiver.seen("durable"))
    with receiver.lock:
        hook.then = 200  # the subscriber recovers while the emulator is down
    with running_emulator(tmp_path) as second:
        (row,) = wait_until(lambda: settled(second, "durable", 1))
        # at least every failed attempt the subscriber saw before the restart, plus the successful one
        assert row["state"] == "delivered" and row["attempts"] >= attempts_before >= 1
        assert [e["id"] for e in second.control("GET", "eventgrid/events").json()["value"]] == [event.id]
    assert receiver.event_ids("durable") == {event.id}
    last = receiver.seen("durable")[-1]
    assert int(last["headers"]["aeg-delivery-count"]) >= 1  # the attempt count survived the restart
