"""Derived names: the same inputs always give the same names (re-runs converge), and a base name's
generations are recognised exactly (an emergency rotation revokes them and nothing else)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rotation import naming

T0 = datetime(2026, 1, 5, 3, 0, 0, 456000, tzinfo=UTC)
# What the Functions host / ARM accept in a key name as used here: a URL path segment, not `_`-prefixed.
KEY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def test_rotation_ids_are_derived_from_target_mode_and_start_second() -> None:
    rid = naming.rotation_id("orders-api", "scheduled", T0)
    assert rid == "orders-api-20260105t030000z-s"
    assert naming.rotation_id("orders-api", "scheduled", T0 + timedelta(milliseconds=300)) == rid
    assert naming.rotation_id("orders-api", "emergency", T0) == "orders-api-20260105t030000z-e"
    assert naming.rotation_id("orders-api", "on-demand", T0) == "orders-api-20260105t030000z-o"


def test_rotation_ids_are_utc_whatever_the_clock_zone() -> None:
    local = T0.astimezone(timezone(timedelta(hours=-8)))
    naive_utc = T0.replace(tzinfo=None)
    assert naming.rotation_id("orders-api", "scheduled", local) == naming.rotation_id(
        "orders-api", "scheduled", naive_utc
    )


def test_rotation_ids_parse_back() -> None:
    parts = naming.parse_rotation_id("orders-api-20260105t030000z-e")
    assert parts == naming.RotationIdParts("orders-api", T0.replace(microsecond=0), "emergency")
    for bad in ("orders-api", "orders-api-20260105t030000z-x", "Orders-20260105t030000z-s", "x-20260105t030000z-s"):
        assert not naming.is_rotation_id(bad)
        with pytest.raises(naming.NamingError):
            naming.parse_rotation_id(bad)


@pytest.mark.parametrize("stamp", ["20261301t000000z", "20260230t000000z", "20260101t250000z", "20260101t006100z"])
def test_a_rotation_id_with_an_impossible_date_is_no_rotation_id(stamp: str) -> None:
    """Issue 12: month 13 matched the pattern and strptime raised a bare ValueError (an API 500)."""
    rid = f"orders-api-{stamp}-o"
    assert not naming.is_rotation_id(rid)
    with pytest.raises(naming.NamingError, match="not a date"):
        naming.parse_rotation_id(rid)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(naming.NamingError, match="mode"):
        naming.rotation_id("orders-api", "manual", T0)  # type: ignore[arg-type]
    with pytest.raises(naming.NamingError, match="target id"):
        naming.rotation_id("Orders API", "scheduled", T0)


def test_key_names_are_deterministic_per_rotation_and_acceptable_to_the_host() -> None:
    rid = naming.rotation_id("orders-api", "scheduled", T0)
    name = naming.key_name("orders-client", rid)
    assert name == "orders-client-20260105t030000z-s"
    assert naming.key_name("orders-client", rid) == name  # a re-run of provision finds the same key
    assert KEY_NAME.match(name)
    longest = naming.key_name("a" * 32, naming.rotation_id("t" * 48, "emergency", T0))
    assert len(longest) == 51 and KEY_NAME.match(longest)
    other = naming.key_name("orders-client", naming.rotation_id("orders-api", "scheduled", T0 + timedelta(seconds=1)))
    assert other != name


def test_the_master_key_keeps_its_one_name() -> None:
    assert naming.key_name("_master", naming.rotation_id("orders-api", "emergency", T0)) == "_master"


def test_generations_of_a_base_name_are_recognised_exactly() -> None:
    on_target = [
        "default",
        "orders-client",  # the pre-existing key the first rotation replaces
        "orders-client-20260105t030000z-s",
        "ORDERS-CLIENT-20251001T030000Z-S",  # names compare case-insensitively on the host
        "orders-client-v2",  # someone else's key: never touched
        "orders-client-20260105t030000z-s-copy",
        "orders-20260105t030000z-s",  # the generation of a shorter base name
        "_master",
    ]
    assert naming.generations("orders-client", on_target) == [
        "orders-client",
        "ORDERS-CLIENT-20251001T030000Z-S",
        "orders-client-20260105t030000z-s",
    ]
    assert naming.generations("orders", on_target) == ["orders-20260105t030000z-s"]


def test_emergency_revocation_list_keeps_the_new_key_and_nothing_foreign() -> None:
    names = ["orders-client", "orders-client-20251001t030000z-s", "orders-client-20260105t030000z-e", "default"]
    assert naming.keys_to_revoke("orders-client", names, keep="ORDERS-CLIENT-20260105T030000Z-E") == [
        "orders-client",
        "orders-client-20251001t030000z-s",
    ]


def test_instance_ids() -> None:
    assert naming.rotation_instance_id("orders-api") == "rotation-orders-api"
    assert naming.target_of_instance("rotation-orders-api") == "orders-api"
    assert naming.target_of_instance("scheduler-20260105t0300z") is None
    assert naming.target_of_instance("rotation-Bad Id") is None


def test_a_duplicate_timer_tick_maps_to_the_same_scheduler_instance() -> None:
    tick = datetime(2026, 1, 5, 3, 0, 0, 100000, tzinfo=UTC)
    first = naming.scheduler_instance_id(tick)
    assert first == "scheduler-20260105t030000z"
    assert naming.scheduler_instance_id(tick + timedelta(milliseconds=700)) == first
    assert naming.scheduler_instance_id(tick + timedelta(minutes=1)) != first
    assert (
        naming.scheduler_instance_id(tick + timedelta(seconds=2), timedelta(seconds=1)) == "scheduler-20260105t030002z"
    )


def test_key_vault_tags_round_trip_and_restage() -> None:
    tags = naming.secret_tags("orders-api", "orders-api-20260105t030000z-s", "orders-client-20260105t030000z-s")
    assert tags == {
        "managedBy": "keyrotation",
        "target": "orders-api",
        "rotationId": "orders-api-20260105t030000z-s",
        "keyName": "orders-client-20260105t030000z-s",
        "stage": "current",
    }
    assert all(len(k) <= 512 and len(v) <= 256 for k, v in tags.items())  # Key Vault tag limits
    read = naming.read_secret_tags(tags)
    assert read is not None and read.stage == "current"
    previous = naming.restaged_tags({**tags, "owner": "team-x"}, "previous")
    assert previous["stage"] == "previous" and previous["owner"] == "team-x"
    assert naming.read_secret_tags(previous).with_stage("revoked").to_tags()["stage"] == "revoked"  # type: ignore[union-attr]
    with pytest.raises(naming.NamingError):
        naming.restaged_tags(tags, "old")  # type: ignore[arg-type]


def test_versions_written_by_someone_else_are_not_ours() -> None:
    assert naming.read_secret_tags(None) is None
    assert naming.read_secret_tags({"stage": "current"}) is None
    assert naming.read_secret_tags({"managedBy": "keyrotation", "stage": "stale", "target": "t"}) is None
