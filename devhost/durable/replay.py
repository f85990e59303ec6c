"""Works out which of an orchestrator's actions are new, replaying them the way the real host does.

On Azure the out-of-process shim (``OutOfProcOrchestrationShim``, schema V2/V3) takes the SDK's
cumulative action tree and, for each top-level action in order, calls the matching DTFx context API
and awaits it (failures swallowed). DTFx gives every scheduling call the next number of a
per-execution counter, matches it against the scheduling events already in history and turns the
unmatched ones into new work. Retries run in DTFx's RetryInterceptor: a failed attempt is followed
by a back-off timer and a fresh attempt, each taking a number. This module reproduces that, so task
ids agree with the ids the SDK assigns; a mismatch would leave the orchestrator waiting forever.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devhost.durable.events import EventType, parse_time

ACTION_CALL_ACTIVITY = 0
ACTION_CALL_ACTIVITY_WITH_RETRY = 1
ACTION_CALL_SUB_ORCHESTRATOR = 2
ACTION_CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
ACTION_CONTINUE_AS_NEW = 4
ACTION_CREATE_TIMER = 5
ACTION_WAIT_FOR_EXTERNAL_EVENT = 6
ACTION_WHEN_ANY = 11
ACTION_WHEN_ALL = 12
MAX_RETRY_DELAY_MS = 10 * 365 * 24 * 3600 * 1000.0  # stands in for TimeSpan.MaxValue

_SCHEDULING = {
    EventType.TASK_SCHEDULED: "activity",
    EventType.TIMER_CREATED: "timer",
    EventType.SUB_ORCHESTRATION_INSTANCE_CREATED: "suborchestration",
}
_COMPLETIONS = {
    EventType.TASK_COMPLETED: True,
    EventType.TASK_FAILED: False,
    EventType.SUB_ORCHESTRATION_INSTANCE_COMPLETED: True,
    EventType.SUB_ORCHESTRATION_INSTANCE_FAILED: False,
}


class ReplayError(Exception):
    """The actions do not fit the history (non-determinism) or use an unsupported API."""


@dataclass
class NewWork:
    """A scheduling decision that history does not hold yet."""

    task_id: int
    kind: str  # "activity" | "timer" | "suborchestration"
    name: str | None = None
    input: str | None = None
    fire_at: datetime | None = None
    instance_id: str | None = None
    canceled: bool = False


@dataclass
class ReplayOutcome:
    new_work: list[NewWork]
    canceled_timers: set[int] = field(default_factory=set)
    continue_as_new: bool = False
    continue_as_new_input: str | None = None


@dataclass
class RetryPolicy:
    """DTFx RetryOptions as the extension reads them from the SDK's JSON."""

    first_interval: timedelta
    max_attempts: int
    backoff: float = 1.0
    max_interval: timedelta | None = None
    timeout: timedelta | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetryPolicy:
        def ms(key: str) -> timedelta | None:
            return timedelta(milliseconds=data[key]) if data.get(key) is not None else None

        first = ms("firstRetryIntervalInMilliseconds")
        if first is None or "maxNumberOfAttempts" not in data:
            raise ReplayError("retryOptions needs firstRetryIntervalInMilliseconds and maxNumberOfAttempts")
        return cls(
            first_interval=first,
            max_attempts=int(data["maxNumberOfAttempts"]),
            backoff=float(data.get("backoffCoefficient") or 1.0),
            max_interval=ms("maxRetryIntervalInMilliseconds"),
            timeout=ms("retryTimeoutInMilliseconds"),
        )

    def next_delay(self, attempt: int, first_attempt: datetime, now: datetime) -> timedelta:
        """RetryInterceptor.ComputeNextDelay: zero means give up now, without a timer."""
        if self.timeout is not None and now >= first_attempt + self.timeout:
            return timedelta(0)
        try:
            delay_ms = self.first_interval.total_seconds() * 1000 * math.pow(self.backoff, attempt)
        except OverflowError:
            delay_ms = math.inf
        if self.max_interval is not None and delay_ms >= self.max_interval.total_seconds() * 1000:
            return self.max_interval
        return timedelta(milliseconds=min(delay_ms, MAX_RETRY_DELAY_MS))


class _Node:
    def __init__(self) -> None:
        self.parent: _Node | None = None
        self.invoked = False
        self.done = False

    def invoke(self, sim: _Simulation) -> None:
        raise NotImplementedError

    def finish(self, sim: _Simulation) -> None:
        if self.done:
            return
        self.done = True
        if self.parent is not None:
            self.parent.child_done(self, sim)

    def child_done(self, child: _Node, sim: _Simulation) -> None:
        raise NotImplementedError

    def on_result(self, sim: _Simulation, task_id: int, success: bool) -> None:
        raise NotImplementedError


