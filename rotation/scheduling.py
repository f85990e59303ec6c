"""The contracts between the scheduler (orchestrations/scheduler*.py) and its start and progress activities
(activities/rotation_starts.py): what a tick asks, what it is told.

Frozen dataclasses, sent as the camelCase JSON their `to_json` writes: the wire keys are the ones older
histories hold, so a tick replayed after a deployment reads the answers it recorded before it. The tick
names a target and a rotation id, never a target's definition nor the rotation's input: `start_rotation`
writes and signs that from the deployed policy (rotation/inputs.py `rotation_input`, the one producer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64

ProgressState = Literal["running", "ended", "replaced", "gone"]
PROGRESS_STATES: tuple[str, ...] = ("running", "ended", "replaced", "gone")


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that say something: the wire leaves out what is unset."""
    return {k: v for k, v in fields.items() if v is not None and v is not False}


def concurrency(value: Any) -> int:
    """At most this many started rotations in progress at once (`ROTATION_MAX_CONCURRENCY`, 1 to 64)."""
    try:
        return min(max(int(value), 1), MAX_CONCURRENCY)
    except (TypeError, ValueError):
        return DEFAULT_CONCURRENCY


@dataclass(frozen=True)
class Tick:
    """The scheduler's input, written by the timer trigger (triggers/schedule.py): the tick's time (it
    names the drift check and, through the instance id, makes a duplicate tick a no-op), the rotations the
    trigger found stuck (`stuck`: targetId, target, replaces) and the targets a rotation owns (`in_flight`;
    None: unknown). A later execution of the same tick (continue-as-new) carries the fan-out in `resume`."""

    tick: str | None = None
    past_due: bool = False
    max_concurrency: int = DEFAULT_CONCURRENCY
    max_starts_per_minute: str | int | float | None = None  # rotation/pacing.py `pace` reads it
    stuck: tuple[dict[str, Any], ...] = ()
    in_flight: tuple[str, ...] | None = None
    resume: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "tick": self.tick,
            "pastDue": self.past_due,
            "maxConcurrency": self.max_concurrency,
            "maxStartsPerMinute": self.max_starts_per_minute,
            "stuck": list(self.stuck),
            "inFlight": list(self.in_flight) if self.in_flight is not None else None,
        }
        return {**data, "resume": self.resume} if self.resume is not None else data

    @staticmethod
    def from_json(data: Any) -> Tick:
        """Whatever started the scheduler (the timer, an operator by hand): what does not fit is dropped."""
        data = data if isinstance(data, Mapping) else {}
        stuck, in_flight, resume = data.get("stuck"), data.get("inFlight"), data.get("resume")
        rate = data.get("maxStartsPerMinute")
        return Tick(
            tick=str(data["tick"]) if data.get("tick") else None,
            past_due=bool(data.get("pastDue")),
            max_concurrency=concurrency(data.get("maxConcurrency", DEFAULT_CONCURRENCY)),
            max_starts_per_minute=rate if isinstance(rate, str | int | float) else None,
            stuck=tuple(s for s in stuck if isinstance(s, dict)) if isinstance(stuck, list) else (),
            in_flight=tuple(str(t) for t in in_flight) if isinstance(in_flight, list) else None,
            resume=dict(resume) if isinstance(resume, Mapping) else None,
        )


@dataclass(frozen=True)
class DueQuery:
    """Which policy targets are due at `now` (ISO 8601); `only`: just these target ids (the tick's second
    read of the targets whose vault it could not read)."""

    now: str
    only: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"now": self.now, **({"only": list(self.only)} if self.only is not None else {})}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> DueQuery:
        only = data.get("only")
        if only is not None and not (isinstance(only, list) and all(isinstance(t, str) for t in only)):
            raise ValueError("only: a list of target ids")
        return DueQuery(str(data.get("now")), tuple(only) if only is not None else None)


