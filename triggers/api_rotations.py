"""The operator API on one rotation: status (Reader), consumer acknowledgement (Consumer), and the
decisions on a HELD rotation (Approver). Thin: parse, authorize, check the stage, raise the event.

A rotation id names its target (`<target>-<timestamp>-<mode>`), so the instance is `rotation-<target>`;
it is this rotation only while its custom status carries the id (the next rotation replaces the record).
The stage check before raising is what makes a wrong-stage request a 409 that changes nothing: an event
raised outside its stage would wait in the instance and decide a later hold.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from rotation import naming
from rotation.durations import DurationError, describe, format_duration, parse_duration
from rotation.identity import ROLE_APPROVER, ROLE_CONSUMER, ROLE_READER, Caller
from rotation.policy import Target
from rotation.signing import sign_event, signing_key
from rotation.stages import Mail, Phase
from triggers.api_http import (
    ApiError,
    Reply,
    api_route,
    bad_request,
    json_body,
    no_query,
    policy,
    reason_field,
    rotation_id_from_path,
    status_url,
)
from triggers.api_views import Snapshot, rotation_view

bp = df.Blueprint()
MIN_EXTEND = timedelta(minutes=1)
MAX_EXTEND = timedelta(days=7)  # the orchestrator clamps to [1 minute, 7 days]; refuse rather than clamp


async def find_rotation(client: df.DurableOrchestrationClient, rotation_id: str) -> tuple[Target, Snapshot]:
    """The rotation's target and instance, or 404 (unknown target, no instance, or a newer rotation)."""
    parts = naming.parse_rotation_id(rotation_id)
    target = policy().target(parts.target_id)
    if target is None:
        raise ApiError(404, "rotation_not_found", "no such rotation: its target is not in the rotation policy", "id")
    status = await client.get_status(naming.rotation_instance_id(target.id), show_input=True)
    snap = Snapshot.of(status)
    if snap is None:
        raise ApiError(404, "rotation_not_found", "no such rotation: this target has no rotation on record", "id")
    if snap.rotation_id != rotation_id:
        raise ApiError(
            404,
            "rotation_not_found",
            f"no such rotation on record: each target keeps only its latest rotation, which is now "
            f"{snap.rotation_id} ({status_url(str(snap.rotation_id))}); an older rotation is replaced by the newer one",
            "id",
        )
    return target, snap


def require_stage(snap: Snapshot, stages: str | tuple[str, ...], action: str) -> None:
    allowed = (stages,) if isinstance(stages, str) else stages
    if not snap.running or snap.stage not in allowed:
        raise ApiError(
            409,
            "wrong_stage",
            f"{action} is only possible while the rotation is {' or '.join(allowed)}; it is {snap.stage}",
        )


async def raise_checked(
    client: df.DurableOrchestrationClient, snap: Snapshot, event: Mail, payload: dict[str, Any]
) -> None:
    """Raise the event, signed for this rotation (rotation/signing.py: the orchestrator ignores what the app
    did not sign); an instance that ended between the check and the raise is a 409, not a 500."""
    signed = sign_event(signing_key(), str(snap.rotation_id), event, payload)
    try:
        await client.raise_event(snap.instance_id, event, signed)
    except Exception:
        raise ApiError(409, "wrong_stage", "the rotation ended before the request reached it") from None


def decision_reply(snap: Snapshot, target: Target, action: str) -> Reply:
    url = status_url(str(snap.rotation_id))
    body = {"rotationId": snap.rotation_id, "targetId": target.id, "action": action, "statusUrl": url}
    return Reply(202, body, {"Location": url}, {"targetId": target.id, "rotationId": snap.rotation_id})


@api_route(bp, "GET", "rotations/{id}", ROLE_READER)
async def api_get_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    rotation_id = rotation_id_from_path(req)
    no_query(req)
    target, snap = await find_rotation(client, rotation_id)
    return Reply(200, rotation_view(snap), audit={"targetId": target.id, "rotationId": rotation_id})


@api_route(bp, "POST", "rotations/{id}/ack", ROLE_CONSUMER)
async def api_ack_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    rotation_id = rotation_id_from_path(req)
    no_query(req)
    json_body(req, {})
    target, snap = await find_rotation(client, rotation_id)
    if target.consumer(caller.object_id) is None:
        raise ApiError(403, "not_a_consumer", "the caller is not a registered consumer of this target")
    # Only while the overlap listens: an event raised before its waiter exists is replayed to every
    # later waiter by the Durable SDK. A consumer that acks too early gets 409 and retries.
    require_stage(snap, Phase.OVERLAP, "an acknowledgement")
    payload = {"objectId": caller.object_id, "name": caller.name}
    await raise_checked(client, snap, Mail.CONSUMER_ACK, payload)
    return decision_reply(snap, target, "ack")


async def decide(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller, action: str, event: Mail
) -> Reply:
    rotation_id = rotation_id_from_path(req)
    no_query(req)
    fields: dict[str, type] = {"reason": str, "by": str} if event == Mail.EXTEND else {"reason": str}
    body = json_body(req, fields, required=("by",) if event == Mail.EXTEND else ())
    reason = reason_field(body)
    payload: dict[str, Any] = {"actor": {"name": caller.name, "objectId": caller.object_id}, "reason": reason}
    if event == Mail.EXTEND:
        try:
            by = parse_duration(body["by"])
        except DurationError:
            raise bad_request("by", "must be an ISO 8601 duration such as PT6H or P1D") from None
        if not MIN_EXTEND <= by <= MAX_EXTEND:
            raise bad_request("by", f"must be between {describe(MIN_EXTEND)} and {describe(MAX_EXTEND)}")
        payload["by"] = format_duration(by)
    target, snap = await find_rotation(client, rotation_id)
    require_stage(snap, Phase.HELD, f"{action} (a decision on a held rotation)")
    payload["heldAt"] = snap.held_at  # binds the decision to this hold: never replayed onto a later one
    await raise_checked(client, snap, event, payload)
    return decision_reply(snap, target, action)


# The decisions on a held rotation: one function each (the host and its logs name them), the same work.
@api_route(bp, "POST", "rotations/{id}/approve", ROLE_APPROVER)
async def api_approve_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    return await decide(req, client, caller, "approve", Mail.APPROVE)


@api_route(bp, "POST", "rotations/{id}/abort", ROLE_APPROVER)
async def api_abort_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    return await decide(req, client, caller, "abort", Mail.ABORT)


@api_route(bp, "POST", "rotations/{id}/extend", ROLE_APPROVER)
async def api_extend_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    return await decide(req, client, caller, "extend", Mail.EXTEND)
