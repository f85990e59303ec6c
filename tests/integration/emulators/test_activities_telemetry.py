"""Activities count_auth_failures and check_adoption against the Log Analytics and Key Vault emulators,
through the app's own client factory and the unmodified SDK clients.

Failure counts come from seeded telemetry over explicit windows; adoption comes from real SecretClient
reads by distinct identities, which the Key Vault emulator audits into AzureDiagnostics.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.secrets import SecretClient

from activities import clients
from activities.clients import secret_client
from activities.telemetry import check_adoption, count_auth_failures
from emulators.core.local_identity import LocalTokenCredential
from rotation.durations import format_timestamp
from rotation.redaction import SafeError
from tests.deployed_policy import deploy
from tests.emulator_process import Emulator
from tests.unit.rotation.test_signals_kql import SITE, audit_row, sample_target_json

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOST = "orders-app.azurewebsites.net"
# The orchestrator's windows: a baseline ending when the rotation started, an overlap starting later.
BASELINE = (T0 - timedelta(hours=1), T0)
WINDOW = (T0 + timedelta(minutes=10), T0 + timedelta(hours=1, minutes=10))


def iso(at: datetime) -> str:
    return format_timestamp(at)


def span(window: tuple[datetime, datetime]) -> dict[str, str]:
    return {"start": iso(window[0]), "end": iso(window[1])}


@pytest.fixture
def app(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Emulator]:
    """The app's settings pointing at the emulator; no seeded telemetry, no fault rules."""
    emulator.control("DELETE", "telemetry").raise_for_status()
    emulator.clear_faults()
    for name, value in {**emulator.app_settings(), "ROTATION_POLICY_PATH": str(tmp_path / "policy.json")}.items():
        monkeypatch.setenv(name, value)
    clients.settings.cache_clear()
    yield emulator
    emulator.clear_faults()
    clients.settings.cache_clear()


def seed(emulator: Emulator, table: str, rows: list[dict[str, Any]]) -> None:
    response = emulator.control("POST", "telemetry", json={"table": table, "rows": rows})
    assert response.status_code == 201, response.text


def workspace(emulator: Emulator) -> str:
    return emulator.endpoints["workspaceId"]


def failure_rows(signal: str, at: datetime, *, ok: bool = False, host: str = HOST) -> tuple[str, dict[str, Any]]:
    """One request to `host` at `at` as the signal's table records it: refused (401) unless ok."""
    stamp = iso(at)
    if signal == "target-http-logs":
        return "AppServiceHTTPLogs", {"TimeGenerated": stamp, "CsHost": host, "ScStatus": 200 if ok else 401}
    if signal == "target-requests":
        role = host.split(".")[0].replace("orders-app", "Orders-App")
        return "AppRequests", {"TimeGenerated": stamp, "AppRoleName": role, "ResultCode": "200" if ok else "401"}
    return "AppDependencies", {"TimeGenerated": stamp, "Target": f"{host}:443", "ResultCode": "200" if ok else "401"}


def seed_scenario(emulator: Emulator, signal: str) -> None:
    """Window: 3 refusals (one exactly at its end), 1 success, 1 refusal of another app.
    Baseline: 1 refusal. Outside both: 3 refusals (between them, just after the window, long before)."""
    minutes = [15, 40, 70]  # 70 = the window's end: both ends are inclusive
    rows = [failure_rows(signal, T0 + timedelta(minutes=m)) for m in minutes]
    rows.append(failure_rows(signal, T0 + timedelta(minutes=20), ok=True))
    rows.append(failure_rows(signal, T0 + timedelta(minutes=25), host="other-app.azurewebsites.net"))
    rows.append(failure_rows(signal, T0 - timedelta(minutes=30)))
    rows += [failure_rows(signal, T0 + timedelta(minutes=m)) for m in (5, 71)]
    rows.append(failure_rows(signal, T0 - timedelta(days=2)))
    by_table: dict[str, list[dict[str, Any]]] = {}
    for table, row in rows:
        by_table.setdefault(table, []).append(row)
    for table, table_rows in by_table.items():
        seed(emulator, table, table_rows)


def request_for(target: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**deploy(target), "window": span(WINDOW), "baseline": span(BASELINE), **extra}


# --------------------------------------------------------------------------- count_auth_failures


