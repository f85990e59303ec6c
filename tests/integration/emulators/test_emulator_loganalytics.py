"""Log Analytics emulator conformance with the unmodified LogsQueryClient (azure-monitor-query 2.0.0).

Clients come from the app's own factory (`activities.clients.logs_client`), so these tests also
cover how the product builds them (quirk 6: the token audience).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult, LogsQueryResult, LogsQueryStatus

from activities.clients import logs_client, secret_client
from emulators.core.local_identity import LocalTokenCredential
from tests.emulator_process import Emulator

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = (T0, T0 + timedelta(hours=1))
SITE = "/subscriptions/1f1e5c35-0000-4000-8000-000000000001/resourceGroups/rg-demo/providers/Microsoft.Web/sites/{}"


@pytest.fixture
def la(emulator: Emulator) -> Iterator[Emulator]:
    """A clean slate: no seeded telemetry, no fault rules."""
    emulator.control("DELETE", "telemetry").raise_for_status()
    emulator.clear_faults()
    yield emulator
    emulator.clear_faults()


@pytest.fixture
def client(la: Emulator) -> LogsQueryClient:
    return logs_client(la.settings())


def seed(emulator: Emulator, table: str, rows: list[dict[str, Any]], workspace: str | None = None) -> None:
    body: dict[str, Any] = {"table": table, "rows": rows}
    if workspace:
        body["workspaceId"] = workspace
    response = emulator.control("POST", "telemetry", json=body)
    assert response.status_code == 201, response.text


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def workspace(emulator: Emulator) -> str:
    return emulator.endpoints["workspaceId"]


def only_table(result: Any) -> Any:
    assert isinstance(result, LogsQueryResult), result
    (table,) = result.tables
    return table


def raw_query(emulator: Emulator, body: Any, token: str | None = "app", path: str | None = None) -> requests.Response:
    headers = {}
    if token:
        minted = LocalTokenCredential(str(uuid.uuid4()), token, endpoint=emulator.url).get_token(
            "https://api.loganalytics.io/.default"
        )
        headers["Authorization"] = f"Bearer {minted.token}"
    url = f"{emulator.url}/v1/{path or f'workspaces/{workspace(emulator)}/query'}"
    return requests.post(url, json=body, headers=headers, verify=emulator.ca, timeout=10)


# --------------------------------------------------------------------------- results


def test_counts_failures_inside_the_window_only(la: Emulator, client: LogsQueryClient) -> None:
    seed(
        la,
        "AppDependencies",
        [
            {"TimeGenerated": at(10), "Target": "myapp.azurewebsites.net", "ResultCode": "401", "Success": False},
            {"TimeGenerated": at(20), "Target": "myapp.azurewebsites.net:443", "ResultCode": "403"},
            {"TimeGenerated": at(30), "Target": "myapp.azurewebsites.net", "ResultCode": "200", "Success": True},
            {"TimeGenerated": at(40), "Target": "other.azurewebsites.net", "ResultCode": "401"},
            {"TimeGenerated": at(-1), "Target": "myapp.azurewebsites.net", "ResultCode": "401"},  # before
            {"TimeGenerated": at(61), "Target": "myapp.azurewebsites.net", "ResultCode": "401"},  # after
        ],
    )
    query = (
        "AppDependencies | where TimeGenerated between (datetime(2026-01-01T00:00:00Z) .. datetime(2026-01-02))"
        ' | where Target has "myapp.azurewebsites.net" and ResultCode in ("401", "403") | summarize Failures = count()'
    )
    table = only_table(client.query_workspace(workspace(la), query, timespan=HOUR))
    assert table.name == "PrimaryResult" and table.columns == ["Failures"] and table.columns_types == ["long"]
    assert [list(row) for row in table.rows] == [[2]]
    # a wider request window shows the row after the hour; the one before is outside the query's own `between`
    wide = only_table(
        client.query_workspace(workspace(la), query, timespan=(T0 - timedelta(hours=1), timedelta(hours=3)))
    )
    assert wide.rows[0]["Failures"] == 3


def test_rows_carry_la_column_types_and_datetimes_arrive_as_datetime(la: Emulator, client: LogsQueryClient) -> None:
    seed(
        la,
        "AppServiceHTTPLogs",
        [
            {"TimeGenerated": at(5), "CsHost": "MyApp.azurewebsites.net", "ScStatus": 401, "TimeTaken": 12},
            {"TimeGenerated": "2026-01-01T00:06:00.25Z", "CsHost": "myapp.azurewebsites.net", "ScStatus": 200},
        ],
    )
    table = only_table(
        client.query_workspace(
            workspace(la),
            'AppServiceHTTPLogs | where CsHost =~ "myapp.azurewebsites.net" | project TimeGenerated, CsHost, ScStatus,'
            " TimeTaken, Type | order by TimeGenerated asc",
            timespan=HOUR,
        )
    )
    assert table.columns_types == ["datetime", "string", "int", "int", "string"]
    first, second = table.rows
    assert first["TimeGenerated"] == T0 + timedelta(minutes=5) and isinstance(first["TimeGenerated"], datetime)
    assert second["TimeGenerated"] == T0 + timedelta(minutes=6, milliseconds=250)
    assert (first["ScStatus"], first["TimeTaken"], second["TimeTaken"]) == (401, 12, None)
    assert first["Type"] == "AppServiceHTTPLogs"
    failures = only_table(
        client.query_workspace(
            workspace(la),
            'AppServiceHTTPLogs | where CsHost =~ "myapp.azurewebsites.net" and ScStatus in (401, 403)'
            " | summarize Failures = count()",
            timespan=HOUR,
        )
    )
    assert failures.rows[0]["Failures"] == 1


def test_group_by_and_count_operator(la: Emulator, client: LogsQueryClient) -> None:
    seed(
        la,
        "AppRequests",
        [
            {"TimeGenerated": at(1), "AppRoleName": "target", "ResultCode": "401", "Success": True},
            {"TimeGenerated": at(2), "AppRoleName": "target", "ResultCode": "403", "Success": False},
            {"TimeGenerated": at(3), "AppRoleName": "target", "ResultCode": "200", "Success": True},
            {"TimeGenerated": at(4), "AppRoleName": "other", "ResultCode": "401", "Success": False},
        ],
    )
    count = only_table(
        client.query_workspace(
            workspace(la),
            'AppRequests | where AppRoleName == "target" and toint(ResultCode) in (401,403) | count',
            timespan=HOUR,
        )
    )
    assert count.columns == ["Count"] and count.rows[0]["Count"] == 2
    grouped = only_table(
        client.query_workspace(
            workspace(la),
            "AppRequests | summarize Requests = count(), Failures = countif(toint(ResultCode) >= 400) by AppRoleName"
            " | order by AppRoleName asc",
            timespan=HOUR,
        )
    )
    assert [list(row) for row in grouped.rows] == [["other", 1, 1], ["target", 3, 2]]


def test_timespan_forms(la: Emulator, client: LogsQueryClient) -> None:
    now = datetime.now(UTC)
    recent = (now - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    seed(la, "AppRequests", [{"TimeGenerated": recent, "Name": "recent"}, {"TimeGenerated": at(0), "Name": "old"}])

    def names(timespan: Any) -> list[str]:
        table = only_table(client.query_workspace(workspace(la), "AppRequests | project Name", timespan=timespan))
        return sorted(row["Name"] for row in table.rows)

    assert names(timedelta(hours=1)) == ["recent"]  # a bare duration ends now
    assert names((T0, timedelta(minutes=1))) == ["old"]  # start/duration
    assert names(None) == ["old", "recent"]  # no timespan: every row
    bad = raw_query(la, {"query": "AppRequests", "timespan": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "BadArgumentError"
    assert "timespan" in json.dumps(bad.json()["error"]["innererror"])


def test_query_resource_sees_that_resource_and_what_lies_beneath(la: Emulator, client: LogsQueryClient) -> None:
    other_workspace = str(uuid.uuid4())
    seed(la, "AppRequests", [{"TimeGenerated": at(1), "Name": "a", "_ResourceId": SITE.format("app-a").lower()}])
    seed(la, "AppRequests", [{"TimeGenerated": at(2), "Name": "b", "_ResourceId": SITE.format("app-b")}])
    seed(
        la,
        "AppRequests",
        [{"TimeGenerated": at(3), "Name": "a2", "_ResourceId": SITE.format("app-a")}],
        workspace=other_workspace,
    )

    def names(resource_id: str) -> list[str]:
        table = only_table(client.query_resource(resource_id, "AppRequests | project Name", timespan=HOUR))
        return sorted(row["Name"] for row in table.rows)

    assert names(SITE.format("APP-A").replace("resourceGroups", "RESOURCEGROUPS")) == ["a", "a2"]
    assert names(SITE.format("app-b")) == ["b"]
    assert names(SITE.format("app-a").split("/providers/")[0]) == ["a", "a2", "b"]  # the resource group
    assert names(SITE.format("app-c")) == []
    # the other workspace now exists and holds only its own rows
    table = only_table(client.query_workspace(other_workspace, "AppRequests | project Name", timespan=HOUR))
    assert [row["Name"] for row in table.rows] == ["a2"]


def test_statistics_when_preferred(la: Emulator, client: LogsQueryClient) -> None:
    seed(la, "AppRequests", [{"TimeGenerated": at(1)}])
    result = client.query_workspace(workspace(la), "AppRequests | count", timespan=HOUR, include_statistics=True)
    assert isinstance(result, LogsQueryResult) and result.statistics and "query" in result.statistics


# --------------------------------------------------------------------------- Key Vault audit


def _keyvault_available(emulator: Emulator) -> bool:
    probe = requests.get(f"{emulator.url}/secrets?api-version=2026-04-01", verify=emulator.ca, timeout=5)
    return probe.status_code == 401 and "WWW-Authenticate" in probe.headers


def test_key_vault_reads_appear_in_both_audit_tables(la: Emulator, client: LogsQueryClient) -> None:
    if not _keyvault_available(la):
        pytest.skip("the Key Vault emulator is not in this tree yet: no audit rows to read")
    from azure.keyvault.secrets import SecretClient

    cfg = la.settings()
    name = f"la-audit-{uuid.uuid4().hex[:8]}"
    value = f"secret-value-{uuid.uuid4().hex}"
    written = secret_client(la.url, cfg).set_secret(name, value)
    consumer_oid = str(uuid.uuid4())
    consumer = SecretClient(
        la.url,
        LocalTokenCredential(consumer_oid, "consumer-a", endpoint=la.url),
        verify_challenge_resource=False,
        connection_verify=la.ca,
    )
    for _ in range(2):
        assert consumer.get_secret(name).value == value
    consumer.get_secret(name, written.properties.version)
    window = (datetime.now(UTC) - timedelta(minutes=5), datetime.now(UTC) + timedelta(minutes=1))

    flat = only_table(
        client.query_workspace(
            workspace(la),
            'AzureDiagnostics | where ResourceProvider == "MICROSOFT.KEYVAULT" and OperationName == "SecretGet"'
            f' and id_s startswith "{la.url}/secrets/{name}/" and httpStatusCode_d == 200'
            " | summarize Reads = count() by identity_claim_oid_g,"
            " identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g",
            timespan=window,
        )
    )
    assert flat.columns_types == ["guid", "guid", "long"]
    assert [list(row) for row in flat.rows] == [[consumer_oid, consumer_oid, 3]]  # both claim columns

    specific = only_table(
        client.query_workspace(
            workspace(la),
            f'AZKVAuditLogs | where OperationName == "SecretGet" and Id == "{written.id}" and HttpStatusCode == 200'
            " | extend Caller = tostring(Identity.claim.oid),"
            ' Long = tostring(Identity.claim["http://schemas.microsoft.com/identity/claims/objectidentifier"])'
            " | distinct Caller, Long, Id",
            timespan=window,
        )
    )
    assert [list(row) for row in specific.rows] == [[consumer_oid, consumer_oid, written.id]]

    # the challenge round trips are audited too, as refused calls without a caller
    refused = only_table(
        client.query_resource(
            la.state()["loganalytics"]["keyVaultResourceId"].upper(),
            f'AzureDiagnostics | where id_s has "{name}" and httpStatusCode_d == 401 | count',
            timespan=window,
        )
    )
    assert refused.rows[0]["Count"] >= 1
    everything = client.query_workspace(workspace(la), "AzureDiagnostics | project requestUri_s, id_s", timespan=None)
    assert value not in json.dumps([list(row) for row in only_table(everything).rows])


# --------------------------------------------------------------------------- errors


def test_partial_error_fault_gives_a_partial_result(la: Emulator, client: LogsQueryClient) -> None:
    seed(la, "AppRequests", [{"TimeGenerated": at(1)}, {"TimeGenerated": at(2)}])
    la.fault(operation="logs.query", mode="partial")
    result = client.query_workspace(workspace(la), "AppRequests | count", timespan=HOUR)
    assert isinstance(result, LogsQueryPartialResult) and result.status == LogsQueryStatus.PARTIAL
    assert result.partial_error is not None and result.partial_error.code == "PartialError"
    assert result.partial_error.details and result.partial_error.details[0]["code"] == "EngineError"
    assert result.partial_data[0].rows[0]["Count"] == 2
    # the rule fired once; the next query is whole again
    assert isinstance(client.query_workspace(workspace(la), "AppRequests | count", timespan=HOUR), LogsQueryResult)


@pytest.mark.parametrize(
    ("query", "inner_code", "innermost", "says"),
    [
        ("AppRequests | join (AppDependencies) on OperationId", "UnsupportedQuery", "EMU0001", "'join'"),
        ("AppRequests | where ResultCode == 401", "SemanticError", "SEM0100", "string and long"),
        ("AppRequests | where Target has 'x'", "SemanticError", "SEM0100", "'Target'"),
        ("Heartbeat | count", "SemanticError", "SEM0100", "'Heartbeat'"),
        ("AppRequests | where Name ==", "SyntaxError", "SYN0002", "could not be parsed"),
    ],
)
def test_refused_queries_raise_bad_argument_400(
    la: Emulator, client: LogsQueryClient, query: str, inner_code: str, innermost: str, says: str
) -> None:
    with pytest.raises(HttpResponseError) as caught:
        client.query_workspace(workspace(la), query, timespan=HOUR)
    error = caught.value
    assert error.status_code == 400 and error.error is not None and error.error.code == "BadArgumentError"
    body = error.response.json()["error"]
    assert body["message"] == "The request had some invalid properties"
    assert body["innererror"]["code"] == inner_code and body["innererror"]["innererror"]["code"] == innermost
    assert says in body["innererror"]["innererror"]["message"]


def test_missing_query_is_a_bad_argument(la: Emulator) -> None:
    response = raw_query(la, {"timespan": None, "workspaces": None})
    assert response.status_code == 400 and response.json()["error"]["code"] == "BadArgumentError"
    assert "query" in json.dumps(response.json()["error"]["innererror"])


def test_wrong_audience_or_no_token_is_401(la: Emulator) -> None:
    wrong = LogsQueryClient(
        LocalTokenCredential(str(uuid.uuid4()), "app", endpoint=la.url),
        endpoint=la.url,
        audience="https://management.azure.com",
        connection_verify=la.ca,
    )
    with pytest.raises(HttpResponseError) as caught:  # the SDK re-raises every error as plain HttpResponseError
        wrong.query_workspace(workspace(la), "AppRequests | count", timespan=HOUR)
    assert caught.value.status_code == 401
    assert caught.value.response.json()["error"]["code"] == "InvalidTokenError"
    bare = raw_query(la, {"query": "AppRequests | count"}, token=None)
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "AuthorizationRequiredError"


def test_unknown_workspace_is_path_not_found(la: Emulator, client: LogsQueryClient) -> None:
    with pytest.raises(HttpResponseError) as caught:
        client.query_workspace(str(uuid.uuid4()), "AppRequests | count", timespan=HOUR)
    assert caught.value.status_code == 404
    assert caught.value.response.json()["error"]["code"] == "PathNotFoundError"
    assert raw_query(la, {"query": "AppRequests"}, path="workspaces/x/other").status_code == 404


def test_throttling_with_retry_after_is_retried_by_the_sdk(la: Emulator, client: LogsQueryClient) -> None:
    seed(la, "AppRequests", [{"TimeGenerated": at(1)}])
    since = la.requests_log()[-1]["seq"] if la.requests_log() else 0
    la.fault(operation="logs.query", status=429, retry_after=1, times=1)
    table = only_table(client.query_workspace(workspace(la), "AppRequests | count", timespan=HOUR))
    assert table.rows[0]["Count"] == 1
    calls = [r for r in la.requests_log(since) if r["operation"] == "logs.query"]
    assert [r["status"] for r in calls] == [429, 200]


# --------------------------------------------------------------------------- control routes


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"table": "Heartbeat", "rows": [{}]}, "table"),
        ({"table": "AppRequests", "rows": [{"Colour": "red"}]}, "Colour"),
        ({"table": "AppRequests", "rows": [{}, {"ResultCode": 401}]}, "rows[1].ResultCode"),
        ({"table": "AppServiceHTTPLogs", "rows": [{"ScStatus": "401"}]}, "ScStatus"),
        ({"table": "AppRequests", "rows": [{"Success": "yes"}]}, "Success"),
        ({"table": "AppRequests", "rows": [{"TimeGenerated": "2026-01-01T00:00:00"}]}, "TimeGenerated"),
        ({"table": "AppRequests", "rows": [{"Type": "AppDependencies"}]}, "Type"),
        ({"table": "AppRequests", "rows": []}, "rows"),
        ({"table": "AppRequests", "workspaceId": "not-a-guid", "rows": [{}]}, "workspaceId"),
    ],
)
def test_seeding_validates_with_the_field_named(la: Emulator, body: dict[str, Any], names: str) -> None:
    response = la.control("POST", "telemetry", json=body)
    assert response.status_code == 400 and names in response.json()["error"]["message"]
    assert la.state()["loganalytics"]["rows"] == {}  # nothing stored


def test_seeding_is_journaled_without_values_and_can_be_cleared(la: Emulator, client: LogsQueryClient) -> None:
    since = max((c["seq"] for c in la.control("GET", "changes").json()["value"]), default=0)
    seed(la, "AppRequests", [{"TimeGenerated": at(1), "Url": "https://x/api/f?code=very-secret-key"}])
    (change,) = la.control("GET", f"changes?since={since}").json()["value"]
    assert change["kind"] == "logs.telemetry_seeded" and change["detail"]["rows"] == 1
    assert "very-secret-key" not in json.dumps(change)
    stored = la.state()["loganalytics"]["rows"][workspace(la)]["AppRequests"][0]
    assert stored["Url"].endswith("very-secret-key") and stored["Name"] == "" and stored["Success"] is None
    assert la.control("DELETE", "telemetry?table=AppRequests").json() == {"deleted": 1}
    table = only_table(client.query_workspace(workspace(la), "AppRequests | count", timespan=None))
    assert table.rows[0]["Count"] == 0
