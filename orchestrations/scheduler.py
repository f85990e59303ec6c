"""The scheduler: one instance per timer tick, fanning out one rotation per due target.

Rotations are started by an activity (`start_rotation`), never as sub-orchestrations: the Durable Task
Framework drops a start onto a running instance id without telling the parent, so a tick waiting on
`rotation-<target>` while that target's rotation ran (held, or started by the API) would never end.
`start_rotation` starts the target's singleton instance only if nothing runs there, and otherwise reports
the target as in flight; the tick then follows what it started by reading the instances
(`rotation_progress`) on durable timers (orchestrations/scheduler_progress.py), so the tick always
completes and lists every target as completed, failed, aborted, superseded, in flight or skipped.
Concurrency is bounded (at most `maxConcurrency` started rotations in progress) and starts are paced
(`maxStartsPerMinute`, rotation/pacing.py); one target's failure never stops the others; I3 holds because
the instance id is the target's. What the tick rotates (due, stuck, drifted) is found by its first
execution (orchestrations/scheduler_discovery.py); the tick and its activities speak the contracts of
rotation/scheduling.py.

History stays bounded: an execution takes at most YIELDS_PER_EXECUTION steps, then continues as new
carrying the fan-out's state (`resume`): the queue, the rotations started and when they should end, the
pacing bucket and the summary so far.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import Any

import azure.durable_functions as df

from orchestrations.retry import KEY_STEP, QUERY_STEP, step_error
from orchestrations.scheduler_discovery import discover
from orchestrations.scheduler_progress import expected_end, file_start, next_pause, settle
from rotation import naming, pacing
from rotation.durations import parse_timestamp
from rotation.scheduling import PROGRESS_STATES, Progress, ProgressRequest, StartAnswer, StartRequest, Tick

bp = df.Blueprint()

# Steps (starts, pauses, reads) one execution of a tick takes before it continues as new: about four
# history events each, so an execution stays under 100 events however many targets the tick has. Every
# episode of the tick replays its execution's history (the SDK parses each event's timestamp), so a short
# execution is cheap; what a continue-as-new costs is one carried state.
YIELDS_PER_EXECUTION = 15
START_ATTEMPTS = KEY_STEP.max_number_of_attempts  # what a failed start costs the step budget


@bp.orchestration_trigger(context_name="context")
def scheduler_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    tick = Tick.from_json(context.get_input())
    if tick.resume is not None:
        state = tick.resume  # a later execution of this tick (continue-as-new): the fan-out goes on
    else:
        found = yield from discover(context, tick)
        if "error" in found:
            return found
        state = found
    finished = yield from fan_out(context, state, tick.max_concurrency, pacing.pace(tick.max_starts_per_minute))
    if not finished:
        context.continue_as_new(replace(tick, resume=state).to_json())
        return dict(state["summary"])  # not the output: the next execution's is
    context.set_custom_status({"stage": "done"})
    return dict(state["summary"])


def fan_out(
    context: df.DurableOrchestrationContext, state: dict[str, Any], window: int, pace: pacing.Pace
) -> Generator[Any, Any, bool]:
    """Start rotations while fewer than `window` of ours are in progress; read the started ones after a
    backing-off pause; settle those that ended. True when every target is settled; False when this
    execution has done YIELDS_PER_EXECUTION steps: the caller continues as new, carrying `state`, so one
    execution's history stays bounded whatever the number of targets. Starts are paced (`paced`)."""
    summary, queue, started = state["summary"], state["queue"], state["started"]
    stamp = parse_timestamp(state["startedAt"])
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
            if (yield from start_one(context, item, rotation_id, state["startedAt"], summary)):
                started[item["targetId"]] = rotation_id
                state["expectedEnd"][item["targetId"]] = expected_end(item, context.current_utc_datetime)
                state["polls"] = state["late"] = 0  # something new runs: look again soon
            elif len(summary["failed"]) > failures:
                steps += START_ATTEMPTS  # a start that failed took its retries (about four events each)
        # Out of steps while starting: continue as new now, not after a pause, which would refill the
        # start bucket for nothing and leave the window short for its length.
        if not started or steps >= YIELDS_PER_EXECUTION:
            continue
        context.set_custom_status(
            {"stage": "rotating", "running": sorted(started), "queued": len(queue), "execution": summary["executions"]}
        )
        yield context.create_timer(context.current_utc_datetime + next_pause(state, context.current_utc_datetime))
        state["polls"] = int(state["polls"]) + 1
        steps += 2
        for entry in (yield from read_progress(context, started)):
            if entry.state == "running" or entry.target_id not in started:
                continue
            del started[entry.target_id]
            state["expectedEnd"].pop(entry.target_id, None)
            state["polls"] = state["late"] = 0
            settle(summary, entry)
    return True


def read_progress(
    context: df.DurableOrchestrationContext, started: dict[str, str]
) -> Generator[Any, Any, list[Progress]]:
    """How the started rotations are doing; nothing when they could not be read this time (they are read
    again after the next pause)."""
    try:
        progress = yield context.call_activity_with_retry(
            "rotation_progress", QUERY_STEP, ProgressRequest(started).to_json()
        )
    except Exception:
        return []
    return [Progress.from_json(e) for e in progress.get("rotations") or [] if e.get("state") in PROGRESS_STATES]


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


def start_request(item: dict[str, Any], rotation_id: str, tick: str, since: str) -> StartRequest:
    """What the tick asks of a rotation: start_rotation writes and signs the rotation's input from the
    deployed policy and the instance (its mode is the id's; `replaces` is taken from the instance, never
    from here)."""
    reason = f"{item.get('reason', 'due')} (tick {tick})"
    return StartRequest(item["targetId"], rotation_id, reason, since, item.get("currentKeyName"))


def start_one(
    context: df.DurableOrchestrationContext, item: dict[str, Any], rotation_id: str, since: str, summary: dict[str, Any]
) -> Generator[Any, Any, bool]:
    """Start one target's rotation; False when it did not start (in flight, or the start failed), with the
    target already entered in the summary."""
    request = start_request(item, rotation_id, summary["tick"], since)
    try:
        answer = yield context.call_activity_with_retry("start_rotation", KEY_STEP, request.to_json())
    except Exception as exc:
        summary["failed"].append({"targetId": item["targetId"], "reason": f"not started: {step_error(exc)}"})
        return False
    started = StartAnswer.from_json({"targetId": item["targetId"], **answer})
    if not started.started:
        file_start(summary, started)
    return started.started
