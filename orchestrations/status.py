"""The rotation's custom status: stage, identifiers and a step timeline (invariant I6, the audit trail).

Built only from orchestration inputs, activity results and `context.current_utc_datetime`, so it is
deterministic on replay. It never holds a key value: activities never return one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rotation.durations import format_timestamp


@dataclass
class RotationStatus:
    rotation_id: str
    target_id: str
    mode: str
    trigger: dict[str, Any]
    stage: str = "provisioning"
    key_name: str | None = None
    version: str | None = None
    secret_id: str | None = None
    previous_key_name: str | None = None
    previous_version: str | None = None
    overlap_ends_at: str | None = None
    hold: dict[str, Any] | None = None
    # After revoke: {"status": verifying|refused|still-accepted|not-verified, "firstRefusedAt", "stillAccepted", ...}
    revocation: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    def step(
        self, name: str, status: str, at: datetime, detail: str | None = None, actor: dict[str, Any] | None = None
    ) -> None:
        """Append to the timeline; `actor` is who decided it (an approver, a consumer), for the audit trail."""
        entry: dict[str, Any] = {"step": name, "status": status, "at": format_timestamp(at)}
        if detail:
            entry["detail"] = detail
        if actor:
            entry["actor"] = actor
        self.steps.append(entry)

    def to_json(self) -> dict[str, Any]:
        return {
            "rotationId": self.rotation_id,
            "targetId": self.target_id,
            "mode": self.mode,
            "stage": self.stage,
            "keyName": self.key_name,
            "version": self.version,
            "secretId": self.secret_id,
            "previousKeyName": self.previous_key_name,
            "previousVersion": self.previous_version,
            "overlapEndsAt": self.overlap_ends_at,
            "trigger": self.trigger,
            "hold": self.hold,
            "revocation": self.revocation,
            "steps": self.steps,
        }
