"""The host shell's wiring of the durable engine: client binding, rpc routes, status webhook."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator

import pytest
import requests

from tests.devhost_process import HOST_APP, Devhost, running_devhost

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("devhost.durable.engine") is None, reason="devhost/durable/engine.py not there yet"
    ),
]


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
        status = requests.get(urls["statusQueryGetUri"], timeout=10).json()
        if status["runtimeStatus"] in ("Completed", "Failed") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == "Hello, world"


def test_durable_webhook_needs_a_key(host: Devhost) -> None:
    response = host.get("runtime/webhooks/durabletask/instances/nope")
    assert response.status_code in (401, 403)
