"""CloudEvents 1.0 for consumers and operators: one builder per event type, never a key value.

Each event's `id` is a UUID derived from (rotation id, type[, occurrence]), so publishing the same
event again (an activity retried, a replay) sends the same id and subscribers can drop duplicates.
`subject` is `targets/<targetId>` so subscriptions filter per target (subjectBeginsWith). Builders
take every timestamp as an argument (the orchestrator's replay-safe clock). They make a publishable
event of whatever text they are given — reasons, errors, details and actor names are cleaned and bounded
(rotation/reasons.py) and any secret-shaped value is masked — because they run inside orchestrations: a
builder that raised on a poisoned reason would crash the rotation, and every later one that abandons it
(issue 12). They raise EventDataError only for a programming error (an unknown type or stage, a
malformed rotation id). The JSON Schema of each type is in `config/events/<type>.schema.json`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from rotation import stages
from rotation.durations import format_duration, format_timestamp
from rotation.identity import Actor
from rotation.naming import Mode, is_rotation_id
from rotation.policy import APP_ROOT, Threshold
from rotation.reasons import MAX_EVENT_TEXT, clean_optional, clean_text
from rotation.redaction import looks_secret, redact

SPEC_VERSION = "1.0"
DEFAULT_SOURCE = "/keyrotation"
DATA_CONTENT_TYPE = "application/json"
SCHEMA_DIR = APP_ROOT / "config" / "events"
SUBJECT_PREFIX = "targets/"

ROTATION_STARTED = "KeyRotation.RotationStarted"
NEW_KEY_AVAILABLE = "KeyRotation.NewKeyAvailable"
ROTATION_HELD = "KeyRotation.RotationHeld"
OLD_KEY_REVOKED = "KeyRotation.OldKeyRevoked"
ROTATION_COMPLETED = "KeyRotation.RotationCompleted"
ROTATION_FAILED = "KeyRotation.RotationFailed"
ROTATION_DEGRADED = "KeyRotation.RotationDegraded"
DRIFT_DETECTED = "KeyRotation.DriftDetected"
EVENT_TYPES: tuple[str, ...] = (
    ROTATION_STARTED,
    NEW_KEY_AVAILABLE,
    ROTATION_HELD,
    OLD_KEY_REVOKED,
    ROTATION_COMPLETED,
    ROTATION_FAILED,
    ROTATION_DEGRADED,
    DRIFT_DETECTED,
)

# rotation/stages.py names the stages; the literals stay accepted for callers that spell them out.
type Stage = stages.Stage | Literal["provision", "verify", "announce", "overlap", "gate", "revoke", "watch"]
STAGES: tuple[str, ...] = tuple(stages.Stage)
DriftKind = Literal["key-missing-on-target", "value-mismatch"]
DegradedCause = Literal["auth-failures", "old-key-accepted"]
DRIFT_KINDS: tuple[str, ...] = ("key-missing-on-target", "value-mismatch")
type Occurrence = str | int | None  # which one of the events of a type a rotation may publish more than once
# What the app did about each kind of drift, so a consumer knows what to do without decoding `drift`:
# a mismatch is repaired in Key Vault (reload `secretId`); a missing key needs a rotation (wait for it).
DRIFT_REPAIRS: dict[str, str] = {"value-mismatch": "restored", "key-missing-on-target": "rotation"}

ACTOR_KINDS: tuple[str, ...] = ("principal", "schedule", "event", "system")
MAX_ACTOR_NAME = 256  # the schemas' actor.name maxLength
_OBJECT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Fixed namespace: event ids must be the same on every host, in every release.
_EVENT_NAMESPACE = uuid.UUID("6f1d3c2a-9b7e-4c5d-8a1f-2e3d4c5b6a70")


class EventDataError(ValueError):
    """The event cannot be built as asked (a bad field or a secret-shaped value); names the field."""


@dataclass(frozen=True)
class RotationInfo:
    """What every rotation event repeats: which rotation, of which target, why and by whom."""

    rotation_id: str
    target_id: str
    mode: Mode
    actor: Actor
    started_at: datetime
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rotationId": self.rotation_id,
            "targetId": self.target_id,
            "mode": self.mode,
            "actor": actor_json(self.actor),
            "reason": clean_optional(self.reason),
            "startedAt": format_timestamp(self.started_at),
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> RotationInfo:
        return RotationInfo(
            rotation_id=data["rotationId"],
            target_id=data["targetId"],
            mode=data["mode"],
            actor=Actor.from_json(data["actor"]),
            started_at=datetime.fromisoformat(data["startedAt"].replace("Z", "+00:00")),
            reason=data.get("reason"),
        )


def event_id(rotation_id: str, event_type: str, occurrence: Occurrence = None) -> str:
    """Stable per (rotation id, type[, occurrence]): the key of idempotent publishing."""
    if event_type not in EVENT_TYPES:
        raise EventDataError(f"type: unknown event type {event_type!r}")
    name = f"{rotation_id}|{event_type}" + (f"|{occurrence}" if occurrence is not None else "")
    return str(uuid.uuid5(_EVENT_NAMESPACE, name))


def subject(target_id: str) -> str:
    return f"{SUBJECT_PREFIX}{target_id}"


def schema_path(event_type: str) -> Path:
    return SCHEMA_DIR / f"{event_type}.schema.json"


def actor_json(actor: Actor) -> dict[str, Any]:
    """The actor as the schemas allow it, whatever an input said: a known kind (else `system`), a clean
    non-empty name of at most 256 characters, an object id that is a GUID (else null)."""
    kind = actor.kind if actor.kind in ACTOR_KINDS else "system"
    name = clean_text(actor.name, MAX_ACTOR_NAME) or "unknown"
    oid = actor.object_id.lower() if isinstance(actor.object_id, str) else None
    return {"kind": kind, "name": name, "objectId": oid if oid and _OBJECT_ID.match(oid) else None}


def _masked(value: Any) -> Any:
    """`data` with every secret-shaped string masked: the last guard of invariant I1 (the free-text
    fields are already clean), which must not raise inside an orchestration."""
    if isinstance(value, str):
        return redact(value) if looks_secret(value) else value
    if isinstance(value, Mapping):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    return value


def _envelope(
    event_type: str,
    key: str,
    target_id: str,
    time: datetime,
    data: dict[str, Any],
    source: str,
    occurrence: Occurrence = None,
) -> dict[str, Any]:
    data = _masked(data)
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(key, event_type, occurrence),
        "source": source,
        "type": event_type,
        "subject": subject(target_id),
        "time": format_timestamp(time),
        "datacontenttype": DATA_CONTENT_TYPE,
        "data": data,
    }


def _rotation_event(
    event_type: str, info: RotationInfo, at: datetime, data: dict[str, Any], source: str, occurrence: Occurrence = None
) -> dict[str, Any]:
    """An event about a rotation: its `data` is what every rotation event repeats (RotationInfo), then `data`."""
    if not is_rotation_id(info.rotation_id):
        raise EventDataError(f"data.rotationId: {info.rotation_id!r} is not a rotation id")
    merged = {**info.to_json(), **data}
    return _envelope(event_type, info.rotation_id, info.target_id, at, merged, source, occurrence)


def _names(values: Iterable[str]) -> list[str]:
    return list(values)


def rotation_started(
    info: RotationInfo,
    *,
    key_name: str,
    previous_key_name: str | None,
    overlap: timedelta,
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    """A rotation began: which key name it will create, which key it replaces, the planned overlap."""
    fields = {"keyName": key_name, "previousKeyName": previous_key_name, "overlap": format_duration(overlap)}
    return _rotation_event(ROTATION_STARTED, info, info.started_at, fields, source)


def new_key_available(
    info: RotationInfo,
    *,
    key_name: str,
    secret_id: str,
    previous_key_name: str | None,
    previous_secret_id: str | None,
    available_at: datetime,
    overlap_ends_at: datetime,
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    """The new key works on the target and is in Key Vault at `secret_id` (versioned): switch to it
    before `overlapEndsAt`, then acknowledge."""
    fields = {
        "keyName": key_name,
        "secretId": secret_id,
        "previousKeyName": previous_key_name,
        "previousSecretId": previous_secret_id,
        "availableAt": format_timestamp(available_at),
        "overlapEndsAt": format_timestamp(overlap_ends_at),
    }
    return _rotation_event(NEW_KEY_AVAILABLE, info, available_at, fields, source)


def rotation_held(
    info: RotationInfo,
    *,
    key_name: str,
    secret_id: str,
    failures: int | None,
    baseline: int | None,
    threshold: Threshold,
    window_start: datetime,
    window_end: datetime,
    held_at: datetime,
    deadline: datetime,
    default_action: str,
    hold_reason: str,
    occurrence: int = 1,
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    """The gate stopped before revoking the old key (failures above threshold, or the signal could not be
    read: failures/baseline null). Waits for approve / abort / extend until `deadline`. `occurrence`
    counts holds within one rotation (an extend can lead to a second hold)."""
    fields = {
        "keyName": key_name,
        "secretId": secret_id,
        "failures": failures,
        "baseline": baseline,
        "threshold": threshold.to_json(),
        "windowStart": format_timestamp(window_start),
        "windowEnd": format_timestamp(window_end),
        "heldAt": format_timestamp(held_at),
        "deadline": format_timestamp(deadline),
        "defaultAction": default_action,
        "holdReason": clean_text(hold_reason),
        "hold": occurrence,
    }
    return _rotation_event(ROTATION_HELD, info, held_at, fields, source, occurrence)


def old_key_revoked(
    info: RotationInfo,
    *,
    key_name: str,
    revoked_key_names: Sequence[str],
    revoked_secret_ids: Sequence[str],
    revoked_at: datetime,
    first_refused_at: datetime | None = None,
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    """Old keys are deleted on the target and their Key Vault versions disabled; `keyName` is the one left.
    `first_refused_at`: when the target was first seen refusing every revoked value (None: not verified —
    no probe, no value known, or still accepted when the bound passed: then RotationDegraded says so)."""
    fields = {
        "keyName": key_name,
        "revokedKeyNames": _names(revoked_key_names),
        "revokedSecretIds": _names(revoked_secret_ids),
        "revokedAt": format_timestamp(revoked_at),
        "firstRefusedAt": format_timestamp(first_refused_at) if first_refused_at else None,
    }
    return _rotation_event(OLD_KEY_REVOKED, info, revoked_at, fields, source)


def rotation_completed(
    info: RotationInfo,
    *,
    key_name: str,
    secret_id: str,
    revoked_key_names: Sequence[str],
    completed_at: datetime,
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    fields = {
        "keyName": key_name,
        "secretId": secret_id,
        "revokedKeyNames": _names(revoked_key_names),
        "completedAt": format_timestamp(completed_at),
    }
    return _rotation_event(ROTATION_COMPLETED, info, completed_at, fields, source)


def rotation_failed(
    info: RotationInfo,
    *,
    stage: Stage,
    error: str,
    compensated: bool,
    key_name: str | None,
    failed_at: datetime,
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    """The rotation stopped at `stage`. `compensated`: the new key was removed and the old one still works.
    `error` is cleaned and bounded here whatever it holds (safe_error_message already is)."""
    if stage not in STAGES:
        raise EventDataError(f"data.stage: must be one of {', '.join(STAGES)}")
    fields = {
        "stage": stage,
        "error": clean_text(error, MAX_EVENT_TEXT),
        "compensated": compensated,
        "keyName": key_name,
        "failedAt": format_timestamp(failed_at),
    }
    return _rotation_event(ROTATION_FAILED, info, failed_at, fields, source)


def rotation_degraded(
    info: RotationInfo,
    *,
    key_name: str,
    revoked_key_names: Sequence[str],
    failures: int | None,
    baseline: int | None,
    window_start: datetime,
    window_end: datetime,
    detected_at: datetime,
    cause: DegradedCause = "auth-failures",
    accepted_key_names: Sequence[str] = (),
    detail: str | None = None,
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    """Something is wrong after revocation (never restored). `auth-failures`: failures spiked in the watch
    window, some consumer still uses a revoked key. `old-key-accepted`: the target still accepted revoked
    keys (`accepted_key_names`) when the policy's probe.revokedWithin passed (window: the deletion to then)."""
    fields = {
        "keyName": key_name,
        "revokedKeyNames": _names(revoked_key_names),
        "cause": cause,
        "acceptedKeyNames": _names(accepted_key_names),
        "detail": clean_optional(detail, MAX_EVENT_TEXT),
        "failures": failures,
        "baseline": baseline,
        "windowStart": format_timestamp(window_start),
        "windowEnd": format_timestamp(window_end),
        "detectedAt": format_timestamp(detected_at),
    }
    return _rotation_event(ROTATION_DEGRADED, info, detected_at, fields, source)


