"""The scheduler: one instance per timer tick, fanning out one rotation per due target.

Concurrency is bounded (a sliding window of sub-orchestrations); one target's failure never stops the
others; a target whose rotation instance is still running is skipped (the instance-exists rule makes
the sub-orchestration fail rather than start a second rotation: invariant I3). Before the fan-out, one
drift check (orchestrations/drift.py) repairs keys changed behind the rotation's back and queues the
targets whose key is gone.

Stuck rotations (rotation/stuck.py) come in the input as `stuck` (the timer trigger looked at every
target's instance): each is rotated now, whether due or not, by a rotation that abandons the stuck one as
its step 0 (`replaces`); a stuck emergency is resumed as an emergency.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from orchestrations import drift
from orchestrations.retry import QUERY_STEP
from rotation import naming
from rotation import stuck as stuck_rotations
from rotation.durations import format_timestamp
from rotation.identity import SCHEDULE_ACTOR
from rotation.redaction import safe_error_message

bp = df.Blueprint()

DEFAULT_CONCURRENCY = 8
UNREADABLE_READS = 2
UNREADABLE_PAUSE = timedelta(seconds=30)
MAX_CONCURRENCY = 64


def concurrency(value: Any) -> int:
    try:
        return min(max(int(value), 1), MAX_CONCURRENCY)
    except (TypeError, ValueError):
        return DEFAULT_CONCURRENCY


def rotation_input(item: dict[str, Any], rotation_id: str, tick: str) -> dict[str, Any]:
    request = {
        "rotationId": rotation_id,
        "mode": item.get("mode", "scheduled"),
        "target": item["target"],
        "actor": SCHEDULE_ACTOR.to_json(),
        "reason": f"{item.get('reason', 'due')} (tick {tick})",
        "currentKeyName": item.get("currentKeyName"),
    }
    if item.get("replaces"):
        request["replaces"] = item["replaces"]
    return request


def with_stuck(queue: list[dict[str, Any]], stuck: Any) -> list[dict[str, Any]]:
    """The due queue with every stuck target in it, carrying its `replaces` record (a due target keeps its
    place and reason; a target not due is added: a stuck rotation must not wait for the next interval)."""
    by_target = {s["targetId"]: s for s in stuck or [] if isinstance(s, dict) and s.get("replaces")}
    out: list[dict[str, Any]] = []
    for item in queue:
        entry = by_target.pop(item["targetId"], None)
        out.append({**item, **stuck_fields(entry)} if entry else item)
    for entry in by_target.values():
        if isinstance(entry.get("target"), dict):
            out.append({"targetId": entry["targetId"], "target": entry["target"], **stuck_fields(entry)})
    return out


def stuck_fields(entry: dict[str, Any]) -> dict[str, Any]:
    replaces = entry["replaces"]
    mode = stuck_rotations.successor_mode(replaces, "scheduled")
    reason = f"stuck rotation {replaces.get('rotationId')} abandoned"
    if mode == "emergency":
        reason = f"resumes emergency rotation {replaces.get('rotationId')}, stuck ({replaces.get('reason')})"
    return {"replaces": replaces, "mode": mode, "reason": reason}


def read_unreadable_again(
    context: df.DurableOrchestrationContext, found: dict[str, Any], now: datetime
) -> Generator[Any, Any, dict[str, Any]]:
    """Targets whose Key Vault could not be read are read again after a durable pause (twice, 30 s then
    60 s), so a throttle or a blip costs them minutes, not a whole tick. Found by the fault campaign: a
    429 on the version listing skipped a due target until the next day."""
    for attempt in range(UNREADABLE_READS):
        unreadable = [s["targetId"] for s in found.get("skipped") or [] if s.get("unreadable")]
        if not unreadable:
            break
        yield context.create_timer(context.current_utc_datetime + UNREADABLE_PAUSE * 2**attempt)
        try:
            again = yield context.call_activity("find_due_targets", {"now": format_timestamp(now), "only": unreadable})
        except Exception:
            break  # the first answer stands: those targets stay skipped, with their reason
        kept = [s for s in found.get("skipped") or [] if s["targetId"] not in unreadable]
        found = {
            "due": [*(found.get("due") or []), *(again.get("due") or [])],
            "notDue": [*(found.get("notDue") or []), *(again.get("notDue") or [])],
            "skipped": [*kept, *(again.get("skipped") or [])],
        }
    return found


@bp.orchestration_trigger(context_name="context")
def scheduler_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    request = context.get_input() or {}
    now = context.current_utc_datetime
    tick = str(request.get("tick") or format_timestamp(now))
    window = concurrency(request.get("maxConcurrency", DEFAULT_CONCURRENCY))
    summary: dict[str, Any] = {
        "tick": tick,
        "completed": [],
        "failed": [],
        "aborted": [],
        "superseded": [],
        "skipped": [],
    }
    try:
        found = yield context.call_activity_with_retry("find_due_targets", QUERY_STEP, {"now": format_timestamp(now)})
    except Exception as exc:
        summary["error"] = f"could not find due targets: {safe_error_message(exc)}"
        context.set_custom_status({"stage": "failed", **summary})
        return summary
    found = yield from read_unreadable_again(context, found, now)
    queue = with_stuck(list(found.get("due") or []), request.get("stuck"))
    queue = drift.with_missing(queue, (yield from drift.check(context, request, now, summary)))
    summary["abandoned"] = [
        {"targetId": i["targetId"], **stuck_rotations.summary(i["replaces"])} for i in queue if i.get("replaces")
    ]
    summary["due"] = [item["targetId"] for item in queue]
    summary["notDue"] = len(found.get("notDue") or [])
    summary["skipped"] = [{"targetId": s["targetId"], "reason": s.get("reason")} for s in found.get("skipped") or []]
    running: list[tuple[str, Any]] = []
    while queue or running:
        while queue and len(running) < window:
            item = queue.pop(0)
            rotation_id = naming.rotation_id(item["targetId"], item.get("mode", "scheduled"), now)
            task = context.call_sub_orchestrator(
                "rotation_orchestrator",
                rotation_input(item, rotation_id, tick),
                naming.rotation_instance_id(item["targetId"]),
            )
            running.append((item["targetId"], task))
        context.set_custom_status({"stage": "rotating", "running": [t for t, _ in running], "queued": len(queue)})
        finished = yield context.task_any([task for _, task in running])
        target_id = next(t for t, task in running if task is finished)
        running = [(t, task) for t, task in running if task is not finished]
        result = finished.result
        if isinstance(result, BaseException):
            message = safe_error_message(result)
            bucket = "skipped" if "already exists" in message else "failed"
            reason = "a rotation of this target is already running" if bucket == "skipped" else message
            summary[bucket].append({"targetId": target_id, "reason": reason})
        else:
            outcome = result.get("outcome") if isinstance(result, dict) else None
            bucket = {"completed": "completed", "aborted": "aborted", "superseded": "superseded"}.get(
                str(outcome), "failed"
            )
            summary[bucket].append({"targetId": target_id, "rotationId": result.get("rotationId"), "outcome": outcome})
    context.set_custom_status({"stage": "done"})
    return summary
