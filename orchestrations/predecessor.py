"""Step 0 of a rotation that replaces a stuck one (rotation/stuck.py): the `replaces` record checked, and
the stuck rotation's RotationFailed built deterministically from it (its own rotation id, so the event id
is the one that rotation would have used: published once, whoever gets there first).

Before the stuck rotation announced its key, the abandon activity undoes it like a compensation; after,
every key stays (consumers may already use the new one) and this rotation's revoke removes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from rotation import events, naming
from rotation.durations import as_utc
from rotation.identity import Actor
from rotation.stages import STAGE_OF_PHASE, Phase, Stage
from rotation.stuck import abandon_reason

UNKNOWN_ACTOR = Actor("system", "unknown")
_KEY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # the events' keyName pattern


class PredecessorError(ValueError):
    """A `replaces` record this rotation cannot act on; the message names the field."""


@dataclass(frozen=True)
class Predecessor:
    """The stuck rotation this one replaces, as the door that started this one saw it."""

    record: dict[str, Any]
    rotation_id: str
    mode: naming.Mode
    stage: str
    announced: bool
    key_name: str | None
    earlier: Predecessor | None = None  # the stuck rotation it was itself replacing, if any

    @staticmethod
    def from_json(data: Any, target_id: str, own_rotation_id: str) -> Predecessor:
        if not isinstance(data, dict):
            raise PredecessorError("replaces: must be an object")
        rotation_id = data.get("rotationId")
        if not isinstance(rotation_id, str) or not naming.is_rotation_id(rotation_id):
            raise PredecessorError("replaces.rotationId: must be a rotation id")
        parts = naming.parse_rotation_id(rotation_id)
        if parts.target_id != target_id:
            raise PredecessorError(f"replaces.rotationId: {rotation_id} is not a rotation of {target_id}")
        if rotation_id == own_rotation_id:
            raise PredecessorError("replaces.rotationId: a rotation cannot replace itself")
        stage = data.get("stage")
        if not isinstance(stage, str) or not stage:
            raise PredecessorError("replaces.stage: must name the stage the rotation stopped at")
        key_name = data.get("keyName")
        earlier = None
        if isinstance(data.get("replaces"), dict):
            try:
                earlier = Predecessor.from_json({**data["replaces"], "replaces": None}, target_id, own_rotation_id)
            except PredecessorError:
                earlier = None  # only its event is at stake; the revoke sweep removes its keys anyway
        return Predecessor(
            record=data,
            rotation_id=rotation_id,
            mode=parts.mode,
            stage=stage,
            announced=bool(data.get("announced")),
            key_name=key_name if isinstance(key_name, str) and _KEY_NAME.match(key_name) else None,
            earlier=earlier,
        )

    @property
    def reason(self) -> str:
        reason = self.record.get("reason")
        return reason if isinstance(reason, str) and reason else abandon_reason(self.record)

    def info(self, target_id: str) -> events.RotationInfo:
        """The stuck rotation's own event fields (who started it and why, when)."""
        raw_trigger = self.record.get("trigger")
        trigger = raw_trigger if isinstance(raw_trigger, dict) else {}
        raw_actor = trigger.get("actor")
        try:
            actor = Actor.from_json(raw_actor) if isinstance(raw_actor, dict) else UNKNOWN_ACTOR
        except (KeyError, TypeError):
            actor = UNKNOWN_ACTOR
        reason = trigger.get("reason")
        return events.RotationInfo(
            rotation_id=self.rotation_id,
            target_id=target_id,
            mode=self.mode,
            actor=actor,
            started_at=self.started_at(),
            reason=reason if isinstance(reason, str) else None,
        )

    def started_at(self) -> datetime:
        raw = self.record.get("startedAt")
        if isinstance(raw, str):
            try:
                return as_utc(datetime.fromisoformat(raw.replace("Z", "+00:00")))
            except ValueError:
                pass
        return naming.parse_rotation_id(self.rotation_id).started_at

    def failed_event(self, target_id: str, at: datetime, *, compensated: bool | None = None) -> dict[str, Any]:
        """RotationFailed for the stuck rotation; `compensated` defaults to the plan (undo it when it was not
        announced) — the abandon activity sets what actually happened before publishing. Whatever text the
        record holds, the builder makes a valid event of it: a poisoned reason never blocks this step."""
        return events.rotation_failed(
            self.info(target_id),
            # compensating follows a provision/verify failure; the stuck rotation's timeline says which
            stage=cast(events.Stage, str(STAGE_OF_PHASE.get(cast(Phase, self.stage), Stage.PROVISION))),
            error=self.reason[:1024],
            compensated=not self.announced if compensated is None else compensated,
            key_name=self.key_name,
            failed_at=at,
        )
