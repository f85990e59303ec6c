"""Crash recovery: the engine in a subprocess, killed with SIGKILL mid-run and restarted on the same state.

What must hold whenever the kill lands: the run completes with the right output, every activity ran
at least once, and no activity whose completion was already recorded runs again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[3]
RUNNER = ROOT / "tests" / "devhost_durable_runner.py"
TASK_COMPLETED = 5


class EngineProcess:
    def __init__(self, tmp_path: Path) -> None:
        self.state = tmp_path / "state"
        self.app_state = tmp_path / "app-state"
        self.ready = tmp_path / "ready.json"
        self.log = tmp_path / "runner.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        self.ready.unlink(missing_ok=True)
        env = {**os.environ, "DEVHOST_TEST_STATE_DIR": str(self.app_state), "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(RUNNER), str(self.state), str(self.ready)], env=env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"runner did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)
        ready = json.loads(self.ready.read_text())
        self.url, self.rpc_url = ready["url"], ready["rpcBaseUrl"]

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no cleanup of any kind
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def start_orchestration(self, name: str, instance_id: str, value: object) -> None:
        # what DurableOrchestrationClient.start_new sends: the JSON input, JSON-encoded again
        response = requests.post(f"{self.rpc_url}orchestrators/{name}/{instance_id}", json=json.dumps(value))
        assert response.status_code == 202, response.text

    def status(self, instance_id: str) -> dict:
        return requests.get(f"{self.rpc_url}instances/{instance_id}", timeout=10).json()

    def wait_for_completion(self, instance_id: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(instance_id)
            if status["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{instance_id}: {status}\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def executions(self) -> Counter[int]:
        path = self.app_state / "executions.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return Counter(int(line.split()[1]) for line in lines)

    def recorded_completions(self, instance_id: str) -> set[int]:
        """Task ids whose TaskCompleted is durable: in history, or queued for the next episode."""
        db = sqlite3.connect(self.state / "durable.sqlite3")
        try:
            rows = db.execute("SELECT event FROM history WHERE instance_id = ?", (instance_id,)).fetchall()
            rows += db.execute("SELECT body FROM messages WHERE instance_id = ?", (instance_id,)).fetchall()
        finally:
            db.close()
        events = [json.loads(r[0]) for r in rows]
        return {e["TaskScheduledId"] for e in events if e.get("EventType") == TASK_COMPLETED}


@contextmanager
def engine_process(tmp_path: Path) -> Iterator[EngineProcess]:
    proc = EngineProcess(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def wait_until(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


def check_history(proc: EngineProcess, instance_id: str, count: int) -> None:
    history = requests.get(
        f"{proc.url}/admin/devhost/durable/instances/{instance_id}/history",
        headers={"x-functions-key": "runner-master-key"},
        timeout=10,
    ).json()
    scheduled = [e["EventId"] for e in history if e["EventType"] == 4]
    completed = [e["TaskScheduledId"] for e in history if e["EventType"] == TASK_COMPLETED]
    assert scheduled == list(range(count)) and completed == list(range(count))  # no duplicates, no gaps


@pytest.mark.slow
def test_kill_during_an_activity_resumes_and_skips_recorded_activities(tmp_path: Path) -> None:
    with engine_process(tmp_path) as proc:
        proc.start_orchestration("steps", "crash-mid-activity", {"count": 5, "sleep": 0.4})
        wait_until(lambda: proc.executions()[2] >= 1)  # step 2 is sleeping inside its activity
        proc.kill()
        recorded = proc.recorded_completions("crash-mid-activity")
        before = proc.executions()
        assert {0, 1} <= recorded and 2 not in recorded

        proc.start()
        status = proc.wait_for_completion("crash-mid-activity")
        assert status["runtimeStatus"] == "Completed" and status["output"] == 100
        after = proc.executions()
        assert all(after[i] == before[i] == 1 for i in recorded)  # never re-run once recorded
        assert after[2] == 2  # in flight when killed: run again (at-least-once)
        assert all(after[i] == 1 for i in range(3, 5))
        check_history(proc, "crash-mid-activity", 5)


@pytest.mark.slow
def test_repeated_kills_at_arbitrary_moments_never_rerun_recorded_activities(tmp_path: Path) -> None:
    count = 12
    snapshots: list[tuple[set[int], Counter[int]]] = []
    with engine_process(tmp_path) as proc:
        proc.start_orchestration("steps", "crash-anywhere", {"count": count, "sleep": 0.04})
        for delay in (0.15, 0.22, 0.09, 0.3):
            time.sleep(delay)
            proc.kill()
            snapshots.append((proc.recorded_completions("crash-anywhere"), proc.executions()))
            proc.start()
        status = proc.wait_for_completion("crash-anywhere")
        assert status["runtimeStatus"] == "Completed"
        assert status["output"] == sum(i * 10 for i in range(count))
        final = proc.executions()
        assert all(final[i] >= 1 for i in range(count))
        for recorded, seen in snapshots:
            assert all(final[i] == seen[i] for i in recorded), (recorded, seen, final)
        assert any(snapshot[0] for snapshot in snapshots)  # at least one kill landed mid-run
        check_history(proc, "crash-anywhere", count)


@pytest.mark.slow
def test_virtual_clock_and_pending_timer_survive_a_kill(tmp_path: Path) -> None:
    with engine_process(tmp_path) as proc:
        headers = {"x-functions-key": "runner-master-key"}
        clock_url = f"{proc.url}/admin/devhost/clock"
        assert requests.post(clock_url, json={"autoAdvance": False}, headers=headers, timeout=10).ok
        proc.start_orchestration("sleeper", "crash-timer", 2)
        wait_until(lambda: proc.status("crash-timer")["runtimeStatus"] == "Running")
        moved = requests.post(clock_url, json={"advanceBy": 3600}, headers=headers, timeout=10).json()["now"]
        time.sleep(0.1)
        proc.kill()

        proc.start()
        clock_url = f"{proc.url}/admin/devhost/clock"
        clock = requests.get(clock_url, headers=headers, timeout=10).json()
        assert clock["autoAdvance"] is False and clock["now"] >= moved  # resumed, not reset to real time
        assert proc.status("crash-timer")["runtimeStatus"] == "Running"
        assert requests.post(clock_url, json={"advanceBy": 2 * 86400}, headers=headers, timeout=10).ok
        status = proc.wait_for_completion("crash-timer")
        assert status["runtimeStatus"] == "Completed" and status["output"] >= 2 * 86400
