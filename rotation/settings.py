"""The one place that decides where the app's Azure endpoints are and which identity it uses.

In Azure every endpoint is the public cloud's and the credential is the app's user-assigned managed
identity (`AZURE_CLIENT_ID`), obtained through the token service App Service exposes (`IDENTITY_ENDPOINT`,
`IDENTITY_HEADER`, read by azure-identity, never by the app). On the local stack devhost points the same
settings at the emulators, which serve that token service too: there is no credential kind of the local
stack's own. (devhost also sets the standard HTTPS_PROXY / NO_PROXY and REQUESTS_CA_BUNDLE variables so the
probe reaches emulated apps by their host names and the clients trust the emulators' CA; those are read by
`requests` and azure-core, never by the app, so they are not settings of the app.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from urllib.parse import urlparse

# Every app setting the app reads (the policy file may reference more as %SETTING%).
SETTING_NAMES = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
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
# Settings of earlier versions that only the local stack used: refused, so a stale one is not silently
# ignored. KEYROTATION_CREDENTIAL=managed-identity (what earlier deployments set) is what the app does anyway.
REMOVED_SETTINGS = ("KEYROTATION_CREDENTIAL", "KEYROTATION_CA_BUNDLE", "KEYROTATION_LOCAL_IDENTITY")

PUBLIC_ARM = "https://management.azure.com"
PUBLIC_LOGS = "https://api.loganalytics.io"


class SettingsError(ValueError):
    """A missing or invalid app setting; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    managed_identity_client_id: str | None
    tenant_id: str | None
    arm_endpoint: str
    eventgrid_topic_endpoint: str | None
    logs_endpoint: str
    log_analytics_workspace_id: str | None

    def check_endpoint(self, url: str, setting: str) -> str:
        """Refuse plain http anywhere: bearer tokens must not travel in clear."""
        parsed = urlparse(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise SettingsError(f"{setting}: must be an https:// URL, got {url!r}")
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

    for name in REMOVED_SETTINGS:
        if get(name) and not (name == "KEYROTATION_CREDENTIAL" and get(name) == "managed-identity"):
            raise SettingsError(
                f"{name}: no longer a setting; the app always uses its managed identity (AZURE_CLIENT_ID), "
                "and trusts a local CA through REQUESTS_CA_BUNDLE"
            )
    settings = Settings(
        managed_identity_client_id=get("AZURE_CLIENT_ID"),
        tenant_id=get("AZURE_TENANT_ID"),
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