def drift_detected(
    target_id: str,
    *,
    check_id: str,
    drift: DriftKind,
    key_name: str | None,
    secret_id: str | None,
    rotation_id: str | None,
    detected_at: datetime,
    detail: str,
    previous_secret_id: str | None = None,
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    """Key Vault's current version and what the target accepts disagreed (e.g. the host regenerated a key).
    `value-mismatch`: the target's value is now stored at `secret_id` (the drifted version,
    `previous_secret_id`, is disabled). `key-missing-on-target`: `secret_id` names a key the target no
    longer has; a rotation follows. Idempotent per (check, target, drift, key name)."""
    if drift not in DRIFT_KINDS:
        raise EventDataError(f"data.drift: must be one of {', '.join(DRIFT_KINDS)}")
    data = {
        "targetId": target_id,
        "checkId": check_id,
        "drift": drift,
        "repair": DRIFT_REPAIRS[drift],
        "keyName": key_name,
        "secretId": secret_id,
        "previousSecretId": previous_secret_id,
        "rotationId": rotation_id,
        "detectedAt": format_timestamp(detected_at),
        "detail": clean_text(detail),
    }
    key = f"drift|{check_id}|{target_id}|{drift}|{key_name or ''}"
    return _envelope(DRIFT_DETECTED, key, target_id, detected_at, data, source)
