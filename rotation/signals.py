"""The KQL the product sends to Log Analytics: one query per monitoring signal, and the Key Vault
adoption query. Pure text, no Azure SDK: the activities in activities/telemetry.py send it.

No query carries a time filter. The window travels as the request's explicit (start, end) timespan, so
the same query counts the overlap window and the baseline window, and a re-run (replay, retry, test)
counts the same rows. Log Analytics applies the timespan to `TimeGenerated` with both ends inclusive.

Every failure query answers one row with a numeric column `failures` (the contract a policy `kql`
template must also meet). The exact text of each preset, and what each can and cannot see, is in
docs/architecture.md, "Monitoring signals"; tests/unit/rotation/test_signals_kql.py keeps the two identical and checks
every query against a real KQL grammar and the emulator's engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from rotation.policy import AUDIT_TABLES, DEFAULT_AUDIT_TABLE, KQL_PLACEHOLDERS, Target, render_kql

FAILURES_COLUMN = "failures"
# The one column both adoption queries answer: the caller's Entra object id, whichever claim form carried it.
READER_COLUMN = "ReaderObjectId"

# The consumers' own HTTP dependency telemetry: sees every refusal, including the host's key-check 401s
# (quirk 7), but only from consumers that send Application Insights telemetry to the queried scope.
CONSUMER_DEPENDENCIES = """\
AppDependencies
| where Target has "{hostName}" and ResultCode in ("401", "403")
| summarize failures = count()"""

# The target's front end (web server log): sees the key-check 401s before the Functions host runs.
TARGET_HTTP_LOGS = """\
AppServiceHTTPLogs
| where CsHost =~ "{hostName}" and ScStatus in (401, 403)
| summarize failures = count()"""

# The target's own request telemetry: only 401/403 the target's code returns (never key-check 401s).
TARGET_REQUESTS = """\
AppRequests
| where AppRoleName =~ "{appName}" and ResultCode in ("401", "403")
| summarize failures = count()"""

PRESETS: Mapping[str, str] = {
    "consumer-dependencies": CONSUMER_DEPENDENCIES,
    "target-http-logs": TARGET_HTTP_LOGS,
    "target-requests": TARGET_REQUESTS,
}

# Successful reads of one exact Key Vault version, one row per distinct caller object id. Key Vault records
# the caller's object id as the claim `oid` or as `http://schemas.microsoft.com/identity/claims/objectidentifier`
# (its logging samples show both), so each query reads either form.
OBJECTIDENTIFIER_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
DIAGNOSTICS_OBJECTIDENTIFIER = "identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g"

# Resource-specific mode (a diagnostic setting with logAnalyticsDestinationType "Dedicated"): the claims are
# members of the dynamic `Identity.claim`; `Id` is the secret id that was read.
ADOPTION_AZKV = f"""\
AZKVAuditLogs
| where OperationName == "SecretGet" and HttpStatusCode == 200
| where Id =~ "{{secretId}}"
| extend Oid = tostring(Identity.claim.oid), ObjectIdentifier = tostring(Identity.claim["{OBJECTIDENTIFIER_CLAIM}"])
| extend {READER_COLUMN} = iff(isempty(Oid), ObjectIdentifier, Oid)
| distinct {READER_COLUMN}"""

# Azure diagnostics mode: each claim is a column of its own, and a column exists in AzureDiagnostics only once
# some resource has filled it, hence column_ifexists (as Microsoft Sentinel's Key Vault rules read it).
ADOPTION_AZURE_DIAGNOSTICS = f"""\
AzureDiagnostics
| where ResourceProvider == "MICROSOFT.KEYVAULT" and OperationName == "SecretGet"
| where id_s =~ "{{secretId}}" and httpStatusCode_d == 200
| extend Oid = tostring(column_ifexists("identity_claim_oid_g", ""))
| extend ObjectIdentifier = tostring(column_ifexists("{DIAGNOSTICS_OBJECTIDENTIFIER}", ""))
| extend {READER_COLUMN} = iff(isempty(Oid), ObjectIdentifier, Oid)
| distinct {READER_COLUMN}"""

ADOPTION: Mapping[str, str] = {"AZKVAuditLogs": ADOPTION_AZKV, "AzureDiagnostics": ADOPTION_AZURE_DIAGNOSTICS}

# Values are pasted inside KQL string literals: host, app, function and slot names never need quoting, so
# anything that would (a quote, a backslash, a space, a newline) is refused rather than escaped.
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9._:-]*$")
_SECRET_ID = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/secrets/[0-9A-Za-z-]{1,127}/[0-9a-fA-F]{32}$")


class SignalError(ValueError):
    """A query cannot be built as asked (unknown signal, a value unsafe in a KQL literal, a bad secret id)."""


@dataclass(frozen=True)
class SignalQuery:
    """A failure query for one target: which signal it is and the exact KQL sent."""

    signal: str
    text: str


def _plain(values: Mapping[str, str]) -> dict[str, str]:
    for name, value in values.items():
        if not _PLAIN_VALUE.match(value):
            raise SignalError(f"{name}: {value!r} cannot be placed in a KQL query (letters, digits, . _ : - only)")
    return dict(values)


def failure_query(target: Target, host_name: str | None = None) -> SignalQuery:
    """The target's monitoring signal as KQL. `host_name` should be ARM's `defaultHostName` when the caller
    knows it (apps with a unique default host name, custom domains); else `{app}[-{slot}].azurewebsites.net`."""
    signal = target.monitoring.signal
    values = _plain(target.kql_values(host_name))
    if signal == "kql":
        if not target.monitoring.query:
            raise SignalError("monitoring.query: required with signal kql")
        return SignalQuery(signal, render_kql(target.monitoring.query, values))
    if signal not in PRESETS:
        raise SignalError(f"monitoring.signal: unknown signal {signal!r}")
    return SignalQuery(signal, render_kql(PRESETS[signal], values))


def adoption_query(secret_id: str, table: str = DEFAULT_AUDIT_TABLE) -> str:
    """Who read exactly this version, from the vault's audit in `table` (which one the vault's diagnostic
    setting writes: policy `keyVault.auditTable`). `secret_id` must be versioned: a read of another version
    is not adoption."""
    if not _SECRET_ID.match(secret_id):
        raise SignalError(f"secretId: {secret_id!r} is not a versioned Key Vault secret id")
    if table not in ADOPTION:
        raise SignalError(f"keyVault.auditTable: {table!r} is not one of {', '.join(AUDIT_TABLES)}")
    return ADOPTION[table].replace("{secretId}", secret_id)


__all__ = [
    "ADOPTION",
    "ADOPTION_AZKV",
    "ADOPTION_AZURE_DIAGNOSTICS",
    "AUDIT_TABLES",
    "CONSUMER_DEPENDENCIES",
    "DEFAULT_AUDIT_TABLE",
    "FAILURES_COLUMN",
    "KQL_PLACEHOLDERS",
    "PRESETS",
    "READER_COLUMN",
    "TARGET_HTTP_LOGS",
    "TARGET_REQUESTS",
    "SignalError",
    "SignalQuery",
    "adoption_query",
    "failure_query",
]
