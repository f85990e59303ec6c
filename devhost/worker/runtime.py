"""Azure's Python worker runtime (azure-functions-runtime), hosted in-process the way the proxy worker does.

From Python 3.13 Azure splits the worker: a proxy owns the gRPC stream with the host and hands each
request to the runtime's ``*_request`` coroutines, passing the protobuf module at worker init
(``properties={"protos": ..., "host": ...}``). devhost plays the proxy without the gRPC hop: it builds
the same ``StreamingMessage`` requests and awaits the same coroutines, so indexing (``worker_init``,
then ``functions_metadata``), binding validation (``function_load``) and every invocation's trigger
conversion and return value go through Azure's code.

The runtime runs on its own thread and event loop, standing in for the worker process: a user coroutine
that blocks stalls that loop, not devhost's (which also serves the emulators), as a blocking function
stalls the worker and not the host on Azure. The runtime keeps its registry in module globals, so one
app per process, as one worker serves one app.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sys
import threading
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import azure_functions_runtime as runtime
from azure_functions_runtime import functions, handle_event

from devhost.worker.protos import protos

log = logging.getLogger("devhost.worker")

HOST_VERSION = "4.1044.0"  # what devhost reports as the host's version (the runtime only logs it)
SCRIPT_FILE = "function_app.py"


class WorkerInitError(RuntimeError):
    """The runtime refused the app (an import error, a binding it cannot load): on Azure no function runs."""

    def __init__(self, step: str, worker_message: str) -> None:
        super().__init__(f"Azure's Python worker runtime failed at {step}: {worker_message}")
        self.step = step
        self.worker_message = worker_message  # the runtime's RpcException message: "<Type>: <text>"


@dataclass(frozen=True)
class WorkerRequest:
    """What the proxy worker hands the runtime: the message, and the properties it needs."""

    name: str
    request: Any  # a StreamingMessage
    properties: dict[str, Any]


@dataclass(frozen=True)
class Invocation:
    """One invocation's answer, in the protocol's terms."""

    succeeded: bool
    return_value: Any | None  # TypedData, or None
    exception_message: str = ""  # RpcException.message: "<Type>: <text>"
    stack_trace: str = ""

    @property
    def host_error(self) -> str:
        """The message the host's RpcException carries (azure-functions-host,
        src/WebJobs.Script/Workers/Rpc/RpcException.cs): what the Durable extension puts after
        "Activity function 'x' failed: " and what a caller of the host sees."""
        return f"Result: Failure\nException: {self.exception_message}\nStack: {self.stack_trace}"


def runtime_version() -> str:
    return metadata.version("azure-functions-runtime")


class WorkerRuntime:
    """The worker: start() indexes and loads the app, invoke() runs one function through the runtime."""

    _active: WorkerRuntime | None = None  # one worker per process at a time (the runtime's state is global)

    def __init__(self, app_dir: str | Path) -> None:
        self.app_dir = Path(app_dir).resolve()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="python-worker", daemon=True)
        self.metadata: list[Any] = []  # RpcFunctionMetadata, as the runtime reported them

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        if not self._thread.is_alive() or self._loop.is_closed():
            coro.close()
            raise RuntimeError(f"the worker for {self.app_dir} has stopped")  # not a wait that never ends
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _request(self, name: str, **content: Any) -> WorkerRequest:
        message = protos.StreamingMessage(request_id=str(uuid.uuid4()), **content)
        return WorkerRequest(name=name, request=message, properties={"protos": protos, "host": "127.0.0.1"})

    def start(self) -> list[Any]:
        """Worker init (which indexes the app), functions metadata, then a function load per function."""
        self._claim_process()
        self._thread.start()
        # The proxy worker puts the app root first on sys.path: `function_app` must be this app's, not
        # one of an app loaded earlier in this process.
        if str(self.app_dir) in sys.path:
            sys.path.remove(str(self.app_dir))
        sys.path.insert(0, str(self.app_dir))
        runtime.start_threadpool_executor()
        init = self._request(
            "WorkerInitRequest",
            worker_init_request=protos.WorkerInitRequest(
                host_version=HOST_VERSION,
                function_app_directory=str(self.app_dir),
                worker_directory=str(Path(runtime.__file__).parent),
            ),
        )
        response = self._submit(runtime.worker_init_request(init)).result()
        _raise_on_failure(response.result, "worker init (indexing the app)")
        listing = self._request(
            "FunctionsMetadataRequest",
            functions_metadata_request=protos.FunctionsMetadataRequest(function_app_directory=str(self.app_dir)),
        )
        meta = self._submit(runtime.functions_metadata_request(listing)).result()
        _raise_on_failure(meta.result, "functions metadata")
        self.metadata = list(meta.function_metadata_results)
        for fn in self.metadata:
            load = self._request(
                "FunctionLoadRequest",
                function_load_request=protos.FunctionLoadRequest(function_id=fn.function_id, metadata=fn),
            )
            loaded = self._submit(runtime.function_load_request(load)).result()
            _raise_on_failure(loaded.result, f"function load of {fn.name}")
        return self.metadata

    def _claim_process(self) -> None:
        """Start as a fresh worker process would. The runtime keeps its function registry in module
        globals and the app module stays imported, so a second load in one process (the in-process
        engine tests load apps one after another) would otherwise index stale functions, or fail on
        ``get_functions()`` being called twice on one app object. Two workers cannot share that
        registry, so a new worker replaces the one before it, as a restarted worker process would."""
        cls = type(self)
        if cls._active is not None and cls._active is not self:
            log.info("a new worker for %s replaces the one for %s", self.app_dir, cls._active.app_dir)
            cls._active.close()
        cls._active = self
        handle_event._functions = functions.Registry()
        handle_event._metadata_result = None
        sys.modules.pop(SCRIPT_FILE.removesuffix(".py"), None)

    def _invocation(self, function_id: str, inputs: Iterable[tuple[str, Any]]) -> WorkerRequest:
        request = protos.InvocationRequest(
            invocation_id=str(uuid.uuid4()),
            function_id=function_id,
            input_data=[protos.ParameterBinding(name=name, data=data) for name, data in inputs],
        )
        return self._request("InvocationRequest", invocation_request=request)

    async def invoke(self, function_id: str, inputs: Iterable[tuple[str, Any]]) -> Invocation:
        """From devhost's loop: the worker's answer, awaited without blocking devhost."""
        future = self._submit(runtime.invocation_request(self._invocation(function_id, inputs)))
        return _answer(await asyncio.wrap_future(future))

    def invoke_sync(self, function_id: str, inputs: Iterable[tuple[str, Any]]) -> Invocation:
        """From a devhost thread (the durable engine's episode and activity pools)."""
        future = self._submit(runtime.invocation_request(self._invocation(function_id, inputs)))
        return _answer(future.result())

    def close(self) -> None:
        """Stop the worker: invocations still running on its loop are cancelled (their callers get a
        CancelledError instead of waiting forever); the runtime's thread pool, which is global, is stopped
        only by the worker that owns it now."""
        owner = type(self)._active is self
        if owner:
            type(self)._active = None
            runtime.stop_threadpool_executor()
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._cancel_all_and_stop)
            self._thread.join(timeout=5)

    def _cancel_all_and_stop(self) -> None:
        """Stop only once the cancelled invocations have finished: a cancelled task handles its
        CancelledError on a later turn of the loop, and a loop stopped first would leave its caller's
        future unresolved (an activity thread of the in-process stack then waited forever)."""
        tasks = list(asyncio.all_tasks(self._loop))
        for task in tasks:
            task.cancel()

        async def settle() -> None:
            if tasks:
                await asyncio.wait(tasks, timeout=2)
            self._loop.stop()

        self._loop.create_task(settle())


def _answer(response: Any) -> Invocation:
    result = response.result
    if result.status == protos.StatusResult.Success:
        value = response.return_value if response.HasField("return_value") else None
        return Invocation(succeeded=True, return_value=value)
    return Invocation(
        succeeded=False,
        return_value=None,
        exception_message=result.exception.message,
        stack_trace=result.exception.stack_trace,
    )


def _raise_on_failure(result: Any, step: str) -> None:
    if result.status != protos.StatusResult.Success:
        raise WorkerInitError(step, result.exception.message)


def raw_bindings(fn: Any) -> list[dict[str, Any]]:
    """The bindings as the host reads them from the worker's metadata (function.json shaped)."""
    return [json.loads(raw) for raw in fn.raw_bindings]
