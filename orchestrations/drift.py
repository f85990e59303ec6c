"""The scheduler's drift step: one `check_drift` call per tick, before any rotation starts.

The activity repairs what it can itself (a regenerated key is restored into Key Vault) and publishes
DriftDetected; what it cannot repair (a key name gone from the target) comes back as `missing`, and the
scheduler rotates that target in the same tick. The check never stops the tick: if it fails after its
retries, the summary says so and the due rotations run as planned; the next tick checks again.
Deterministic: no I/O, time from the orchestration context.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from orchestrations.retry import PUBLISH_STEP, QUERY_STEP, step_error
from rotation import naming
from rotation.durations import as_utc, format_timestamp
from rotation.scheduling import Tick

MISSING_REASON = "drift: key missing"
SUMMARY_FIELDS = ("targetId", "outcome", "keyName", "version", "repairOf", "reason")


def check_id(tick: Any, now: datetime) -> str:
    """One check per tick: the tick's time names it (and so the DriftDetected event ids); `now` when the
    scheduler was started without one."""
    try:
        at = as_utc(datetime.fromisoformat(str(tick).replace("Z", "+00:00")))
    except ValueError:
        at = now
    return f"drift-{at.strftime(naming.TIMESTAMP_FORMAT)}"


def check(
    context: df.DurableOrchestrationContext, tick: Tick, now: datetime, summary: dict[str, Any]
) -> Generator[Any, Any, list[dict[str, Any]]]:
    """Run the check; record `drift` (targetId, outcome, version, ...) in the summary; return the
    `missing` entries (each carries its target) for the due queue."""
    summary["drift"] = []
    try:
        checked = yield context.call_activity_with_retry(
            "check_drift",
            QUERY_STEP,
            {
                "now": format_timestamp(now),
                "checkId": check_id(tick.tick, now),
                "inFlight": list(tick.in_flight or ()),
            },
        )
    except Exception as exc:
        summary["driftError"] = f"drift check failed: {step_error(exc)}"
        return []
    found = [e for e in checked.get("drift") or [] if isinstance(e, dict)]
    summary["drift"] = [{k: e[k] for k in SUMMARY_FIELDS if e.get(k) is not None} for e in found]
    # DriftDetected, published here (check_drift writes repairs; it does not publish). `unpublished`:
    # what a check_drift of an earlier release returned when its own publish failed, in older histories.
    found_events = checked.get("events") or checked.get("unpublished")
    if found_events:
        try:
            yield context.call_activity_with_retry("publish_events", PUBLISH_STEP, {"events": found_events})
        except Exception as exc:
            summary["driftError"] = f"DriftDetected not published: {step_error(exc)}"
    return [e for e in found if e.get("outcome") == "missing" and isinstance(e.get("target"), dict)]


def with_missing(queue: list[dict[str, Any]], missing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The due queue plus every target whose key is gone (reason `drift: key missing`); a target already
    queued keeps its place and reason."""
    queued = {item["targetId"] for item in queue}
    added = [
        {"targetId": e["targetId"], "target": e["target"], "reason": MISSING_REASON, "currentKeyName": e.get("keyName")}
        for e in missing
        if e["targetId"] not in queued
    ]
    return [*queue, *added]
