"""The sample consumer (samples/consumer, a thin user of the kit) on its own devhost, fed by real Event
Grid emulator deliveries.

NewKeyAvailable events are built by rotation/events.py and published to the emulator's topic; the
emulator delivers them to the consumer's webhook (CloudEvents, exact-subject filter). The ack goes to
a stub of the rotation app's API (tests/consumer_stub_api.py). The Key Vault audit tells which reads
the consumer made: its own object id, not the rotation app's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from activities.clients import event_publisher, secret_client
from activities.events_publish import to_cloud_event
from emulators.core.store import fingerprint
from rotation import events
from rotation.identity import Actor
from tests.consumer_stub_api import StubApi, running_stub_api
from tests.emulator_process import Emulator
from tools.consumer_stack import ConsumerHost, ConsumerSpec, consumer_environment, subscribe

pytestmark = pytest.mark.slow

TARGET = "orders-api"
OTHER = "orders-api-admin"  # a prefix collision: a subjectBeginsWith-only filter would let it through
CONSUMER_OID = "00000000-0000-0000-0000-00000000c0de"
SECRET = "orders-api-client-key"
SUB, RG, SITE = "11111111-2222-3333-4444-555555555555", "rg-consumer", "orders-api"
API_TOKEN = "static-local-token-for-the-stub"  # a fake token for a stub server


@dataclass
class World:
    emulator: Emulator
    stub: StubApi
    consumer: ConsumerHost

    def publish(self, *built: dict[str, Any]) -> None:
        event_publisher(self.emulator.settings()).send([to_cloud_event(e) for e in built])

    def store(self, value: str, secret: str = SECRET) -> str:
        """A new Key Vault version, written by the rotation app's identity; returns its versioned id."""
        client = secret_client(self.emulator.url, self.emulator.settings())
        with client:
            return str(client.set_secret(secret, value).id)

    def reads_by_consumer(self, secret_id: str) -> list[dict[str, Any]]:
        audit = self.emulator.control("GET", "keyvault/audit").json()["value"]
        return [r for r in audit if r["caller_oid"] == CONSUMER_OID and r["secret_id"] == secret_id]

    def deliveries(self, event_id: str, subscription: str = f"consumer-{TARGET}") -> list[dict[str, Any]]:
        query = f"eventgrid/deliveries?subscription={subscription}&eventId={event_id}"
        return list(self.emulator.control("GET", query).json()["value"])

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError(f"{what} did not happen within {timeout}s; consumer log:\n{self.consumer.tail(30)}")

    def delivered(self, event_id: str, times: int = 1, subscription: str = f"consumer-{TARGET}") -> None:
        def done() -> bool:
            rows = self.deliveries(event_id, subscription)
            return len([r for r in rows if r["state"] == "delivered"]) >= times

        self.wait(f"delivery of {event_id} x{times}", done)


