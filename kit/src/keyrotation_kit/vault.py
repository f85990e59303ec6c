"""Reading the target's key from Key Vault with the consumer's own identity.

An event says which version to read (`data.secretId`); it is only trusted for the vault and secret this
consumer is configured for: an event naming another vault would otherwise make the consumer send a Key
Vault token there, and one naming another secret would switch it to someone else's key. Errors name the
secret and an HTTP status, never a response body.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlparse

from keyrotation_kit.credential import make_credential
from keyrotation_kit.settings import ConsumerSettings, is_loopback

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.keyvault.secrets import SecretClient

_SECRET_ID = re.compile(r"^(https://[^\s/?#]+)/secrets/([0-9A-Za-z-]{1,127})/([0-9a-f]{32})$")
# The rotation app tags the versions it writes (managedBy=keyrotation, target, rotationId): a consumer that
# reads "latest" without an event still learns which rotation to acknowledge.
MANAGED_BY = "keyrotation"


class SecretIdError(ValueError):
    """The event's secretId is not a versioned id of this consumer's secret."""


class KeyVaultError(RuntimeError):
    """A Key Vault read failed; the message names the secret, the version and a status, nothing more."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SecretRef:
    vault_url: str
    name: str
    version: str


@dataclass(frozen=True)
class SecretVersion:
    """One version as read: its value never appears in a repr."""

    secret_id: str
    version: str
    value: str = field(repr=False)
    rotation_id: str | None = None


class SecretSource(Protocol):
    """Where keys come from: Key Vault in production, a fake in unit tests."""

    def read(self, version: str | None) -> SecretVersion:
        """That version, or the latest one when `version` is None."""
        ...


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


class KeyVaultSource:
    """One SecretClient per process (it caches the vault's challenge and the token)."""

    def __init__(self, settings: ConsumerSettings, credential: TokenCredential | None = None) -> None:
        self.settings = settings
        self._credential = credential
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
                    self._credential or make_credential(self.settings),
                    # A loopback vault cannot pass the SDK's check that the challenge names vault.azure.net.
                    verify_challenge_resource=not is_loopback(urlparse(url).hostname or ""),
                    retry_total=0,  # the kit backs off itself; the SDK's retries would hide an outage for ~1 min
                    **transport,
                )
            return self._client

    def read(self, version: str | None) -> SecretVersion:
        from azure.core.exceptions import AzureError, HttpResponseError

        name = self.settings.secret_name
        shown = f"{name}/{version or 'latest'}"
        try:
            secret = self._secret_client().get_secret(name, version)
        except HttpResponseError as exc:  # re-raised without the response body
            raise KeyVaultError(f"Key Vault read of {shown} failed: HTTP {exc.status_code}", exc.status_code) from None
        except AzureError as exc:
            raise KeyVaultError(f"Key Vault read of {shown} failed: {type(exc).__name__}") from None
        if not secret.value or not secret.properties.version or not secret.id:
            raise KeyVaultError(f"Key Vault version {shown} has no value")
        tags = secret.properties.tags or {}
        ours = tags.get("managedBy") == MANAGED_BY and tags.get("target") == self.settings.target_id
        return SecretVersion(
            str(secret.id), secret.properties.version, secret.value, tags.get("rotationId") if ours else None
        )
