"""The one place that decides where the app's Azure endpoints are and which credential it uses.

In Azure every endpoint is the public cloud's and the credential is the app's managed identity. On
the local stack devhost points the same settings at the emulators and selects the loopback token
credential, which is refused for any endpoint that is not on this machine. (devhost also sets the
standard HTTPS_PROXY / NO_PROXY variables so the probe reaches emulated apps by their host names; those are
read by `requests` and azure-core, never by the app, so they are not settings of the app.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Literal
from urllib.parse import urlparse

CredentialKind = Literal["managed-identity", "loopback-token"]
CREDENTIAL_KINDS: tuple[CredentialKind, ...] = ("managed-identity", "loopback-token")

# Every app setting the app reads (the policy file may reference more as %SETTING%).
SETTING_NAMES = (
    "KEYROTATION_CREDENTIAL",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "KEYROTATION_CA_BUNDLE",
    "KEYROTATION_LOCAL_IDENTITY",
    "ARM_ENDPOINT",
    "EVENTGRID_TOPIC_ENDPOINT",
    "LOGS_ENDPOINT",
    "LOG_ANALYTICS_WORKSPACE_ID",
    "KEY_VAULT_URL",
    "ROTATION_POLICY_PATH",
    "ROTATION_SCHEDULE",
    "ROTATION_MAX_CONCURRENCY",
    "ROTATION_MAX_STARTS_PER_MINUTE",  # read by the timer trigger (rotation/pacing.py)
    "KEYROTATION_SIGNING_KEY",  # read by rotation/signing.py
)
# Only meaningful on the local stack; a deployment never sets them.
LOCAL_ONLY_SETTINGS = ("KEYROTATION_CA_BUNDLE", "KEYROTATION_LOCAL_IDENTITY")

PUBLIC_ARM = "https://management.azure.com"
PUBLIC_LOGS = "https://api.loganalytics.io"
LOCAL_IDENTITY_DEFAULT = "00000000-0000-0000-0000-00000000a11e"


class SettingsError(ValueError):
    """A missing or invalid app setting; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    credential_kind: CredentialKind
    managed_identity_client_id: str | None
    tenant_id: str | None
    ca_bundle: str | None
    local_identity: str
    arm_endpoint: str
    eventgrid_topic_endpoint: str | None
    logs_endpoint: str
    log_analytics_workspace_id: str | None

    @property
    def is_local(self) -> bool:
        return self.credential_kind == "loopback-token"

    def check_endpoint(self, url: str, setting: str) -> str:
        """Refuse a non-loopback endpoint under the loopback credential (it would be sent our fake
        token) and plain http anywhere (bearer tokens must not travel in clear)."""
        parsed = urlparse(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise SettingsError(f"{setting}: must be an https:// URL, got {url!r}")
        if self.is_local and not is_loopback(parsed.hostname):
            raise SettingsError(
                f"{setting}: {url!r} is not a loopback address; KEYROTATION_CREDENTIAL=loopback-token "
                "is only allowed against local emulators"
            )
        return url.rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    kind = get("KEYROTATION_CREDENTIAL") or "managed-identity"
    if kind not in CREDENTIAL_KINDS:
        raise SettingsError(f"KEYROTATION_CREDENTIAL: must be one of {', '.join(CREDENTIAL_KINDS)}, got {kind!r}")
    ca_bundle = get("KEYROTATION_CA_BUNDLE")
    if ca_bundle and kind != "loopback-token":
        raise SettingsError("KEYROTATION_CA_BUNDLE: only allowed with KEYROTATION_CREDENTIAL=loopback-token")
    settings = Settings(
        credential_kind=kind,
        managed_identity_client_id=get("AZURE_CLIENT_ID"),
        tenant_id=get("AZURE_TENANT_ID"),
        ca_bundle=ca_bundle,
        local_identity=get("KEYROTATION_LOCAL_IDENTITY") or LOCAL_IDENTITY_DEFAULT,
        arm_endpoint=get("ARM_ENDPOINT") or PUBLIC_ARM,
        eventgrid_topic_endpoint=get("EVENTGRID_TOPIC_ENDPOINT"),
        logs_endpoint=get("LOGS_ENDPOINT") or PUBLIC_LOGS,
        log_analytics_workspace_id=get("LOG_ANALYTICS_WORKSPACE_ID"),
    )
    settings.check_endpoint(settings.arm_endpoint, "ARM_ENDPOINT")
    settings.check_endpoint(settings.logs_endpoint, "LOGS_ENDPOINT")
    if settings.eventgrid_topic_endpoint:
        settings.check_endpoint(settings.eventgrid_topic_endpoint, "EVENTGRID_TOPIC_ENDPOINT")
    return settings
