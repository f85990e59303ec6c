"""Event Grid topic conformance: the unmodified EventGridPublisherClient against the emulated topic.

Each credential kind the SDK supports (bearer through the app's own client factory, access key,
SAS token), the topic's refusals (401, 400 for the other schema or a malformed batch, 413 over 1 MB)
and the SDK's own retry of a throttled publish.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.core.credentials import AzureKeyCredential, AzureSasCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient, generate_sas

from activities.clients import event_publisher
from emulators.core.local_identity import LocalTokenCredential
from tests.emulator_process import Emulator

MB = 1_048_576


def topic(emulator: Emulator) -> str:
    return emulator.endpoints["eventGridTopic"]


def key_client(emulator: Emulator, key: str | None = None) -> EventGridPublisherClient:
    return EventGridPublisherClient(topic(emulator), AzureKeyCredential(key or emulator.endpoints["eventGridTopicKey"]))


def sas_client(emulator: Emulator, expires: datetime, key: str | None = None) -> EventGridPublisherClient:
    signature = generate_sas(topic(emulator), key or emulator.endpoints["eventGridTopicKey"], expires)
    return EventGridPublisherClient(topic(emulator), AzureSasCredential(signature))


def last_event_seq(emulator: Emulator) -> int:
    events = emulator.control("GET", "eventgrid/events").json()["value"]
    return events[-1]["seq"] if events else 0


def events_since(emulator: Emulator, seq: int) -> list[dict[str, Any]]:
    response = emulator.control("GET", f"eventgrid/events?since={seq}")
    response.raise_for_status()
    return response.json()["value"]


def raw_publish(emulator: Emulator, body: bytes | str, content_type: str, **headers: str) -> requests.Response:
    """POST exactly these bytes with the topic key, for shapes the SDK would never send."""
    return requests.post(
        f"{topic(emulator)}?api-version=2018-01-01",
        data=body,
        headers={"Content-Type": content_type, "aeg-sas-key": emulator.endpoints["eventGridTopicKey"], **headers},
        verify=emulator.ca,
        timeout=10,
    )


def test_app_factory_publishes_cloud_events_stored_exactly_as_sent(emulator: Emulator) -> None:
    before = last_event_seq(emulator)
    changes_before = emulator.control("GET", "changes").json()["value"]
    cfg = emulator.settings()
    typed = CloudEvent(
        source="/keyrotation/app",
        type="KeyRotation.NewKeyAvailable",
        subject="targets/app1",
        data={"rotationId": "rot-1", "secretId": "https://vault/secrets/app1/abc"},
        extensions={"rotationid": "rot-1"},
    )
    as_dict = {
        "id": "evt-dict-1",
        "source": "/keyrotation/app",
        "type": "KeyRotation.RotationStarted",
        "specversion": "1.0",
        "time": "2026-01-01T00:00:00.123456Z",  # the SDK round-trips a mapping through CloudEvent (µs)
        "subject": "targets/app1",
        "datacontenttype": "application/json",
        "data": {"rotationId": "rot-1", "nested": [1, 2.5, None, True]},
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    binary = CloudEvent(source="/keyrotation/app", type="KeyRotation.RotationHeld", data=b"\x00\x01binary")

    publisher = event_publisher(cfg)
    try:
        publisher.send([typed, binary])
        publisher.send([as_dict])  # the SDK cannot mix typed events and mappings in one batch
    finally:
        publisher.close()

    stored = events_since(emulator, before)
    assert [e["id"] for e in stored] == [typed.id, binary.id, "evt-dict-1"]
    assert all(e["schema"] == "CloudEventSchemaV1_0" for e in stored)
    first, third, second = (e["event"] for e in stored)
    assert second == as_dict
    assert first["rotationid"] == "rot-1" and "extensions" not in first  # extensions at top level
    assert first["data"] == typed.data and first["subject"] == "targets/app1" and first["specversion"] == "1.0"
    assert third["data_base64"] == "AAFiaW5hcnk=" and "data" not in third

    (entry,) = [r for r in emulator.requests_log() if r["seq"] == stored[0]["requestSeq"]]
    assert entry["operation"] == "eventgrid.publish" and entry["status"] == 200
    assert entry["caller"] == emulator.app_object_id  # bearer token's oid: the app's managed identity

    new_changes = emulator.control("GET", "changes").json()["value"][len(changes_before) :]
    journal, _ = [c for c in new_changes if c["kind"] == "eventgrid.published"]
    assert journal["request_seq"] == stored[0]["requestSeq"]
    assert journal["detail"]["ids"] == [typed.id, binary.id]
    assert journal["detail"]["types"] == ["KeyRotation.NewKeyAvailable", "KeyRotation.RotationHeld"]
    assert journal["detail"]["subjects"] == ["targets/app1", ""]
    assert "https://vault/secrets/app1/abc" not in json.dumps(journal)  # never event data


def test_success_is_exactly_200_with_an_empty_body(emulator: Emulator) -> None:
    before = last_event_seq(emulator)
    event = {
        "id": "evt-raw-1",
        "source": "/s",
        "type": "T",
        "specversion": "1.0",
        "time": "2026-01-01T00:00:00.1234567Z",
    }
    response = raw_publish(emulator, json.dumps([event]), "application/cloudevents-batch+json; charset=utf-8")
    assert response.status_code == 200 and response.content == b""
    single = raw_publish(emulator, json.dumps({**event, "id": "evt-raw-2"}), "application/cloudevents+json")
    assert single.status_code == 200
    stored = [e["event"] for e in events_since(emulator, before)]
    assert stored == [event, {**event, "id": "evt-raw-2"}]  # kept as sent, 100 ns precision included


def test_access_key_and_sas_token_are_accepted(emulator: Emulator) -> None:
    before = last_event_seq(emulator)
    event = CloudEvent(source="/s", type="KeyRotation.RotationStarted", data={"n": 1})
    key_client(emulator).send(event, connection_verify=emulator.ca)
    later = datetime.now(UTC) + timedelta(hours=1)
    sas_client(emulator, later).send(event, connection_verify=emulator.ca)
    stored = events_since(emulator, before)
    assert [e["id"] for e in stored] == [event.id, event.id]  # at-least-once publishing: duplicates are kept
    callers = {r["caller"] for r in emulator.requests_log() if r["seq"] >= stored[0]["requestSeq"]}
    assert {"aeg-sas-key", "aeg-sas-token"} <= callers


@pytest.mark.parametrize(
    "make_client",
    [
        pytest.param(lambda emu: key_client(emu, "d3Jvbmcga2V5IGZvciB0aGUgdG9waWMgaW4gYmFzZTY0IQ=="), id="wrong-key"),
        pytest.param(lambda emu: sas_client(emu, datetime.now(UTC) - timedelta(seconds=5)), id="expired-sas"),
        pytest.param(
            lambda emu: sas_client(emu, datetime.now(UTC) + timedelta(hours=1), "c2lnbmVkIHdpdGggYW5vdGhlciBrZXk="),
            id="sas-signed-with-another-key",
        ),
    ],
)
def test_bad_credentials_are_refused_with_401(emulator: Emulator, make_client: Any) -> None:
    before = last_event_seq(emulator)
    with pytest.raises(ClientAuthenticationError) as caught:
        make_client(emulator).send(CloudEvent(source="/s", type="T"), connection_verify=emulator.ca)
    assert caught.value.status_code == 401
    assert events_since(emulator, before) == []


def test_sas_for_another_resource_and_tokens_for_another_service_are_refused(emulator: Emulator) -> None:
    key = emulator.endpoints["eventGridTopicKey"]
    other = generate_sas(
        "https://other.westeurope-1.eventgrid.azure.net/api/events", key, datetime.now(UTC) + timedelta(hours=1)
    )
    event = json.dumps([{"id": "x", "source": "/s", "type": "T", "specversion": "1.0"}])
    url = f"{topic(emulator)}?api-version=2018-01-01"
    content = {"Content-Type": "application/cloudevents-batch+json"}
    refused = requests.post(
        url, data=event, headers={**content, "aeg-sas-token": other}, verify=emulator.ca, timeout=10
    )
    assert refused.status_code == 401 and "resource" in refused.json()["error"]["message"]
    vault_token = (
        LocalTokenCredential("oid-1", "someone", endpoint=emulator.url)
        .get_token("https://vault.azure.net/.default")
        .token
    )
    wrong_audience = requests.post(
        url, data=event, headers={**content, "Authorization": f"Bearer {vault_token}"}, verify=emulator.ca, timeout=10
    )
    assert wrong_audience.status_code == 401 and "audience" in wrong_audience.json()["error"]["message"]
    anonymous = requests.post(url, data=event, headers=content, verify=emulator.ca, timeout=10)
    assert anonymous.status_code == 401
    assert set(anonymous.json()["error"]) == {"code", "message", "details"}


def test_event_grid_schema_events_are_refused_by_a_cloud_events_topic(emulator: Emulator) -> None:
    before = last_event_seq(emulator)
    event = EventGridEvent(subject="targets/app1", event_type="KeyRotation.RotationStarted", data={}, data_version="1")
    with pytest.raises(HttpResponseError) as caught:
        key_client(emulator).send(event, connection_verify=emulator.ca)
    assert caught.value.status_code == 400
    assert "CloudEventV10" in json.loads(caught.value.response.text())["error"]["message"]
    assert events_since(emulator, before) == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('[{"id": "1", "source": "/s", "type": "T", "specversion": "1.0"', "not valid JSON"),
        ('[{"id": "1", "type": "T", "specversion": "1.0"}]', "'source'"),
        ('[{"id": "1", "source": "/s", "type": "T", "specversion": "0.3"}]', "specversion"),
        ('[{"id": "1", "source": "/s", "type": "T", "specversion": "1.0", "data": 1, "data_base64": "AA=="}]', "data"),
        ('[{"id": "1", "source": "/s", "type": "T", "specversion": "1.0", "rotationId": "r"}]', "rotationId"),
        ('[{"id": "1", "source": "/s", "type": "T", "specversion": "1.0", "time": "yesterday"}]', "'time'"),
        ("[]", "no events"),
    ],
)
def test_malformed_cloud_event_batches_get_400_naming_the_problem(emulator: Emulator, body: str, named: str) -> None:
    before = last_event_seq(emulator)
    response = raw_publish(emulator, body, "application/cloudevents-batch+json; charset=utf-8")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest" and named in error["message"]
    assert events_since(emulator, before) == []


def test_missing_api_version_is_400(emulator: Emulator) -> None:
    response = requests.post(
        topic(emulator),
        data="[]",
        headers={"aeg-sas-key": emulator.endpoints["eventGridTopicKey"]},
        verify=emulator.ca,
        timeout=10,
    )
    assert response.status_code == 400 and "api-version" in response.json()["error"]["message"]


def test_a_batch_over_1_mb_is_413_and_exactly_1_mb_is_accepted(emulator: Emulator) -> None:
    before = last_event_seq(emulator)
    too_big = CloudEvent(source="/s", type="T", data="x" * MB)
    with pytest.raises(HttpResponseError) as caught:
        key_client(emulator).send(too_big, connection_verify=emulator.ca)
    assert caught.value.status_code == 413
    assert events_since(emulator, before) == []

    template = '[{"id": "limit", "source": "/s", "type": "T", "specversion": "1.0", "data": "%s"}]'
    exactly = (template % ("y" * (MB - len(template) + 2))).encode()
    assert len(exactly) == MB
    content_type = "application/cloudevents-batch+json"
    assert raw_publish(emulator, exactly, content_type).status_code == 200
    one_over = (template % ("y" * (MB - len(template) + 3))).encode()
    assert raw_publish(emulator, one_over, content_type).status_code == 413


def test_a_throttled_publish_is_retried_by_the_sdk_after_retry_after(clean_faults: Emulator) -> None:
    emulator = clean_faults
    before = last_event_seq(emulator)
    emulator.fault(operation="eventgrid.publish", status=429, retry_after=1, times=1)
    event = CloudEvent(source="/s", type="KeyRotation.OldKeyRevoked")
    key_client(emulator).send(event, connection_verify=emulator.ca)  # POST is retried only because of Retry-After
    stored = events_since(emulator, before)
    assert [e["id"] for e in stored] == [event.id]
    publishes = [r for r in emulator.requests_log() if r["operation"] == "eventgrid.publish"][-2:]
    assert [(r["status"], r["fault"]) for r in publishes] == [(429, "status:429"), (200, None)]
