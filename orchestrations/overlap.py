"""Stage overlap: both keys valid until the overlap ends, or earlier once every registered consumer has
switched — acknowledged over HTTP (an external event, no polling) or been seen reading the new version
in the Key Vault audit (polled at two points of a short overlap, or at the middle 6-day boundary of a
long one, never more: the history budget in orchestrations/rotation.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrations.retry import QUERY_STEP, step_error
from orchestrations.run import Orchestration, RunBase, event_payload
from rotation.durations import format_timestamp
from rotation.messages import Adoption, AdoptionRequest
from rotation.stages import Mail

MAX_TIMER = timedelta(days=6)  # Python durable timers are capped at 6 days: longer waits loop
MIN_CHECK_SPACING = timedelta(minutes=15)


@dataclass(frozen=True)
class Announced:
    """What the announce stage told consumers: when the new key became available, until when both are."""

    at: datetime
    overlap_ends: datetime
    secret_id: str


def wake_points(start: datetime, end: datetime) -> tuple[list[datetime], list[datetime]]:
    """When the overlap must wake (6-day boundaries) and when it polls adoption: two points inside
    a short overlap, the middle boundary of a long one (see the history budget)."""
    segments = max(math.ceil((end - start) / MAX_TIMER), 1)
    boundaries = [start + (end - start) * i / segments for i in range(1, segments)]
    if boundaries:
        return boundaries, [boundaries[(len(boundaries) - 1) // 2]]
    checks = [start + (end - start) * i / 3 for i in (1, 2)]
    return [], [t for t in checks if t - start >= MIN_CHECK_SPACING]


class OverlapWaits(RunBase):
    def wait_overlap(self, announced: Announced) -> Orchestration:
        """Until the overlap ends, or earlier once every registered consumer acknowledged or was seen
        reading the new version in the Key Vault audit. Without consumers the overlap runs its full length.
        Returns (why it ended, the same as the timeline's detail)."""
        start, end = announced.at, announced.overlap_ends
        consumers = {c.object_id: c.name for c in self.target.consumers}
        adopted: set[str] = set()
        boundaries, checks = wake_points(start, end)
        if not consumers:
            checks = []
        points = sorted({*boundaries, *checks})
        while self.now < end:
            yield from self.superseded_by()
            fired = self.inbox[Mail.CONSUMER_ACK].arrived()
            for ack in fired:
                yield from self.record_ack(ack, consumers, adopted)
            if consumers and adopted >= consumers.keys():
                return "every consumer switched", "every consumer switched"
            if fired:
                continue  # acks that arrived while these were judged fired waiters of no race: look again
            wake = min([end, *[t for t in points if t > self.now]])
            timer = self.timer(wake)
            # One waiter per consumer and a spare: acks that arrive together all find one.
            listening = self.inbox[Mail.CONSUMER_ACK].listen_all(len(consumers) + 1) if consumers else []
            winner = yield self.ctx.task_any([timer, self.inbox[Mail.SUPERSEDE].listen(), *listening])
            if winner is not timer:
                timer.cancel()
                continue
            if wake in checks and consumers.keys() - adopted:
                readers = yield from self.check_adoption(announced)
                for oid in sorted(readers & (consumers.keys() - adopted)):
                    adopted.add(oid)
                    self.status.step("adoption", "done", self.now, f"{consumers[oid]} read the new version")
                self.publish_status()
            if consumers and adopted >= consumers.keys():
                return "every consumer switched", "every consumer switched"
        return "overlap elapsed", "overlap elapsed"

    def record_ack(self, ack: Any, consumers: dict[str, str], adopted: set[str]) -> Orchestration:
        """Count an acknowledgement the app signed for this rotation; False when it adds nobody (unknown,
        repeated, or not the app's)."""
        oid = str(event_payload(ack.result).get("objectId", "")).lower()
        if oid not in consumers or oid in adopted:
            return False
        if (yield from self.authentic(Mail.CONSUMER_ACK, ack)) is None:
            return False
        adopted.add(oid)
        who = {"kind": "principal", "name": consumers[oid], "objectId": oid}
        self.note("ack", "done", f"{consumers[oid]} acknowledged", who)
        return True

    def check_adoption(self, announced: Announced) -> Orchestration:
        """Consumers seen reading the new version (Key Vault audit); a failed query finds nobody."""
        since, until = format_timestamp(announced.at), format_timestamp(self.now)
        request = AdoptionRequest(self.ref, announced.secret_id, since, until)
        try:
            result = Adoption.from_json((yield self.activity("check_adoption", QUERY_STEP, request)))
        except Exception as exc:
            self.status.step("adoption", "failed", self.now, step_error(exc))
            return set()
        return {str(r).lower() for r in result.readers}
