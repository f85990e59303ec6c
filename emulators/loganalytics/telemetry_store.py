"""Where Log Analytics rows come from: seeded telemetry in SQLite, and the Key Vault audit log.

Seeded rows are stored whole (JSON) per workspace and table. Key Vault audit rows are not copied:
the Key Vault emulator appends to `keyvault_audit` and they are mapped into `AzureDiagnostics` and
`AZKVAuditLogs` at query time, so a read is visible to the very next query (real ingestion lags
minutes; callers must not depend on either).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from emulators.core.store import Store, fingerprint, iso, utcnow
from emulators.keyvault.audit import SCHEMA as KEYVAULT_AUDIT_SCHEMA
from emulators.loganalytics.telemetry_tables import DATETIME, KEYVAULT_AUDIT_TABLES, TABLES, parse_datetime

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs_workspaces (workspace_id TEXT PRIMARY KEY, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS logs_rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT, workspace_id TEXT NOT NULL, table_name TEXT NOT NULL,
    time_key TEXT NOT NULL, resource_id TEXT NOT NULL, row_json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS logs_rows_scope ON logs_rows(table_name, workspace_id, time_key);
"""

# The emulated vault's ARM id: its diagnostic setting sends audit events to the default workspace.
KEYVAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
KEYVAULT_RESOURCE_GROUP = "emulator"
KEYVAULT_NAME = "emulator-vault"
KEYVAULT_RESOURCE_ID = (
    f"/subscriptions/{KEYVAULT_SUBSCRIPTION}/resourceGroups/{KEYVAULT_RESOURCE_GROUP}"
    f"/providers/Microsoft.KeyVault/vaults/{KEYVAULT_NAME}"
)
_CORRELATION_NAMESPACE = uuid.UUID("6f1c3e38-5a35-4a4b-9d7e-6a0d3c1b2f10")

Row = dict[str, Any]


def time_key(value: datetime) -> str:
    """Fixed-width UTC text, so SQLite compares instants correctly."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Scope:
    """Which rows a query sees: whole workspaces, or one resource (and what lies beneath it) anywhere."""

    workspaces: tuple[str, ...] = ()
    resource_id: str | None = None  # lower-case; set for query_resource

    def sees_resource(self, resource_id: str) -> bool:
        if self.resource_id is None:
            return True
        rid = resource_id.lower()
        return rid == self.resource_id or rid.startswith(self.resource_id + "/")


@dataclass(frozen=True)
class Window:
    """The request's timespan: both ends inclusive, as Kusto's datetime scope applies it."""

    start: datetime | None = None
    end: datetime | None = None

    def contains(self, value: datetime | None) -> bool:
        if self.start is None and self.end is None:
            return True
        if value is None:
            return False
        return (self.start is None or value >= self.start) and (self.end is None or value <= self.end)


def from_stored(table: str, stored: Row) -> Row:
    """A stored (JSON) row as the engine's values: datetimes parsed."""
    row = dict(stored)
    for name, kind in TABLES[table].items():
        if kind == DATETIME and isinstance(row.get(name), str):
            row[name] = parse_datetime(row[name])
    return row


