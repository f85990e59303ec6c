"""The client factory: the only place that builds credentials and Azure service SDK clients.

SDK modules are imported inside the functions so `import function_app` stays fast. Settings decide
endpoints and the credential (rotation/settings.py); the quirks that decide how each client must be
built for a loopback emulator are handled here and nowhere else. Every client gets the target's call
budget (policy `calls`: timeouts, retries, the longest Retry-After honoured; activities/call_budget.py),
or the built-in one when no target is at hand.
"""

from __future__ import annotations

import logging
import os
import threading
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
    emulators' token service), so the local stack runs the production credential path. One credential
    per worker process and settings: credentials are thread-safe and cache their tokens, so sharing one
    means one token request per audience per hour, not one per client. The token service's address is
    part of the key: it is read from the environment when the credential is built."""
    service = (os.environ.get("IDENTITY_ENDPOINT"), os.environ.get("IDENTITY_HEADER"))
    return _credential(cfg or settings(), service)


@lru_cache(maxsize=4)
def _credential(cfg: Settings, service: tuple[str | None, str | None]) -> TokenCredential:
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=cfg.managed_identity_client_id)


_threads = threading.local()


def _thread_session() -> Any:
    """This thread's requests.Session, shared by every client the thread builds.

    Each activity builds its own clients (their call budget differs per target), and each new client
    used to open new TCP and TLS connections: a quarter of a rotation's CPU went to handshakes. Sharing
    a transport's session is azure-core's own advice (the Azure SDK blog's "Transport sharing in the
    Azure SDK for Python"; Azure Functions' "Manage connections" asks for reused clients), but
    RequestsTransport documents that it is not thread-safe, so the session is per thread: the worker
    runs activities on a fixed thread pool, so connections live as long as its threads.
    """
    session = getattr(_threads, "session", None)
    if session is None:
        from azure.core.pipeline.transport import RequestsTransport

        owner = RequestsTransport()
        owner.open()  # builds the session the way azure-core configures its own (adapter, no urllib3 retries)
        session = _threads.session = owner.session
    return session


def _transport_kwargs(budget: CallBudget | None = None) -> dict[str, Any]:
    """A transport of the client's own (its timeouts) over this thread's shared session; the session
    trusts the environment (REQUESTS_CA_BUNDLE), as azure-core's own does. Closing the client leaves the
    session open (`session_owner=False`)."""
    from azure.core.pipeline.transport import RequestsTransport

    from activities import call_budget

    options = call_budget.transport_kwargs(budget or CallBudget())
    return {"transport": RequestsTransport(session=_thread_session(), session_owner=False, **options)}


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
        **_transport_kwargs(budget),
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
        **_transport_kwargs(budget),
        **_budget_kwargs(budget),
    )


class _SendKeywordNoise(logging.Filter):
    """The basic-topic send() hands its keywords to every event's model too, which logs a warning per
    event per keyword ("... is not a known attribute ... will be ignored"): drop those for our keywords."""

    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.names = names

    def filter(self, record: logging.LogRecord) -> bool:
        # The message, not its args: the app's redacting record factory (rotation/redaction.py) formats
        # every record before any filter sees it, so its args are empty (every one of these got through).
        message = record.getMessage()
        return not ("is not a known attribute" in message and message.split(" ", 1)[0] in self.names)


class EventPublisher:
    """EventGridPublisherClient drops constructor kwargs for basic topics (quirk 5), so the call budget
    goes with every send (TLS trust comes from the environment: REQUESTS_CA_BUNDLE, when set) — and its
    transport cannot be shared, so the client itself is kept per thread (see _thread_session) and
    `close()` leaves it open."""

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
        """Nothing to release: the client belongs to the thread, for the next activity's publish."""


def _thread_publisher(cfg: Settings, endpoint: str) -> EventGridPublisherClient:
    clients: dict[tuple[Settings, str], EventGridPublisherClient] = _threads.__dict__.setdefault("publishers", {})
    client = clients.get((cfg, endpoint))
    if client is None:
        from azure.eventgrid import EventGridPublisherClient

        client = clients[(cfg, endpoint)] = EventGridPublisherClient(endpoint, credential(cfg))
    return client


def event_publisher(cfg: Settings | None = None, budget: CallBudget | None = None) -> EventPublisher:
    from activities import call_budget

    cfg = cfg or settings()
    if not cfg.eventgrid_topic_endpoint:
        raise SettingsError("EVENTGRID_TOPIC_ENDPOINT: required to publish rotation events")
    client = _thread_publisher(cfg, cfg.eventgrid_topic_endpoint)
    return EventPublisher(client, call_budget.request_kwargs(budget or CallBudget()))


def logs_client(cfg: Settings | None = None, budget: CallBudget | None = None) -> LogsQueryClient:
    """The token audience is derived from the endpoint unless given (quirk 6)."""
    from azure.monitor.query import LogsQueryClient

    cfg = cfg or settings()
    return LogsQueryClient(
        credential(cfg),
        endpoint=cfg.logs_endpoint,
        audience=LOGS_AUDIENCE,
        **_transport_kwargs(budget),
        **_budget_kwargs(budget),
    )
