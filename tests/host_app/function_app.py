"""A test-only app exercising every trigger kind the devhost shell serves (not the real app)."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

_calls: list[dict[str, Any]] = []
_lock = threading.Lock()


def _record(kind: str, **details: Any) -> None:
    with _lock:
        _calls.append({"kind": kind, **details})


def _json(value: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(value), status_code=status, mimetype="application/json")


def _describe(req: func.HttpRequest) -> dict[str, Any]:
    return {
        "method": req.method,
        "url": req.url,
        "route": dict(req.route_params),
        "params": dict(req.params),
        "body": req.get_body().decode("utf-8", "replace"),
    }


@app.route(route="items/{id:int}/{name?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"function": "item", **_describe(req)})


@app.route(route="items/latest", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def latest_item(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"function": "latest_item", **_describe(req)})


@app.route(route="files/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def files(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"function": "files", **_describe(req)})


@app.route(route="echo", methods=["POST", "PUT"], auth_level=func.AuthLevel.ANONYMOUS)
async def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        req.get_body(),
        status_code=201,
        headers={"X-Echo-Method": req.method},
        mimetype=req.headers.get("content-type", "application/octet-stream"),
    )


@app.route(route="whoami", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def whoami(req: func.HttpRequest) -> func.HttpResponse:
    """What Easy Auth told the app: the principal headers and WEBSITE_AUTH_ENABLED."""
    principal = req.headers.get("x-ms-client-principal")
    decoded = json.loads(base64.b64decode(principal)) if principal else None
    seen = {k: v for k, v in req.headers.items() if k.startswith(("x-ms-client-principal", "x-ms-token-"))}
    seen.pop("x-ms-client-principal", None)
    return _json(
        {
            "authEnabled": os.environ.get("WEBSITE_AUTH_ENABLED"),
            "principal": decoded,
            "headers": seen,
            "authorization": "authorization" in req.headers,
        }
    )


@app.route(route="secured", methods=["GET"])
def secured(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"function": "secured"})


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"function": "admin_only"})


@app.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the key value is s3cr3t-VALUE-do-not-leak")


@app.route(route="worker", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def worker(req: func.HttpRequest) -> func.HttpResponse:
    logging.getLogger("host_app.worker").warning("answered from process %d", os.getpid())
    return _json({"pid": os.getpid()})


@app.route(route="worker/exit", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def worker_exit(req: func.HttpRequest) -> func.HttpResponse:
    os._exit(3)  # the worker process dies mid-invocation, as a crash in native code would


@app.route(route="settings/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def setting(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"value": os.environ.get(req.route_params["name"])})


@app.route(route="calls", methods=["GET", "DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
def calls(req: func.HttpRequest) -> func.HttpResponse:
    """What the non-HTTP functions saw, so out-of-process tests can check it."""
    with _lock:
        if req.method == "DELETE":
            _calls.clear()
        return _json(list(_calls))


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer")
def tick(timer: func.TimerRequest) -> None:
    _record("tick", past_due=timer.past_due, status=timer.schedule_status, type=type(timer).__name__)


@app.timer_trigger(schedule="%FAST_SCHEDULE%", arg_name="timer", use_monitor=False)
def fast_tick(timer: func.TimerRequest) -> None:
    _record("fast_tick", past_due=timer.past_due)


@app.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    is_cloud = isinstance(event, func.CloudEvent)
    _record(
        "event",
        cls=type(event).__name__,
        id=event.id,
        type=event.type if is_cloud else event.event_type,
        subject=event.subject,
        data=event.get_json(),
    )


@app.event_grid_trigger(arg_name="event")
def failing_event(event: func.EventGridEvent) -> None:
    raise ValueError("event handler broke with s3cr3t-VALUE")


# -- durable: a client binding, an orchestrator and an activity ------------------------------------


@app.route(route="orchestrators/{name}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.durable_client_input(client_name="client")
async def start_orchestration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = await client.start_new(req.route_params["name"], None, req.get_json())
    return client.create_check_status_response(req, instance_id)


@app.orchestration_trigger(context_name="context")
def hello_orchestrator(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    greeting = yield context.call_activity("say_hello", context.get_input())
    return greeting


@app.activity_trigger(input_name="name")
def say_hello(name: str) -> str:
    _record("say_hello", name=name)
    return f"Hello, {name}"
