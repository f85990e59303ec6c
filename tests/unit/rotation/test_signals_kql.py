"""Every KQL query the product can send: valid under a real KQL grammar, accepted by the emulator's engine,
counting the rows an operator would expect, and documented verbatim in docs/architecture.md.

In-process (no emulator): tests/integration/emulators/test_activities_telemetry.py
sends the same queries to the emulator.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from emulators.loganalytics.kql_engine import compile_query
from emulators.loganalytics.kql_syntax import parse
from emulators.loganalytics.telemetry_tables import TABLES
from rotation import signals
from rotation.policy import Target, parse_target
from rotation.signals import SignalError, adoption_query, failure_query
from tests.unit.emulators.test_kql import NOW, kql_grammar_errors, run

ROOT = Path(__file__).resolve().parents[3]
WORKSPACE = "6c1f0a2e-3d4b-4f5a-9b8c-7d6e5f4a3b2c"
SITE = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-demo/providers/Microsoft.Web/sites/{}"
VAULT = "https://kv-demo.vault.azure.net"
CUSTOM_KQL = (
    'AppDependencies | where Target has "{hostName}" and ResultCode == "401" and Name has "{functionName}"'
    ' | extend Meta = parse_json(\'{"app": "{appName}"}\') | summarize failures = countif(AppRoleName != "{targetId}")'
)


def sample_target_json(
    signal: str = "consumer-dependencies",
    *,
    app: str = "Orders-App",
    target_id: str = "orders-api",
    vault_url: str = VAULT,
    secret_name: str = "orders-key",
    scope: dict[str, Any] | None = None,
    slot: str | None = None,
    query: str | None = None,
    workspace_id: str | None = WORKSPACE,
    resource_id: str | None = None,
    consumers: list[dict[str, str]] | None = None,
    audit_table: str | None = None,
) -> dict[str, Any]:
    """A target in policy JSON form (what the orchestrator passes as `target`)."""
    monitoring: dict[str, Any] = {"signal": signal}
    monitoring.update({"workspaceId": workspace_id} if workspace_id else {"resourceId": resource_id})
    if query is not None:
        monitoring["query"] = query
    data: dict[str, Any] = {
        "id": target_id,
        "functionApp": SITE.format(app),
        "keyScope": scope or {"kind": "host"},
        "baseKeyName": "orders",
        "keyVault": {"vaultUrl": vault_url, "secretName": secret_name},
        "monitoring": monitoring,
        "consumers": consumers or [],
    }
    if slot:
        data["slot"] = slot
    if audit_table:
        data["keyVault"]["auditTable"] = audit_table
    return parse_target(data).to_json()


def sample(signal: str = "consumer-dependencies", **kwargs: Any) -> Target:
    return parse_target(sample_target_json(signal, **kwargs))


def every_query() -> list[tuple[str, str]]:
    """(label, KQL) of every query shape the product sends, rendered for sample targets."""
    out = []
    for signal in signals.PRESETS:
        out.append((signal, failure_query(sample(signal)).text))
        out.append((f"{signal} slot", failure_query(sample(signal, slot="staging")).text))
        out.append(
            (f"{signal} function", failure_query(sample(signal, scope={"kind": "function", "function": "Ship"})).text)
        )
    out.append(("kql", failure_query(sample("kql", query=CUSTOM_KQL)).text))
    for table in signals.AUDIT_TABLES:
        out.append((f"adoption {table}", adoption_query(f"{VAULT}/secrets/orders-key/{'0a' * 16}", table)))
    out.append(("adoption local", adoption_query(f"https://127.0.0.1:8443/secrets/orders-key/{'f' * 32}")))
    return out


@pytest.mark.parametrize(("label", "query"), every_query(), ids=[label for label, _ in every_query()])
def test_every_query_is_valid_kql_and_the_emulator_accepts_it(label: str, query: str) -> None:
    assert kql_grammar_errors(query) == [], query
    parsed = parse(query)
    schema, _ = compile_query(parsed, dict(TABLES[parsed.table]), NOW)
    assert "{" not in query.replace('{"app"', ""), f"unrendered placeholder in {label}"
    assert not re.search(r"\bago\(|\bnow\(|TimeGenerated", query), "the window travels as the timespan"
    if label.startswith("adoption"):
        assert list(schema) == [signals.READER_COLUMN]
    else:
        assert list(schema) == [signals.FAILURES_COLUMN] and schema[signals.FAILURES_COLUMN] in ("long", "int")


def test_presets_are_filled_from_the_target() -> None:
    assert 'Target has "orders-app.azurewebsites.net"' in failure_query(sample()).text
    assert (
        'CsHost =~ "orders-app-staging.azurewebsites.net"'
        in failure_query(sample("target-http-logs", slot="staging")).text
    )
    assert 'AppRoleName =~ "Orders-App"' in failure_query(sample("target-requests")).text
    # ARM's defaultHostName, when the caller knows it, wins (lower-cased)
    custom = failure_query(sample(), host_name="Orders-App-a1b2.EastUS-01.azurewebsites.net")
    assert 'Target has "orders-app-a1b2.eastus-01.azurewebsites.net"' in custom.text
    assert custom.signal == "consumer-dependencies"
    rendered = failure_query(sample("kql", query=CUSTOM_KQL, scope={"kind": "function", "function": "Ship"}))
    assert rendered.signal == "kql"
    assert 'Name has "Ship"' in rendered.text and '{"app": "Orders-App"}' in rendered.text
    assert 'AppRoleName != "orders-api"' in rendered.text


def test_values_that_would_break_out_of_a_literal_are_refused() -> None:
    for bad in ('x" or 1 == 1 or "', "a b", "a\\b", "a\nb"):
        with pytest.raises(SignalError, match="hostName"):
            failure_query(sample(), host_name=bad)


@pytest.mark.parametrize(
    "secret_id",
    [
        f"{VAULT}/secrets/orders-key",  # unversioned: a read of any version would count
        f"{VAULT}/secrets/orders-key/",
        f"{VAULT}/secrets/orders-key/latest",
        f'{VAULT}/secrets/orders-key/{"0" * 31}" or "1',
        f"http://kv-demo.vault.azure.net/secrets/orders-key/{'0' * 32}",
    ],
)
def test_adoption_needs_a_versioned_secret_id(secret_id: str) -> None:
    with pytest.raises(SignalError, match="secretId"):
        adoption_query(secret_id)


def _row(**values: Any) -> dict[str, Any]:
    return values


def test_consumer_dependencies_counts_refusals_of_this_host_only() -> None:
    query = failure_query(sample()).text
    rows = [
        _row(Target="orders-app.azurewebsites.net", ResultCode="401"),
        _row(Target="orders-app.azurewebsites.net:443", ResultCode="403"),  # port: still this host
        _row(Target="ORDERS-APP.azurewebsites.net", ResultCode="401"),  # has ignores case
        _row(Target="orders-app.azurewebsites.net", ResultCode="200"),
        _row(Target="orders-app.azurewebsites.net", ResultCode="500"),
        _row(Target="notorders-app.azurewebsites.net", ResultCode="401"),  # another app
        _row(Target="orders-app-staging.azurewebsites.net", ResultCode="401"),  # its slot
    ]
    assert run(query, rows) == [{"failures": 3}]
    assert run(query, []) == [{"failures": 0}]  # nothing in the window is an answer: zero


def test_target_http_logs_counts_front_end_refusals_of_this_host() -> None:
    query = failure_query(sample("target-http-logs")).text
    rows = [
        _row(CsHost="orders-app.azurewebsites.net", ScStatus=401),
        _row(CsHost="Orders-App.azurewebsites.net", ScStatus=403),
        _row(CsHost="orders-app.azurewebsites.net", ScStatus=404),
        _row(CsHost="orders-app.azurewebsites.net", ScStatus=200),
        _row(CsHost="other.azurewebsites.net", ScStatus=401),
    ]
    assert run(query, rows) == [{"failures": 2}]


def test_target_requests_counts_result_codes_not_success() -> None:
    query = failure_query(sample("target-requests")).text
    rows = [
        _row(AppRoleName="Orders-App", ResultCode="401", Success=True),  # function code's 401 logged as success
        _row(AppRoleName="orders-app", ResultCode="403", Success=False),
        _row(AppRoleName="orders-app", ResultCode="200", Success=True),
        _row(AppRoleName="orders-app-2", ResultCode="401", Success=False),
    ]
    assert run(query, rows) == [{"failures": 2}]


OBJECTIDENTIFIER = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def audit_row(table: str, claim: str, secret_id: str, oid: str, status: int = 200, operation: str = "SecretGet") -> Any:
    """A Key Vault audit row as each table holds it, naming the caller by one claim form only."""
    if table == "AZKVAuditLogs":
        key = "oid" if claim == "oid" else OBJECTIDENTIFIER
        return {
            "OperationName": operation,
            "HttpStatusCode": status,
            "Id": secret_id,
            "Identity": {"claim": {key: oid}},
        }
    column = "identity_claim_oid_g" if claim == "oid" else signals.DIAGNOSTICS_OBJECTIDENTIFIER
    return {
        "ResourceProvider": "MICROSOFT.KEYVAULT",
        "OperationName": operation,
        "httpStatusCode_d": float(status),
        "id_s": secret_id,
        column: oid,
    }


@pytest.mark.parametrize("claim", ["oid", "objectidentifier"])
@pytest.mark.parametrize("table", signals.AUDIT_TABLES)
def test_adoption_finds_distinct_successful_readers_of_that_version(table: str, claim: str) -> None:
    version = "ab" * 16
    secret_id = f"{VAULT}/secrets/orders-key/{version}"
    query = adoption_query(secret_id, table)
    a, b, c, d = (f"00000000-0000-0000-0000-00000000000{n}" for n in range(1, 5))
    rows = [
        audit_row(table, claim, secret_id, a),
        audit_row(table, claim, secret_id, a),  # read twice: one reader
        audit_row(table, claim, secret_id.upper().replace("HTTPS", "https"), b),  # case of the id
        audit_row(table, claim, f"{VAULT}/secrets/orders-key/{'cd' * 16}", c),  # another version
        audit_row(table, claim, secret_id, d, status=403),  # refused
        audit_row(table, claim, secret_id, d, operation="SecretSet"),
    ]
    assert sorted(r[signals.READER_COLUMN] for r in run(query, rows)) == [a, b]


def test_adoption_reads_either_claim_form_in_one_table() -> None:
    secret_id = f"{VAULT}/secrets/orders-key/{'ab' * 16}"
    a, b = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
    for table in signals.AUDIT_TABLES:
        rows = [audit_row(table, "oid", secret_id, a), audit_row(table, "objectidentifier", secret_id, b)]
        assert sorted(r[signals.READER_COLUMN] for r in run(adoption_query(secret_id, table), rows)) == [a, b], table


def test_adoption_over_azure_diagnostics_runs_where_a_claim_column_never_existed() -> None:
    """In AzureDiagnostics a column exists only once a resource filled it: a workspace whose vault only ever
    wrote the long claim form has no identity_claim_oid_g, and the query must still run."""
    secret_id = f"{VAULT}/secrets/orders-key/{'ab' * 16}"
    schema = {k: v for k, v in TABLES["AzureDiagnostics"].items() if k != "identity_claim_oid_g"}
    parsed = parse(adoption_query(secret_id, "AzureDiagnostics"))
    out_schema, _ = compile_query(parsed, schema, NOW)
    assert signals.READER_COLUMN in out_schema
    with pytest.raises(SignalError, match="auditTable"):
        adoption_query(secret_id, "AppRequests")


def _documented_blocks() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## Monitoring signals") :]
    following = re.search(r"\n## ", section[3:])
    if following:
        section = section[: following.start() + 3]
    return re.findall(r"```kql\n(.*?)\n```", section, re.DOTALL)


def test_docs_show_the_exact_query_text() -> None:
    documented = _documented_blocks()
    assert documented == [*signals.PRESETS.values(), *signals.ADOPTION.values()]
    for block in documented:  # as documented, with placeholders filled, each is valid KQL
        filled = block.replace("{hostName}", "myapp.azurewebsites.net").replace("{appName}", "myapp")
        assert kql_grammar_errors(filled.replace("{secretId}", f"{VAULT}/secrets/s/{'0' * 32}")) == []