@pytest.mark.parametrize("signal", ["consumer-dependencies", "target-http-logs", "target-requests"])
def test_presets_count_the_window_and_the_baseline_only(app: Emulator, signal: str) -> None:
    seed_scenario(app, signal)
    target = sample_target_json(signal, workspace_id=workspace(app))
    result = count_auth_failures(request_for(target))
    assert result == {"signal": signal, "failures": 3, "baseline": 1, "error": None}
    assert count_auth_failures(request_for(target)) == result  # a re-run counts the same rows


def test_a_kql_template_is_rendered_for_the_target(app: Emulator) -> None:
    seed_scenario(app, "consumer-dependencies")
    query = 'AppDependencies | where Target has "{hostName}" and ResultCode == "401" | summarize failures = count()'
    target = sample_target_json("kql", workspace_id=workspace(app), query=query)
    assert count_auth_failures(request_for(target)) == {"signal": "kql", "failures": 3, "baseline": 1, "error": None}


def test_the_host_name_from_arm_replaces_the_default(app: Emulator) -> None:
    unique = "orders-app-a1b2c3.eastus-01.azurewebsites.net"
    seed(
        app,
        "AppServiceHTTPLogs",
        [{"TimeGenerated": iso(T0 + timedelta(minutes=30)), "CsHost": unique, "ScStatus": 403}],
    )
    target = sample_target_json("target-http-logs", workspace_id=workspace(app))
    assert count_auth_failures(request_for(target))["failures"] == 0
    assert count_auth_failures(request_for(target, hostName=unique))["failures"] == 1


def test_a_resource_id_sends_a_resource_context_query(app: Emulator) -> None:
    site = SITE.format("Orders-App")
    at = iso(T0 + timedelta(minutes=30))
    seed(
        app,
        "AppServiceHTTPLogs",
        [
            {"TimeGenerated": at, "CsHost": HOST, "ScStatus": 401, "_ResourceId": site.lower()},
            {"TimeGenerated": at, "CsHost": HOST, "ScStatus": 401, "_ResourceId": SITE.format("elsewhere")},
        ],
    )
    since = app.requests_log()[-1]["seq"]
    target = sample_target_json("target-http-logs", workspace_id=None, resource_id=site)
    assert count_auth_failures(request_for(target))["failures"] == 1
    paths = [r["path"] for r in app.requests_log(since) if r["operation"] == "logs.query"]
    assert paths and all(p.lower() == f"/v1{site.lower()}/query" for p in paths)


def test_a_partial_result_is_an_error_with_null_counts(app: Emulator) -> None:
    seed_scenario(app, "consumer-dependencies")
    app.fault(operation="logs.query", mode="partial", times=1)
    result = count_auth_failures(request_for(sample_target_json(workspace_id=workspace(app))))
    assert result["failures"] is None and result["baseline"] is None
    assert result["error"] and "partial" in result["error"].lower() and "PartialError" in result["error"]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("AppRequests | where ResultCode == 401 | summarize failures = count()", "BadArgumentError"),  # refused
        ("AppRequests | count", "no column 'failures'"),  # runs, but the contract's column is missing
        ('AppRequests | where Name == "x" | summarize failures = count() by Name', "no rows"),  # not zero
    ],
)
def test_an_unusable_query_is_an_error_not_zero(app: Emulator, query: str, says: str) -> None:
    target = sample_target_json("kql", workspace_id=workspace(app), query=query)
    result = count_auth_failures(request_for(target))
    assert result == {"signal": "kql", "failures": None, "baseline": None, "error": result["error"]}
    assert says in result["error"]


def test_an_unknown_workspace_is_an_error(app: Emulator) -> None:
    result = count_auth_failures(request_for(sample_target_json(workspace_id=str(uuid.uuid4()))))
    assert result["failures"] is None and "404" in result["error"]


def test_a_server_error_after_the_sdk_retries_raises(app: Emulator) -> None:
    """Transient: raise, so the orchestrator's retry policy runs the activity again."""
    since = app.requests_log()[-1]["seq"]
    body = {"error": {"code": "ServiceError", "message": "boom", "details": [{"query": "x?code=leaky"}]}}
    app.fault(operation="logs.query", status=500, retry_after=0.05, times=None, body=body)
    with pytest.raises(SafeError) as caught:
        count_auth_failures(request_for(sample_target_json(workspace_id=workspace(app))))
    assert caught.value.status_code == 500 and caught.value.__cause__ is None
    assert "leaky" not in str(caught.value)
    calls = [r["status"] for r in app.requests_log(since) if r["operation"] == "logs.query"]
    assert calls == [500, 500, 500, 500]  # the SDK's three retries came first


