"""The devhost durable engine, driven over HTTP by the unmodified Python DurableOrchestrationClient."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from devhost.app_loader import load_app
from devhost.durable.episode import PROTOCOL, call_orchestrator
from devhost.durable.events import EventType, parse_time
from devhost.durable.replay import replay_actions
from tests.devhost_durable_harness import DURABLE_APP, MASTER_KEY, SYSTEM_KEY, durable_host, run

E = EventType


def types(history: list[dict]) -> list[int]:
    return [e["EventType"] for e in history]


def without_episode_markers(history: list[dict]) -> list[tuple[int, int | None]]:
    """(EventType, task id) of every event but OrchestratorStarted/Completed."""
    skip = {E.ORCHESTRATOR_STARTED, E.ORCHESTRATOR_COMPLETED}
    out = []
    for e in history:
        if e["EventType"] in skip:
            continue
        task_id = e.get("TaskScheduledId", e.get("TimerId", e["EventId"] if e["EventId"] >= 0 else None))
        out.append((e["EventType"], task_id))
    return out


def test_activity_sequence_completes_with_output_custom_status_and_dtfx_history(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            instance_id = await host.client.start_new("sequence", None, ["Tokyo", "Seattle"])
            status = await host.wait_for(instance_id)
            assert status.runtime_status.name == "Completed"
            assert status.output == ["Hello Tokyo", "Hello Seattle"]
            assert status.custom_status == {"done": 2}
            assert status.input_ == ["Tokyo", "Seattle"]

            raw = host.engine.get_history(instance_id)
            assert types(raw) == [
                E.ORCHESTRATOR_STARTED, E.EXECUTION_STARTED, E.TASK_SCHEDULED, E.ORCHESTRATOR_COMPLETED,
                E.ORCHESTRATOR_STARTED, E.TASK_COMPLETED, E.TASK_SCHEDULED, E.ORCHESTRATOR_COMPLETED,
                E.ORCHESTRATOR_STARTED, E.TASK_COMPLETED, E.EXECUTION_COMPLETED, E.ORCHESTRATOR_COMPLETED,
            ]  # fmt: skip
            started = raw[1]
            assert started["Version"] == "" and started["Name"] == "sequence"
            assert started["OrchestrationInstance"]["InstanceId"] == instance_id
            scheduled = [e for e in raw if e["EventType"] == E.TASK_SCHEDULED]
            assert [(e["EventId"], e["Name"], e["Input"]) for e in scheduled] == [
                (0, "hello", '"Tokyo"'),
                (1, "hello", '"Seattle"'),
            ]
            completed = [e for e in raw if e["EventType"] == E.TASK_COMPLETED]
            assert [(e["EventId"], e["TaskScheduledId"], e["Result"]) for e in completed] == [
                (-1, 0, '"Hello Tokyo"'),
                (-1, 1, '"Hello Seattle"'),
            ]

            detailed = await host.client.get_status(instance_id, show_history=True, show_history_output=True)
            friendly = detailed.historyEvents
            assert [e["EventType"] for e in friendly] == [
                "ExecutionStarted",
                "TaskCompleted",
                "TaskCompleted",
                "ExecutionCompleted",
            ]
            assert friendly[1]["FunctionName"] == "hello" and friendly[1]["Result"] == "Hello Tokyo"
            assert friendly[-1]["OrchestrationStatus"] == "Completed"
            assert detailed.history is None  # the SDK leaves .history empty; the events are in historyEvents

    run(scenario())


def test_replaying_the_stored_history_through_the_entry_point_reproduces_the_actions(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[dict], str]:
        async with durable_host(tmp_path) as host:
            instance_id = await host.client.start_new("fanout", None, [1, 2, 3])
            status = await host.wait_for(instance_id)
            assert status.output == [2, 4, 6]
            return host.engine.get_history(instance_id), instance_id

    history, instance_id = run(scenario())
    app = load_app(DURABLE_APP)
    orchestrator = app.get("fanout")
    assert orchestrator is not None
    payload = {
        "history": [{**e, "IsPlayed": True} for e in history],
        "input": "[1, 2, 3]",
        "instanceId": instance_id,
        "isReplaying": True,
        "parentInstanceId": None,
        **PROTOCOL,
    }
    state, error = call_orchestrator(app, orchestrator, json.dumps(payload))  # through the worker runtime
    app.close()
    assert error is None
    assert state["isDone"] is True and state["output"] == [2, 4, 6]
    (when_all,) = state["actions"][0]
    assert when_all["actionType"] == 12
    assert [(a["functionName"], a["input"]) for a in when_all["compoundActions"]] == [
        ("double_async", "1"),
        ("double_async", "2"),
        ("double_async", "3"),
    ]
    scheduled = [(e["EventId"], e["Name"], e["Input"]) for e in history if e["EventType"] == E.TASK_SCHEDULED]
    assert scheduled == [(0, "double_async", "1"), (1, "double_async", "2"), (2, "double_async", "3")]
    execution_id = history[1]["OrchestrationInstance"]["ExecutionId"]
    assert replay_actions(state["actions"][0], history, execution_id).new_work == []


def test_retried_activity_has_the_real_hosts_history_shape(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            spec = {"key": "twice", "fail_times": 2, "attempts": 3}
            instance_id = await host.client.start_new("retrying", None, spec)
            status = await host.wait_for(instance_id)
            assert status.output == "ok after 3 attempts"
            raw = host.engine.get_history(instance_id)
            assert without_episode_markers(raw) == [
                (E.EXECUTION_STARTED, None),
                (E.TASK_SCHEDULED, 0),
                (E.TASK_FAILED, 0),
                (E.TIMER_CREATED, 1),
                (E.TIMER_FIRED, 1),
                (E.TASK_SCHEDULED, 2),
                (E.TASK_FAILED, 2),
                (E.TIMER_CREATED, 3),
                (E.TIMER_FIRED, 3),
                (E.TASK_SCHEDULED, 4),
                (E.TASK_COMPLETED, 4),
                (E.EXECUTION_COMPLETED, None),
            ]
            failure = next(e for e in raw if e["EventType"] == E.TASK_FAILED)
            # As the Durable extension reports a worker's failure: its prefix, then the host's RpcException text.
            host_error = "Result: Failure\nException: ValueError: flaky attempt 1 failed\nStack: "
            assert failure["Reason"].startswith(f"Activity function 'flaky' failed: {host_error}")
            details = json.loads(failure["Details"])
            assert details["ClassName"] == "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException"
            assert details["Message"].startswith(host_error)
            # the back-off is the first retry interval (60 s), measured on the orchestration's clock
            created = next(e for e in raw if e["EventType"] == E.TIMER_CREATED)
            failed_episode_start = raw[raw.index(failure) - 1]
            assert failed_episode_start["EventType"] == E.ORCHESTRATOR_STARTED
            delay = _seconds_between(failed_episode_start["Timestamp"], created["FireAt"])
            assert delay == pytest.approx(60, abs=0.001)

    run(scenario())


def test_exhausted_retries_surface_only_what_the_activity_raised(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            spec = {"key": "input-marker-7f3a", "fail_times": 9, "attempts": 2}
            instance_id = await host.client.start_new("retrying", None, spec)
            status = await host.wait_for(instance_id)
            raw = host.engine.get_history(instance_id)
            # after the last failed attempt one more back-off timer fires before the failure surfaces
            assert without_episode_markers(raw)[-4:] == [
                (E.TASK_FAILED, 2),
                (E.TIMER_CREATED, 3),
                (E.TIMER_FIRED, 3),
                (E.EXECUTION_COMPLETED, None),
            ]
            seen = status.output["failed"]
            assert seen.startswith(
                "Activity function 'flaky' failed: Result: Failure\nException: ValueError: flaky attempt 2 failed\n"
            )
            assert "input-marker-7f3a" not in seen  # nothing of the activity's input is added (I1)
            # The worker adds its stack trace (file, line and source text; never a local's value), as on Azure.
            assert "\nStack: Traceback (most recent call last):" in seen

    run(scenario())


def test_virtual_clock_completes_a_seven_day_timer_in_well_under_a_second(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            before = host.engine.clock.now()
            began = time.monotonic()
            instance_id = await host.client.start_new("sleeper", None, 7)
            status = await host.wait_for(instance_id)
            elapsed = time.monotonic() - began
            assert status.output == pytest.approx(7 * 86400, abs=5)
            assert elapsed < 1.0
            assert (host.engine.clock.now() - before).days >= 7
            timers = [e for e in host.engine.get_history(instance_id) if e["EventType"] == E.TIMER_CREATED]
            assert len(timers) == 2  # a V3 long timer: 3 days, then the rest

    run(scenario())


def test_external_event_beats_the_deadline_when_auto_advance_is_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            status, clock = await host.admin("POST", "/admin/devhost/clock", json={"autoAdvance": False})
            assert status == 200 and clock["autoAdvance"] is False
            status, clock = await host.admin("GET", "/admin/devhost/clock")
            assert status == 200 and clock["autoAdvance"] is False and clock["mode"] == "virtual"
            instance_id = await host.client.start_new("approval", None, 24)
            await host.wait_for_custom_status(instance_id, "waiting for approval")
            await asyncio.sleep(0.3)  # longer than the idle grace: the clock must not have skipped
            assert (await host.client.get_status(instance_id)).runtime_status.name == "Running"
            await host.client.raise_event(instance_id, "Approval", {"by": "alice"})
            status = await host.wait_for(instance_id)
            # the Python client double-encodes event data: the orchestrator receives JSON text
            assert status.output == {"approved": True, "payload": {"by": "alice"}, "raw_type": "str"}
            assert host.engine.store is not None and host.engine.store.pending_timers() == []  # canceled: dropped

    run(scenario())


def test_advancing_the_clock_fires_the_deadline(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            await host.admin("POST", "/admin/devhost/clock", json={"autoAdvance": False})
            instance_id = await host.client.start_new("approval", None, 24)
            await host.wait_for_custom_status(instance_id, "waiting for approval")
            code, clock = await host.admin("POST", "/admin/devhost/clock", json={"advanceBy": 25 * 3600})
            assert code == 200 and clock["autoAdvance"] is False
            status = await host.wait_for(instance_id)
            assert status.output == {"approved": False}
            with pytest.raises(Exception, match="is gone"):
                await host.client.raise_event(instance_id, "Approval", {"late": True})

    run(scenario())


def test_clock_control_is_key_protected_and_validated(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            async with host.http.get(f"{host.url}/admin/devhost/clock") as response:
                assert response.status == 401
            async with host.http.get(f"{host.url}/admin/devhost/clock", params={"code": SYSTEM_KEY}) as response:
                assert response.status == 401  # the durable system key is not an admin key
            assert (await host.admin("POST", "/admin/devhost/clock", json={"advanceTo": "2000-01-01T00:00:00Z"}))[
                0
            ] == 400
            assert (await host.admin("POST", "/admin/devhost/clock", json={"advanceBy": -5}))[0] == 400
            assert (await host.admin("POST", "/admin/devhost/clock", json={"rewind": 1}))[0] == 400
            target = "2099-06-01T12:00:00Z"
            status, clock = await host.admin(
                "POST", "/admin/devhost/clock", params={"code": MASTER_KEY}, json={"advanceTo": target}
            )
            assert status == 200 and clock["now"].startswith("2099-06-01T12:00:0")
            assert host.engine.clock.now().year == 2099

    run(scenario())


def test_real_clock_refuses_to_move(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path, clock="real") as host:
            status, clock = await host.admin("GET", "/admin/devhost/clock")
            assert status == 200 and clock["mode"] == "real"
            assert (await host.admin("POST", "/admin/devhost/clock", json={"advanceBy": 60}))[0] == 400

    run(scenario())


def test_sub_orchestration_runs_under_the_given_instance_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            instance_id = await host.client.start_new("parent", "order-42", ["Oslo"])
            status = await host.wait_for(instance_id)
            assert status.output == {"child": "order-42-child", "result": ["Hello Oslo"]}
            child = await host.client.get_status("order-42-child")
            assert child.runtime_status.name == "Completed" and child.output == ["Hello Oslo"]
            raw = host.engine.get_history("order-42")
            created = next(e for e in raw if e["EventType"] == E.SUB_ORCHESTRATION_INSTANCE_CREATED)
            assert (created["EventId"], created["Name"], created["InstanceId"]) == (0, "sequence", "order-42-child")
            completed = next(e for e in raw if e["EventType"] == E.SUB_ORCHESTRATION_INSTANCE_COMPLETED)
            assert completed["TaskScheduledId"] == 0 and json.loads(completed["Result"]) == ["Hello Oslo"]
            child_start = host.engine.get_history("order-42-child")[1]
            assert child_start["ParentInstance"]["OrchestrationInstance"]["InstanceId"] == "order-42"

    run(scenario())


def test_a_failed_sub_orchestration_fails_the_parents_task(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            instance_id = await host.client.start_new("parent_of_failing", "pf", None)
            status = await host.wait_for(instance_id)
            message = status.output["child_failed"]
            assert message.startswith("Orchestrator function 'fails' failed: orchestrator gave up")
            assert (await host.client.get_status("pf-child")).runtime_status.name == "Failed"

    run(scenario())


def test_a_sub_orchestration_started_onto_a_running_instance_is_dropped_and_the_parent_never_hears(
    tmp_path: Path,
) -> None:
    """DTFx swallows a second ExecutionStarted for an instance that has one (TaskOrchestrationDispatcher,
    ReconcileMessagesWithState): the running instance goes on untouched and the parent's task never
    completes, neither with a result nor with a failure. A parent must never wait on such a start."""

    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            await host.client.start_new("waiter", "busy", None)
            await host.wait_for("busy", statuses={"Running"})
            await host.client.start_new("parent_onto", "late-parent", "busy")
            await host.wait_for("late-parent", statuses={"Running"})
            await host.engine.wait_for_idle()
            parent = host.engine.get_history("late-parent")
            assert [e for e in parent if e["EventType"] == E.SUB_ORCHESTRATION_INSTANCE_CREATED]
            assert not [
                e
                for e in parent
                if e["EventType"] in (E.SUB_ORCHESTRATION_INSTANCE_COMPLETED, E.SUB_ORCHESTRATION_INSTANCE_FAILED)
            ]
            busy = host.engine.get_history("busy")
            assert [e["EventType"] for e in busy].count(E.EXECUTION_STARTED) == 1  # the duplicate never landed
            assert (await host.client.get_status("late-parent")).runtime_status.name == "Running"
            await host.client.raise_event("busy", "Go", "done")
            assert (await host.wait_for("busy")).runtime_status.name == "Completed"
            assert (await host.client.get_status("late-parent")).runtime_status.name == "Running"  # still never told

    run(scenario())


def test_calling_an_activity_the_app_lacks_fails_the_orchestration(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            instance_id = await host.client.start_new("calls_missing_activity", None, None)
            status = await host.wait_for(instance_id)
            assert status.runtime_status.name == "Failed"
            assert "The function 'no_such_activity' doesn't exist" in status.output

    run(scenario())


def test_continue_as_new_starts_a_fresh_history_with_the_new_input(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            instance_id = await host.client.start_new("counter", None, {"value": 1, "round": 0, "rounds": 3})
            status = await host.wait_for(instance_id)
            assert status.output == {"value": 8, "round": 2}
            raw = host.engine.get_history(instance_id)
            assert types(raw).count(E.EXECUTION_STARTED) == 1
            assert json.loads(raw[1]["Input"]) == {"value": 4, "round": 2, "rounds": 3}
            assert status.input_ == {"value": 4, "round": 2, "rounds": 3}

    run(scenario())


def test_uncaught_orchestrator_exception_marks_the_instance_failed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            instance_id = await host.client.start_new("fails", None, None)
            status = await host.wait_for(instance_id)
            assert status.runtime_status.name == "Failed"
            assert status.output == "Orchestrator function 'fails' failed: orchestrator gave up"
            with pytest.raises(Exception, match="is gone"):
                await host.client.raise_event(instance_id, "Anything", 1)

    run(scenario())


def test_raise_event_answers_404_for_unknown_and_400_for_non_json(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            with pytest.raises(Exception, match="No instance with ID nobody found"):
                await host.client.raise_event("nobody", "Go", 1)
            instance_id = await host.client.start_new("waiter", None, None)
            await host.wait_for(instance_id, {"Running"})
            url = f"{host.rpc_url}instances/{instance_id}/raiseEvent/Go"
            async with host.http.post(url, data="not json", headers={"Content-Type": "text/plain"}) as response:
                assert response.status == 400
            async with host.http.post(url, data="{not json", headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 400
            await host.client.raise_event(instance_id, "Go", [1, 2])
            assert (await host.wait_for(instance_id)).output == "[1, 2]"

    run(scenario())


def test_terminate_and_the_instance_exists_rule(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            instance_id = await host.client.start_new("waiter", "singleton", None)
            assert instance_id == "singleton"
            await host.wait_for(instance_id, {"Running"})
            with pytest.raises(Exception, match="OrchestrationAlreadyExistsException"):
                await host.client.start_new("waiter", "singleton", None)

            await host.client.terminate(instance_id, "superseded by emergency")
            status = await host.wait_for(instance_id)
            assert status.runtime_status.name == "Terminated"
            assert status.output == "superseded by emergency"
            raw = host.engine.get_history(instance_id)
            assert types(raw)[-4:] == [
                E.ORCHESTRATOR_STARTED,
                E.EXECUTION_TERMINATED,
                E.EXECUTION_COMPLETED,
                E.ORCHESTRATOR_COMPLETED,
            ]
            await host.client.terminate(instance_id, "again")  # 410 Gone is accepted by the client
            with pytest.raises(Exception, match="No instance with ID 'ghost' found"):
                await host.client.terminate("ghost", "x")

            # a finished id is silently replaced
            assert await host.client.start_new("sequence", "singleton", ["again"]) == "singleton"
            status = await host.wait_for("singleton")
            assert (status.name, status.output) == ("sequence", ["Hello again"])

    run(scenario())


def test_terminated_parent_leaves_a_running_child_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            await host.client.start_new("parent_of_waiter", "p1", None)
            await host.wait_for("p1-child", {"Running"})
            await host.client.terminate("p1", "stop")
            assert (await host.wait_for("p1")).runtime_status.name == "Terminated"
            assert (await host.client.get_status("p1-child")).runtime_status.name == "Running"

    run(scenario())


def test_a_terminated_child_fails_its_parents_task_with_the_reason(tmp_path: Path) -> None:
    """DTFx sends SubOrchestrationInstanceFailed to the parent of a terminated child (TaskOrchestrationDispatcher
    .ProcessWorkflowCompletedTaskDecision); the Python SDK raises it in the parent as the task's failure."""

    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            await host.client.start_new("parent_of_waiter", "p2", None)
            await host.wait_for("p2-child", {"Running"})
            await host.client.terminate("p2-child", "stopped by the operator")
            assert (await host.wait_for("p2-child")).runtime_status.name == "Terminated"
            parent = await host.wait_for("p2")
            assert parent.runtime_status.name == "Failed" and "stopped by the operator" in str(parent.output)

    run(scenario())


