"""The call budget's pieces without a network: the policy's `calls` section (defaults, overrides, errors
naming the field), the durable retry options built from it, the give-up reason, and the probe's handling
of Retry-After and of a target that gives no verdict."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from activities import probe as probing
from orchestrations.retry import (
    KEY_STEP,
    QUERY_STEP,
    VERIFY_STEP,
    StepRetryOptions,
    for_target,
    query_step,
    step_error,
    verify_step,
)
from rotation.credential_store import ProbeResult, SecretValue
from rotation.policy import CallBudget, PolicyError, StepRetry, Target, parse_calls, parse_policy, parse_target

ROOT = Path(__file__).resolve().parents[3]
SUBSCRIPTION = "3f2b6c1e-8a4d-4e5f-9a7b-1c2d3e4f5a6b"
KEY_SHAPED = "q3VbK9xY2mN8pL4tR7wZ1aB5cD6eF0gH3iJ9kAzFuM2nP8sT1uVw4A=="


def target_json(**fields: Any) -> dict[str, Any]:
    return {
        "id": "orders-api",
        "functionApp": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Web/sites/orders",
        "keyScope": {"kind": "host"},
        "baseKeyName": "orders",
        "keyVault": {"vaultUrl": "https://kv.vault.azure.net", "secretName": "orders-key"},
        "monitoring": {"signal": "target-requests", "workspaceId": "6c1f0a2e-3d4b-4f5a-9b8c-7d6e5f4a3b2c"},
        **fields,
    }


def policy(defaults: dict[str, Any] | None = None, **fields: Any) -> Target:
    document: dict[str, Any] = {"version": 1, "targets": [target_json(**fields)]}
    if defaults is not None:
        document["defaults"] = defaults
    return parse_policy(document, environ={}).targets[0]


def problems(defaults: dict[str, Any] | None = None, **fields: Any) -> list[str]:
    with pytest.raises(PolicyError) as raised:
        policy(defaults, **fields)
    return [str(issue) for issue in raised.value.issues]


# -- the policy section --------------------------------------------------------------------------------


def test_the_built_in_budget_applies_and_travels_with_the_target() -> None:
    target = policy()
    assert target.calls == CallBudget()
    assert target.calls.connect_timeout == timedelta(seconds=10) and target.calls.read_timeout == timedelta(seconds=30)
    assert target.calls.retries == 3 and target.calls.max_retry_after == timedelta(seconds=60)
    assert target.to_json()["calls"]["step"] == {
        "attempts": 5,
        "firstInterval": "PT15S",
        "backoff": 2.0,
        "maxInterval": "PT2M",
    }
    assert parse_target(target.to_json()).calls == target.calls  # what an activity rebuilds from its input


def test_defaults_then_the_target_override_field_by_field() -> None:
    defaults = {"calls": {"retries": 5, "step": {"attempts": 8}}}
    target = policy(defaults, calls={"maxRetryAfter": "PT2M", "step": {"firstInterval": "PT30S"}})
    assert target.calls.retries == 5 and target.calls.max_retry_after == timedelta(minutes=2)
    assert target.calls.step == StepRetry(8, timedelta(seconds=30), 2.0, timedelta(minutes=2))
    assert target.calls.read_timeout == timedelta(seconds=30)  # untouched fields keep the built-in value


def test_a_bad_budget_is_refused_naming_the_target_and_the_field() -> None:
    found = problems(
        calls={
            "retries": 11,
            "readTimeout": "PT0.5S",
            "maxRetryAfter": "PT1H",
            "step": {"attempts": 0, "firstInterval": "PT5M", "maxInterval": "PT1M"},
            "retryAfter": "PT1M",
        }
    )
    assert 'targets[0] (id "orders-api"): calls.retries: must be at most 10' in found
    assert 'targets[0] (id "orders-api"): calls.retryAfter: is not a known field (check the spelling)' in found
    assert 'targets[0] (id "orders-api"): calls.step.attempts: must be at least 1' in found
    found = problems(calls={"readTimeout": "PT0.5S", "maxRetryAfter": "PT1H", "step": {"maxInterval": "PT10S"}})
    assert found == [
        'targets[0] (id "orders-api"): calls.readTimeout: must be at least 1 second',
        'targets[0] (id "orders-api"): calls.maxRetryAfter: must be at most 10 minutes',
        'targets[0] (id "orders-api"): calls.step.maxInterval: must be at least calls.step.firstInterval (15 seconds)',
    ]
    assert problems({"calls": {"callTimeout": "P1D"}}) == [
        'targets[0] (id "orders-api"): calls.callTimeout: must be at most 8 minutes'
    ]


def test_parse_calls_alone_names_the_field_and_round_trips() -> None:
    assert parse_calls(None) == CallBudget()
    budget = parse_calls({"retries": 0, "maxRetryAfter": "PT0S"})
    assert budget.retries == 0 and budget.max_retry_after == timedelta(0)
    assert parse_calls(budget.to_json()) == budget
    with pytest.raises(PolicyError, match=r"calls\.step\.backoff: must be at most 10"):
        parse_calls({"step": {"backoff": 11}})


def test_the_example_policy_shows_a_budget_that_validates() -> None:
    document = json.loads((ROOT / "config" / "rotation-policy.example.json").read_text())
    assert "calls" in document["defaults"]
    loaded = parse_policy(document, environ={})
    assert {t.calls for t in loaded} == {parse_calls(document["defaults"]["calls"])}


def test_the_default_give_up_takes_under_six_minutes_of_durable_waits() -> None:
    """The figure the docs quote: 5 attempts, timers of 15, 30, 60, 120 and 120 s (the last before the
    failure surfaces) — 345 s of durable timers, plus each attempt's own calls."""
    step = StepRetry()
    assert [step.interval(n).total_seconds() for n in range(1, 6)] == [15, 30, 60, 120, 120]
    assert step.waits() == timedelta(seconds=345)


