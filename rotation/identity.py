"""Who is calling, from App Service Authentication (Easy Auth), and what they may do.

The platform validates the caller's token and forwards `X-MS-CLIENT-PRINCIPAL`: base64 of
`{"auth_typ", "claims": [{"typ", "val"}], "name_typ", "role_typ"}`. A client cannot set that header
in Azure, but it can reach an app whose authentication is off, so the header is trusted only when the
platform says Easy Auth is on (`WEBSITE_AUTH_ENABLED=True`). Anything malformed is no identity: the
routes answer 401, never 500. Function keys are not identities and authorize nothing here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
AUTH_ENABLED_SETTING = "WEBSITE_AUTH_ENABLED"
MAX_PRINCIPAL_HEADER = 16 * 1024

ROLE_READER = "KeyRotation.Reader"
ROLE_OPERATOR = "KeyRotation.Operator"
ROLE_EMERGENCY = "KeyRotation.Emergency"
ROLE_APPROVER = "KeyRotation.Approver"
ROLE_CONSUMER = "KeyRotation.Consumer"
ROLES: tuple[str, ...] = (ROLE_READER, ROLE_OPERATOR, ROLE_EMERGENCY, ROLE_APPROVER, ROLE_CONSUMER)

OID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
NAME_CLAIMS = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

ActorKind = Literal["principal", "schedule", "event", "system"]


@dataclass(frozen=True)
class Actor:
    """Who or what started or decided something, for the audit trail and events (invariant I6).
    principal: a person or app identified by Easy Auth; schedule: the timer; event: an Event Grid
    event (e.g. Key Vault near-expiry); system: the orchestrator itself (e.g. a hold deadline)."""

    kind: ActorKind
    name: str
    object_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "objectId": self.object_id}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Actor:
        return Actor(data["kind"], data["name"], data.get("objectId"))


SCHEDULE_ACTOR = Actor("schedule", "timer")
NEAR_EXPIRY_ACTOR = Actor("event", "Microsoft.KeyVault.SecretNearExpiry")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: display name, Entra object id (lowercase), app roles."""

    name: str
    object_id: str
    roles: frozenset[str]
    auth_type: str = "aad"

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def as_actor(self) -> Actor:
        return Actor("principal", self.name, self.object_id)


def auth_enabled(environ: Mapping[str, str]) -> bool:
    """Easy Auth is on exactly when the platform sets WEBSITE_AUTH_ENABLED to true (any case)."""
    return environ.get(AUTH_ENABLED_SETTING, "").strip().lower() == "true"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


def parse_principal(encoded: str) -> Caller | None:
    """Decode an X-MS-CLIENT-PRINCIPAL value; None for anything malformed or without an object id."""
    if not encoded or len(encoded) > MAX_PRINCIPAL_HEADER:
        return None
    text = encoded.strip()
    try:
        altchars = b"-_" if ("-" in text or "_" in text) else None
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=altchars, validate=True)
        body = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("claims"), list):
        return None
    name_typ = body.get("name_typ") if isinstance(body.get("name_typ"), str) else None
    role_typ = body.get("role_typ") if isinstance(body.get("role_typ"), str) else None
    claims: dict[str, list[str]] = {}
    for claim in body["claims"]:
        if not isinstance(claim, dict) or not all(isinstance(claim.get(k), str) for k in ("typ", "val")):
            return None
        claims.setdefault(claim["typ"], []).append(claim["val"])

    def first(types: tuple[str, ...]) -> str | None:
        return next((claims[t][0] for t in types if claims.get(t)), None)

    object_id = first(OID_CLAIMS)
    if object_id is None or not _GUID.match(object_id):
        return None
    role_types = ROLE_CLAIMS + ((role_typ,) if role_typ else ())
    roles = frozenset(r for t in role_types for r in claims.get(t, []))
    name = first(((name_typ,) if name_typ else ()) + NAME_CLAIMS) or object_id
    auth_type = body.get("auth_typ")
    return Caller(
        name=name,
        object_id=object_id.lower(),
        roles=roles,
        auth_type=auth_type if isinstance(auth_type, str) else "unknown",
    )


def caller_from_request(headers: Mapping[str, str], environ: Mapping[str, str]) -> Caller | None:
    """The caller of an HTTP request, or None (-> 401). The principal header counts only with Easy Auth on."""
    if not auth_enabled(environ):
        return None
    encoded = _header(headers, PRINCIPAL_HEADER)
    return parse_principal(encoded) if encoded else None
