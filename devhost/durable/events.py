"""History events shaped as the Durable Task Framework writes them (what the extension hands the SDK).

Field names and EventType integers follow DTFx's serialized ``HistoryEvent`` classes: scheduling events
(TaskScheduled, TimerCreated, SubOrchestrationInstanceCreated) carry the task id in ``EventId``; every
other event has ``EventId`` -1 and points at its task through ``TaskScheduledId`` / ``TimerId``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # the SDK's DATETIME_STRING_FORMAT; sorts lexicographically


class EventType(IntEnum):
    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_INSTANCE_CREATED = 7
    SUB_ORCHESTRATION_INSTANCE_COMPLETED = 8
    SUB_ORCHESTRATION_INSTANCE_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16
    GENERIC_EVENT = 17
    HISTORY_STATE = 18
    EXECUTION_SUSPENDED = 19
    EXECUTION_RESUMED = 20


class OrchestrationStatus(IntEnum):
    """DTFx ``OrchestrationStatus``; its names are the ``runtimeStatus`` strings of the HTTP API."""

    Running = 0
    Completed = 1
    ContinuedAsNew = 2
    Failed = 3
    Canceled = 4
    Terminated = 5
    Pending = 6
    Suspended = 7


TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
# The extension's default overridableExistingInstanceStates (NonRunningStates): an id in any of these
# states cannot be started again.
RUNNING_STATUSES = frozenset({"Running", "Pending", "ContinuedAsNew", "Suspended"})


def fmt_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_time(text: str) -> datetime:
    """Parse the timestamps the SDK and this module write (``...Z``, optional fraction)."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _event(event_type: EventType, at: datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {"EventType": int(event_type), "EventId": event_id, "IsPlayed": False, "Timestamp": fmt_time(at)} | fields


def orchestrator_started(at: datetime) -> dict[str, Any]:
    return _event(EventType.ORCHESTRATOR_STARTED, at)


def orchestrator_completed(at: datetime) -> dict[str, Any]:
    return _event(EventType.ORCHESTRATOR_COMPLETED, at)


