"""The rotation app's CloudEvents, as the kit reads them. Event Grid delivers at least once and in any
order, so every event is checked (type, exact subject, `data.targetId`) and deduped on its id before it
is acted on; what it names is compared with what is held, never trusted for its arrival order."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NEW_KEY_AVAILABLE = "KeyRotation.NewKeyAvailable"
DRIFT_DETECTED = "KeyRotation.DriftDetected"
OLD_KEY_REVOKED = "KeyRotation.OldKeyRevoked"
ACTED_ON = (NEW_KEY_AVAILABLE, DRIFT_DETECTED, OLD_KEY_REVOKED)
_ROTATION_STAMP = re.compile(r"-(\d{8}t\d{6}z)-[soe]$")


@dataclass(frozen=True)
class Incoming:
    """The parts of a delivered event (CloudEvent or Event Grid schema) the kit looks at."""

    id: str
    type: str
    subject: str
    data: Mapping[str, Any]

    @staticmethod
    def from_json(event: Mapping[str, Any]) -> Incoming:
        """A CloudEvent in structured JSON (`type`) or an Event Grid event (`eventType`)."""
        kind = event.get("type") or event.get("eventType") or ""
        data = event.get("data")
        return Incoming(
            str(event.get("id", "")),
            str(kind),
            str(event.get("subject") or ""),
            data if isinstance(data, Mapping) else {},
        )

    @staticmethod
    def from_trigger(event: Any) -> Incoming:
        """An Azure Functions trigger argument: `func.CloudEvent` has `.type`, `func.EventGridEvent`
        `.event_type` (duck-typed: the kit does not depend on azure-functions)."""
        kind = getattr(event, "type", None) or getattr(event, "event_type", "")
        data = event.get_json()
        return Incoming(str(event.id), str(kind), str(event.subject or ""), data if isinstance(data, Mapping) else {})


def rotation_stamp(rotation_id: str | None) -> str | None:
    """The start time inside a rotation id (`<target>-<yyyymmdd>t<hhmmss>z-<mode>`): orders rotations."""
    match = _ROTATION_STAMP.search(rotation_id or "")
    return match.group(1) if match else None


def older_than(event_rotation: str | None, event_available_at: object, held_rotation: str | None,
               held_available_at: str | None) -> bool:  # fmt: skip
    """Is an announcement older than the key held? By `availableAt` when both have one, else by the
    rotations' start times (a key read as "latest" carries its rotation id but no availableAt)."""
    if isinstance(event_available_at, str) and held_available_at:
        return event_available_at < held_available_at
    mine, theirs = rotation_stamp(event_rotation), rotation_stamp(held_rotation)
    return bool(mine and theirs and mine < theirs)
