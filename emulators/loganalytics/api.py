"""The Log Analytics query API (v1), as the unmodified `LogsQueryClient` speaks it.

`POST /v1/workspaces/{id}/query` (query_workspace) and `POST /v1{resourceId}/query` (query_resource)
with `{"query", "timespan", "workspaces"}` and a `Prefer` header, no api-version. The query runs in
the KQL subset of kql_syntax.py over the tables of telemetry_tables.py (both beside this module); anything
else is refused with 400 BadArgumentError, never approximated. Operation name: `logs.query`; a fault
rule with `mode: "partial"` turns the answer into a 200 with both `tables` and a `PartialError`.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from emulators.core.errors import logs_error
from emulators.core.operations import bearer_auth, run_operation
from emulators.core.state import STATE_KEY, EmulatorState
from emulators.core.store import utcnow
from emulators.loganalytics.kql_engine import compile_query, render_value, run_stages
from emulators.loganalytics.kql_syntax import KqlError, parse
from emulators.loganalytics.telemetry_seed import register_control_routes
from emulators.loganalytics.telemetry_store import Scope, TelemetryStore, Window
from emulators.loganalytics.telemetry_tables import TABLES, parse_datetime

SERVICE = "logs"
OPERATION = "logs.query"
TELEMETRY_KEY = web.AppKey("logs_telemetry", TelemetryStore)

_WORKSPACE_PATH = re.compile(r"^workspaces/([^/]+)/query$")
_RESOURCE_PATH = re.compile(
    r"^/*(subscriptions/[^/]+(?:/resourcegroups/[^/]+(?:/providers/[^/]+/[^/]+/[^/]+(?:/[^/]+/[^/]+)*)?)?)/query$",
    re.IGNORECASE,
)
_DURATION = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)
BAD_ARGUMENT = "The request had some invalid properties"


class BadRequest(Exception):
    """A request LA refuses with 400 BadArgumentError; `inner` is its innererror."""

    def __init__(self, inner: dict[str, Any]) -> None:
        super().__init__(inner.get("message", ""))
        self.inner = inner


# --------------------------------------------------------------------------- errors


def unauthorized(message: str) -> web.Response:
    """LA's 401s: no token at all, or a token it does not accept (wrong audience, expired)."""
    if message.startswith("Request is missing"):
        return logs_error(401, "AuthorizationRequiredError", "Valid authentication was not provided")
    return logs_error(
        401,
        "InvalidTokenError",
        "The provided authentication is not valid for this resource",
        inner={"code": "InvalidTokenError", "message": message},
    )


def path_not_found() -> web.Response:
    return logs_error(404, "PathNotFoundError", "The requested path does not exist")


def validation_error(target: str, message: str) -> BadRequest:
    return BadRequest(
        {
            "code": "QueryValidationError",
            "message": "Failed parsing the query",
            "details": [{"code": "InvalidArgument", "message": message, "target": target}],
        }
    )


_KQL_ERROR_CODES = {
    "SyntaxError": ("SyntaxError", "A recognition error occurred in the query.", "SYN0002"),
    "SemanticError": ("SemanticError", "A semantic error occurred.", "SEM0100"),
}
_UNSUPPORTED_CODES = (
    "UnsupportedQuery",
    "The query uses KQL the emulator does not implement.",
    "EMU0001",
)


def kql_error_body(error: KqlError, query: str) -> dict[str, Any]:
    """The innererror chain LA answers for a refused query (SYN0002 / SEM0100 / emulator's EMU0001)."""
    detail: dict[str, Any] = {"message": error.message}
    if error.pos is not None:
        line = query.count("\n", 0, error.pos) + 1
        column = error.pos - (query.rfind("\n", 0, error.pos) + 1)
        detail.update({"line": line, "pos": column, "token": error.token})
        if error.kind == "SyntaxError":
            detail["message"] = f"{error.message} on line [{line},{column}]"
    code, message, inner_code = _KQL_ERROR_CODES.get(error.kind, _UNSUPPORTED_CODES)
    return {"code": code, "message": message, "innererror": {"code": inner_code, **detail}}


def partial_error(fault: dict[str, Any]) -> dict[str, Any]:
    """What a partially failed query carries beside its tables (e.g. a result set over the limit)."""
    message = fault.get("message") or (
        "The results of this query exceed the set limit of 64000000 bytes, so not all records were returned"
        " (E_QUERY_RESULT_SET_TOO_LARGE, 0x80DA0003). See https://aka.ms/kustoquerylimits for more"
        " information and possible solutions."
    )
    return {
        "code": "PartialError",
        "message": "There were some errors when processing your query.",
        "details": [
            {
                "code": fault.get("code") or "EngineError",
                "message": "Something went wrong processing your query on the server.",
                "innererror": {"code": "-2133196797", "message": message, "severity": 2, "severityName": "Error"},
            }
        ],
    }


