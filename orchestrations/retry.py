"""Durable retry options per step, from the target's call budget (policy `calls.step`).

Inside an activity the SDK clients retry throttling and 5xx within the policy's call budget
(activities/call_budget.py); these cover what outlasts that — a target host down for minutes (ARM key
APIs need a healthy host), a Retry-After longer than the policy honours inside a call, a crash — with
durable timers that cost nothing while they wait. Built only from the orchestration input, so a replay
builds the same options.
"""

from __future__ import annotations

import re
from typing import Any

import azure.durable_functions as df

from rotation.policy import StepRetry, Target
from rotation.redaction import MAX_ERROR_MESSAGE, redact

# How the host words a failed activity (Reason of TaskFailed), around the activity's own message.
_ACTIVITY_FAILED = re.compile(r"^(?:Exception: )?Activity function '[^']*' failed:\s*")
_OUT_OF_PROC = re.compile(r"^\s*Exception: ", re.MULTILINE)
# The Python worker reports "<Type>: <message>" (azure_functions_runtime utils/tracing.serialize_exception).
_WORKER_TYPE = re.compile(r"^\w+: ")

QUERY_ATTEMPTS = 3  # reads and queries: a failure is reported (gate holds, adoption unknown), not fatal
VERIFY_ATTEMPTS = 2  # the probe already retries inside the activity; one more attempt covers a crash


class StepRetryOptions(df.RetryOptions):
    """RetryOptions with the back-off the Durable extension supports but the Python SDK does not send:
    `backoffCoefficient` and `maxRetryIntervalInMilliseconds` (the JavaScript SDK sends the same names)."""

    def __init__(self, retry: StepRetry, attempts: int | None = None) -> None:
        first_ms = max(int(retry.first_interval.total_seconds() * 1000), 1)
        super().__init__(first_ms, retry.attempts if attempts is None else min(attempts, retry.attempts))
        self.attempt_cap = attempts  # what kind of step this is: for_target() keeps it
        self.backoff_coefficient = retry.backoff
        self.max_retry_interval_in_milliseconds = max(int(retry.max_interval.total_seconds() * 1000), first_ms)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(super().to_json())
        data["backoffCoefficient"] = self.backoff_coefficient
        data["maxRetryIntervalInMilliseconds"] = self.max_retry_interval_in_milliseconds
        return data


def step_error(exc: BaseException) -> str:
    """Why a step failed, for the timeline, RotationFailed/RotationHeld and the log: the activity's own
    message (it names the operation and the fault, never a value) without the host's wrapping, so the
    part that matters is not cut off by the length cap."""
    raw = str(exc.args[0]) if exc.args else ""
    text = _ACTIVITY_FAILED.sub("", raw.strip(), count=1)
    if text.startswith("Result: Failure"):  # an out-of-process worker's report: its "Exception:" line
        found = _OUT_OF_PROC.search(text)
        text = _WORKER_TYPE.sub("", text[found.end() :], count=1) if found else text
    first = text.strip().splitlines()[0].strip() if text.strip() else type(exc).__name__
    first = redact(first)
    return first if len(first) <= MAX_ERROR_MESSAGE else first[: MAX_ERROR_MESSAGE - 3] + "..."


def for_target(options: df.RetryOptions, target: Target) -> df.RetryOptions:
    """`options` (one of the constants below: the kind of step) with the target's numbers."""
    if isinstance(options, StepRetryOptions):
        return StepRetryOptions(target.calls.step, options.attempt_cap)
    return options


def key_step(target: Target) -> StepRetryOptions:
    """Key operations on the target and Key Vault (provision, revoke, compensate)."""
    return StepRetryOptions(target.calls.step)


def publish_step(target: Target) -> StepRetryOptions:
    """Publishing: consumers depend on it; event ids make retries idempotent."""
    return StepRetryOptions(target.calls.step)


def query_step(target: Target) -> StepRetryOptions:
    return StepRetryOptions(target.calls.step, QUERY_ATTEMPTS)


def verify_step(target: Target) -> StepRetryOptions:
    return StepRetryOptions(target.calls.step, VERIFY_ATTEMPTS)


# Where no target is at hand (the scheduler's own steps): the built-in budget.
KEY_STEP = StepRetryOptions(StepRetry())
PUBLISH_STEP = StepRetryOptions(StepRetry())
QUERY_STEP = StepRetryOptions(StepRetry(), QUERY_ATTEMPTS)
VERIFY_STEP = StepRetryOptions(StepRetry(), VERIFY_ATTEMPTS)
