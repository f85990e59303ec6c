"""Entry points that start rotations without a caller: the timer and Key Vault's near-expiry event."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from rotation import naming
from rotation.durations import format_timestamp
from rotation.identity import NEAR_EXPIRY_ACTOR
from rotation.policy import current_policy

bp = df.Blueprint()
log = logging.getLogger("keyrotation.triggers")

RUNNING = {df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending}
NEAR_EXPIRY_TYPE = "Microsoft.KeyVault.SecretNearExpiry"


async def is_running(client: df.DurableOrchestrationClient, instance_id: str) -> bool:
    """The instance-exists check is not atomic on Azure Storage, so look first (DESIGN I3)."""
    status = await client.get_status(instance_id)
    return bool(status and status.runtime_status in RUNNING)


@bp.timer_trigger(schedule="%ROTATION_SCHEDULE%", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def rotation_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """One scheduler instance per tick minute: a duplicate tick finds it and does nothing."""
    tick = datetime.now(UTC).replace(second=0, microsecond=0)
    instance_id = naming.scheduler_instance_id(tick)
    existing = await client.get_status(instance_id)
    if existing and existing.runtime_status is not None:
        log.info("Scheduler %s exists (%s): duplicate tick ignored", instance_id, existing.runtime_status.value)
        return
    request = {
        "tick": format_timestamp(tick),
        "pastDue": bool(timer.past_due),
        "maxConcurrency": os.environ.get("ROTATION_MAX_CONCURRENCY", "8"),
    }
    await client.start_new("scheduler_orchestrator", instance_id, request)
    log.info("Scheduler %s started (past due: %s)", instance_id, timer.past_due)


def _event_fields(event: func.EventGridEvent) -> tuple[str, dict[str, Any]]:
    event_type = getattr(event, "event_type", None) or getattr(event, "type", None) or ""
    data = event.get_json()
    return str(event_type), data if isinstance(data, dict) else {}


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def secret_near_expiry(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    """Key Vault's SecretNearExpiry for a secret the policy names starts that target's rotation."""
    event_type, data = _event_fields(event)
    if event_type != NEAR_EXPIRY_TYPE:
        log.info("Ignored Event Grid event of type %s", event_type)
        return
    secret_name = str(data.get("ObjectName") or "")
    target = current_policy().target_for_secret(secret_name, data.get("VaultName"))
    if target is None or not target.schedulable:
        log.info("Ignored near-expiry of secret %s: not a scheduled target in the policy", secret_name)
        return
    instance_id = naming.rotation_instance_id(target.id)
    if await is_running(client, instance_id):
        log.info("Near-expiry of %s: rotation %s already running", secret_name, instance_id)
        return
    now = datetime.now(UTC).replace(microsecond=0)
    request = {
        "rotationId": naming.rotation_id(target.id, "scheduled", now),
        "mode": "scheduled",
        "target": target.to_json(),
        "actor": NEAR_EXPIRY_ACTOR.to_json(),
        "reason": f"Key Vault reported version {data.get('Version')} of {secret_name} near expiry",
    }
    await client.start_new("rotation_orchestrator", instance_id, request)
    log.info("Near-expiry of %s started rotation %s", secret_name, request["rotationId"])
