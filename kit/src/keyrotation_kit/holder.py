"""The keys a consumer calls its target with: the current one, the previous one, and a cache by version.

Callers take a snapshot (`current()`) and use it for the whole call, so a swap never pulls a key out
from under an in-flight request. The previous key is kept as a fallback while it may still be valid (an
overlap), and dropped once it was revoked or refused. A version's value never changes, so a version
read once is never read again. Only fingerprints leave this module.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

AckStatus = Literal["pending", "acknowledged", "refused", "failed"]
FINGERPRINT_CHARS = 16  # the same sha256 prefix the rotation app and the local emulators journal
CACHED_VERSIONS = 8
COUNTERS = (
    "events",
    "duplicates",
    "ignored",
    "keyVaultReads",
    "keyVaultFailures",
    "switches",
    "calls",
    "rejections",
    "retries",
    "refreshes",
)


def fingerprint(value: str) -> str:
    """A sha256 prefix: enough to tell keys apart in a log, useless for calling the target."""
    return hashlib.sha256(value.encode()).hexdigest()[:FINGERPRINT_CHARS]


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class HeldKey:
    """One version of the key. `value` is left out of the repr; log `fingerprint` instead."""

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
    """Thread-safe: calls, events and the periodic refresh all run on their own threads."""

    def __init__(self, remembered_ids: int = 1024) -> None:
        self._lock = threading.Lock()
        # Serializes changes (event handling, refreshes) without blocking readers of `current()`.
        self.handling = threading.RLock()
        self._key: HeldKey | None = None
        self._previous: HeldKey | None = None
        self._cache: OrderedDict[str, HeldKey] = OrderedDict()
        self._dead: set[str] = set()  # versions revoked or refused: never a fallback again
        self._acks: dict[str, AckRecord] = {}
        self._seen: deque[str] = deque(maxlen=remembered_ids)
        self.counters = dict.fromkeys(COUNTERS, 0)

    def current(self) -> HeldKey | None:
        with self._lock:
            return self._key

    def previous(self) -> HeldKey | None:
        """The key before the current one while it may still open the target (an overlap)."""
        with self._lock:
            prev = self._previous
            return prev if prev and prev.version not in self._dead else None

    def cached(self, version: str) -> HeldKey | None:
        with self._lock:
            return self._cache.get(version)

    def swap(self, key: HeldKey) -> HeldKey | None:
        """Make `key` the one new calls use; returns the previous one (callers holding it keep it)."""
        with self._lock:
            previous = self._key
            if previous and previous.version == key.version:
                return previous
            self._key = key
            self._previous = previous
            self._dead.discard(key.version)
            self._cache[key.version] = key
            self._cache.move_to_end(key.version)
            while len(self._cache) > CACHED_VERSIONS:
                self._cache.popitem(last=False)
            self.counters["switches"] += 1
            return previous

    def mark_dead(self, version: str) -> None:
        """A version the target refused or the rotation revoked: not a fallback any more."""
        with self._lock:
            self._dead.add(version)

    def is_dead(self, version: str) -> bool:
        with self._lock:
            return version in self._dead

    def count(self, name: str, by: int = 1) -> None:
        with self._lock:
            self.counters[name] += by

    def seen(self, event_id: str) -> bool:
        """True when an event with this id was handled already (a duplicate delivery)."""
        with self._lock:
            return event_id in self._seen

    def remember(self, event_id: str) -> None:
        """Called once an event was handled: one that failed (a Key Vault outage) must be tried again."""
        with self._lock:
            if event_id not in self._seen:
                self._seen.append(event_id)

    def ack(self, rotation_id: str) -> AckRecord | None:
        with self._lock:
            return self._acks.get(rotation_id)

    def record_ack(self, rotation_id: str, status: AckStatus, http_status: int | None, error: str | None) -> AckRecord:
        with self._lock:
            before = self._acks.get(rotation_id)
            attempts = (before.attempts if before else 0) + (0 if status == "pending" else 1)
            record = AckRecord(rotation_id, status, attempts, http_status, utc_now(), error)
            self._acks[rotation_id] = record
            return record

    def claim_ack(self, rotation_id: str) -> bool:
        """True for the one caller that gets to acknowledge this rotation (first success with its key)."""
        with self._lock:
            if rotation_id in self._acks:
                return False
            self._acks[rotation_id] = AckRecord(rotation_id, "pending")
            return True

    def snapshot(self) -> dict[str, Any]:
        """The consumer's state for a status route or a log: versions and fingerprints, never a value."""
        with self._lock:
            key, prev, counters = self._key, self._previous, dict(self.counters)
            ack = self._acks.get(key.rotation_id) if key and key.rotation_id else None
            usable_prev = prev.version if prev and prev.version not in self._dead else None
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
        return {
            **held,
            "previousVersion": prev.version if prev else None,
            "fallbackVersion": usable_prev,
            "ack": ack.to_json() if ack else None,
            "counters": counters,
        }
