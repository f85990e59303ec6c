"""abandon_rotation and the sweeping revoke against the emulators: a stuck rotation's leftovers are undone
before its announcement and kept after it; the next completed rotation leaves exactly one key of the family
(no orphans), never touches keys outside it, keeps the I2 order, and a re-run changes nothing. No key value
in outputs, events or logs."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from activities.abandon import abandon_rotation
from activities.function_keys import FunctionKeyStore
from activities.revoke import revoke_old_keys
from rotation import naming
from rotation.identity import SCHEDULE_ACTOR
from rotation.policy import Target
from tests.deployed_policy import ref
from tests.emulator_process import Emulator
from tests.integration.emulators.test_activities_keys import (
    BASE,
    accepts,
    assert_no_values,
    env,  # noqa: F401 - the fixture
    last_seq,
    live_keys,
    make_target,
    newest_enabled,
    operations,
    provision,
    rid,
    run_logged,
    snapshot,
    versions,
)

AT = datetime(2026, 1, 20, 3, 0, 1, tzinfo=UTC)


def replaces(stuck: str, provisioned: dict[str, Any] | None, *, announced: bool, stage: str) -> dict[str, Any]:
    """What a door builds from the stuck instance's custom status (rotation/stuck.py)."""
    return {
        "rotationId": stuck,
        "mode": "scheduled",
        "trigger": {"actor": SCHEDULE_ACTOR.to_json(), "reason": "interval-elapsed"},
        "startedAt": None,
        "stage": stage,
        "runtimeStatus": "Terminated",
        "detail": None,
        "announced": announced,
        "keyName": naming.key_name(BASE, stuck),
        "version": provisioned["version"] if provisioned else None,
        "previousVersion": provisioned["previousVersion"] if provisioned else None,
        "reason": f"abandoned: instance Terminated at stage {stage}",
    }


def abandon_request(target: Target, record: dict[str, Any]) -> dict[str, Any]:
    return {"rotationId": rid(target, 20), **ref(target), "replaces": record}


def published(emulator: Emulator, since: int, rotation_id: str) -> list[dict[str, Any]]:
    stored = emulator.control("GET", f"eventgrid/events?since={since}").json()["value"]
    return [s["event"] for s in stored if s["event"]["data"].get("rotationId") == rotation_id]


def event_seq(emulator: Emulator) -> int:
    stored = emulator.control("GET", "eventgrid/events").json()["value"]
    return stored[-1]["seq"] if stored else 0


def family(emulator: Emulator, target: Target) -> list[str]:
    return sorted(n for n in live_keys(emulator, target) if naming.belongs_to_base(BASE, n))


# -- abandon ----------------------------------------------------------------------------------------


