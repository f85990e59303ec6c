"""Azure's Python worker runtime (azure-functions-runtime), driven the way the host drives its worker.

The host side of the worker, in two forms with one interface (``start``, ``invoke``, ``invoke_sync``,
``close``): ``WorkerProcess`` (``devhost.worker.process``), the worker on a process of its own as on
Azure, which ``devhost serve`` uses; and ``WorkerRuntime`` here, the worker on a thread of devhost's own
process, which the in-process test stack uses (tests/inprocess_stack.py). Both build the same
``StreamingMessage`` requests and hand them to the same proxy path into the runtime
(``devhost.worker.dispatch``), so indexing (``worker_init``, then ``functions_metadata``), binding
validation (``function_load``) and every invocation's trigger conversion and return value go through
Azure's code.

On a thread the runtime has its own event loop, standing in for the worker process: a user coroutine
that blocks stalls that loop, not devhost's. The runtime keeps its registry in module globals, so one app
per process, as one worker serves one app.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sys
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import azure_functions_runtime as runtime
from azure_functions_runtime import functions, handle_event

from devhost.worker.dispatch import ROUTES, dispatch, put_app_first
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


class WorkerHost(ABC):
    """The host's side of one worker: start() indexes and loads the app, invoke() runs one function."""

    def __init__(self, app_dir: str | Path) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.metadata: list[Any] = []  # RpcFunctionMetadata, as the runtime reported them

    @abstractmethod
    def _submit(self, message: Any) -> concurrent.futures.Future[Any]:
        """Hand one request to the worker; the future holds the StreamingMessage it answers with."""

    @abstractmethod
    def _launch(self) -> None:
        """Make the worker ready to take its first request."""

    @abstractmethod
    def close(self) -> None:
        """Stop the worker: callers still waiting get an error (CancelledError, WorkerExited), never a
        wait that does not end."""

    def _request(self, **content: Any) -> Any:
        return protos.StreamingMessage(request_id=str(uuid.uuid4()), **content)

    def _call(self, message: Any) -> Any:
        """A start-up request, answered before the next one goes."""
        answer = self._submit(message).result()
        return getattr(answer, ROUTES[message.WhichOneof("content")].answer)

    def start(self) -> list[Any]:
        """Worker init (which indexes the app), functions metadata, then a function load per function."""
        self._launch()
        init = self._request(
            worker_init_request=protos.WorkerInitRequest(
                host_version=HOST_VERSION,
                function_app_directory=str(self.app_dir),
                worker_directory=str(Path(runtime.__file__).parent),
            ),
        )
        _raise_on_failure(self._call(init).result, "worker init (indexing the app)")
        listing = self._request(
            functions_metadata_request=protos.FunctionsMetadataRequest(function_app_directory=str(self.app_dir)),
        )
        meta = self._call(listing)
        _raise_on_failure(meta.result, "functions metadata")
        self.metadata = list(meta.function_metadata_results)
        for fn in self.metadata:
            load = self._request(
                function_load_request=protos.FunctionLoadRequest(function_id=fn.function_id, metadata=fn),
            )
            _raise_on_failure(self._call(load).result, f"function load of {fn.name}")
        return self.metadata

    def _invocation(self, function_id: str, inputs: Iterable[tuple[str, Any]]) -> Any:
        request = protos.InvocationRequest(
            invocation_id=str(uuid.uuid4()),
            function_id=function_id,
            input_data=[protos.ParameterBinding(name=name, data=data) for name, data in inputs],
        )
        return self._request(invocation_request=request)

    async def invoke(self, function_id: str, inputs: Iterable[tuple[str, Any]]) -> Invocation:
        """From devhost's loop: the worker's answer, awaited without blocking devhost."""
        future = self._submit(self._invocation(function_id, inputs))
        return _answer((await asyncio.wrap_future(future)).invocation_response)

    def invoke_sync(self, function_id: str, inputs: Iterable[tuple[str, Any]]) -> Invocation:
        """From a devhost thread (the durable engine's episode and activity pools)."""
        return _answer(self._submit(self._invocation(function_id, inputs)).result().invocation_response)


class WorkerRuntime(WorkerHost):
    """The worker on its own thread and event loop inside devhost's process."""

    _active: WorkerRuntime | None = None  # one worker per process at a time (the runtime's state is global)

    def __init__(self, app_dir: str | Path) -> None:
        super().__init__(app_dir)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="python-worker", daemon=True)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _run(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        if not self._thread.is_alive() or self._loop.is_closed():
            coro.close()
            raise RuntimeError(f"the worker for {self.app_dir} has stopped")  # not a wait that never ends
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _submit(self, message: Any) -> concurrent.futures.Future[Any]:
        return self._run(dispatch(message))

    def _launch(self) -> None:
        self._claim_process()
        self._thread.start()
        put_app_first(self.app_dir)

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