def execution_started(
    at: datetime,
    *,
    name: str,
    instance_id: str,
    execution_id: str,
    input_text: str | None,
    parent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # "Version" must be present: SDK 1.7.0 reads it unconditionally.
    return _event(
        EventType.EXECUTION_STARTED,
        at,
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=parent,
        Name=name,
        Version="",
        Input=input_text,
        Tags=None,
    )


def execution_completed(at: datetime, status: OrchestrationStatus, result: str | None, **extra: Any) -> dict[str, Any]:
    return _event(EventType.EXECUTION_COMPLETED, at, OrchestrationStatus=int(status), Result=result, **extra)


def execution_terminated(at: datetime, reason: str | None) -> dict[str, Any]:
    return _event(EventType.EXECUTION_TERMINATED, at, Input=reason)


def task_scheduled(at: datetime, task_id: int, name: str, input_text: str | None) -> dict[str, Any]:
    return _event(EventType.TASK_SCHEDULED, at, task_id, Name=name, Version="", Input=input_text)


def task_completed(at: datetime, task_id: int, result: str | None) -> dict[str, Any]:
    return _event(EventType.TASK_COMPLETED, at, TaskScheduledId=task_id, Result=result)


def task_failed(at: datetime, task_id: int, reason: str, details: str | None) -> dict[str, Any]:
    return _event(EventType.TASK_FAILED, at, TaskScheduledId=task_id, Reason=reason, Details=details)


def sub_orchestration_created(
    at: datetime, task_id: int, name: str, instance_id: str, input_text: str | None
) -> dict[str, Any]:
    return _event(
        EventType.SUB_ORCHESTRATION_INSTANCE_CREATED,
        at,
        task_id,
        Name=name,
        Version="",
        InstanceId=instance_id,
        Input=input_text,
    )


def sub_orchestration_completed(at: datetime, task_id: int, result: str | None) -> dict[str, Any]:
    return _event(EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED, at, TaskScheduledId=task_id, Result=result)


def sub_orchestration_failed(at: datetime, task_id: int, reason: str, details: str | None) -> dict[str, Any]:
    return _event(
        EventType.SUB_ORCHESTRATION_INSTANCE_FAILED, at, TaskScheduledId=task_id, Reason=reason, Details=details
    )


def timer_created(at: datetime, task_id: int, fire_at: datetime) -> dict[str, Any]:
    return _event(EventType.TIMER_CREATED, at, task_id, FireAt=fmt_time(fire_at))


def timer_fired(at: datetime, timer_id: int, fire_at: str) -> dict[str, Any]:
    return _event(EventType.TIMER_FIRED, at, TimerId=timer_id, FireAt=fire_at)


def event_raised(at: datetime, name: str, input_text: str | None) -> dict[str, Any]:
    return _event(EventType.EVENT_RAISED, at, Name=name, Input=input_text)


def _json_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def friendly_history(events: list[dict[str, Any]], *, show_output: bool, show_input: bool) -> list[dict[str, Any]]:
    """The ``historyEvents`` of a status response, converted as the extension's DurableClient does.

    EventType becomes its name; OrchestratorStarted/Completed and the TaskScheduled /
    SubOrchestrationInstanceCreated events that have a completion are folded into that completion
    (FunctionName, ScheduledTime); results are dropped unless ``show_output``.
    """
    scheduled: dict[tuple[int, int], tuple[int, dict[str, Any]]] = {}
    drop: set[int] = set()
    out: list[dict[str, Any]] = []
    for index, raw in enumerate(events):
        item = dict(raw)
        kind = EventType(item["EventType"])
        item["EventType"] = _pascal(kind)
        if kind in (EventType.TASK_SCHEDULED, EventType.SUB_ORCHESTRATION_INSTANCE_CREATED):
            scheduled[(int(kind), item["EventId"])] = (index, raw)
            item.pop("Version", None)
        elif kind in (
            EventType.TASK_COMPLETED,
            EventType.TASK_FAILED,
            EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED,
            EventType.SUB_ORCHESTRATION_INSTANCE_FAILED,
        ):
            source = (
                EventType.TASK_SCHEDULED
                if kind in (EventType.TASK_COMPLETED, EventType.TASK_FAILED)
                else EventType.SUB_ORCHESTRATION_INSTANCE_CREATED
            )
            match = scheduled.get((int(source), item.get("TaskScheduledId")))
            if match:
                sched_index, sched = match
                item["ScheduledTime"] = sched["Timestamp"]
                item["FunctionName"] = sched.get("Name")
                if show_input:
                    item["Input"] = sched.get("Input")
                drop.add(sched_index)
            item.pop("TaskScheduledId", None)
            is_success = kind in (EventType.TASK_COMPLETED, EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED)
            if is_success:
                if show_output:
                    item["Result"] = _json_or_text(item.get("Result"))
                else:
                    item.pop("Result", None)
        elif kind == EventType.EXECUTION_STARTED:
            item["FunctionName"] = item.pop("Name", None)
            for key in ("OrchestrationInstance", "ParentInstance", "Version", "Tags"):
                item.pop(key, None)
        elif kind == EventType.EXECUTION_COMPLETED:
            item["OrchestrationStatus"] = OrchestrationStatus(item["OrchestrationStatus"]).name
            if show_output:
                item["Result"] = _json_or_text(item.get("Result"))
            else:
                item.pop("Result", None)
        elif kind == EventType.TIMER_FIRED:
            item.pop("TimerId", None)
        elif kind in (EventType.ORCHESTRATOR_STARTED, EventType.ORCHESTRATOR_COMPLETED):
            drop.add(index)
        if not show_input:
            item.pop("Input", None)
        item.pop("EventId", None)
        item.pop("IsPlayed", None)
        out.append(item)
    return [item for index, item in enumerate(out) if index not in drop]


def _pascal(kind: EventType) -> str:
    return "".join(part.capitalize() for part in kind.name.split("_"))
