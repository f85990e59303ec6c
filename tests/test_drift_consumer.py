"""The sample consumer on DriftDetected: a key the host regenerated is reloaded from the repaired Key Vault
version when the consumer holds the drifted one, never when it already holds a newer rotation's key, and
a missing key waits for the rotation's announcement. No acknowledgement: there is no overlap to end."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# The sample is its own app: import its package without leaving its folder on the path.
SAMPLE = str(Path(__file__).resolve().parents[1] / "samples" / "consumer")
sys.path.append(SAMPLE)

from keyconsumer.ack import AckResult  # noqa: E402
from keyconsumer.handler import Incoming, KeyConsumer  # noqa: E402
from keyconsumer.settings import load_settings  # noqa: E402
from keyconsumer.vault import SecretRef  # noqa: E402

sys.path.remove(SAMPLE)

VAULT = "https://127.0.0.1:8443"
SETTINGS = load_settings(
    {
        "CONSUMER_TARGET_ID": "orders-api",
        "CONSUMER_KEY_VAULT_URL": VAULT,
        "CONSUMER_SECRET_NAME": "orders-api-key",
        "CONSUMER_CREDENTIAL": "loopback-token",
        "CONSUMER_OBJECT_ID": "00000000-0000-0000-0000-00000000c0de",
        "KEYROTATION_API_URL": "http://127.0.0.1:7071",
        "KEYROTATION_API_TOKEN": "devhost-token",
    }
)
ROTATION = "orders-api-20260301t030000z-s"
A, B, D = "a" * 32, "b" * 32, "d" * 32


class FakeAck:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def ack(self, rotation_id: str) -> AckResult:
        self.calls.append(rotation_id)
        return AckResult(202, None)


def secret(version: str) -> str:
    return f"{VAULT}/secrets/orders-api-key/{version}"


def consumer() -> tuple[KeyConsumer, list[SecretRef], FakeAck]:
    reads: list[SecretRef] = []
    ack = FakeAck()

    def read(ref: SecretRef) -> str:
        reads.append(ref)
        return "v" * 40 + "AzFu" + ref.version[:10] + "=="

    return KeyConsumer(SETTINGS, read=read, acknowledger=ack), reads, ack  # type: ignore[arg-type]


def announcement(version: str, rotation: str = ROTATION, available_at: str = "2026-03-01T03:00:05.000Z") -> Incoming:
    data = {"rotationId": rotation, "targetId": "orders-api", "secretId": secret(version), "availableAt": available_at}
    return Incoming(f"new-{version}", "KeyRotation.NewKeyAvailable", "targets/orders-api", data)


def drift(repair: str = "restored", secret_id: str | None = secret(D), previous: str | None = secret(A)) -> Incoming:
    data: dict[str, Any] = {
        "targetId": "orders-api",
        "checkId": "drift-20260310t030000z",
        "drift": "value-mismatch" if repair == "restored" else "key-missing-on-target",
        "repair": repair,
        "keyName": "orders-client-20260301t030000z-s",
        "secretId": secret_id,
        "previousSecretId": previous,
        "rotationId": ROTATION,
        "detectedAt": "2026-03-10T03:00:00.000Z",
        "detail": "...",
    }
    return Incoming(f"drift-{repair}", "KeyRotation.DriftDetected", "targets/orders-api", data)


def test_consumer_reloads_the_restored_version_after_the_host_regenerated_its_key() -> None:
    app, reads, ack = consumer()
    assert app.handle(announcement(A)) == "switched"
    assert app.handle(drift()) == "reloaded"
    held = app.holder.current()
    assert held is not None and held.version == D and held.rotation_id == ROTATION
    assert [r.version for r in reads] == [A, D] and ack.calls == [ROTATION]  # the repair is not acknowledged
    assert app.handle(drift()) == "duplicate" and len(reads) == 2  # a redelivery reads nothing
    # Still the same generation: the next rotation's announcement switches as usual, an older one does not.
    assert app.handle(announcement(A, available_at="2026-02-01T03:00:05.000Z")) == "stale"
    assert app.handle(announcement(B, "orders-api-20260601t030000z-s", "2026-06-01T03:00:05.000Z")) == "switched"


def test_a_consumer_that_holds_nothing_yet_reads_the_repaired_version() -> None:
    app, reads, _ = consumer()
    assert app.handle(drift()) == "reloaded" and [r.version for r in reads] == [D]


def test_a_drift_repair_of_a_key_no_longer_held_never_switches_back() -> None:
    app, reads, _ = consumer()
    app.handle(announcement(B, "orders-api-20260601t030000z-s", "2026-06-01T03:00:05.000Z"))
    assert app.handle(drift()) == "stale"  # repaired version A's drift; we already moved on to B
    held = app.holder.current()
    assert held is not None and held.version == B and [r.version for r in reads] == [B]


def test_a_missing_key_waits_for_the_rotations_announcement() -> None:
    app, reads, _ = consumer()
    app.handle(announcement(A))
    assert app.handle(drift("rotation", secret(A), None)) == "ignored"
    held = app.holder.current()
    assert held is not None and held.version == A and len(reads) == 1


def test_a_drift_event_naming_another_secret_is_never_read() -> None:
    app, reads, _ = consumer()
    app.handle(announcement(A))
    other = f"{VAULT}/secrets/billing-api-key/{D}"
    assert app.handle(drift(secret_id=other)) == "invalid"
    assert app.handle(drift(previous=None)) == "invalid"
    assert len(reads) == 1
