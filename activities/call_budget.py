"""The policy's call budget (rotation.policy.CallBudget) applied to azure-core clients.

azure-core's defaults suit a batch job, not a rotation: a 300 s read timeout, and a Retry-After honoured
however long it is — a throttled call would sleep for an hour inside an activity the host kills after
ten minutes. Here every call gets the policy's timeouts and retries, and a Retry-After longer than the
policy's `maxRetryAfter` (or a wait that would outlast `callTimeout`) ends the call at once with
CallGaveUp: a value-free message naming the fault, so the step's durable retry (a cheap durable timer)
takes over and, when that is exhausted too, the rotation reports why.

Imported only by activities/clients.py when a client is built (azure-core is not loaded at app start).
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

from rotation.policy import CallBudget
from rotation.redaction import SafeError, redact

BACKOFF_MAX = 120.0  # azure-core's own ceiling for one back-off wait
_HEADERS = RetryPolicy()  # reads Retry-After the way azure-core does (seconds, HTTP date, retry-after-ms)


class CallGaveUp(SafeError):
    """A call stopped before its retries ran out because the policy's budget says waiting is pointless.
    Deliberately not an AzureError: azure-core's retry loop must not catch and retry it."""


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _request(response: PipelineResponse[Any, Any] | None) -> str:
    """` [METHOD url-without-query]`, as safe_error_message names the request of an SDK error."""
    request = getattr(response, "http_request", None)
    method, url = getattr(request, "method", None), getattr(request, "url", None)
    if isinstance(method, str) and isinstance(url, str):
        return f" [{method} {url.split('?', 1)[0]}]"
    return ""


def retry_after(response: PipelineResponse[Any, Any]) -> float | None:
    """The answer's Retry-After (or retry-after-ms) in seconds, as azure-core reads it."""
    return _HEADERS.get_retry_after(response)


def check_retry_after(budget: CallBudget, response: PipelineResponse[Any, Any]) -> None:
    """Raise CallGaveUp when a failed answer asks for a longer wait than the policy honours."""
    status = response.http_response.status_code
    if status < 400:
        return
    wait = retry_after(response)
    cap = budget.max_retry_after.total_seconds()
    if wait is not None and wait > cap:
        message = f"throttled: Retry-After {_seconds(wait)} exceeds the policy's calls.maxRetryAfter ({_seconds(cap)})"
        raise CallGaveUp(redact(message + _request(response)), status)


class BoundedRetryPolicy(RetryPolicy[Any, Any]):  # its clients use either azure-core transport type
    """azure-core's RetryPolicy with the policy's numbers, a capped Retry-After and a deadline per call."""

    def __init__(self, budget: CallBudget, **kwargs: Any) -> None:
        self.budget = budget
        retries = budget.retries
        super().__init__(
            retry_total=retries,
            retry_connect=retries,
            retry_read=retries,
            retry_status=retries,
            retry_backoff_max=min(BACKOFF_MAX, budget.max_retry_after.total_seconds()),
            timeout=budget.call_timeout.total_seconds(),
            **kwargs,
        )

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["deadline"] = time.monotonic() + float(settings["timeout"])
        return settings

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        """Wait before the next try — unless the wait is longer than the policy allows: then give up now."""
        wait = None
        if response is not None:
            check_retry_after(self.budget, response)
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time(settings)
        left = settings["deadline"] - time.monotonic()
        if wait > left:
            after = f" after HTTP {response.http_response.status_code}" if response is not None else ""
            status = response.http_response.status_code if response is not None else None
            limit = _seconds(self.budget.call_timeout.total_seconds())
            message = f"gave up{after}: waiting {_seconds(round(wait, 1))} more would pass calls.callTimeout ({limit})"
            raise CallGaveUp(redact(message + _request(response)), status)
        super().sleep(settings, transport, response)


def client_kwargs(budget: CallBudget) -> dict[str, Any]:
    """Constructor keywords for an SDK client that takes them (ARM, Key Vault, Logs)."""
    return {"retry_policy": BoundedRetryPolicy(budget)}


def transport_kwargs(budget: CallBudget) -> dict[str, Any]:
    """The timeouts, for the client's own transport (a client given a transport passes none to it)."""
    return {
        "connection_timeout": budget.connect_timeout.total_seconds(),
        "read_timeout": budget.read_timeout.total_seconds(),
    }


def request_kwargs(budget: CallBudget) -> dict[str, Any]:
    """Per-request keywords with the same effect, for a client that drops its constructor keywords (Event
    Grid basic topics, quirk 5): its own RetryPolicy reads the numbers from the request, and the response
    hook enforces the Retry-After cap (it runs inside the retry loop, on every answer)."""

    def hook(response: PipelineResponse[Any, Any]) -> None:
        check_retry_after(budget, response)

    retries = budget.retries
    return {
        "retry_total": retries,
        "retry_connect": retries,
        "retry_read": retries,
        "retry_status": retries,
        "retry_backoff_max": min(BACKOFF_MAX, budget.max_retry_after.total_seconds()),
        "timeout": budget.call_timeout.total_seconds(),
        "connection_timeout": budget.connect_timeout.total_seconds(),
        "read_timeout": budget.read_timeout.total_seconds(),
        "raw_response_hook": hook,
    }
