"""Activity `publish_events`: send CloudEvents built by rotation/events.py to the Event Grid topic.

Idempotent the way Event Grid allows: the topic stores every publish (it does not dedupe), so a retried
or replayed publish sends the *same* event ids again and subscribers drop duplicates by id (delivery is
at-least-once anyway). Each event is checked against the JSON Schema of its type before anything is
sent, so a malformed event or a value slipping into `data` (invariant I1) never reaches a consumer: the
whole batch is refused and nothing is published.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from activities import clients
from rotation.contracts import ActivityRequest
from rotation.events import EVENT_TYPES, EventDataError, schema_path
from rotation.policy import parse_calls
from rotation.redaction import SafeError, looks_secret

if TYPE_CHECKING:
    from azure.core.messaging import CloudEvent

log = logging.getLogger(__name__)

# CloudEvents context attributes the azure-core CloudEvent takes as arguments; any other top-level
# attribute is an extension.
_CONTEXT = frozenset({"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"})


@cache
def _validator(event_type: str) -> Any:
    from jsonschema import Draft202012Validator  # imported on first publish, not at app start

    return Draft202012Validator(json.loads(schema_path(event_type).read_text()))


def _walk_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _walk_strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _walk_strings(item)]
    return []


def check_event(event: Any, index: int) -> dict[str, Any]:
    """The event if it is one of ours and valid for its type's schema; else EventDataError naming where.
    Messages name fields, never echo values (a rejected value might be a key)."""
    where = f"events[{index}]"
    if not isinstance(event, dict):
        raise EventDataError(f"{where}: must be a CloudEvent object")
    event_type = event.get("type")
    if event_type not in EVENT_TYPES:
        raise EventDataError(f"{where}.type: must be one of {', '.join(EVENT_TYPES)}")
    if any(looks_secret(s) for s in _walk_strings(event.get("data"))):
        raise EventDataError(f"{where}.data: looks like it holds a secret value; events never carry key values")
    errors = sorted(_validator(event_type).iter_errors(event), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        path = ".".join(str(p) for p in errors[0].absolute_path) or "(event)"
        raise EventDataError(f"{where}.{path}: does not match the {event_type} schema ({errors[0].validator})")
    return event


def to_cloud_event(event: dict[str, Any]) -> CloudEvent[Any]:
    """The azure-core CloudEvent for a builder's JSON, keeping its id and time (never regenerated)."""
    from azure.core.messaging import CloudEvent

    return CloudEvent(
        source=event["source"],
        type=event["type"],
        specversion=event["specversion"],
        id=event["id"],
        time=datetime.fromisoformat(event["time"].replace("Z", "+00:00")),
        subject=event.get("subject"),
        datacontenttype=event.get("datacontenttype"),
        dataschema=event.get("dataschema"),
        data=event.get("data"),
        extensions={k: v for k, v in event.items() if k not in _CONTEXT and k != "data"} or None,
    )


def publish_events(request: ActivityRequest) -> dict[str, Any]:
    """Publish the events in one batch. Returns their ids in order (a repeated id is sent once). Raises on
    any failure after the SDK's own retries, so the orchestrator's retry policy sends the batch again.
    `calls` (optional): the target's call budget (policy `calls`); the built-in one without it."""
    events = request.get("events")
    if not isinstance(events, list):
        raise EventDataError("events: must be a list of CloudEvents")
    unique: dict[str, dict[str, Any]] = {}
    for index, event in enumerate(events):
        checked = check_event(event, index)
        unique.setdefault(checked["id"], checked)
    if not unique:
        return {"published": []}
    budget = parse_calls(request.get("calls"))
    batch = [to_cloud_event(e) for e in unique.values()]
    from azure.core.exceptions import AzureError

    publisher = clients.event_publisher(budget=budget)
    try:
        publisher.send(batch)
    except (AzureError, SafeError) as exc:
        error = SafeError.from_exception(exc)
        message = f"publish {len(batch)} event(s) to the topic: {error}"
        raise SafeError(message, error.status_code, error.error_code) from None
    finally:
        publisher.close()
    ids = list(unique)
    log.info(
        "published %d event(s): %s",
        len(ids),
        ", ".join(f"{e['type']} {e['id']} {e.get('subject', '')}" for e in unique.values()),
    )
    return {"published": ids}
