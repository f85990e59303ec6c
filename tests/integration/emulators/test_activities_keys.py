"""The ARM and Key Vault activities against the emulators: provision and verify (this file), plus the helpers
the other test_activities_keys_* files share. Each activity runs in-process with the app's settings pointed
at the emulator; what is asserted is what an operator would see: the keys on the target, the versions in
Key Vault, the calls made, and that no key value ever leaves the activity."""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from activities import clients, site_hosts
from activities.function_keys import FunctionKeyStore
from activities.provision import provision_new_key
from activities.targets import TargetRefused
from activities.verify import verify_new_key
from rotation import naming
from rotation.policy import Target, parse_policy
from tests.deployed_policy import ref
from tests.emulator_process import Emulator

BASE = "client"
ARM_BUDGET = 4
KEY_VAULT_BUDGET = 4


# -- shared helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The app's settings pointed at the emulator, as devhost would set them."""
    policy = tmp_path_factory.mktemp("policy") / "rotation-policy.json"
    policy.write_text(json.dumps({"version": 1, "targets": []}))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            **emulator.app_settings(),
            "KEY_VAULT_URL": emulator.url,
            "ROTATION_POLICY_PATH": str(policy),
        }.items():
            mp.setenv(name, value)
        clients.settings.cache_clear()
        site_hosts.CACHE.clear()  # host names read from another module's emulator must not carry over
        yield emulator
    clients.settings.cache_clear()


