"""The pipeline every emulated operation goes through: authenticate → inject faults → handle.

Authentication comes before faults, as in Azure: the Key Vault client's body-less challenge request
must get its 401, not a throttling fault meant for the real call.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import wraps
from urllib.parse import urlencode

from aiohttp import web

from emulators.core import hosts
from emulators.core.auth import Caller, TokenError, bearer_token, parse_token
from emulators.core.state import STATE_KEY, EmulatorState
from emulators.core.store import iso, utcnow, wall_iso

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authenticator = Callable[[web.Request], Awaitable["Caller | web.StreamResponse"]]
Unauthorized = Callable[[str], web.StreamResponse]

REDACTED_QUERY_KEYS = {"code", "sig", "s"}


def bearer_auth(service: str, unauthorized: Unauthorized) -> Authenticator:
    """Require a bearer token for `service`; `unauthorized(message)` builds the refusal."""

    async def authenticate(request: web.Request) -> Caller | web.StreamResponse:
        token = bearer_token(request)
        if token is None:
            return unauthorized("Request is missing a Bearer token.")
        try:
            return parse_token(token, service)
        except TokenError as exc:
            return unauthorized(str(exc))

    return authenticate


async def run_operation(
    request: web.Request, service: str, name: str, authenticate: Authenticator | None, handler: Handler
) -> web.StreamResponse:
    request["service"] = service
    request["operation"] = name
    state = request.app[STATE_KEY]
    if authenticate is not None:
        outcome = await authenticate(request)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        request["caller"] = outcome
    faulted = await state.faults.apply(request, service, name)
    if faulted is not None:
        return faulted
    return await handler(request)


def operation(service: str, name: str, authenticate: Authenticator | None) -> Callable[[Handler], Handler]:
    """Decorate a routed handler as emulated operation `name` (used in the request log and fault rules)."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            return await run_operation(request, service, name, authenticate, handler)

        return wrapper

    return decorate


def _safe_query(request: web.Request) -> str:
    return urlencode([(k, "***" if k.lower() in REDACTED_QUERY_KEYS else v) for k, v in request.query.items()])


@web.middleware
async def request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every request (never bodies or key values) with the sequence number changes refer to."""
    state: EmulatorState = request.app[STATE_KEY]
    started = time.perf_counter()
    cur = state.store.execute(
        "INSERT INTO requests(ts, wall_ts, method, path, query) VALUES (?, ?, ?, ?, ?)",
        (
            iso(utcnow()),
            wall_iso(),
            request.method,
            hosts.request_path(request.url.host, request.path),
            _safe_query(request),
        ),
    )
    request["seq"] = cur.lastrowid
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        caller = request.get("caller")
        fault = request.get("fault")
        state.store.execute(
            "UPDATE requests SET service = ?, operation = ?, caller = ?, status = ?, duration_ms = ?, fault = ?"
            " WHERE seq = ?",
            (
                request.get("service"),
                request.get("operation"),
                caller.oid if isinstance(caller, Caller) else None,
                status,
                round((time.perf_counter() - started) * 1000, 3),
                f"{fault['mode']}:{fault['status'] or ''}" if fault else None,
                request["seq"],
            ),
        )
