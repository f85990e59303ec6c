"""Webhook subscriptions on the emulated topic and the background worker that delivers to them.

Azure-like semantics a consumer can rely on: a subscription exists only after its endpoint passed the
validation handshake; delivery is asynchronous, one event per request, at-least-once; 200-204 is
success, 400/401/413 are final (recorded as dead-lettered), anything else (or no answer) is retried
per the subscription's schedule until maxDeliveryAttempts. Pending deliveries live in SQLite with an
absolute due time, so a restarted emulator resumes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import ssl
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from emulators.core.control import read_json
from emulators.core.state import STATE_KEY, EmulatorState
from emulators.core.store import fingerprint, iso, utcnow
from emulators.eventgrid.events import (
    CLOUD_EVENTS,
    COMPATIBLE_DELIVERY,
    SCHEMAS,
    TOPIC_ID,
    delivery_body,
    input_schema,
)

log = logging.getLogger("emulators.eventgrid.api")

SCHEMA = """
CREATE TABLE IF NOT EXISTS eventgrid_subscriptions (
    name TEXT PRIMARY KEY, endpoint TEXT NOT NULL, delivery_schema TEXT NOT NULL, filter TEXT NOT NULL,
    retry_schedule TEXT NOT NULL, max_attempts INTEGER NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS eventgrid_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_seq INTEGER NOT NULL, subscription TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_status INTEGER, last_error TEXT,
    next_attempt REAL, dead_letter_reason TEXT, created TEXT NOT NULL, updated TEXT NOT NULL,
    UNIQUE (event_seq, subscription));