class _Scheduled(_Node):
    """An activity, sub-orchestration or timer, optionally wrapped in the retry loop."""

    def __init__(self, kind: str, action: dict[str, Any], retry: RetryPolicy | None) -> None:
        super().__init__()
        self.kind = kind
        self.action = action
        self.retry = retry
        self.attempt = 0
        self.first_attempt: datetime | None = None
        self.waiting_on_retry_timer = False

    def invoke(self, sim: _Simulation) -> None:
        self.invoked = True
        self.first_attempt = sim.now
        self._attempt(sim)

    def _attempt(self, sim: _Simulation) -> None:
        task_id = sim.allocate()
        action = self.action
        if self.kind == "activity":
            work = NewWork(task_id, "activity", name=action.get("functionName"), input=action.get("input"))
        elif self.kind == "suborchestration":
            instance_id = action.get("instanceId") or f"{sim.execution_id}:{task_id}"
            work = NewWork(
                task_id,
                "suborchestration",
                name=action.get("functionName"),
                input=action.get("input"),
                instance_id=instance_id,
            )
        else:
            work = NewWork(
                task_id, "timer", fire_at=parse_time(action["fireAt"]), canceled=bool(action.get("isCanceled"))
            )
        sim.schedule(work, self)
        if work.kind == "timer" and work.canceled:
            # The shim cancels the timer right after creating it: the id is used, the task is done.
            sim.cancel_timer(task_id)
            self.finish(sim)

    def on_result(self, sim: _Simulation, task_id: int, success: bool) -> None:
        if self.waiting_on_retry_timer:
            self.waiting_on_retry_timer = False
            self.attempt += 1
            if self.retry is not None and self.attempt < self.retry.max_attempts:
                self._attempt(sim)
            else:
                self.finish(sim)
            return
        if success or self.retry is None:
            self.finish(sim)
            return
        assert self.first_attempt is not None and sim.now is not None
        delay = self.retry.next_delay(self.attempt, self.first_attempt, sim.now)
        if delay <= timedelta(0):
            self.finish(sim)
            return
        timer_id = sim.allocate()
        sim.schedule(NewWork(timer_id, "timer", fire_at=sim.now + delay), self)
        self.waiting_on_retry_timer = True


