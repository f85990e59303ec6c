"""One orchestration episode: feed the new messages to the SDK's entry point and decide the transition.

Pure with respect to storage: it gets the instance, its history and the ready messages, calls the
registered orchestrator (``user_function(context=OrchestrationContext(json))``, the SDK's own replay
engine) and returns an ``EpisodeResult`` the engine commits in one transaction.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devhost.app_loader import FunctionInfo, LoadedApp
from devhost.durable import events as ev
from devhost.durable.events import TERMINAL_STATUSES, OrchestrationStatus
from devhost.durable.replay import ReplayError, replay_actions
from devhost.durable.store import Instance, Message
from devhost.worker.protos import protos

log = logging.getLogger("devhost.durable.engine")

OUT_OF_PROC_LABEL = "\n\n$OutOfProcData$:"
# What the 2.13 host sends: the V2 action tree (upperSchemaVersion 1) upgraded to V3 (long timers).
PROTOCOL = {
    "upperSchemaVersion": 1,
    "upperSchemaVersionNew": 2,
    "longRunningTimerIntervalDuration": "3.00:00:00",
    "maximumShortTimerDuration": "6.00:00:00",
}


@dataclass
class Outgoing:
    """A message for another instance (or a later execution of this one)."""

    instance_id: str
    execution_id: str | None
    kind: str
    body: dict[str, Any]
    visible_at: str | None = None
    timer_id: int | None = None


@dataclass
class ChildStart:
    instance: Instance
    start_event: dict[str, Any]
    parent_task_id: int


@dataclass
class EpisodeResult:
    consumed: list[int]
    ran: bool = False  # whether the orchestrator was invoked
    new_events: list[dict[str, Any]] = field(default_factory=list)
    reset_history: bool = False
    instance_fields: dict[str, Any] = field(default_factory=dict)
    activities: list[tuple[int, str, str | None]] = field(default_factory=list)
    messages: list[Outgoing] = field(default_factory=list)
    children: list[ChildStart] = field(default_factory=list)
    canceled_timers: list[int] = field(default_factory=list)
    clear_timers: bool = False
    outcome: str = ""  # for logs: a status or "running"
    replayed: int = 0  # history events the orchestrator was given (what each replay costs)


def is_orchestrator(app: LoadedApp, name: str) -> bool:
    info = app.get(name)
    return info is not None and info.trigger_type == "orchestrationTrigger"


def is_activity(app: LoadedApp, name: str) -> bool:
    info = app.get(name)
    return info is not None and info.trigger_type == "activityTrigger"


def unknown_orchestrator_message(name: str) -> str:
    return f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function."


def new_execution_id() -> str:
    return uuid.uuid4().hex


def run_episode(
    app: LoadedApp, instance: Instance, history: list[dict[str, Any]], messages: list[Message], now: datetime
) -> EpisodeResult:
    result = EpisodeResult(consumed=[m.id for m in messages])
    if instance.status in TERMINAL_STATUSES:
        return result  # late activity results, timers or events for a finished instance are dropped
    current = [m for m in messages if m.execution_id in (None, instance.execution_id)]
    terminate = next((m for m in current if m.kind == "terminate"), None)
    if terminate is not None:
        return _terminate(result, instance, history, terminate, now)
    start = next((m for m in current if m.kind == "start"), None)
    if start is None and instance.status != "Running":
        result.consumed = [m.id for m in messages if m.execution_id not in (None, instance.execution_id)]
        return result  # wait for the start message; keep events for it
    delivered = [_stamp(m, now) for m in current if m.kind == "event"]
    if start is not None:
        past: list[dict[str, Any]] = []
        new = [ev.orchestrator_started(now), start.body, *delivered]
    else:
        if not delivered:
            return result
        past = history
        new = [ev.orchestrator_started(now), *delivered]
    result.ran = True
    return _invoke(result, app, instance, past, new, now)


def _stamp(message: Message, now: datetime) -> dict[str, Any]:
    body = dict(message.body)
    if message.timer_id is not None:
        body["Timestamp"] = ev.fmt_time(now)  # a timer's event is timestamped when it fires
    return body


def _terminate(
    result: EpisodeResult, instance: Instance, history: list[dict[str, Any]], message: Message, now: datetime
) -> EpisodeResult:
    reason = message.body.get("reason")
    result.new_events = [
        ev.orchestrator_started(now),
        ev.execution_terminated(now, reason),
        ev.execution_completed(now, OrchestrationStatus.Terminated, reason),
        ev.orchestrator_completed(now),
    ]
    result.instance_fields = {
        "status": "Terminated",
        "output": json.dumps(reason),
        "last_updated_time": ev.fmt_time(now),
    }
    result.clear_timers = True
    result.outcome = "Terminated"
    # As DTFx does: a running sub-orchestration is not terminated with its parent (children run on), and a
    # terminated sub-orchestration fails its parent's task with the termination reason
    # (DurableTask.Core TaskOrchestrationDispatcher.ProcessWorkflowCompletedTaskDecision: a Failed or
    # Terminated child sends SubOrchestrationInstanceFailedEvent to its parent).
    if instance.parent_instance_id is not None and instance.parent_task_id is not None:
        text = "" if reason is None else str(reason)
        result.messages.append(
            Outgoing(
                instance.parent_instance_id,
                instance.parent_execution_id,
                "event",
                ev.sub_orchestration_failed(now, instance.parent_task_id, text, json.dumps({"Message": text})),
            )
        )
    return result


def _invoke(
    result: EpisodeResult,
    app: LoadedApp,
    instance: Instance,
    past: list[dict[str, Any]],
    new: list[dict[str, Any]],
    now: datetime,
) -> EpisodeResult:
    full = [*past, *new]
    result.replayed = len(full)
    result.new_events = list(new)
    result.reset_history = not past
    info = app.get(instance.name)
    state: dict[str, Any] = {}
    error: str | None = None
    if info is None or info.trigger_type != "orchestrationTrigger":
        error = unknown_orchestrator_message(instance.name)
    else:
        payload = {
            "history": [{**e, "IsPlayed": True} for e in past] + [{**e, "IsPlayed": False} for e in new],
            "input": instance.input,
            "instanceId": instance.instance_id,
            "isReplaying": bool(past),
            "parentInstanceId": instance.parent_instance_id,
            **PROTOCOL,
        }
        state, error = call_orchestrator(app, info, json.dumps(payload))
    if "customStatus" in state:
        result.instance_fields["custom_status"] = json.dumps(state["customStatus"])
    outcome = None
    if error is None:
        actions = state.get("actions") or [[]]
        try:
            if len(actions) != 1:
                raise ReplayError(f"expected the V2 action list (one group), got {len(actions)} groups")
            outcome = replay_actions(
                actions[0],
                full,
                instance.execution_id,
                known_function=lambda kind, name: (
                    is_activity(app, name) if kind == "activity" else is_orchestrator(app, name)
                ),
            )
        except ReplayError as exc:
            error = str(exc)
    result.instance_fields["last_updated_time"] = ev.fmt_time(now)
    if error is not None:
        return _fail(result, instance, error, now)
    assert outcome is not None
    if state.get("isDone") and outcome.continue_as_new:
        return _continue_as_new(result, instance, outcome.continue_as_new_input, now)
    if state.get("isDone"):
        return _complete(result, instance, state.get("output"), "output" in state, now)
    _schedule(result, app, instance, outcome, now)
    return result


def call_orchestrator(app: LoadedApp, info: FunctionInfo, payload_json: str) -> tuple[dict[str, Any], str | None]:
    """Run the orchestrator through the worker; return (state, error). The SDK's entry point raises on an
    orchestrator exception with its state after ``$OutOfProcData$:``, which the worker reports as the
    failed invocation's message."""
    answer = app.worker.invoke_sync(info.function_id, [(info.trigger_param, protos.TypedData(string=payload_json))])
    if not answer.succeeded:
        message = answer.exception_message
        if OUT_OF_PROC_LABEL in message:
            head, data = message.split(OUT_OF_PROC_LABEL, 1)
            try:
                state = json.loads(data)
            except ValueError:
                state = {}
            return state, state.get("error") or head
        return {}, message or "orchestrator failed"
    value = answer.return_value
    kind = value.WhichOneof("data") if value is not None else None
    text = getattr(value, kind) if kind in ("json", "string") else "{}"
    return dict(json.loads(text) or {}), None


