"""The Event Grid custom topic: `POST /api/events?api-version=2018-01-01` as EventGridPublisherClient
sends it, webhook subscriptions with delivery (eventgrid_delivery.py), and the topic's control routes.

Operation name: `eventgrid.publish` (fault rules and the request log use it).
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from emulators.core.control import read_json
from emulators.core.errors import eventgrid_error
from emulators.core.operations import operation
from emulators.core.state import STATE_KEY, EmulatorState
from emulators.core.store import fingerprint, iso, utcnow
from emulators.eventgrid.auth import authenticate, ensure_topic_key
from emulators.eventgrid.delivery import (
    WORKER_KEY,
    deliveries_snapshot,
    incompatible_subscriptions,
    register_routes,
    subscriptions_snapshot,
)
from emulators.eventgrid.events import (
    INPUT_SCHEMA_SETTING,
    MAX_BYTES,
    SCHEMAS,
    TOPIC_ID,
    EventError,
    EventTooLarge,
    input_schema,
    matches,
    parse_batch,
)

EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS eventgrid_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, request_seq INTEGER, received TEXT NOT NULL, schema TEXT NOT NULL,
    event_id TEXT NOT NULL, event_type TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL);
"""
API_VERSIONS = ("2018-01-01",)


def _too_large(size: int | None) -> web.Response:
    detail = f" (the request body is {size} bytes)" if size is not None else ""
    return eventgrid_error(
        413,
        "RequestEntityTooLarge",
        f"The maximum size ({MAX_BYTES} bytes) for an event or a batch of events has been exceeded{detail}.",
    )


@operation("eventgrid", "eventgrid.publish", authenticate)
async def publish(request: web.Request) -> web.StreamResponse:
    """Accept a batch in the topic's input schema; exactly 200 with an empty body on success."""
    state = request.app[STATE_KEY]
    version = request.query.get("api-version")
    if version is None:
        return eventgrid_error(
            400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required."
        )
    if version not in API_VERSIONS:
        return eventgrid_error(
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{version}' is invalid. The supported versions are '{', '.join(API_VERSIONS)}'.",
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _too_large(request.content_length)
    if len(raw) > MAX_BYTES:
        return _too_large(len(raw))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return eventgrid_error(400, "BadRequest", "The request body is not UTF-8 encoded JSON.")
    schema = input_schema(state.store)
    try:
        events = parse_batch(schema, request.content_type, text)
    except EventTooLarge as exc:
        return eventgrid_error(413, "RequestEntityTooLarge", str(exc))
    except EventError as exc:
        return eventgrid_error(400, "BadRequest", str(exc))
    _store_batch(state, request["seq"], schema, events, text)
    request.app[WORKER_KEY].wake()
    return web.Response(status=200)


def _store_batch(state: EmulatorState, request_seq: int, schema: str, events: list[Any], text: str) -> None:
    """Events, one pending delivery per matching subscription, and the journal entry: all or nothing."""
    received = iso(utcnow())
    now = time.time()  # the delivery schedule runs on the wall clock (emulators/core/clock.py)
    ids, types, subjects = [], [], []
    with state.store.transaction() as conn:
        subs = conn.execute("SELECT name, filter FROM eventgrid_subscriptions ORDER BY name").fetchall()
        for event in events:
            event_id, event_type, subject = event.attributes(schema)
            ids.append(event_id)
            types.append(event_type)
            subjects.append(subject)
            seq = conn.execute(
                "INSERT INTO eventgrid_events(request_seq, received, schema, event_id, event_type, subject, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (request_seq, received, schema, event_id, event_type, subject, event.raw),
            ).lastrowid
            for sub in subs:
                if matches(json.loads(sub["filter"]), event_type, subject):
                    conn.execute(
                        "INSERT INTO eventgrid_deliveries(event_seq, subscription, state, attempts, next_attempt,"
                        " created, updated) VALUES (?, ?, 'pending', 0, ?, ?, ?)",
                        (seq, sub["name"], now, received, received),
                    )
        state.store.record_change(
            request_seq,
            "eventgrid.published",
            "eventgrid/topic",
            {"schema": schema, "ids": ids, "types": types, "subjects": subjects, "fingerprint": fingerprint(text)},
        )


def _event_json(row: Any) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "requestSeq": row["request_seq"],
        "received": row["received"],
        "schema": row["schema"],
        "id": row["event_id"],
        "type": row["event_type"],
        "subject": row["subject"],
        "event": json.loads(row["body"]),
    }


def _events(state: EmulatorState, since: int = 0) -> list[dict[str, Any]]:
    rows = state.store.query("SELECT * FROM eventgrid_events WHERE seq > ? ORDER BY seq", (since,))
    return [_event_json(r) for r in rows]


def _topic(state: EmulatorState) -> dict[str, Any]:
    return {
        "id": TOPIC_ID,
        "endpoint": f"{state.base_url}/api/events",
        "inputSchema": input_schema(state.store),
        "key": state.topic_key,
    }


async def get_topic(request: web.Request) -> web.Response:
    return web.json_response(_topic(request.app[STATE_KEY]))


async def put_topic(request: web.Request) -> web.Response:
    """Set the topic's input schema; refused while a subscription could not be served by it."""
    state = request.app[STATE_KEY]
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) - {"inputSchema"}:
        return eventgrid_error(400, "BadRequest", 'body: {"inputSchema": "CloudEventSchemaV1_0" | "EventGridSchema"}')
    schema = body.get("inputSchema")
    if schema not in SCHEMAS:
        return eventgrid_error(400, "BadRequest", f"inputSchema: one of {', '.join(SCHEMAS)}")
    blocking = incompatible_subscriptions(state, schema)
    if blocking:
        return eventgrid_error(
            400,
            "BadRequest",
            f"inputSchema: subscription(s) {', '.join(blocking)} deliver in a schema {schema} cannot translate to;"
            " delete them first",
        )
    if input_schema(state.store) != schema:
        with state.store.transaction():
            state.store.set_setting(INPUT_SCHEMA_SETTING, schema)
            state.store.record_change(request.get("seq"), "eventgrid.topic_updated", "eventgrid/topic", body)
    return web.json_response(_topic(state))


async def list_events(request: web.Request) -> web.Response:
    try:
        since = int(request.query.get("since", 0))
    except ValueError:
        return eventgrid_error(400, "BadRequest", "since: must be an integer event seq")
    return web.json_response({"value": _events(request.app[STATE_KEY], since)})


def register(app: web.Application, state: EmulatorState) -> None:
    """The topic endpoint, its control routes, subscriptions and the delivery worker."""
    state.store.ensure_schema(EVENTS_SCHEMA)
    ensure_topic_key(state)
    app.router.add_post("/api/events", publish)
    app.router.add_get("/_emulator/eventgrid/topic", get_topic)
    app.router.add_put("/_emulator/eventgrid/topic", put_topic)
    app.router.add_get("/_emulator/eventgrid/events", list_events)
    register_routes(app, state)
    state.snapshot_providers["eventgrid"] = lambda: {
        "topic": _topic(state),
        "events": _events(state),
        "subscriptions": subscriptions_snapshot(state),
        "deliveries": deliveries_snapshot(state),
    }
