"""The Key Vault audit log: one row per secret operation, as Azure's AuditEvent diagnostics record it.

The table `keyvault_audit` is a contract: the Log Analytics emulator reads it to serve
`AZKVAuditLogs` / `AzureDiagnostics` rows, and the overlap stage uses those rows to tell which
consumer (caller oid) read which version. Columns are fixed; add none without telling that owner.
Like Azure, it records refused requests too (401 challenges with no caller, 403/404s, injected
faults), so readers must filter on `status`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from emulators.core.auth import Caller
from emulators.core.state import STATE_KEY
from emulators.core.store import Store, iso, utcnow

SCHEMA = """
CREATE TABLE IF NOT EXISTS keyvault_audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT, operation TEXT, secret_name TEXT, version TEXT,
    caller_oid TEXT, caller_name TEXT, status INTEGER, request_uri TEXT, secret_id TEXT);
"""

COLUMNS = (
    "seq",
    "ts",
    "operation",
    "secret_name",
    "version",
    "caller_oid",
    "caller_name",
    "status",
    "request_uri",
    "secret_id",
)


@dataclass(frozen=True)
class AuditEntry:
    operation: str  # Azure's OperationName: SecretGet, SecretSet, ...
    secret_name: str | None
    version: str | None  # as requested; None for "latest" or no version
    caller: Caller | None
    status: int
    request_uri: str
    secret_id: str | None  # full versioned id of what was served or written; None when it failed


def append(store: Store, entry: AuditEntry) -> None:
    store.execute(
        "INSERT INTO keyvault_audit(ts, operation, secret_name, version, caller_oid, caller_name, status,"
        " request_uri, secret_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            iso(utcnow()),
            entry.operation,
            entry.secret_name,
            entry.version,
            entry.caller.oid if entry.caller else None,
            entry.caller.name if entry.caller else None,
            entry.status,
            entry.request_uri,
            entry.secret_id if 200 <= entry.status < 300 else None,
        ),
    )


async def list_audit(request: web.Request) -> web.Response:
    """GET /_emulator/keyvault/audit?since=SEQ: rows after SEQ, oldest first."""
    state = request.app[STATE_KEY]
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        return web.json_response({"error": {"code": "BadRequest", "message": "since: must be an integer"}}, status=400)
    rows = state.store.query(f"SELECT {', '.join(COLUMNS)} FROM keyvault_audit WHERE seq > ? ORDER BY seq", (since,))  # nosec B608  # COLUMNS is a constant
    return web.json_response({"value": [dict(r) for r in rows]})


def register(app: web.Application, store: Store) -> None:
    store.ensure_schema(SCHEMA)
    app.router.add_get("/_emulator/keyvault/audit", list_audit)