def _fail(result: EpisodeResult, instance: Instance, error: str, now: datetime) -> EpisodeResult:
    message = f"Orchestrator function '{instance.name}' failed: {error}"
    details = json.dumps({"Message": error})
    result.new_events += [
        ev.execution_completed(
            now,
            OrchestrationStatus.Failed,
            message,
            FailureDetails={"ErrorType": "OrchestrationFailureException", "ErrorMessage": message},
        ),
        ev.orchestrator_completed(now),
    ]
    result.instance_fields.update(status="Failed", output=json.dumps(message))
    result.clear_timers = True  # nothing may wake a finished instance (nor the virtual clock for it)
    result.outcome = "Failed"
    if instance.parent_instance_id is not None and instance.parent_task_id is not None:
        result.messages.append(
            Outgoing(
                instance.parent_instance_id,
                instance.parent_execution_id,
                "event",
                ev.sub_orchestration_failed(now, instance.parent_task_id, message, details),
            )
        )
    return result


def _complete(result: EpisodeResult, instance: Instance, output: Any, has_output: bool, now: datetime) -> EpisodeResult:
    output_text = json.dumps(output) if has_output else None
    result.new_events += [
        ev.execution_completed(now, OrchestrationStatus.Completed, output_text),
        ev.orchestrator_completed(now),
    ]
    result.instance_fields.update(status="Completed", output=output_text)
    result.clear_timers = True
    result.outcome = "Completed"
    if instance.parent_instance_id is not None and instance.parent_task_id is not None:
        result.messages.append(
            Outgoing(
                instance.parent_instance_id,
                instance.parent_execution_id,
                "event",
                ev.sub_orchestration_completed(now, instance.parent_task_id, output_text),
            )
        )
    return result


