"""The operator API on targets: list and detail (Reader), on-demand (Operator) and emergency (Emergency)
rotation. Thin: parse, authorize, then query, start or raise events on durable instances.

Emergency semantics (DESIGN "Emergency rotation"): exactly one rotation owns a target. A running
emergency is returned as is (no second new key); any other running rotation gets a `Supersede` event
carrying the emergency's input, closes itself (RotationFailed) and continues as the emergency on the
same instance id, so nothing is terminated and a scheduler waiting on it is never left hanging. With
nothing running, the emergency starts on that instance id with the caller as actor.

A stuck rotation (Failed or Terminated mid-way, rotation/stuck.py) never blocks a new one: the new
rotation carries it as `replaces` and abandons it first; the answer says which rotation it replaced.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from rotation import naming
from rotation.durations import DurationError, describe, format_duration, parse_duration
from rotation.identity import ROLE_EMERGENCY, ROLE_OPERATOR, ROLE_READER, Caller
from rotation.inputs import rotation_input
from rotation.policy import Target
from rotation.signing import sign_event, signing_key
from rotation.stages import Mail
from rotation.stuck import summary
from triggers.api_http import (
    ApiError,
    Reply,
    accepted,
    api_route,
    bad_request,
    json_body,
    no_query,
    policy,
    reason_field,
    target_from_path,
)
from triggers.api_views import Snapshot, target_view

bp = df.Blueprint()
ORCHESTRATOR = "rotation_orchestrator"
HANDOVER_WAIT = 3.0  # seconds an emergency waits for a running rotation to hand over
STOP_POLL = 0.02
LOOKUP_CONCURRENCY = 16


async def snapshot(client: df.DurableOrchestrationClient, target_id: str) -> Snapshot | None:
    return Snapshot.of(await client.get_status(naming.rotation_instance_id(target_id), show_input=True))


def conflict_running(snap: Snapshot) -> ApiError:
    return ApiError(
        409,
        "rotation_running",
        f"rotation {snap.rotation_id} of this target is running (stage {snap.stage}); "
        f"one rotation per target at a time — see /api/rotations/{snap.rotation_id}",
    )


async def new_rotation_id(target_id: str, mode: naming.Mode, previous: Snapshot | None) -> str:
    """Seconds resolution: never reuse the id of the rotation just finished (its key name would be
    found and read again instead of a new key being made)."""
    while True:
        rotation_id = naming.rotation_id(target_id, mode, datetime.now(UTC))
        if previous is None or previous.rotation_id != rotation_id:
            return rotation_id
        await asyncio.sleep(0.05)


async def start(client: df.DurableOrchestrationClient, target: Target, request: dict[str, Any]) -> Snapshot | None:
    """Start the rotation; if the start is refused because another request won the race, return the
    rotation that now runs (the caller decides: 409, or the running emergency) — whatever its id: two
    requests in the same second compute the same one, and the loser's start was refused all the same.

    Only the status read decides, never the shape of the refusal: the Durable extension answers a start
    onto a running instance id with 500 (`OrchestrationAlreadyExistsException` unhandled, v2.13.7 and before)
    or 409 (caught in `HttpApiHandler.HandleStartOrchestratorRequestAsync` later), devhost with 500, and
    the Python client raises a bare Exception for every one of them (docs/devhost.md)."""
    instance = naming.rotation_instance_id(target.id)
    try:
        await client.start_new(ORCHESTRATOR, instance, request)
    except Exception:
        now = await snapshot(client, target.id)
        if now is not None and now.running:
            return now
        raise
    return None


def start_input(
    target: Target,
    rotation_id: str,
    mode: naming.Mode,
    caller: Caller,
    reason: str | None,
    previous: Snapshot | None,
    overlap: timedelta | None = None,
) -> dict[str, Any]:
    """The signed input (rotation/inputs.py): the target by id, the caller, and what the instance says."""
    current, _ = previous.current_key() if previous else (None, None)
    return rotation_input(
        target,
        rotation_id,
        mode,
        caller.as_actor(),
        reason,
        overlap=format_duration(overlap) if overlap is not None else None,
        current_key_name=current,
        replaces=previous.replaces() if previous else None,
    )


def replaced(request: dict[str, Any]) -> dict[str, Any]:
    """The answer's `replaces`: the stuck rotation the new one abandons first (nothing when none)."""
    return {"replaces": summary(request["replaces"])} if request.get("replaces") else {}


# -- readers ----------------------------------------------------------------------------------------


