"""Signatures that say "the app's own code wrote this": on orchestration inputs and external events.

Whoever holds the Durable `durabletask_extension` system key (and any token Easy Auth lets through) can
start `rotation_orchestrator` with any input and raise any event on any instance (threat model 3.2, 3.6).
The HTTP API, the timer and the near-expiry trigger sign what they hand the Durable engine with a key only
the app holds (app setting `KEYROTATION_SIGNING_KEY`, a Key Vault reference on Azure); the rotation checks
the signature in an activity (`activities/targets.py`: the verdict is recorded in the history, so a replay
never re-decides it, even after the key changed) and ignores what is unsigned or mis-signed.

Several keys may be set (separated by commas or whitespace): the first signs, any verifies, so the key
can be changed without a running rotation ever judging an event it already heard differently on replay
(docs/deploy.md, "The signing key").

A signature covers a purpose, the rotation it is for, and the canonical JSON of the payload, so a signed
approval cannot be replayed onto another rotation, another event or another hold. HMAC-SHA256: the
signer and the checker are the same app. Pure: the key is passed in, never logged, never returned.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

SIGNATURE_FIELD = "signature"
SIGNING_KEY_SETTING = "KEYROTATION_SIGNING_KEY"
MIN_KEY_CHARS = 15  # azd secretOrRandomPassword makes 15 of [A-Za-z0-9] (about 89 bits); longer is better
UNRESOLVED_REFERENCE = "@Microsoft.KeyVault("
PURPOSE_INPUT = "rotation-input"
PURPOSE_EVENT = "rotation-event"


class SigningKeyError(RuntimeError):
    """The app has no usable signing key: nothing can be signed or checked (fail closed)."""


def signing_keys(environ: Mapping[str, str] | None = None) -> tuple[bytes, ...]:
    """Every key of the ring, the signing one first."""
    env = os.environ if environ is None else environ
    raw = env.get(SIGNING_KEY_SETTING, "").strip()
    if raw.startswith(UNRESOLVED_REFERENCE):
        # App Service passes a Key Vault reference it could not resolve through as the literal text, which
        # anyone can derive (the vault and secret names are not secret): never sign or verify with it.
        raise SigningKeyError(
            f"{SIGNING_KEY_SETTING}: the Key Vault reference was not resolved (check the app's identity has "
            "Key Vault Secrets User on the signing vault and keyVaultReferenceIdentity is set)"
        )
    keys = tuple(k.encode() for k in raw.replace(",", " ").split())
    if not keys or any(len(k) < MIN_KEY_CHARS for k in keys):
        raise SigningKeyError(
            f"{SIGNING_KEY_SETTING}: must be set to one or more random values of at least {MIN_KEY_CHARS} "
            "characters each (on Azure a Key Vault reference; see docs/deploy.md)"
        )
    return keys


def signing_key(environ: Mapping[str, str] | None = None) -> bytes:
    """The key that signs."""
    return signing_keys(environ)[0]


def _message(purpose: str, scope: str, payload: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in payload.items() if k != SIGNATURE_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"keyrotation/v1\n{purpose}\n{scope}\n{canonical}".encode()


def sign(key: bytes, purpose: str, scope: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """`payload` with its signature added (any earlier one replaced)."""
    digest = hmac.new(key, _message(purpose, scope, payload), hashlib.sha256).hexdigest()
    return {**{k: v for k, v in payload.items() if k != SIGNATURE_FIELD}, SIGNATURE_FIELD: digest}


def verify(key: bytes, purpose: str, scope: str, payload: Any) -> bool:
    """Whether `payload` carries a valid signature for this purpose and scope."""
    if not isinstance(payload, Mapping):
        return False
    given = payload.get(SIGNATURE_FIELD)
    if not isinstance(given, str):
        return False
    expected = hmac.new(key, _message(purpose, scope, payload), hashlib.sha256).hexdigest()
    return hmac.compare_digest(given, expected)


def sign_input(key: bytes, request: Mapping[str, Any]) -> dict[str, Any]:
    """An orchestration input, signed for its own rotation id."""
    return sign(key, PURPOSE_INPUT, str(request.get("rotationId", "")), request)


def verify_input_any(keys: tuple[bytes, ...], request: Any) -> bool:
    return any(verify_input(k, request) for k in keys)


def verify_input(key: bytes, request: Any) -> bool:
    rotation_id = request.get("rotationId") if isinstance(request, Mapping) else None
    return isinstance(rotation_id, str) and verify(key, PURPOSE_INPUT, rotation_id, request)


def event_scope(rotation_id: str, event: str) -> str:
    return f"{rotation_id}/{event}"


def sign_event(key: bytes, rotation_id: str, event: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """An external event's payload, signed for the one rotation and event name it is raised for."""
    return sign(key, PURPOSE_EVENT, event_scope(rotation_id, event), payload)


def verify_event(key: bytes, rotation_id: str, event: str, payload: Any) -> bool:
    return verify(key, PURPOSE_EVENT, event_scope(rotation_id, event), payload)


def event_problem(
    rotation_id: str, event: str, payload: Any, expect: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> str | None:
    """Why an external event must be ignored (None: it is the app's, for this rotation, and every field of
    `expect` has the value given: a decision names the hold it decides)."""
    try:
        keys = signing_keys(environ)
    except SigningKeyError as exc:
        return str(exc)
    if not any(verify_event(k, rotation_id, event, payload) for k in keys):
        return "not signed by this app"
    for name, value in expect.items():
        if payload.get(name) != value:
            return f"{name} does not match this rotation's state"
    return None
