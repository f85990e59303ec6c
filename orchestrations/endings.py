"""How a rotation ends: completed, failed (compensated first when consumers were never told), aborted,
superseded by an emergency (and handed over to it), or refused before it touched anything.

Every ending publishes last, through `publish_last` (it races `Supersede` and retries by hand), and sends
first what subscribers have not heard yet (`untold`: a replaced rotation's RotationFailed and this one's
RotationStarted when announce never went out), so the story of every rotation is whole.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import azure.durable_functions as df

from orchestrations.retry import KEY_STEP, step_error
from orchestrations.revocation import Revocation
from orchestrations.run import Event, Orchestration, RunBase, StageFailed, actor_from
from rotation import events, naming
from rotation.messages import Compensated, CompensateRequest, Provisioned
from rotation.stages import STAGE_OF_PHASE, Phase, Stage

log = logging.getLogger("keyrotation.orchestrations.rotation")


class Endings(RunBase):
    untold: tuple[Event, ...] = ()  # events subscribers have not heard yet, sent ahead of the ending's

    def output(self, outcome: str, **extra: Any) -> dict[str, Any]:
        return {
            "rotationId": self.rotation_id,
            "targetId": self.target.id,
            "mode": self.req.input.mode,
            "outcome": outcome,
            "stage": self.status.stage,
            "keyName": self.status.key_name,
            "version": self.status.version,
            **extra,
        }

    def publish_ending(self, what: str, *cloud_events: Event) -> Orchestration:
        """The ending's publish, last; an outage is noted in the timeline, never hides the ending."""
        try:
            yield from self.publish_last(*self.untold, *cloud_events)
        except Exception as exc:
            self.status.step("announce", "failed", self.now, f"{what}: {step_error(exc)}")

    def complete(self, provisioned: Provisioned, revocation: Revocation, watched: tuple[Event, ...]) -> Orchestration:
        completed = events.rotation_completed(
            self.info,
            key_name=provisioned.key_name,
            secret_id=provisioned.secret_id or "",
            revoked_key_names=list(revocation.deleted),
            completed_at=self.now,
        )
        yield from self.publish_ending("completion events", *revocation.events, *watched, completed)
        self.status.step("done", "done", self.now, "rotation completed")
        self.enter(Phase.COMPLETED)
        return self.output(
            "completed", revokedKeyNames=list(revocation.deleted), disabledVersions=list(revocation.disabled)
        )

    def fail(self, failure: StageFailed) -> Orchestration:
        """End the rotation loudly at the stage that gave up, compensating first when it says so."""
        if not self.ctx.is_replaying:  # once, when the step gives up; the reason names operation and fault
            level = logging.ERROR if failure.outcome == Phase.FAILED else logging.WARNING
            log.log(
                level,
                "rotation %s of %s %s at step %s: %s",
                self.rotation_id,
                self.target.id,
                failure.outcome,
                failure.stage,
                failure.reason,
            )
        compensated = (yield from self.compensate()) if failure.compensate else False
        failed_event = events.rotation_failed(
            self.info,
            stage=cast(events.Stage, str(failure.stage)),
            error=failure.reason,
            compensated=compensated,
            key_name=self.status.key_name,
            failed_at=self.now,
        )
        yield from self.publish_ending("RotationFailed", failed_event)
        self.status.step(failure.stage, failure.outcome, self.now, failure.reason)
        self.enter(failure.outcome)
        return self.output(str(failure.outcome), error=failure.reason, compensated=compensated)

    def compensate(self) -> Orchestration:
        """Undo the new key (nobody was told about it): the previous version current again, the new one
        disabled, the new key deleted (activities/revoke.py). Whether anything was undone."""
        self.enter(Phase.COMPENSATING)
        request = CompensateRequest(
            self.rotation_id,
            self.ref,
            key_name=self.status.key_name,
            version=self.status.version,
            previous_version=self.status.previous_version,
        )
        try:
            undone = Compensated.from_json((yield self.activity("compensate_rotation", KEY_STEP, request)))
        except Exception as exc:
            self.status.step("compensate", "failed", self.now, step_error(exc))
            return False
        detail = "new key deleted, previous version current again" if undone.changed else "nothing to undo"
        self.status.step("compensate", "done", self.now, detail)
        return undone.changed

    def supersede(self, payload: dict[str, Any]) -> Orchestration:
        """Another (emergency) rotation owns the target now: end at once, keep every key (the emergency
        revokes them), and close the story for subscribers with RotationFailed."""
        by = payload.get("rotationId") if isinstance(payload.get("rotationId"), str) else "an emergency rotation"
        actor = actor_from(payload, "unknown")
        error = f"superseded by emergency rotation {by} requested by {actor.name}"
        stage = STAGE_OF_PHASE.get(cast(Phase, self.status.stage), Stage.OVERLAP)
        self.status.step(stage, "superseded", self.now, error, actor.to_json())
        self.status.hold = None
        failed_event = events.rotation_failed(
            self.info,
            stage=cast(events.Stage, str(stage)),
            error=error,
            compensated=False,
            key_name=self.status.key_name,
            failed_at=self.now,
        )
        try:
            yield self.publish(*self.untold, failed_event)
        except Exception as exc:
            self.status.step("announce", "failed", self.now, f"RotationFailed: {step_error(exc)}")
        self.enter(Phase.SUPERSEDED)
        return self.output("superseded", supersededBy=by)

    def hand_over(self, payload: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        """Continue as the emergency rotation an authentic Supersede names: the same instance id, so the
        target never has two rotations (I3), and a scheduler waiting on this one waits on to the end. The
        successor is the API's signed input, which names the target only; its first step checks it."""
        successor = self.successor_of(payload)
        if successor is not None:
            self.note("handover", "done", f"continues as {successor['rotationId']}")
            self.ctx.continue_as_new(successor)
        return output


def refused(context: df.DurableOrchestrationContext, data: Any, why: str) -> dict[str, Any]:
    """End a rotation the app did not ask for, or one the policy forbids, before it touches anything."""
    request = data if isinstance(data, dict) else {}
    given = request.get("rotationId")
    rotation_id = given if isinstance(given, str) and naming.is_rotation_id(given) else None
    if not context.is_replaying:
        log.error("refused rotation %s on instance %s: %s", rotation_id, context.instance_id, why)
    context.set_custom_status({"rotationId": rotation_id, "stage": Phase.REFUSED, "error": why})
    return {"rotationId": rotation_id, "outcome": "refused", "stage": Phase.REFUSED, "error": why}