# -- durable retry options -------------------------------------------------------------------------------


def test_step_retry_options_carry_backoff_and_ceiling_to_the_extension() -> None:
    target = policy(calls={"step": {"attempts": 7, "firstInterval": "PT2S", "backoff": 1.5, "maxInterval": "PT30S"}})
    options = for_target(KEY_STEP, target)
    assert options.to_json() == {
        "firstRetryIntervalInMilliseconds": 2000,
        "maxNumberOfAttempts": 7,
        "backoffCoefficient": 1.5,
        "maxRetryIntervalInMilliseconds": 30000,
    }
    assert for_target(QUERY_STEP, target).to_json()["maxNumberOfAttempts"] == 3
    assert for_target(VERIFY_STEP, target).to_json()["maxNumberOfAttempts"] == 2
    assert query_step(policy(calls={"step": {"attempts": 1}})).to_json()["maxNumberOfAttempts"] == 1
    assert verify_step(target).to_json() == for_target(VERIFY_STEP, target).to_json()
    assert KEY_STEP.to_json() == StepRetryOptions(StepRetry()).to_json()  # the scheduler's: built-in budget


def test_a_give_up_reason_is_the_activitys_message_without_the_hosts_wrapping() -> None:
    devhost = Exception("Activity function 'provision_new_key' failed: list host keys on /x: HTTP 503 \n {\"a\": 1}")
    assert step_error(devhost) == "list host keys on /x: HTTP 503"
    worker = Exception(
        "Activity function 'publish_events' failed:  Result: Failure\nException: SafeError: publish 2 event(s)"
        " to the topic: throttled\nStack:   File x"
    )
    assert step_error(worker) == "publish 2 event(s) to the topic: throttled"  # the type name dropped too
    long = Exception("Activity function 'x' failed: " + "a" * 400)
    assert len(step_error(long)) == 300 and step_error(long).endswith("...")
    assert KEY_SHAPED not in step_error(Exception(f"Activity function 'x' failed: bad {KEY_SHAPED}"))
    assert step_error(Exception()) == "Exception"


# -- the probe ---------------------------------------------------------------------------------------------


def probe_target(**calls: Any) -> Target:
    probe = {"path": "/api/health", "attempts": 4, "delay": "PT1S", "timeout": "PT5S"}
    return policy(probe=probe, calls=calls)


def scripted(*results: ProbeResult) -> Any:
    answers = list(results)

    def once(target: Target, value: SecretValue) -> ProbeResult:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return once


def test_retry_after_values_are_read_as_seconds_or_dates() -> None:
    assert probing.retry_after_seconds("7") == 7.0 and probing.retry_after_seconds("1.5") == 1.5
    assert probing.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # already past
    assert probing.retry_after_seconds("soon") is None and probing.retry_after_seconds(None) is None


def test_the_probe_waits_as_long_as_the_target_asks_within_the_cap() -> None:
    slept: list[float] = []
    once = scripted(ProbeResult(False, 429, "GET /api/health -> 429", 3.0), ProbeResult(True, 200, "ok"))
    outcome = probing.probe_until_accepted(probe_target(), SecretValue("v" * 40), once=once, sleep=slept.append)
    assert outcome.accepted and outcome.attempts == 2 and slept == [3.0]


def test_a_retry_after_over_the_cap_stops_the_probe_without_sleeping() -> None:
    slept: list[float] = []
    once = scripted(ProbeResult(False, 429, "GET /api/health -> 429", 120.0))
    target = probe_target(maxRetryAfter="PT30S")
    outcome = probing.probe_until_accepted(target, SecretValue("v" * 40), once=once, sleep=slept.append)
    assert not outcome.accepted and outcome.attempts == 1 and slept == []
    assert outcome.unavailable == (
        "probe of orders-api throttled: Retry-After 120 s exceeds the policy's calls.maxRetryAfter (30 s)"
        " (last: GET /api/health -> 429)"
    )


def test_only_401_and_403_count_as_a_refusal() -> None:
    value = SecretValue("v" * 40)
    refused = probing.probe_until_accepted(
        probe_target(), value, once=scripted(ProbeResult(False, 401, "-> 401")), sleep=lambda s: None
    )
    assert not refused.accepted and refused.unavailable is None and refused.attempts == 4
    down = probing.probe_until_accepted(
        probe_target(), value, once=scripted(ProbeResult(False, 503, "-> 503")), sleep=lambda s: None
    )
    assert not down.accepted and down.unavailable == "probe of orders-api no verdict after 4 attempt(s) (last: -> 503)"
    silent = probing.probe_until_accepted(
        probe_target(), value, once=scripted(ProbeResult(False, None, "ReadTimeout")), sleep=lambda s: None
    )
    assert silent.unavailable is not None and "ReadTimeout" in silent.unavailable
