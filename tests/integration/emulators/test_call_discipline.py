"""Call discipline under faults (issue 5), per call site and fault kind, with the real activities against the
emulators: a Retry-After within the policy's cap is honoured (the next try comes no sooner), a longer one
gives up at once with a message naming the fault, 5xx and timeouts are retried within the budget, Key
Vault's 409 on a soft-deleted name is recovered. Every target here has a small call budget (policy
`calls`) so a give-up takes a second, not minutes; no message ever carries a key value."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest

from activities import clients
from activities.events_publish import publish_events
from activities.function_keys import FunctionKeyStore
from activities.provision import provision_new_key
from activities.revoke import compensate_rotation, revoke_old_keys
from activities.secret_versions import SecretVersions
from activities.telemetry import count_auth_failures
from activities.verify import verify_new_key
from emulators.arm.api import host_runtime_fault
from rotation import naming
from rotation.credential_store import CredentialStoreError
from rotation.policy import Target, parse_policy
from rotation.redaction import SafeError
from tests.deployed_policy import ref
from tests.emulator_process import Emulator
from tests.integration.emulators.test_activities_keys import (
    accepts,
    assert_no_values,
    env,  # noqa: F401 - the fixture
    last_seq,
    live_keys,
    newest_enabled,
    provision,
    rid,
    target_document,
    versions,
)
from tests.integration.emulators.test_activities_telemetry_events import lifecycle_events

# Small enough that every give-up below is quick, large enough for the emulator on a busy machine.
FAST: dict[str, Any] = {
    "connectTimeout": "PT5S",
    "readTimeout": "PT1S",
    "callTimeout": "PT20S",
    "retries": 2,
    "maxRetryAfter": "PT2S",
}


@pytest.fixture
def faults(env: Emulator) -> Any:  # noqa: F811
    env.clear_faults()
    yield env
    env.clear_faults()


def fast_target(emulator: Emulator, calls: dict[str, Any] | None = None, **options: Any) -> Target:
    document = target_document(emulator, calls={**FAST, **(calls or {})}, **options)
    return parse_policy({"version": 1, "targets": [document]}, environ={}).targets[0]


def tries(emulator: Emulator, since: int, operation: str) -> list[tuple[datetime, int | None]]:
    """When each request of `operation` arrived and how it was answered (None: no answer, e.g. timed out)."""
    return [
        (datetime.fromisoformat(r["ts"].replace("Z", "+00:00")), r["status"])
        for r in emulator.requests_log(since)
        if r.get("operation") == operation
    ]


def gap(attempts: list[tuple[datetime, int | None]], first: int, second: int) -> float:
    return (attempts[second][0] - attempts[first][0]).total_seconds()


def provision_request(target: Target, rotation: str) -> dict[str, Any]:
    return {"rotationId": rotation, **ref(target), "keyName": naming.key_name("client", rotation)}


def raised(action: Any, *args: Any) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        action(*args)
    return info.value, time.monotonic() - started


def assert_value_free(emulator: Emulator, error: BaseException) -> None:
    assert error.__cause__ is None and error.__suppress_context__  # the SDK exception is not chained
    assert_no_values(emulator, str(error), repr(error))


# -- ARM (Microsoft.Web key APIs) ----------------------------------------------------------------------


def test_arm_list_keys_429_retry_after_is_honoured(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(operation="arm.list_host_keys", status=429, retry_after=1.5, match=target.function_app.name)
    since = last_seq(faults)
    FunctionKeyStore(target).list_keys()
    attempts = tries(faults, since, "arm.list_host_keys")
    assert [status for _, status in attempts] == [429, 200]
    assert gap(attempts, 0, 1) >= 1.4  # the emulator's timestamps: the second try waited as asked


def test_arm_list_keys_retry_after_over_the_cap_gives_up_at_once(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(
        operation="arm.list_host_keys", status=429, retry_after=3600, times=None, match=target.function_app.name
    )
    since = last_seq(faults)
    error, elapsed = raised(provision_new_key, provision_request(target, rid(target)))
    assert elapsed < 5
    assert isinstance(error, CredentialStoreError) and error.retryable and error.status_code == 429
    message = str(error)
    assert message.startswith(f"list host keys on {target.function_app.resource_id}")
    assert "Retry-After 3600 s exceeds the policy's calls.maxRetryAfter (2 s)" in message
    assert [status for _, status in tries(faults, since, "arm.list_host_keys")] == [429]  # no second try
    assert naming.key_name("client", rid(target)) not in live_keys(faults, target)  # nothing created
    assert_value_free(faults, error)


def test_arm_list_keys_503_from_host_runtime_is_retried_then_succeeds(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(**host_runtime_fault(status=503, times=2, match=target.function_app.name))
    since = last_seq(faults)
    result = provision(target, rid(target))
    assert result["accepted"] is True
    assert [status for _, status in tries(faults, since, "arm.list_host_keys")][:3] == [503, 503, 200]


def test_arm_list_keys_500_that_outlasts_the_retries_fails_naming_the_fault(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(**host_runtime_fault(status=500, times=None, match=target.function_app.name))
    since = last_seq(faults)
    error, elapsed = raised(FunctionKeyStore(target).list_keys)
    assert isinstance(error, CredentialStoreError) and error.retryable and error.status_code == 500
    assert "HTTP 500" in str(error) and "list host keys" in str(error)
    assert [status for _, status in tries(faults, since, "arm.list_host_keys")] == [500, 500, 500]  # 1 + 2 retries
    assert elapsed < 10
    assert_value_free(faults, error)


def test_arm_put_key_latency_past_the_read_timeout_is_retried(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(operation="arm.put_host_secret", latency_ms=2500, match=target.function_app.name)
    since = last_seq(faults)
    result = provision(target, rid(target))
    assert result["accepted"] is True
    puts = [r["status"] for r in faults.requests_log(since) if r["method"] == "PUT" and "/functionKeys/" in r["path"]]
    assert puts == [None, 201]  # the hung PUT (no answer before the client gave up), then the retry
    keys = live_keys(faults, target)
    stored = newest_enabled(faults, target)
    assert stored is not None and stored["value"] == keys[result["keyName"]]  # one key, the one stored


def test_arm_delete_503_during_revoke_leaves_both_keys_valid(faults: Emulator) -> None:
    """A revoke that gives up (after the announcement) changes nothing consumers depend on (I2)."""
    target = fast_target(faults)
    first = provision(target, rid(target, 1))
    second = provision(target, rid(target, 2))
    faults.fault(**host_runtime_fault("arm.delete_host_secret", 503, times=None, match=target.function_app.name))
    request = {
        **ref(target),
        "keepKeyName": second["keyName"],
        "keepVersion": second["version"],
        "revokeKeyNames": [first["keyName"]],
        "revokeVersions": [first["version"]],
    }
    error, _ = raised(revoke_old_keys, request)
    assert "HTTP 503" in str(error) and f"delete key {first['keyName']}" in str(error)
    keys = live_keys(faults, target)
    assert accepts(faults, target, keys[first["keyName"]]) and accepts(faults, target, keys[second["keyName"]])
    current = newest_enabled(faults, target)
    assert current is not None and current["version"] == second["version"]
    assert accepts(faults, target, current["value"])
    assert_value_free(faults, error)


# -- Key Vault ----------------------------------------------------------------------------------------


def test_keyvault_set_429_retry_after_is_honoured(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(operation="keyvault.set_secret", status=429, retry_after=1.5, match=target.key_vault.secret_name)
    since = last_seq(faults)
    result = provision(target, rid(target))
    attempts = tries(faults, since, "keyvault.set_secret")
    assert [status for _, status in attempts] == [429, 200]
    assert gap(attempts, 0, 1) >= 1.4
    assert newest_enabled(faults, target)["version"] == result["version"]  # type: ignore[index]


def test_keyvault_set_retry_after_over_the_cap_gives_up_and_compensation_restores_the_old_key(
    faults: Emulator,
) -> None:
    """Provision gives up before anything is announced; compensation leaves the previous key current (I2)."""
    target = fast_target(faults)
    first = provision(target, rid(target, 1))
    faults.fault(
        operation="keyvault.set_secret", status=429, retry_after=600, times=None, match=target.key_vault.secret_name
    )
    rotation = rid(target, 2)
    error, elapsed = raised(provision_new_key, provision_request(target, rotation))
    assert elapsed < 10  # the probe ran; the store gave up at once
    assert "store a new version of" in str(error) and "Retry-After 600 s exceeds" in str(error)
    assert_value_free(faults, error)
    faults.clear_faults()
    undone = compensate_rotation(
        {"rotationId": rotation, **ref(target), "keyName": None, "version": None, "previousVersion": None}
    )
    assert undone["deletedKey"] is True
    current = newest_enabled(faults, target)
    assert current is not None and current["version"] == first["version"]
    assert accepts(faults, target, current["value"])
    assert naming.key_name("client", rotation) not in live_keys(faults, target)


def test_compensation_that_gives_up_on_a_key_vault_outage_still_serves_an_accepted_key(faults: Emulator) -> None:
    """Found by the fault campaign: compensation used to disable the new version before it could read the
    previous value back, so a Key Vault read outage left a disabled "latest" (readers got 403)."""
    target = fast_target(faults)
    first = provision(target, rid(target, 1))
    rotation = rid(target, 2)
    second = provision(target, rotation)
    faults.fault(operation="keyvault.get_secret", status=503, times=None, match=target.key_vault.secret_name)
    request = {
        "rotationId": rotation,
        **ref(target),
        "keyName": second["keyName"],
        "version": second["version"],
        "previousVersion": first["version"],
    }
    error, _ = raised(compensate_rotation, request)
    assert "HTTP 503" in str(error) and "read version of" in str(error)
    newest = versions(faults, target)[-1]  # what a reader of "latest" gets
    assert newest["enabled"] and newest["version"] == second["version"] and accepts(faults, target, newest["value"])

    faults.clear_faults()  # the step's durable retry, once Key Vault is back, converges
    undone = compensate_rotation(request)
    assert undone["deletedKey"] is True and undone["disabledVersion"] == second["version"]
    newest = versions(faults, target)[-1]
    assert newest["enabled"] and newest["value"] == live_keys(faults, target)[first["keyName"]]
    assert second["keyName"] not in live_keys(faults, target)


def test_keyvault_set_409_soft_deleted_secret_is_recovered_then_stored(faults: Emulator) -> None:
    target = fast_target(faults)
    first = provision(target, rid(target, 1))
    clients.secret_client(faults.url).begin_delete_secret(target.key_vault.secret_name).wait()
    deleted = faults.state()["keyvault"]["deleted"]
    assert target.key_vault.secret_name.lower() in {n.lower() for n in deleted}  # soft-deleted: writes get 409
    since = last_seq(faults)
    rotation = rid(target, 2)
    second = provision(target, rotation)

    assert second["accepted"] is True
    assert second["previousVersion"] == first["version"]  # found again once the secret was recovered
    assert second["previousKeyName"] == first["keyName"]
    operations = [r["operation"] for r in faults.requests_log(since) if r.get("operation")]
    assert operations.count("keyvault.recover_deleted_secret") == 1
    state = faults.state()["keyvault"]
    assert target.key_vault.secret_name.lower() not in {n.lower() for n in state["deleted"]}
    stages = {v["version"]: v["tags"]["stage"] for v in versions(faults, target)}
    assert stages == {first["version"]: "previous", second["version"]: "current"}
    current = newest_enabled(faults, target)
    assert current is not None and current["version"] == second["version"]
    assert current["value"] == live_keys(faults, target)[second["keyName"]]

    again = provision(target, rotation)  # a re-run converges: nothing recovered or stored twice
    assert {**again, "probeAttempts": None} == {**second, "probeAttempts": None}
    assert len(versions(faults, target)) == 2


def test_keyvault_set_transient_409_is_retried(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(operation="keyvault.set_secret", status=409, match=target.key_vault.secret_name)
    since = last_seq(faults)
    result = provision(target, rid(target))
    assert result["accepted"] is True
    operations = [(r["operation"], r["status"]) for r in faults.requests_log(since) if r.get("operation")]
    assert [s for op, s in operations if op == "keyvault.set_secret"] == [409, 200]
    assert ("keyvault.recover_deleted_secret", 200) not in operations  # a conflict is not a deleted name


def test_keyvault_409_that_persists_fails_naming_the_conflict(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(operation="keyvault.set_secret", status=409, times=None, match=target.key_vault.secret_name)
    error, elapsed = raised(provision_new_key, provision_request(target, rid(target)))
    assert "HTTP 409" in str(error) and "still in conflict after 2 retries" in str(error)
    assert elapsed < 10
    assert_value_free(faults, error)


def test_keyvault_list_latency_past_the_read_timeout_times_out_then_retries(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(operation="keyvault.list_versions", latency_ms=2500, match=target.key_vault.secret_name)
    since = last_seq(faults)
    assert SecretVersions(target).list() == []
    assert [status for _, status in tries(faults, since, "keyvault.list_versions")][-1] == 200


def test_keyvault_hung_reads_give_up_within_the_call_budget(faults: Emulator) -> None:
    target = fast_target(faults, calls={"retries": 1})
    faults.fault(operation="keyvault.list_versions", latency_ms=3000, times=None, match=target.key_vault.secret_name)
    error, elapsed = raised(SecretVersions(target).list)
    assert "timed out" in str(error).lower() and "list versions of" in str(error)
    assert elapsed < 2 * 1 + 3  # two tries of readTimeout PT1S each, plus the back-off between them
    assert_value_free(faults, error)


def test_a_retry_wait_past_the_call_timeout_gives_up_before_sleeping(faults: Emulator) -> None:
    target = fast_target(faults, calls={"callTimeout": "PT2S", "maxRetryAfter": "PT10S"})
    faults.fault(operation="keyvault.list_versions", status=503, retry_after=5, match=target.key_vault.secret_name)
    error, elapsed = raised(SecretVersions(target).list)
    assert elapsed < 2
    assert "would pass calls.callTimeout (2 s)" in str(error) and "HTTP 503" in str(error)


# -- Event Grid -----------------------------------------------------------------------------------------


def test_eventgrid_publish_429_retry_after_is_honoured(faults: Emulator) -> None:
    faults.fault(operation="eventgrid.publish", status=429, retry_after=1.5)
    since = last_seq(faults)
    published = publish_events({"events": lifecycle_events(), "calls": FAST})
    assert len(published["published"]) == 2
    attempts = tries(faults, since, "eventgrid.publish")
    assert [status for _, status in attempts] == [429, 200] and gap(attempts, 0, 1) >= 1.4


def test_eventgrid_publish_retry_after_over_the_cap_gives_up_at_once(faults: Emulator) -> None:
    faults.fault(operation="eventgrid.publish", status=429, retry_after=3600, times=None)
    since = last_seq(faults)
    error, elapsed = raised(publish_events, {"events": lifecycle_events(), "calls": FAST})
    assert isinstance(error, SafeError) and error.status_code == 429 and elapsed < 5
    assert str(error).startswith("publish 2 event(s) to the topic: ")
    assert "Retry-After 3600 s exceeds the policy's calls.maxRetryAfter (2 s)" in str(error)
    assert [status for _, status in tries(faults, since, "eventgrid.publish")] == [429]


def test_eventgrid_publish_503_is_retried_then_published(faults: Emulator) -> None:
    faults.fault(operation="eventgrid.publish", status=503, times=2)
    since = last_seq(faults)
    assert len(publish_events({"events": lifecycle_events(), "calls": FAST})["published"]) == 2
    assert [status for _, status in tries(faults, since, "eventgrid.publish")] == [503, 503, 200]


def test_eventgrid_publish_without_a_budget_uses_the_built_in_one(faults: Emulator) -> None:
    faults.fault(operation="eventgrid.publish", status=429, retry_after=61)  # over the built-in 60 s
    error, elapsed = raised(publish_events, {"events": lifecycle_events()})
    assert "calls.maxRetryAfter (60 s)" in str(error) and elapsed < 5


def test_a_bad_budget_in_a_publish_request_names_the_field(faults: Emulator) -> None:
    with pytest.raises(ValueError, match=r"calls\.retries: must be at most 10"):
        publish_events({"events": lifecycle_events(), "calls": {"retries": 50}})


# -- Log Analytics ----------------------------------------------------------------------------------------


def count_request(target: Target) -> dict[str, Any]:
    return {
        **ref(target),
        "window": {"start": "2026-03-01T03:00:00Z", "end": "2026-03-01T04:00:00Z"},
        "baseline": {"start": "2026-03-01T02:00:00Z", "end": "2026-03-01T03:00:00Z"},
    }


def test_logs_query_429_retry_after_is_honoured(faults: Emulator) -> None:
    target = fast_target(faults, probe=False)
    faults.fault(operation="logs.query", status=429, retry_after=1.5)
    since = last_seq(faults)
    counted = count_auth_failures(count_request(target))
    assert counted["error"] is None and counted["failures"] == 0
    attempts = tries(faults, since, "logs.query")
    assert [status for _, status in attempts][:2] == [429, 200] and gap(attempts, 0, 1) >= 1.4


def test_logs_query_retry_after_over_the_cap_is_raised_for_the_step_retry(faults: Emulator) -> None:
    """Transient: the activity raises (QUERY step retries), never returns "0 failures" or a final error."""
    target = fast_target(faults, probe=False)
    faults.fault(operation="logs.query", status=429, retry_after=900, times=None)
    error, elapsed = raised(count_auth_failures, count_request(target))
    assert isinstance(error, SafeError) and elapsed < 5
    assert "Retry-After 900 s exceeds the policy's calls.maxRetryAfter (2 s)" in str(error)
    assert str(error).endswith(f"/v1/workspaces/{target.monitoring.workspace_id}/query]")  # names the request


# -- the probe (the target's data plane) ---------------------------------------------------------------


def test_probe_429_retry_after_is_honoured(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(operation="target.invoke", status=429, retry_after=2, match=target.function_app.name)
    since = last_seq(faults)
    result = provision(target, rid(target))
    assert result["accepted"] is True and result["probeAttempts"] == 2
    probes = tries(faults, since, "target.invoke")
    assert [status for _, status in probes] == [429, 200]
    assert gap(probes, 0, 1) >= 1.9  # Retry-After 2 s, longer than the probe's 1 s delay


def test_probe_retry_after_over_the_cap_stops_probing_and_stores_nothing(faults: Emulator) -> None:
    target = fast_target(faults)
    faults.fault(operation="target.invoke", status=429, retry_after=3600, times=None, match=target.function_app.name)
    since = last_seq(faults)
    error, elapsed = raised(provision_new_key, provision_request(target, rid(target)))
    assert elapsed < 5 and isinstance(error, SafeError)
    assert f"probe of {target.id} throttled: Retry-After 3600 s exceeds" in str(error)
    assert len(tries(faults, since, "target.invoke")) == 1
    assert versions(faults, target) == []  # a key the target gave no verdict on is never stored (I2)
    assert_no_values(faults, str(error))


def test_probe_of_an_unavailable_target_is_not_a_refusal(faults: Emulator) -> None:
    """5xx from the target: no verdict, so verify raises (the step retries) instead of rolling back."""
    target = fast_target(faults, attempts=2)
    rotation = rid(target)
    provisioned = provision(target, rotation)
    faults.fault(operation="target.invoke", status=503, times=None, match=target.function_app.name)
    request = {"rotationId": rotation, **ref(target), "version": provisioned["version"]}
    error, _ = raised(verify_new_key, request)
    assert "no verdict after 2 attempt(s)" in str(error) and "-> 503" in str(error)
    assert_no_values(faults, str(error))
    faults.clear_faults()
    assert verify_new_key(request)["verified"] is True  # the retried step succeeds once the host is back


def test_probe_latency_past_its_timeout_is_retried(faults: Emulator) -> None:
    target = fast_target(faults)
    assert target.probe is not None
    document = {**target.to_json(), "probe": {**target.to_json()["probe"], "timeout": "PT1S"}}
    target = parse_policy({"version": 1, "targets": [document]}, environ={}).targets[0]
    faults.fault(operation="target.invoke", latency_ms=2000, match=target.function_app.name)
    result = provision(target, rid(target))
    assert result["accepted"] is True and result["probeAttempts"] == 2
    assert json.loads(json.dumps(result)) == result
