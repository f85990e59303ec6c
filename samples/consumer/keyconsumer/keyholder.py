"""The key the consumer calls its target with, swapped atomically when a new version arrives.

Callers take a snapshot (`current()`) and use it for the whole call, so a swap never pulls a key out
from under an in-flight request: the previous key stays in their hands (and valid on the target until
the overlap ends) while new calls get the new one. Only fingerprints leave this module.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

AckStatus = Literal["pending", "acknowledged", "refused", "failed"]
FINGERPRINT_CHARS = 16  # the same sha256 prefix the local emulators journal


def fingerprint(value: str) -> str:
    """A sha256 prefix: enough to tell keys apart in a test, useless for calling the target."""
    return hashlib.sha256(value.encode()).hexdigest()[:FINGERPRINT_CHARS]


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class HeldKey:
    value: str = field(repr=False)
    secret_id: str
    version: str
    rotation_id: str | None
    available_at: str | None
    switched_at: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.value)


@dataclass(frozen=True)
class AckRecord:
    rotation_id: str
    status: AckStatus
    attempts: int = 0
    http_status: int | None = None
    at: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rotationId": self.rotation_id,
            "status": self.status,
            "attempts": self.attempts,
            "httpStatus": self.http_status,
            "at": self.at,
            "error": self.error,
        }


class KeyHolder:
    """Thread-safe: the worker runs invocations on a thread pool and Event Grid delivers concurrently."""

    def __init__(self, remembered_ids: int = 1024) -> None:
        self._lock = threading.Lock()
        # Serializes event handling (read, swap, ack) without blocking readers of `current()`.
        self.handling = threading.Lock()
        self._key: HeldKey | None = None
        self._previous_version: str | None = None
        self._acks: dict[str, AckRecord] = {}
        self._seen: deque[str] = deque(maxlen=remembered_ids)
        self.counters = {"events": 0, "duplicates": 0, "ignored": 0, "keyVaultReads": 0, "switches": 0}

    def current(self) -> HeldKey | None:
        with self._lock:
            return self._key

    def swap(self, key: HeldKey) -> HeldKey | None:
        """Make `key` the one new calls use; returns the previous one (callers holding it keep it)."""
        with self._lock:
            previous, self._key = self._key, key
            self._previous_version = previous.version if previous else None
            self.counters["switches"] += 1
            return previous

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def seen(self, event_id: str) -> bool:
        """Records the id; True when it was already recorded (a duplicate delivery)."""
        with self._lock:
            if event_id in self._seen:
                return True
            self._seen.append(event_id)
            return False

    def ack(self, rotation_id: str) -> AckRecord | None:
        with self._lock:
            return self._acks.get(rotation_id)

    def record_ack(self, rotation_id: str, status: AckStatus, http_status: int | None, error: str | None) -> AckRecord:
        with self._lock:
            before = self._acks.get(rotation_id)
            attempts = (before.attempts if before else 0) + 1
            record = AckRecord(rotation_id, status, attempts, http_status, utc_now(), error)
            self._acks[rotation_id] = record
            return record

    def snapshot(self) -> dict[str, Any]:
        """What `GET /api/consumer/state` answers: versions and fingerprints, never a value."""
        with self._lock:
            key, previous, counters = self._key, self._previous_version, dict(self.counters)
            ack = self._acks.get(key.rotation_id) if key and key.rotation_id else None
        held = (
            {
                "version": key.version,
                "secretId": key.secret_id,
                "rotationId": key.rotation_id,
                "availableAt": key.available_at,
                "fingerprint": key.fingerprint,
                "switchedAt": key.switched_at,
            }
            if key
            else {"version": None, "secretId": None, "rotationId": None, "fingerprint": None, "switchedAt": None}
        )
        return {**held, "previousVersion": previous, "ack": ack.to_json() if ack else None, "counters": counters}