def target_document(
    emulator: Emulator,
    *,
    kind: str = "host",
    slot: str | None = None,
    probe: bool = True,
    attempts: int = 6,
    site: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A policy target on a fresh app (unique subscription, group, name and secret) in the emulator."""
    sub, rg, name = str(uuid.uuid4()), f"rg-{uuid.uuid4().hex[:6]}", f"app-{uuid.uuid4().hex[:10]}"
    spec = {"functions": ["ping"], **(site or {})}
    if slot:
        spec["slots"] = [slot]
    response = emulator.control("PUT", f"sites/{sub}/{rg}/{name}", json=spec)
    assert response.status_code == 201, response.text
    document: dict[str, Any] = {
        "id": f"t-{uuid.uuid4().hex[:10]}",
        "functionApp": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{name}",
        "keyScope": {"kind": kind} if kind != "function" else {"kind": "function", "function": "ping"},
        "keyVault": {"vaultUrl": emulator.url, "secretName": f"s-{uuid.uuid4().hex[:12]}"},
        "monitoring": {"signal": "target-requests", "workspaceId": emulator.endpoints["workspaceId"]},
    }
    if slot:
        document["slot"] = slot
    if kind == "masterKey":
        document["allowMasterKey"] = True
    else:
        document["baseKeyName"] = BASE
    if probe:  # to the host name ARM reports, through the emulators' proxy (env fixture), as on Azure
        document["probe"] = {
            "path": "/api/ping",
            "attempts": attempts,
            "delay": "PT1S",
            "timeout": "PT5S",
        }
    return {**document, **fields}


def make_target(emulator: Emulator, **options: Any) -> Target:
    """A fresh target, deployed into the policy the activities read (they name targets, never carry them)."""
    target = parse_policy({"version": 1, "targets": [target_document(emulator, **options)]}, environ={}).targets[0]
    ref(target)
    return target


def rid(target: Target, day: int = 1, mode: str = "scheduled") -> str:
    return naming.rotation_id(target.id, mode, datetime(2026, 1, day, 3, 0, 0, tzinfo=UTC))  # type: ignore[arg-type]


def instance(state: dict[str, Any], target: Target) -> dict[str, Any]:
    site = next(s for s in state["arm"]["sites"] if s["id"].lower() == target.function_app.site_id.lower())
    return next(i for i in site["instances"] if i["slot"] == target.function_app.slot)


def live_keys(emulator: Emulator, target: Target, state: dict[str, Any] | None = None) -> dict[str, str]:
    """The keys of the target's scope that exist now, name -> value."""
    scope = target.key_scope
    wanted = {"host": "functionKeys", "masterKey": "masterKey", "function": "function"}[scope.kind]
    rows = instance(state or emulator.state(), target)["keys"]
    return {
        r["name"]: r["value"]
        for r in rows
        if r["retired"] is None
        and r["scope"] == wanted
        and (scope.kind != "function" or r["function"] == scope.function)
    }


def versions(emulator: Emulator, target: Target, state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The secret's versions in the order the vault created them (values included: test only)."""
    secrets = (state or emulator.state())["keyvault"]["secrets"]
    secret = next((s for n, s in secrets.items() if n.lower() == target.key_vault.secret_name.lower()), None)
    return list(secret["versions"]) if secret else []


def newest_enabled(emulator: Emulator, target: Target) -> dict[str, Any] | None:
    enabled = [v for v in versions(emulator, target) if v["enabled"]]
    return enabled[-1] if enabled else None


def snapshot(emulator: Emulator, target: Target) -> tuple[Any, ...]:
    """Everything the activities change for a target: live keys and each version's state."""
    state = emulator.state()
    kv = [(v["version"], v["enabled"], v["tags"], v["value"], v["exp"]) for v in versions(emulator, target, state)]
    return live_keys(emulator, target, state), kv


def all_values(emulator: Emulator) -> set[str]:
    """Every key value the emulator ever generated or stored."""
    state = emulator.state()
    values = {k["value"] for s in state["arm"]["sites"] for i in s["instances"] for k in i["keys"]}
    values |= {v["value"] for s in state["keyvault"]["secrets"].values() for v in s["versions"]}
    return {v for v in values if v}


def assert_no_values(emulator: Emulator, *texts: str) -> None:
    leaked = [v for v in all_values(emulator) for text in texts if v in text]
    assert not leaked, "a key value leaked"


def last_seq(emulator: Emulator) -> int:
    log = emulator.requests_log()
    return max((r["seq"] for r in log), default=0)


def calls(emulator: Emulator, since: int) -> Counter[str]:
    """Requests made since `since`, by service (`arm`, `keyvault`, `target`), challenge 401s included."""
    counted: Counter[str] = Counter()
    for entry in emulator.requests_log(since):
        operation = entry.get("operation") or ""
        if operation:
            counted[operation.split(".", 1)[0]] += 1
    return counted


def operations(emulator: Emulator, since: int) -> list[str]:
    return [r["operation"] for r in emulator.requests_log(since) if r.get("operation")]


def accepts(emulator: Emulator, target: Target, value: str) -> bool:
    """Whether the target's data plane opens its function with `value` right now."""
    assert target.probe is not None
    host = instance(emulator.state(), target)["hostName"]
    url = f"{emulator.url}/_targets/{host}{target.probe.path}"
    response = requests.get(url, headers={"x-functions-key": value}, verify=emulator.ca, timeout=10)
    return response.status_code == 200


def run_logged(caplog: pytest.LogCaptureFixture, activity: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Run an activity with every logger captured at DEBUG; the output must survive JSON (activity I/O)."""
    with caplog.at_level(logging.DEBUG):
        result = activity(request)
    assert json.loads(json.dumps(result)) == result
    return result


def provision(target: Target, rotation_id: str) -> dict[str, Any]:
    request = {
        "rotationId": rotation_id,
        **ref(target),
        "keyName": naming.key_name(target.base_key_name, rotation_id),
    }
    return provision_new_key(request)


# -- provision --------------------------------------------------------------------------------------


def test_provision_waits_for_the_host_cache_then_stores_the_accepted_key(
    env: Emulator, clean_faults: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    target = make_target(env)
    # A host instance that reloaded its keys less than a minute ago refuses the new key (host_cache.py): here
    # one refusal, as a fault rule, since which instance a probe reaches is the emulator's round-robin.
    clean_faults.fault(operation="target.invoke", status=401, match=target.function_app.name, times=1)
    rotation = rid(target)
    key_name = naming.key_name(BASE, rotation)
    since = last_seq(env)
    result = run_logged(caplog, provision_new_key, {"rotationId": rotation, **ref(target), "keyName": key_name})

    assert result["accepted"] is True and result["keyName"] == key_name
    assert result["probeAttempts"] >= 2  # refused while the host cache still held the old key set
    keys = live_keys(env, target)
    stored = newest_enabled(env, target)
    assert stored is not None and stored["version"] == result["version"]
    assert stored["value"] == keys[key_name] and accepts(env, target, stored["value"])
    assert stored["tags"] == naming.secret_tags(target.id, rotation, key_name, "current")
    assert stored["content_type"] == "application/vnd.keyrotation.functions-key"
    assert result["secretId"] == target.key_vault.secret_id(result["version"])
    # Key Vault was written only after the target accepted the key (I2 under host caches).
    log = [(r["operation"], r["status"]) for r in env.requests_log(since) if r.get("operation")]
    stored_at = log.index(("keyvault.set_secret", 200))
    probes = [status for op, status in log[:stored_at] if op == "target.invoke"]
    assert probes[-1] == 200 and 401 in probes
    used = calls(env, since)
    assert used["arm"] <= ARM_BUDGET and used["keyvault"] <= KEY_VAULT_BUDGET, used
    assert_no_values(env, json.dumps(result), caplog.text)


def test_provision_twice_converges_on_the_same_key_and_version(env: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    target = make_target(env)
    rotation = rid(target)
    first = provision(target, rotation)
    before = snapshot(env, target)
    since = last_seq(env)
    second = run_logged(caplog, provision_new_key, {"rotationId": rotation, **ref(target), "keyName": first["keyName"]})
    assert snapshot(env, target) == before
    assert {**second, "probeAttempts": None} == {**first, "probeAttempts": None}
    assert "arm.put_host_secret" not in operations(env, since) and "keyvault.set_secret" not in operations(env, since)
    assert_no_values(env, json.dumps(second), caplog.text)


def test_a_replayed_older_rotation_changes_nothing(env: Emulator) -> None:
    """Issue 12 review: a signed input copied from an instance's status (or a Supersede in the history),
    started again once the target is idle, must not make a key (nor, later, revoke the family)."""
    target = make_target(env)
    provision(target, rid(target, day=2))
    before = snapshot(env, target)
    since = last_seq(env)
    with pytest.raises(TargetRefused, match="older than rotation"):
        provision(target, rid(target, day=1))
    assert snapshot(env, target) == before
    assert not {"arm.put_host_secret", "keyvault.set_secret"} & set(operations(env, since))


def test_provision_adopts_the_base_key_then_retags_the_previous_version(env: Emulator) -> None:
    target = make_target(env)
    FunctionKeyStore(target).create(BASE)  # the key consumers used before the product managed it
    first = provision(target, rid(target, 1))
    assert first["previousKeyName"] == BASE and first["previousVersion"] is None

    second = provision(target, rid(target, 2))
    assert second["previousVersion"] == first["version"] and second["previousSecretId"] == first["secretId"]
    assert second["previousKeyName"] == first["keyName"]
    tags = {v["version"]: v["tags"]["stage"] for v in versions(env, target)}
    assert tags == {first["version"]: "previous", second["version"]: "current"}
    assert newest_enabled(env, target)["version"] == second["version"]  # type: ignore[index]
    keys = live_keys(env, target)
    assert {BASE, first["keyName"], second["keyName"]} <= set(keys)  # nothing revoked yet: overlap


def test_provision_without_any_earlier_key_reports_no_previous(env: Emulator) -> None:
    target = make_target(env, probe=False)
    result = provision(target, rid(target))
    assert result["accepted"] is True and result["probeAttempts"] == 0
    assert result["previousKeyName"] is None and result["previousVersion"] is None


def test_provision_refused_by_the_target_writes_nothing_to_key_vault(
    env: Emulator, clean_faults: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    target = make_target(env, attempts=2)
    clean_faults.fault(operation="target.invoke", status=401, match=target.function_app.name, times=None)
    since = last_seq(env)
    with caplog.at_level(logging.DEBUG):
        result = provision(target, rid(target))
    assert result["accepted"] is False and result["probeAttempts"] == 2
    assert result["version"] is None and result["secretId"] is None
    assert versions(env, target) == []
    assert "keyvault.set_secret" not in operations(env, since)
    assert result["keyName"] in live_keys(env, target)  # left for compensation to delete
    assert_no_values(env, json.dumps(result), caplog.text)


def test_provision_of_a_function_key_on_a_slot(env: Emulator) -> None:
    target = make_target(env, kind="function", slot="staging")
    result = provision(target, rid(target))
    assert result["accepted"] is True
    stored = newest_enabled(env, target)
    assert stored is not None and stored["value"] == live_keys(env, target)[result["keyName"]]
    state = env.state()
    site = next(s for s in state["arm"]["sites"] if s["id"] == target.function_app.site_id)
    prod_keys = [k["name"] for i in site["instances"] if i["slot"] is None for k in i["keys"]]
    assert result["keyName"] not in prod_keys  # slots have their own keys


def test_provision_errors_carry_no_body_and_no_value(env: Emulator, clean_faults: Emulator) -> None:
    target = make_target(env)
    clean_faults.fault(
        operation="keyvault.set_secret", status=403, code="Forbidden", match=target.key_vault.secret_name
    )
    with pytest.raises(Exception) as raised:
        provision(target, rid(target))
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # the SDK error is not chained
    message = str(raised.value)
    assert "403" in message and target.key_vault.secret_name in message
    assert_no_values(env, message, repr(raised.value))


# -- verify -----------------------------------------------------------------------------------------


def test_verify_reads_the_version_and_probes_the_target(env: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    target = make_target(env)
    rotation = rid(target)
    provisioned = provision(target, rotation)
    request = {"rotationId": rotation, **ref(target), "version": provisioned["version"]}
    since = last_seq(env)
    first = run_logged(caplog, verify_new_key, request)
    second = run_logged(caplog, verify_new_key, request)
    assert first == second == {"verified": True, "attempts": 1, "lastStatus": 200}
    assert calls(env, since)["keyvault"] <= 2 * 2  # a versioned read (+ the challenge) per run
    assert_no_values(env, json.dumps(first), caplog.text)


def test_verify_reports_a_key_the_target_no_longer_accepts(env: Emulator) -> None:
    target = make_target(env, attempts=2)
    rotation = rid(target)
    provisioned = provision(target, rotation)
    FunctionKeyStore(target).delete(provisioned["keyName"])
    result = verify_new_key({"rotationId": rotation, **ref(target), "version": provisioned["version"]})
    assert result == {"verified": False, "attempts": 2, "lastStatus": 401}


def test_verify_without_a_probe_reads_nothing(env: Emulator) -> None:
    target = make_target(env, probe=False)
    since = last_seq(env)
    result = verify_new_key({"rotationId": rid(target), **ref(target), "version": "0" * 32})
    assert result == {"verified": True, "attempts": 0, "lastStatus": None}
    assert calls(env, since) == Counter()