def test_rotation_stuck_in_verifying_is_undone_by_the_next_rotation(
    env: Emulator,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = make_target(env)
    first = provision(target, rid(target, 1))
    stuck = rid(target, 2)
    stored = provision(target, stuck)  # stored in Key Vault, then the instance was terminated mid-verify
    record = replaces(stuck, stored, announced=False, stage="verifying")
    events_since = event_seq(env)
    since = last_seq(env)
    result = run_logged(caplog, abandon_rotation, abandon_request(target, record))

    assert result["abandoned"] == stuck and result["compensated"] is True
    assert result["currentKeyName"] == first["keyName"]
    assert family(env, target) == [first["keyName"]]  # the stuck key is gone, nothing else
    current = newest_enabled(env, target)
    assert current is not None and current["tags"]["keyName"] == first["keyName"]
    assert accepts(env, target, current["value"])  # consumers read a key the target accepts (I2)
    ops = operations(env, since)
    assert ops.index("keyvault.update_secret") < ops.index("arm.delete_host_secret")  # version first, key last
    # One side effect, the undo: the orchestrator publishes the RotationFailed (tests/e2e/test_stuck_e2e.py).
    assert published(env, events_since, stuck) == []

    before = snapshot(env, target)
    again = abandon_rotation(abandon_request(target, record))
    assert snapshot(env, target) == before  # a re-run converges
    assert again["abandoned"] == stuck and again["currentKeyName"] == first["keyName"]
    assert published(env, events_since, stuck) == []
    assert_no_values(env, json.dumps([result, again]), caplog.text)


def test_rotation_stuck_before_its_key_was_stored_leaves_no_orphan(env: Emulator) -> None:  # noqa: F811
    target = make_target(env)
    first = provision(target, rid(target, 1))
    stuck = rid(target, 2)
    FunctionKeyStore(target).create(naming.key_name(BASE, stuck))  # created on the target, never stored
    before_kv = versions(env, target)
    result = abandon_rotation(abandon_request(target, replaces(stuck, None, announced=False, stage="provisioning")))
    assert result["compensated"] is True and result["undone"]["deletedKey"] is True
    assert family(env, target) == [first["keyName"]] and versions(env, target) == before_kv


def test_rotation_stuck_after_its_announcement_keeps_every_key(env: Emulator) -> None:  # noqa: F811
    target = make_target(env)
    provision(target, rid(target, 1))
    stuck = rid(target, 2)
    stored = provision(target, stuck)
    before = snapshot(env, target)
    events_since = event_seq(env)
    result = abandon_rotation(abandon_request(target, replaces(stuck, stored, announced=True, stage="overlap")))
    assert result == {
        "abandoned": stuck,
        "compensated": False,
        "undone": None,
        "currentKeyName": None,
        "currentVersion": None,
    }
    assert snapshot(env, target) == before  # consumers may use the new key: nothing touched
    assert published(env, events_since, stuck) == []  # the orchestrator closes its story


def test_abandon_refuses_a_rotation_of_another_target(env: Emulator) -> None:  # noqa: F811
    target = make_target(env)
    record = replaces("other-target-20260102t030000z-s", None, announced=False, stage="provisioning")
    with pytest.raises(ValueError, match=r"replaces\.rotationId"):
        abandon_rotation({"rotationId": rid(target, 20), **ref(target), "replaces": record})


# -- the sweeping revoke ----------------------------------------------------------------------------


def test_next_rotation_revokes_keys_left_valid_by_failed_and_abandoned_rotations(
    env: Emulator,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = make_target(env)
    store = FunctionKeyStore(target)
    for name in (BASE, f"{BASE}-v2", "other"):  # the pre-adoption base key, and two keys outside the family
        store.create(name)
    aborted = provision(target, rid(target, 1))  # an aborted hold: both keys left valid
    abandoned = provision(target, rid(target, 2))  # terminated in overlap, abandoned: kept
    orphan = naming.key_name(BASE, rid(target, 3))
    store.create(orphan)  # a key whose rotation died before storing it
    rotation = rid(target, 4)
    current = provision(target, rotation)
    assert current["previousVersion"] == abandoned["version"]
    plan = ([abandoned["keyName"]], [abandoned["version"]])
    request = {
        "rotationId": rotation,
        **ref(target),
        "keepKeyName": current["keyName"],
        "keepVersion": current["version"],
        "revokeKeyNames": plan[0],
        "revokeVersions": plan[1],
        "sweep": True,
    }
    events_since = event_seq(env)
    since = last_seq(env)
    result = run_logged(caplog, revoke_old_keys, request)

    gone = sorted([BASE, aborted["keyName"], abandoned["keyName"], orphan])
    assert sorted(result["deletedKeys"]) == gone
    assert sorted(result["disabledVersions"]) == sorted([aborted["version"], abandoned["version"]])
    assert set(live_keys(env, target)) == {"default", f"{BASE}-v2", "other", current["keyName"]}
    assert family(env, target) == [current["keyName"]]  # exactly one key of the family is left
    enabled = [v for v in versions(env, target) if v["enabled"]]
    assert [v["version"] for v in enabled] == [current["version"]]
    assert accepts(env, target, enabled[0]["value"])
    ops = [op for op in operations(env, since) if op in ("arm.delete_host_secret", "keyvault.update_secret")]
    assert ops == ["arm.delete_host_secret"] * 4 + ["keyvault.update_secret"] * 2  # I2: keys first, then versions
    # One side effect: the revoke. The orchestrator announces OldKeyRevoked from these lists.
    assert published(env, events_since, rotation) == []

    before = snapshot(env, target)
    since = last_seq(env)
    again = revoke_old_keys(request)
    assert snapshot(env, target) == before  # a re-run changes nothing...
    assert again == {"deletedKeys": plan[0], "disabledVersions": plan[1]}  # ...and reports the planned ones
    assert not {"arm.delete_host_secret", "keyvault.update_secret"} & set(operations(env, since))
    assert_no_values(env, json.dumps([result, again]), caplog.text)


def test_revoke_never_disables_a_version_newer_than_the_kept_one(env: Emulator) -> None:  # noqa: F811
    target = make_target(env)
    old = provision(target, rid(target, 1))
    kept = provision(target, rid(target, 2))
    time.sleep(1.1)  # Key Vault's `created` counts seconds: only a later second is certainly later
    late = provision(target, rid(target, 3))  # e.g. a terminated rotation's provision finishing late
    result = revoke_old_keys(
        {
            **ref(target),
            "keepKeyName": kept["keyName"],
            "keepVersion": kept["version"],
            "revokeKeyNames": [old["keyName"]],
            "revokeVersions": [old["version"]],
            "sweep": True,
        }
    )
    assert result == {"deletedKeys": [old["keyName"]], "disabledVersions": [old["version"]]}
    assert family(env, target) == sorted([kept["keyName"], late["keyName"]])
    current = newest_enabled(env, target)  # "latest" stays an enabled key the target accepts (I2)
    assert current is not None and current["version"] == late["version"] and accepts(env, target, current["value"])
