"""The rotation lifecycle of one target: provision → verify → announce → overlap → gate → revoke → watch.

One instance per target (`rotation-<targetId>`, the singleton guard of invariant I3). Deterministic:
time comes from `context.current_utc_datetime`, every decision from the input and activity results,
and no key value ever enters the input, the results or the custom status (I1). The input names the target
and is signed by the app; step 0 resolves the target from the deployed policy (rotation/inputs.py), and
events raised on the rotation count only when the app signed them (`authentic`).

History budget (DESIGN: ≤ 100 events for overlaps up to 30 days; measured: 60 for a 30-day overlap).
Every await costs about four history events, so: the provision, verify and revoke activities publish the
event of their stage themselves once their work succeeded (`events` in their request — one await instead
of two); durable timers are at most 6 days (the SDK would split longer ones into 3-day sub-timers); Key
Vault adoption is polled at two points of a short overlap, or at the middle 6-day boundary of a long one,
never more; acknowledgements arrive as external events and cost no polling. Measured:
tests/test_orchestration_lifecycle.py.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskState, TimerTask

from orchestrations.inbox import Inbox
from orchestrations.predecessor import Predecessor
from orchestrations.retry import KEY_STEP, PUBLISH_STEP, QUERY_STEP, VERIFY_STEP, for_target, step_error
from orchestrations.status import RotationStatus
from rotation import events, naming
from rotation.contracts import json_object
from rotation.durations import DurationError, format_duration, format_timestamp, parse_duration
from rotation.identity import Actor
from rotation.inputs import InputError, check_shape, check_start_time
from rotation.policy import MASTER_KEY_NAME, Target, parse_target
from rotation.reasons import MAX_REASON, clean_optional

bp = df.Blueprint()
log = logging.getLogger("keyrotation.orchestrations.rotation")

MAX_TIMER = timedelta(days=6)  # Python durable timers are capped at 6 days: longer waits loop
MIN_CHECK_SPACING = timedelta(minutes=15)
MAX_EXTEND = timedelta(days=7)
MAX_IGNORED_NOTES = 10  # timeline entries for ignored events; the rest go to the log only

# External events an operator or consumer raises on a rotation instance.
ACK_EVENT = "ConsumerAck"
APPROVE_EVENT = "Approve"
ABORT_EVENT = "Abort"
EXTEND_EVENT = "Extend"
SUPERSEDE_EVENT = "Supersede"  # an emergency rotation of the same target takes over
DECISIONS = (APPROVE_EVENT, ABORT_EVENT, EXTEND_EVENT)
EVENTS = (ACK_EVENT, *DECISIONS, SUPERSEDE_EVENT)

# The events.Stage a lifecycle stage reports failures under.
EVENT_STAGE: dict[str, events.Stage] = {
    "provisioning": "provision",
    "verifying": "verify",
    "overlap": "overlap",
    "gate": "gate",
    "held": "gate",
    "extended": "gate",
    "revoking": "revoke",
    "watching": "watch",
}

Orchestration = Generator[Any, Any, Any]


class Superseded(BaseException):
    """An emergency rotation took over this target. A BaseException so the `except Exception` around
    each step (which decides roll-back) never swallows it; `RotationRun.run` handles it."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__("superseded")
        self.payload = payload


def event_payload(value: Any) -> dict[str, Any]:
    """The Python client double-encodes raise_event data, so payloads arrive as JSON text."""
    return json_object(value)


def actor_from(payload: dict[str, Any], fallback: str) -> Actor:
    raw = payload.get("actor")
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        oid = raw.get("objectId")
        return Actor("principal", raw["name"][:128], oid if isinstance(oid, str) else None)
    return Actor("principal", fallback)


@dataclass(frozen=True)
class RotationRequest:
    """The orchestration input (rotation/inputs.py: it names the target, signed by the app) with the
    target the first step resolved from the deployed policy. The rotation keeps that definition's timing
    (overlap, hold, consumers) to the end; every step looks the target up again and refuses to act once
    the policy sends its keys elsewhere (`fingerprint`)."""

    rotation_id: str
    mode: naming.Mode
    target: Target
    target_json: dict[str, Any]
    fingerprint: str
    actor: Actor
    reason: str | None
    overlap: timedelta | None  # an explicit overlap (emergency); None = the policy's
    current_key_name: str | None
    replaces: Predecessor | None = None  # a stuck rotation of this target, abandoned as step 0

    @staticmethod
    def from_json(data: dict[str, Any], resolved: dict[str, Any]) -> RotationRequest:
        overlap = data.get("overlap")
        target = parse_target(resolved["target"])
        replaces = data.get("replaces")
        return RotationRequest(
            rotation_id=data["rotationId"],
            mode=data["mode"],
            target=target,
            target_json=resolved["target"],
            fingerprint=resolved["fingerprint"],
            actor=Actor.from_json(data["actor"]),
            reason=data.get("reason"),
            overlap=parse_duration(overlap) if overlap else None,
            current_key_name=data.get("currentKeyName"),
            replaces=Predecessor.from_json(replaces, target.id, data["rotationId"]) if replaces else None,
        )


