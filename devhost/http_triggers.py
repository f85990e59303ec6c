"""HTTP triggers: route matching, method and key checks, then the request to the worker as ``RpcHttp``.

The request goes out as the host builds it for a worker with the RpcHttpBodyOnly and RawHttpBodyBytes
capabilities (the Python runtime declares both): lower-cased headers, non-empty query values, route
parameters, the body as bytes (azure-functions-host, ``RpcMessageConversionExtensions.ToRpcHttp``).
The worker's ``RpcHttp`` answer becomes the response. An unhandled exception in a function becomes a
500 with an empty body, as on the real host: the message might hold a secret (invariant I1), so it is
neither returned nor logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from devhost.app_loader import FunctionInfo, LoadedApp
from devhost.invoke import HOST_CALL_REASON, Invoker
from devhost.keys import HostKeys, presented_key
from devhost.routes import RouteTemplate, compile_route, precedence_key
from devhost.worker.protos import protos

log = logging.getLogger("devhost.host")

_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass(frozen=True)
class HttpFunction:
    info: FunctionInfo
    route: RouteTemplate


def authorized(level: str, keys: HostKeys, request: web.Request) -> bool:
    key = presented_key(request)
    if level == "ANONYMOUS":
        return True
    if level == "ADMIN":
        return keys.is_master(key)
    return keys.is_function_key(key)  # FUNCTION (and anything unknown fails closed the same way)


def to_rpc_http(request: web.Request, body: bytes, route_params: dict[str, str]) -> Any:
    """The trigger payload the host sends for this request."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():  # repeated headers are joined with "," (StringValues)
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    query = {k: ",".join(request.query.getall(k)) for k in dict.fromkeys(request.query)}
    http = protos.RpcHttp(
        method=request.method,
        url=str(request.url),
        headers=headers,
        query={k: v for k, v in query.items() if v},  # empty values are left out, as the host does
        params=route_params,
    )
    if body:
        http.body.bytes = body
        http.rawBody.bytes = body
    return protos.TypedData(http=http)


def set_cookie(cookie: Any) -> str:
    """An RpcHttpCookie as the Set-Cookie header the host writes for it."""
    parts = [f"{cookie.name}={cookie.value}"]
    if cookie.HasField("domain"):
        parts.append(f"Domain={cookie.domain.value}")
    if cookie.HasField("path"):
        parts.append(f"Path={cookie.path.value}")
    if cookie.HasField("expires"):
        parts.append(f"Expires={cookie.expires.value.ToDatetime().strftime('%a, %d %b %Y %H:%M:%S GMT')}")
    if cookie.HasField("max_age"):
        parts.append(f"Max-Age={int(cookie.max_age.value)}")
    if cookie.HasField("secure") and cookie.secure.value:
        parts.append("Secure")
    if cookie.HasField("http_only") and cookie.http_only.value:
        parts.append("HttpOnly")
    same_site = {1: "Lax", 2: "Strict", 3: "None"}.get(cookie.same_site)
    if same_site:
        parts.append(f"SameSite={same_site}")
    return "; ".join(parts)


def to_aiohttp(value: Any | None) -> web.Response:
    """The worker's return value (``TypedData``) as the response the host sends."""
    kind = value.WhichOneof("data") if value is not None else None
    if kind is None:
        return web.Response(status=204)
    if kind in ("string", "json"):
        text = getattr(value, kind)
        return web.Response(status=200, body=text.encode(), content_type="text/plain", charset="utf-8")
    if kind != "http":
        raise TypeError(f"HTTP function returned TypedData.{kind}, expected an HTTP response")
    http = value.http
    headers: CIMultiDict[str] = CIMultiDict()
    for name, header in http.headers.items():
        if name.lower() not in _HOP_BY_HOP:
            headers.add(name, header)
    for cookie in http.cookies:
        headers.add("Set-Cookie", set_cookie(cookie))
    body_kind = http.body.WhichOneof("data")
    body = getattr(http.body, body_kind) if body_kind else b""
    if isinstance(body, str):
        body = body.encode()
    return web.Response(status=int(http.status_code or 200), body=body, headers=headers)


class HttpTriggerRouter:
    """Dispatches ``/<routePrefix>/...`` requests to HTTP-triggered functions."""

    def __init__(self, loaded: LoadedApp, keys: HostKeys, invoker: Invoker, route_prefix: str) -> None:
        self.keys = keys
        self.invoker = invoker
        self.prefix = route_prefix.strip("/")
        functions = [HttpFunction(f, compile_route(f.route)) for f in loaded.by_trigger("httpTrigger")]
        self.functions = sorted(functions, key=lambda f: precedence_key(f.route))

    def add_routes(self, app: web.Application) -> None:
        """Register last: with an empty prefix the catch-all must not shadow host routes."""
        if self.prefix:
            app.router.add_route("*", f"/{self.prefix}", self.handle)
            app.router.add_route("*", f"/{self.prefix}/{{tail:.*}}", self.handle)
        else:
            app.router.add_route("*", "/{tail:.*}", self.handle)

    def resolve(self, raw_path: str, method: str) -> tuple[HttpFunction | None, dict[str, str], list[str]]:
        """The function for a path + method, its route params, and the methods the path allows."""
        path = raw_path.split("?", 1)[0].strip("/")
        if self.prefix:
            path = path[len(self.prefix) :].strip("/")
        allowed: list[str] = []
        for candidate in self.functions:
            params = candidate.route.match(path)
            if params is None:
                continue
            if method in candidate.info.methods:
                return candidate, params, allowed
            allowed.extend(m for m in candidate.info.methods if m not in allowed)
        return None, {}, allowed

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target, route_params, allowed = self.resolve(request.raw_path, request.method.upper())
        if target is None:
            if allowed:
                return web.Response(status=405, headers={"Allow": ", ".join(allowed)})
            return web.Response(status=404)
        fn = target.info
        if not authorized(fn.auth_level, self.keys, request):
            return web.Response(status=401)
        body = await request.read()
        try:
            result = await self.invoker.call(fn, to_rpc_http(request, body, route_params), reason=HOST_CALL_REASON)
        except Exception:  # the invoker logged name + type; the client learns nothing more
            return web.Response(status=500)
        try:
            return to_aiohttp(result.return_value)
        except (TypeError, ValueError):
            log.error("Function '%s' returned something that is not an HTTP response", fn.name)
            return web.Response(status=500)