class _ExternalEvent(_Node):
    """The extension keeps waiters per name (case-insensitive) on a stack: the newest wait gets the
    event, so abandoned waits of earlier WhenAny-in-a-loop iterations never swallow it."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name.lower()

    def invoke(self, sim: _Simulation) -> None:
        self.invoked = True
        if sim.buffered[self.name]:
            sim.buffered[self.name].popleft()
            self.finish(sim)
        else:
            sim.waiters[self.name].append(self)


class _Immediate(_Node):
    """Fire-and-forget actions (ContinueAsNew): complete as soon as they are invoked."""

    def invoke(self, sim: _Simulation) -> None:
        self.invoked = True
        self.finish(sim)


class _Compound(_Node):
    def __init__(self, children: list[_Node], wait_all: bool) -> None:
        super().__init__()
        self.children = children
        self.wait_all = wait_all
        for child in children:
            child.parent = self

    def invoke(self, sim: _Simulation) -> None:
        self.invoked = True
        for child in self.children:
            child.invoke(sim)
        self._check(sim)

    def child_done(self, child: _Node, sim: _Simulation) -> None:
        if self.invoked:
            self._check(sim)

    def _check(self, sim: _Simulation) -> None:
        finished = [c.done for c in self.children]
        if (all(finished) if self.wait_all else any(finished)) or not self.children:
            self.finish(sim)


class _Simulation:
    def __init__(self, actions: list[dict[str, Any]], execution_id: str) -> None:
        self.execution_id = execution_id
        self.next_id = 0
        self.now: datetime | None = None
        self.pending: dict[int, NewWork] = {}
        self.open: dict[int, _Node] = {}
        self.canceled: set[int] = set()
        self.waiters: defaultdict[str, list[_Node]] = defaultdict(list)
        self.buffered: defaultdict[str, deque[None]] = defaultdict(deque)
        self.continue_as_new = False
        self.continue_as_new_input: str | None = None
        self.top = [self.build(a) for a in actions]
        self.cursor = 0
        self.started = False

    def build(self, action: dict[str, Any]) -> _Node:
        kind = action.get("actionType")
        if kind == ACTION_CALL_ACTIVITY:
            return _Scheduled("activity", action, None)
        if kind == ACTION_CALL_ACTIVITY_WITH_RETRY:
            return _Scheduled("activity", action, RetryPolicy.from_json(action.get("retryOptions") or {}))
        if kind == ACTION_CALL_SUB_ORCHESTRATOR:
            return _Scheduled("suborchestration", action, None)
        if kind == ACTION_CALL_SUB_ORCHESTRATOR_WITH_RETRY:
            return _Scheduled("suborchestration", action, RetryPolicy.from_json(action.get("retryOptions") or {}))
        if kind == ACTION_CREATE_TIMER:
            return _Scheduled("timer", action, None)
        if kind == ACTION_WAIT_FOR_EXTERNAL_EVENT:
            return _ExternalEvent(str(action.get("externalEventName")))
        if kind == ACTION_CONTINUE_AS_NEW:
            self.continue_as_new = True
            self.continue_as_new_input = action.get("input")
            return _Immediate()
        if kind in (ACTION_WHEN_ANY, ACTION_WHEN_ALL):
            children = [self.build(c) for c in action.get("compoundActions") or []]
            return _Compound(children, wait_all=kind == ACTION_WHEN_ALL)
        raise ReplayError(f"action type {kind} is not supported by devhost")

    def allocate(self) -> int:
        task_id = self.next_id
        self.next_id += 1
        return task_id

    def schedule(self, work: NewWork, node: _Node) -> None:
        self.pending[work.task_id] = work
        self.open[work.task_id] = node

    def cancel_timer(self, task_id: int) -> None:
        self.open.pop(task_id, None)
        self.canceled.add(task_id)

    def advance(self) -> None:
        """Invoke top-level actions in order until one is still waiting (the shim awaits each)."""
        while self.cursor < len(self.top):
            node = self.top[self.cursor]
            if not node.invoked:
                node.invoke(self)
            if not node.done:
                return
            self.cursor += 1

    def feed(self, event: dict[str, Any]) -> None:
        kind = EventType(event["EventType"])
        if kind == EventType.ORCHESTRATOR_STARTED:
            self.now = parse_time(event["Timestamp"])
        elif kind == EventType.EXECUTION_STARTED:
            self.started = True
            self.advance()
        elif kind in _SCHEDULING:
            task_id = event["EventId"]
            work = self.pending.pop(task_id, None)
            if work is None or work.kind != _SCHEDULING[kind]:
                raise ReplayError(
                    f"non-deterministic orchestrator: history has {kind.name} for task {task_id} "
                    f"but the replayed code scheduled {work.kind if work else 'nothing'} there"
                )
        elif kind in _COMPLETIONS or kind == EventType.TIMER_FIRED:
            task_id = event["TimerId"] if kind == EventType.TIMER_FIRED else event["TaskScheduledId"]
            node = self.open.pop(task_id, None)
            if node is not None:
                node.on_result(self, task_id, _COMPLETIONS.get(kind, True))
                self.advance()
        elif kind == EventType.EVENT_RAISED:
            name = str(event.get("Name")).lower()
            if self.waiters[name]:
                self.waiters[name].pop().finish(self)
                self.advance()
            else:
                self.buffered[name].append(None)


def replay_actions(
    actions: list[dict[str, Any]],
    history: list[dict[str, Any]],
    execution_id: str,
    known_function: Callable[[str, str], bool] | None = None,
) -> ReplayOutcome:
    """Match a V2/V3 action list (the SDK's ``actions[0]``) against ``history``; return the new work.

    ``known_function(kind, name)`` lets the caller reject calls to functions the app does not have,
    as the extension does when the action is first scheduled.
    """
    sim = _Simulation(actions, execution_id)
    for event in history:
        sim.feed(event)
    if not sim.started:
        sim.advance()
    new_work = sorted(sim.pending.values(), key=lambda w: w.task_id)
    if known_function is not None:
        for work in new_work:
            if work.kind != "timer" and work.name and not known_function(work.kind, work.name):
                kind = "activity" if work.kind == "activity" else "orchestrator"
                raise ReplayError(
                    f"The function '{work.name}' doesn't exist, is disabled, or is not an {kind} function."
                )
    return ReplayOutcome(
        new_work=new_work,
        canceled_timers=sim.canceled,
        continue_as_new=sim.continue_as_new,
        continue_as_new_input=sim.continue_as_new_input,
    )
