"""Event Grid event shapes and topic settings: parsing a published batch, schema validation,
filters, translation between schemas.

No network I/O, so the topic handler and the delivery worker agree on one reading of an event.
Validation follows what the topic accepts in Azure: one input schema per topic, required attributes
present and typed, no mixing of schemas.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emulators.core.store import Store

# The emulated topic's ARM id: what Azure stamps as `topic` (Event Grid schema) / `source` (translated).
TOPIC_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/keyrotation-local"
    "/providers/Microsoft.EventGrid/topics/keyrotation-events"
)
INPUT_SCHEMA_SETTING = "eventgrid.input_schema"

CLOUD_EVENTS = "CloudEventSchemaV1_0"
EVENT_GRID = "EventGridSchema"
SCHEMAS = (CLOUD_EVENTS, EVENT_GRID)

# Input schema -> delivery schemas a subscription may ask for (Azure "event schema compatibility").
COMPATIBLE_DELIVERY = {
    EVENT_GRID: (EVENT_GRID, CLOUD_EVENTS),
    CLOUD_EVENTS: (CLOUD_EVENTS,),
}

MAX_BYTES = 1_048_576  # 1 MB: the limit for one event and for the whole batch
CLOUD_EVENTS_BATCH = "application/cloudevents-batch+json"
CLOUD_EVENTS_SINGLE = "application/cloudevents+json"

_SCHEMA_LABEL = {CLOUD_EVENTS: "CloudEventV10", EVENT_GRID: "EventGridEvent"}
_CE_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_CE_CONTEXT = {"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"}
_EG_REQUIRED = ("id", "subject", "eventType", "eventTime", "dataVersion")
_FRACTION = re.compile(r"(\.\d{6})\d+")


class EventError(ValueError):
    """A published body the topic refuses with 400; the message names the problem."""


class EventTooLarge(ValueError):
    """An event or the batch is over 1 MB: the topic answers 413."""


@dataclass(frozen=True)
class PublishedEvent:
    """One accepted event: the JSON object and its exact text as the publisher sent it."""

    body: dict[str, Any]
    raw: str

    def attributes(self, schema: str) -> tuple[str, str, str]:
        """(id, type, subject) in either schema; subject is '' when absent."""
        if schema == CLOUD_EVENTS:
            return self.body["id"], self.body["type"], self.body.get("subject") or ""
        return self.body["id"], self.body["eventType"], self.body["subject"]


def input_schema(store: Store) -> str:
    """The topic's one input schema (CloudEvents unless changed through the control API)."""
    return store.get_setting(INPUT_SCHEMA_SETTING) or CLOUD_EVENTS


def parse_time(value: Any) -> datetime:
    """RFC 3339 / ISO 8601 with up to 7 fractional digits (what .NET and Azure write)."""
    if not isinstance(value, str) or not value:
        raise ValueError("not a date-time string")
    text = _FRACTION.sub(r"\1", value.strip()).replace("z", "Z")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _split_array(text: str) -> list[tuple[Any, str]]:
    """Each element of a JSON array with its exact source text (the body is already known valid)."""
    decoder = json.JSONDecoder()
    ws = " \t\n\r"
    i = len(text) - len(text.lstrip(ws)) + 1  # past '['
    items: list[tuple[Any, str]] = []
    while True:
        while text[i] in ws:
            i += 1
        if text[i] == "]":
            return items
        value, end = decoder.raw_decode(text, i)
        items.append((value, text[i:end]))
        i = end
        while text[i] in ws:
            i += 1
        if text[i] == ",":
            i += 1


def _wrong_schema(expected: str) -> EventError:
    return EventError(
        f"This resource is configured to receive event in '{_SCHEMA_LABEL[expected]}' schema. "
        "The JSON received does not conform to the expected schema."
    )


