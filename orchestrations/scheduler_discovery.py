"""The first execution of a tick: which targets it rotates (due, stuck, drifted), what it keeps of each
until it starts it, and the summary it begins.

Due targets come from `find_due_targets` (Key Vault's current version against the policy's interval and
expiry); those whose vault could not be read are read again after a durable pause. Stuck rotations
(rotation/stuck.py) come in the tick's input as `stuck` (the timer trigger looked at every target's
instance): each is rotated now, whether due or not, by a rotation that abandons the stuck one as its step
0 (`replaces`); a stuck emergency is resumed as an emergency. Last, one drift check
(orchestrations/drift.py) repairs keys changed behind the rotation's back and queues the targets whose key
is gone. Deterministic: no I/O, time from the orchestration context.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from orchestrations import drift
from orchestrations.retry import QUERY_STEP, step_error
from rotation import stuck as stuck_rotations
from rotation.durations import format_timestamp, parse_duration
from rotation.scheduling import DueQuery, DueTargets, Tick
from rotation.stages import Phase

UNREADABLE_READS = 2
UNREADABLE_PAUSE = timedelta(seconds=30)
QUEUED_FIELDS = ("targetId", "mode", "reason", "currentKeyName", "replaces")
SUMMARY_BUCKETS = ("completed", "failed", "aborted", "superseded", "skipped")


def discover(context: df.DurableOrchestrationContext, tick: Tick) -> Generator[Any, Any, dict[str, Any]]:
    """The fan-out's state (summary, queue, and the empty record of what was started), or the summary with
    `error` when nothing can be known."""
    now = context.current_utc_datetime
    summary: dict[str, Any] = {"tick": tick.tick or format_timestamp(now), **{bucket: [] for bucket in SUMMARY_BUCKETS}}
    query = DueQuery(format_timestamp(now)).to_json()
    try:
        answer = yield context.call_activity_with_retry("find_due_targets", QUERY_STEP, query)
    except Exception as exc:
        summary["error"] = f"could not find due targets: {step_error(exc)}"
        context.set_custom_status({"stage": Phase.FAILED, **summary})
        return summary
    found = yield from read_unreadable_again(context, DueTargets.from_json(answer), now)
    queue = with_stuck(list(found.due), tick.stuck)
    queue = drift.with_missing(queue, (yield from drift.check(context, tick, now, summary)))
    summary["abandoned"] = [
        {"targetId": i["targetId"], **stuck_rotations.summary(i["replaces"])} for i in queue if i.get("replaces")
    ]
    summary["due"] = [item["targetId"] for item in queue]
    summary["notDue"] = len(found.not_due)
    summary["skipped"] = [{"targetId": s["targetId"], "reason": s.get("reason")} for s in found.skipped]
    summary["inFlight"] = []
    summary["executions"] = 1
    # `startedAt` names every rotation of this tick (ids carry their start: the tick's time, whichever
    # execution of the tick starts them); `started` maps targetId -> the rotation id this tick started.
    return {
        "summary": summary,
        "queue": [queued(item) for item in queue],
        "started": {},
        "expectedEnd": {},
        "polls": 0,
        "late": 0,
        "startedAt": format_timestamp(now),
    }


def read_unreadable_again(
    context: df.DurableOrchestrationContext, found: DueTargets, now: datetime
) -> Generator[Any, Any, DueTargets]:
    """Targets whose Key Vault could not be read are read again after a durable pause (twice, 30 s then
    60 s), so a throttle or a blip costs them minutes, not a whole tick. Found by the fault campaign: a
    429 on the version listing skipped a due target until the next day."""
    for attempt in range(UNREADABLE_READS):
        unreadable = found.unreadable()
        if not unreadable:
            break
        yield context.create_timer(context.current_utc_datetime + UNREADABLE_PAUSE * 2**attempt)
        query = DueQuery(format_timestamp(now), tuple(unreadable)).to_json()
        try:
            again = yield context.call_activity("find_due_targets", query)
        except Exception:
            break  # the first answer stands: those targets stay skipped, with their reason
        found = found.reread(DueTargets.from_json(again))
    return found


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


def queued(item: dict[str, Any]) -> dict[str, Any]:
    """What the tick keeps of a due target until it starts it: the id and why, and how long its rotation
    should take; not the target's definition (start_rotation reads it from the policy), so the state that
    every execution carries stays small."""
    kept = {k: item[k] for k in QUEUED_FIELDS if item.get(k) is not None}
    target = item.get("target") or {}
    try:
        overlap = parse_duration(str(target.get("overlap") or "PT0S"))
        watch = parse_duration(str((target.get("monitoring") or {}).get("watch") or "PT0S"))
    except ValueError:
        return kept
    kept["expectedSeconds"] = int((overlap + watch).total_seconds())
    return kept
