"""Stage gate: auth failures during the overlap against an equally long baseline before the rotation.
Above threshold, or unreadable (a failed query is not "zero failures"), a scheduled rotation is HELD:
RotationHeld goes out and it waits for an authentic approve / abort / extend until the policy's
deadline, then takes the policy's default action. Emergencies and the master key skip the gate.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from orchestrations.overlap import Announced
from orchestrations.run import Orchestration, RunBase, StageFailed, actor_from
from rotation import events
from rotation.durations import DurationError, format_duration, format_timestamp, parse_duration
from rotation.reasons import MAX_REASON, clean_optional
from rotation.stages import Mail, Phase, Stage

MAX_EXTEND = timedelta(days=7)
DECISIONS = (Mail.APPROVE, Mail.ABORT, Mail.EXTEND)


class Gate(RunBase):
    def gate(self, announced: Announced) -> Orchestration:
        """ "approve" once the overlap's failures are under the threshold or an approver (or the deadline's
        default) says so; an abort ends the rotation with both keys valid (StageFailed, outcome aborted)."""
        holds = 0
        while True:
            yield from self.superseded_by()  # one raised during the last overlap step or the previous gate
            self.enter(Phase.GATE)
            window_end = self.now
            length = max(window_end - announced.at, timedelta(minutes=1))
            counted = yield from self.count_failures(announced.at, window_end, length)
            failures, baseline = counted.failures, counted.baseline
            if counted.counted:
                assert failures is not None and baseline is not None
                if not self.target.monitoring.threshold.breached(failures, baseline):
                    self.note("gate", "passed", f"{failures} auth failures, baseline {baseline}")
                    return "approve"
                reason = f"{failures} auth failures during the overlap against a baseline of {baseline}"
            else:
                reason = f"the failure signal could not be read: {counted.error}"
            holds += 1
            decision = yield from self.hold(announced, window_end, failures, baseline, reason, holds)
            if decision == "abort":
                # An aborted hold keeps both keys valid (consumers may already use the new one) and is
                # loud: RotationFailed tells operators the old key still works and needs a decision.
                raise StageFailed(
                    Stage.GATE, "aborted while held: both keys remain valid", compensate=False, outcome=Phase.ABORTED
                )
            if decision != "extend":
                return decision

    def hold(
        self,
        announced: Announced,
        window_end: datetime,
        failures: int | None,
        baseline: int | None,
        reason: str,
        occurrence: int,
    ) -> Orchestration:
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
        self.enter(Phase.HELD)
        held_event = events.rotation_held(
            self.info,
            key_name=self.status.key_name or "",
            secret_id=announced.secret_id,
            failures=failures,
            baseline=baseline,
            threshold=self.target.monitoring.threshold,
            window_start=announced.at,
            window_end=window_end,
            held_at=held_at,
            deadline=deadline,
            default_action=default,
            hold_reason=reason,
            occurrence=occurrence,
        )
        error = yield from self.announce(held_event)
        if error is not None:
            self.status.step("hold", "failed", self.now, f"RotationHeld not published: {error}")
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
                        self.enter(Phase.EXTENDED)
                        yield from self.sleep_until(self.now + self.extension(payload))
                        return decision
                    if decision is not None:
                        return decision
            if judged:
                continue  # decisions that arrived while these were judged: look again before waiting
            timer = self.timer(deadline)
            waiters = [self.inbox[name].listen() for name in (Mail.SUPERSEDE, *DECISIONS)]
            winner = yield self.ctx.task_any([timer, *waiters])
            if winner is timer:
                self.status.step("hold", default, self.now, "deadline passed: the policy's default action")
                self.status.hold = None
                return default
            timer.cancel()

    def extension(self, payload: dict[str, Any]) -> timedelta:
        """How long an (already validated) Extend holds the rotation before it gates again."""
        return min(max(parse_duration(str(payload.get("by", ""))), timedelta(minutes=1)), MAX_EXTEND)

    def decision(self, name: Mail, payload: dict[str, Any]) -> str | None:
        """Record an authentic decision on the hold: "approve", "abort", "extend", or None when it cannot be
        taken (an Extend whose `by` is not a duration); the actor is the one the app signed."""
        actor = actor_from(payload, "unknown")
        note = clean_optional(payload.get("reason"), MAX_REASON)
        if name == Mail.EXTEND:
            try:
                by = self.extension(payload)
            except DurationError:
                self.note("hold", "ignored", f"extend by {actor.name}: 'by' is not a duration", actor.to_json())
                return None
            detail = f"by {actor.name} for {format_duration(by)}" + (f": {note}" if note else "")
            self.status.step("hold", "extended", self.now, detail, actor.to_json())
            self.status.hold = None
            return "extend"
        decision = "approve" if name == Mail.APPROVE else "abort"
        outcome = "approved" if decision == "approve" else "aborted"
        detail = f"by {actor.name}" + (f": {note}" if note else "")
        self.status.step("hold", outcome, self.now, detail, actor.to_json())
        self.status.hold = None
        return decision