CREATE INDEX IF NOT EXISTS eventgrid_deliveries_due ON eventgrid_deliveries(state, next_attempt);
"""

# Azure's schedule: 10 s, 30 s, 1 m, 5 m, 10 m, 30 m, 1 h, 3 h, 6 h, then every 12 h (last entry repeats).
DEFAULT_RETRY_SCHEDULE = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200)
DEFAULT_MAX_ATTEMPTS = 30
NOT_RETRIED = frozenset({400, 401, 413})
ACTIVE_STATES = ("pending", "retrying")
REQUEST_ORIGIN = "eventgrid.azure.net"
VALIDATION_EVENT_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"
HANDSHAKE_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 30.0
MAX_CONCURRENT = 16
_NAME = re.compile(r"^[A-Za-z0-9-]{3,64}$")
_FILTER_KEYS = {"subjectBeginsWith", "subjectEndsWith", "includedEventTypes", "isSubjectCaseSensitive"}
_BODY_KEYS = {"endpoint", "deliverySchema", "filter", "retrySchedule", "maxDeliveryAttempts"}
_SECRET_QUERY_KEYS = {"code", "sig", "key", "token"}


class SubscriptionError(ValueError):
    """A subscription request Event Grid refuses with 400; the message names the field."""


def redact_url(url: str) -> str:
    """The endpoint without secret query values (function keys ride in `code=`)."""
    parts = urlsplit(url)
    query = [(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_endpoint(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SubscriptionError("endpoint: required, the webhook URL")
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return value
    raise SubscriptionError("endpoint: must be an https URL (plain http only for a loopback address)")


def _check_filter(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SubscriptionError("filter: must be an object")
    unknown = set(value) - _FILTER_KEYS
    if unknown:
        raise SubscriptionError(f"filter: unsupported field(s) {', '.join(sorted(unknown))}")
    for key in ("subjectBeginsWith", "subjectEndsWith"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise SubscriptionError(f"filter.{key}: must be a string")
    types = value.get("includedEventTypes")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) and t for t in types)):
        raise SubscriptionError("filter.includedEventTypes: must be a list of event type names")
    if not isinstance(value.get("isSubjectCaseSensitive", False), bool):
        raise SubscriptionError("filter.isSubjectCaseSensitive: must be true or false")
    return {k: v for k, v in value.items() if v is not None}


def parse_subscription(name: str, body: Any, topic_schema: str) -> dict[str, Any]:
    """Validate a PUT body; returns the normalized subscription."""
    if not _NAME.match(name):
        raise SubscriptionError("name: 3-64 letters, digits or hyphens")
    if not isinstance(body, dict):
        raise SubscriptionError("body: must be a JSON object")
    unknown = set(body) - _BODY_KEYS
    if unknown:
        raise SubscriptionError(f"unknown field(s): {', '.join(sorted(unknown))}")
    schema = body.get("deliverySchema") or topic_schema
    if schema not in SCHEMAS:
        raise SubscriptionError(f"deliverySchema: one of {', '.join(SCHEMAS)}")
    if schema not in COMPATIBLE_DELIVERY[topic_schema]:
        raise SubscriptionError(
            f"deliverySchema: a topic with input schema {topic_schema} cannot deliver in {schema}"
            f" (allowed: {', '.join(COMPATIBLE_DELIVERY[topic_schema])})"
        )
    schedule = body.get("retrySchedule", list(DEFAULT_RETRY_SCHEDULE))
    if (
        not isinstance(schedule, list)
        or not schedule
        or not all(isinstance(s, int | float) and not isinstance(s, bool) and s > 0 for s in schedule)
    ):
        raise SubscriptionError("retrySchedule: a non-empty list of positive numbers of seconds")
    attempts = body.get("maxDeliveryAttempts", DEFAULT_MAX_ATTEMPTS)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 30:
        raise SubscriptionError("maxDeliveryAttempts: an integer from 1 to 30")
    return {
        "name": name,
        "endpoint": _check_endpoint(body.get("endpoint")),
        "deliverySchema": schema,
        "filter": _check_filter(body.get("filter")),
        "retrySchedule": schedule,
        "maxDeliveryAttempts": attempts,
    }


def subscription_json(row: Any) -> dict[str, Any]:
    return {
        "name": row["name"],
        "endpoint": row["endpoint"],
        "deliverySchema": row["delivery_schema"],
        "filter": json.loads(row["filter"]),
        "retrySchedule": json.loads(row["retry_schedule"]),
        "maxDeliveryAttempts": row["max_attempts"],
        "provisioningState": "Succeeded",
        "created": row["created"],
        "updated": row["updated"],
    }


def delivery_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "eventSeq": row["event_seq"],
        "eventId": row["event_id"],
        "subscription": row["subscription"],
        "state": row["state"],
        "attempts": row["attempts"],
        "lastStatus": row["last_status"],
        "lastError": row["last_error"],
        "deadLetterReason": row["dead_letter_reason"],
        "nextAttempt": iso_epoch(row["next_attempt"]) if row["state"] in ACTIVE_STATES else None,
        "updated": row["updated"],
    }


def iso_epoch(value: float | None) -> str | None:
    return None if value is None else iso(datetime.fromtimestamp(value, UTC))


DELIVERY_QUERY = "SELECT d.*, e.event_id FROM eventgrid_deliveries d JOIN eventgrid_events e ON e.seq = d.event_seq"


class DeliveryWorker:
    """Delivers due rows of eventgrid_deliveries; woken by publishes, otherwise polls its next due time."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="eventgrid-delivery")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the loop and in-flight attempts; their rows stay pending and run again on restart."""
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            ctx = ssl.create_default_context()
            ctx.load_verify_locations(cafile=str(self.state.ca_path))
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), auto_decompress=True)
        return self._session

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            timeout = 1.0
            try:
                timeout = self._dispatch_due()
            except Exception:
                log.exception("Event Grid delivery loop failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _dispatch_due(self) -> float:
        """Start attempts for due rows; returns how long to sleep before the next one is due."""
        now = time.time()
        rows = self.state.store.query(
            "SELECT id, next_attempt FROM eventgrid_deliveries WHERE state IN ('pending', 'retrying')"
            " ORDER BY next_attempt, id LIMIT 200"
        )
        sleep = 1.0
        for row in rows:
            if row["id"] in self._inflight:
                continue
            due_in = (row["next_attempt"] or 0) - now
            if due_in > 0:
                sleep = min(sleep, due_in)
                break
            if len(self._inflight) >= MAX_CONCURRENT:
                break
            task = asyncio.get_running_loop().create_task(self._attempt(row["id"]))
            self._inflight[row["id"]] = task
            task.add_done_callback(lambda _t, delivery_id=row["id"]: self._done(delivery_id))
        return max(sleep, 0.01)

    def _done(self, delivery_id: int) -> None:
        self._inflight.pop(delivery_id, None)
        self._wake.set()

    async def _attempt(self, delivery_id: int) -> None:
        row = self.state.store.one(
            "SELECT d.*, e.body, e.schema AS input_schema, e.event_id, s.endpoint, s.delivery_schema,"
            " s.retry_schedule, s.max_attempts FROM eventgrid_deliveries d"
            " JOIN eventgrid_events e ON e.seq = d.event_seq"
            " JOIN eventgrid_subscriptions s ON s.name = d.subscription WHERE d.id = ?",
            (delivery_id,),
        )
        if row is None or row["state"] not in ACTIVE_STATES:
            return
        event = json.loads(row["body"])
        body = delivery_body(row["input_schema"], row["delivery_schema"], event, TOPIC_ID)
        headers = {
            "aeg-event-type": "Notification",
            "aeg-subscription-name": row["subscription"],
            "aeg-delivery-count": str(row["attempts"]),
        }
        if row["delivery_schema"] == CLOUD_EVENTS:
            headers["Content-Type"] = "application/cloudevents+json; charset=utf-8"
            headers["aeg-metadata-version"] = "1.0"
        else:
            headers["Content-Type"] = "application/json; charset=utf-8"
            headers["aeg-metadata-version"] = "1"
            headers["aeg-data-version"] = str(event.get("dataVersion", ""))
        status: int | None = None
        error: str | None = None
        try:
            async with self.session().post(
                row["endpoint"],
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT),
                allow_redirects=False,
            ) as response:
                status = response.status
                await response.read()
        except Exception as exc:  # any failure to deliver is a failed attempt, never a stuck row
            error = f"{type(exc).__name__}: {exc}"
        self._record(row, status, error)

    def _record(self, row: Any, status: int | None, error: str | None) -> None:
        attempts = row["attempts"] + 1
        next_attempt: float | None = None
        reason: str | None = None
        if status is not None and 200 <= status <= 204:
            state = "delivered"
        elif status in NOT_RETRIED:
            state, reason = "dropped", f"NonRetryableStatus:{status}"
        elif attempts >= row["max_attempts"]:
            state, reason = "dropped", "MaxDeliveryAttemptsExceeded"
        else:
            schedule = json.loads(row["retry_schedule"])
            state, next_attempt = "retrying", time.time() + float(schedule[min(attempts - 1, len(schedule) - 1)])
        if error is None and state != "delivered":
            error = f"HTTP {status}"
        with self.state.store.transaction() as conn:
            updated = conn.execute(
                "UPDATE eventgrid_deliveries SET state = ?, attempts = ?, last_status = ?, last_error = ?,"
                " next_attempt = ?, dead_letter_reason = ?, updated = ? WHERE id = ? AND attempts = ?",
                (state, attempts, status, error, next_attempt, reason, iso(utcnow()), row["id"], row["attempts"]),
            ).rowcount
            if updated:
                self.state.store.record_change(
                    None,
                    "eventgrid.delivery",
                    f"eventgrid/subscriptions/{row['subscription']}",
                    {"eventId": row["event_id"], "attempt": attempts, "status": status, "state": state},
                )
        if state != "delivered":
            log.info(
                "delivery of %s to %s: attempt %d -> %s (%s)",
                row["event_id"],
                redact_url(row["endpoint"]),
                attempts,
                state,
                error,
            )


