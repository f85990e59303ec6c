"""In-process harness for the durable engine tests: engine + its public routes on a loopback aiohttp
server and its rpc listener, driven through the unmodified ``azure.durable_functions.DurableOrchestrationClient``.
The app is loaded under `app_process` (tests/inprocess_stack.py): its settings, sys.path and caches are
put back after each test, as a worker process of its own would leave them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import azure.durable_functions as df
from aiohttp import web
from azure.durable_functions.models.utils import http_utils

from devhost.app_loader import load_app
from devhost.durable.engine import DurableEngine
from tests.inprocess_stack import app_process, check_app_module

ROOT = Path(__file__).resolve().parents[1]
DURABLE_APP = ROOT / "tests" / "devhost_app"
MASTER_KEY = "test-master-key"
SYSTEM_KEY = "test-durabletask-key"
TERMINAL = {"Completed", "Failed", "Terminated"}
T = TypeVar("T")


@dataclass
class DurableHost:
    engine: DurableEngine
    client: df.DurableOrchestrationClient
    url: str  # the public routes (Durable HTTP API, devhost controls)
    rpc_url: str  # rpcBaseUrl: the loopback rpc listener, secret segment included, trailing slash
    http: aiohttp.ClientSession
    app_state: Path

    async def wait_for(self, instance_id: str, statuses: set[str] = TERMINAL, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.client.get_status(instance_id)
            if status and status.runtime_status and status.runtime_status.name in statuses:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"{instance_id} did not reach {statuses}; last: {status.to_json()}")
            await asyncio.sleep(0.02)

    async def wait_for_custom_status(self, instance_id: str, expected: Any, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while (await self.client.get_status(instance_id)).custom_status != expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{instance_id} never showed custom status {expected!r}")
            await asyncio.sleep(0.02)

    async def admin(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"x-functions-key": MASTER_KEY, **kwargs.pop("headers", {})}
        async with self.http.request(method, f"{self.url}{path}", headers=headers, **kwargs) as response:
            body = await response.json(content_type=None) if response.content_length != 0 else None
            return response.status, body


@asynccontextmanager
async def durable_host(
    tmp_path: Path, *, clock: str = "virtual", idle_grace: float = 0.05, max_activity_workers: int = 8
) -> AsyncIterator[DurableHost]:
    app_state = tmp_path / "app-state"
    with app_process(DURABLE_APP, {"DEVHOST_TEST_STATE_DIR": str(app_state)}):
        loaded = load_app(DURABLE_APP, worker_mode="thread")  # the engine and the app in this process
        check_app_module(DURABLE_APP)
        engine = DurableEngine(
            loaded,
            tmp_path / "state",
            clock=clock,
            idle_grace=idle_grace,
            max_activity_workers=max_activity_workers,
            task_hub="DevhostTestHub",
        )
        web_app = web.Application()
        engine.add_routes(web_app, master_key=MASTER_KEY, system_key=SYSTEM_KEY)
        rpc = engine.rpc_listener(system_key=SYSTEM_KEY, first_port=0)
        rpc_url = await rpc.start()
        await engine.start()
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}"
        client = df.DurableOrchestrationClient(engine.client_binding_json(url, SYSTEM_KEY, rpc_url))
        http = aiohttp.ClientSession()
        try:
            yield DurableHost(engine, client, url, rpc_url, http, app_state)
        finally:
            await http.close()
            await http_utils._close_session()
            await runner.cleanup()
            await rpc.stop()
            await engine.stop()
            loaded.close()


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)
