"""The input of `rotation_orchestrator`: it names a target, it never defines one.

It carries the target id and the fingerprint of where the target's keys go (`Target.fingerprint`), who
asked and why, and is signed by the app (rotation/signing.py). The rotation's first step
(`activities/targets.py` `resolve_target`) checks the signature, looks the id up in the deployed policy
and refuses a fingerprint that no longer matches; every later step looks it up again. So whoever can start
an orchestration without going through the app's own triggers (the Durable system key, threat model 3.2
and 3.6) cannot choose the app, the key, the vault or the probe host: only the policy does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from rotation import naming, signing
from rotation.identity import Actor
from rotation.policy import Target

INSTANCE_PREFIX = "rotation-"
MAX_FUTURE = timedelta(minutes=5)  # clock skew between the starter and the orchestration
KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class InputError(ValueError):
    """An orchestration input the app did not write or that does not fit its instance."""


@dataclass(frozen=True)
class RotationInput:
    """The orchestration input as data. On the wire the optional fields are left out when unset, so the
    signed object is the one every earlier release wrote (running instances and their signatures)."""

    rotation_id: str
    mode: naming.Mode
    target_id: str
    fingerprint: str
    actor: Actor
    reason: str | None = None
    overlap: str | None = None  # an explicit overlap (emergency, ISO 8601); None = the policy's
    current_key_name: str | None = None
    replaces: Mapping[str, Any] | None = None  # a stuck rotation of this target, abandoned as step 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "rotationId": self.rotation_id,
            "mode": self.mode,
            "targetId": self.target_id,
            "fingerprint": self.fingerprint,
            "actor": self.actor.to_json(),
            "reason": self.reason,
        }
        if self.overlap is not None:
            data["overlap"] = self.overlap
        if self.current_key_name:
            data["currentKeyName"] = self.current_key_name
        if self.replaces is not None:
            data["replaces"] = dict(self.replaces)
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> RotationInput:
        """An input check_shape accepted (and resolve_target found signed): the fields are trusted."""
        replaces = data.get("replaces")
        return RotationInput(
            rotation_id=data["rotationId"],
            mode=cast(naming.Mode, data["mode"]),
            target_id=data["targetId"],
            fingerprint=data["fingerprint"],
            actor=Actor.from_json(data["actor"]),
            reason=data.get("reason"),
            overlap=data.get("overlap") or None,
            current_key_name=data.get("currentKeyName"),
            replaces=replaces if isinstance(replaces, dict) else None,
        )


def rotation_input(
    target: Target,
    rotation_id: str,
    mode: naming.Mode,
    actor: Actor,
    reason: str | None,
    *,
    overlap: str | None = None,
    current_key_name: str | None = None,
    replaces: Mapping[str, Any] | None = None,
    key: bytes | None = None,
) -> dict[str, Any]:
    """The signed input of a rotation of `target` (the key from the app setting unless given)."""
    request = RotationInput(
        rotation_id=rotation_id,
        mode=mode,
        target_id=target.id,
        fingerprint=target.fingerprint,
        actor=actor,
        reason=reason,
        overlap=overlap,
        current_key_name=current_key_name,
        replaces=replaces,
    )
    return signing.sign_input(key if key is not None else signing.signing_key(), request.to_json())


def check_start_time(request: Mapping[str, Any], now: datetime) -> None:
    """A rotation id dated in the future (beyond clock skew) would be taken as "rotated since" by every
    later tick and set its key's expiry years ahead: refused. `now` is the orchestration's own time."""
    started = naming.parse_rotation_id(str(request["rotationId"])).started_at
    if started > now + MAX_FUTURE:
        raise InputError(f"rotationId: {request['rotationId']} is dated after the rotation started")


def check_shape(request: Any, instance_id: str) -> dict[str, Any]:
    """What the orchestrator can check without I/O: the input is an object naming a rotation of the target
    its instance id names, in the mode its rotation id says (a forged input on another instance id would
    otherwise run a second rotation of the same target, I3)."""
    if not isinstance(request, dict):
        raise InputError("the input must be a rotation request object")
    rotation_id, target_id = request.get("rotationId"), request.get("targetId")
    if not isinstance(rotation_id, str) or not naming.is_rotation_id(rotation_id):
        raise InputError("rotationId: must be a rotation id")
    try:
        parts = naming.parse_rotation_id(rotation_id)
    except ValueError:
        raise InputError("rotationId: must be a rotation id") from None
    if target_id != parts.target_id or instance_id != naming.rotation_instance_id(parts.target_id):
        raise InputError(f"rotationId: {rotation_id} is not a rotation of instance {instance_id}")
    if request.get("mode") != parts.mode:
        raise InputError(f"mode: {request.get('mode')!r} is not the mode rotation id {rotation_id} names")
    current = request.get("currentKeyName")
    if current is not None and not (isinstance(current, str) and KEY_NAME.match(current)):
        raise InputError("currentKeyName: must be a Functions key name")
    if not isinstance(request.get("fingerprint"), str) or not isinstance(request.get(signing.SIGNATURE_FIELD), str):
        raise InputError("the input is not signed by the app (fingerprint, signature)")
    return request
