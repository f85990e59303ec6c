"""Which identity the consumer uses: its managed identity in Azure, a loopback token locally.

The local emulators accept JWT-shaped, unsigned tokens and record the caller's `oid` in the Key Vault
audit, so the consumer's reads are attributed to it, not to the rotation app. Never used in Azure:
settings refuse the loopback credential unless every endpoint is on this machine.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any

from keyrotation_kit.settings import ConsumerSettings

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential

TOKEN_LIFETIME = 3600


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


class LoopbackTokenCredential:
    """A TokenCredential minting unsigned tokens `{aud, oid, name, exp}` for the local emulators."""

    def __init__(self, object_id: str, name: str = "sample-consumer") -> None:
        self.object_id = object_id
        self.name = name

    def _mint(self, scopes: tuple[str, ...]) -> tuple[str, int]:
        if not scopes:
            raise ValueError("at least one scope is required")
        now = int(time.time())
        claims = {
            "aud": scopes[0].removesuffix("/.default"),
            "oid": self.object_id,
            "name": self.name,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
        }
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.", now + TOKEN_LIFETIME

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.credentials import AccessToken

        return AccessToken(*self._mint(scopes))

    def get_token_info(self, *scopes: str, options: dict[str, Any] | None = None) -> AccessTokenInfo:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo(*self._mint(scopes))

    def close(self) -> None:
        """Nothing to release."""


def make_credential(settings: ConsumerSettings) -> TokenCredential:
    if settings.is_local:
        assert settings.object_id  # checked by load_settings
        return LoopbackTokenCredential(settings.object_id)
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