class RotationRun:
    """One execution of the lifecycle; methods are sub-generators driven with `yield from`."""

    def __init__(self, context: df.DurableOrchestrationContext, request: RotationRequest) -> None:
        self.ctx = context
        self.req = request
        self.target = request.target
        self.started = context.current_utc_datetime
        self.info = events.RotationInfo(
            rotation_id=request.rotation_id,
            target_id=self.target.id,
            mode=request.mode,
            actor=request.actor,
            started_at=self.started,
            reason=request.reason,
        )
        self.status = RotationStatus(
            rotation_id=request.rotation_id,
            target_id=self.target.id,
            mode=request.mode,
            trigger={"actor": request.actor.to_json(), "reason": clean_optional(request.reason, MAX_REASON)},
        )
        self.provisioned: dict[str, Any] | None = None
        self.current_key_name = request.current_key_name
        self.pending_events: list[dict[str, Any]] = []
        self.inbox = {name: Inbox(context, name) for name in EVENTS}
        self.successor: dict[str, Any] | None = None  # an authentic Supersede seen as the rotation ended
        self.ignored = 0  # events ignored as not the app's

    # -- helpers --------------------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        return self.ctx.current_utc_datetime

    def timer(self, fire_at: datetime) -> TimerTask:
        """A durable timer that can be cancelled. The SDK annotates create_timer() as returning TaskBase; it
        returns a TimerTask, or for a long timer a LongTimerTask, which is no subclass but has the same cancel()."""
        return cast(TimerTask, self.ctx.create_timer(fire_at))

    @property
    def emergency(self) -> bool:
        return self.req.mode == "emergency"

    def publish_status(self) -> None:
        self.ctx.set_custom_status(self.status.to_json())

    def enter(self, stage: str) -> None:
        self.status.stage = stage
        self.publish_status()

    @property
    def ref(self) -> dict[str, Any]:
        """How every step request names the target: the id and fingerprint (the step resolves it from the
        deployed policy, activities/targets.py), and the call budget the rotation started with."""
        return {
            "targetId": self.target.id,
            "fingerprint": self.req.fingerprint,
            "calls": self.req.target_json.get("calls"),
        }

    def activity(self, name: str, retry: df.RetryOptions, request: dict[str, Any]) -> Any:
        """`retry` names the kind of step; its numbers come from the target's policy (`calls.step`)."""
        return self.ctx.call_activity_with_retry(name, for_target(retry, self.target), request)

    def publish_request(self, cloud_events: tuple[dict[str, Any], ...]) -> dict[str, Any]:
        """Pending events first; the target's call budget goes along (publish requests carry no target)."""
        return {"events": [*self.take_pending(), *cloud_events], "calls": self.req.target_json.get("calls")}

    def publish(self, *cloud_events: dict[str, Any]) -> Any:
        return self.activity("publish_events", PUBLISH_STEP, self.publish_request(cloud_events))

    def take_pending(self) -> list[dict[str, Any]]:
        """Events a step could not publish itself (`unpublished`), sent ahead of the next ones."""
        pending, self.pending_events = self.pending_events, []
        return pending

    def authentic(self, name: str, task: Any, expect: dict[str, Any] | None = None) -> Orchestration:
        """The payload of an external event if the app signed it for this rotation (and it matches
        `expect`), else None: whoever holds the Durable system key can raise events, only the app's API
        can sign them (rotation/signing.py). Judged in an activity, so the verdict is in the history and a
        replay never decides differently, whatever happened to the signing key since. Waiters stay open
        while it runs (orchestrations/inbox.py), so no event is lost meanwhile. An ignored event is noted
        in the timeline (at most MAX_IGNORED_NOTES times: a flood must not grow the status)."""
        payload = event_payload(task.result)
        verdict = yield self.ctx.call_activity_with_retry(
            "verify_event",
            KEY_STEP,
            {"rotationId": self.req.rotation_id, "event": name, "payload": payload, "expect": expect or {}},
        )
        if verdict.get("valid"):
            return payload
        self.ignored += 1
        if self.ignored <= MAX_IGNORED_NOTES:
            more = " (further ignored events are only logged)" if self.ignored == MAX_IGNORED_NOTES else ""
            self.status.step("event", "ignored", self.now, f"{name}: {verdict.get('why')}{more}")
            self.publish_status()
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
            or rotation_id == self.req.rotation_id
            or payload.get("rotationId") != rotation_id
        ):
            return None
        return successor

    def takeover_payload(self) -> Orchestration:
        """The first authentic Supersede among those that arrived (each is judged once), or None. Judging
        is an activity, and one that arrives meanwhile fires a waiter of no race: look until none did."""
        while fired := self.inbox[SUPERSEDE_EVENT].arrived():
            for waiter in fired:
                payload = yield from self.authentic(SUPERSEDE_EVENT, waiter)
                if payload is not None and self.successor_of(payload) is not None:
                    return payload
        return None

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
            winner = yield self.ctx.task_any([timer, self.inbox[SUPERSEDE_EVENT].listen()])
            if winner is timer:
                return
            timer.cancel()

    def overlap(self) -> timedelta:
        if self.target.is_master_key:
            return timedelta(0)  # renewed in place: the old value is dead the moment the PUT returns
        if self.emergency:
            return min(self.req.overlap or timedelta(0), self.target.emergency_max_overlap)
        return self.target.overlap  # scheduled and on-demand rotations take the policy's overlap, nothing else

    def key_name(self) -> str:
        if self.target.is_master_key:
            return MASTER_KEY_NAME
        return naming.key_name(self.target.base_key_name, self.req.rotation_id)

    def output(self, outcome: str, **extra: Any) -> dict[str, Any]:
        return {
            "rotationId": self.req.rotation_id,
            "targetId": self.target.id,
            "mode": self.req.mode,
            "outcome": outcome,
            "stage": self.status.stage,
            "keyName": self.status.key_name,
            "version": self.status.version,
            **extra,
        }

    def publish_last(self, *cloud_events: dict[str, Any]) -> Orchestration:
        """The last step of every ending races its publish against `Supersede`: a waiter only hears
        events once yielded, so this is how an emergency that arrives as a rotation ends is seen (then
        `run` hands over). Retried here by hand, with the target's step budget: a durable retry task
        abandoned inside task_any desynchronises task ids, a plain activity and a timer do not. Without
        the retry, an Event Grid outage at the end swallowed RotationFailed (found by the fault campaign)."""
        retry = self.target.calls.step
        request = self.publish_request(cloud_events)
        for attempt in range(1, retry.attempts + 1):
            self.successor = yield from self.takeover_payload()
            if self.successor is not None:
                return
            task = self.ctx.call_activity("publish_events", request)
            winner = yield self.ctx.task_any([task, self.inbox[SUPERSEDE_EVENT].listen()])
            if winner is not task:
                self.successor = yield from self.takeover_payload()
                if self.successor is not None:
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
                winner = yield self.ctx.task_any([pause, self.inbox[SUPERSEDE_EVENT].listen()])
                if winner is pause:
                    break
                pause.cancel()
                self.successor = yield from self.takeover_payload()
                if self.successor is not None:
                    return

    # -- the lifecycle --------------------------------------------------------------------------
    def run(self) -> Orchestration:
        try:
            output = yield from self.lifecycle()
        except Superseded as signal:
            output = yield from self.supersede(signal.payload)
            return self.hand_over(signal.payload, output)
        successor = self.successor or (yield from self.takeover_payload())
        if successor is not None:  # arrived as this rotation ended: it still takes over
            return self.hand_over(successor, output)
        return output

    def hand_over(self, payload: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        """Continue as the emergency rotation an authentic Supersede names: the same instance id, so the
        target never has two rotations (I3), and a scheduler waiting on this one waits on to the end. The
        successor is the API's signed input, which names the target only; its first step checks it."""
        successor = self.successor_of(payload)
        if successor is not None:
            self.status.step("handover", "done", self.now, f"continues as {successor['rotationId']}")
            self.publish_status()
            self.ctx.continue_as_new(successor)
        return output

    def lifecycle(self) -> Orchestration:
        key_name = self.key_name()
        overlap = self.overlap()
        self.status.key_name = key_name
        self.status.step("requested", "done", self.started, f"{self.req.mode} by {self.req.actor.name}")
        if self.req.replaces is not None:
            yield from self.abandon_predecessor(self.req.replaces)
        self.enter("provisioning")
        started_event = events.rotation_started(
            self.info, key_name=key_name, previous_key_name=self.current_key_name, overlap=overlap
        )
        # An abandoned predecessor's RotationFailed that step 0 could not publish goes out first.
        first_events = [*self.take_pending(), started_event]
        try:
            provisioned = yield self.activity(
                "provision_new_key",
                KEY_STEP,
                {
                    "rotationId": self.req.rotation_id,
                    **self.ref,
                    "keyName": key_name,
                    "events": first_events,
                },
            )
        except Exception as exc:
            return (yield from self.fail("provision", step_error(exc), compensate=True, unpublished=first_events))
        self.provisioned = provisioned
        self.pending_events += provisioned.get("unpublished") or []
        self.status.version = provisioned.get("version")
        self.status.secret_id = provisioned.get("secretId")
        self.status.previous_key_name = provisioned.get("previousKeyName")
        self.status.previous_version = provisioned.get("previousVersion")
        if not provisioned.get("accepted", True):
            attempts = provisioned.get("probeAttempts")
            self.status.step("provision", "failed", self.now, f"target refused the new key after {attempts} probes")
            return (
                yield from self.fail(
                    "verify", "the target never accepted the new key", compensate=True, unpublished=first_events
                )
            )
        self.status.step("provision", "done", self.now, f"key {key_name}, version {provisioned.get('version')}")

        announced_at = self.now
        overlap_ends = announced_at + overlap
        self.status.overlap_ends_at = format_timestamp(overlap_ends)
        announcement = events.new_key_available(
            self.info,
            key_name=key_name,
            secret_id=provisioned["secretId"],
            previous_key_name=provisioned.get("previousKeyName"),
            previous_secret_id=provisioned.get("previousSecretId"),
            available_at=announced_at,
            overlap_ends_at=overlap_ends,
        )
        if self.target.probe is not None:
            self.enter("verifying")
            try:
                verified = yield self.activity(
                    "verify_new_key",
                    VERIFY_STEP,
                    {
                        "rotationId": self.req.rotation_id,
                        **self.ref,
                        "version": provisioned["version"],
                        "events": [*self.take_pending(), announcement],
                    },
                )
            except Exception as exc:
                return (yield from self.fail("verify", step_error(exc), compensate=True))
            if not verified.get("verified"):
                detail = f"last status {verified.get('lastStatus')} after {verified.get('attempts')} attempts"
                self.status.step("verify", "failed", self.now, detail)
                return (yield from self.fail("verify", f"probe refused the new key ({detail})", compensate=True))
            self.status.step("verify", "done", self.now, f"accepted after {verified.get('attempts')} attempt(s)")
            if verified.get("unpublished"):
                try:
                    yield self.publish(*verified["unpublished"])
                except Exception as exc:
                    if not self.emergency:  # nobody was told: rolling back breaks no consumer
                        return (yield from self.fail("announce", step_error(exc), compensate=True))
                    # An emergency revokes the leaked key regardless; consumers read Key Vault's latest.
                    self.status.step("announce", "failed", self.now, step_error(exc))
        else:
            try:
                yield self.publish(announcement)
            except Exception as exc:
                # Nobody has been told about the new key yet, so rolling back breaks no consumer.
                return (yield from self.fail("announce", step_error(exc), compensate=True))
        self.status.step("announce", "done", self.now, "NewKeyAvailable published")

        if overlap > timedelta(0):
            self.enter("overlap")
            ended_by = yield from self.wait_overlap(announced_at, overlap_ends)
            self.status.step("overlap", "done", self.now, ended_by)

        if not self.emergency and not self.target.is_master_key:
            decision = yield from self.gate(announced_at)
            if decision == "abort":
                return (yield from self.abort())

        return (yield from self.revoke_and_finish())

    def abandon_predecessor(self, stuck: Predecessor) -> Orchestration:
        """Step 0: close the stuck rotation this one replaces (see orchestrations/predecessor.py). After its
        announcement nothing is undone, so its RotationFailed simply goes out ahead of RotationStarted (no
        extra await: the history budget). Before it, one activity undoes it. A failed undo does not stop
        this rotation: the stuck key stays valid (it was accepted before it was stored, I2) and this
        rotation's revoke removes it; its RotationFailed then says compensated=false."""
        self.enter("abandoning")
        if stuck.earlier is not None:  # what it was replacing may never have been closed: say it (same id)
            self.pending_events.append(stuck.earlier.failed_event(self.target.id, self.now, compensated=False))
        failed_event = stuck.failed_event(self.target.id, self.now)
        if stuck.announced:
            self.pending_events.append(failed_event)
            detail = f"{stuck.rotation_id} ({stuck.reason}): its keys kept (announced) for this rotation's revoke"
            self.status.step("abandon", "done", self.now, detail)
            return
        try:
            result = yield self.activity(
                "abandon_rotation",
                KEY_STEP,
                {
                    "rotationId": self.req.rotation_id,
                    **self.ref,
                    "replaces": stuck.record,
                    "events": [failed_event],
                },
            )
        except Exception as exc:
            failed_event["data"]["compensated"] = False
            self.pending_events.append(failed_event)
            detail = f"{stuck.rotation_id}: {step_error(exc)}; its keys are left to this rotation's revoke"
            self.status.step("abandon", "failed", self.now, detail)
            return
        self.pending_events += result.get("unpublished") or []
        if result.get("currentKeyName"):
            self.current_key_name = result["currentKeyName"]
        undone = (
            "its new key deleted, the previous version current again"
            if result.get("compensated")
            else "nothing to undo"
        )
        self.status.step("abandon", "done", self.now, f"{stuck.rotation_id} ({stuck.reason}): {undone}")

    # -- overlap --------------------------------------------------------------------------------
    def wake_points(self, start: datetime, end: datetime) -> tuple[list[datetime], list[datetime]]:
        """When the overlap must wake (6-day boundaries) and when it polls adoption: two points inside
        a short overlap, the middle boundary of a long one (see the history budget above)."""
        segments = max(math.ceil((end - start) / MAX_TIMER), 1)
        boundaries = [start + (end - start) * i / segments for i in range(1, segments)]
        if boundaries:
            return boundaries, [boundaries[(len(boundaries) - 1) // 2]]
        checks = [start + (end - start) * i / 3 for i in (1, 2)]
        return [], [t for t in checks if t - start >= MIN_CHECK_SPACING]

    def wait_overlap(self, start: datetime, end: datetime) -> Orchestration:
        """Until `end`, or earlier once every registered consumer acknowledged or was seen reading the
        new version in the Key Vault audit. Without consumers the overlap runs its full length."""
        consumers = {c.object_id: c.name for c in self.target.consumers}
        adopted: set[str] = set()
        boundaries, checks = self.wake_points(start, end)
        if not consumers:
            checks = []
        points = sorted({*boundaries, *checks})
        while self.now < end:
            yield from self.superseded_by()
            fired = self.inbox[ACK_EVENT].arrived()
            for ack in fired:
                yield from self.record_ack(ack, consumers, adopted)
            if consumers and adopted >= consumers.keys():
                return "every consumer switched"
            if fired:
                continue  # acks that arrived while these were judged fired waiters of no race: look again
            wake = min([end, *[t for t in points if t > self.now]])
            timer = self.timer(wake)
            # One waiter per consumer and a spare: acks that arrive together all find one.
            listening = self.inbox[ACK_EVENT].listen_all(len(consumers) + 1) if consumers else []
            winner = yield self.ctx.task_any([timer, self.inbox[SUPERSEDE_EVENT].listen(), *listening])
            if winner is not timer:
                timer.cancel()
                continue
            if wake in checks and consumers.keys() - adopted:
                readers = yield from self.check_adoption(start)
                for oid in sorted(readers & (consumers.keys() - adopted)):
                    adopted.add(oid)
                    self.status.step("adoption", "done", self.now, f"{consumers[oid]} read the new version")
                self.publish_status()
            if consumers and adopted >= consumers.keys():
                return "every consumer switched"
        return "overlap elapsed"

    def record_ack(self, ack: Any, consumers: dict[str, str], adopted: set[str]) -> Orchestration:
        """Count an acknowledgement the app signed for this rotation; False when it adds nobody (unknown,
        repeated, or not the app's)."""
        oid = str(event_payload(ack.result).get("objectId", "")).lower()
        if oid not in consumers or oid in adopted:
            return False
        if (yield from self.authentic(ACK_EVENT, ack)) is None:
            return False
        adopted.add(oid)
        who = {"kind": "principal", "name": consumers[oid], "objectId": oid}
        self.status.step("ack", "done", self.now, f"{consumers[oid]} acknowledged", who)
        self.publish_status()
        return True

    def check_adoption(self, since: datetime) -> Orchestration:
        assert self.provisioned is not None
        try:
            result = yield self.activity(
                "check_adoption",
                QUERY_STEP,
                {
                    **self.ref,
                    "secretId": self.provisioned["secretId"],
                    "since": format_timestamp(since),
                    "until": format_timestamp(self.now),
                },
            )
        except Exception as exc:
            self.status.step("adoption", "failed", self.now, step_error(exc))
            return set()
        return {str(r).lower() for r in result.get("readers") or []}

    # -- gate and hold --------------------------------------------------------------------------
    def gate(self, announced_at: datetime) -> Orchestration:
        """Compare auth failures during the overlap with an equally long baseline before the rotation.
        A failed query is not "zero failures": a scheduled rotation holds."""
        holds = 0
        while True:
            yield from self.superseded_by()  # one raised during the last overlap step or the previous gate
            self.enter("gate")
            window_end = self.now
            length = max(window_end - announced_at, timedelta(minutes=1))
            baseline_start = self.started - length
            try:
                counted = yield self.activity(
                    "count_auth_failures",
                    QUERY_STEP,
                    {
                        **self.ref,
                        "window": {"start": format_timestamp(announced_at), "end": format_timestamp(window_end)},
                        "baseline": {"start": format_timestamp(baseline_start), "end": format_timestamp(self.started)},
                    },
                )
            except Exception as exc:
                counted = {"failures": None, "baseline": None, "error": step_error(exc)}
            failures, baseline, error = counted.get("failures"), counted.get("baseline"), counted.get("error")
            if error is None and failures is not None and baseline is not None:
                if not self.target.monitoring.threshold.breached(failures, baseline):
                    self.status.step("gate", "passed", self.now, f"{failures} auth failures, baseline {baseline}")
                    return "approve"
                reason = f"{failures} auth failures during the overlap against a baseline of {baseline}"
            else:
                reason = f"the failure signal could not be read: {error}"
            holds += 1
            decision = yield from self.hold(announced_at, window_end, failures, baseline, reason, holds)
            if decision != "extend":
                return decision

    def hold(
        self,
        window_start: datetime,
        window_end: datetime,
        failures: int | None,
        baseline: int | None,
        reason: str,
        occurrence: int,
    ) -> Orchestration:
        assert self.provisioned is not None
        held_at = self.now
        deadline = held_at + self.target.hold.deadline
        default = self.target.hold.default_action
        self.status.hold = {
            "reason": reason,
            "failures": failures,
            "baseline": baseline,
            "heldAt": format_timestamp(held_at),
            "deadline": format_timestamp(deadline),
            "defaultAction": default,
        }
        self.status.step("gate", "held", held_at, reason)
        self.enter("held")
        held_event = events.rotation_held(
            self.info,
            key_name=self.status.key_name or "",
            secret_id=self.provisioned["secretId"],
            failures=failures,
            baseline=baseline,
            threshold=self.target.monitoring.threshold,
            window_start=window_start,
            window_end=window_end,
            held_at=held_at,
            deadline=deadline,
            default_action=default,
            hold_reason=reason,
            occurrence=occurrence,
        )
        try:
            yield self.publish(held_event)
        except Exception as exc:
            self.status.step("hold", "failed", self.now, f"RotationHeld not published: {step_error(exc)}")
        this_hold = {"heldAt": format_timestamp(held_at)}  # a decision names the hold it decides
        while True:
            yield from self.superseded_by()
            judged = False
            for name in DECISIONS:
                for fired in self.inbox[name].arrived():
                    judged = True
                    payload = yield from self.authentic(name, fired, this_hold)
                    decision = None if payload is None else self.decision(name, payload)
                    if decision == "extend":
                        self.enter("extended")
                        yield from self.sleep_until(self.now + self.extension(payload))
                        return decision
                    if decision is not None:
                        return decision
            if judged:
                continue  # decisions that arrived while these were judged: look again before waiting
            timer = self.timer(deadline)
            waiters = [self.inbox[name].listen() for name in (SUPERSEDE_EVENT, *DECISIONS)]
            winner = yield self.ctx.task_any([timer, *waiters])
            if winner is timer:
                self.status.step("hold", default, self.now, "deadline passed: the policy's default action")
                self.status.hold = None
                return default
            timer.cancel()

    def extension(self, payload: dict[str, Any]) -> timedelta:
        """How long an (already validated) Extend holds the rotation before it gates again."""
        return min(max(parse_duration(str(payload.get("by", ""))), timedelta(minutes=1)), MAX_EXTEND)

    def decision(self, name: str, payload: dict[str, Any]) -> str | None:
        """Record an authentic decision on the hold: "approve", "abort", "extend", or None when it cannot be
        taken (an Extend whose `by` is not a duration); the actor is the one the app signed."""
        actor = actor_from(payload, "unknown")
        note = clean_optional(payload.get("reason"), MAX_REASON)
        if name == EXTEND_EVENT:
            try:
                by = self.extension(payload)
            except DurationError:
                detail = f"extend by {actor.name}: 'by' is not a duration"
                self.status.step("hold", "ignored", self.now, detail, actor.to_json())
                self.publish_status()
                return None
            detail = f"by {actor.name} for {format_duration(by)}" + (f": {note}" if note else "")
            self.status.step("hold", "extended", self.now, detail, actor.to_json())
            self.status.hold = None
            return "extend"
        decision = "approve" if name == APPROVE_EVENT else "abort"
        outcome = "approved" if decision == "approve" else "aborted"
        detail = f"by {actor.name}" + (f": {note}" if note else "")
        self.status.step("hold", outcome, self.now, detail, actor.to_json())
        self.status.hold = None
        return decision

    # -- endings --------------------------------------------------------------------------------
    def revoke_and_finish(self) -> Orchestration:
        assert self.provisioned is not None
        yield from self.superseded_by()  # an emergency revokes every key of the family itself
        self.enter("revoking")
        previous_key = self.provisioned.get("previousKeyName")
        previous_version = self.provisioned.get("previousVersion")
        names: list[str] | None
        versions: list[str] | None
        if self.emergency:
            names, versions = None, None  # every other key of the family, every other version of ours
        elif self.target.is_master_key:
            names, versions = [], None
        else:
            names = [previous_key] if previous_key and previous_key != self.status.key_name else []
            versions = [previous_version] if previous_version else []
        vault = self.target.key_vault
        # The revoke activity publishes OldKeyRevoked once it is true, with the lists of what it revoked:
        # the sweep (every other key of the family: orphans of failed or abandoned rotations) and an
        # emergency find keys the plan cannot know. With a probe it is true once the target refuses the old
        # values too (activities/revocation.py): then firstRefusedAt is this round's start.
        verify = self.target.probe is not None
        deleting_at = self.now
        planned = events.old_key_revoked(
            self.info,
            key_name=self.status.key_name or "",
            revoked_key_names=names or [],
            revoked_secret_ids=[vault.secret_id(v) for v in versions or []],
            revoked_at=deleting_at,
            first_refused_at=deleting_at if verify else None,
        )
        try:
            revoked = yield self.activity(
                "revoke_old_keys",
                KEY_STEP,
                {
                    "rotationId": self.req.rotation_id,
                    **self.ref,
                    "keepKeyName": self.status.key_name,
                    "keepVersion": self.provisioned["version"],
                    "revokeKeyNames": names,
                    "revokeVersions": versions,
                    "sweep": not self.emergency,  # after the overlap every consumer was told to move
                    "verify": verify,
                    "events": [*self.take_pending(), planned],
                },
            )
        except Exception as exc:
            # Consumers were told about the new key and may already use it: never roll back now.
            return (yield from self.fail("revoke", step_error(exc), compensate=False))
        deleted = list(revoked.get("deletedKeys") or [])
        disabled = list(revoked.get("disabledVersions") or [])
        revoked_at = self.now
        final: list[dict[str, Any]] = list(revoked.get("unpublished") or [])
        if revoked.get("refused") is False:
            detail = f"deleted {', '.join(deleted) or 'no key'}; still accepted: {', '.join(revoked['stillAccepted'])}"
            self.status.step("revoke", "done", revoked_at, detail)
            confirmed = yield from self.confirm_revocation(deleting_at, deleted, revoked)
            disabled += confirmed["disabled"]
            final.extend(confirmed["events"])
        else:
            detail = f"deleted {', '.join(deleted) or 'no key'}; disabled {len(disabled)} Key Vault version(s)"
            self.status.step("revoke", "done", revoked_at, detail)
            if revoked.get("refused"):
                self.refused_at(deleting_at, deleting_at, 0)
            else:
                self.status.revocation = {"status": "not-verified", "firstRefusedAt": None, "stillAccepted": []}
                self.publish_status()
        watch = self.target.monitoring.watch
        if watch > timedelta(0):
            final.extend((yield from self.watch(revoked_at, watch, deleted)))
        final.append(self.completed_event(deleted))
        try:
            yield from self.publish_last(*final)
        except Exception as exc:
            self.status.step("announce", "failed", self.now, f"completion events: {step_error(exc)}")
        self.status.step("done", "done", self.now, "rotation completed")
        self.enter("completed")
        return self.output("completed", revokedKeyNames=deleted, disabledVersions=disabled)

    def refused_at(self, deleted_at: datetime, at: datetime, rounds: int) -> None:
        """The audit trail of a verified revocation: when the old values were first refused."""
        after = format_duration(at - deleted_at) if at > deleted_at else "at once"
        self.status.revocation = {"status": "refused", "firstRefusedAt": format_timestamp(at), "stillAccepted": []}
        detail = f"old key first refused at {format_timestamp(at)} ({after} after deletion, round {rounds + 1})"
        self.status.step("revocation", "verified", at, detail)
        self.publish_status()

    def confirm_revocation(self, deleted_at: datetime, deleted: list[str], revoked: dict[str, Any]) -> Orchestration:
        """Probe the revoked values again on durable timers until the target refuses them, at most until the
        policy's probe.revokedWithin after the deletion: rounds at 1/8, 1/4, 1/2 and all of it (four rounds,
        about 32 history events, only when the first round found a key still accepted). Each round's activity
        reads the values from Key Vault itself, so they never enter the history. Still accepted at the bound:
        RotationDegraded (cause old-key-accepted) and an ERROR log (the activity). Returns
        {"disabled": version ids, "events": events for the completion publish}."""
        assert self.target.probe is not None
        bound = self.target.probe.revoked_within
        pending = list(revoked.get("pendingVersions") or [])
        already = list(revoked.get("disabledVersions") or [])
        still = list(revoked.get("stillAccepted") or [])
        unverifiable = list(revoked.get("unverifiable") or [])
        first_disabled = len(already)
        deadline = deleted_at + bound
        self.status.revocation = {
            "status": "verifying",
            "firstRefusedAt": None,
            "stillAccepted": still,
            "deadline": format_timestamp(deadline),
        }
        self.publish_status()
        vault = self.target.key_vault
        problem = ""
        if unverifiable:
            # Accepted after the delete, and no Key Vault version of ours holds the value to try it again.
            problem = (
                f"the target still accepted {', '.join(unverifiable)} after it was deleted, and no Key Vault version"
                " holds its value to probe it again: check the target's host instances (docs/runbook.md)"
            )
        for round_no, fraction in enumerate((8, 4, 2, 1), start=1):
            if not pending:
                break
            yield from self.sleep_until(deleted_at + bound / fraction)
            last = fraction == 1
            started = self.now
            planned = events.old_key_revoked(
                self.info,
                key_name=self.status.key_name or "",
                revoked_key_names=deleted,
                revoked_secret_ids=[vault.secret_id(v) for v in [*already, *pending]],
                revoked_at=deleted_at,
                first_refused_at=started,
            )
            try:
                result = yield self.activity(
                    "verify_revocation",
                    KEY_STEP,
                    {
                        "rotationId": self.req.rotation_id,
                        **self.ref,
                        "versions": pending,
                        "disabledVersions": already,
                        "final": last,
                        # OldKeyRevoked goes out with the refusal only when every revoked value was refused.
                        "events": [*self.take_pending(), *([] if unverifiable else [planned])],
                    },
                )
            except Exception as exc:
                problem = f"probing failed: {step_error(exc)}"
                self.status.step("revocation", "failed", self.now, problem)
                self.publish_status()
                continue
            if result.get("refused") and not unverifiable:
                self.refused_at(deleted_at, started, round_no)
                return {
                    "disabled": list(result.get("disabledVersions") or []),
                    "events": result.get("unpublished") or [],
                }
            if result.get("refused"):
                already += list(result.get("disabledVersions") or [])
                still, pending = unverifiable, []
                break
            problem = problem if unverifiable else ""
            still = list(result.get("stillAccepted") or still)
            self.status.revocation = {**self.status.revocation, "stillAccepted": [*still, *unverifiable]}
            self.publish_status()
            if last:
                already += list(result.get("disabledVersions") or [])
        accepted = list(dict.fromkeys([*still, *unverifiable]))
        return {
            "disabled": already[first_disabled:],
            "events": self.revocation_degraded(deleted_at, deleted, accepted, problem, already),
        }

    def revocation_degraded(
        self, deleted_at: datetime, deleted: list[str], still: list[str], problem: str, disabled: list[str]
    ) -> list[dict[str, Any]]:
        """The old key was still accepted (or could not be probed) when the bound passed: loud."""
        assert self.target.probe is not None
        bound = format_duration(self.target.probe.revoked_within)
        why = problem or (
            f"the target still accepted {', '.join(still) or 'a revoked key'} {bound} after it was deleted"
            " (probe.revokedWithin): a host instance still grants it from its key cache"
        )
        self.status.revocation = {**(self.status.revocation or {}), "status": "still-accepted", "detail": why}
        self.status.step("revocation", "degraded", self.now, why)
        self.publish_status()
        vault = self.target.key_vault
        return [
            events.old_key_revoked(  # the keys are deleted; that they are dead is what could not be shown
                self.info,
                key_name=self.status.key_name or "",
                revoked_key_names=deleted,
                revoked_secret_ids=[vault.secret_id(v) for v in disabled],
                revoked_at=deleted_at,
                first_refused_at=None,
            ),
            events.rotation_degraded(
                self.info,
                key_name=self.status.key_name or "",
                revoked_key_names=deleted,
                failures=None,
                baseline=None,
                window_start=deleted_at,
                window_end=self.now,
                detected_at=self.now,
                cause="old-key-accepted",
                accepted_key_names=still,
                detail=why,
            ),
        ]

    def completed_event(self, deleted: list[str]) -> dict[str, Any]:
        assert self.provisioned is not None
        return events.rotation_completed(
            self.info,
            key_name=self.status.key_name or "",
            secret_id=self.provisioned["secretId"],
            revoked_key_names=deleted,
            completed_at=self.now,
        )

    def watch(self, revoked_at: datetime, watch: timedelta, deleted: list[str]) -> Orchestration:
        """A short post-revocation window: a failure spike is reported (RotationDegraded), never undone.
        Returns the events to publish with the completion."""
        self.enter("watching")
        yield from self.sleep_until(revoked_at + watch)
        window_end = self.now
        try:
            counted = yield self.activity(
                "count_auth_failures",
                QUERY_STEP,
                {
                    **self.ref,
                    "window": {"start": format_timestamp(revoked_at), "end": format_timestamp(window_end)},
                    "baseline": {
                        "start": format_timestamp(self.started - (window_end - revoked_at)),
                        "end": format_timestamp(self.started),
                    },
                },
            )
        except Exception as exc:
            self.status.step("watch", "failed", self.now, step_error(exc))
            return []
        failures, baseline = counted.get("failures"), counted.get("baseline")
        if failures is None or baseline is None:
            self.status.step("watch", "failed", self.now, f"signal unavailable: {counted.get('error')}")
            return []
        if not self.target.monitoring.threshold.breached(failures, baseline):
            self.status.step("watch", "done", self.now, f"{failures} auth failures after revocation")
            return []
        detail = f"{failures} auth failures after revocation, baseline {baseline}"
        self.status.step("watch", "degraded", self.now, detail)
        return [
            events.rotation_degraded(
                self.info,
                key_name=self.status.key_name or "",
                revoked_key_names=deleted,
                failures=failures,
                baseline=baseline,
                window_start=revoked_at,
                window_end=window_end,
                detected_at=self.now,
            )
        ]

    def supersede(self, payload: dict[str, Any]) -> Orchestration:
        """Another (emergency) rotation owns the target now: end at once, keep every key (the emergency
        revokes them), and close the story for subscribers with RotationFailed."""
        by = payload.get("rotationId") if isinstance(payload.get("rotationId"), str) else "an emergency rotation"
        actor = actor_from(payload, "unknown")
        error = f"superseded by emergency rotation {by} requested by {actor.name}"
        stage = EVENT_STAGE.get(self.status.stage, "overlap")
        self.status.step(stage, "superseded", self.now, error, actor.to_json())
        self.status.hold = None
        failed_event = events.rotation_failed(
            self.info,
            stage=stage,
            error=error,
            compensated=False,
            key_name=self.status.key_name,
            failed_at=self.now,
        )
        try:
            yield self.publish(failed_event)
        except Exception as exc:
            self.status.step("announce", "failed", self.now, f"RotationFailed: {step_error(exc)}")
        self.enter("superseded")
        return self.output("superseded", supersededBy=by)

    def abort(self) -> Orchestration:
        """An aborted hold keeps both keys valid (consumers may already use the new one) and is loud:
        RotationFailed tells operators the old key still works and needs a decision."""
        return (
            yield from self.fail(
                "gate", "aborted while held: both keys remain valid", compensate=False, outcome="aborted"
            )
        )

    def fail(
        self,
        stage: events.Stage,
        error: str,
        *,
        compensate: bool,
        outcome: str = "failed",
        unpublished: list[dict[str, Any]] | None = None,
    ) -> Orchestration:
        """End the rotation loudly. `unpublished`: events a failed step did not get to publish
        (RotationStarted), sent first so subscribers see the whole story."""
        if not self.ctx.is_replaying:  # once, when the step gives up; `error` names operation and fault
            level = logging.ERROR if outcome == "failed" else logging.WARNING
            rotation, target = self.req.rotation_id, self.target.id
            log.log(level, "rotation %s of %s %s at step %s: %s", rotation, target, outcome, stage, error)
        compensated = False
        if compensate:
            self.enter("compensating")
            try:
                undone = yield self.activity(
                    "compensate_rotation",
                    KEY_STEP,
                    {
                        "rotationId": self.req.rotation_id,
                        **self.ref,
                        "keyName": self.status.key_name,
                        "version": self.status.version,
                        "previousVersion": self.status.previous_version,
                    },
                )
                compensated = any(undone.get(k) for k in ("deletedKey", "disabledVersion", "restoredVersion"))
                detail = "new key deleted, previous version current again" if compensated else "nothing to undo"
                self.status.step("compensate", "done", self.now, detail)
            except Exception as exc:
                self.status.step("compensate", "failed", self.now, step_error(exc))
        failed_event = events.rotation_failed(
            self.info,
            stage=stage,
            error=error,
            compensated=compensated,
            key_name=self.status.key_name,
            failed_at=self.now,
        )
        try:
            yield from self.publish_last(*(unpublished or []), failed_event)
        except Exception as exc:
            self.status.step("announce", "failed", self.now, f"RotationFailed: {step_error(exc)}")
        self.status.step(stage, outcome, self.now, error)
        self.enter(outcome)
        return self.output(outcome, error=error, compensated=compensated)


def refused(context: df.DurableOrchestrationContext, data: Any, why: str) -> dict[str, Any]:
    """End a rotation the app did not ask for, or one the policy forbids, before it touches anything."""
    request = data if isinstance(data, dict) else {}
    given = request.get("rotationId")
    rotation_id = given if isinstance(given, str) and naming.is_rotation_id(given) else None
    if not context.is_replaying:
        log.error("refused rotation %s on instance %s: %s", rotation_id, context.instance_id, why)
    context.set_custom_status({"rotationId": rotation_id, "stage": "refused", "error": why})
    return {"rotationId": rotation_id, "outcome": "refused", "stage": "refused", "error": why}


@bp.orchestration_trigger(context_name="context")
def rotation_orchestrator(context: df.DurableOrchestrationContext) -> Orchestration:
    """Step 0 resolves the target the (signed) input names from the deployed policy; see rotation/inputs.py."""
    data = json_object(context.get_input())
    try:
        check_shape(data, context.instance_id)
        check_start_time(data, context.current_utc_datetime)
    except InputError as exc:
        return refused(context, data, str(exc))
    resolved = yield context.call_activity_with_retry("resolve_target", KEY_STEP, {"input": data})
    if resolved.get("refused"):
        return refused(context, data, str(resolved["refused"]))
    request = RotationRequest.from_json(data, resolved)
    return (yield from RotationRun(context, request).run())
