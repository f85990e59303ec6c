"""Fault injection per operation: status (+ Retry-After), added latency, dropped connections.

A rule matches an operation name exactly or by prefix wildcard (``arm.*``), optionally only when the
request path contains `match`; `times` bounds how often it fires (None = until cleared). Rules live
in SQLite so a fault schedule survives a devhost restart.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from emulators.core import hosts
from emulators.core.errors import service_error
from emulators.core.store import Store, iso, utcnow

MODES = ("status", "latency", "reset", "partial")


@dataclass
class FaultRule:
    operation: str
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    latency_ms: float = 0.0
    mode: str | None = None
    match: str | None = None
    times: int | None = 1
    body: Any = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        if not isinstance(data, dict):
            raise ValueError("a fault must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        rule = cls(**data)
        if not isinstance(rule.operation, str) or not rule.operation:
            raise ValueError("operation: required, e.g. 'arm.list_host_keys' or 'keyvault.*'")
        if rule.status is not None and not (isinstance(rule.status, int) and 400 <= rule.status <= 599):
            raise ValueError("status: must be an integer from 400 to 599")
        mode = rule.mode or ("status" if rule.status else "latency" if rule.latency_ms else None)
        if mode not in MODES:
            raise ValueError(f"mode: one of {', '.join(MODES)} (or give status / latency_ms)")
        if mode == "status" and rule.status is None:
            raise ValueError("status: required for mode 'status'")
        if rule.times is not None and (not isinstance(rule.times, int) or rule.times < 1):
            raise ValueError("times: a positive integer, or null for unlimited")
        rule.mode = mode
        return rule


class Faults:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, rule: FaultRule) -> int:
        payload = asdict(rule)
        cur = self.store.execute(
            "INSERT INTO faults(operation, match, status, code, message, retry_after, latency_ms, mode, remaining,"
            " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rule.operation,
                rule.match,
                rule.status,
                rule.code,
                json.dumps({"message": rule.message, "body": payload["body"]}),
                rule.retry_after,
                rule.latency_ms,
                rule.mode,
                rule.times,
                iso(utcnow()),
            ),
        )
        return int(cur.lastrowid or 0)

    def clear(self) -> None:
        self.store.execute("DELETE FROM faults")

    def list(self) -> list[dict[str, Any]]:
        out = []
        for row in self.store.query("SELECT * FROM faults ORDER BY id"):
            extra = json.loads(row["message"] or "{}")
            out.append(
                {
                    "id": row["id"],
                    "operation": row["operation"],
                    "match": row["match"],
                    "status": row["status"],
                    "code": row["code"],
                    "message": extra.get("message"),
                    "body": extra.get("body"),
                    "retry_after": row["retry_after"],
                    "latency_ms": row["latency_ms"],
                    "mode": row["mode"],
                    "remaining": row["remaining"],
                    "hits": row["hits"],
                }
            )
        return out

    def take(self, operation: str, path: str) -> dict[str, Any] | None:
        """The first live rule for this operation, consuming one of its `times`."""
        with self.store.transaction() as conn:
            rows = conn.execute("SELECT * FROM faults WHERE remaining IS NULL OR remaining > 0 ORDER BY id").fetchall()
            for row in rows:
                if not fnmatch.fnmatchcase(operation, row["operation"]):
                    continue
                if row["match"] and row["match"].lower() not in path.lower():
                    continue
                conn.execute(
                    "UPDATE faults SET hits = hits + 1,"
                    " remaining = CASE WHEN remaining IS NULL THEN NULL ELSE remaining - 1 END WHERE id = ?",
                    (row["id"],),
                )
                extra = json.loads(row["message"] or "{}")
                return {**dict(row), "message": extra.get("message"), "body": extra.get("body")}
        return None

    async def apply(self, request: web.Request, service: str, operation: str) -> web.StreamResponse | None:
        """Run a matching fault: returns the error response to send, or None to carry on."""
        rule = self.take(operation, hosts.request_path(request.url.host, request.path))
        if rule is None:
            return None
        request["fault"] = rule
        if rule["latency_ms"]:
            await asyncio.sleep(rule["latency_ms"] / 1000)
        if rule["mode"] == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # the client sees the connection drop
        if rule["mode"] != "status":
            return None  # latency-only or handler-interpreted (partial) faults
        headers = {}
        if rule["retry_after"] is not None:
            headers["Retry-After"] = str(
                int(rule["retry_after"]) if float(rule["retry_after"]).is_integer() else rule["retry_after"]
            )
        if rule["body"] is not None:
            return web.json_response(rule["body"], status=rule["status"], headers=headers)
        return service_error(service, rule["status"], rule["code"], rule["message"], headers)
