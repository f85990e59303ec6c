"""Bearer tokens as the emulated services see them.

The emulators cannot validate Entra signatures, so they accept any JWT-shaped token (the app's
loopback credential mints unsigned ones) but are otherwise as strict as Azure: the audience must be
the service's, the token must not be expired, and it must name the caller (`oid`). The caller
identity is what the Key Vault audit records and what later tells which consumer read which version.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

AUDIENCES: dict[str, frozenset[str]] = {
    "arm": frozenset(
        {
            "https://management.azure.com",
            "https://management.azure.com/",
            "https://management.core.windows.net/",
        }
    ),
    "keyvault": frozenset({"https://vault.azure.net", "https://vault.azure.net/"}),
    "eventgrid": frozenset({"https://eventgrid.azure.net", "https://eventgrid.azure.net/"}),
    "logs": frozenset({"https://api.loganalytics.io", "https://api.loganalytics.io/"}),
}


@dataclass(frozen=True)
class Caller:
    oid: str
    name: str | None
    audience: str
    claims: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.name}({self.oid})" if self.name else self.oid


class TokenError(Exception):
    """Why a presented token was refused; the message is safe to return."""


def _b64json(part: str) -> dict[str, Any]:
    padded = part + "=" * (-len(part) % 4)
    value = json.loads(base64.urlsafe_b64decode(padded))
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def parse_token(token: str, service: str) -> Caller:
    """Decode a JWT-shaped token and check audience, expiry and caller id for `service`."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("The access token is malformed.")
    try:
        _b64json(parts[0])
        claims = _b64json(parts[1])
    except (ValueError, json.JSONDecodeError) as exc:
        raise TokenError("The access token is malformed.") from exc
    aud = claims.get("aud")
    if aud not in AUDIENCES[service]:
        raise TokenError(f"The access token has an invalid audience '{aud}' for this service.")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp < time.time():
        raise TokenError("The access token expiry is missing or in the past.")
    oid = claims.get("oid")
    if not isinstance(oid, str) or not oid:
        raise TokenError("The access token carries no object id (oid).")
    return Caller(oid=oid, name=claims.get("name"), audience=aud, claims=claims)
