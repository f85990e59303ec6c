"""Activities `count_auth_failures` and `check_adoption`: Log Analytics queries over explicit windows.

Both send the KQL of rotation/signals.py through LogsQueryClient with an explicit (start, end) timespan
supplied by the orchestrator, so a replay or retry counts the same rows. How failures surface:

- **Transient** (HTTP 408/429/5xx still failing after azure-core's own retries, a dropped or refused
  connection): the activity **raises** SafeError, so the orchestrator's retry policy (QUERY_STEP) runs
  it again. When those retries are exhausted the orchestrator treats the step as "signal unreadable".
- **Answered but unusable** (the query refused — 400; no access — 401/403; unknown workspace or
  resource — 404; a partial result; a result without a numeric `failures` column): the activity
  **returns** `error` with null counts. Retrying cannot help, and a query failure is never zero
  failures: the gate holds a scheduled rotation and lets an emergency one proceed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from activities import clients
from activities.targets import target_for
from rotation.contracts import ActivityRequest
from rotation.durations import as_utc, format_timestamp
from rotation.policy import Monitoring, Target
from rotation.redaction import SafeError, redact, safe_error_message
from rotation.signals import FAILURES_COLUMN, READER_COLUMN, adoption_query, failure_query

if TYPE_CHECKING:
    from azure.monitor.query import LogsQueryClient, LogsTable

log = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class QueryProblem(Exception):
    """The service answered, but not with a usable result; the message is safe to return and log.
    `partial` holds the rows of a partial result (a subset of the answer, never more)."""

    def __init__(self, message: str, partial: LogsTable | None = None) -> None:
        super().__init__(message)
        self.partial = partial


Window = tuple[datetime, datetime]


def parse_window(value: Any, field: str) -> Window:
    """`{"start", "end"}` ISO 8601 instants -> a (start, end) pair in UTC; start must be before end."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{field}: must be an object with start and end")
    start, end = (_instant(value.get(k), f"{field}.{k}") for k in ("start", "end"))
    if start >= end:
        raise ValueError(f"{field}: start must be before end")
    return start, end


def _instant(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be an ISO 8601 UTC timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field}: must be an ISO 8601 UTC timestamp") from None
    return as_utc(parsed)


def _transient(exc: Exception) -> bool:
    from azure.core.exceptions import HttpResponseError

    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        return status is None or status in TRANSIENT_STATUS or status >= 500
    return True  # no answer at all: connection refused or reset, timeout


def _query(client: LogsQueryClient, scope: tuple[str, str], text: str, window: Window) -> LogsTable:
    """Run one query over `window` in a workspace or a resource's logs; its first table."""
    from azure.core.exceptions import AzureError
    from azure.monitor.query import LogsQueryPartialResult

    kind, where = scope
    try:
        if kind == "workspace":
            result = client.query_workspace(where, text, timespan=window)
        else:
            result = client.query_resource(where, text, timespan=window)
    except AzureError as exc:
        if _transient(exc):
            raise SafeError.from_exception(exc) from None
        raise QueryProblem(safe_error_message(exc)) from None
    if isinstance(result, LogsQueryPartialResult):
        error = result.partial_error
        code = getattr(error, "code", None) or "PartialError"
        message = (getattr(error, "message", None) or "").strip().splitlines()[:1]
        tables = result.partial_data or []
        summary = redact(f"partial result ({code}): {' '.join(message)}".strip())
        raise QueryProblem(summary, tables[0] if tables else None)
    if not result.tables:
        raise QueryProblem("the query returned no table")
    return result.tables[0]


def _failures(table: LogsTable) -> int:
    """The sum of the `failures` column over the rows (a preset answers exactly one row)."""
    names = [str(c).lower() for c in table.columns]
    if FAILURES_COLUMN not in names:
        raise QueryProblem(f"the query result has no column {FAILURES_COLUMN!r} (columns: {', '.join(names)})")
    if not table.rows:
        raise QueryProblem(f"the query returned no rows; end it with `| summarize {FAILURES_COLUMN} = count()`")
    index = names.index(FAILURES_COLUMN)
    total = 0.0
    for row in table.rows:
        value = row[index]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise QueryProblem(f"column {FAILURES_COLUMN!r} must be numeric and never empty")
        total += value
    return int(total)


