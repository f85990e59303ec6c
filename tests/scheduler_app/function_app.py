"""Test-only app: the real scheduler with its real start and progress activities, over N stand-in
rotations, to measure the tick itself (fan-out concurrency, history per execution) at scale quickly.

SCHEDULER_TARGETS (a number) makes find_due_targets report that many due targets; each stand-in
rotation holds its target for SCHEDULER_OVERLAP_SECONDS of durable time, then completes.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from activities.rotation_starts import rotation_progress, start_rotation
from orchestrations.scheduler import bp as scheduler

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(scheduler)

for _real in (start_rotation, rotation_progress):
    app.activity_trigger(input_name="request")(app.durable_client_input(client_name="client")(_real))


@app.activity_trigger(input_name="request")
def find_due_targets(request: dict) -> dict[str, Any]:
    count = int(os.environ.get("SCHEDULER_TARGETS", "10"))
    overlap = f"PT{int(os.environ.get('SCHEDULER_OVERLAP_SECONDS', '3600'))}S"
    due = [
        {
            "targetId": f"scale-{i:04d}",
            "reason": "interval-elapsed",
            "target": {"id": f"scale-{i:04d}", "overlap": overlap, "monitoring": {"watch": "PT0S"}},
        }
        for i in range(count)
    ]
    return {"due": due, "notDue": [], "skipped": []}


@app.activity_trigger(input_name="request")
def check_drift(request: dict) -> dict[str, Any]:
    return {"drift": []}


@app.orchestration_trigger(context_name="context")
def rotation_orchestrator(context: df.DurableOrchestrationContext):
    """Holds its target for the overlap, then completes as a rotation does."""
    request = context.get_input() or {}
    overlap = timedelta(seconds=int(os.environ.get("SCHEDULER_OVERLAP_SECONDS", "3600")))
    yield context.create_timer(context.current_utc_datetime + overlap)
    return {"outcome": "completed", "rotationId": request.get("rotationId")}
