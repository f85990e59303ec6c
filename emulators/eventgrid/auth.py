"""How the topic authenticates a publisher: access key, SAS token, or an Entra bearer token.

The SAS check mirrors `azure.eventgrid.generate_sas`: the token is `r=<quoted resource>&e=<quoted
expiry>&s=<quoted base64 HMAC-SHA256>`, signed over the literal `r=...&e=...` text with the
base64-decoded topic key. So the topic key must be standard base64 like Azure's (44 characters).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from aiohttp import web

from emulators.core.auth import Caller, TokenError, bearer_token, parse_token
from emulators.core.errors import eventgrid_error
from emulators.core.state import STATE_KEY, EmulatorState

TOPIC_KEY_SETTING = "eventgrid.topic_key"


def _new_topic_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _is_standard_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def ensure_topic_key(state: EmulatorState) -> str:
    """Make the persistent topic key Azure-shaped; a key from an older state folder that SAS signing
    cannot decode is replaced once (logged in the change journal)."""
    key = state.persistent_secret(TOPIC_KEY_SETTING, _new_topic_key)
    if not _is_standard_base64(key):
        key = _new_topic_key()
        state.store.set_setting(TOPIC_KEY_SETTING, key)
        state.store.record_change(None, "eventgrid.topic_key_replaced", "eventgrid/topic", {"reason": "not base64"})
    return key


def unauthorized(message: str) -> web.Response:
    return eventgrid_error(401, "Unauthorized", message)


def _parse_expiry(text: str) -> datetime:
    """`str(datetime)` as the Python SDK writes it, ISO 8601, or .NET's invariant 'M/d/yyyy h:mm:ss tt'."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        parsed = datetime.strptime(text.strip(), "%m/%d/%Y %I:%M:%S %p")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_sas(token: str, key: str, base_url: str, now: datetime) -> str | None:
    """Why the SAS token is refused, or None when it is valid for this topic."""
    unsigned, sep, signature = token.rpartition("&s=")
    fields = dict(part.partition("=")[::2] for part in unsigned.split("&")) if sep else {}
    if set(fields) != {"r", "e"} or not signature:
        return "The SAS token is malformed: expected 'r=<resource>&e=<expiry>&s=<signature>'."
    expected = base64.b64encode(hmac.new(base64.b64decode(key), unsigned.encode("ascii"), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, unquote(signature).encode("ascii", "replace")):
        return "The SAS token signature is invalid for this topic's access keys."
    resource = urlsplit(unquote(fields["r"]))
    ours = urlsplit(base_url)
    if resource.netloc.lower() != ours.netloc.lower() or resource.path.rstrip("/").lower() != "/api/events":
        return f"The SAS token resource '{unquote(fields['r'])}' is not this topic's endpoint."
    try:
        expiry = _parse_expiry(unquote(fields["e"]))
    except ValueError:
        return "The SAS token expiry is not a date-time."
    if expiry <= now:
        return f"The SAS token expired at {expiry.isoformat()}."
    return None


async def authenticate(request: web.Request) -> Caller | web.StreamResponse:
    """aeg-sas-key, else aeg-sas-token, else a bearer token for https://eventgrid.azure.net."""
    state = request.app[STATE_KEY]
    key = state.topic_key
    presented_key = request.headers.get("aeg-sas-key")
    if presented_key is not None:
        if hmac.compare_digest(presented_key.encode(), key.encode()):
            return Caller(oid="aeg-sas-key", name="topic access key", audience="", claims={})
        return unauthorized("The request authorization key is not authorized for this topic: the key is invalid.")
    token = request.headers.get("aeg-sas-token")
    if token is not None:
        problem = check_sas(token, key, state.base_url, datetime.now(UTC))
        if problem:
            return unauthorized(problem)
        return Caller(oid="aeg-sas-token", name="topic SAS token", audience="", claims={})
    bearer = bearer_token(request)
    if bearer is None:
        return unauthorized(
            "The request did not contain authorization information: send aeg-sas-key, aeg-sas-token or a Bearer token."
        )
    try:
        return parse_token(bearer, "eventgrid")
    except TokenError as exc:
        return unauthorized(str(exc))