@pytest.fixture(scope="module")
def world(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    created = emulator.control("PUT", f"sites/{SUB}/{RG}/{SITE}", json={"functions": ["ping"]})
    assert created.status_code in (200, 201), created.text
    spec = ConsumerSpec(
        TARGET, CONSUMER_OID, "billing-worker", emulator.url, SECRET, f"{emulator.url}/_targets/{SITE}/api/ping"
    )
    with running_stub_api() as stub:
        env = consumer_environment({"emulator": emulator.endpoints, "host": stub.url}, spec, API_TOKEN)
        consumer = ConsumerHost(tmp_path_factory.mktemp("consumer"), env).start()
        try:
            endpoints = {"emulator": emulator.endpoints}
            subscribe(endpoints, consumer, TARGET)
            yield World(emulator, stub, consumer)
        finally:
            consumer.stop()


def announce(rotation_id: str, secret_id: str, available_at: datetime) -> dict[str, Any]:
    info = events.RotationInfo(rotation_id, TARGET, "scheduled", Actor("schedule", "timer"), available_at)
    return events.new_key_available(
        info,
        key_name=f"orders-client-{rotation_id[-17:-2]}",
        secret_id=secret_id,
        previous_key_name=None,
        previous_secret_id=None,
        available_at=available_at,
        overlap_ends_at=available_at + timedelta(days=2),
    )


def site_key(world: World, name: str = "default") -> str:
    """A key the target accepts, read from the emulator (test only: the control API returns values)."""
    site = world.emulator.control("GET", f"sites/{SUB}/{RG}/{SITE}").json()
    keys = next(i for i in site["instances"] if i["slot"] is None)["keys"]
    return next(k["value"] for k in keys if k["name"] == name and k["retired"] is None)


def test_consumer_switches_to_the_announced_version_and_acknowledges(world: World) -> None:
    value = site_key(world)
    secret_id = world.store(value)
    event = announce("orders-api-20260301t030000z-s", secret_id, datetime(2026, 3, 1, 3, 0, 5, tzinfo=UTC))
    world.publish(event)
    world.wait("the switch", lambda: world.consumer.state()["secretId"] == secret_id)

    state = world.consumer.state()
    assert state["fingerprint"] == fingerprint(value)
    assert state["rotationId"] == "orders-api-20260301t030000z-s"
    assert state["ack"] is None, "acknowledged before any call worked with the new key"
    # Read with its own identity, exactly the announced version, once.
    reads = world.reads_by_consumer(secret_id)
    assert [(r["operation"], r["status"], r["version"]) for r in reads] == [("SecretGet", 200, secret_id[-32:])]
    # It really works with the key: that first success acknowledges the rotation.
    called = world.consumer.call_target()
    assert called.status_code == 200 and called.json()["targetStatus"] == 200, called.text
    world.wait("the ack", lambda: (world.consumer.state()["ack"] or {}).get("status") == "acknowledged")
    state = world.consumer.state()
    assert state["ack"]["httpStatus"] == 202
    assert world.stub.acks_for("orders-api-20260301t030000z-s") == [f"Bearer {API_TOKEN}"]
    # Nothing it says or logs carries the value.
    assert value not in world.consumer.log_text() + world.consumer.tail(200) + str(state) + called.text


def test_events_of_other_targets_and_types_are_not_acted_on(world: World) -> None:
    before = world.consumer.state()
    # The exact-subject subscription keeps another target's events out even when its id shares our prefix.
    other_secret = world.store(site_key(world), secret="orders-api-admin-key")
    info = events.RotationInfo(
        "orders-api-admin-20260302t030000z-s",
        OTHER,
        "scheduled",
        Actor("schedule", "timer"),
        datetime(2026, 3, 2, 3, tzinfo=UTC),
    )
    other = events.new_key_available(
        info,
        key_name="admin-client",
        secret_id=other_secret,
        previous_key_name=None,
        previous_secret_id=None,
        available_at=info.started_at,
        overlap_ends_at=info.started_at + timedelta(days=1),
    )
    # A wider subscription to the same webhook: the consumer's own check must ignore what it is sent.
    subscribe({"emulator": world.emulator.endpoints}, world.consumer, TARGET, "consumer-wide", exact_subject=False)
    try:
        started = events.rotation_started(
            events.RotationInfo(
                "orders-api-20260303t030000z-o",
                TARGET,
                "on-demand",
                Actor("schedule", "timer"),
                datetime(2026, 3, 3, 3, tzinfo=UTC),
            ),
            key_name="orders-client-x",
            previous_key_name=None,
            overlap=timedelta(days=1),
        )
        world.publish(other, started)
        world.delivered(other["id"], subscription="consumer-wide")
        world.delivered(started["id"], subscription="consumer-wide")
        world.delivered(started["id"])
    finally:
        world.emulator.control("DELETE", "eventgrid/subscriptions/consumer-wide")
    assert world.deliveries(other["id"]) == [], "the exact-subject filter must keep orders-api-admin out"
    after = world.consumer.state()
    assert (after["secretId"], after["fingerprint"]) == (before["secretId"], before["fingerprint"])
    assert after["counters"]["ignored"] >= before["counters"]["ignored"] + 3
    assert world.reads_by_consumer(other_secret) == []
    assert world.stub.acks_for("orders-api-admin-20260302t030000z-s") == []
    assert f"target '{OTHER}' is not {TARGET}" in world.consumer.log_text()


def test_duplicate_deliveries_read_once_and_a_failed_ack_is_retried_once(world: World) -> None:
    value = site_key(world)
    secret_id = world.store(value)
    rotation_id = "orders-api-20260304t030000z-s"
    event = announce(rotation_id, secret_id, datetime(2026, 3, 4, 3, 0, 5, tzinfo=UTC))
    world.publish(event)
    world.delivered(event["id"])
    world.publish(event)  # the same event again (a re-published activity): same id
    world.delivered(event["id"], times=2)
    world.stub.statuses[:] = [503]  # the first ack fails: the kit retries it (1 s later), not the event
    for _ in range(3):
        assert world.consumer.call_target().json()["targetStatus"] == 200
    world.wait("the ack", lambda: (world.consumer.state()["ack"] or {}).get("status") == "acknowledged")

    state = world.consumer.state()
    assert state["secretId"] == secret_id and state["fingerprint"] == fingerprint(value)
    assert len(world.reads_by_consumer(secret_id)) == 1
    assert len(world.stub.acks_for(rotation_id)) == 2  # failed, then retried; not once per call
    assert state["ack"]["attempts"] == 2 and state["counters"]["duplicates"] >= 1


def test_a_late_announcement_of_an_older_rotation_never_switches_back(world: World) -> None:
    held = world.consumer.state()
    older = world.store(site_key(world))
    event = announce("orders-api-20260201t030000z-s", older, datetime(2026, 2, 1, 3, 0, 5, tzinfo=UTC))
    world.publish(event)
    world.delivered(event["id"])
    state = world.consumer.state()
    assert (state["secretId"], state["rotationId"]) == (held["secretId"], held["rotationId"])
    assert world.reads_by_consumer(older) == []
    assert world.stub.acks_for("orders-api-20260201t030000z-s") == []


def test_the_consumer_refuses_to_start_when_a_setting_would_leak_its_token(tmp_path: Path, world: World) -> None:
    env = {**world.consumer.settings, "CONSUMER_KEY_VAULT_URL": "https://contoso.vault.azure.net"}
    with pytest.raises(RuntimeError) as failed:
        ConsumerHost(tmp_path, env).start(timeout=30)
    assert "CONSUMER_KEY_VAULT_URL" in str(failed.value) and "loopback" in str(failed.value)
