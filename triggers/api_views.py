"""What the API shows about targets and rotations, read from the durable status of `rotation-<targetId>`.

Pure functions of a status snapshot (no I/O), so triggers stay thin and the shapes are unit-testable.
One instance per target means the status holds the target's latest rotation only: an older rotation's
record is replaced when the next one starts. Nothing here holds a key value: custom status, input and
output never carry one (invariant I1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rotation import stuck
from rotation.contracts import RUNNING_STATUSES, json_object
from rotation.durations import format_timestamp
from rotation.policy import Target
from rotation.reasons import clean_optional

RUNNING = RUNNING_STATUSES


def _stamp(value: Any) -> str | None:
    if isinstance(value, datetime):
        return format_timestamp(value)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Snapshot:
    """One rotation instance as the API sees it."""

    instance_id: str
    runtime: str  # Running, Pending, Completed, Failed, Terminated, ...
    custom: dict[str, Any]
    output: Any
    input: dict[str, Any]
    created: str | None
    updated: str | None

    @staticmethod
    def of(status: Any) -> Snapshot | None:
        """From a DurableOrchestrationStatus (None or an empty status: no instance)."""
        if not status or getattr(status, "runtime_status", None) is None:
            return None
        return Snapshot(
            instance_id=str(status.instance_id),
            runtime=status.runtime_status.name,
            custom=json_object(status.custom_status),
            output=status.output if not isinstance(status.output, str) else json_object(status.output) or status.output,
            input=json_object(status.input_),
            created=_stamp(status.created_time),
            updated=_stamp(status.last_updated_time),
        )

    @property
    def running(self) -> bool:
        return self.runtime in RUNNING

    @property
    def stuck(self) -> bool:
        """Stopped (Failed/Terminated) mid-way: nothing said how it ended (rotation/stuck.py)."""
        return stuck.is_stuck(self.runtime, self.custom)

    def replaces(self) -> dict[str, Any] | None:
        """The `replaces` record a new rotation of this target carries to abandon this one; None unless stuck."""
        return stuck.predecessor(self.runtime, self.custom, self.input, self.output)

    @property
    def out(self) -> dict[str, Any]:
        return self.output if isinstance(self.output, dict) else {}

    def field(self, name: str) -> Any:
        """A field from the custom status, else the output, else the input."""
        for source in (self.custom, self.out, self.input):
            if source.get(name) is not None:
                return source[name]
        return None

    @property
    def rotation_id(self) -> str | None:
        value = self.field("rotationId")
        return value if isinstance(value, str) else None

    @property
    def mode(self) -> str | None:
        value = self.field("mode")
        return value if isinstance(value, str) else None

    @property
    def stage(self) -> str:
        if self.runtime == "Terminated":
            return "terminated"
        if self.runtime == "Failed":
            return "failed"
        stage = self.custom.get("stage") or self.out.get("stage")
        return str(stage) if stage else "pending"

    @property
    def outcome(self) -> str | None:
        """How a finished rotation ended: completed, failed, aborted, terminated; None while running."""
        if self.running:
            return None
        if self.runtime == "Completed":
            return str(self.out.get("outcome") or "completed")
        return self.runtime.lower()

    @property
    def held_at(self) -> str | None:
        """When the current hold began (the custom status `hold.heldAt`): what a decision is signed for."""
        hold = self.custom.get("hold")
        value = hold.get("heldAt") if isinstance(hold, dict) else None
        return value if isinstance(value, str) else None

    @property
    def steps(self) -> list[dict[str, Any]]:
        steps = self.custom.get("steps")
        return steps if isinstance(steps, list) else []

    def announced(self) -> bool:
        return any(s.get("step") == "announce" and s.get("status") == "done" for s in self.steps)

    def current_key(self) -> tuple[str | None, str | None]:
        """The key consumers should hold now: the new one once announced (and not compensated),
        else the one this rotation replaces."""
        if self.announced() and not self.out.get("compensated"):
            return self.field("keyName"), self.field("version")
        return self.custom.get("previousKeyName"), self.custom.get("previousVersion")


def rotation_view(snap: Snapshot) -> dict[str, Any]:
    """GET /rotations/{id}: stage, who/why, the step timeline. No values exist to leak."""
    custom = snap.custom
    raw = custom.get("trigger")
    trigger = (
        dict(raw) if isinstance(raw, dict) else {"actor": snap.input.get("actor"), "reason": snap.input.get("reason")}
    )
    trigger["reason"] = clean_optional(trigger.get("reason"))  # an input from before every door validated
    if snap.stage == "refused":  # a start the app did not sign: its actor and reason are whatever it claimed
        trigger = {"actor": None, "reason": None}
    view: dict[str, Any] = {
        "rotationId": snap.rotation_id,
        "targetId": snap.field("targetId") or (snap.input.get("target") or {}).get("id"),
        "mode": snap.mode,
        "runtimeStatus": snap.runtime,
        "stage": snap.stage,
        "outcome": snap.outcome,
        "trigger": trigger,
        "keyName": snap.field("keyName"),
        "version": snap.field("version"),
        "secretId": custom.get("secretId"),
        "previousKeyName": custom.get("previousKeyName"),
        "previousVersion": custom.get("previousVersion"),
        "overlapEndsAt": custom.get("overlapEndsAt"),
        "hold": custom.get("hold"),
        "revocation": custom.get("revocation"),
        "steps": snap.steps,
        "createdAt": snap.created,
        "lastUpdatedAt": snap.updated,
    }
    if snap.runtime == "Terminated":
        view["terminationReason"] = snap.output if isinstance(snap.output, str) else None
    elif snap.out.get("error"):
        view["error"] = snap.out["error"]
    record = snap.replaces()
    if record is not None:
        view["stuck"] = stuck_view(record)
    if isinstance(snap.input.get("replaces"), dict):
        view["replaces"] = stuck.summary(snap.input["replaces"])
    return view


def stuck_view(record: dict[str, Any]) -> dict[str, Any]:
    """What an operator sees about a stuck rotation, and what will happen to it."""
    return {
        **stuck.summary(record),
        "stageAtStop": record.get("stage"),
        "next": "the next scheduler tick, or POST /api/targets/{target}/rotations (or emergency-rotation), "
        "abandons it: RotationFailed, its unannounced key undone, then a new rotation",
    }


def target_view(target: Target, snap: Snapshot | None) -> dict[str, Any]:
    """GET /targets/{target}: the policy plus what the latest rotation says about the key."""
    current_name, current_version = snap.current_key() if snap else (None, None)
    last = None
    next_due = None
    in_flight = None
    record = snap.replaces() if snap is not None else None
    if snap is not None and record is not None:
        # Not running, yet not over either: shown where a running rotation would be, so it is not missed.
        in_flight = {
            "rotationId": snap.rotation_id,
            "mode": snap.mode,
            "stage": snap.custom.get("stage"),
            "runtimeStatus": snap.runtime,
            "startedAt": snap.created,
            "stuck": stuck_view(record),
            "statusUrl": f"/api/rotations/{snap.rotation_id}",
        }
    elif snap is not None and snap.running:
        in_flight = {
            "rotationId": snap.rotation_id,
            "mode": snap.mode,
            "stage": snap.stage,
            "startedAt": snap.created,
            "overlapEndsAt": snap.custom.get("overlapEndsAt"),
            "hold": snap.custom.get("hold"),
            "statusUrl": f"/api/rotations/{snap.rotation_id}" if snap.rotation_id else None,
        }
    elif snap is not None:
        last = {"rotationId": snap.rotation_id, "mode": snap.mode, "outcome": snap.outcome, "at": snap.updated}
        if snap.outcome == "completed" and snap.updated:
            finished = datetime.fromisoformat(snap.updated.replace("Z", "+00:00"))
            next_due = format_timestamp(target.next_due(finished))
    vault = target.key_vault
    return {
        "id": target.id,
        "description": target.description,
        "enabled": target.enabled,
        "policy": target.to_json(),
        "currentKeyName": current_name,
        "currentVersion": current_version,
        "currentSecretId": vault.secret_id(current_version) if current_version else None,
        "lastRotation": last,
        "nextDue": next_due,
        "inFlight": in_flight,
    }
