"""HTTP plumbing shared by the operator API: identity, JSON bodies, errors and the audit log line.

Every route runs through `handle()`: authenticate (401) → authorize the role (403) → the route's work,
which raises `ApiError` for anything it refuses. Refusals happen before any durable call, so a refused
request starts, raises or terminates nothing (invariant I5). Error messages never repeat what the
caller sent beyond a field's name (a leaked key pasted into a body must not come back, I1), and every
request leaves one structured log line: who, which route, which target/rotation, the outcome (I6).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from rotation import naming
from rotation.identity import Caller, caller_from_request
from rotation.policy import Policy, PolicyError, Target, current_policy
from rotation.reasons import ReasonError, check_reason
from rotation.redaction import looks_secret

log = logging.getLogger("keyrotation.api")

MAX_BODY_BYTES = 16 * 1024
WWW_AUTHENTICATE = 'Bearer realm="keyrotation", error="invalid_token"'
TARGET_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,46}[a-z0-9]$")
_SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$")
# Function keys protect no route: Easy Auth does, in `handle` (a key in `code` is refused, see no_query).
ANON = func.AuthLevel.ANONYMOUS


class ApiError(Exception):
    """A refusal: status, a stable machine code, a message for people, optionally the offending field."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}


def bad_request(field: str, message: str, code: str = "invalid_input") -> ApiError:
    return ApiError(400, code, f"{field}: {message}", field)


def shown_name(name: str) -> str:
    """A caller-supplied field or parameter name, fit to appear in an error message: plain identifiers
    only (a pasted key used as a field name is not repeated)."""
    return name if _SAFE_NAME.match(name) and not looks_secret(name) else "(a field name not shown)"


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
        mimetype="application/json",
        charset="utf-8",
    )


@dataclass
class Reply:
    """What a route answers; `audit` adds ids (target, rotation) to the request's log line."""

    status: int
    body: Any
    headers: dict[str, str] | None = None
    audit: dict[str, Any] | None = None


def policy() -> Policy:
    """The policy validated at startup, parsed again only when the file changes (an edit applies to new requests)."""
    try:
        return current_policy()
    except PolicyError:
        raise ApiError(503, "policy_unavailable", "the rotation policy cannot be loaded; see the app's log") from None


def target_from_path(req: func.HttpRequest) -> Target:
    """The `{target}` route segment: pattern first (400), then the policy (404)."""
    raw = req.route_params.get("target", "")
    if not TARGET_ID.match(raw):
        raise bad_request("target", "must be 3-48 lowercase letters, digits or '-' (a target id of the policy)")
    target = policy().target(raw)
    if target is None:
        raise ApiError(404, "target_not_found", "no such target in the rotation policy", "target")
    return target


def rotation_id_from_path(req: func.HttpRequest) -> str:
    raw: str = req.route_params.get("id", "")
    if not naming.is_rotation_id(raw):
        raise bad_request("id", "must be a rotation id (<target>-<yyyymmdd>t<hhmmss>z-<s|o|e>)")
    return raw


def no_query(req: func.HttpRequest) -> None:
    """No route takes query parameters; a function key in `code` authorizes nothing here, so say so."""
    for name in req.params:
        if name.lower() == "code":
            raise bad_request("code", "function keys are not accepted: sign in (App Service Authentication)")
        raise bad_request(shown_name(name), "is not a known query parameter")


def json_body(req: func.HttpRequest, fields: Mapping[str, type], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body as a JSON object with only `fields` (name -> type), each of the right type. An empty
    body is `{}`. Over MAX_BODY_BYTES → 413 before parsing."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "body_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes", "body")
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise bad_request("body", "must be a JSON object") from None
    if not isinstance(data, dict):
        raise bad_request("body", "must be a JSON object")
    for name in data:
        if name not in fields:
            known = ", ".join(fields) or "none"
            raise bad_request(shown_name(name), f"is not a known field (known: {known})", "unknown_field")
    for name, kind in fields.items():
        if name in data and not isinstance(data[name], kind):
            raise bad_request(name, f"must be a {'string' if kind is str else kind.__name__}")
    for name in required:
        if name not in data:
            raise bad_request(name, "is required")
    return data


def reason_field(data: Mapping[str, Any], *, required: bool = False) -> str | None:
    """A free-text reason, checked by rotation/reasons.py (the one place every door agrees on)."""
    value = data.get("reason")
    if value is None:
        if required:
            raise bad_request("reason", "is required (why the key must die now, for the audit trail)")
        return None
    if not isinstance(value, str):
        raise bad_request("reason", "must be a string")
    try:
        return check_reason(value)
    except ReasonError as err:
        raise bad_request("reason", str(err)) from None


def status_url(rotation_id: str) -> str:
    return f"/api/rotations/{rotation_id}"


def accepted(rotation_id: str, target_id: str, status: int = 202, **extra: Any) -> Reply:
    url = status_url(rotation_id)
    body = {"rotationId": rotation_id, "targetId": target_id, "statusUrl": url, **extra}
    return Reply(status, body, {"Location": url}, {"targetId": target_id, "rotationId": rotation_id})


Route = Callable[[Caller], Awaitable[Reply]]


def authenticate(req: func.HttpRequest, role: str) -> Caller:
    caller = caller_from_request(req.headers, os.environ)
    if caller is None:
        raise ApiError(
            401, "unauthenticated", "sign in: this API needs an App Service Authentication identity",
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )  # fmt: skip
    if not caller.has_role(role):
        raise ApiError(403, "forbidden", f"this route needs the app role {role}")
    return caller


async def handle(req: func.HttpRequest, route: str, role: str, work: Route) -> func.HttpResponse:
    """Authenticate, authorize, run the route, answer JSON, and write the audit line."""
    caller: Caller | None = None
    entry: dict[str, Any] = {"route": route, "method": req.method}
    try:
        caller = authenticate(req, role)
        reply = await work(caller)
        entry.update(reply.audit or {})
        entry.update(status=reply.status, outcome="accepted" if reply.status < 400 else "refused")
        response = json_response(reply.status, reply.body, reply.headers)
    except ApiError as err:
        entry.update(status=err.status, outcome="refused", code=err.code, field=err.field)
        response = json_response(err.status, err.body(), err.headers)
    except Exception as exc:  # never a stack trace or an SDK message to the client
        entry.update(status=500, outcome="error", error=type(exc).__name__)
        log.exception("api %s failed", route)
        response = json_response(500, {"error": {"code": "internal", "message": "internal error; see the app's log"}})
    entry["caller"] = {"name": caller.name, "objectId": caller.object_id} if caller else None
    log.info("api %s", json.dumps(entry, separators=(",", ":")), extra={"api": entry})
    return response


ClientRoute = Callable[[func.HttpRequest, df.DurableOrchestrationClient, Caller], Awaitable[Reply]]


def api_route(bp: df.Blueprint, method: str, route: str, role: str) -> Callable[[ClientRoute], Any]:
    """Register `work(req, client, caller)` as the HTTP function `METHOD /route` of `bp`, with a durable
    client, run through `handle` for `role`. The function keeps the name of `work`: the Functions host and
    its logs know the function by it."""

    def register(work: ClientRoute) -> Any:
        async def endpoint(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
            return await handle(req, f"{method} /{route}", role, lambda caller: work(req, client, caller))

        endpoint.__name__ = endpoint.__qualname__ = work.__name__
        endpoint.__doc__, endpoint.__module__ = work.__doc__, work.__module__
        with_client = bp.durable_client_input(client_name="client")(endpoint)
        return bp.route(route=route, methods=[method], auth_level=ANON)(with_client)

    return register
