"""The host `python -m devhost serve` runs, started inside the pytest process: for the orchestrator's branch
tests, which need the Durable replay and a virtual clock but not a host process of their own.

Same code as the subprocess (tools/devhost_launcher.py): `devhost.server.start_host` loads the app through
Azure's worker runtime (devhost/worker), starts the durable engine and serves the Durable HTTP API and
devhost's controls on a loopback port, so tests drive it with the same requests (tests/rotation_harness.py).
What a process boundary gave for free is done here, and checked (`IsolationError` when it does not hold):

- one stack per process at a time: the worker runtime's registry and thread pool are module globals;
- the app settings (`env`) are put into os.environ for the stack's life, and os.environ is put back after;
- module-level caches in the app's packages (settings, credentials, the deployed policy; any
  `functools.lru_cache` in activities/, orchestrations/, rotation/, triggers/) are emptied before and
  after, so nothing parsed under one stack's settings is served to the next stack or to a unit test;
- the Durable SDK's process-wide aiohttp session is bound to the worker's event loop, which is new for
  each stack: it is dropped before and closed after;
- `function_app` must be the module of the app asked for (the repository root has one too), and
  sys.path and sys.modules["function_app"] are put back after;
- no thread that runs app code (worker, engine pools) may outlive the stack.

One thing the process boundary prevented is used: the virtual clock's idle grace (the real time an idle
engine waits before skipping to the next timer, so a caller that just saw a state can act first) ends as
soon as the test driver, waiting in `Durable.wait`, has read the state the engine went idle in and found
it is not what it waits for (`ClockPermit`). Skips land on the same timers; they just stop costing the
grace. A test acting between waits still gets the full grace.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from azure.durable_functions.models.utils import http_utils

from devhost.server import RunningHost, ServeOptions, start_host, stop_host
from tools.devhost_launcher import HostEndpoints

APP_PACKAGES = ("activities", "orchestrations", "rotation", "triggers")
APP_THREADS = ("python-worker", "devhost-activity", "devhost-orchestrator", "ThreadPoolExecutor")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # devhost.server.configure_logging's
_owner: str | None = None  # the app loaded in-process now


class IsolationError(RuntimeError):
    """Something one in-process stack leaves behind would reach the next test: fix the harness, not the test."""


class ClockPermit:
    """The driver's side of the engine's `skip_permit` hook: the moment of the driver's latest status read
    that found its wait unmet, while it waits. The engine may skip when that read began after its last
    busy moment (it committed everything before it went idle, so the read saw the idle state)."""

    def __init__(self) -> None:
        self._unmet_at: float | None = None

    def unmet(self, read_at: float) -> None:
        """A status read begun at `read_at` (time.monotonic) did not show what the driver waits for."""
        self._unmet_at = read_at

    def withdraw(self) -> None:
        """The driver stopped waiting: it may act on what it saw, so the grace applies again."""
        self._unmet_at = None

    def __call__(self, last_busy: float) -> bool:
        unmet_at = self._unmet_at
        return unmet_at is not None and unmet_at > last_busy


@dataclass
class InProcessHost(HostEndpoints):
    """What tests use of a devhost (tools/devhost_launcher.Devhost): its URL and keys, its app settings,
    requests to it, and its log."""

    state_dir: Path
    env: dict[str, str]
    endpoints: dict[str, Any] = field(default_factory=dict)
    clock_permit: ClockPermit = field(default_factory=ClockPermit)

    @property
    def output_path(self) -> Path:
        """The host's and the app's log lines (the subprocess's host.log)."""
        return self.state_dir / "logs" / "host.log"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.request(method, f"{self.url}/{path.lstrip('/')}", **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)


class _HostLoop:
    """devhost's event loop on a thread of its own, as `serve` runs it in its process: the test thread
    stays free to make blocking requests to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="devhost-inprocess", daemon=True)
        self.thread.start()

    def run[T](self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


def clear_app_caches() -> list[str]:
    """Empty every functools cache at module level in the app's packages; returns their names."""
    cleared = []
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in APP_PACKAGES:
            continue
        for attribute, value in list(vars(module).items()):
            if isinstance(value, functools._lru_cache_wrapper):
                value.cache_clear()
                cleared.append(f"{name}.{attribute}")
    return cleared


async def _close_sdk_session() -> None:
    await http_utils._close_session()


def _app_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.is_alive() and t.name.startswith(APP_THREADS)]


