"""Fakes for the kit's unit tests: a Key Vault that can fail, a target that accepts a set of keys, an ack
route that answers from a queue, and a clock that moves only when a test moves it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from keyrotation_kit import ConsumerKit, load_settings
from keyrotation_kit.ack import AckResult
from keyrotation_kit.vault import KeyVaultError, SecretVersion

VAULT = "https://127.0.0.1:8443"
SECRET = "orders-api-key"
TARGET = "orders-api"
LOCAL = {
    "CONSUMER_TARGET_ID": TARGET,
    "CONSUMER_KEY_VAULT_URL": VAULT,
    "CONSUMER_SECRET_NAME": SECRET,
    "CONSUMER_CREDENTIAL": "loopback-token",
    "CONSUMER_OBJECT_ID": "00000000-0000-0000-0000-00000000c0de",
    "KEYROTATION_API_URL": "http://127.0.0.1:7071",
    "KEYROTATION_API_TOKEN": "devhost-token",
}
AZURE_FREE = {
    "CONSUMER_TARGET_ID": TARGET,
    "CONSUMER_KEY_VAULT_URL": "https://kv-orders.vault.azure.net",
    "CONSUMER_SECRET_NAME": SECRET,
    "KEYROTATION_API_URL": "https://keyrotation.azurewebsites.net",
    "KEYROTATION_API_AUDIENCE": "api://keyrotation",
}
A, B, C, D = "a" * 32, "b" * 32, "c" * 32, "d" * 32
R1, R2, R3 = "orders-api-20260301t030000z-s", "orders-api-20260401t030000z-s", "orders-api-20260402t030000z-e"


def value_of(version: str) -> str:
    """Key-shaped values, distinct per version (so a leak check can look for them)."""
    return "k" * 30 + "AzFu" + version[:16] + "=="


def secret_id(version: str, secret: str = SECRET, vault: str = VAULT) -> str:
    return f"{vault}/secrets/{secret}/{version}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeVault:
    versions: dict[str, str | None] = field(default_factory=dict)  # version -> rotation id, in write order
    down: bool = False
    delay: float = 0.0
    reads: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, version: str, rotation_id: str | None = None) -> None:
        self.versions[version] = rotation_id

    def read(self, version: str | None) -> SecretVersion:
        with self.lock:
            self.reads.append(version)
        time.sleep(self.delay)
        if self.down:
            raise KeyVaultError(f"Key Vault read of {SECRET}/{version or 'latest'} failed: HTTP 503", 503)
        wanted = version or list(self.versions)[-1]
        return SecretVersion(secret_id(wanted), wanted, value_of(wanted), self.versions[wanted])


class FakeAck:
    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.calls: list[str] = []

    def ack(self, rotation_id: str) -> AckResult:
        self.calls.append(rotation_id)
        status = self.statuses.pop(0) if self.statuses else 202
        return AckResult(status, None if status < 300 else f"HTTP {status}")


@dataclass
class FakeTarget:
    """Accepts the values of `live` versions; records which version each request carried."""

    live: set[str] = field(default_factory=set)
    seen: list[str] = field(default_factory=list)

    def send(self, value: str) -> int:
        version = next((v for v in (A, B, C, D) if value_of(v) == value), "?")
        self.seen.append(version)
        return 200 if version in self.live else 401


def make_kit(vault: FakeVault, ack: FakeAck | None = None, clock: Clock | None = None, **options: Any) -> ConsumerKit:
    settings = load_settings({**LOCAL, "CONSUMER_REFRESH_SECONDS": str(options.pop("refresh", 300))})
    return ConsumerKit(
        settings,
        source=vault,
        acknowledger=ack or FakeAck(),  # type: ignore[arg-type]
        clock=clock or Clock(),
        rng=lambda: 0.5,
        ack_delays=options.pop("ack_delays", (0.0, 0.0, 0.0)),
        **options,
    )


def announcement(version: str, rotation: str = R1, available_at: str = "2026-03-01T03:00:05.000Z", **data: Any):
    body = {
        "rotationId": rotation,
        "targetId": TARGET,
        "secretId": secret_id(version),
        "availableAt": available_at,
        **data,
    }
    return {"id": f"new-{version}-{rotation}", "type": "KeyRotation.NewKeyAvailable", "subject": f"targets/{TARGET}",
            "data": body}  # fmt: skip


def revoked(*versions: str, rotation: str = R2) -> dict[str, Any]:
    data = {"rotationId": rotation, "targetId": TARGET, "revokedSecretIds": [secret_id(v) for v in versions]}
    return {"id": f"revoked-{rotation}", "type": "KeyRotation.OldKeyRevoked", "subject": f"targets/{TARGET}",
            "data": data}  # fmt: skip
