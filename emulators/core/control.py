"""The control API under /_emulator/: faults, the request log, the change journal, whole state.

Test- and demo-only: it returns key and secret values (tests scan for them to prove invariant I1).
Service-specific control routes (sites, telemetry, subscriptions) live beside their service.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from emulators.core.faults import FaultRule
from emulators.core.state import STATE_KEY, EmulatorState


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": {"code": "BadRequest", "message": message}}, status=400)


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text='{"error": {"code": "BadRequest", "message": "body is not JSON"}}',
            content_type="application/json",
        ) from exc


def _int_param(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name}: must be an integer") from exc


async def add_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = await read_json(request)
    items = body if isinstance(body, list) else [body]
    try:
        rules = [FaultRule.from_json(item) for item in items]
    except (TypeError, ValueError) as exc:
        return _bad_request(str(exc))
    ids = [state.faults.add(rule) for rule in rules]
    return web.json_response({"ids": ids}, status=201)


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response({"value": request.app[STATE_KEY].faults.list()})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].faults.clear()
    return web.Response(status=204)


async def list_requests(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    since = _int_param(request, "since", 0)
    rows = state.store.query(
        "SELECT * FROM requests WHERE seq > ? AND path NOT LIKE '/\\_emulator/%' ESCAPE '\\' ORDER BY seq",
        (since,),
    )
    return web.json_response({"value": [dict(r) for r in rows]})


async def list_changes(request: web.Request) -> web.Response:
    import json

    state = request.app[STATE_KEY]
    since = _int_param(request, "since", 0)
    rows = state.store.query("SELECT * FROM changes WHERE seq > ? ORDER BY seq", (since,))
    return web.json_response({"value": [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]})


def snapshot(state: EmulatorState) -> dict[str, Any]:
    return {name: provide() for name, provide in sorted(state.snapshot_providers.items())}


async def get_state(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = snapshot(state)
    body["faults"] = state.faults.list()
    return web.json_response(body)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def register(app: web.Application, state: EmulatorState) -> None:
    app.router.add_get("/_emulator/health", health)
    app.router.add_get("/_emulator/state", get_state)
    app.router.add_get("/_emulator/requests", list_requests)
    app.router.add_get("/_emulator/changes", list_changes)
    app.router.add_post("/_emulator/faults", add_faults)
    app.router.add_get("/_emulator/faults", list_faults)
    app.router.add_delete("/_emulator/faults", clear_faults)
