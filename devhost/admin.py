"""The host's admin API (master key): run a non-HTTP function on demand, list functions, host status.

``POST /admin/functions/{name}`` answers 202 at once and runs the function in the background, as
the real host does; the outcome shows up in the host log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import web

from devhost.app_loader import FunctionInfo, LoadedApp
from devhost.eventgrid_webhook import to_trigger_value
from devhost.invoke import HOST_CALL_REASON, Invoker
from devhost.keys import HostKeys, presented_key
from devhost.timers import TimerRunner, to_timer_request
from devhost.worker.protos import protos

log = logging.getLogger("devhost.admin")


class AdminApi:
    def __init__(self, loaded: LoadedApp, keys: HostKeys, invoker: Invoker, timers: TimerRunner) -> None:
        self.loaded = loaded
        self.keys = keys
        self.invoker = invoker
        self.timers = timers
        self._running: set[asyncio.Task] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/admin/functions/{name}", self.run_function)
        app.router.add_get("/admin/functions", self.list_functions)
        app.router.add_get("/admin/host/status", self.status)

    def _denied(self, request: web.Request) -> web.Response | None:
        return None if self.keys.is_master(presented_key(request)) else web.Response(status=401)

    async def status(self, request: web.Request) -> web.Response:
        return self._denied(request) or web.json_response({"state": "Running", "version": "devhost"})

    async def list_functions(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        rows = []
        for fn in self.loaded.functions.values():
            row = {"name": fn.name, "trigger": fn.trigger_type}
            if fn.trigger_type == "httpTrigger":
                row["route"] = fn.route
            rows.append(row)
        return web.json_response(rows)

    def _trigger_value(self, fn: FunctionInfo, text: str) -> Any:
        if fn.trigger_type == "timerTrigger":
            return to_timer_request(self.timers.manual_payload(fn))
        if fn.trigger_type == "eventGridTrigger":
            return to_trigger_value(json.loads(text))
        return protos.TypedData(string=text)  # the host passes the input text; the worker's converter decodes it

    async def run_function(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        fn = self.loaded.get(request.match_info["name"])
        if fn is None:
            return web.Response(status=404)
        if fn.trigger_type in ("httpTrigger", "orchestrationTrigger", "entityTrigger"):
            message = f"'{fn.name}' has a {fn.trigger_type}; call its route or start it through the durable client"
            return web.json_response({"error": message}, status=400)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
            text = body.get("input", "") if isinstance(body, dict) else ""
            value = self._trigger_value(fn, text if isinstance(text, str) else json.dumps(text))
        except (ValueError, TypeError, AttributeError):
            message = 'body must be JSON {"input": "..."} with an input the trigger accepts'
            return web.json_response({"error": message}, status=400)
        task = asyncio.create_task(self._run(fn, value))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return web.Response(status=202)

    async def _run(self, fn: FunctionInfo, value: Any) -> None:
        with contextlib.suppress(Exception):  # the invoker logged the failure (name + type)
            await self.invoker.call(fn, value, reason=HOST_CALL_REASON)

    async def drain(self, timeout: float = 10) -> None:
        """Let manual runs finish on shutdown, then cancel the stragglers."""
        if not self._running:
            return
        _, pending = await asyncio.wait(set(self._running), timeout=timeout)
        for task in pending:
            task.cancel()