def test_unknown_orchestrator_is_a_400_the_client_reports(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            with pytest.raises(Exception, match="The function 'nope' doesn't exist"):
                await host.client.start_new("nope", None, None)
            # names are case-insensitive, like the host's function lookup
            instance_id = await host.client.start_new("SEQUENCE", None, ["x"])
            assert (await host.wait_for(instance_id)).name == "sequence"

    run(scenario())


def test_purge_and_status_queries(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            done = await host.client.start_new("sequence", "batch-done", ["a"])
            await host.wait_for(done)
            running = await host.client.start_new("waiter", "batch-running", None)
            await host.wait_for(running, {"Running"})
            await host.wait_for(await host.client.start_new("waiter", "other-running", None), {"Running"})

            everything = await host.client.get_status_all()
            assert {s.instance_id for s in everything} >= {"batch-done", "batch-running", "other-running"}
            batch = await host.client.get_status_by(instance_id_prefix="batch-")
            assert sorted(s.instance_id for s in batch) == ["batch-done", "batch-running"]
            running_now = await host.client.get_status_by(runtime_status=[OrchestrationRuntimeStatus.Running])
            assert sorted(s.instance_id for s in running_now) == ["batch-running", "other-running"]

            assert (await host.client.purge_instance_history("batch-running")).instances_deleted == 0
            assert (await host.client.purge_instance_history("batch-done")).instances_deleted == 1
            assert not await host.client.get_status("batch-done")  # 404: a falsy status
            assert (await host.client.purge_instance_history("batch-done")).instances_deleted == 0

            await host.client.terminate("other-running", "done with it")
            await host.wait_for("other-running")
            since = host.engine.clock.now() - timedelta(hours=1)
            purged = await host.client.purge_instance_history_by(
                since, None, [OrchestrationRuntimeStatus.Terminated, OrchestrationRuntimeStatus.Completed]
            )
            assert purged.instances_deleted == 1
            remaining = {s.instance_id for s in await host.client.get_status_all()}
            assert "other-running" not in remaining and "batch-running" in remaining

    run(scenario())


def test_the_rpc_api_reads_a_start_body_as_json_whatever_its_content_type(tmp_path: Path) -> None:
    """As the extension's HandleStartOrchestratorRequestAsync: no content-type check, the body must be JSON."""

    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            plain = {"Content-Type": "text/plain"}
            url = f"{host.rpc_url}orchestrators/sequence/plain-1"
            async with host.http.post(url, data='["Rome"]', headers=plain) as response:
                assert response.status == 202
            assert (await host.wait_for("plain-1")).output == ["Hello Rome"]
            async with host.http.post(f"{host.rpc_url}orchestrators/sequence/plain-2", data="Rome", headers=plain) as r:
                assert r.status == 400 and (await r.json())["Message"] == "Invalid JSON content"
            assert host.engine.get_instance("plain-2") is None

    run(scenario())


def test_public_http_api_needs_the_system_key_and_keeps_raw_json_events(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path) as host:
            instance_id = await host.client.start_new("waiter", "public-1", None)
            await host.wait_for(instance_id, {"Running"})
            base = f"{host.url}/runtime/webhooks/durabletask/instances/{instance_id}"
            async with host.http.get(base) as response:
                assert response.status == 401
            async with host.http.get(base, params={"code": "wrong"}) as response:
                assert response.status == 401
            async with host.http.get(base, params={"code": SYSTEM_KEY}) as response:
                assert response.status == 202
                assert (await response.json())["runtimeStatus"] == "Running"
            async with host.http.post(f"{base}/raiseEvent/Go", json={"ok": 1}) as response:
                assert response.status == 401
            async with host.http.post(f"{base}/raiseEvent/Go", params={"code": SYSTEM_KEY}, json={"ok": 1}) as resp:
                assert resp.status == 202
            status = await host.wait_for(instance_id)
            assert status.output == {"ok": 1}  # a plain JSON body arrives as a value, not as text

            # the management URLs handed to the app point at the public API and carry the system key
            urls = host.client.create_http_management_payload(instance_id)
            assert urls["statusQueryGetUri"].startswith(base)
            assert f"code={SYSTEM_KEY}" in urls["statusQueryGetUri"]
            async with host.http.get(urls["statusQueryGetUri"]) as response:
                assert response.status == 200 and (await response.json())["output"] == {"ok": 1}

            start = f"{host.url}/runtime/webhooks/durabletask/orchestrators/sequence/public-2"
            async with host.http.post(start, params={"code": MASTER_KEY}, json=["Rome"]) as response:
                assert response.status == 202
                assert (await response.json())["id"] == "public-2"
            assert (await host.wait_for("public-2")).output == ["Hello Rome"]
            async with host.http.post(f"{base}/terminate", params={"code": SYSTEM_KEY, "reason": "x"}) as response:
                assert response.status == 410

    run(scenario())


def test_activities_run_on_a_bounded_pool(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with durable_host(tmp_path, max_activity_workers=2) as host:
            instance_id = await host.client.start_new("parallel_sleeps", None, {"count": 4, "sleep": 0.2})
            status = await host.wait_for(instance_id)
            assert status.output["max_concurrent"] == 2

    run(scenario())


def _seconds_between(start: str, end: str) -> float:
    return (parse_time(end) - parse_time(start)).total_seconds()
