"""CloudEvents: every builder's output validates against the shipped schema of its type, ids are stable
per (rotation, type) so republishing is idempotent, and whatever text a builder gets (a secret-shaped
value, control characters, 200 KB) it still builds a valid event without raising."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from rotation import events
from rotation.identity import SCHEDULE_ACTOR, Actor
from rotation.policy import Threshold

T0 = datetime(2026, 1, 5, 3, 0, 0, tzinfo=UTC)
RID = "orders-api-20260105t030000z-s"
NEW = "orders-client-20260105t030000z-s"
OLD = "orders-client-20251007t030000z-s"
SECRET = "https://kv-prod.vault.azure.net/secrets/orders-api-client-key/0123456789abcdef0123456789abcdef"
OLD_SECRET = "https://kv-prod.vault.azure.net/secrets/orders-api-client-key/fedcba9876543210fedcba9876543210"
INFO = events.RotationInfo(RID, "orders-api", "scheduled", SCHEDULE_ACTOR, T0, "interval of 90 days elapsed")
RESPONDER = Actor("principal", "alice@contoso.com", "5c1e3f0a-7d0b-4a52-9a55-6b1f4b0d8e21")
EMERGENCY = events.RotationInfo(
    "orders-api-20260106t101500z-e", "orders-api", "emergency", RESPONDER, T0 + timedelta(days=1), "key leaked in a log"
)


def _builders(
    info: events.RotationInfo = INFO, emergency: events.RotationInfo = EMERGENCY
) -> dict[str, Callable[[], dict[str, Any]]]:
    return {
        events.ROTATION_STARTED: lambda: events.rotation_started(
            info, key_name=NEW, previous_key_name=OLD, overlap=timedelta(days=3)
        ),
        events.NEW_KEY_AVAILABLE: lambda: events.new_key_available(
            info,
            key_name=NEW,
            secret_id=SECRET,
            previous_key_name=OLD,
            previous_secret_id=OLD_SECRET,
            available_at=T0 + timedelta(minutes=2),
            overlap_ends_at=T0 + timedelta(days=3),
        ),
        events.ROTATION_HELD: lambda: events.rotation_held(
            info,
            key_name=NEW,
            secret_id=SECRET,
            failures=42,
            baseline=3,
            threshold=Threshold(10, 2.0),
            window_start=T0,
            window_end=T0 + timedelta(days=3),
            held_at=T0 + timedelta(days=3),
            deadline=T0 + timedelta(days=5),
            default_action="abort",
            hold_reason="42 auth failures against a baseline of 3",
        ),
        events.OLD_KEY_REVOKED: lambda: events.old_key_revoked(
            info,
            key_name=NEW,
            revoked_key_names=[OLD],
            revoked_secret_ids=[OLD_SECRET],
            revoked_at=T0 + timedelta(days=3),
        ),
        events.ROTATION_COMPLETED: lambda: events.rotation_completed(
            info, key_name=NEW, secret_id=SECRET, revoked_key_names=[OLD], completed_at=T0 + timedelta(days=3, hours=1)
        ),
        events.ROTATION_FAILED: lambda: events.rotation_failed(
            emergency,
            stage="verify",
            error="ProbeRefused: HTTP 401 after 12 attempts",
            compensated=True,
            key_name=None,
            failed_at=T0 + timedelta(days=1, minutes=3),
        ),
        events.ROTATION_DEGRADED: lambda: events.rotation_degraded(
            info,
            key_name=NEW,
            revoked_key_names=[OLD],
            failures=17,
            baseline=0,
            window_start=T0 + timedelta(days=3),
            window_end=T0 + timedelta(days=3, minutes=30),
            detected_at=T0 + timedelta(days=3, minutes=30),
        ),
        events.DRIFT_DETECTED: lambda: events.drift_detected(
            "orders-api",
            check_id="drift-20260110t000000z",
            drift="key-missing-on-target",
            key_name=NEW,
            secret_id=SECRET,
            rotation_id=RID,
            detected_at=T0 + timedelta(days=5),
            detail="the current Key Vault version names a key the target no longer lists",
        ),
    }


def _validator(event_type: str) -> Draft202012Validator:
    schema = json.loads(events.schema_path(event_type).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_every_event_type_has_a_builder_and_a_schema() -> None:
    assert set(_builders()) == set(events.EVENT_TYPES)
    shipped = {p.name.removesuffix(".schema.json") for p in events.SCHEMA_DIR.glob("*.schema.json")}
    assert shipped == set(events.EVENT_TYPES)


@pytest.mark.parametrize("event_type", events.EVENT_TYPES)
def test_built_events_are_valid_cloudevents_of_their_schema(event_type: str) -> None:
    event = _builders()[event_type]()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator(event_type).iter_errors(event)]
    assert errors == []
    assert event["specversion"] == "1.0" and event["type"] == event_type
    assert event["subject"] == "targets/orders-api"
    assert json.loads(json.dumps(event)) == event  # plain JSON: fits activity input and the publisher


@pytest.mark.parametrize("event_type", events.EVENT_TYPES)
def test_schemas_refuse_data_fields_they_do_not_declare(event_type: str) -> None:
    """A field added to an event without its schema (e.g. a value slipping in) fails validation."""
    event = _builders()[event_type]()
    event["data"]["keyValue"] = "x"
    assert list(_validator(event_type).iter_errors(event))


def test_event_ids_are_stable_per_rotation_and_type() -> None:
    first = {t: build()["id"] for t, build in _builders().items()}
    again = {t: build()["id"] for t, build in _builders().items()}
    assert first == again  # a retried publish activity sends the same ids
    assert len(set(first.values())) == len(first)
    assert events.event_id(RID, events.NEW_KEY_AVAILABLE) != events.event_id(
        "orders-api-20260405t030000z-s", events.NEW_KEY_AVAILABLE
    )
    # The id does not depend on when the event is built or published.
    late = events.rotation_completed(
        INFO, key_name=NEW, secret_id=SECRET, revoked_key_names=[OLD], completed_at=T0 + timedelta(days=9)
    )
    assert (
        late["id"] == first[events.ROTATION_COMPLETED]
        and late["time"] != _builders()[events.ROTATION_COMPLETED]()["time"]
    )


def test_a_second_hold_in_one_rotation_is_a_distinct_event() -> None:
    first = _builders()[events.ROTATION_HELD]()
    second = events.rotation_held(
        INFO,
        key_name=NEW,
        secret_id=SECRET,
        failures=None,
        baseline=None,
        threshold=Threshold(10, None),
        window_start=T0,
        window_end=T0 + timedelta(days=4),
        held_at=T0 + timedelta(days=4),
        deadline=T0 + timedelta(days=6),
        default_action="abort",
        hold_reason="the monitoring query failed: a scheduled rotation holds",
        occurrence=2,
    )
    assert second["id"] != first["id"] and second["data"]["hold"] == 2
    assert not list(_validator(events.ROTATION_HELD).iter_errors(second))


def test_the_audit_fields_say_who_and_why() -> None:
    failed = _builders()[events.ROTATION_FAILED]()
    assert failed["data"]["actor"] == {
        "kind": "principal",
        "name": "alice@contoso.com",
        "objectId": RESPONDER.object_id,
    }
    assert failed["data"]["reason"] == "key leaked in a log"
    assert failed["data"]["mode"] == "emergency"
    started = _builders()[events.ROTATION_STARTED]()
    assert started["data"]["actor"] == {"kind": "schedule", "name": "timer", "objectId": None}
    assert started["time"] == "2026-01-05T03:00:00.000Z" and started["data"]["overlap"] == "P3D"


def test_rotation_info_round_trips_through_json() -> None:
    assert events.RotationInfo.from_json(json.loads(json.dumps(EMERGENCY.to_json()))) == EMERGENCY


def test_a_secret_shaped_value_is_masked_wherever_it_appears() -> None:
    key = base64.urlsafe_b64encode(os.urandom(40)).decode()
    failed = events.rotation_failed(
        INFO, stage="provision", error=f"bad key {key}", compensated=False, key_name=None, failed_at=T0
    )
    revoked = events.old_key_revoked(INFO, key_name=NEW, revoked_key_names=[key], revoked_secret_ids=[], revoked_at=T0)
    started = events.rotation_started(
        events.RotationInfo(RID, "orders-api", "on-demand", RESPONDER, T0, f"please use {key}"),
        key_name=NEW,
        previous_key_name=None,
        overlap=timedelta(days=1),
    )
    for event in (failed, revoked, started):
        assert key not in json.dumps(event)
    assert failed["data"]["error"] == "bad key ***" and started["data"]["reason"] == "please use ***"


# The issue-12 repro: a forged near-expiry event put a key value plus control characters (and, in a
# second try, 200 KB) into a rotation's reason; every event built from it then failed, crashing that
# rotation and every later one that tried to abandon it.
LEAKED = base64.urlsafe_b64encode(os.urandom(40)).decode()
POISON = f"version {LEAKED}\x00\x1b[2J\u202e\u2028 near expiry " + "f" * 200_000


@pytest.mark.parametrize("event_type", events.EVENT_TYPES)
def test_poisoned_text_still_builds_a_valid_event_without_the_value(event_type: str) -> None:
    forged = Actor("hacker", "\u202e" + "n" * 5000, "not-a-guid")  # type: ignore[arg-type]
    info = events.RotationInfo(RID, "orders-api", "scheduled", forged, T0, POISON)
    emergency = events.RotationInfo(EMERGENCY.rotation_id, "orders-api", "emergency", forged, T0, POISON)
    event = _builders(info, emergency)[event_type]()
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator(event_type).iter_errors(event)]
    assert errors == []
    assert LEAKED not in json.dumps(event) and LEAKED[:40] not in json.dumps(event)
    if event_type != events.DRIFT_DETECTED:
        assert event["data"]["actor"] == {"kind": "system", "name": "n" * 253 + "...", "objectId": None}
        reason = event["data"]["reason"]
        assert len(reason) == 1024 and reason.startswith("version ***[2J near expiry fff")


def test_poisoned_errors_details_and_hold_reasons_are_bounded_too() -> None:
    failed = events.rotation_failed(INFO, stage="gate", error=POISON, compensated=False, key_name=None, failed_at=T0)
    assert len(failed["data"]["error"]) == 1024 and "\u202e" not in failed["data"]["error"]
    drift = events.drift_detected(
        "orders-api", check_id="c", drift="value-mismatch", key_name=NEW, secret_id=SECRET, rotation_id=None,
        detected_at=T0, detail=POISON,
    )  # fmt: skip
    assert not list(_validator(events.DRIFT_DETECTED).iter_errors(drift))


def test_unknown_stages_types_and_rotation_ids_are_refused() -> None:
    with pytest.raises(events.EventDataError, match="stage"):
        events.rotation_failed(INFO, stage="deploy", error="x", compensated=False, key_name=None, failed_at=T0)  # type: ignore[arg-type]
    with pytest.raises(events.EventDataError, match="type"):
        events.event_id(RID, "KeyRotation.Unknown")
    bad = events.RotationInfo("not-a-rotation", "orders-api", "scheduled", SCHEDULE_ACTOR, T0)
    with pytest.raises(events.EventDataError, match="rotationId"):
        events.rotation_started(bad, key_name=NEW, previous_key_name=None, overlap=timedelta(days=1))
