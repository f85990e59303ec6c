"""The proxy worker's half of the stream: each host request to the runtime's coroutine, each answer back.

From Python 3.13 Azure's worker is a proxy (azure-functions-python-worker, ``workers/proxy_worker/
dispatcher.py``) that owns the gRPC stream and hands every ``StreamingMessage`` to the library worker,
``azure-functions-runtime``: it reads the message's ``content`` field, wraps the message in a
``WorkerRequest`` (``properties={"protos": ..., "host": ...}`` only for worker init, which is also when it
starts the runtime's thread pool), awaits the runtime's ``*_request`` coroutine and sends its answer back
as the matching ``*_response`` field. devhost does the same here, for the worker on its own process
(``devhost.worker.proxy``) and on a thread of devhost's (``devhost.worker.runtime``), so both go through
one path into Azure's code.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure_functions_runtime as runtime

from devhost.worker.protos import protos

HOST = "127.0.0.1"


@dataclass(frozen=True)
class WorkerRequest:
    """What the proxy worker hands the runtime: the message, and the properties worker init needs."""

    name: str
    request: Any  # a StreamingMessage
    properties: dict[str, Any] | None = None


@dataclass(frozen=True)
class Route:
    name: str  # the WorkerRequest name the proxy gives it
    handler: Callable[[WorkerRequest], Awaitable[Any]]
    answer: str  # the StreamingMessage field the response goes back in


ROUTES: dict[str, Route] = {
    "worker_init_request": Route("WorkerInitRequest", runtime.worker_init_request, "worker_init_response"),
    "functions_metadata_request": Route(
        "WorkerMetadataRequest", runtime.functions_metadata_request, "function_metadata_response"
    ),
    "function_load_request": Route("FunctionLoadRequest", runtime.function_load_request, "function_load_response"),
    "invocation_request": Route("FunctionInvocationRequest", runtime.invocation_request, "invocation_response"),
}


def put_app_first(app_dir: Path) -> None:
    """The proxy worker puts the app root first on sys.path: `function_app` must be this app's, not one
    of an app loaded earlier in this process."""
    if str(app_dir) in sys.path:
        sys.path.remove(str(app_dir))
    sys.path.insert(0, str(app_dir))


async def dispatch(message: Any) -> Any:
    """One host request through the runtime; the answer as the StreamingMessage the proxy sends back."""
    kind = message.WhichOneof("content")
    route = ROUTES.get(kind or "")
    if route is None:
        raise ValueError(f"the worker does not take a {kind or 'empty'} message")
    properties = None
    if kind == "worker_init_request":
        runtime.start_threadpool_executor()
        properties = {"protos": protos, "host": HOST}
    response = await route.handler(WorkerRequest(route.name, message, properties))
    return protos.StreamingMessage(request_id=message.request_id, **{route.answer: response})


def failure_answer(message: Any, error: BaseException) -> Any | None:
    """The answer to a request the runtime raised on instead of answering: a failed status (the error's
    type only, never its text), so the host's caller fails instead of waiting for an answer that never
    comes; None for a message nobody waits on."""
    route = ROUTES.get(message.WhichOneof("content"))
    if route is None:
        return None
    answer = protos.StreamingMessage(request_id=message.request_id)
    response = getattr(answer, route.answer)
    response.result.status = protos.StatusResult.Failure
    response.result.exception.message = f"{type(error).__name__}: the worker could not take this request"
    if route.answer == "invocation_response":
        response.invocation_id = message.invocation_request.invocation_id
    return answer
