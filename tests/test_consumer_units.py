"""The sample consumer's own rules, in process with fakes for Key Vault and the ack route: settings that
would send a token where it must not go are refused, concurrent duplicates read once, a 409 right after
the announcement is retried, and nothing it reports carries the key."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest

# The sample is its own app: import its package without leaving its folder (and its function_app.py) on the path.
sys.path.append(str(Path(__file__).resolve().parents[1] / "samples" / "consumer"))

from keyconsumer import handler as handler_module
from keyconsumer.ack import AckResult
from keyconsumer.handler import AckFailed, Incoming, KeyConsumer
from keyconsumer.keyholder import HeldKey, KeyHolder, fingerprint
from keyconsumer.settings import ConsumerSettings, SettingsError, load_settings
from keyconsumer.vault import SecretRef

sys.path.remove(str(Path(__file__).resolve().parents[1] / "samples" / "consumer"))

VAULT = "https://127.0.0.1:8443"
LOCAL = {
    "CONSUMER_TARGET_ID": "orders-api",
    "CONSUMER_KEY_VAULT_URL": VAULT,
    "CONSUMER_SECRET_NAME": "orders-api-key",
    "CONSUMER_CREDENTIAL": "loopback-token",
    "CONSUMER_OBJECT_ID": "00000000-0000-0000-0000-00000000c0de",
    "KEYROTATION_API_URL": "http://127.0.0.1:7071",
    "KEYROTATION_API_TOKEN": "devhost-token",
}
AZURE = {
    "CONSUMER_TARGET_ID": "orders-api",
    "CONSUMER_KEY_VAULT_URL": "https://kv-orders.vault.azure.net",
    "CONSUMER_SECRET_NAME": "orders-api-key",
    "KEYROTATION_API_URL": "https://keyrotation.azurewebsites.net",
    "KEYROTATION_API_AUDIENCE": "api://keyrotation",
}
VALUE = "k" * 40 + "AzFu" + "q" * 10 + "=="


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"CONSUMER_KEY_VAULT_URL": "https://kv-orders.vault.azure.net"}, "CONSUMER_KEY_VAULT_URL"),
        ({"KEYROTATION_API_URL": "http://keyrotation.example.com"}, "KEYROTATION_API_URL"),
        ({"CONSUMER_TARGET_URL": "https://orders.azurewebsites.net/api/ping"}, "CONSUMER_TARGET_URL"),
        ({"KEYROTATION_API_TOKEN": ""}, "KEYROTATION_API_TOKEN"),
        ({"CONSUMER_OBJECT_ID": "billing-worker"}, "CONSUMER_OBJECT_ID"),
        ({"CONSUMER_TARGET_ID": "Orders API"}, "CONSUMER_TARGET_ID"),
    ],
)
def test_local_settings_that_would_leak_a_token_or_are_malformed_are_refused(
    overrides: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings({**LOCAL, **overrides})


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"KEYROTATION_API_TOKEN": "static"}, "KEYROTATION_API_TOKEN"),  # a static bearer token in app settings
        ({"CONSUMER_CA_BUNDLE": "/tmp/ca.pem"}, "CONSUMER_CA_BUNDLE"),
        ({"KEYROTATION_API_AUDIENCE": ""}, "KEYROTATION_API_AUDIENCE"),
        ({"KEYROTATION_API_URL": "http://127.0.0.1:7071"}, "KEYROTATION_API_URL"),
        ({"CONSUMER_CREDENTIAL": "client-secret"}, "CONSUMER_CREDENTIAL"),
    ],
)
def test_azure_settings_use_the_managed_identity_only(overrides: dict[str, str], named: str) -> None:
    assert load_settings(AZURE).credential_kind == "managed-identity"
    with pytest.raises(SettingsError, match=named):
        load_settings({**AZURE, **overrides})


def test_settings_never_print_the_local_api_token() -> None:
    assert "devhost-token" not in repr(load_settings(LOCAL))


class FakeAck:
    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.calls: list[str] = []

    def ack(self, rotation_id: str) -> AckResult:
        self.calls.append(rotation_id)
        status = self.statuses.pop(0) if self.statuses else 202
        return AckResult(status, None if status < 300 else f"HTTP {status}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings() -> ConsumerSettings:
    return load_settings(LOCAL)


def consumer_with(
    settings: ConsumerSettings, ack: FakeAck, reads: list[SecretRef], clock: Clock | None = None, delay: float = 0
) -> KeyConsumer:
    def read(ref: SecretRef) -> str:
        time.sleep(delay)
        reads.append(ref)
        return VALUE + ref.version[:2]

    return KeyConsumer(settings, read=read, acknowledger=ack, clock=clock or Clock())  # type: ignore[arg-type]


def announcement(version: str = "a" * 32, rotation: str = "orders-api-20260301t030000z-s", **data: str) -> Incoming:
    body = {
        "rotationId": rotation,
        "targetId": "orders-api",
        "secretId": f"{VAULT}/secrets/orders-api-key/{version}",
        "availableAt": "2026-03-01T03:00:05.000Z",
        **data,
    }
    return Incoming(f"id-{rotation}", "KeyRotation.NewKeyAvailable", "targets/orders-api", body)


def test_concurrent_deliveries_of_one_announcement_read_key_vault_once(settings: ConsumerSettings) -> None:
    reads: list[SecretRef] = []
    ack = FakeAck()
    consumer = consumer_with(settings, ack, reads, delay=0.05)
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda: outcomes.append(consumer.handle(announcement()))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["duplicate"] * 7 + ["switched"]
    assert len(reads) == 1 and ack.calls == ["orders-api-20260301t030000z-s"]


def test_an_announcement_naming_another_vault_or_secret_is_never_read(settings: ConsumerSettings) -> None:
    reads: list[SecretRef] = []
    consumer = consumer_with(settings, FakeAck(), reads)
    other_vault = announcement(secretId=f"https://evil.example.com/secrets/orders-api-key/{'b' * 32}")
    other_secret = announcement(secretId=f"{VAULT}/secrets/billing-api-key/{'b' * 32}")
    latest = announcement(secretId=f"{VAULT}/secrets/orders-api-key")
    assert [consumer.handle(e) for e in (other_vault, other_secret, latest)] == ["invalid"] * 3
    assert reads == [] and consumer.holder.current() is None


def test_a_409_right_after_the_announcement_is_retried_later_ones_are_final(settings: ConsumerSettings) -> None:
    clock = Clock()
    ack = FakeAck(409, 409, 409)
    consumer = consumer_with(settings, ack, [], clock)
    with pytest.raises(AckFailed):  # maybe the rotation has not recorded its overlap yet
        consumer.handle(announcement())
    clock.now += 30
    with pytest.raises(AckFailed):
        consumer.handle(announcement())
    clock.now += handler_module.NOT_YET_IN_OVERLAP_GRACE
    assert consumer.handle(announcement()) == "duplicate"  # final now: no exception, no more attempts
    assert consumer.handle(announcement()) == "duplicate"
    assert len(ack.calls) == 3
    assert consumer.holder.snapshot()["ack"]["status"] == "refused"


def test_a_403_is_final_at_once_and_a_503_is_retried(settings: ConsumerSettings) -> None:
    consumer = consumer_with(settings, FakeAck(403), [])
    assert consumer.handle(announcement()) == "switched"
    assert consumer.handle(announcement()) == "duplicate"
    assert consumer.holder.snapshot()["ack"]["attempts"] == 1
    retrying = consumer_with(settings, FakeAck(503), [])
    with pytest.raises(AckFailed):
        retrying.handle(announcement())
    assert retrying.handle(announcement()) == "duplicate"
    assert retrying.holder.snapshot()["ack"] | {"at": None} == {
        "rotationId": "orders-api-20260301t030000z-s", "status": "acknowledged", "attempts": 2,
        "httpStatus": 202, "at": None, "error": None,
    }  # fmt: skip


def test_a_swap_leaves_in_flight_callers_their_key_and_reports_no_value() -> None:
    holder = KeyHolder()
    old = HeldKey(VALUE + "01", "s/1", "1" * 32, "r1", "2026-03-01T00:00:00Z", "t1")
    holder.swap(old)
    in_flight = holder.current()
    new = HeldKey(VALUE + "02", "s/2", "2" * 32, "r2", "2026-03-02T00:00:00Z", "t2")
    assert holder.swap(new) is old
    assert in_flight is old and in_flight.value == VALUE + "01"  # the caller's key did not change under it
    assert holder.current() is new
    snapshot = holder.snapshot()
    assert snapshot["fingerprint"] == fingerprint(VALUE + "02") and snapshot["previousVersion"] == "1" * 32
    assert VALUE not in str(snapshot) and VALUE not in repr(new)


@pytest.fixture
def trigger_events() -> Iterator[list[object]]:
    data = {"rotationId": "r", "targetId": "orders-api"}
    yield [
        func.CloudEvent(id="e1", source="/keyrotation", specversion="1.0", type="KeyRotation.NewKeyAvailable",
                        subject="targets/orders-api", time=None, datacontenttype="application/json", dataschema=None,
                        data=data),
        func.EventGridEvent(id="e1", data=data, topic="t", subject="targets/orders-api",
                            event_type="KeyRotation.NewKeyAvailable", event_time=None, data_version="1"),
    ]  # fmt: skip


def test_both_delivery_schemas_are_understood(trigger_events: list[object]) -> None:
    for event in trigger_events:
        incoming = Incoming.from_trigger(event)
        assert (incoming.id, incoming.type, incoming.subject) == (
            "e1",
            "KeyRotation.NewKeyAvailable",
            "targets/orders-api",
        )
        assert incoming.data["targetId"] == "orders-api"