def _looks_like(schema: str, item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    if schema == CLOUD_EVENTS:
        return "specversion" in item
    return "eventType" in item or "dataVersion" in item


def _check_cloud_event(index: int, event: dict[str, Any]) -> None:
    where = f"Event [{index}]"
    for name in ("id", "source", "type", "specversion"):
        if name not in event:
            raise EventError(f"{where}: required CloudEvents attribute '{name}' was not found.")
        if not isinstance(event[name], str) or not event[name]:
            raise EventError(f"{where}: CloudEvents attribute '{name}' must be a non-empty string.")
    if event["specversion"] != "1.0":
        raise EventError(f"{where}: 'specversion' must be '1.0', got '{event['specversion']}'.")
    if "data" in event and "data_base64" in event:
        raise EventError(f"{where}: 'data' and 'data_base64' must not both be present.")
    if "data_base64" in event and not isinstance(event["data_base64"], str):
        raise EventError(f"{where}: 'data_base64' must be a base64 string.")
    if "time" in event:
        try:
            parse_time(event["time"])
        except ValueError as exc:
            raise EventError(f"{where}: 'time' must be an RFC 3339 timestamp.") from exc
    for name in ("subject", "datacontenttype", "dataschema"):
        if name in event and not isinstance(event[name], str):
            raise EventError(f"{where}: CloudEvents attribute '{name}' must be a string.")
    for name in event:
        if name in _CE_CONTEXT or name in ("data", "data_base64"):
            continue
        if not _CE_EXTENSION_NAME.match(name):
            raise EventError(
                f"{where}: extension attribute name '{name}' is invalid: use 1-20 lower-case letters or digits."
            )


def _check_event_grid_event(index: int, event: dict[str, Any]) -> None:
    where = f"Event [{index}]"
    for name in _EG_REQUIRED:
        if name not in event:
            raise EventError(f"{where}: required property '{name}' was not found.")
        if not isinstance(event[name], str):
            raise EventError(f"{where}: property '{name}' must be a string.")
    for name in ("id", "eventType"):
        if not event[name]:
            raise EventError(f"{where}: property '{name}' must not be empty.")
    if "data" not in event:
        raise EventError(f"{where}: required property 'data' was not found.")
    try:
        parse_time(event["eventTime"])
    except ValueError as exc:
        raise EventError(f"{where}: 'eventTime' must be an ISO 8601 date-time.") from exc
    if event.get("metadataVersion") not in (None, "1"):
        raise EventError(f"{where}: 'metadataVersion' must be '1' when present.")
    if "topic" in event and not isinstance(event["topic"], str):
        raise EventError(f"{where}: property 'topic' must be a string.")


def parse_batch(schema: str, content_type: str, text: str) -> list[PublishedEvent]:
    """Validate a published body against the topic's input schema; raises EventError (400)."""
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise EventError(f"The request body is not valid JSON: {exc}.") from exc
    if schema == CLOUD_EVENTS:
        if content_type == CLOUD_EVENTS_SINGLE and isinstance(parsed, dict):
            pairs = [(parsed, text.strip())]
        elif content_type == CLOUD_EVENTS_BATCH and isinstance(parsed, list):
            pairs = _split_array(text)
        elif isinstance(parsed, list) and parsed and not any(_looks_like(CLOUD_EVENTS, p) for p in parsed):
            raise _wrong_schema(CLOUD_EVENTS)
        else:
            raise EventError(
                f"Content-Type '{content_type}' is not supported by a CloudEvents topic: send a JSON array as "
                f"'{CLOUD_EVENTS_BATCH}' or one event as '{CLOUD_EVENTS_SINGLE}'."
            )
    else:
        if not isinstance(parsed, list):
            raise EventError("The request body must be a JSON array of events in the Event Grid schema.")
        if content_type in (CLOUD_EVENTS_BATCH, CLOUD_EVENTS_SINGLE) or any(
            _looks_like(CLOUD_EVENTS, p) for p in parsed
        ):
            raise _wrong_schema(EVENT_GRID)
        pairs = _split_array(text)
    if not pairs:
        raise EventError("The request contains no events.")
    events = []
    for index, (item, raw) in enumerate(pairs):
        if not isinstance(item, dict):
            raise EventError(f"Event [{index}] must be a JSON object.")
        if schema == CLOUD_EVENTS:
            if not _looks_like(CLOUD_EVENTS, item) and _looks_like(EVENT_GRID, item):
                raise _wrong_schema(CLOUD_EVENTS)
            _check_cloud_event(index, item)
        else:
            _check_event_grid_event(index, item)
        if len(raw.encode()) > MAX_BYTES:
            raise EventTooLarge(f"Event [{index}] ('{item.get('id')}') exceeds the maximum event size of 1 MB.")
        events.append(PublishedEvent(item, raw))
    return events


# -- subscriptions: filters and the shape each delivery takes --


def matches(filter_: dict[str, Any], event_type: str, subject: str) -> bool:
    """Azure's basic filters: subject prefix/suffix (case-insensitive unless asked) and event types."""
    types = filter_.get("includedEventTypes")
    if types is not None and event_type.lower() not in {t.lower() for t in types}:
        return False
    case_sensitive = bool(filter_.get("isSubjectCaseSensitive"))
    subj = subject if case_sensitive else subject.lower()
    begins = filter_.get("subjectBeginsWith") or ""
    ends = filter_.get("subjectEndsWith") or ""
    if not case_sensitive:
        begins, ends = begins.lower(), ends.lower()
    return subj.startswith(begins) and subj.endswith(ends)


def delivery_body(input_schema: str, delivery_schema: str, event: dict[str, Any], topic_id: str) -> bytes:
    """One event as a webhook receives it: CloudEvents structured mode, or an Event Grid array of one."""
    if input_schema == CLOUD_EVENTS:
        return json.dumps(event, separators=(",", ":")).encode()
    if delivery_schema == EVENT_GRID:
        out = {**event, "topic": topic_id, "metadataVersion": "1"}
        return json.dumps([out], separators=(",", ":")).encode()
    cloud: dict[str, Any] = {
        "id": event["id"],
        "source": topic_id,
        "specversion": "1.0",
        "type": event["eventType"],
        "subject": event["subject"],
        "time": event["eventTime"],
        "data": event.get("data"),
    }
    return json.dumps(cloud, separators=(",", ":")).encode()