class TelemetryStore:
    def __init__(self, store: Store, default_workspace: str) -> None:
        self.store = store
        self.default_workspace = default_workspace
        store.ensure_schema(SCHEMA)
        store.ensure_schema(KEYVAULT_AUDIT_SCHEMA)  # whichever emulator registers first creates it
        self.add_workspace(default_workspace)

    # workspaces -------------------------------------------------------------------
    def add_workspace(self, workspace_id: str) -> None:
        self.store.execute(
            "INSERT OR IGNORE INTO logs_workspaces(workspace_id, created) VALUES (?, ?)",
            (workspace_id.lower(), iso(utcnow())),
        )

    def known_workspace(self, workspace_id: str) -> bool:
        row = self.store.one("SELECT 1 FROM logs_workspaces WHERE workspace_id = ?", (workspace_id.lower(),))
        return row is not None

    # seeding ------------------------------------------------------------------------
    def insert(self, request_seq: int | None, workspace_id: str, table: str, rows: list[Row]) -> None:
        workspace_id = workspace_id.lower()
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO logs_workspaces(workspace_id, created) VALUES (?, ?)",
                (workspace_id, iso(utcnow())),
            )
            conn.executemany(
                "INSERT INTO logs_rows(workspace_id, table_name, time_key, resource_id, row_json)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        workspace_id,
                        table,
                        time_key(parse_datetime(row["TimeGenerated"])),
                        (row.get("_ResourceId") or "").lower(),
                        json.dumps(row, separators=(",", ":")),
                    )
                    for row in rows
                ],
            )
        payload = json.dumps(rows, sort_keys=True)
        self.store.record_change(
            request_seq,
            "logs.telemetry_seeded",
            f"{workspace_id}/{table}",
            {"rows": len(rows), "fingerprint": fingerprint(payload)},
        )

    def clear(self, request_seq: int | None, table: str | None, workspace_id: str | None) -> int:
        clauses, params = [], []
        if table:
            clauses.append("table_name = ?")
            params.append(table)
        if workspace_id:
            clauses.append("workspace_id = ?")
            params.append(workspace_id.lower())
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        deleted = self.store.execute(f"DELETE FROM logs_rows{where}", params).rowcount  # nosec B608  # fixed clauses, bound values
        self.store.record_change(
            request_seq,
            "logs.telemetry_cleared",
            f"{workspace_id or '*'}/{table or '*'}",
            {"rows": deleted},
        )
        return deleted

    # reading ------------------------------------------------------------------------
    def rows(self, table: str, scope: Scope, window: Window, tenant_id: str) -> list[Row]:
        """Every row of `table` visible to `scope` within `window`, as engine values."""
        clauses, params = ["table_name = ?"], [table]
        if scope.workspaces:
            clauses.append(f"workspace_id IN ({', '.join('?' for _ in scope.workspaces)})")
            params.extend(ws.lower() for ws in scope.workspaces)
        if scope.resource_id is not None:
            clauses.append("(resource_id = ? OR substr(resource_id, 1, ?) = ?)")
            params.extend([scope.resource_id, len(scope.resource_id) + 1, scope.resource_id + "/"])
        if window.start is not None:
            clauses.append("time_key >= ?")
            params.append(time_key(window.start))
        if window.end is not None:
            clauses.append("time_key <= ?")
            params.append(time_key(window.end))
        sql = f"SELECT row_json FROM logs_rows WHERE {' AND '.join(clauses)} ORDER BY id"  # nosec B608  # fixed clauses, bound values
        rows = [from_stored(table, json.loads(r["row_json"])) for r in self.store.query(sql, params)]
        if table in KEYVAULT_AUDIT_TABLES and self._sees_vault(scope):
            rows.extend(row for row in self.keyvault_rows(table, tenant_id) if window.contains(row["TimeGenerated"]))
        return rows

    def _sees_vault(self, scope: Scope) -> bool:
        if scope.resource_id is not None:
            return scope.sees_resource(KEYVAULT_RESOURCE_ID)
        return self.default_workspace.lower() in (ws.lower() for ws in scope.workspaces)

    def keyvault_rows(self, table: str, tenant_id: str) -> list[Row]:
        audit = self.store.query(
            "SELECT seq, ts, operation, secret_name, version, caller_oid, caller_name, status, request_uri,"
            " secret_id FROM keyvault_audit ORDER BY seq"
        )
        mapper = _azure_diagnostics if table == "AzureDiagnostics" else _azkv_audit_logs
        return [mapper(dict(entry), tenant_id) for entry in audit]

    def snapshot(self) -> dict[str, Any]:
        workspaces = [r["workspace_id"] for r in self.store.query("SELECT workspace_id FROM logs_workspaces")]
        seeded: dict[str, dict[str, list[Row]]] = {}
        for r in self.store.query("SELECT workspace_id, table_name, row_json FROM logs_rows ORDER BY id"):
            seeded.setdefault(r["workspace_id"], {}).setdefault(r["table_name"], []).append(json.loads(r["row_json"]))
        audit = self.store.one("SELECT COUNT(*) AS n FROM keyvault_audit")
        return {
            "workspaceId": self.default_workspace,
            "workspaces": workspaces,
            "keyVaultResourceId": KEYVAULT_RESOURCE_ID,
            "keyVaultAuditRows": audit["n"] if audit else 0,
            "rows": seeded,
        }


