"""The platform side of one rotation run: the request it runs on, its activities and timeline, the
publishing, and the race every wait runs against `Supersede` (an emergency taking over the target).

The application side, the lifecycle itself, reads in orchestrations/rotation.py; its stages live in
overlap.py, gate.py, revocation.py and endings.py, each a mixin of `RunBase`.

Two exceptions end a run early, each handled once in `RotationRun.run`: `Superseded` (an authentic
emergency took over) and `StageFailed` (a stage gave up: which stage, why, whether to compensate).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from datetime import datetime, timedelta
from typing import Any, cast

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskState, TimerTask

from orchestrations.inbox import Inbox
from orchestrations.request import RotationRequest
from orchestrations.retry import KEY_STEP, PUBLISH_STEP, QUERY_STEP, for_target, step_error
from orchestrations.status import RotationStatus
from rotation import events
from rotation.contracts import json_object
from rotation.durations import format_timestamp
from rotation.identity import Actor
from rotation.messages import EventCheck, FailureCount, FailureCountRequest, Message, PublishRequest, TargetRef, Verdict
from rotation.reasons import MAX_REASON, clean_optional
from rotation.stages import Mail, Phase, Stage

MAX_IGNORED_NOTES = 10  # timeline entries for ignored events; the rest go to the log only

Orchestration = Generator[Any, Any, Any]
Event = dict[str, Any]


class Superseded(BaseException):
    """An emergency rotation took over this target. A BaseException so no `except Exception` around a
    step (which decides roll-back) ever swallows it; `RotationRun.run` handles it."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__("superseded")
        self.payload = payload


class StageFailed(Exception):
    """A stage gave up: the rotation ends loudly (RotationFailed) at `stage`, undoing the new key first
    when `compensate` (only before consumers were told about it). `outcome` "aborted": an approver's call."""

    def __init__(self, stage: Stage, reason: str, *, compensate: bool, outcome: Phase = Phase.FAILED) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason, self.compensate, self.outcome = stage, reason, compensate, outcome


def event_payload(value: Any) -> dict[str, Any]:
    """The Python client double-encodes raise_event data, so payloads arrive as JSON text."""
    return json_object(value)


def actor_from(payload: dict[str, Any], fallback: str) -> Actor:
    raw = payload.get("actor")
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        oid = raw.get("objectId")
        return Actor("principal", raw["name"][:128], oid if isinstance(oid, str) else None)
    return Actor("principal", fallback)


