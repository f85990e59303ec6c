"""The host shell's wiring of the durable engine: client binding, rpc listener, status webhook."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tools.devhost_launcher import HOST_APP, Devhost, running_devhost

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    env = {"TICK_SCHEDULE": "0 0 0 1 1 *", "FAST_SCHEDULE": "0 0 0 1 1 *"}
    with running_devhost(tmp_path_factory.mktemp("devhost"), HOST_APP, emulators=False, env=env) as running:
        yield running


def test_http_function_with_durable_client_starts_an_orchestration(host: Devhost) -> None:
    started = host.post("api/orchestrators/hello_orchestrator", json="world")
    assert started.status_code == 202
    urls = started.json()
    assert urls["statusQueryGetUri"].startswith(f"{host.url}/runtime/webhooks/durabletask/instances/")
    deadline = time.monotonic() + 20
    while True:
        status = host.get(urls["statusQueryGetUri"].removeprefix(host.url)).json()  # Easy Auth: a token too
        if status["runtimeStatus"] in ("Completed", "Failed") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == "Hello, world"


def test_durable_webhook_needs_a_key(host: Devhost) -> None:
    response = host.get("runtime/webhooks/durabletask/instances/nope")
    assert response.status_code in (401, 403)


def test_virtual_clock_jump_fires_a_timer_once_past_due(tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"TICK_SCHEDULE": "0 0 3 * * *", "FAST_SCHEDULE": "0 0 0 1 1 *"}  # tick: daily at 03:00
    state = tmp_path_factory.mktemp("devhost-virtual")
    with running_devhost(state, HOST_APP, emulators=False, clock="virtual", env=env) as host:
        assert host.endpoints["clock"] == "virtual"
        clock = host.post("admin/devhost/clock", json={"advanceBy": 3 * 86400}, params={"code": host.master_key})
        assert clock.status_code == 200
        deadline = time.monotonic() + 10
        while True:
            ticks = [c for c in host.get("api/calls").json() if c["kind"] == "tick"]
            if ticks or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # a second (wrong) invocation would show up by now
        ticks = [c for c in host.get("api/calls").json() if c["kind"] == "tick"]
        assert len(ticks) == 1 and ticks[0]["past_due"] is True
