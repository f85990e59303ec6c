"""The Event Grid extension's webhook: ``/runtime/webhooks/EventGrid?functionName=...&code=...``.

Mirrors the extension: the ``eventgrid_extension`` system key is required; ``aeg-event-type``
selects the subscription handshake, a notification (one invocation per event) or unsubscribe. Event
Grid schema arrays, structured CloudEvents (single or batch) and binary-mode CloudEvents are
accepted. Each event is turned into ``func.EventGridEvent`` / ``func.CloudEvent`` by the worker runtime's own
converter, as the Python worker does.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from devhost.app_loader import LoadedApp
from devhost.invoke import Invoker
from devhost.keys import HostKeys, presented_key
from devhost.worker.protos import protos

log = logging.getLogger("devhost.eventgrid")
SYSTEM_KEY = "eventgrid_extension"
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


def to_trigger_value(event: dict[str, Any]) -> Any:
    """One event on the wire (``TypedData.json``); the worker's converter makes ``func.CloudEvent`` of an
    event with ``specversion``, ``func.EventGridEvent`` of any other."""
    return protos.TypedData(json=json.dumps(event))


def _binary_cloud_event(request: web.Request, body: bytes) -> dict[str, Any]:
    """A binary-mode CloudEvent: attributes in ``ce-*`` headers, data in the body."""
    event: dict[str, Any] = {k[3:].lower(): v for k, v in request.headers.items() if k.lower().startswith("ce-")}
    content_type = request.headers.get("Content-Type", "")
    if content_type:
        event["datacontenttype"] = content_type
    if body:
        event["data"] = json.loads(body) if "json" in content_type else body.decode("utf-8", "replace")
    return event


def parse_events(request: web.Request, body: bytes) -> list[dict[str, Any]]:
    """All events in a notification; raises ValueError for a body that is not events."""
    if "ce-specversion" in request.headers:
        return [_binary_cloud_event(request, body)]
    parsed = json.loads(body or b"null")
    events = parsed if isinstance(parsed, list) else [parsed]
    if not events or not all(isinstance(e, dict) for e in events):
        raise ValueError("expected an event object or a non-empty array of events")
    return events


class EventGridWebhook:
    def __init__(self, loaded: LoadedApp, keys: HostKeys, invoker: Invoker) -> None:
        self.loaded = loaded
        self.keys = keys
        self.invoker = invoker

    def add_routes(self, app: web.Application) -> None:
        for spelling in ("EventGrid", "eventgrid", "eventGrid"):
            app.router.add_route("POST", f"/runtime/webhooks/{spelling}", self.handle)
            app.router.add_route("OPTIONS", f"/runtime/webhooks/{spelling}", self.handshake)

    def _check(self, request: web.Request) -> web.Response | Any:
        if not self.keys.is_system_key(SYSTEM_KEY, presented_key(request)):
            return web.Response(status=401)
        name = request.query.get("functionName", "")
        fn = self.loaded.get(name) if name else None
        if fn is None or fn.trigger_type != "eventGridTrigger":
            return web.json_response({"error": f"no Event Grid function named '{name}'"}, status=404)
        return fn

    async def handshake(self, request: web.Request) -> web.Response:
        """CloudEvents abuse protection: echo the requesting origin as allowed."""
        checked = self._check(request)
        if isinstance(checked, web.Response):
            return checked
        origin = request.headers.get("WebHook-Request-Origin")
        if not origin:
            return web.json_response({"error": "missing WebHook-Request-Origin header"}, status=400)
        return web.Response(status=200, headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"})

    async def handle(self, request: web.Request) -> web.Response:
        checked = self._check(request)
        if isinstance(checked, web.Response):
            return checked
        fn = checked
        body = await request.read()
        kind = request.headers.get("aeg-event-type", "")
        content_type = request.headers.get("Content-Type", "")
        if not kind and ("cloudevents" in content_type or "ce-specversion" in request.headers):
            kind = "Notification"  # CloudEvents deliveries need not carry aeg-event-type
        kind = kind.lower()
        if kind == "unsubscribe":
            return web.Response(status=202)
        if kind not in ("subscriptionvalidation", "notification"):
            return web.json_response({"error": "unknown or missing aeg-event-type header"}, status=400)
        try:
            events = parse_events(request, body)
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "request body is not an Event Grid or CloudEvents payload"}, status=400)
        if kind == "subscriptionvalidation":
            data = events[0].get("data")
            code = data.get("validationCode") if isinstance(data, dict) else None
            if not code:
                return web.json_response({"error": "validation event has no data.validationCode"}, status=400)
            return web.json_response({"validationResponse": code})
        failed = 0
        for event in events:
            try:
                value = to_trigger_value(event)
            except Exception:
                log.error("Event for '%s' could not be converted; skipped", fn.name)
                failed += 1
                continue
            try:
                await self.invoker.call(fn, value, reason=f"EventGrid event {event.get('id', '?')}")
            except Exception:
                failed += 1
        if failed:
            message = f"Exception while executing function: Functions.{fn.name} ({failed} of {len(events)} failed)"
            return web.json_response({"error": message}, status=500)
        return web.Response(status=202)
