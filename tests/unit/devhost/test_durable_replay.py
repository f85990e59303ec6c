"""How the engine decides which actions are new: task ids, retries, compound tasks, events (DTFx rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devhost.durable import events as ev
from devhost.durable.replay import ReplayError, replay_actions

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def start(seconds: float = 0) -> list[dict]:
    return [
        ev.orchestrator_started(at(seconds)),
        ev.execution_started(at(seconds), name="o", instance_id="i", execution_id="x1", input_text=None),
    ]


def activity(name: str, retry: dict | None = None) -> dict:
    action = {"actionType": 0 if retry is None else 1, "functionName": name, "input": "null"}
    if retry is not None:
        action["retryOptions"] = retry
    return action


def timer(fire_at: datetime, canceled: bool = False) -> dict:
    return {"actionType": 5, "fireAt": ev.fmt_time(fire_at), "isCanceled": canceled}


def event(name: str) -> dict:
    return {"actionType": 6, "externalEventName": name, "reason": "ExternalEvent"}


def new_ids(actions: list[dict], history: list[dict]) -> list[tuple[int, str, str | None]]:
    return [(w.task_id, w.kind, w.name) for w in replay_actions(actions, history, "x1").new_work]


def test_retry_backoff_is_capped_by_the_max_interval_and_timed_from_the_failing_episode() -> None:
    retry = {
        "firstRetryIntervalInMilliseconds": 1000,
        "maxNumberOfAttempts": 4,
        "backoffCoefficient": 2,
        "maxRetryIntervalInMilliseconds": 3000,
    }
    actions = [{"actionType": 12, "compoundActions": [activity("a", retry)]}]
    history = [*start(), ev.task_scheduled(at(0), 0, "a", "null")]
    fire_times = []
    for attempt, (failed_at, timer_id) in enumerate([(10, 1), (20, 3), (30, 5)]):
        history += [ev.orchestrator_started(at(failed_at)), ev.task_failed(at(failed_at), timer_id - 1, "r", "d")]
        (work,) = replay_actions(actions, history, "x1").new_work
        assert (work.task_id, work.kind) == (timer_id, "timer"), attempt
        fire_times.append((work.fire_at - at(failed_at)).total_seconds())
        history += [ev.timer_created(at(failed_at), timer_id, work.fire_at)]
        history += [ev.orchestrator_started(work.fire_at), ev.timer_fired(work.fire_at, timer_id, "")]
        (retry_work,) = replay_actions(actions, history, "x1").new_work
        assert (retry_work.task_id, retry_work.kind, retry_work.name) == (timer_id + 1, "activity", "a")
        history += [ev.task_scheduled(work.fire_at, timer_id + 1, "a", "null")]
    assert fire_times == [1, 2, 3]  # 1 s, 2 s, then 4 s capped at 3 s


def test_retry_timeout_gives_up_without_another_timer() -> None:
    retry = {"firstRetryIntervalInMilliseconds": 1000, "maxNumberOfAttempts": 5, "retryTimeoutInMilliseconds": 5000}
    actions = [activity("a", retry), activity("after")]
    history = [*start(), ev.task_scheduled(at(0), 0, "a", "null")]
    history += [ev.orchestrator_started(at(9)), ev.task_failed(at(9), 0, "r", "d")]
    assert new_ids(actions, history) == [(1, "activity", "after")]


def test_when_all_children_take_consecutive_ids_and_the_next_action_waits_for_all_of_them() -> None:
    actions = [{"actionType": 12, "compoundActions": [activity("a"), activity("b")]}, activity("c")]
    assert new_ids(actions, start()) == [(0, "activity", "a"), (1, "activity", "b")]
    history = [*start(), ev.task_scheduled(at(0), 0, "a", None), ev.task_scheduled(at(0), 1, "b", None)]
    history += [ev.orchestrator_started(at(1)), ev.task_failed(at(1), 0, "r", "d")]
    assert new_ids(actions, history) == []  # the shim still awaits the whole WhenAll
    history += [ev.orchestrator_started(at(2)), ev.task_completed(at(2), 1, "1")]
    assert new_ids(actions, history) == [(2, "activity", "c")]


def test_when_any_event_wins_and_the_canceled_timer_keeps_its_id() -> None:
    deadline = at(3600)
    actions = [{"actionType": 11, "compoundActions": [event("Approval"), timer(deadline, canceled=True)]}]
    actions.append(activity("next"))
    history = [*start(), ev.timer_created(at(0), 0, deadline)]
    history += [ev.orchestrator_started(at(5)), ev.event_raised(at(5), "Approval", '"yes"')]
    outcome = replay_actions(actions, history, "x1")
    assert [(w.task_id, w.name) for w in outcome.new_work] == [(1, "next")]
    assert outcome.canceled_timers == {0}


def test_in_a_when_any_loop_the_newest_wait_gets_the_event() -> None:
    first, second = at(60), at(120)
    actions = [
        {"actionType": 11, "compoundActions": [timer(first), event("Ack")]},
        {"actionType": 11, "compoundActions": [timer(second, canceled=True), event("Ack")]},
        activity("after"),
    ]
    history = [*start(), ev.timer_created(at(0), 0, first)]
    history += [ev.orchestrator_started(first), ev.timer_fired(first, 0, ""), ev.timer_created(first, 1, second)]
    history += [ev.orchestrator_started(at(90)), ev.event_raised(at(90), "ack", "1")]
    assert new_ids(actions, history) == [(2, "activity", "after")]


def test_an_event_raised_before_its_wait_is_buffered() -> None:
    actions = [activity("a"), event("Go"), activity("b")]
    history = [*start(), ev.task_scheduled(at(0), 0, "a", None)]
    history += [ev.orchestrator_started(at(1)), ev.event_raised(at(1), "Go", "1")]
    assert new_ids(actions, history) == []
    history += [ev.orchestrator_started(at(2)), ev.task_completed(at(2), 0, "1")]
    assert new_ids(actions, history) == [(1, "activity", "b")]


def test_sub_orchestration_without_an_id_gets_the_dtfx_default() -> None:
    actions = [{"actionType": 2, "functionName": "child", "input": "1", "instanceId": None, "version": None}]
    (work,) = replay_actions(actions, start(), "x1").new_work
    assert (work.task_id, work.kind, work.instance_id) == (0, "suborchestration", "x1:0")


def test_history_that_does_not_match_the_code_is_a_replay_error() -> None:
    history = [*start(), ev.task_scheduled(at(0), 0, "a", None)]
    with pytest.raises(ReplayError, match="non-deterministic"):
        replay_actions([timer(at(60))], history, "x1")


def test_calls_to_unknown_functions_are_rejected_when_first_scheduled() -> None:
    with pytest.raises(ReplayError, match="The function 'ghost' doesn't exist"):
        replay_actions([activity("ghost")], start(), "x1", known_function=lambda kind, name: name != "ghost")
    history = [*start(), ev.task_scheduled(at(0), 0, "ghost", None)]
    assert replay_actions([activity("ghost")], history, "x1", known_function=lambda k, n: False).new_work == []


def test_friendly_history_folds_scheduling_into_completions() -> None:
    history = [*start(), ev.task_scheduled(at(0), 0, "a", '"in"'), ev.orchestrator_completed(at(0))]
    history += [ev.orchestrator_started(at(1)), ev.task_completed(at(1), 0, '{"v": 1}')]
    history += [ev.execution_completed(at(1), ev.OrchestrationStatus.Completed, '"done"')]
    friendly = ev.friendly_history(history, show_output=True, show_input=True)
    assert [e["EventType"] for e in friendly] == ["ExecutionStarted", "TaskCompleted", "ExecutionCompleted"]
    assert friendly[1]["FunctionName"] == "a" and friendly[1]["Result"] == {"v": 1} and friendly[1]["Input"] == '"in"'
    assert "TaskScheduledId" not in friendly[1] and "EventId" not in friendly[1]
    quiet = ev.friendly_history(history, show_output=False, show_input=False)
    assert "Result" not in quiet[1] and "Input" not in quiet[0]
