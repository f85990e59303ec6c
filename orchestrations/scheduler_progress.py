"""How a tick follows the rotations it started: when it looks again, and how it files what it is told.

The tick reads the rotations it started (`rotation_progress`) on durable timers: soon after a start (a
rotation that fails early frees its slot), then when the earliest of them is expected to end (its overlap
and watch from the policy, plus a minute), then backing off for rotations that run late (held, extended):
so a slot frees about when its rotation ends, and a 30-day overlap costs a few reads, not thousands. Every
target ends in one bucket of the summary: completed, failed, aborted, superseded, in flight or skipped.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rotation.durations import format_timestamp, parse_timestamp
from rotation.scheduling import Progress, StartAnswer

EARLY_POLLS = (timedelta(seconds=30), timedelta(minutes=2))
LATE_POLLS = (timedelta(minutes=10), timedelta(hours=1), timedelta(hours=6))
EXPECTED_END_MARGIN = timedelta(minutes=1)
OUTCOME_BUCKETS = {"completed": "completed", "aborted": "aborted", "superseded": "superseded"}


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


def file_start(summary: dict[str, Any], answer: StartAnswer) -> None:
    """A start that did not start, into its bucket: failed (not in the policy, refused), skipped (rotated
    since the tick began) or in flight (another rotation runs there)."""
    target_id = answer.target_id
    if answer.not_in_policy:
        summary["failed"].append({"targetId": target_id, "reason": "not started: no longer in the policy"})
    elif answer.refused:
        summary["failed"].append({"targetId": target_id, "reason": f"not started: {answer.refused}"})
    elif answer.rotated_since:
        reason = f"rotated since this tick began ({answer.rotated_since})"
        summary["skipped"].append({"targetId": target_id, "reason": reason})
    else:
        summary["inFlight"].append({"targetId": target_id, **(answer.in_flight or {})})


def settle(summary: dict[str, Any], entry: Progress) -> None:
    """One started rotation that is no longer running, into its bucket."""
    target_id, rotation_id = entry.target_id, entry.rotation_id
    if entry.state == "replaced":
        # An emergency took the instance over, or another start won the race for it: either way the
        # target's rotation is that one now, not ours.
        summary["superseded"].append({"targetId": target_id, "rotationId": rotation_id, "by": entry.by})
        return
    if entry.state == "gone":
        summary["failed"].append({"targetId": target_id, "rotationId": rotation_id, "reason": "instance purged"})
        return
    completed = entry.runtime == "Completed"
    bucket = OUTCOME_BUCKETS.get(str(entry.outcome), "failed") if completed else "failed"
    record: dict[str, Any] = {"targetId": target_id, "rotationId": rotation_id, "outcome": entry.outcome}
    if not completed:
        record["reason"] = f"rotation instance {str(entry.runtime).lower()}"
    summary[bucket].append(record)