@api_route(bp, "GET", "targets", ROLE_READER)
async def api_list_targets(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    no_query(req)
    gate = asyncio.Semaphore(LOOKUP_CONCURRENCY)

    async def one(target: Target) -> dict[str, Any]:
        async with gate:
            return target_view(target, await snapshot(client, target.id))

    return Reply(200, {"targets": list(await asyncio.gather(*(one(t) for t in policy())))})


@api_route(bp, "GET", "targets/{target}", ROLE_READER)
async def api_get_target(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    target = target_from_path(req)
    no_query(req)
    return Reply(200, target_view(target, await snapshot(client, target.id)), audit={"targetId": target.id})


# -- on-demand --------------------------------------------------------------------------------------


@api_route(bp, "POST", "targets/{target}/rotations", ROLE_OPERATOR)
async def api_start_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    target = target_from_path(req)
    no_query(req)
    reason = reason_field(json_body(req, {"reason": str}))
    if target.is_master_key:
        raise ApiError(
            409,
            "master_key_emergency_only",
            "the master key is renewed in place without overlap: only an emergency rotation may rotate it",
        )
    if not target.enabled:
        raise ApiError(409, "target_disabled", "this target is disabled in the policy (enabled: false)")
    previous = await snapshot(client, target.id)
    if previous is not None and previous.running:
        raise conflict_running(previous)
    rotation_id = await new_rotation_id(target.id, "on-demand", previous)
    request = start_input(target, rotation_id, "on-demand", caller, reason, previous)
    winner = await start(client, target, request)
    if winner is not None:
        raise conflict_running(winner)
    reply = accepted(rotation_id, target.id, mode="on-demand", **replaced(request))
    if request.get("replaces"):
        reply.audit = {**(reply.audit or {}), "replacedRotationId": request["replaces"]["rotationId"]}
    return reply


# -- emergency --------------------------------------------------------------------------------------


def emergency_overlap(target: Target, value: Any) -> timedelta | None:
    if value is None:
        return None
    try:
        overlap = parse_duration(value)
    except DurationError:
        raise bad_request("overlap", "must be an ISO 8601 duration such as PT0S, PT15M or PT1H") from None
    if target.is_master_key and overlap > timedelta(0):
        raise bad_request("overlap", "must be PT0S for the master key: it is renewed in place, no overlap is possible")
    if overlap > target.emergency_max_overlap:
        limit = format_duration(target.emergency_max_overlap)
        raise bad_request("overlap", f"must be at most {limit} ({describe(target.emergency_max_overlap)}) here")
    return overlap


async def wait_for_handover(client: df.DurableOrchestrationClient, instance: str, rotation_id: str) -> Snapshot | None:
    """Until the instance runs `rotation_id` (the running rotation continued as the emergency) or stops
    without having taken it (it ended just as the event arrived). A rotation busy in a step takes the
    emergency over when that step ends; the event waits in the instance, so the answer is still 202."""
    deadline = time.monotonic() + HANDOVER_WAIT
    while True:
        snap = Snapshot.of(await client.get_status(instance, show_input=True))
        if snap is None or not snap.running or snap.rotation_id == rotation_id:
            return snap
        if time.monotonic() >= deadline:
            return snap
        await asyncio.sleep(STOP_POLL)


@api_route(bp, "POST", "targets/{target}/emergency-rotation", ROLE_EMERGENCY)
async def api_emergency_rotation(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    return await emergency(req, client, caller)


async def emergency(
    req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller, lost_race: bool = False
) -> Reply:
    target = target_from_path(req)
    no_query(req)
    body = json_body(req, {"reason": str, "overlap": str}, required=("reason",))
    reason = reason_field(body, required=True)
    overlap = emergency_overlap(target, body.get("overlap"))
    instance = naming.rotation_instance_id(target.id)
    previous = await snapshot(client, target.id)
    superseded = None
    rotation_id = await new_rotation_id(target.id, "emergency", previous)
    request = start_input(target, rotation_id, "emergency", caller, reason, previous, overlap)
    if previous is not None and previous.running:
        if previous.mode == "emergency" and previous.rotation_id:
            return accepted(previous.rotation_id, target.id, status=200, mode="emergency")
        superseded = previous.rotation_id
        # The running rotation ends itself and continues as this emergency (same instance id): never
        # two rotations of one target, and a scheduler waiting on it is not left hanging.
        handover = sign_event(
            signing_key(),
            str(previous.rotation_id),
            Mail.SUPERSEDE,
            {"rotationId": rotation_id, "actor": request["actor"], "reason": reason, "next": request},
        )
        try:
            await client.raise_event(instance, Mail.SUPERSEDE, handover)
            snap = await wait_for_handover(client, instance, rotation_id)
        except Exception:  # it ended between the look and the raise: nothing to hand over, start below
            snap = None
        if snap is not None and (snap.running or snap.rotation_id == rotation_id):
            reply = accepted(rotation_id, target.id, mode="emergency", supersededRotationId=superseded)
            if snap is not None and snap.rotation_id != rotation_id:
                reply.body["handover"] = "pending: the running rotation hands over when its current step ends"
            reply.audit = {**(reply.audit or {}), "supersededRotationId": superseded}
            return reply
    winner = await start(client, target, request)
    if winner is not None:
        if winner.mode == "emergency" and winner.rotation_id:
            return accepted(winner.rotation_id, target.id, status=200, mode="emergency")
        if not lost_race:  # another rotation started a moment before this one: supersede it, once
            return await emergency(req, client, caller, lost_race=True)
        raise conflict_running(winner)
    reply = accepted(rotation_id, target.id, mode="emergency", supersededRotationId=superseded, **replaced(request))
    reply.audit = {**(reply.audit or {}), "supersededRotationId": superseded}
    if request.get("replaces"):
        reply.audit["replacedRotationId"] = request["replaces"]["rotationId"]
    return reply
