"""Runs one activity function the way the Python worker does, in a worker thread.

Input: the action's JSON text, decoded by the SDK's own ``ActivityTriggerConverter`` and passed as the
keyword named by the trigger. Output: the converter's JSON encoding, which becomes TaskCompleted.Result.
Failures are reported exactly as raised (I1: nothing is added — no input, no stack, no locals).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from dataclasses import dataclass

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from devhost.app_loader import FunctionInfo


@dataclass(frozen=True)
class ActivityOutcome:
    succeeded: bool
    result: str | None = None  # JSON text, when succeeded
    reason: str = ""  # TaskFailed.Reason
    details: str | None = None  # TaskFailed.Details
    error_type: str = ""  # for logs (never the message: it could carry a value)


def exception_type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def failure(activity_name: str, message: str, type_name: str) -> ActivityOutcome:
    return ActivityOutcome(
        succeeded=False,
        reason=f"Activity function '{activity_name}' failed: {message}",
        details=json.dumps({"ClassName": type_name, "Message": message}),
        error_type=type_name,
    )


def run_activity(info: FunctionInfo | None, name: str, input_text: str | None) -> ActivityOutcome:
    if info is None or info.trigger_type != "activityTrigger":
        return failure(name, f"Activity function '{name}' does not exist.", "FunctionFailedException")
    try:
        value = (
            ActivityTriggerConverter.decode(meta.Datum(input_text, "json"), trigger_metadata=None)
            if input_text is not None
            else None
        )
        returned = info.user_function(**{info.trigger_param: value})
        if inspect.isawaitable(returned):
            # Async activities run to completion on this worker thread's own loop, so a slow or
            # blocking one never stalls the host's loop (which serves the HTTP API and emulators).
            returned = asyncio.run(_await(returned))
        encoded = ActivityTriggerConverter.encode(returned, expected_type=None)
    except Exception as exc:
        return failure(info.name, str(exc) or type(exc).__name__, exception_type_name(exc))
    return ActivityOutcome(succeeded=True, result=encoded.value)


async def _await(awaitable: object) -> object:
    return await awaitable  # type: ignore[misc]