# --------------------------------------------------------------------------- request parsing


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match or not any(match.groupdict().values()) or text.strip().upper().endswith("T"):
        raise ValueError(f"not an ISO 8601 duration (PnDTnHnMnS): {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return timedelta(
        weeks=parts.get("w", 0),
        days=parts.get("d", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )


def _instant(text: str) -> datetime:
    try:
        return parse_datetime(text)
    except ValueError:
        # LA reads a zone-less instant as UTC
        return parse_datetime(text.strip() + "Z")


def parse_timespan(value: Any, now: datetime) -> Window:
    """`start/end`, `start/duration`, `duration/end` or a bare duration ending now; null means all rows."""
    if value is None:
        return Window()
    if not isinstance(value, str) or not value.strip():
        raise validation_error("timespan", "timespan: an ISO 8601 interval or duration, or null")
    parts = value.strip().split("/")
    try:
        if len(parts) == 1:
            return Window(now - parse_duration(parts[0]), now)
        if len(parts) != 2:
            raise ValueError("too many '/'")
        first, second = parts
        if first.upper().startswith("P"):
            end = _instant(second)
            return Window(end - parse_duration(first), end)
        start = _instant(first)
        end = start + parse_duration(second) if second.upper().startswith("P") else _instant(second)
    except ValueError as exc:
        raise validation_error("timespan", f"timespan: invalid value {value!r} ({exc})") from exc
    if end < start:
        raise validation_error("timespan", f"timespan: the end of {value!r} is before its start")
    return Window(start, end)


def parse_prefer(header: str) -> dict[str, str]:
    prefs = {}
    for part in header.split(","):
        name, _, val = part.strip().partition("=")
        if name:
            prefs[name.strip().lower()] = val.strip()
    return prefs


# --------------------------------------------------------------------------- the query operation


def _scope(request: web.Request, telemetry: TelemetryStore, body: dict[str, Any]) -> Scope | web.Response:
    tail = request.match_info["tail"]
    extra = body.get("workspaces")
    if extra is not None and (not isinstance(extra, list) or not all(isinstance(w, str) and w for w in extra)):
        raise validation_error("workspaces", "workspaces: a list of workspace ids, or null")
    additional = tuple(extra or ())
    unknown = [w for w in additional if not telemetry.known_workspace(w)]
    if unknown:
        raise validation_error("workspaces", f"workspaces: workspace '{unknown[0]}' could not be resolved")
    if match := _WORKSPACE_PATH.match(tail):
        workspace = match.group(1)
        if not telemetry.known_workspace(workspace):
            return path_not_found()
        return Scope(workspaces=(workspace, *additional))
    if match := _RESOURCE_PATH.match(tail):
        return Scope(workspaces=additional, resource_id="/" + match.group(1).lower())
    return path_not_found()


async def _handle_query(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    telemetry = request.app[TELEMETRY_KEY]
    started = time.perf_counter()
    query: Any = None
    try:
        body = await request.json()
    except ValueError:
        body = None
    try:
        if not isinstance(body, dict):
            raise validation_error("body", "The request body must be a JSON object with a 'query'")
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise validation_error("query", "query: a non-empty string is required")
        scope = _scope(request, telemetry, body)
        if isinstance(scope, web.Response):
            return scope
        now = utcnow()
        window = parse_timespan(body.get("timespan"), now)
        schema, rows = _run(query, scope, window, now, telemetry, state)
    except BadRequest as exc:
        return logs_error(400, "BadArgumentError", BAD_ARGUMENT, inner=exc.inner)
    except KqlError as exc:
        return logs_error(400, "BadArgumentError", BAD_ARGUMENT, inner=kql_error_body(exc, str(query)))
    table = {
        "name": "PrimaryResult",
        "columns": [{"name": name, "type": kind} for name, kind in schema.items()],
        "rows": [[render_value(kind, row.get(name)) for name, kind in schema.items()] for row in rows],
    }
    answer: dict[str, Any] = {"tables": [table]}
    prefs = parse_prefer(request.headers.get("Prefer", ""))
    applied = []
    if prefs.get("include-statistics") == "true":
        answer["statistics"] = {
            "query": {"executionTime": round(time.perf_counter() - started, 6), "resourceUsage": {}},
            "datasetStatistics": [{"tableRowCount": len(rows)}],
        }
        applied.append("include-statistics=true")
    if prefs.get("include-render") == "true":
        answer["render"] = {}
        applied.append("include-render=true")
    fault = request.get("fault")
    if fault and fault.get("mode") == "partial":
        answer["error"] = partial_error(fault)
    headers = {"Preference-Applied": ",".join(applied)} if applied else None
    return web.json_response(answer, headers=headers)


def _run(
    query: str, scope: Scope, window: Window, now: datetime, telemetry: TelemetryStore, state: EmulatorState
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    parsed = parse(query)
    schema = TABLES.get(parsed.table)
    if schema is None:
        where = parsed.operators[0].name if parsed.operators else parsed.table
        raise KqlError(
            "SemanticError",
            f"'{where}' operator: Failed to resolve table or column expression named '{parsed.table}'"
            f" (the emulator holds {', '.join(TABLES)})",
            parsed.table_pos,
            parsed.table,
        )
    out_schema, stages = compile_query(parsed, dict(schema), now)  # every semantic check before reading rows
    rows = telemetry.rows(parsed.table, scope, window, state.workspace_id)
    return out_schema, run_stages(stages, rows)


async def query_route(request: web.Request) -> web.StreamResponse:
    """POST /v1/{tail}: authenticate, apply faults, then run the query for the workspace or resource."""
    return await run_operation(request, SERVICE, OPERATION, bearer_auth(SERVICE, unauthorized), _handle_query)


def register(app: web.Application, state: EmulatorState) -> None:
    """Add the query API and the telemetry control routes."""
    telemetry = TelemetryStore(state.store, state.workspace_id)
    app[TELEMETRY_KEY] = telemetry
    app.router.add_post("/v1/{tail:.*}", query_route)
    register_control_routes(app, telemetry, state)
    state.snapshot_providers["loganalytics"] = telemetry.snapshot
