"""End to end through ``python -m devhost serve``: an HTTP starter with the durable client, the public
Durable HTTP API, clock control, and a SIGKILL of the whole host mid-orchestration."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.devhost_durable_harness import DURABLE_APP
from tools.devhost_launcher import Devhost, running_devhost

pytestmark = pytest.mark.slow


def wait_status(url: str, statuses: set[str], timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = requests.get(url, timeout=10).json()
        if status["runtimeStatus"] in statuses:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: {status}")
        time.sleep(0.05)


def executions(app_state: Path) -> Counter[int]:
    path = app_state / "executions.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(int(line.split()[1]) for line in lines)


def status_url(host: Devhost, instance_id: str) -> str:
    key = host.system_key("durabletask_extension")
    return f"{host.url}/runtime/webhooks/durabletask/instances/{instance_id}?code={key}"


def test_http_starter_event_and_clock_through_devhost_serve(tmp_path: Path) -> None:
    env = {"DEVHOST_TEST_STATE_DIR": str(tmp_path / "app-state")}
    with running_devhost(
        tmp_path / "state", DURABLE_APP, emulators=False, easy_auth=False, clock="virtual", timers=False, env=env
    ) as host:
        admin = {"x-functions-key": host.master_key}
        assert (
            host.post("admin/devhost/clock", json={"autoAdvance": False}, headers=admin).json()["autoAdvance"] is False
        )

        started = host.post(
            "api/orchestrators/approval", params={"code": host.function_key, "instanceId": "e2e-approval"}, json=48
        )
        assert started.status_code == 202
        urls = started.json()
        assert urls["id"] == "e2e-approval" and started.headers["Location"] == urls["statusQueryGetUri"]
        deadline = time.monotonic() + 20
        while requests.get(urls["statusQueryGetUri"], timeout=10).json()["customStatus"] != "waiting for approval":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        raised = requests.post(
            urls["sendEventPostUri"].replace("{eventName}", "Approval"), json={"by": "ops"}, timeout=10
        )
        assert raised.status_code == 202
        status = wait_status(urls["statusQueryGetUri"], {"Completed"})
        assert status["output"] == {"approved": True, "payload": {"by": "ops"}, "raw_type": "dict"}

        assert host.post("admin/devhost/clock", json={"autoAdvance": True}, headers=admin).status_code == 200
        started = host.post("api/orchestrators/sleeper", params={"code": host.function_key}, json=10)
        status = wait_status(started.json()["statusQueryGetUri"], {"Completed"}, timeout=10)
        assert status["output"] >= 10 * 86400


def test_killed_host_resumes_the_orchestration_without_rerunning_recorded_activities(tmp_path: Path) -> None:
    app_state = tmp_path / "app-state"
    env = {"DEVHOST_TEST_STATE_DIR": str(app_state)}
    with running_devhost(
        tmp_path / "state", DURABLE_APP, emulators=False, easy_auth=False, clock="virtual", timers=False, env=env
    ) as host:
        started = host.post(
            "api/orchestrators/steps",
            params={"code": host.function_key, "instanceId": "e2e-crash"},
            json={"count": 4, "sleep": 0.5},
        )
        assert started.status_code == 202
        deadline = time.monotonic() + 20
        while executions(app_state)[2] < 1:  # steps 0 and 1 are done, step 2 is sleeping
            assert time.monotonic() < deadline
            time.sleep(0.02)
        host.kill()
        before = executions(app_state)

        host.start()
        status = wait_status(status_url(host, "e2e-crash"), {"Completed", "Failed"})
        assert status["runtimeStatus"] == "Completed" and status["output"] == 60
        after = executions(app_state)
        assert after[0] == after[1] == 1 and before[0] == before[1] == 1
        assert after[2] == 2 and after[3] == 1
