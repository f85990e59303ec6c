"""Activity publish_events against the Event Grid topic emulator, through the app's client factory."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from activities import clients
from activities.events_publish import publish_events
from rotation import events
from rotation.events import EventDataError, RotationInfo
from rotation.identity import SCHEDULE_ACTOR
from rotation.naming import key_name, rotation_id
from rotation.redaction import SafeError, looks_secret
from tests.emulator_process import Emulator

STARTED = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
RID = rotation_id("orders-api", "scheduled", STARTED)
INFO = RotationInfo(RID, "orders-api", "scheduled", SCHEDULE_ACTOR, STARTED, "interval elapsed")
SECRET_ID = f"https://kv-demo.vault.azure.net/secrets/orders-key/{'3f' * 16}"
# What a Functions key looks like (56 URL-safe base64 characters): it must never be published.
KEY_SHAPED = "q3VbK9xY2mN8pL4tR7wZ1aB5cD6eF0gH3iJ9kAzFuM2nP8sT1uVw4A=="


def lifecycle_events() -> list[dict[str, Any]]:
    new_key = key_name("orders", RID)
    return [
        events.rotation_started(INFO, key_name=new_key, previous_key_name="orders", overlap=timedelta(days=2)),
        events.new_key_available(
            INFO,
            key_name=new_key,
            secret_id=SECRET_ID,
            previous_key_name="orders",
            previous_secret_id=None,
            available_at=STARTED + timedelta(minutes=2),
            overlap_ends_at=STARTED + timedelta(days=2, minutes=2),
        ),
    ]


@pytest.fixture
def app(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    emulator.clear_faults()
    for name, value in emulator.app_settings().items():
        monkeypatch.setenv(name, value)
    clients.settings.cache_clear()
    yield emulator
    emulator.clear_faults()
    clients.settings.cache_clear()


def last_seq(emulator: Emulator) -> int:
    stored = emulator.control("GET", "eventgrid/events").json()["value"]
    return stored[-1]["seq"] if stored else 0


def stored_since(emulator: Emulator, seq: int) -> list[dict[str, Any]]:
    return emulator.control("GET", f"eventgrid/events?since={seq}").json()["value"]


def test_events_are_stored_with_their_ids_and_nothing_else(app: Emulator) -> None:
    built = lifecycle_events()
    since = last_seq(app)
    result = publish_events({"events": built})
    assert result == {"published": [e["id"] for e in built]}
    stored = stored_since(app, since)
    assert [(s["id"], s["type"], s["subject"]) for s in stored] == [(e["id"], e["type"], e["subject"]) for e in built]
    assert len({s["requestSeq"] for s in stored}) == 1  # one batch, one request
    for sent, kept in zip(built, stored, strict=True):
        assert kept["event"]["data"] == sent["data"]  # the builder's data, exactly
        assert kept["event"]["source"] == sent["source"] and kept["event"]["specversion"] == "1.0"
        assert datetime.fromisoformat(kept["event"]["time"].replace("Z", "+00:00")) == datetime.fromisoformat(
            sent["time"].replace("Z", "+00:00")
        )  # the orchestrator's time, not the moment of sending
    assert not looks_secret(json.dumps([s["event"] for s in stored]))


def test_publishing_again_sends_the_same_ids(app: Emulator) -> None:
    """A retried or replayed activity: Event Grid stores both, subscribers dedupe by id."""
    built = lifecycle_events()
    since = last_seq(app)
    first = publish_events({"events": built})
    second = publish_events({"events": lifecycle_events()})
    assert first == second
    stored = [s["id"] for s in stored_since(app, since)]
    assert stored == first["published"] * 2


def test_a_repeated_event_in_one_batch_is_sent_once(app: Emulator) -> None:
    built = lifecycle_events()
    since = last_seq(app)
    assert publish_events({"events": [built[0], built[1], built[0]]}) == {"published": [built[0]["id"], built[1]["id"]]}
    assert len(stored_since(app, since)) == 2


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (lambda e: e["data"].update(value=KEY_SHAPED), r"events\[1\]\.data: looks like it holds a secret"),
        (lambda e: e["data"].update(note="extra field"), r"events\[1\]\.data.*NewKeyAvailable schema"),
        (lambda e: e.update(type="KeyRotation.Unknown"), r"events\[1\]\.type"),
        (lambda e: e.pop("id"), r"events\[1\].*schema"),
    ],
)
def test_a_bad_event_refuses_the_whole_batch(app: Emulator, tamper: Any, says: str) -> None:
    built = lifecycle_events()
    bad = copy.deepcopy(built[1])
    tamper(bad)
    since = last_seq(app)
    with pytest.raises(EventDataError, match=says) as caught:
        publish_events({"events": [built[0], bad]})
    assert KEY_SHAPED not in str(caught.value)
    assert stored_since(app, since) == []  # not even the good event went out


def test_nothing_to_publish_sends_nothing(app: Emulator) -> None:
    since = app.requests_log()[-1]["seq"]
    assert publish_events({"events": []}) == {"published": []}
    assert [r for r in app.requests_log(since) if r["operation"] == "eventgrid.publish"] == []


def test_a_topic_failing_after_the_sdk_retries_raises_without_the_body(app: Emulator) -> None:
    since = app.requests_log()[-1]["seq"]
    body = {"error": {"code": "ServiceUnavailable", "message": "try later", "details": [{"message": KEY_SHAPED}]}}
    app.fault(operation="eventgrid.publish", status=503, retry_after=0.05, times=None, body=body)
    with pytest.raises(SafeError) as caught:
        publish_events({"events": lifecycle_events()})
    assert caught.value.status_code == 503 and KEY_SHAPED not in str(caught.value)
    assert [r["status"] for r in app.requests_log(since) if r["operation"] == "eventgrid.publish"] == [503] * 4
    app.clear_faults()
    assert publish_events({"events": lifecycle_events()})["published"]  # the orchestrator's retry succeeds