# --------------------------------------------------------------------------- Key Vault audit mapping


def _audit_common(entry: Row) -> dict[str, Any]:
    status = int(entry["status"] or 0)
    uri = entry["request_uri"] or ""
    parts = urlsplit(uri)
    api_version = (parse_qs(parts.query).get("api-version") or [""])[0]
    object_id = entry["secret_id"] or ""
    if not object_id and entry["secret_name"]:
        object_id = f"{parts.scheme}://{parts.netloc}/secrets/{entry['secret_name']}"
        if entry["version"]:
            object_id += f"/{entry['version']}"
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = str(status)
    return {
        "TimeGenerated": parse_datetime(entry["ts"]),
        "OperationName": entry["operation"],
        "OperationVersion": api_version,
        "ResultType": "Success" if 200 <= status < 300 else "Failure",
        "ResultSignature": phrase,
        "ResultDescription": "",
        "CorrelationId": str(uuid.uuid5(_CORRELATION_NAMESPACE, str(entry["seq"]))),
        "status": status,
        "uri": uri,
        "id": object_id,
    }


def _azure_diagnostics(entry: Row, tenant_id: str) -> Row:
    common = _audit_common(entry)
    caller = (entry["caller_oid"] or "").lower() or None
    return {
        "TimeGenerated": common["TimeGenerated"],
        "ResourceId": KEYVAULT_RESOURCE_ID.upper(),
        "Category": "AuditEvent",
        "ResourceGroup": KEYVAULT_RESOURCE_GROUP.upper(),
        "SubscriptionId": KEYVAULT_SUBSCRIPTION,
        "ResourceProvider": "MICROSOFT.KEYVAULT",
        "Resource": KEYVAULT_NAME.upper(),
        "ResourceType": "VAULTS",
        "OperationName": common["OperationName"],
        "OperationVersion": common["OperationVersion"],
        "ResultType": common["ResultType"],
        "ResultSignature": common["ResultSignature"],
        "ResultDescription": "",
        "DurationMs": None,
        "CallerIPAddress": "127.0.0.1",
        "CorrelationId": common["CorrelationId"],
        "clientInfo_s": "",
        "httpStatusCode_d": float(common["status"]),
        "requestUri_s": common["uri"],
        "id_s": common["id"],
        # Key Vault writes the caller's object id as claim `oid` or as the long objectidentifier claim (its
        # samples show both, depending on the token): the emulator fills both columns, seeded rows either.
        "identity_claim_oid_g": caller,
        "identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g": caller,
        "identity_claim_upn_s": entry["caller_name"] or "",
        "identity_claim_appid_g": None,
        "properties_isAccessPolicyMatch_b": None,
        "SourceSystem": "Azure",
        "TenantId": tenant_id,
        "Type": "AzureDiagnostics",
        "_ResourceId": KEYVAULT_RESOURCE_ID.lower(),
    }


def _azkv_audit_logs(entry: Row, tenant_id: str) -> Row:
    common = _audit_common(entry)
    identity = None
    if entry["caller_oid"]:
        claim = {
            "oid": entry["caller_oid"],
            "http://schemas.microsoft.com/identity/claims/objectidentifier": entry["caller_oid"],
        }
        if entry["caller_name"]:
            claim["upn"] = entry["caller_name"]
        identity = {"claim": claim}
    return {
        "TimeGenerated": common["TimeGenerated"],
        "OperationName": common["OperationName"],
        "OperationVersion": common["OperationVersion"],
        "ResultType": common["ResultType"],
        "ResultSignature": common["ResultSignature"],
        "ResultDescription": "",
        "DurationMs": None,
        "CallerIpAddress": "127.0.0.1",
        "CorrelationId": common["CorrelationId"],
        "Identity": identity,
        "Properties": {"id": common["id"], "requestUri": common["uri"], "httpStatusCode": common["status"]},
        "Id": common["id"],
        "RequestUri": common["uri"],
        "HttpStatusCode": common["status"],
        "ClientInfo": "",
        "SourceSystem": "Azure",
        "TenantId": tenant_id,
        "Type": "AZKVAuditLogs",
        "_ResourceId": KEYVAULT_RESOURCE_ID.lower(),
    }
