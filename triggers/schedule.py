"""Entry points that start rotations without a caller: the timer and Key Vault's near-expiry event.

Both look at the target's `rotation-<target>` instance first (`rotation_instances`): a running one is left
alone (I3); a stuck one (Failed or Terminated mid-way, rotation/stuck.py) is handed to the next rotation
as `replaces`, which abandons it as its step 0, so a half-finished rotation never blocks a target.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from rotation import naming
from rotation.durations import format_timestamp
from rotation.identity import NEAR_EXPIRY_ACTOR
from rotation.inputs import rotation_input
from rotation.policy import Policy, current_policy
from rotation.scheduling import DEFAULT_CONCURRENCY, Tick, concurrency
from rotation.stuck import successor_mode
from triggers.api_views import Snapshot
from triggers.near_expiry import EVENT_TYPE, read_near_expiry, shown

bp = df.Blueprint()
log = logging.getLogger("keyrotation.triggers")

NEAR_EXPIRY_TYPE = "Microsoft.KeyVault.SecretNearExpiry"
LOOKUP_CONCURRENCY = 16


async def rotation_instance(client: df.DurableOrchestrationClient, target_id: str) -> Snapshot | None:
    """The target's rotation instance (None: there is none). The instance-exists check is not atomic on
    Azure Storage, so every door looks first (DESIGN I3)."""
    return Snapshot.of(await client.get_status(naming.rotation_instance_id(target_id), show_input=True))


async def rotation_instances(
    client: df.DurableOrchestrationClient, target_ids: Iterable[str]
) -> dict[str, Snapshot | None]:
    """Each target's rotation instance (None: there is none), one status read per target, 16 at a time.
    A target whose read failed is left out: unknown, so callers neither treat it as idle nor as stuck."""
    gate = asyncio.Semaphore(LOOKUP_CONCURRENCY)

    async def one(target_id: str) -> tuple[str, Snapshot | None] | None:
        async with gate:
            try:
                return target_id, await rotation_instance(client, target_id)
            except Exception as exc:  # one unreadable instance must not stop the tick
                log.warning("Rotation instance of %s could not be read: %s", target_id, type(exc).__name__)
                return None

    found = await asyncio.gather(*(one(t) for t in target_ids))
    return dict(pair for pair in found if pair is not None)


def stuck_targets(policy: Policy, instances: dict[str, Snapshot | None]) -> list[dict[str, Any]]:
    """The scheduler's `stuck` input: every enabled target whose rotation stopped mid-way, with the
    `replaces` record its next rotation carries (the scheduler rotates these now, due or not)."""
    stuck: list[dict[str, Any]] = []
    for target in policy:
        snap = instances.get(target.id)
        record = snap.replaces() if snap is not None and target.enabled else None
        if record is None:
            continue
        log.warning("Rotation %s of %s is stuck: %s; this tick abandons it", record["rotationId"], target.id,
                    record["reason"])  # fmt: skip
        stuck.append({"targetId": target.id, "target": target.to_json(), "replaces": record})
    return stuck


async def look_at_rotations(client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """The scheduler's `stuck` (targets to rotate now, abandoning their stuck rotation) and `inFlight`
    (targets a rotation owns or is about to own: running, stuck, or whose instance could not be read —
    the drift check leaves them alone, I3). Best effort: a failed look costs this tick its stuck list and
    counts every target as in flight, never the tick itself."""
    try:
        policy = current_policy()
    except Exception:
        log.exception("The policy could not be read; the scheduler runs without stuck detection")
        return {"stuck": [], "inFlight": None}
    ids = [t.id for t in policy if t.enabled]
    try:
        instances = await rotation_instances(client, ids)
    except Exception:
        log.exception("Rotation instances could not be looked up; the scheduler runs without stuck detection")
        return {"stuck": [], "inFlight": ids}
    stuck = stuck_targets(policy, instances)
    unknown = {t for t in ids if t not in instances}
    running = {t for t, snap in instances.items() if snap is not None and snap.running}
    return {"stuck": stuck, "inFlight": sorted(unknown | running | {s["targetId"] for s in stuck})}


@bp.timer_trigger(schedule="%ROTATION_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def rotation_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """One scheduler instance per tick minute: a duplicate tick finds it and does nothing."""
    tick = datetime.now(UTC).replace(second=0, microsecond=0)
    instance_id = naming.scheduler_instance_id(tick)
    if await scheduler_exists(client, instance_id):
        return
    looked = await look_at_rotations(client)
    request = Tick(
        tick=format_timestamp(tick),
        past_due=bool(timer.past_due),
        max_concurrency=concurrency(os.environ.get("ROTATION_MAX_CONCURRENCY", DEFAULT_CONCURRENCY)),
        max_starts_per_minute=os.environ.get("ROTATION_MAX_STARTS_PER_MINUTE"),
        stuck=tuple(looked["stuck"]),
        in_flight=tuple(looked["inFlight"]) if looked["inFlight"] is not None else None,
    )
    try:
        await client.start_new("scheduler_orchestrator", instance_id, request.to_json())
    except Exception:
        # The duplicate delivery got there first while this one looked at the rotations.
        if await scheduler_exists(client, instance_id):
            return
        raise
    log.info("Scheduler %s started (past due: %s)", instance_id, timer.past_due)


async def scheduler_exists(client: df.DurableOrchestrationClient, instance_id: str) -> bool:
    existing = await client.get_status(instance_id)
    if existing and existing.runtime_status is not None:
        log.info("Scheduler %s exists (%s): duplicate tick ignored", instance_id, existing.runtime_status.value)
        return True
    return False


def _event_fields(event: func.EventGridEvent) -> tuple[str, dict[str, Any]]:
    event_type = getattr(event, "event_type", None) or getattr(event, "type", None) or ""
    data = event.get_json()
    return str(event_type), data if isinstance(data, dict) else {}


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def secret_near_expiry(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    """Key Vault's SecretNearExpiry for a secret the policy names starts that target's rotation. Anything
    else is dropped with a value-free log line and the delivery still succeeds (triggers/near_expiry.py)."""
    event_type, data = _event_fields(event)
    if event_type != NEAR_EXPIRY_TYPE:
        log.info("Ignored Event Grid event of type %s", shown(event_type, EVENT_TYPE))
        return
    found, why = read_near_expiry(current_policy(), data)
    if found is None:
        log.warning("Ignored near-expiry event: %s; nothing started", why)
        return
    target, secret_name = found.target, found.secret_name
    instance_id = naming.rotation_instance_id(target.id)
    snap = await rotation_instance(client, target.id)
    if snap is not None and snap.running:
        log.info("Near-expiry of %s: rotation %s already running", secret_name, instance_id)
        return
    replaces = snap.replaces() if snap is not None else None
    mode = successor_mode(replaces, "scheduled")
    now = datetime.now(UTC).replace(microsecond=0)
    rotation_id = naming.rotation_id(target.id, mode, now)
    request = rotation_input(target, rotation_id, mode, NEAR_EXPIRY_ACTOR, found.reason, replaces=replaces)
    if replaces is not None:
        log.warning("Near-expiry of %s: rotation %s is stuck (%s); the new one abandons it", secret_name,
                    replaces["rotationId"], replaces["reason"])  # fmt: skip
    await client.start_new("rotation_orchestrator", instance_id, request)
    log.info("Near-expiry of %s started rotation %s", secret_name, request["rotationId"])