class RunBase:
    """State and platform helpers every stage uses; stages are sub-generators driven with `yield from`."""

    def __init__(self, context: df.DurableOrchestrationContext, request: RotationRequest) -> None:
        given = request.input
        self.ctx = context
        self.req = request
        self.rotation_id = given.rotation_id
        self.target = request.target
        self.started = context.current_utc_datetime
        self.info = events.RotationInfo(
            rotation_id=given.rotation_id,
            target_id=self.target.id,
            mode=given.mode,
            actor=given.actor,
            started_at=self.started,
            reason=given.reason,
        )
        self.status = RotationStatus(
            rotation_id=given.rotation_id,
            target_id=self.target.id,
            mode=given.mode,
            trigger={"actor": given.actor.to_json(), "reason": clean_optional(given.reason, MAX_REASON)},
        )
        self.ref = TargetRef.of(self.target, given.fingerprint)
        self.current_key_name = given.current_key_name  # the key consumers hold (step 0 may restore another)
        self.inbox = {name: Inbox(context, name) for name in Mail}
        self.successor: dict[str, Any] | None = None  # an authentic Supersede seen as the rotation ended
        self.ignored = 0  # events ignored as not the app's

    @property
    def now(self) -> datetime:
        return self.ctx.current_utc_datetime

    @property
    def emergency(self) -> bool:
        return self.req.input.mode == "emergency"

    def timer(self, fire_at: datetime) -> TimerTask:
        """A durable timer that can be cancelled. The SDK annotates create_timer() as returning TaskBase; it
        returns a TimerTask, or for a long timer a LongTimerTask, which is no subclass but has the same cancel()."""
        return cast(TimerTask, self.ctx.create_timer(fire_at))

    # -- the timeline ---------------------------------------------------------------------------
    def publish_status(self) -> None:
        self.ctx.set_custom_status(self.status.to_json())

    def enter(self, phase: Phase) -> None:
        self.status.stage = phase
        self.publish_status()

    def note(self, step: str, status: str, detail: str | None = None, actor: dict[str, Any] | None = None) -> None:
        """One timeline entry, now, in the custom status at once (I6, the audit trail)."""
        self.status.step(step, status, self.now, detail, actor)
        self.publish_status()

    def stage(self, phase: Phase | None, step: str, work: Orchestration) -> Orchestration:
        """Run one stage: enter `phase` (None: stay), drive `work` (a stage returning `(result, detail)`),
        then record `step` done with `detail` (None: the stage recorded its own outcome)."""
        if phase is not None:
            self.enter(phase)
        result, detail = yield from work
        if detail is not None:
            self.note(step, "done", detail)
        return result

    # -- activities -----------------------------------------------------------------------------
    def activity(self, name: str, retry: df.RetryOptions, request: Message) -> Any:
        """`retry` names the kind of step; its numbers come from the target's policy (`calls.step`)."""
        return self.ctx.call_activity_with_retry(name, for_target(retry, self.target), request.to_json())

    def call(self, stage: Stage, name: str, retry: df.RetryOptions, request: Message, *, compensate: bool) -> Any:
        """An activity the stage cannot do without: its failure ends the rotation (StageFailed)."""
        try:
            return (yield self.activity(name, retry, request))
        except Exception as exc:
            raise StageFailed(stage, step_error(exc), compensate=compensate) from None

    def publish_request(self, cloud_events: Iterator[Event] | tuple[Event, ...]) -> PublishRequest:
        """Publish requests carry no target: the target's call budget goes along."""
        return PublishRequest(tuple(cloud_events), self.ref.calls)

    def publish(self, *cloud_events: Event) -> Any:
        return self.activity("publish_events", PUBLISH_STEP, self.publish_request(cloud_events))

    def announce(self, *cloud_events: Event) -> Orchestration:
        """Announce: one publish, its own step. Returns the error (for the caller's policy), or None."""
        try:
            yield self.publish(*cloud_events)
        except Exception as exc:
            return step_error(exc)
        return None

    def publish_last(self, *cloud_events: Event) -> Orchestration:
        """The last step of every ending races its publish against `Supersede`: a waiter only hears
        events once yielded, so this is how an emergency that arrives as a rotation ends is seen (then
        `run` hands over). Retried here by hand, with the target's step budget: a durable retry task
        abandoned inside task_any desynchronises task ids, a plain activity and a timer do not. Without
        the retry, an Event Grid outage at the end swallowed RotationFailed (found by the fault campaign)."""
        retry = self.target.calls.step
        request = self.publish_request(cloud_events).to_json()
        for attempt in range(1, retry.attempts + 1):
            if (yield from self.successor_arrived()):
                return
            task = self.ctx.call_activity("publish_events", request)
            winner = yield self.ctx.task_any([task, self.inbox[Mail.SUPERSEDE].listen()])
            if winner is not task:
                if (yield from self.successor_arrived()):
                    return
                with contextlib.suppress(Exception):  # a failed publish is judged below
                    yield task  # the event was not the app's: wait for the publish alone
            if task.state is not TaskState.FAILED:
                return
            if attempt == retry.attempts:
                raise task.result
            resume_at = self.now + retry.interval(attempt)
            while True:
                pause = self.timer(resume_at)
                winner = yield self.ctx.task_any([pause, self.inbox[Mail.SUPERSEDE].listen()])
                if winner is pause:
                    break
                pause.cancel()
                if (yield from self.successor_arrived()):
                    return

    def count_failures(self, start: datetime, end: datetime, length: timedelta) -> Orchestration:
        """Auth failures in [start, end] and in a baseline of `length` before the rotation started (the gate
        and the watch). A failed query is a FailureCount with the error, never zero failures."""
        request = FailureCountRequest(
            self.ref,
            window={"start": format_timestamp(start), "end": format_timestamp(end)},
            baseline={"start": format_timestamp(self.started - length), "end": format_timestamp(self.started)},
        )
        try:
            return FailureCount.from_json((yield self.activity("count_auth_failures", QUERY_STEP, request)))
        except Exception as exc:
            return FailureCount(error=step_error(exc), query_failed=True)

    # -- external events ------------------------------------------------------------------------
    def authentic(self, name: Mail, task: Any, expect: dict[str, Any] | None = None) -> Orchestration:
        """The payload of an external event if the app signed it for this rotation (and it matches
        `expect`), else None: whoever holds the Durable system key can raise events, only the app's API
        can sign them (rotation/signing.py). Judged in an activity, so the verdict is in the history and a
        replay never decides differently, whatever happened to the signing key since. Waiters stay open
        while it runs (orchestrations/inbox.py), so no event is lost meanwhile. An ignored event is noted
        in the timeline (at most MAX_IGNORED_NOTES times: a flood must not grow the status)."""
        payload = event_payload(task.result)
        check = EventCheck(self.rotation_id, str(name), payload, expect or {})
        verdict = Verdict.from_json(
            (yield self.ctx.call_activity_with_retry("verify_event", KEY_STEP, check.to_json()))
        )
        if verdict.valid:
            return payload
        self.ignored += 1
        if self.ignored <= MAX_IGNORED_NOTES:
            more = " (further ignored events are only logged)" if self.ignored == MAX_IGNORED_NOTES else ""
            self.note("event", "ignored", f"{name}: {verdict.why}{more}")
        return None

    def successor_of(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The emergency rotation an authentic Supersede hands this target to: the API's own signed input
        for it (its first step checks that signature and resolves the target from the policy again)."""
        successor = payload.get("next")
        if not isinstance(successor, dict):
            return None
        rotation_id = successor.get("rotationId")
        if (
            successor.get("targetId") != self.target.id
            or successor.get("mode") != "emergency"
            or rotation_id == self.rotation_id
            or payload.get("rotationId") != rotation_id
        ):
            return None
        return successor

    def takeover_payload(self) -> Orchestration:
        """The first authentic Supersede among those that arrived (each is judged once), or None. Judging
        is an activity, and one that arrives meanwhile fires a waiter of no race: look until none did."""
        while fired := self.inbox[Mail.SUPERSEDE].arrived():
            for waiter in fired:
                payload = yield from self.authentic(Mail.SUPERSEDE, waiter)
                if payload is not None and self.successor_of(payload) is not None:
                    return payload
        return None

    def successor_arrived(self) -> Orchestration:
        """At the end: remember an authentic Supersede that arrived (`run` hands over to it)."""
        self.successor = yield from self.takeover_payload()
        return self.successor is not None

    def superseded_by(self) -> Orchestration:
        """Before and after every wait: an authentic emergency that arrived takes over now, whichever task
        won, and also one raised while a step ran between two waits."""
        payload = yield from self.takeover_payload()
        if payload is not None:
            raise Superseded(payload)

    def sleep_until(self, fire_at: datetime) -> Orchestration:
        """A durable wait that only an authentic emergency cuts short."""
        while True:
            yield from self.superseded_by()
            timer = self.timer(fire_at)
            winner = yield self.ctx.task_any([timer, self.inbox[Mail.SUPERSEDE].listen()])
            if winner is timer:
                return
            timer.cancel()
