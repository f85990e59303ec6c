"""Error bodies in the shapes each real service answers with; clients parse these shapes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

_DEFAULT_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "RequestTimeout",
    409: "Conflict",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def default_code(status: int) -> str:
    return _DEFAULT_CODES.get(status, "Error")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def arm_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The ARM envelope: {"error": {"code", "message"}}."""
    return _json(status, {"error": {"code": code, "message": message}}, headers)


def msweb_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Microsoft.Web's own PascalCase envelope, which the SDK cannot parse (callers read the text)."""
    body = {
        "Code": code,
        "Message": message,
        "Target": None,
        "Details": [
            {"Message": message},
            {"Code": code},
            {"ErrorEntity": {"Code": code, "Message": message}},
        ],
        "Innererror": None,
    }
    return _json(status, body, headers)


def keyvault_error(
    status: int,
    code: str,
    message: str,
    inner: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return _json(status, {"error": error}, headers)


def eventgrid_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": [{"code": code, "message": message}]}}
    return _json(status, body, headers)


def logs_error(
    status: int,
    code: str,
    message: str,
    inner: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {
        "message": message,
        "code": code,
        "correlationId": "00000000-0000-0000-0000-000000000000",
    }
    if inner:
        error["innererror"] = inner
    return _json(status, {"error": error}, headers)


def service_error(
    service: str,
    status: int,
    code: str | None = None,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error in the envelope of `service`, for injected faults."""
    code = code or default_code(status)
    message = message or f"Injected fault: {status} {code}."
    if service == "arm":
        return arm_error(status, code, message, headers)
    if service == "keyvault":
        return keyvault_error(status, code, message, headers=headers)
    if service == "eventgrid":
        return eventgrid_error(status, code, message, headers)
    if service == "logs":
        return logs_error(status, code, message, headers=headers)
    return _json(status, {"error": {"code": code, "message": message}}, headers)
