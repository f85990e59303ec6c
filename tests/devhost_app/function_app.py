"""A test-only Durable Functions app for the devhost durable engine (not the product).

Activities leave traces under ``$DEVHOST_TEST_STATE_DIR`` (one line per execution in
``executions.log``, attempt counters for ``flaky``) so tests can count real executions across a
crashed and restarted host.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


def _state_dir() -> Path:
    path = Path(os.environ.get("DEVHOST_TEST_STATE_DIR", "."))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _log_execution(line: str) -> None:
    with open(_state_dir() / "executions.log", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


# -- HTTP starter (durable client) ---------------------------------------------------------------
@app.route(route="orchestrators/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    instance_id = await client.start_new(
        req.route_params["name"], req.params.get("instanceId"), json.loads(body) if body else None
    )
    return client.create_check_status_response(req, instance_id)


# -- activities -----------------------------------------------------------------------------------
@app.activity_trigger(input_name="name")
def hello(name: str) -> str:
    return f"Hello {name}"


@app.activity_trigger(input_name="spec")
def flaky(spec: dict) -> str:
    """Fails ``spec['fail_times']`` times (counted in a file per ``spec['key']``), then succeeds."""
    counter = _state_dir() / f"flaky-{spec['key']}.count"
    attempts = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(attempts))
    if attempts <= int(spec["fail_times"]):
        raise ValueError(f"flaky attempt {attempts} failed")
    return f"ok after {attempts} attempts"


@app.activity_trigger(input_name="step")
def record(step: dict) -> int:
    """Logs its execution, optionally sleeps (so a test can kill the host mid-activity)."""
    _log_execution(f"{step['run']} {step['index']}")
    if step.get("sleep"):
        time.sleep(float(step["sleep"]))
    return int(step["index"]) * 10


_concurrency = {"now": 0, "max": 0}
_concurrency_lock = threading.Lock()


@app.activity_trigger(input_name="seconds")
def concurrency_probe(seconds: float) -> int:
    """Sleeps and reports how many probes ran at once (activities share this process)."""
    with _concurrency_lock:
        _concurrency["now"] += 1
        _concurrency["max"] = max(_concurrency["max"], _concurrency["now"])
    time.sleep(seconds)
    with _concurrency_lock:
        _concurrency["now"] -= 1
        return _concurrency["max"]


@app.activity_trigger(input_name="value")
async def double_async(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


# -- orchestrators --------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def sequence(context: df.DurableOrchestrationContext):
    names = context.get_input() or ["Tokyo", "Seattle"]
    results = []
    for index, name in enumerate(names):
        context.set_custom_status({"done": index})
        results.append((yield context.call_activity("hello", name)))
    context.set_custom_status({"done": len(names)})
    return results


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=60_000, max_number_of_attempts=spec["attempts"])
    try:
        return (yield context.call_activity_with_retry("flaky", options, spec))
    except Exception as exc:
        return {"failed": str(exc)}


@app.orchestration_trigger(context_name="context")
def sleeper(context: df.DurableOrchestrationContext):
    days = context.get_input()
    started = context.current_utc_datetime
    yield context.create_timer(started + timedelta(days=days))
    return (context.current_utc_datetime - started).total_seconds()


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    """Waits for an "Approval" event or a deadline, whichever comes first."""
    hours = context.get_input() or 24
    deadline = context.create_timer(context.current_utc_datetime + timedelta(hours=hours))
    approved = context.wait_for_external_event("Approval")
    context.set_custom_status("waiting for approval")
    winner = yield context.task_any([approved, deadline])
    if winner == approved:
        deadline.cancel()
        payload = approved.result
        decoded = json.loads(payload) if isinstance(payload, str) else payload
        return {"approved": True, "payload": decoded, "raw_type": type(payload).__name__}
    return {"approved": False}


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    child_id = f"{context.instance_id}-child"
    result = yield context.call_sub_orchestrator("sequence", context.get_input(), child_id)
    return {"child": child_id, "result": result}


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    state = context.get_input()
    value = (yield context.call_activity("double_async", state["value"])) if state["value"] else 1
    if state["round"] + 1 < state["rounds"]:
        context.continue_as_new({"value": value, "round": state["round"] + 1, "rounds": state["rounds"]})
        return None
    return {"value": value, "round": state["round"]}


@app.orchestration_trigger(context_name="context")
def fanout(context: df.DurableOrchestrationContext):
    values = context.get_input()
    return (yield context.task_all([context.call_activity("double_async", v) for v in values]))


@app.orchestration_trigger(context_name="context")
def parallel_sleeps(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    seen = yield context.task_all([context.call_activity("concurrency_probe", spec["sleep"])] * spec["count"])
    return {"max_concurrent": max(seen)}


@app.orchestration_trigger(context_name="context")
def parent_of_waiter(context: df.DurableOrchestrationContext):
    return (yield context.call_sub_orchestrator("waiter", None, f"{context.instance_id}-child"))


@app.orchestration_trigger(context_name="context")
def parent_of_failing(context: df.DurableOrchestrationContext):
    try:
        yield context.call_sub_orchestrator("fails", None, f"{context.instance_id}-child")
    except Exception as exc:
        return {"child_failed": str(exc)}
    return {"child_failed": None}


@app.orchestration_trigger(context_name="context")
def calls_missing_activity(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("no_such_activity", 1))


@app.orchestration_trigger(context_name="context")
def steps(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    total = 0
    for index in range(spec["count"]):
        total += yield context.call_activity(
            "record", {"run": context.instance_id, "index": index, "sleep": spec.get("sleep", 0)}
        )
    return total


@app.orchestration_trigger(context_name="context")
def fails(context: df.DurableOrchestrationContext):
    yield context.call_activity("hello", "before failing")
    raise RuntimeError("orchestrator gave up")


@app.orchestration_trigger(context_name="context")
def waiter(context: df.DurableOrchestrationContext):
    """Waits forever for "Go" (for terminate and instance-exists tests)."""
    payload = yield context.wait_for_external_event("Go")
    return payload


@app.orchestration_trigger(context_name="context")
def parent_onto(context: df.DurableOrchestrationContext):
    """Starts a "waiter" sub-orchestration onto the instance id it is given (duplicate-start tests)."""
    return (yield context.call_sub_orchestrator("waiter", None, context.get_input()))
