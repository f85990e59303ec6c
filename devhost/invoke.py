"""Invoking a function through the worker, with the host's Executing/Executed logs.

The caller hands over the trigger payload as the host would put it on the wire (a ``TypedData``); the
worker runtime converts it, calls the function and encodes its return value. Failures are logged with
the function name and exception type only: exception text may carry a secret (I1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from devhost.app_loader import FunctionInfo, LoadedApp
from devhost.worker.protos import protos
from devhost.worker.runtime import Invocation

# The host's reason for a call through its APIs, HTTP triggers and admin runs alike (azure-functions-host's
# Application Insights end-to-end tests expect "Executing 'Functions.<name>' (Reason='This function was
# programmatically called via the host APIs.', Id=...)" for an HTTP call). Never the request path: it is
# the caller's, and may carry anything, a key included.
HOST_CALL_REASON = "This function was programmatically called via the host APIs."
log = logging.getLogger("devhost.host")


class FunctionFailed(Exception):
    """The worker reported a failed invocation; ``invocation`` holds what it said."""

    def __init__(self, invocation: Invocation) -> None:
        super().__init__(invocation.host_error)
        self.invocation = invocation


def error_type(invocation: Invocation) -> str:
    """The exception's type name, from the worker's "<Type>: <message>" (never the message itself)."""
    return invocation.exception_message.split(":", 1)[0].strip() or "Exception"


def inputs_for(fn: FunctionInfo, trigger: Any, client_binding: str | None) -> list[tuple[str, Any]]:
    """The invocation's input bindings: the trigger, and the durable client's JSON when the function has one."""
    inputs = [(fn.trigger_param, trigger)]
    if fn.durable_client_param:
        if client_binding is None:
            log.error("Function '%s' needs a durable client, but the durable engine is not running", fn.name)
            raise RuntimeError(f"function '{fn.name}' needs a durable client, but the durable engine is not running")
        inputs.append((fn.durable_client_param, protos.TypedData(string=client_binding)))
    return inputs


class Invoker:
    """Runs functions through the worker; ``client_binding`` yields the durable client JSON when needed."""

    def __init__(self, loaded: LoadedApp, client_binding: Callable[[], str] | None = None) -> None:
        self._loaded = loaded
        self._client_binding = client_binding

    async def call(self, fn: FunctionInfo, trigger: Any, reason: str) -> Invocation:
        """Invoke ``fn``; raises FunctionFailed (after logging name and type) when the function raised."""
        binding = self._client_binding() if (fn.durable_client_param and self._client_binding) else None
        inputs = inputs_for(fn, trigger, binding)  # RuntimeError (naming the function) without an engine
        started = time.perf_counter()
        log.info("Executing 'Functions.%s' (Reason='%s')", fn.name, reason)
        result = await self._loaded.worker.invoke(fn.function_id, inputs)
        elapsed = (time.perf_counter() - started) * 1000
        if not result.succeeded:
            log.error("Executed 'Functions.%s' (Failed, Duration=%.0fms): %s", fn.name, elapsed, error_type(result))
            raise FunctionFailed(result)
        log.info("Executed 'Functions.%s' (Succeeded, Duration=%.0fms)", fn.name, elapsed)
        return result
