"""revoke_old_keys, compensate_rotation and the master key path against the emulators: what is deleted and
disabled (and what never is), the order that keeps the newest enabled version accepted (I2), re-runs, call
budgets, and no key value in outputs or logs."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import pytest

from activities import clients
from activities.function_keys import FunctionKeyStore
from activities.provision import provision_new_key
from activities.revoke import compensate_rotation, revoke_old_keys
from rotation import naming
from rotation.credential_store import CredentialStoreError
from rotation.policy import Target
from tests.deployed_policy import ref
from tests.emulator_process import Emulator
from tests.integration.emulators.test_activities_keys import (
    ARM_BUDGET,
    BASE,
    KEY_VAULT_BUDGET,
    accepts,
    assert_no_values,
    calls,
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


def revoke_request(target: Target, kept: dict[str, Any], names: Any, version_ids: Any) -> dict[str, Any]:
    return {
        "rotationId": rid(target, 9),
        **ref(target),
        "keepKeyName": kept["keyName"],
        "keepVersion": kept["version"],
        "revokeKeyNames": names,
        "revokeVersions": version_ids,
    }


def compensate_request(target: Target, rotation: str, provisioned: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "rotationId": rotation,
        **ref(target),
        "keyName": naming.key_name(target.base_key_name, rotation),
        "version": provisioned["version"] if provisioned else None,
        "previousVersion": provisioned["previousVersion"] if provisioned else None,
    }


def stage_of(emulator: Emulator, target: Target) -> dict[str, tuple[str, bool]]:
    return {v["version"]: ((v["tags"] or {}).get("stage", "-"), v["enabled"]) for v in versions(emulator, target)}


# -- revoke -----------------------------------------------------------------------------------------


def test_revoke_deletes_the_previous_key_then_disables_its_version(
    env: Emulator,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = make_target(env)
    first = provision(target, rid(target, 1))
    second = provision(target, rid(target, 2))
    request = revoke_request(target, second, [first["keyName"]], [first["version"]])
    since = last_seq(env)
    result = run_logged(caplog, revoke_old_keys, request)

    assert result == {"deletedKeys": [first["keyName"]], "disabledVersions": [first["version"]]}
    keys = live_keys(env, target)
    assert first["keyName"] not in keys and second["keyName"] in keys and "default" in keys
    assert stage_of(env, target) == {first["version"]: ("revoked", False), second["version"]: ("current", True)}
    ops = operations(env, since)
    assert ops.index("arm.delete_host_secret") < ops.index("keyvault.update_secret")  # I2: target first
    used = calls(env, since)
    assert used["arm"] <= ARM_BUDGET and used["keyvault"] <= KEY_VAULT_BUDGET, used

    before = snapshot(env, target)
    since = last_seq(env)
    assert run_logged(caplog, revoke_old_keys, request) == result  # a re-run reports the same, changes nothing
    assert snapshot(env, target) == before
    assert not {"arm.delete_host_secret", "keyvault.update_secret"} & set(operations(env, since))
    assert_no_values(env, json.dumps(result), caplog.text)


def test_emergency_revoke_removes_every_other_key_of_the_family_and_nothing_else(
    env: Emulator,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = make_target(env)
    store = FunctionKeyStore(target)
    for name in (BASE, f"{BASE}-v2", "other"):  # the adopted base key, and two keys outside the family
        store.create(name)
    first = provision(target, rid(target, 1))
    second = provision(target, rid(target, 2))
    foreign = clients.secret_client(env.url).set_secret(target.key_vault.secret_name, secrets.token_urlsafe(40))
    emergency = provision(target, rid(target, 3, "emergency"))

    result = run_logged(caplog, revoke_old_keys, revoke_request(target, emergency, None, None))
    assert sorted(result["deletedKeys"]) == sorted([BASE, first["keyName"], second["keyName"]])
    assert sorted(result["disabledVersions"]) == sorted([first["version"], second["version"]])
    keys = live_keys(env, target)
    assert set(keys) == {"default", f"{BASE}-v2", "other", emergency["keyName"]}
    stages = stage_of(env, target)
    assert stages[foreign.properties.version] == ("-", True)  # not ours: never touched
    assert stages[emergency["version"]] == ("current", True)
    assert all(stages[v] == ("revoked", False) for v in (first["version"], second["version"]))
    current = newest_enabled(env, target)
    assert current is not None and current["version"] == emergency["version"] and accepts(env, target, current["value"])

    before = snapshot(env, target)
    again = revoke_old_keys(revoke_request(target, emergency, None, None))
    assert again == {"deletedKeys": [], "disabledVersions": []} and snapshot(env, target) == before
    assert_no_values(env, json.dumps(result), caplog.text)


def test_emergency_revoke_spares_no_newer_version_and_keeps_latest_readable(
    env: Emulator,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review finding: a version of ours newer than the emergency's (a late write, a drift repair racing
    it) was spared with its key, so a leaked key could survive the emergency. Now the emergency's key is
    stored again as the newest version and everything else of the family goes."""
    target = make_target(env)
    emergency = provision(target, rid(target, 3, "emergency"))
    late = provision(target, rid(target, 4))  # written after the emergency's version, its key on the target

    result = run_logged(caplog, revoke_old_keys, revoke_request(target, emergency, None, None))
    assert late["keyName"] in result["deletedKeys"] and late["version"] in result["disabledVersions"]
    keys = live_keys(env, target)
    assert late["keyName"] not in keys and emergency["keyName"] in keys
    latest = versions(env, target)[-1]  # what readers of "latest" get
    assert latest["enabled"] and latest["value"] == keys[emergency["keyName"]]
    stages = stage_of(env, target)
    assert stages[emergency["version"]][1] is True  # the announced version stays readable
    assert stages[late["version"]] == ("revoked", False)

    before = snapshot(env, target)
    revoke_old_keys(revoke_request(target, emergency, None, None))  # a re-run writes no second copy
    assert snapshot(env, target) == before
    assert_no_values(env, json.dumps(result), caplog.text)


