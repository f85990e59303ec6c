"""Which target a step acts on: always the deployed policy's, never one an input describes.

Activity requests name the target (`targetId`) and carry the fingerprint of where its keys went when the
rotation started (`Target.fingerprint`); `target_for` looks the id up in the deployed policy and refuses
to act once that has changed (threat model 3.6). `resolve_target` is a rotation's first step: it checks
that the app signed the orchestration input (rotation/signing.py) and hands the orchestrator the target
it will run on, or a refusal. `verify_event` judges an external event's signature. Both answer with a
verdict, not an exception: recorded once in the history, never retried, never judged again on replay.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from rotation import naming, signing
from rotation.contracts import ActivityRequest, json_object
from rotation.policy import Target, current_policy
from rotation.redaction import SafeError

log = logging.getLogger("keyrotation.activities.targets")

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,46}[a-z0-9]$")


class TargetRefused(SafeError):
    """The step's target is not the deployed policy's (unknown id, or it moved since the rotation began)."""


def _named(value: Any) -> str:
    return value if isinstance(value, str) and _ID.match(value) else "(not a target id)"


def lookup(target_id: Any, fingerprint: Any) -> Target:
    """The deployed policy's target `target_id`, if it still sends keys where `fingerprint` says."""
    target = current_policy().target(target_id) if isinstance(target_id, str) else None
    if target is None:
        raise TargetRefused(f"targetId: {_named(target_id)} is not a target of the deployed rotation policy")
    if fingerprint != target.fingerprint:
        raise TargetRefused(
            f"target {target.id}: the deployed policy changed where its keys go since this rotation began "
            "(app, key scope, key name, vault, secret or probe); this step refuses to act on either definition"
        )
    return target


def target_for(request: ActivityRequest) -> Target:
    """The target of an activity request (`targetId`, `fingerprint`); its `rotationId`, when it has one,
    must be a rotation of that target."""
    target = lookup(request.get("targetId"), request.get("fingerprint"))
    rotation_id = request.get("rotationId")
    if rotation_id is not None and _rotation_target(rotation_id) != target.id:
        raise TargetRefused(f"rotationId: not a rotation of target {target.id}")
    return target


def _rotation_target(rotation_id: Any) -> str | None:
    try:
        return naming.parse_rotation_id(rotation_id).target_id if isinstance(rotation_id, str) else None
    except ValueError:
        return None


def resolve_target(request: ActivityRequest) -> dict[str, Any]:
    """`{"input": <orchestration input>}` -> `{"target": <policy JSON>, "fingerprint"}`, or `{"refused": why}`
    when the app did not sign the input, the target is not (or no longer) in the policy, or the mode is one
    the policy forbids for it (the master key is renewed only in an emergency)."""
    data = json_object(request.get("input"))
    try:
        keys = signing.signing_keys()
    except signing.SigningKeyError as exc:
        return _refused(data, str(exc))
    if not signing.verify_input_any(keys, data):
        return _refused(data, "the orchestration input is not signed by this app")
    try:
        target = lookup(data.get("targetId"), data.get("fingerprint"))
    except TargetRefused as exc:
        return _refused(data, str(exc))
    if target.is_master_key and data.get("mode") != "emergency":
        return _refused(data, f"target {target.id}: the master key is renewed only by an emergency rotation")
    return {"target": target.to_json(), "fingerprint": target.fingerprint}


def _refused(data: dict[str, Any], why: str) -> dict[str, Any]:
    log.error("refused rotation %s of %s: %s", data.get("rotationId"), _named(data.get("targetId")), why)
    return {"refused": why}


def verify_event(request: ActivityRequest) -> dict[str, Any]:
    """`{"rotationId", "event", "payload", "expect"}` -> `{"valid": bool, "why"?}`: whether the app signed
    this external event for this rotation and event name, and every field of `expect` has the value given
    (a decision names the hold it decides). A verdict, never an exception: it is recorded once."""
    rotation_id, event = request.get("rotationId"), request.get("event")
    if not isinstance(rotation_id, str) or not isinstance(event, str):
        return {"valid": False, "why": "rotationId and event are required"}
    expect = request.get("expect")
    why = signing.event_problem(rotation_id, event, json_object(request.get("payload")), expect or {})
    if why is not None:
        log.warning("rotation %s ignored %s: %s", rotation_id, event, why)
        return {"valid": False, "why": why}
    return {"valid": True}
