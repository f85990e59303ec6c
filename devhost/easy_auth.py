"""App Service Authentication (Easy Auth) simulation: devhost-issued tokens and principal headers.

In Azure the platform validates the caller's token and forwards ``X-MS-CLIENT-PRINCIPAL*`` headers;
a client can never set those headers itself. Locally, ``python -m devhost token`` issues an HS256 JWT
(PyJWT) signed with a random key in ``<state>/easyauth.key``; the host verifies it and injects the headers.

As deployed (``infra/modules/functionapp.bicep`` ``authsettingsV2``: ``requireAuthentication``,
``Return401``, ``excludedPaths``), a request without a token is refused on every path but the excluded
ones, before any key check: keys are checked by the host afterwards, in addition.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt
from aiohttp import web
from multidict import CIMultiDict

ALGORITHM = "HS256"  # pinned: verify_token accepts no other
ISSUER = "https://devhost.local/easyauth"
AUDIENCE = "api://devhost"
OID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
STRIPPED_PREFIXES = ("x-ms-client-principal", "x-ms-token-")
# globalValidation.excludedPaths in infra/modules/functionapp.bicep; compared ignoring case and a
# trailing slash (devhost serves the Event Grid webhook under several spellings).
EXCLUDED_PATHS = ("/runtime/webhooks/eventgrid",)
_OID_NAMESPACE = uuid.UUID("5c1e3f0a-7d0b-4a52-9a55-6b1f4b0d8e21")


class InvalidToken(Exception):
    """The bearer token is malformed, forged, or expired. The message never contains the token."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_signing_key(state_dir: Path) -> bytes:
    """The HMAC key; created once (mode 0600) so tokens survive a host restart."""
    path = state_dir / "easyauth.key"
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _unb64url(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(_b64url(secrets.token_bytes(32)))
    return _unb64url(path.read_text().strip())


def default_oid(name: str) -> str:
    """A stable object id per name, so the same person keeps the same identity across tokens."""
    return str(uuid.uuid5(_OID_NAMESPACE, name))


def issue_token(key: bytes, name: str, roles: Iterable[str], oid: str | None = None, ttl: int = 3600) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now - 5,
        "exp": now + ttl,
        "name": name,
        "oid": oid or default_oid(name),
        "roles": list(roles),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


# PyJWT's refusals, each as the one-line reason the 401 carries (error_description); never the token.
_REFUSALS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong issuer or audience"),
    (jwt.InvalidIssuerError, "wrong issuer or audience"),
    (jwt.InvalidAlgorithmError, f"token not signed with {ALGORITHM}"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.DecodeError, "malformed token"),
)


def verify_token(key: bytes, token: str) -> dict:
    """Return the claims of a valid devhost token or raise InvalidToken.

    Only HS256 is accepted (so neither ``alg: none`` nor another algorithm under the same key passes),
    and exp, iss and aud must be present and right; nbf and iat are checked when present.
    """
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"token has no {exc.claim}") from None
    except jwt.InvalidTokenError as exc:
        reason = next((text for kind, text in _REFUSALS if isinstance(exc, kind)), "invalid token")
        raise InvalidToken(reason) from None


@dataclass(frozen=True)
class Principal:
    name: str
    oid: str
    roles: tuple[str, ...]

    def headers(self) -> dict[str, str]:
        """The headers Easy Auth forwards for an Entra ID (aad) caller."""
        claims = [
            {"typ": "name", "val": self.name},
            {"typ": OID_CLAIM, "val": self.oid},
            {"typ": "iss", "val": ISSUER},
            {"typ": "aud", "val": AUDIENCE},
            *({"typ": "roles", "val": role} for role in self.roles),
        ]
        body = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
        encoded = base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
        return {
            "X-MS-CLIENT-PRINCIPAL": encoded,
            "X-MS-CLIENT-PRINCIPAL-NAME": self.name,
            "X-MS-CLIENT-PRINCIPAL-ID": self.oid,
            "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
        }


def principal_from_claims(claims: dict) -> Principal:
    roles = claims.get("roles") or []
    if isinstance(roles, str):
        roles = [roles]
    return Principal(name=str(claims.get("name", "")), oid=str(claims.get("oid", "")), roles=tuple(roles))


def strip_principal_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop what only the platform may set; a client-sent principal must never reach the app."""
    return [(k, v) for k, v in headers if not k.lower().startswith(STRIPPED_PREFIXES)]


def unauthorized(description: str | None = None) -> web.Response:
    """401 with a Bearer challenge; ``error`` only when a token was presented (RFC 6750 section 3)."""
    challenge = 'Bearer realm="devhost"'
    if description is not None:
        challenge += f', error="invalid_token", error_description="{description}"'
    return web.Response(status=401, headers={"WWW-Authenticate": challenge})


def is_excluded(path: str, excluded: Iterable[str] = EXCLUDED_PATHS) -> bool:
    """Whether Easy Auth lets an unauthenticated request to ``path`` through to the host."""
    normalized = path.rstrip("/").lower()
    return any(normalized == e.rstrip("/").lower() for e in excluded)


def easy_auth_middleware(key: bytes) -> Callable:
    """aiohttp middleware: refuses unauthenticated requests and rewrites headers as Easy Auth does."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable]) -> web.StreamResponse:
        kept = strip_principal_headers(request.headers.items())
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            try:
                claims = verify_token(key, token.strip())
            except InvalidToken as exc:
                return unauthorized(str(exc))
            kept.extend(principal_from_claims(claims).headers().items())
        elif not is_excluded(request.path):
            return unauthorized()  # requireAuthentication + Return401: before any route or key check
        return await handler(request.clone(headers=CIMultiDict(kept)))

    return middleware
