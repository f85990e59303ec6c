"""Calling a user function the way the Python worker does, with the host's Executing/Executed logs.

Sync functions run in a thread pool (the worker's sync executor), async ones on the loop. Failures
are logged with the function name and exception type only: exception text may carry a secret (I1).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from devhost.app_loader import FunctionInfo

log = logging.getLogger("devhost.host")


class InvocationContext:
    """What the worker passes to a parameter named ``context`` (a duck-typed ``func.Context``)."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = function_directory
        self.thread_local_storage = threading.local()
        self.trace_context = None
        self.retry_context = None


def _wants_context(fn: FunctionInfo) -> bool:
    if fn.trigger_param == "context":
        return False
    target = getattr(fn.user_function, "client_function", fn.user_function)
    try:
        return "context" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


class Invoker:
    """Runs user functions; ``client_binding`` yields the durable client JSON when one is needed."""

    def __init__(self, app_root: str, client_binding: Callable[[], str] | None = None, max_workers: int = 16) -> None:
        self._app_root = app_root
        self._client_binding = client_binding
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="worker")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn: FunctionInfo, trigger_value: Any, reason: str) -> Any:
        """Invoke ``fn`` with its trigger payload; re-raises the user's exception after logging it."""
        kwargs: dict[str, Any] = {fn.trigger_param: trigger_value}
        context = InvocationContext(fn.name, str(self._app_root))
        if fn.durable_client_param:
            if self._client_binding is None:
                log.error("Function '%s' needs a durable client, but the durable engine is not running", fn.name)
                raise RuntimeError("durable client binding unavailable")
            kwargs[fn.durable_client_param] = self._client_binding()
        if _wants_context(fn):
            kwargs["context"] = context
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", fn.name, reason, context.invocation_id)
        started = time.perf_counter()
        try:
            if fn.is_async:
                result = await fn.user_function(**kwargs)
            else:
                loop = asyncio.get_running_loop()
                call = functools.partial(contextvars.copy_context().run, fn.user_function, **kwargs)
                result = await loop.run_in_executor(self._pool, call)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            elapsed = (time.perf_counter() - started) * 1000
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms): %s",
                fn.name,
                context.invocation_id,
                elapsed,
                type(exc).__name__,
            )
            raise
        elapsed = (time.perf_counter() - started) * 1000
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)", fn.name, context.invocation_id, elapsed)
        return result