def test_a_failed_delete_disables_nothing_and_reports_no_value(
    env: Emulator,  # noqa: F811
    clean_faults: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = make_target(env)
    first = provision(target, rid(target, 1))
    second = provision(target, rid(target, 2))
    before = snapshot(env, target)
    clean_faults.fault(operation="arm.delete_host_secret", status=403, match=target.function_app.name)
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialStoreError) as raised:
        revoke_old_keys(revoke_request(target, second, [first["keyName"]], [first["version"]]))
    assert raised.value.status_code == 403 and not raised.value.retryable
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert snapshot(env, target) == before  # the old version stays enabled while its key is still there
    assert_no_values(env, str(raised.value), repr(raised.value), caplog.text)


def test_revoke_refuses_what_is_not_its_to_revoke(env: Emulator) -> None:  # noqa: F811
    target = make_target(env)
    first = provision(target, rid(target, 1))
    second = provision(target, rid(target, 2))
    before = snapshot(env, target)
    with pytest.raises(ValueError, match="revokeKeyNames"):
        revoke_old_keys(revoke_request(target, second, ["default"], []))
    with pytest.raises(ValueError, match="keepVersion"):
        revoke_old_keys(revoke_request(target, {**second, "version": "f" * 32}, [first["keyName"]], None))
    with pytest.raises(ValueError, match="keepKeyName"):
        revoke_old_keys(revoke_request(target, {**second, "keyName": f"{BASE}-gone"}, None, None))
    assert snapshot(env, target) == before


# -- compensate -------------------------------------------------------------------------------------