def test_throttling_the_sdk_outlasts_is_not_an_error(app: Emulator) -> None:
    seed_scenario(app, "consumer-dependencies")
    app.fault(operation="logs.query", status=429, retry_after=0.05, times=2)
    result = count_auth_failures(request_for(sample_target_json(workspace_id=workspace(app))))
    assert (result["failures"], result["baseline"], result["error"]) == (3, 1, None)


def test_bad_windows_are_refused(app: Emulator) -> None:
    target = sample_target_json()
    with pytest.raises(ValueError, match="window: start must be before end"):
        count_auth_failures({**deploy(target), "window": span((T0, T0)), "baseline": span(BASELINE)})
    with pytest.raises(ValueError, match=r"baseline\.end"):
        count_auth_failures({**deploy(target), "window": span(WINDOW), "baseline": {"start": iso(T0), "end": "now"}})


# --------------------------------------------------------------------------- check_adoption

CONSUMER_A = "00000000-0000-0000-0000-00000000ad01"  # reads the new version
CONSUMER_B = "00000000-0000-0000-0000-00000000ad02"  # reads the old version
CONSUMER_C = "00000000-0000-0000-0000-00000000ad03"  # reads nothing
STRANGER = "00000000-0000-0000-0000-00000000ad99"  # reads the new version, but is not a consumer


def consumer_client(emulator: Emulator, object_id: str) -> SecretClient:
    credential = LocalTokenCredential(object_id, f"consumer-{object_id[-4:]}", endpoint=emulator.url)
    return SecretClient(emulator.url, credential, verify_challenge_resource=False, connection_verify=emulator.ca)


@pytest.fixture
def adoption(app: Emulator) -> dict[str, Any]:
    """A target with three consumers; two versions of its secret; real reads by each identity."""
    name = f"adopt-{uuid.uuid4().hex[:10]}"
    target = sample_target_json(
        vault_url=app.url,
        secret_name=name,
        workspace_id=workspace(app),
        consumers=[
            {"name": "billing", "objectId": CONSUMER_A.upper()},  # policies may spell object ids in upper case
            {"name": "shipping", "objectId": CONSUMER_B},
            {"name": "finance", "objectId": CONSUMER_C},
        ],
    )
    kv = secret_client(app.url)
    old = kv.set_secret(name, f"old-{uuid.uuid4().hex}")
    new = kv.set_secret(name, f"new-{uuid.uuid4().hex}")
    before = datetime.now(UTC) - timedelta(seconds=1)
    kv.get_secret(name, new.properties.version)  # the app's own verify read: not a consumer
    consumer_client(app, CONSUMER_A).get_secret(name, new.properties.version)
    consumer_client(app, CONSUMER_B).get_secret(name, old.properties.version)
    consumer_client(app, STRANGER).get_secret(name, new.properties.version)
    after = datetime.now(UTC) + timedelta(seconds=1)
    return {"target": target, "new": new.id, "old": old.id, "since": iso(before), "until": iso(after)}


def adoption_request(case: dict[str, Any], secret_id: str | None = None, **window: str) -> dict[str, Any]:
    return {
        **deploy(case["target"]),
        "secretId": secret_id or case["new"],
        "since": window.get("since", case["since"]),
        "until": window.get("until", case["until"]),
    }


def test_readers_are_the_consumers_that_read_that_exact_version(app: Emulator, adoption: dict[str, Any]) -> None:
    result = check_adoption(adoption_request(adoption))
    assert result == {"readers": [CONSUMER_A], "error": None}
    assert check_adoption(adoption_request(adoption)) == result  # a re-run gives the same answer
    assert check_adoption(adoption_request(adoption, adoption["old"])) == {"readers": [CONSUMER_B], "error": None}


@pytest.mark.parametrize("table", ["AZKVAuditLogs", "AzureDiagnostics"])
def test_either_audit_table_shows_the_same_readers(app: Emulator, adoption: dict[str, Any], table: str) -> None:
    """The emulated vault's audit reaches both tables; keyVault.auditTable says which one is read."""
    case = {**adoption, "target": {**adoption["target"], "keyVault": {**adoption["target"]["keyVault"]}}}
    case["target"]["keyVault"]["auditTable"] = table
    assert check_adoption(adoption_request(case)) == {"readers": [CONSUMER_A], "error": None}