# -- the validation handshake --


async def handshake(session: aiohttp.ClientSession, sub: dict[str, Any]) -> str | None:
    """Run Azure's endpoint validation for the delivery schema; returns why it failed, or None."""
    endpoint = sub["endpoint"]
    shown = redact_url(endpoint)
    timeout = aiohttp.ClientTimeout(total=HANDSHAKE_TIMEOUT)
    try:
        if sub["deliverySchema"] == CLOUD_EVENTS:
            async with session.options(
                endpoint, headers={"WebHook-Request-Origin": REQUEST_ORIGIN}, timeout=timeout, allow_redirects=False
            ) as response:
                allowed = response.headers.get("WebHook-Allowed-Origin")
                if not 200 <= response.status <= 204:
                    return f"Webhook validation handshake failed for {shown}: HTTP OPTIONS returned {response.status}."
                if allowed not in (REQUEST_ORIGIN, "*"):
                    return (
                        f"Webhook validation handshake failed for {shown}: the OPTIONS response must carry "
                        f"WebHook-Allowed-Origin: {REQUEST_ORIGIN} (or *), got {allowed!r}."
                    )
                return None
        code = str(uuid.uuid4())
        event = {
            "id": str(uuid.uuid4()),
            "topic": TOPIC_ID,
            "subject": "",
            "data": {"validationCode": code},
            "eventType": VALIDATION_EVENT_TYPE,
            "eventTime": iso(utcnow()),
            "metadataVersion": "1",
            "dataVersion": "2",
        }
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "aeg-event-type": "SubscriptionValidation",
            "aeg-subscription-name": sub["name"],
            "aeg-delivery-count": "0",
            "aeg-metadata-version": "1",
            "aeg-data-version": "2",
        }
        async with session.post(
            endpoint, data=json.dumps([event]), headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            text = await response.text(errors="replace")
            if response.status != 200:
                return f"Webhook validation handshake failed for {shown}: HTTP POST returned {response.status}."
            try:
                answered = json.loads(text).get("validationResponse")
            except (ValueError, AttributeError):
                answered = None
            if answered != code:
                return (
                    f"Webhook validation handshake failed for {shown}: the 200 response must be "
                    '{"validationResponse": <data.validationCode>}.'
                )
            return None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"Webhook validation handshake failed for {shown}: {type(exc).__name__}: {exc}."


# -- control routes --

WORKER_KEY = web.AppKey("eventgrid_delivery_worker", DeliveryWorker)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": {"code": "BadRequest", "message": message}}, status=400)


async def put_subscription(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    name = request.match_info["name"]
    try:
        sub = parse_subscription(name, await read_json(request), input_schema(state.store))
    except SubscriptionError as exc:
        return _bad_request(str(exc))
    problem = await handshake(request.app[WORKER_KEY].session(), sub)
    if problem:
        return _bad_request(problem)
    now = iso(utcnow())
    with state.store.transaction() as conn:
        existing = conn.execute("SELECT created FROM eventgrid_subscriptions WHERE name = ?", (name,)).fetchone()
        conn.execute(
            "INSERT OR REPLACE INTO eventgrid_subscriptions(name, endpoint, delivery_schema, filter, retry_schedule,"
            " max_attempts, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                sub["endpoint"],
                sub["deliverySchema"],
                json.dumps(sub["filter"]),
                json.dumps(sub["retrySchedule"]),
                sub["maxDeliveryAttempts"],
                existing["created"] if existing else now,
                now,
            ),
        )
        state.store.record_change(
            request.get("seq"),
            "eventgrid.subscription_updated" if existing else "eventgrid.subscription_created",
            f"eventgrid/subscriptions/{name}",
            {
                "endpoint": redact_url(sub["endpoint"]),
                "fingerprint": fingerprint(sub["endpoint"]),
                "deliverySchema": sub["deliverySchema"],
                "filter": sub["filter"],
            },
        )
    row = state.store.one("SELECT * FROM eventgrid_subscriptions WHERE name = ?", (name,))
    return web.json_response(subscription_json(row), status=200 if existing else 201)


async def get_subscription(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    name = request.match_info["name"]
    row = state.store.one("SELECT * FROM eventgrid_subscriptions WHERE name = ?", (name,))
    if row is None:
        return web.json_response({"error": {"code": "NotFound", "message": f"no subscription '{name}'"}}, status=404)
    return web.json_response(subscription_json(row))


async def list_subscriptions(request: web.Request) -> web.Response:
    rows = request.app[STATE_KEY].store.query("SELECT * FROM eventgrid_subscriptions ORDER BY name")
    return web.json_response({"value": [subscription_json(r) for r in rows]})


async def delete_subscription(request: web.Request) -> web.Response:
    """Delete it; its undelivered events are dropped, as Azure drops a deleted subscription's queue."""
    state = request.app[STATE_KEY]
    name = request.match_info["name"]
    with state.store.transaction() as conn:
        deleted = conn.execute("DELETE FROM eventgrid_subscriptions WHERE name = ?", (name,)).rowcount
        if deleted:
            conn.execute(
                "UPDATE eventgrid_deliveries SET state = 'dropped', dead_letter_reason = 'SubscriptionDeleted',"
                " updated = ? WHERE subscription = ? AND state IN ('pending', 'retrying')",
                (iso(utcnow()), name),
            )
            state.store.record_change(
                request.get("seq"), "eventgrid.subscription_deleted", f"eventgrid/subscriptions/{name}", {}
            )
    if not deleted:
        return web.json_response({"error": {"code": "NotFound", "message": f"no subscription '{name}'"}}, status=404)
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    clauses, params = [], []
    for key, column in (("subscription", "d.subscription"), ("state", "d.state"), ("eventId", "e.event_id")):
        if key in request.query:
            clauses.append(f"{column} = ?")
            params.append(request.query[key])
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = state.store.query(f"{DELIVERY_QUERY}{where} ORDER BY d.id", params)
    return web.json_response({"value": [delivery_json(r) for r in rows]})


def deliveries_snapshot(state: EmulatorState) -> list[dict[str, Any]]:
    return [delivery_json(r) for r in state.store.query(f"{DELIVERY_QUERY} ORDER BY d.id")]


def subscriptions_snapshot(state: EmulatorState) -> list[dict[str, Any]]:
    return [subscription_json(r) for r in state.store.query("SELECT * FROM eventgrid_subscriptions ORDER BY name")]


def incompatible_subscriptions(state: EmulatorState, topic_schema: str) -> list[str]:
    """Subscriptions whose delivery schema the topic could not serve after switching to `topic_schema`."""
    allowed = COMPATIBLE_DELIVERY[topic_schema]
    rows = state.store.query("SELECT name, delivery_schema FROM eventgrid_subscriptions ORDER BY name")
    return [r["name"] for r in rows if r["delivery_schema"] not in allowed]


def register_routes(app: web.Application, state: EmulatorState) -> DeliveryWorker:
    """Subscription and delivery control routes plus the worker (started now, stopped at shutdown)."""
    state.store.ensure_schema(SCHEMA)
    worker = DeliveryWorker(state)
    app[WORKER_KEY] = worker
    base = "/_emulator/eventgrid"
    app.router.add_get(f"{base}/subscriptions", list_subscriptions)
    app.router.add_put(f"{base}/subscriptions/{{name}}", put_subscription)
    app.router.add_get(f"{base}/subscriptions/{{name}}", get_subscription)
    app.router.add_delete(f"{base}/subscriptions/{{name}}", delete_subscription)
    app.router.add_get(f"{base}/deliveries", list_deliveries)
    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def start_later(_app: web.Application) -> None:
            worker.start()

        app.on_startup.append(start_later)
    else:
        worker.start()
    state.cleanup.append(worker.stop)
    return worker
