"""The scheduler: one instance per timer tick, fanning out one rotation per due target.

Rotations are started by an activity (`start_rotation`), never as sub-orchestrations: the Durable Task
Framework drops a start onto a running instance id without telling the parent, so a tick waiting on
`rotation-<target>` while that target's rotation ran (held, or started by the API) would never end.
`start_rotation` starts the target's singleton instance only if nothing runs there, and otherwise reports
the target as in flight; the tick then follows what it started by reading the instances
(`rotation_progress`) on durable timers: soon after a start, then at the earliest expected end (overlap and
watch from the policy), then backing off (EARLY_POLLS, LATE_POLLS), so the tick
always completes and lists every target as completed, failed, aborted, superseded, in flight or skipped.
Concurrency is bounded (at most `maxConcurrency` started rotations in progress); one target's failure
never stops the others; I3 holds because the instance id is the target's. Before the fan-out, one drift
check (orchestrations/drift.py) repairs keys changed behind the rotation's back and queues the targets
whose key is gone.

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
from orchestrations.retry import KEY_STEP, QUERY_STEP, step_error
from rotation import naming, pacing
from rotation import stuck as stuck_rotations
from rotation.durations import format_timestamp, parse_duration, parse_timestamp
from rotation.identity import SCHEDULE_ACTOR

bp = df.Blueprint()

DEFAULT_CONCURRENCY = 8
UNREADABLE_READS = 2
UNREADABLE_PAUSE = timedelta(seconds=30)
MAX_CONCURRENCY = 64
# When the tick reads the rotations it started: soon after a start (a rotation that fails early frees its
# slot), then when the earliest of them is expected to end (its overlap and watch from the policy, plus a
# minute), then backing off for rotations that run late (held, extended): so a slot frees about when its
# rotation ends, and a 30-day overlap costs a few reads, not thousands.
EARLY_POLLS = (timedelta(seconds=30), timedelta(minutes=2))
LATE_POLLS = (timedelta(minutes=10), timedelta(hours=1), timedelta(hours=6))
EXPECTED_END_MARGIN = timedelta(minutes=1)
# Steps (starts, pauses, reads) one execution of a tick takes before it continues as new: about four
# history events each, so an execution stays near 200 events however many targets the tick has.
YIELDS_PER_EXECUTION = 40
START_ATTEMPTS = KEY_STEP.max_number_of_attempts  # what a failed start costs the step budget
OUTCOME_BUCKETS = {"completed": "completed", "aborted": "aborted", "superseded": "superseded"}


def concurrency(value: Any) -> int:
    try:
        return min(max(int(value), 1), MAX_CONCURRENCY)
    except (TypeError, ValueError):
        return DEFAULT_CONCURRENCY


def rotation_input(item: dict[str, Any], rotation_id: str, tick: str) -> dict[str, Any]:
    """What the tick asks of a rotation; start_rotation writes and signs the input from the deployed policy
    and the instance (`replaces` there is taken from the instance, never from here)."""
    request = {
        "rotationId": rotation_id,
        "mode": item.get("mode", "scheduled"),
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
    resumed = request.get("resume")
    if isinstance(resumed, dict):
        state = resumed  # a later execution of this tick (continue-as-new): the fan-out goes on
    else:
        found = yield from discover(context, request)
        if "error" in found:
            return found
        state = found
    window = concurrency(request.get("maxConcurrency", DEFAULT_CONCURRENCY))
    finished = yield from fan_out(context, state, window, pacing.pace(request.get("maxStartsPerMinute")))
    if not finished:
        context.continue_as_new({**request, "resume": state})
        return dict(state["summary"])  # not the output: the next execution's is
    context.set_custom_status({"stage": "done"})
    return dict(state["summary"])


def discover(context: df.DurableOrchestrationContext, request: dict[str, Any]) -> Generator[Any, Any, dict[str, Any]]:
    """The tick's first execution: which targets to rotate (due, stuck, drifted), and the summary so far.
    Returns the fan-out's state, or the summary with `error` when nothing can be known."""
    now = context.current_utc_datetime
    tick = str(request.get("tick") or format_timestamp(now))
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
        summary["error"] = f"could not find due targets: {step_error(exc)}"
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
    summary["inFlight"] = []
    summary["executions"] = 1
    now_text = format_timestamp(now)
    queue = [queued(item) for item in queue]
    # `startedAt` names every rotation of this tick (ids carry their start: the tick's time, whichever
    # execution of the tick starts them); `started` maps targetId -> the rotation id this tick started.
    return {
        "summary": summary,
        "queue": queue,
        "started": {},
        "expectedEnd": {},
        "polls": 0,
        "late": 0,
        "startedAt": now_text,
    }