def _failure_scope(monitoring: Monitoring) -> tuple[str, str]:
    if monitoring.workspace_id:
        return "workspace", monitoring.workspace_id
    assert monitoring.resource_id is not None  # the policy requires exactly one of the two
    return "resource", monitoring.resource_id


def count_auth_failures(request: ActivityRequest) -> dict[str, Any]:
    """Failures of the target's monitoring signal in `window` and in `baseline`. Optional `hostName`: ARM's
    defaultHostName of the target when the orchestrator knows it (else `{app}[-{slot}].azurewebsites.net`)."""
    target = target_for(request)
    window = parse_window(request.get("window"), "window")
    baseline = parse_window(request.get("baseline"), "baseline")
    query = failure_query(target, request.get("hostName"))
    scope = _failure_scope(target.monitoring)
    out: dict[str, Any] = {"signal": query.signal, "failures": None, "baseline": None, "error": None}
    client = clients.logs_client(budget=target.calls)
    try:
        failures = _failures(_query(client, scope, query.text, window))
        base = _failures(_query(client, scope, query.text, baseline))
    except QueryProblem as problem:
        out["error"] = str(problem)
        log.warning(
            "auth failures of %s (%s) unreadable for %s: %s", target.id, query.signal, _span(window), out["error"]
        )
        return out
    finally:
        client.close()
    out.update(failures=failures, baseline=base)
    log.info(
        "auth failures of %s (%s): %d in %s, baseline %d in %s",
        target.id,
        query.signal,
        failures,
        _span(window),
        base,
        _span(baseline),
    )
    return out


def _span(window: Window) -> str:
    return f"{format_timestamp(window[0])}/{format_timestamp(window[1])}"


def audit_workspace(target: Target) -> str | None:
    """Where the Key Vault audit is read: the app's workspace (LOG_ANALYTICS_WORKSPACE_ID, where the
    deployment sends the vault's diagnostics), else the target's monitoring workspace."""
    return clients.settings().log_analytics_workspace_id or target.monitoring.workspace_id


def check_adoption(request: ActivityRequest) -> dict[str, Any]:
    """Which of the target's consumers successfully read exactly `secretId` between `since` and `until`.
    `readers` is a lower bound: with `error` set (partial result, query refused) it holds what was seen."""
    target = target_for(request)
    secret_id = request["secretId"]
    if not isinstance(secret_id, str) or not secret_id.lower().startswith(target.key_vault.secret_id().lower() + "/"):
        raise ValueError(f"secretId: must be a version of {target.key_vault.secret_id()}")
    window = parse_window({"start": request.get("since"), "end": request.get("until")}, "since/until")
    text = adoption_query(secret_id, target.key_vault.audit_table)
    workspace = audit_workspace(target)
    if not workspace:
        return {"readers": [], "error": "no workspace holds the Key Vault audit: set LOG_ANALYTICS_WORKSPACE_ID"}
    client = clients.logs_client(budget=target.calls)
    error: str | None = None
    try:
        callers = _readers(_query(client, ("workspace", workspace), text, window))
    except QueryProblem as problem:
        error = str(problem)
        callers = _readers(problem.partial) if problem.partial is not None else set()
        log.warning("Key Vault audit of %s incomplete: %s", target.id, error)
    finally:
        client.close()
    readers = sorted(c.object_id for c in target.consumers if c.object_id in callers)
    log.info("%d of %d consumer(s) of %s read %s", len(readers), len(target.consumers), target.id, secret_id)
    return {"readers": readers, "error": error}


def _readers(table: LogsTable) -> set[str]:
    names = [str(c) for c in table.columns]
    if READER_COLUMN not in names:
        return set()  # cannot happen with the shipped query; nothing seen is the safe answer
    index = names.index(READER_COLUMN)
    return {str(row[index]).lower() for row in table.rows if row[index]}
