"""The client factory: the only place that builds credentials and Azure service SDK clients.

SDK modules are imported inside the functions so `import function_app` stays fast. Settings decide
endpoints and the credential (rotation/settings.py); the quirks that decide how each client must be
built for a loopback emulator are handled here and nowhere else. Every client gets the target's call
budget (policy `calls`: timeouts, retries, the longest Retry-After honoured; activities/call_budget.py),
or the built-in one when no target is at hand.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from rotation.policy import CallBudget
from rotation.settings import Settings, SettingsError, is_loopback, load_settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.eventgrid import EventGridPublisherClient
    from azure.keyvault.secrets import SecretClient
    from azure.mgmt.web import WebSiteManagementClient
    from azure.monitor.query import LogsQueryClient

ARM_SCOPE = "https://management.azure.com/.default"
LOGS_AUDIENCE = "https://api.loganalytics.io"


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()


def credential(cfg: Settings | None = None) -> TokenCredential:
    """The app's user-assigned managed identity, wherever it runs: azure-identity finds the token service
    from IDENTITY_ENDPOINT / IDENTITY_HEADER (App Service sets them; locally devhost points them at the
    emulators' token service), so the local stack runs the production credential path."""
    cfg = cfg or settings()
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=cfg.managed_identity_client_id)


def _budget_kwargs(budget: CallBudget | None) -> dict[str, Any]:
    from activities import call_budget

    return call_budget.client_kwargs(budget or CallBudget())


def web_client(
    subscription_id: str, cfg: Settings | None = None, budget: CallBudget | None = None
) -> WebSiteManagementClient:
    """ARM client for Microsoft.Web; key PUT bodies must be plain dicts with `properties` (quirk 1)."""
    from azure.mgmt.web import WebSiteManagementClient

    cfg = cfg or settings()
    return WebSiteManagementClient(
        credential(cfg),
        subscription_id,
        base_url=cfg.arm_endpoint,
        credential_scopes=[ARM_SCOPE],
        **_budget_kwargs(budget),
    )


def secret_client(vault_url: str, cfg: Settings | None = None, budget: CallBudget | None = None) -> SecretClient:
    """Key Vault client. A loopback vault cannot pass the challenge's resource check (quirk 4)."""
    from azure.keyvault.secrets import SecretClient

    cfg = cfg or settings()
    vault_url = cfg.check_endpoint(vault_url, "Key Vault URL")
    from urllib.parse import urlparse

    loopback_vault = is_loopback(urlparse(vault_url).hostname or "")
    return SecretClient(
        vault_url,
        credential(cfg),
        verify_challenge_resource=not loopback_vault,
        **_budget_kwargs(budget),
    )


class _SendKeywordNoise(logging.Filter):
    """The basic-topic send() hands its keywords to every event's model too, which logs a warning per
    event per keyword ("... is not a known attribute ... will be ignored"): drop those for our keywords."""

    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.names = names

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (args and args[0] in self.names and "not a known attribute" in str(record.msg))


class EventPublisher:
    """EventGridPublisherClient drops constructor kwargs for basic topics (quirk 5), so the call budget
    goes with every send (TLS trust comes from the environment: REQUESTS_CA_BUNDLE, when set)."""

    NOISY_LOGGER = "azure.eventgrid._legacy._generated._serialization"

    def __init__(self, client: EventGridPublisherClient, send_kwargs: dict[str, Any]) -> None:
        self.client = client
        self.send_kwargs = send_kwargs
        noisy = logging.getLogger(self.NOISY_LOGGER)
        if not any(isinstance(f, _SendKeywordNoise) for f in noisy.filters):
            noisy.addFilter(_SendKeywordNoise(set(send_kwargs)))

    def send(self, events: Any, **kwargs: Any) -> None:
        self.client.send(events, **{**self.send_kwargs, **kwargs})

    def close(self) -> None:
        self.client.close()


def event_publisher(cfg: Settings | None = None, budget: CallBudget | None = None) -> EventPublisher:
    from azure.eventgrid import EventGridPublisherClient

    from activities import call_budget

    cfg = cfg or settings()
    if not cfg.eventgrid_topic_endpoint:
        raise SettingsError("EVENTGRID_TOPIC_ENDPOINT: required to publish rotation events")
    client = EventGridPublisherClient(cfg.eventgrid_topic_endpoint, credential(cfg))
    return EventPublisher(client, call_budget.request_kwargs(budget or CallBudget()))


def logs_client(cfg: Settings | None = None, budget: CallBudget | None = None) -> LogsQueryClient:
    """The token audience is derived from the endpoint unless given (quirk 6)."""
    from azure.monitor.query import LogsQueryClient

    cfg = cfg or settings()
    return LogsQueryClient(
        credential(cfg),
        endpoint=cfg.logs_endpoint,
        audience=LOGS_AUDIENCE,
        **_budget_kwargs(budget),
    )