def fan_out(
    context: df.DurableOrchestrationContext, state: dict[str, Any], window: int, pace: pacing.Pace
) -> Generator[Any, Any, bool]:
    """Start rotations while fewer than `window` of ours are in progress; read the started ones after a
    backing-off pause; settle those that ended. True when every target is settled; False when this
    execution has done YIELDS_PER_EXECUTION steps: the caller continues as new, carrying `state`, so one
    execution's history stays bounded whatever the number of targets. Starts are paced (`paced`)."""
    summary, queue, started = state["summary"], state["queue"], state["started"]
    tick, stamp = summary["tick"], parse_timestamp(state["startedAt"])
    steps = 0
    while queue or started:
        if steps >= YIELDS_PER_EXECUTION:
            summary["executions"] = int(summary.get("executions", 1)) + 1
            return False
        while queue and len(started) < window and steps < YIELDS_PER_EXECUTION:
            steps += yield from paced(context, state, pace)
            item = queue.pop(0)
            rotation_id = naming.rotation_id(item["targetId"], item.get("mode", "scheduled"), stamp)
            steps += 1
            failures = len(summary["failed"])
            if (yield from start_one(context, item, rotation_id, tick, state["startedAt"], summary)):
                started[item["targetId"]] = rotation_id
                state["expectedEnd"][item["targetId"]] = expected_end(item, context.current_utc_datetime)
                state["polls"] = state["late"] = 0  # something new runs: look again soon
            elif len(summary["failed"]) > failures:
                steps += START_ATTEMPTS  # a start that failed took its retries (about four events each)
        if not started:
            continue
        context.set_custom_status(
            {"stage": "rotating", "running": sorted(started), "queued": len(queue), "execution": summary["executions"]}
        )
        yield context.create_timer(context.current_utc_datetime + next_pause(state, context.current_utc_datetime))
        state["polls"] = int(state["polls"]) + 1
        steps += 2
        try:
            progress = yield context.call_activity_with_retry(
                "rotation_progress",
                QUERY_STEP,
                {"rotations": [{"targetId": t, "rotationId": r} for t, r in sorted(started.items())]},
            )
        except Exception:
            progress = {}  # could not read them this time: read again after the next pause
        for entry in progress.get("rotations") or []:
            if entry.get("state") == "running" or entry.get("targetId") not in started:
                continue
            del started[entry["targetId"]]
            state["expectedEnd"].pop(entry["targetId"], None)
            state["polls"] = state["late"] = 0
            settle(summary, entry)
    return True


def paced(
    context: df.DurableOrchestrationContext, state: dict[str, Any], pace: pacing.Pace
) -> Generator[Any, Any, int]:
    """Take a start token from the tick's bucket (rotation/pacing.py), first waiting on a durable timer
    when none is left; returns the steps that cost (a timer is two history events)."""
    now = context.current_utc_datetime
    bucket = pacing.StartBucket.from_json(state.get("bucket"), pace, now).refilled(pace, now)
    steps = 0
    delay = bucket.wait(pace, state["queue"][0]["targetId"])
    if delay:
        yield context.create_timer(now + delay)
        steps = 2
        bucket = bucket.refilled(pace, context.current_utc_datetime)
        state["summary"]["pacedStarts"] = int(state["summary"].get("pacedStarts", 0)) + 1
    state["bucket"] = bucket.take().to_json()
    return steps


QUEUED_FIELDS = ("targetId", "mode", "reason", "currentKeyName", "replaces")


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


def expected_end(item: dict[str, Any], now: datetime) -> str | None:
    """When a rotation started now should end if nothing holds it: its overlap and post-revocation watch."""
    seconds = item.get("expectedSeconds")
    return format_timestamp(now + timedelta(seconds=int(seconds))) if seconds is not None else None


def next_pause(state: dict[str, Any], now: datetime) -> timedelta:
    """Soon after a start; then backing off, but never past the earliest expected end still ahead."""
    polls = int(state["polls"])
    if polls < len(EARLY_POLLS):
        return EARLY_POLLS[polls]
    late = int(state["late"])
    state["late"] = late + 1
    backoff = LATE_POLLS[min(late, len(LATE_POLLS) - 1)]
    ends = [parse_timestamp(end) for end in state["expectedEnd"].values() if end]
    upcoming = [end - now + EXPECTED_END_MARGIN for end in ends if end > now]
    return min([backoff, *upcoming])


def start_one(
    context: df.DurableOrchestrationContext,
    item: dict[str, Any],
    rotation_id: str,
    tick: str,
    since: str,
    summary: dict[str, Any],
) -> Generator[Any, Any, bool]:
    """Start one target's rotation; False when it did not start (in flight, or the start failed), with the
    target already entered in the summary."""
    request = {"targetId": item["targetId"], "input": rotation_input(item, rotation_id, tick), "since": since}
    try:
        answer = yield context.call_activity_with_retry("start_rotation", KEY_STEP, request)
    except Exception as exc:
        summary["failed"].append({"targetId": item["targetId"], "reason": f"not started: {step_error(exc)}"})
        return False
    if answer.get("started"):
        return True
    if answer.get("notInPolicy"):
        summary["failed"].append({"targetId": item["targetId"], "reason": "not started: no longer in the policy"})
        return False
    if answer.get("refused"):
        summary["failed"].append({"targetId": item["targetId"], "reason": f"not started: {answer['refused']}"})
        return False
    if answer.get("rotatedSince"):
        reason = f"rotated since this tick began ({answer['rotatedSince']})"
        summary["skipped"].append({"targetId": item["targetId"], "reason": reason})
        return False
    summary["inFlight"].append({"targetId": item["targetId"], **(answer.get("inFlight") or {})})
    return False


def settle(summary: dict[str, Any], entry: dict[str, Any]) -> None:
    """One started rotation that is no longer running, into its bucket."""
    target_id, rotation_id, state = entry["targetId"], entry.get("rotationId"), entry.get("state")
    if state == "replaced":
        # An emergency took the instance over, or another start won the race for it: either way the
        # target's rotation is that one now, not ours.
        summary["superseded"].append({"targetId": target_id, "rotationId": rotation_id, "by": entry.get("by")})
        return
    if state == "gone":
        summary["failed"].append({"targetId": target_id, "rotationId": rotation_id, "reason": "instance purged"})
        return
    outcome = entry.get("outcome")
    bucket = OUTCOME_BUCKETS.get(str(outcome), "failed") if entry.get("runtime") == "Completed" else "failed"
    record = {"targetId": target_id, "rotationId": rotation_id, "outcome": outcome}
    if entry.get("runtime") != "Completed":
        record["reason"] = f"rotation instance {str(entry.get('runtime')).lower()}"
    summary[bucket].append(record)