def _continue_as_new(result: EpisodeResult, instance: Instance, input_text: str | None, now: datetime) -> EpisodeResult:
    """A fresh execution: empty history, same instance id, the action's input; unprocessed events dropped."""
    execution_id = new_execution_id()
    result.new_events = []
    result.reset_history = True
    result.instance_fields.update(status="ContinuedAsNew", execution_id=execution_id, input=input_text, output=None)
    result.clear_timers = True
    parent = _parent_ref(instance)
    start = ev.execution_started(
        now,
        name=instance.name,
        instance_id=instance.instance_id,
        execution_id=execution_id,
        input_text=input_text,
        parent=parent,
    )
    result.messages.append(Outgoing(instance.instance_id, execution_id, "start", start))
    result.outcome = "ContinuedAsNew"
    return result


def _parent_ref(instance: Instance) -> dict[str, Any] | None:
    if instance.parent_instance_id is None:
        return None
    return {
        "Name": instance.parent_name,
        "OrchestrationInstance": {
            "InstanceId": instance.parent_instance_id,
            "ExecutionId": instance.parent_execution_id,
        },
        "TaskScheduleId": instance.parent_task_id,
    }


def _schedule(result: EpisodeResult, app: LoadedApp, instance: Instance, outcome: Any, now: datetime) -> None:
    stamp = ev.fmt_time(now)
    for work in outcome.new_work:
        if work.kind == "activity":
            info = app.get(work.name)
            name = info.name if info else work.name
            result.new_events.append(ev.task_scheduled(now, work.task_id, name, work.input))
            result.activities.append((work.task_id, name, work.input))
        elif work.kind == "timer":
            result.new_events.append(ev.timer_created(now, work.task_id, work.fire_at))
            if not work.canceled:
                fire_at = ev.fmt_time(work.fire_at)
                result.messages.append(
                    Outgoing(
                        instance.instance_id,
                        instance.execution_id,
                        "event",
                        ev.timer_fired(now, work.task_id, fire_at),
                        visible_at=fire_at,
                        timer_id=work.task_id,
                    )
                )
        else:
            info = app.get(work.name)
            name = info.name if info else work.name
            result.new_events.append(
                ev.sub_orchestration_created(now, work.task_id, name, work.instance_id, work.input)
            )
            child_execution = new_execution_id()
            child = Instance(
                instance_id=work.instance_id,
                name=name,
                execution_id=child_execution,
                status="Pending",
                input=work.input,
                output=None,
                custom_status=None,
                created_time=stamp,
                last_updated_time=stamp,
                parent_instance_id=instance.instance_id,
                parent_execution_id=instance.execution_id,
                parent_task_id=work.task_id,
                parent_name=instance.name,
            )
            start = ev.execution_started(
                now,
                name=name,
                instance_id=work.instance_id,
                execution_id=child_execution,
                input_text=work.input,
                parent=_parent_ref(child),
            )
            result.children.append(ChildStart(child, start, work.task_id))
    result.new_events.append(ev.orchestrator_completed(now))
    result.canceled_timers = sorted(outcome.canceled_timers)
    result.instance_fields["status"] = "Running"
    result.outcome = "Running"