SEEDED_VAULT = "https://kv-keyrotation-prod.vault.azure.net"


def seeded_read(table: str, claim: str, secret_id: str, oid: str, at: datetime) -> dict[str, Any]:
    """A successful SecretGet as Key Vault writes it on Azure, naming the caller by one claim form only."""
    row = audit_row(table, claim, secret_id, oid)
    return {**row, "TimeGenerated": iso(at), **({"ResultSignature": "OK"} if table == "AZKVAuditLogs" else {})}


@pytest.mark.parametrize("claim", ["oid", "objectidentifier"])
@pytest.mark.parametrize("table", ["AZKVAuditLogs", "AzureDiagnostics"])
def test_adoption_is_observed_from_a_seeded_audit_row(app: Emulator, table: str, claim: str) -> None:
    """Rows shaped as Azure writes them, in either table and either claim form: the consumer is seen."""
    name = f"seeded-{uuid.uuid4().hex[:10]}"
    target = sample_target_json(
        vault_url=SEEDED_VAULT,
        secret_name=name,
        workspace_id=workspace(app),
        consumers=[{"name": "billing", "objectId": CONSUMER_A}, {"name": "shipping", "objectId": CONSUMER_B}],
        audit_table=table,
    )
    new, old = f"{SEEDED_VAULT}/secrets/{name}/{'ab' * 16}", f"{SEEDED_VAULT}/secrets/{name}/{'cd' * 16}"
    at = T0 + timedelta(minutes=5)
    seed(app, table, [seeded_read(table, claim, new, CONSUMER_A, at), seeded_read(table, claim, old, CONSUMER_B, at)])
    other = "AzureDiagnostics" if table == "AZKVAuditLogs" else "AZKVAuditLogs"
    seed(app, other, [seeded_read(other, claim, new, CONSUMER_B, at)])  # the table the vault does not write
    request = {**deploy(target), "secretId": new, "since": iso(T0), "until": iso(T0 + timedelta(minutes=10))}
    assert check_adoption(request) == {"readers": [CONSUMER_A], "error": None}


def test_reads_outside_the_window_do_not_count(app: Emulator, adoption: dict[str, Any]) -> None:
    earlier = datetime.now(UTC) - timedelta(hours=1)
    window = {"since": iso(earlier), "until": iso(earlier + timedelta(minutes=30))}
    assert check_adoption(adoption_request(adoption, **window)) == {"readers": [], "error": None}


def test_a_partial_audit_result_keeps_the_readers_it_saw(app: Emulator, adoption: dict[str, Any]) -> None:
    app.fault(operation="logs.query", mode="partial", times=1)
    result = check_adoption(adoption_request(adoption))
    assert result["readers"] == [CONSUMER_A] and "PartialError" in result["error"]


def test_the_audit_is_read_from_the_target_workspace_without_the_app_setting(
    app: Emulator, adoption: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOG_ANALYTICS_WORKSPACE_ID")
    clients.settings.cache_clear()
    assert check_adoption(adoption_request(adoption))["readers"] == [CONSUMER_A]
    no_workspace = {**adoption, "target": {**adoption["target"]}}
    monitoring = {k: v for k, v in adoption["target"]["monitoring"].items() if k != "workspaceId"}
    no_workspace["target"]["monitoring"] = {**monitoring, "resourceId": SITE.format("Orders-App")}
    result = check_adoption(adoption_request(no_workspace))
    assert result["readers"] == [] and "LOG_ANALYTICS_WORKSPACE_ID" in result["error"]


def test_a_secret_id_of_another_secret_or_unversioned_is_refused(app: Emulator, adoption: dict[str, Any]) -> None:
    other = adoption["new"].replace("/secrets/adopt-", "/secrets/other-")
    with pytest.raises(ValueError, match="secretId"):
        check_adoption(adoption_request(adoption, other))
    with pytest.raises(ValueError, match="secretId"):
        check_adoption(adoption_request(adoption, adoption["new"].rsplit("/", 1)[0]))


def test_an_audit_query_failing_after_retries_raises(app: Emulator, adoption: dict[str, Any]) -> None:
    app.fault(operation="logs.query", status=503, retry_after=0.05, times=None)
    with pytest.raises(SafeError) as caught:
        check_adoption(adoption_request(adoption))
    assert caught.value.status_code == 503
