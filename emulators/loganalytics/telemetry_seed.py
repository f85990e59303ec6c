"""Control routes that seed Log Analytics telemetry (test and demo only).

`POST /_emulator/telemetry` `{"table", "workspaceId"?, "rows": [{column: value}]}` validates every
row against the real table schema (unknown table or column, wrong type → 400 naming the field) and
fills missing columns (strings with "", others with null, TimeGenerated with now).
`DELETE /_emulator/telemetry[?table=&workspaceId=]` removes seeded rows (never Key Vault audit rows).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from emulators.core.state import EmulatorState
from emulators.core.store import utcnow
from emulators.loganalytics.telemetry_store import TelemetryStore
from emulators.loganalytics.telemetry_tables import TABLES, RowError, normalize_row

MAX_ROWS = 50_000
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _bad(message: str) -> web.Response:
    return web.json_response({"error": {"code": "BadRequest", "message": message}}, status=400)


def _check_workspace(value: Any) -> str | None:
    """None when valid; otherwise the problem."""
    if not isinstance(value, str) or not _GUID.match(value):
        return "workspaceId: a workspace id (GUID)"
    return None


def register_control_routes(app: web.Application, telemetry: TelemetryStore, state: EmulatorState) -> None:
    async def seed(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _bad("body is not JSON")
        if not isinstance(body, dict):
            return _bad('body: a JSON object {"table", "workspaceId"?, "rows"}')
        unknown = sorted(set(body) - {"table", "workspaceId", "rows"})
        if unknown:
            return _bad(f"{unknown[0]}: unknown field")
        table = body.get("table")
        if table not in TABLES:
            return _bad(f"table: one of {', '.join(TABLES)}; got {table!r}")
        workspace = body.get("workspaceId", state.workspace_id)
        if problem := _check_workspace(workspace):
            return _bad(problem)
        rows = body.get("rows")
        if not isinstance(rows, list) or not rows or len(rows) > MAX_ROWS:
            return _bad(f"rows: a non-empty list of at most {MAX_ROWS} row objects")
        now = utcnow()
        try:
            normalized = []
            for index, row in enumerate(rows):
                if not isinstance(row, dict):
                    return _bad(f"rows[{index}]: must be a JSON object of column values")
                try:
                    normalized.append(normalize_row(table, row, now, workspace.lower()))
                except RowError as exc:
                    raise RowError(f"rows[{index}].{exc}") from exc
        except RowError as exc:
            return _bad(str(exc))
        telemetry.insert(request.get("seq"), workspace, table, normalized)
        return web.json_response(
            {"table": table, "workspaceId": workspace.lower(), "inserted": len(normalized)}, status=201
        )

    async def clear(request: web.Request) -> web.Response:
        table = request.query.get("table")
        if table is not None and table not in TABLES:
            return _bad(f"table: one of {', '.join(TABLES)}; got {table!r}")
        workspace = request.query.get("workspaceId")
        if workspace is not None and (problem := _check_workspace(workspace)):
            return _bad(problem)
        deleted = telemetry.clear(request.get("seq"), table, workspace)
        return web.json_response({"deleted": deleted})

    app.router.add_post("/_emulator/telemetry", seed)
    app.router.add_delete("/_emulator/telemetry", clear)