@dataclass(frozen=True)
class DueTargets:
    """The answer of `find_due_targets`, in policy order: `due` (targetId, target, reason, currentVersion,
    currentKeyName), `not_due` (targetId, nextDue) and `skipped` (targetId, reason, and `unreadable` when
    its vault could not be read)."""

    due: tuple[dict[str, Any], ...] = ()
    not_due: tuple[dict[str, Any], ...] = ()
    skipped: tuple[dict[str, Any], ...] = ()

    def unreadable(self) -> list[str]:
        return [s["targetId"] for s in self.skipped if s.get("unreadable")]

    def reread(self, again: DueTargets) -> DueTargets:
        """This answer with its unreadable targets replaced by what a second read (`again`) says of them."""
        unreadable = set(self.unreadable())
        kept = tuple(s for s in self.skipped if s["targetId"] not in unreadable)
        return DueTargets((*self.due, *again.due), (*self.not_due, *again.not_due), (*kept, *again.skipped))

    def to_json(self) -> dict[str, Any]:
        return {"due": list(self.due), "notDue": list(self.not_due), "skipped": list(self.skipped)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> DueTargets:
        def entries(key: str) -> tuple[dict[str, Any], ...]:
            return tuple(e for e in data.get(key) or [] if isinstance(e, dict) and isinstance(e.get("targetId"), str))

        return DueTargets(entries("due"), entries("notDue"), entries("skipped"))


@dataclass(frozen=True)
class StartRequest:
    """Start rotation `rotation_id` (its mode is in the id) of `target_id` unless one runs there, or one
    began after `since` (the tick's start)."""

    target_id: str
    rotation_id: str
    reason: str | None
    since: str
    current_key_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "targetId": self.target_id,
            "rotationId": self.rotation_id,
            "reason": self.reason,
            "since": self.since,
            "currentKeyName": self.current_key_name,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> StartRequest:
        return StartRequest(
            target_id=str(data["targetId"]),
            rotation_id=str(data["rotationId"]),
            reason=_text(data, "reason"),
            since=str(data.get("since") or ""),
            current_key_name=_text(data, "currentKeyName"),
        )


@dataclass(frozen=True)
class StartAnswer:
    """What became of a start: started, or why not (at most one of the reasons is set)."""

    target_id: str
    started: bool = False
    not_in_policy: bool = False
    refused: str | None = None  # the rotation id does not fit the target or the mode its instance calls for
    rotated_since: str | None = None  # the rotation id that began after the tick did
    in_flight: dict[str, Any] | None = None  # rotationId, stage, runtime of the rotation running there

    def to_json(self) -> dict[str, Any]:
        fields = {
            "notInPolicy": self.not_in_policy,
            "refused": self.refused,
            "rotatedSince": self.rotated_since,
            "inFlight": self.in_flight,
        }
        return {"started": self.started, "targetId": self.target_id, **_present(fields)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> StartAnswer:
        in_flight = data.get("inFlight")
        return StartAnswer(
            target_id=str(data.get("targetId") or ""),
            started=bool(data.get("started")),
            not_in_policy=bool(data.get("notInPolicy")),
            refused=_text(data, "refused"),
            rotated_since=_text(data, "rotatedSince"),
            in_flight=dict(in_flight) if isinstance(in_flight, Mapping) else None,
        )


@dataclass(frozen=True)
class Progress:
    """One started rotation as its instance shows it: `running` (at `stage`), `ended` (with the instance's
    `runtime` status and the rotation's `outcome`), `replaced` (the instance runs rotation `by`: it
    superseded ours, or won a start race) or `gone` (no instance)."""

    target_id: str
    rotation_id: str
    state: ProgressState
    stage: str | None = None
    by: str | None = None
    runtime: str | None = None
    outcome: str | None = None

    def to_json(self) -> dict[str, Any]:
        fields = {"stage": self.stage, "by": self.by, "runtime": self.runtime, "outcome": self.outcome}
        return {"targetId": self.target_id, "rotationId": self.rotation_id, "state": self.state, **_present(fields)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Progress:
        state = data.get("state")
        if state not in PROGRESS_STATES:
            raise ValueError(f"state: must be one of {', '.join(PROGRESS_STATES)}, got {state!r}")
        return Progress(
            target_id=str(data["targetId"]),
            rotation_id=str(data["rotationId"]),
            state=state,
            stage=_text(data, "stage"),
            by=_text(data, "by"),
            runtime=_text(data, "runtime"),
            outcome=_text(data, "outcome"),
        )


@dataclass(frozen=True)
class ProgressRequest:
    """The rotations a tick started and still follows: target id -> rotation id."""

    started: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"rotations": [{"targetId": t, "rotationId": r} for t, r in sorted(self.started.items())]}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> ProgressRequest:
        items = data.get("rotations") or []
        return ProgressRequest({str(i["targetId"]): str(i["rotationId"]) for i in items})
