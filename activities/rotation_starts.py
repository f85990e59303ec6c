"""The scheduler's hands on rotation instances: start one unless the target's is running, and read how the
ones it started are doing.

Why not a sub-orchestration: the Durable Task Framework silently drops a second ExecutionStarted for an
instance that already has one (DurableTask.Core, TaskOrchestrationDispatcher.ReconcileMessagesWithState),
so a tick that called `rotation-<target>` as a sub-orchestration while that instance ran (held, started by
the API or by near-expiry) would wait forever for an answer that never comes. Here the tick never waits on
a start: `start_rotation` reads the instance and starts it only if nothing runs there; if another start
wins a race for the same id (the check is not atomic on Azure Storage, and the loser's ExecutionStarted
is dropped), `rotation_progress` later sees another rotation id on the instance and the tick reports its
own as superseded. Only one rotation ever runs per target (I3): the singleton instance id decides, not this code.

The scheduler names targets by id; `start_rotation` writes and signs the rotation's input itself
(rotation/inputs.py) from the deployed policy and the instance it reads: the tick's state (carried across
continue-as-new) stays small however many targets it has, a target edited or removed since the tick began
is started as the policy now says or not at all, and a scheduler started with a forged input can choose
neither the target's definition nor the stuck rotation a start abandons (`replaces` comes from the
instance, not from the tick).
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from rotation import naming, stuck
from rotation.contracts import RUNNING_STATUSES, ActivityRequest, json_object
from rotation.durations import format_timestamp
from rotation.identity import SCHEDULE_ACTOR
from rotation.inputs import KEY_NAME, rotation_input
from rotation.policy import current_policy
from rotation.reasons import MAX_REASON, clean_optional
from rotation.scheduling import Progress, ProgressRequest, StartAnswer, StartRequest
from rotation.stages import Phase

ORCHESTRATOR = "rotation_orchestrator"


def _status_of(status: Any) -> dict[str, Any] | None:
    """What the scheduler needs of an instance: None when there is none."""
    runtime = getattr(getattr(status, "runtime_status", None), "name", None) if status else None
    if runtime is None:
        return None
    given, custom = json_object(status.input_), json_object(status.custom_status)
    return {
        "runtime": runtime,
        "rotationId": given.get("rotationId"),
        "stage": custom.get("stage"),
        "output": json_object(status.output),
        "replaces": stuck.predecessor(runtime, custom, given, status.output),
    }


def in_flight(target_id: str, found: dict[str, Any]) -> StartAnswer:
    running = {"rotationId": found.get("rotationId"), "stage": found.get("stage"), "runtime": found["runtime"]}
    return StartAnswer(target_id, in_flight=running)


def _started_after(found: dict[str, Any], stamp: str | None) -> bool:
    """Whether the instance's rotation began after the tick did (another tick or the API got there first)."""
    if not stamp or not found.get("rotationId") or found.get("stage") == Phase.REFUSED:
        return False  # a refused (forged) start rotated nothing
    try:
        began = naming.parse_rotation_id(str(found["rotationId"])).started_at
    except naming.NamingError:
        return False
    return format_timestamp(began) > stamp


async def start_rotation(request: ActivityRequest, client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """Start the rotation a `StartRequest` names on `rotation-<targetId>` unless one runs there; answers a
    `StartAnswer`. Idempotent: run again after a crash, it finds its own rotation (running or already
    ended) and says it started it. A target rotated since the tick began (`since`: a later tick, the API)
    is not rotated again."""
    return (await _start(StartRequest.from_json(request), client)).to_json()


async def _start(wanted: StartRequest, client: df.DurableOrchestrationClient) -> StartAnswer:
    target_id = wanted.target_id
    target = current_policy().target(target_id)
    if target is None or not target.enabled:
        return StartAnswer(target_id, not_in_policy=True)
    instance = naming.rotation_instance_id(target_id)
    found = _status_of(await client.get_status(instance, show_input=True))
    if found is not None and found["rotationId"] == wanted.rotation_id:
        return StartAnswer(target_id, started=True)  # ours, started by an earlier attempt
    if found is not None and found["runtime"] in RUNNING_STATUSES:
        return in_flight(target_id, found)
    if found is not None and _started_after(found, wanted.since):
        return StartAnswer(target_id, rotated_since=found["rotationId"])
    replaces = found["replaces"] if found is not None else None
    mode = stuck.successor_mode(replaces, "scheduled")
    try:
        parts = naming.parse_rotation_id(wanted.rotation_id)
    except ValueError:
        parts = None
    if parts is None or parts.target_id != target_id or parts.mode != mode:
        return StartAnswer(
            target_id, refused=f"rotation id {wanted.rotation_id!r} is not a {mode} rotation of {target_id}"
        )
    current = wanted.current_key_name
    rotation = rotation_input(
        target,
        wanted.rotation_id,
        mode,
        SCHEDULE_ACTOR,
        clean_optional(wanted.reason, MAX_REASON) or "due",
        current_key_name=current if current is not None and KEY_NAME.match(current) else None,
        replaces=replaces,
    )
    try:
        await client.start_new(ORCHESTRATOR, instance, rotation)
    except Exception:
        # Refused because another start won the race: that rotation owns the target now.
        now = _status_of(await client.get_status(instance, show_input=True))
        if now is not None and now["rotationId"] == wanted.rotation_id:
            return StartAnswer(target_id, started=True)
        if now is not None and now["runtime"] in RUNNING_STATUSES:
            return in_flight(target_id, now)
        raise
    return StartAnswer(target_id, started=True)


async def rotation_progress(request: ActivityRequest, client: df.DurableOrchestrationClient) -> dict[str, Any]:
    """`ProgressRequest` -> `{"rotations": [Progress, ...]}`: for each started rotation, running, ended
    (with its output's outcome), replaced (the instance holds another rotation: it superseded ours, or
    won a start race) or gone."""
    started = ProgressRequest.from_json(request).started
    out = [await _progress(client, target_id, rotation_id) for target_id, rotation_id in started.items()]
    return {"rotations": [p.to_json() for p in out]}


async def _progress(client: df.DurableOrchestrationClient, target_id: str, rotation_id: str) -> Progress:
    instance = naming.rotation_instance_id(target_id)
    found = _status_of(await client.get_status(instance, show_input=True))
    if found is None:  # a failed read looks the same as no instance: read once more before saying so
        found = _status_of(await client.get_status(instance, show_input=True))
    if found is None:
        return Progress(target_id, rotation_id, "gone")
    if found["rotationId"] != rotation_id:
        return Progress(target_id, rotation_id, "replaced", by=found["rotationId"])
    if found["runtime"] in RUNNING_STATUSES:
        return Progress(target_id, rotation_id, "running", stage=found["stage"])
    outcome = found["output"].get("outcome")
    outcome = outcome if isinstance(outcome, str) else None
    return Progress(target_id, rotation_id, "ended", runtime=found["runtime"], outcome=outcome)
