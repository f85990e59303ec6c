"""Runs one activity function through the worker, from one of the engine's activity threads.

Input: the action's JSON text as ``TypedData.json``; the worker runtime's ``ActivityTriggerConverter``
decodes it for the keyword named by the trigger and encodes the return value, which becomes
TaskCompleted.Result. A failure is reported as the Durable extension reports it
(azure-functions-durable-extension, ``src/WebJobs.Extensions.DurableTask/Listener/TaskActivityShim.cs``):
Reason ``Activity function '<name>' failed: <the host's RpcException message>``, Details the serialized
exception. Nothing is added to what the worker said (I1: no input, no locals).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from devhost.app_loader import FunctionInfo, LoadedApp
from devhost.invoke import error_type, inputs_for
from devhost.worker.protos import protos

RPC_EXCEPTION = "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException"


@dataclass(frozen=True)
class ActivityOutcome:
    succeeded: bool
    result: str | None = None  # JSON text, when succeeded
    reason: str = ""  # TaskFailed.Reason
    details: str | None = None  # TaskFailed.Details
    error_type: str = ""  # for logs (never the message: it could carry a value)


def failure(activity_name: str, message: str, type_name: str, class_name: str | None = None) -> ActivityOutcome:
    return ActivityOutcome(
        succeeded=False,
        reason=f"Activity function '{activity_name}' failed: {message}",
        details=json.dumps({"ClassName": class_name or type_name, "Message": message}),
        error_type=type_name,
    )


def run_activity(app: LoadedApp, info: FunctionInfo | None, name: str, input_text: str | None) -> ActivityOutcome:
    if info is None or info.trigger_type != "activityTrigger":
        return failure(name, f"Activity function '{name}' does not exist.", "FunctionFailedException")
    data = protos.TypedData(json=input_text if input_text is not None else "null")
    try:
        inputs = inputs_for(info, data, app.client_binding() if app.client_binding else None)
    except RuntimeError as exc:
        return failure(info.name, str(exc), "InvalidOperationException")
    answer = app.worker.invoke_sync(info.function_id, inputs)
    if not answer.succeeded:
        return failure(info.name, answer.host_error, error_type(answer), RPC_EXCEPTION)
    value = answer.return_value
    kind = value.WhichOneof("data") if value is not None else None
    return ActivityOutcome(succeeded=True, result=getattr(value, kind) if kind in ("json", "string") else "null")
