"""The consumer's settings, read and checked in one place so a bad setting stops it at startup.

In Azure the consumer uses its managed identity for Key Vault and for the rotation app's API. On the
local stack it uses a loopback token credential with its own object id, which is refused unless every
endpoint it would send a token to is on this machine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Literal
from urllib.parse import urlparse

CredentialKind = Literal["managed-identity", "loopback-token"]
CREDENTIAL_KINDS: tuple[str, ...] = ("managed-identity", "loopback-token")
TARGET_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,46}[a-z0-9]$")
SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
OBJECT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

SETTING_NAMES = (
    "CONSUMER_TARGET_ID",
    "CONSUMER_KEY_VAULT_URL",
    "CONSUMER_SECRET_NAME",
    "CONSUMER_TARGET_URL",
    "CONSUMER_CREDENTIAL",
    "AZURE_CLIENT_ID",
    "CONSUMER_OBJECT_ID",
    "CONSUMER_CA_BUNDLE",
    "KEYROTATION_API_URL",
    "KEYROTATION_API_AUDIENCE",
    "KEYROTATION_API_TOKEN",
    "CONSUMER_REFRESH_SECONDS",
)
DEFAULT_REFRESH_SECONDS = 300.0  # the fallback when events are lost: a Key Vault read per instance per 5 min


class SettingsError(ValueError):
    """A missing or invalid setting; the message names it."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsumerSettings:
    target_id: str
    key_vault_url: str
    secret_name: str
    api_url: str
    credential_kind: CredentialKind = "managed-identity"
    target_url: str | None = None
    managed_identity_client_id: str | None = None
    object_id: str | None = None
    ca_bundle: str | None = None
    api_audience: str | None = None
    api_token: str | None = None
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS

    @property
    def is_local(self) -> bool:
        return self.credential_kind == "loopback-token"

    @property
    def verify(self) -> str | bool:
        """What `requests` / azure-core should trust: the emulators' CA locally, public CAs in Azure."""
        return self.ca_bundle or True

    def __repr__(self) -> str:  # the local API token is a bearer credential: never print it
        token = "***" if self.api_token else None
        return f"ConsumerSettings(target_id={self.target_id!r}, api_url={self.api_url!r}, api_token={token})"


def _url(value: str, setting: str, *, local: bool, allow_http_loopback: bool = False) -> str:
    parsed = urlparse(value)
    host = parsed.hostname or ""
    if not host or parsed.scheme not in ("https", "http"):
        raise SettingsError(f"{setting}: must be an https:// URL, got {value!r}")
    if parsed.scheme == "http" and not (allow_http_loopback and local and is_loopback(host)):
        raise SettingsError(f"{setting}: must be https (plain http only to a loopback host on the local stack)")
    if local and not is_loopback(host):
        raise SettingsError(f"{setting}: {value!r} is not loopback; CONSUMER_CREDENTIAL=loopback-token is local only")
    return value.rstrip("/")


def _seconds(value: str | None, setting: str) -> float:
    if value is None:
        return DEFAULT_REFRESH_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        raise SettingsError(f"{setting}: must be a number of seconds, got {value!r}") from None
    if not 0.05 <= seconds <= 86400:
        raise SettingsError(f"{setting}: must be between 0.05 and 86400 seconds")
    return seconds


def load_settings(environ: Mapping[str, str] | None = None) -> ConsumerSettings:
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    def need(name: str) -> str:
        value = get(name)
        if value is None:
            raise SettingsError(f"{name}: required")
        return value

    kind = get("CONSUMER_CREDENTIAL") or "managed-identity"
    if kind not in CREDENTIAL_KINDS:
        raise SettingsError(f"CONSUMER_CREDENTIAL: must be one of {', '.join(CREDENTIAL_KINDS)}, got {kind!r}")
    local = kind == "loopback-token"
    target_id = need("CONSUMER_TARGET_ID")
    if not TARGET_ID.match(target_id):
        raise SettingsError(f"CONSUMER_TARGET_ID: {target_id!r} is not a target id")
    secret_name = need("CONSUMER_SECRET_NAME")
    if not SECRET_NAME.match(secret_name):
        raise SettingsError(f"CONSUMER_SECRET_NAME: {secret_name!r} is not a Key Vault secret name")
    target_url = get("CONSUMER_TARGET_URL")
    settings = ConsumerSettings(
        target_id=target_id,
        key_vault_url=_url(need("CONSUMER_KEY_VAULT_URL"), "CONSUMER_KEY_VAULT_URL", local=local),
        secret_name=secret_name,
        api_url=_url(need("KEYROTATION_API_URL"), "KEYROTATION_API_URL", local=local, allow_http_loopback=True),
        credential_kind=kind,  # type: ignore[arg-type]  # checked against CREDENTIAL_KINDS above
        target_url=_url(target_url, "CONSUMER_TARGET_URL", local=local) if target_url else None,
        managed_identity_client_id=get("AZURE_CLIENT_ID"),
        object_id=get("CONSUMER_OBJECT_ID"),
        ca_bundle=get("CONSUMER_CA_BUNDLE"),
        api_audience=get("KEYROTATION_API_AUDIENCE"),
        api_token=get("KEYROTATION_API_TOKEN"),
        refresh_seconds=_seconds(get("CONSUMER_REFRESH_SECONDS"), "CONSUMER_REFRESH_SECONDS"),
    )
    if local:
        if not settings.object_id or not OBJECT_ID.match(settings.object_id):
            raise SettingsError("CONSUMER_OBJECT_ID: required with loopback-token (the consumer's Entra object id)")
        if not settings.api_token:
            raise SettingsError("KEYROTATION_API_TOKEN: required with loopback-token (python -m devhost token ...)")
    else:
        for name in ("CONSUMER_CA_BUNDLE", "KEYROTATION_API_TOKEN", "CONSUMER_OBJECT_ID"):
            if get(name):
                raise SettingsError(f"{name}: only allowed with CONSUMER_CREDENTIAL=loopback-token")
        if not settings.api_audience:
            raise SettingsError("KEYROTATION_API_AUDIENCE: required (the rotation app's Easy Auth audience)")
    return settings
