"""A sample consumer of the key rotation events: a Functions app of its own (v2 programming model).

It calls one target function app with a key it keeps in memory. When the rotation app announces a new
key for that target (`KeyRotation.NewKeyAvailable` on Event Grid), it reads that exact Key Vault
version with its own identity, swaps the key, and acknowledges so the overlap can end early.
Deployed on its own: it imports nothing from the rotation app. Settings: see README.md.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import azure.functions as func
from keyconsumer.handler import Incoming, KeyConsumer
from keyconsumer.keyholder import HeldKey, utc_now
from keyconsumer.settings import load_settings
from keyconsumer.target import call_target as call_target_with
from keyconsumer.vault import parse_secret_id

log = logging.getLogger("keyconsumer")

settings = load_settings()  # a bad setting stops the app at startup, naming the setting
consumer = KeyConsumer(settings)
_bootstrap = threading.Lock()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _json(value: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(value), status_code=status, mimetype="application/json")


@app.event_grid_trigger(arg_name="event")
def on_rotation_event(event: func.EventGridEvent) -> None:
    """Subscribed with CloudEvents schema and a subject filter `targets/<CONSUMER_TARGET_ID>`. The
    subscription handshake is answered by the host's Event Grid extension, not here."""
    consumer.handle(Incoming.from_trigger(event))


@app.route(route="consumer/state", methods=["GET"])
def consumer_state(req: func.HttpRequest) -> func.HttpResponse:
    """Which version the consumer holds, its fingerprint (sha256 prefix) and the ack — never the value."""
    return _json({"targetId": settings.target_id, **consumer.holder.snapshot()})


def _held_or_latest() -> HeldKey | None:
    """A consumer that just started holds nothing yet: it reads the secret's latest version once."""
    held = consumer.holder.current()
    if held is not None:
        return held
    with _bootstrap, consumer.holder.handling:
        held = consumer.holder.current()
        if held is None:
            secret_id, value = consumer.reader.read_latest()
            ref = parse_secret_id(secret_id, settings)
            consumer.holder.count("keyVaultReads")
            held = HeldKey(value, secret_id, ref.version, None, None, utc_now())
            consumer.holder.swap(held)
            log.info("Started with the latest version %s (fingerprint %s)", ref.version, held.fingerprint)
        return held


@app.route(route="consumer/call-target", methods=["POST"])
def call_target(req: func.HttpRequest) -> func.HttpResponse:
    """Calls CONSUMER_TARGET_URL with the held key: shows the consumer really works with it."""
    if not settings.target_url:
        return _json({"error": "CONSUMER_TARGET_URL is not set"}, 409)
    try:
        key = _held_or_latest()
    except Exception as exc:
        log.error("No key to call the target with: %s", type(exc).__name__)
        return _json({"error": "no key held and the latest version could not be read"}, 503)
    if key is None:
        return _json({"error": "no key held"}, 503)
    try:
        status = call_target_with(settings, key)
    except Exception as exc:
        return _json({"error": f"target unreachable: {type(exc).__name__}", "version": key.version}, 502)
    return _json({"targetStatus": status, "version": key.version, "fingerprint": key.fingerprint})