def test_compensation_restores_the_previous_disables_the_new_version_then_deletes_the_new_key(
    env: Emulator,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = make_target(env)
    first = provision(target, rid(target, 1))
    rotation = rid(target, 2)
    second = provision(target, rotation)
    since = last_seq(env)
    result = run_logged(caplog, compensate_rotation, compensate_request(target, rotation, second))
    used = calls(env, since)
    # Failure path: one more Key Vault call than a rotation step, to store the previous value again.
    assert used["arm"] <= ARM_BUDGET and used["keyvault"] <= KEY_VAULT_BUDGET + 1, used

    restored = result["restoredVersion"]
    assert result["disabledVersion"] == second["version"] and result["deletedKey"] is True
    assert restored not in (first["version"], second["version"])
    # Key Vault's "latest" is the newest version even when disabled, so the previous value is stored
    # again as the newest version; the superseded original is disabled.
    assert stage_of(env, target) == {
        first["version"]: ("previous", False),
        second["version"]: ("revoked", False),
        restored: ("current", True),
    }
    keys = live_keys(env, target)
    assert second["keyName"] not in keys and first["keyName"] in keys
    current = newest_enabled(env, target)
    assert current is not None and current["version"] == restored and accepts(env, target, current["value"])
    log = [
        (r["operation"], r["path"])
        for r in env.requests_log(since)
        if r.get("operation", "").startswith(("arm", "key"))
    ]
    updates = [path.rsplit("/", 1)[-1] for op, path in log if op == "keyvault.update_secret"]
    # The previous value is the newest version again before the new one is disabled: Key Vault's "latest"
    # never points at a disabled version (I2; tests/integration/emulators/test_call_discipline.py: a give-up half-way).
    assert updates == [first["version"], second["version"]]
    assert log[-1][0] == "arm.delete_host_secret"  # the key goes last

    before = snapshot(env, target)
    again = compensate_rotation(compensate_request(target, rotation, second))
    assert again == {**result, "deletedKey": False} and snapshot(env, target) == before
    assert_no_values(env, json.dumps(result), caplog.text)


def test_compensation_after_a_refused_key_leaves_the_old_key_working(
    env: Emulator,  # noqa: F811
    clean_faults: Emulator,
) -> None:
    # The app's `default` host key is what consumers use today (seeded, so the host cache already has it).
    target = make_target(env, attempts=1, baseKeyName="default")
    old_value = live_keys(env, target)["default"]
    rotation = rid(target)
    clean_faults.fault(operation="target.invoke", status=401, match=target.function_app.name, times=1)
    refused = provision(target, rotation)
    assert refused["accepted"] is False and refused["previousKeyName"] == "default"
    result = compensate_rotation(compensate_request(target, rotation, refused))
    assert result == {"disabledVersion": None, "restoredVersion": None, "deletedKey": True}
    assert live_keys(env, target) == {"default": old_value} and versions(env, target) == []
    assert accepts(env, target, old_value)


def test_compensation_finds_a_version_provision_stored_before_failing(env: Emulator, clean_faults: Emulator) -> None:  # noqa: F811
    target = make_target(env)
    first = provision(target, rid(target, 1))
    rotation = rid(target, 2)
    # provision stores the new version, then fails re-tagging the previous one: the orchestrator never
    # learns the new version id.
    clean_faults.fault(
        operation="keyvault.update_secret", status=403, code="Forbidden", match=first["version"], times=1
    )
    with pytest.raises(Exception, match="403"):
        provision(target, rotation)
    clean_faults.clear_faults()
    result = compensate_rotation(compensate_request(target, rotation, None))
    stored = [v["version"] for v in versions(env, target) if v["tags"]["rotationId"] == rotation]
    assert result["disabledVersion"] == stored[0] and result["deletedKey"] is True
    # Key Vault's "latest" (the newest version, enabled or not) is the first rotation's key again: readers
    # of latest get a key the target accepts, not 403 from the disabled new version.
    latest = versions(env, target)[-1]
    assert latest["enabled"] and latest["tags"]["rotationId"] == rid(target, 1)
    assert latest["tags"]["stage"] == "current" and accepts(env, target, latest["value"])
    assert result["restoredVersion"] == latest["version"]


# -- the master key ---------------------------------------------------------------------------------


def master_request(target: Target, rotation: str) -> dict[str, Any]:
    return {"rotationId": rotation, **ref(target), "keyName": "_master"}


def test_master_key_is_renewed_once_per_rotation_and_stored(env: Emulator, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    target = make_target(env, kind="masterKey")
    old_master = live_keys(env, target)["_master"]
    first = provision_new_key(master_request(target, rid(target, 1, "emergency")))
    rotation = rid(target, 2, "emergency")
    since = last_seq(env)
    result = run_logged(caplog, provision_new_key, master_request(target, rotation))

    master = live_keys(env, target)["_master"]
    assert master != old_master and not accepts(env, target, old_master)
    assert result["accepted"] is True and result["keyName"] == "_master"
    assert result["previousVersion"] == first["version"] and result["previousKeyName"] == "_master"
    current = newest_enabled(env, target)
    assert current is not None and current["version"] == result["version"] and current["value"] == master
    used = calls(env, since)
    assert used["arm"] <= ARM_BUDGET and used["keyvault"] <= KEY_VAULT_BUDGET, used

    before = snapshot(env, target)
    since = last_seq(env)
    again = run_logged(caplog, provision_new_key, master_request(target, rotation))
    assert {**again, "probeAttempts": 0} == {**result, "probeAttempts": 0}
    assert snapshot(env, target) == before  # not renewed a second time
    assert "arm.put_host_secret" not in operations(env, since)
    assert calls(env, since)["keyvault"] <= KEY_VAULT_BUDGET

    revoked = revoke_old_keys(revoke_request(target, result, [], None))
    assert revoked == {"deletedKeys": [], "disabledVersions": [first["version"]]}
    assert live_keys(env, target)["_master"] == master
    compensated = compensate_rotation(compensate_request(target, rotation, result))
    assert compensated == {"disabledVersion": None, "restoredVersion": None, "deletedKey": False}
    assert newest_enabled(env, target)["version"] == result["version"]  # type: ignore[index]
    assert_no_values(env, json.dumps([first, result, again, revoked]), caplog.text)