def _wait_for_threads(before: set[threading.Thread], timeout: float = 15) -> None:
    """Threads that run app code, started by this stack, must be gone (a leftover would run the app with
    the next test's settings)."""
    deadline = time.monotonic() + timeout
    for thread in _app_threads():
        if thread not in before:
            thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in _app_threads() if t not in before]
    if left:
        raise IsolationError(f"threads of the in-process stack still run after it stopped: {left}")


@contextmanager
def app_process(app_dir: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """This process made ready for loading `app_dir` as a fresh worker process would be, with `env` as
    app settings; put back as it was afterwards (see the module docstring for what and why)."""
    global _owner
    if _owner is not None:
        raise IsolationError(
            f"an app ({_owner}) is still loaded in-process: the worker runtime serves one app per process "
            "(stop its stack first, or use a subprocess host)"
        )
    _owner = str(app_dir)
    saved_environ, saved_path = dict(os.environ), list(sys.path)
    saved_app_module = sys.modules.get("function_app")
    threads_before = set(_app_threads())
    os.environ.update(env or {})
    clear_app_caches()
    # The SDK keeps one aiohttp session per process, bound to the loop it was made on: not this stack's.
    http_utils._client_session = None
    http_utils._session_lock = asyncio.Lock()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        sys.path[:] = saved_path
        if saved_app_module is None:
            sys.modules.pop("function_app", None)
        else:
            sys.modules["function_app"] = saved_app_module
        clear_app_caches()
        _owner = None
    _wait_for_threads(threads_before)


@contextmanager
def running_inprocess(
    state_dir: Path,
    app_dir: Path,
    *,
    clock: str = "virtual",
    timers: bool = False,
    env: dict[str, str] | None = None,
    activity_workers: int | None = None,
) -> Iterator[InProcessHost]:
    """devhost serving `app_dir` in this process (no emulators, no Easy Auth), with `env` as app settings."""
    options = ServeOptions(
        port=0,
        state=state_dir,
        clock=clock,
        app_dir=app_dir,
        easy_auth=False,
        timers=timers,
        emulators=False,
        activity_workers=activity_workers,
        worker="thread",  # the scripted app is driven from this process
    )
    with app_process(app_dir, env):
        state_dir.mkdir(parents=True, exist_ok=True)
        log_handler, saved_levels = _capture_logs(state_dir / "logs" / "host.log")
        host_loop = _HostLoop()
        running = RunningHost()
        try:
            _url, document = host_loop.run(start_host(options, running))
            check_app_module(app_dir)
            host = InProcessHost(state_dir=state_dir, env=dict(os.environ), endpoints=document)
            if running.engine is not None:
                running.engine.skip_permit = host.clock_permit
            yield host
        finally:
            try:
                if running.loaded is not None and running.loaded.worker._loop.is_running():
                    # The SDK's session, made by the app's durable client calls on the worker's loop.
                    asyncio.run_coroutine_threadsafe(_close_sdk_session(), running.loaded.worker._loop).result(10)
                host_loop.run(stop_host(running))
            finally:
                host_loop.close()
                _release_logs(log_handler, saved_levels)


def check_app_module(app_dir: Path) -> None:
    """The worker imported `function_app` from `app_dir`, not another app's (the repository root has one)."""
    module = sys.modules.get("function_app")
    loaded = Path(getattr(module, "__file__", "") or "").resolve()
    expected = (app_dir / "function_app.py").resolve()
    if loaded != expected:
        raise IsolationError(f"the worker imported function_app from {loaded}, not {expected}")


def _capture_logs(path: Path) -> tuple[logging.Handler, dict[str, int]]:
    """The host's log file, as devhost.server.configure_logging writes it (without taking over stderr)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    names = ["", "azure.core.pipeline", "azure.identity", "aiohttp.access", "urllib3"]
    saved = {name: logging.getLogger(name).level for name in names}
    logging.getLogger().setLevel(logging.INFO)
    for noisy in names[1:]:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    return handler, saved


def _release_logs(handler: logging.Handler, levels: dict[str, int]) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
