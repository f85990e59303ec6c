"""Receiving the events in a service that is not a Functions app: a framework-neutral webhook.

Event Grid validates a CloudEvents webhook with an `OPTIONS` request carrying `WebHook-Request-Origin`
and expects it echoed in `WebHook-Allowed-Origin`
(https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/http-webhook.md#4-abuse-protection),
then POSTs one event (`application/cloudevents+json`) or a batch (`application/cloudevents-batch+json`).
Answer 2xx only when every event was handled: anything else makes Event Grid deliver again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from keyrotation_kit.kit import ConsumerKit
from keyrotation_kit.vault import KeyVaultError

log = logging.getLogger("keyrotation_kit")
MAX_BODY = 1024 * 1024  # Event Grid's own limit for a delivery


@dataclass(frozen=True)
class WebhookReply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


def handle_webhook(kit: ConsumerKit, method: str, headers: Mapping[str, str], body: bytes) -> WebhookReply:
    """One HTTP request to the webhook: the validation handshake, or a delivery of events."""
    lower = {k.lower(): v for k, v in headers.items()}
    if method.upper() == "OPTIONS":
        origin = lower.get("webhook-request-origin")
        return WebhookReply(200, {"WebHook-Allowed-Origin": origin, "Allow": "POST"} if origin else {})
    if method.upper() != "POST":
        return WebhookReply(405, {"Allow": "POST, OPTIONS"})
    if len(body) > MAX_BODY:
        return WebhookReply(413)
    try:
        parsed = json.loads(body)
    except ValueError:
        return WebhookReply(400)
    events = parsed if isinstance(parsed, list) else [parsed]
    if not all(isinstance(e, Mapping) for e in events):
        return WebhookReply(400)
    try:
        for event in events:
            kit.handle_event(event)
    except KeyVaultError as exc:
        log.warning("Event delivery not handled (%s): Event Grid will deliver it again", exc)
        return WebhookReply(503)
    return WebhookReply(200)
