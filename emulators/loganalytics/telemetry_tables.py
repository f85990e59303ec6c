"""The Log Analytics tables the emulator holds, with their real column names and types.

Column lists follow the Azure Monitor table reference (learn.microsoft.com/azure/azure-monitor/reference/tables).
They matter because the rotation app's KQL is checked against them: a query naming a column the real
table lacks must fail here as it would in Azure, not silently return nothing.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

# Kusto scalar types as the query API names them in `columns[].type`.
STRING, INT, LONG, REAL, BOOL, DATETIME, TIMESPAN, GUID, DYNAMIC = (
    "string",
    "int",
    "long",
    "real",
    "bool",
    "datetime",
    "timespan",
    "guid",
    "dynamic",
)
NUMERIC = frozenset({INT, LONG, REAL})

Schema = dict[str, str]  # column name -> type, in the table's column order

_COMMON_TAIL: Schema = {"SourceSystem": STRING, "TenantId": STRING, "Type": STRING, "_ResourceId": STRING}

_APP_COMMON: Schema = {
    "AppRoleInstance": STRING,
    "AppRoleName": STRING,
    "AppVersion": STRING,
    "ClientBrowser": STRING,
    "ClientCity": STRING,
    "ClientCountryOrRegion": STRING,
    "ClientIP": STRING,
    "ClientModel": STRING,
    "ClientOS": STRING,
    "ClientStateOrProvince": STRING,
    "ClientType": STRING,
}

TABLES: dict[str, Schema] = {
    "AppRequests": {
        "TimeGenerated": DATETIME,
        **_APP_COMMON,
        "DurationMs": REAL,
        "Id": STRING,
        "IKey": STRING,
        "ItemCount": INT,
        "Measurements": DYNAMIC,
        "Name": STRING,
        "OperationId": STRING,
        "OperationName": STRING,
        "ParentId": STRING,
        "Properties": DYNAMIC,
        "ResultCode": STRING,
        "SDKVersion": STRING,
        "SessionId": STRING,
        "Source": STRING,
        "Success": BOOL,
        "Url": STRING,
        "UserAccountId": STRING,
        "UserAuthenticatedId": STRING,
        "UserId": STRING,
        **_COMMON_TAIL,
    },
    "AppDependencies": {
        "TimeGenerated": DATETIME,
        **_APP_COMMON,
        "Data": STRING,
        "DependencyType": STRING,
        "DurationMs": REAL,
        "Id": STRING,
        "IKey": STRING,
        "ItemCount": INT,
        "Measurements": DYNAMIC,
        "Name": STRING,
        "OperationId": STRING,
        "OperationName": STRING,
        "ParentId": STRING,
        "Properties": DYNAMIC,
        "ResultCode": STRING,
        "SDKVersion": STRING,
        "SessionId": STRING,
        "Success": BOOL,
        "Target": STRING,
        "UserAccountId": STRING,
        "UserAuthenticatedId": STRING,
        "UserId": STRING,
        **_COMMON_TAIL,
    },
    "AppServiceHTTPLogs": {
        "TimeGenerated": DATETIME,
        "Category": STRING,
        "CIp": STRING,
        "ComputerName": STRING,
        "Cookie": STRING,
        "CsBytes": INT,
        "CsHost": STRING,
        "CsMethod": STRING,
        "CsUriQuery": STRING,
        "CsUriStem": STRING,
        "CsUsername": STRING,
        "Referer": STRING,
        "Result": STRING,
        "ScBytes": INT,
        "ScStatus": INT,
        "ScSubStatus": STRING,
        "ScWin32Status": STRING,
        "SPort": STRING,
        "TimeTaken": INT,
        "UserAgent": STRING,
        **_COMMON_TAIL,
    },
    # Key Vault audit in the legacy flat shape (diagnostic setting without resource-specific tables).
    "AzureDiagnostics": {
        "TimeGenerated": DATETIME,
        "ResourceId": STRING,
        "Category": STRING,
        "ResourceGroup": STRING,
        "SubscriptionId": STRING,
        "ResourceProvider": STRING,
        "Resource": STRING,
        "ResourceType": STRING,
        "OperationName": STRING,
        "OperationVersion": STRING,
        "ResultType": STRING,
        "ResultSignature": STRING,
        "ResultDescription": STRING,
        "DurationMs": LONG,
        "CallerIPAddress": STRING,
        "CorrelationId": STRING,
        "clientInfo_s": STRING,
        "httpStatusCode_d": REAL,
        "requestUri_s": STRING,
        "id_s": STRING,
        "identity_claim_oid_g": GUID,
        "identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g": GUID,
        "identity_claim_upn_s": STRING,
        "identity_claim_appid_g": GUID,
        "properties_isAccessPolicyMatch_b": BOOL,
        **_COMMON_TAIL,
    },
    # Key Vault audit in the resource-specific shape.
    "AZKVAuditLogs": {
        "TimeGenerated": DATETIME,
        "OperationName": STRING,
        "OperationVersion": STRING,
        "ResultType": STRING,
        "ResultSignature": STRING,
        "ResultDescription": STRING,
        "DurationMs": INT,
        "CallerIpAddress": STRING,
        "CorrelationId": STRING,
        "Identity": DYNAMIC,
        "Properties": DYNAMIC,
        "Id": STRING,
        "RequestUri": STRING,
        "HttpStatusCode": INT,
        "ClientInfo": STRING,
        **_COMMON_TAIL,
    },
}

# Columns the service fills itself: a seeded value for them is refused.
SYSTEM_COLUMNS = frozenset({"Type", "TenantId"})
KEYVAULT_AUDIT_TABLES = ("AzureDiagnostics", "AZKVAuditLogs")

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


class RowError(ValueError):
    """A seeded row does not fit its table; the message names the field."""


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 instant with a zone (Z or an offset), as UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("no time zone")
    return value.astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """How the query API writes datetimes: UTC with Z, fractions only when present."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def check_value(column: str, kind: str, value: Any) -> Any:
    """Validate one seeded value against its column type; returns the stored (JSON) form."""
    if value is None:
        return "" if kind == STRING else None  # Kusto strings are never null, only empty
    if kind == STRING:
        if not isinstance(value, str):
            raise RowError(f"{column}: must be a string (type string), got {json.dumps(value)}")
        return value
    if kind in (INT, LONG):
        low, high = INT32 if kind == INT else INT64
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise RowError(f"{column}: must be an integer (type {kind}), got {json.dumps(value)}")
        return value
    if kind == REAL:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RowError(f"{column}: must be a number (type real), got {json.dumps(value)}")
        return float(value)
    if kind == BOOL:
        if not isinstance(value, bool):
            raise RowError(f"{column}: must be true or false (type bool), got {json.dumps(value)}")
        return value
    if kind == DATETIME:
        message = f"{column}: must be an ISO 8601 datetime with a zone, e.g. 2026-01-01T00:00:00Z"
        if not isinstance(value, str):
            raise RowError(message)
        try:
            return format_datetime(parse_datetime(value))
        except ValueError as exc:
            raise RowError(message) from exc
    if kind == GUID:
        if not isinstance(value, str) or not _GUID.match(value):
            raise RowError(f"{column}: must be a GUID (type guid), got {json.dumps(value)}")
        return value.lower()
    return value  # dynamic: any JSON value


def normalize_row(table: str, row: Any, now: datetime, tenant_id: str) -> dict[str, Any]:
    """A complete stored row: every column present, types checked, system columns filled."""
    schema = TABLES[table]
    if not isinstance(row, dict):
        raise RowError("rows: each row must be a JSON object of column values")
    unknown = [name for name in row if name not in schema]
    if unknown:
        raise RowError(f"{unknown[0]}: no such column in {table}")
    refused = [name for name in row if name in SYSTEM_COLUMNS]
    if refused:
        raise RowError(f"{refused[0]}: set by the service, not seedable")
    out = {name: check_value(name, kind, row.get(name)) for name, kind in schema.items()}
    if out["TimeGenerated"] is None:
        out["TimeGenerated"] = format_datetime(now)  # ingestion time, as Azure does
    out["Type"] = table
    out["TenantId"] = tenant_id
    return out
