"""Reading the announced key from Key Vault with the consumer's own identity.

The event says which version to read (`data.secretId`). It is only trusted for the vault and secret
this consumer is configured for: an event naming another vault would otherwise make the consumer send
a Key Vault token there, and one naming another secret would switch it to someone else's key.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from keyconsumer.credential import make_credential
from keyconsumer.settings import ConsumerSettings, is_loopback

if TYPE_CHECKING:
    from azure.keyvault.secrets import SecretClient

_SECRET_ID = re.compile(r"^(https://[^\s/?#]+)/secrets/([0-9A-Za-z-]{1,127})/([0-9a-f]{32})$")


class SecretIdError(ValueError):
    """The event's secretId is not a versioned id of this consumer's secret."""


@dataclass(frozen=True)
class SecretRef:
    vault_url: str
    name: str
    version: str


def parse_secret_id(secret_id: object, settings: ConsumerSettings) -> SecretRef:
    match = _SECRET_ID.match(secret_id) if isinstance(secret_id, str) else None
    if not match:
        raise SecretIdError("data.secretId: not a versioned Key Vault secret id")
    vault, name, version = match.groups()
    if urlparse(vault).netloc.lower() != urlparse(settings.key_vault_url).netloc.lower():
        raise SecretIdError(f"data.secretId: vault {vault} is not CONSUMER_KEY_VAULT_URL")
    if name.lower() != settings.secret_name.lower():
        raise SecretIdError(f"data.secretId: secret {name!r} is not CONSUMER_SECRET_NAME")
    return SecretRef(vault, name, version)


class SecretReader:
    """One SecretClient per process (it caches the vault's challenge and the token)."""

    def __init__(self, settings: ConsumerSettings) -> None:
        self.settings = settings
        self._client: SecretClient | None = None
        self._lock = threading.Lock()

    def _secret_client(self) -> SecretClient:
        from azure.keyvault.secrets import SecretClient

        with self._lock:
            if self._client is None:
                url = self.settings.key_vault_url
                transport = {"connection_verify": self.settings.ca_bundle} if self.settings.ca_bundle else {}
                self._client = SecretClient(
                    url,
                    make_credential(self.settings),
                    # A loopback vault cannot pass the SDK's check that the challenge names vault.azure.net.
                    verify_challenge_resource=not is_loopback(urlparse(url).hostname or ""),
                    **transport,
                )
            return self._client

    def read(self, ref: SecretRef) -> str:
        """The value of exactly this version (never "latest": that may already be a newer rotation's)."""
        from azure.core.exceptions import HttpResponseError

        try:
            secret = self._secret_client().get_secret(ref.name, ref.version)
        except HttpResponseError as exc:  # re-raised without the response body
            raise RuntimeError(f"Key Vault read of {ref.name}/{ref.version} failed: HTTP {exc.status_code}") from None
        if not secret.value:
            raise RuntimeError(f"Key Vault version {ref.name}/{ref.version} has no value")
        return secret.value

    def read_latest(self) -> tuple[str, str]:
        """(version, value) of the newest version: how a consumer that just started gets its key."""
        from azure.core.exceptions import HttpResponseError

        name = self.settings.secret_name
        try:
            secret = self._secret_client().get_secret(name)
        except HttpResponseError as exc:
            raise RuntimeError(f"Key Vault read of {name} failed: HTTP {exc.status_code}") from None
        if not secret.value or not secret.properties.version:
            raise RuntimeError(f"Key Vault secret {name} has no readable latest version")
        return str(secret.id), secret.value
