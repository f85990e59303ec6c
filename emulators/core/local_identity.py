"""Tokens for the local identities that are not the app: a test's consumer, the demo's operator, a benchmark.

The app gets its tokens from the emulated managed identity endpoint (emulators/core/identity.py), as on Azure.
The people and services around it — an operator creating keys by hand, a consumer reading Key Vault under
its own object id — have no such endpoint in a local run, so this credential mints unsigned JWT-shaped
tokens with the `oid` the emulators record (Key Vault's audit tells consumers apart by it). It is bound to
one endpoint and refuses any that is not on this machine: a minted token never leaves loopback.
Dev and test only (the emulators package is never deployed).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlparse

import jwt
from azure.core.credentials import AccessToken, AccessTokenInfo

from rotation.settings import is_loopback

TOKEN_LIFETIME = 3600
# For helpers that mint a raw token for a request to the emulators (always on this machine).
LOCAL_EMULATORS = "https://127.0.0.1"


class LocalTokenCredential:
    """A TokenCredential for one local identity (`object_id`), usable only against a loopback `endpoint`."""

    def __init__(self, object_id: str, name: str | None = None, *, endpoint: str, tenant_id: str | None = None) -> None:
        host = urlparse(endpoint).hostname or ""
        if not is_loopback(host):
            raise ValueError(f"{endpoint!r} is not a loopback address: local tokens are for the emulators only")
        self.object_id = object_id
        self.name = name
        self.tenant_id = tenant_id

    def mint(self, scopes: tuple[str, ...], tenant_id: str | None = None) -> tuple[str, int]:
        if not scopes:
            raise ValueError("at least one scope is required")
        now = int(time.time())
        expires = now + TOKEN_LIFETIME
        claims = {
            "aud": scopes[0].removesuffix("/.default"),
            "oid": self.object_id,
            "name": self.name,
            "tid": tenant_id or self.tenant_id,
            "iat": now,
            "exp": expires,
        }
        return jwt.encode(claims, None, algorithm="none"), expires

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        token, expires = self.mint(scopes, tenant_id)
        return AccessToken(token, expires)

    def get_token_info(self, *scopes: str, options: dict[str, Any] | None = None) -> AccessTokenInfo:
        token, expires = self.mint(scopes, (options or {}).get("tenant_id"))
        return AccessTokenInfo(token, expires)

    def close(self) -> None:
        """Nothing to release; present so clients can close their credential."""
