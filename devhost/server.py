"""``python -m devhost serve``: emulators + the host shell + the durable engine on one asyncio loop.

Startup order matters: the emulators start first because their settings must be in os.environ
before the app is imported; the engine starts before the listener so no request sees it half-up;
``endpoints.json`` is written last, atomically, so its presence means "ready".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from devhost.admin import AdminApi
from devhost.app_loader import LoadedApp, load_app
from devhost.easy_auth import easy_auth_middleware, load_or_create_signing_key
from devhost.eventgrid_webhook import EventGridWebhook
from devhost.http_triggers import HttpTriggerRouter
from devhost.invoke import Invoker
from devhost.keys import HostKeys, load_or_create_host_keys, write_private
from devhost.logs import quiet_libraries
from devhost.ncrontab import ScheduleError
from devhost.settings import HostConfig, apply_app_settings
from devhost.timers import RealClock, TimerRunner
from devhost.worker.runtime import WorkerInitError, runtime_version

log = logging.getLogger("devhost")
MAX_REQUEST_BODY = 100 * 1024 * 1024  # the Functions host's own limit; the app enforces tighter caps
DURABLE_SYSTEM_KEY = "durabletask_extension"


class StartupError(Exception):
    """Something the operator must fix; the message says what, without a traceback."""


@dataclass
class ServeOptions:
    port: int = 7071
    state: Path = Path(".devhost")
    clock: str = "real"
    app_dir: Path = Path(".")
    easy_auth: bool = True
    timers: bool = True
    emulators: bool = True
    activity_workers: int | None = None
    worker: str = "process"  # or "thread": the worker inside this process (tests/inprocess_stack.py)


@dataclass
class RunningHost:
    """Everything that needs stopping, in reverse order of starting."""

    emulator: Any = None
    engine: Any = None
    rpc: Any = None
    runner: web.AppRunner | None = None
    timers: TimerRunner | None = None
    admin: AdminApi | None = None
    loaded: LoadedApp | None = None
    sock: socket.socket | None = None


class OnceFormatter(logging.Formatter):
    """Formats a record once for both handlers: a rotation logs about 66 lines on the host (half of
    them the worker's), each of them formatted twice before."""

    def format(self, record: logging.LogRecord) -> str:
        text: str | None = getattr(record, "_devhost_text", None)
        if text is None:
            text = super().format(record)
            record._devhost_text = text
        return text


def configure_logging(state: Path) -> None:
    """App and host logs both go to stderr and ``<state>/logs/host.log``."""
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    formatter = OnceFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(logs / "host.log", encoding="utf-8")):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    quiet_libraries()


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _start_emulators(state: Path) -> Any:
    try:
        from emulators.core.server import start_emulators
    except ImportError as exc:
        raise StartupError(f"the emulators cannot be imported ({exc}); run with --no-emulators") from None
    return await start_emulators(state / "emulator", port=0)


def _make_engine(loaded: LoadedApp, opts: ServeOptions, config: HostConfig) -> Any:
    try:
        from devhost.durable.engine import DurableEngine
    except ModuleNotFoundError as exc:
        if exc.name not in ("devhost.durable", "devhost.durable.engine"):
            raise  # the engine exists but something it needs is missing: that must not pass quietly
        log.warning(
            "Durable engine unavailable (%s): orchestrations, durable client bindings and "
            "/runtime/webhooks/durabletask are disabled",
            exc,
        )
        return None
    workers = opts.activity_workers or config.max_activity_workers
    return DurableEngine(loaded, opts.state, clock=opts.clock, max_activity_workers=workers, task_hub=config.hub_name)


async def _start_rpc(engine: Any, durable_key: str, running: RunningHost) -> str:
    """The durable client's rpc API on its own loopback listener, never on the public port."""
    running.rpc = engine.rpc_listener(system_key=durable_key)
    try:
        return str(await running.rpc.start())
    except OSError as exc:
        raise StartupError(str(exc)) from None


def endpoints_document(
    host_url: str,
    keys: HostKeys,
    opts: ServeOptions,
    config: HostConfig,
    emulator: Any,
    loaded: LoadedApp,
    rpc_base_url: str | None,
) -> dict[str, Any]:
    return {
        "host": host_url,
        "rpcBaseUrl": rpc_base_url,  # the loopback rpc listener, secret segment included (this file is 0600)
        "durableWebhookBaseUrl": f"{host_url}/runtime/webhooks/durabletask",
        "routePrefix": config.route_prefix,
        "workerRuntime": f"azure-functions-runtime {runtime_version()}",
        "taskHub": config.hub_name,
        "masterKey": keys.master_key,
        "functionKeys": keys.function_keys,
        "systemKeys": keys.system_keys,
        "emulator": emulator.endpoints() if emulator else None,
        "caBundle": str(emulator.ca_path) if emulator else None,
        "clock": opts.clock,
        "easyAuth": opts.easy_auth,
        "timers": opts.timers,
        "app": str(loaded.root),
        "functions": sorted(loaded.functions),
        "state": str(opts.state.resolve()),
        "logFile": str((opts.state / "logs" / "host.log").resolve()),
        "pid": os.getpid(),
        "workerPid": getattr(loaded.worker, "pid", None),  # None when the worker runs inside devhost
    }


def _log_functions(loaded: LoadedApp, host_url: str, route_prefix: str) -> None:
    """Like Core Tools: one line per function, with the URL for HTTP triggers."""
    log.info(
        "Loaded %d functions from %s through azure-functions-runtime %s",
        len(loaded.functions),
        loaded.root,
        runtime_version(),
    )
    prefix = f"/{route_prefix}" if route_prefix else ""
    for fn in sorted(loaded.functions.values(), key=lambda f: f.name):
        if fn.trigger_type == "httpTrigger":
            log.info("  %s: [%s] %s%s/%s", fn.name, ",".join(fn.methods), host_url, prefix, fn.route)
        else:
            log.info("  %s: %s", fn.name, fn.trigger_type)


async def start_host(opts: ServeOptions, running: RunningHost) -> tuple[str, dict[str, Any]]:
    """Start the host on the running loop (what `serve` does before it waits); `running` collects what
    `stop_host` stops, even when starting fails half-way. The in-process test stack
    (tests/inprocess_stack.py) calls the pair directly, so it runs exactly the host `serve` runs."""
    state = opts.state
    sock = running.sock = _bind(opts.port)  # first: a busy port should fail before anything starts
    host_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    keys = load_or_create_host_keys(state)
    signing_key = load_or_create_signing_key(state) if opts.easy_auth else b""
    if opts.emulators:
        running.emulator = await _start_emulators(state)
    apply_app_settings(opts.app_dir, running.emulator.app_settings() if running.emulator else None, opts.easy_auth)
    try:
        config = HostConfig.load(opts.app_dir)
    except ValueError as exc:
        raise StartupError(f"host.json: {exc}") from None
    try:
        loaded = load_app(opts.app_dir, opts.worker)
    except FileNotFoundError as exc:
        raise StartupError(str(exc)) from None
    except WorkerInitError as exc:
        # The worker reports an indexing failure and loads no function; its message (e.g. every
        # problem of an invalid rotation policy) is what the operator needs, not a traceback.
        raise StartupError(f"function_app.py failed to load: {exc.worker_message}") from None
    _log_functions(loaded, host_url, config.route_prefix)
    engine = running.engine = _make_engine(loaded, opts, config)
    if engine and running.emulator:
        # One clock for the host and the emulators it runs in-process: on --clock virtual, key caches and
        # every timestamp the emulators write move with the orchestrations' time (docs/devhost.md).
        running.emulator.use_clock(lambda: engine.clock.now().timestamp())
    durable_key = keys.system_keys[DURABLE_SYSTEM_KEY]
    rpc_base_url = await _start_rpc(engine, durable_key, running) if engine else None
    binding = (lambda: engine.client_binding_json(host_url, durable_key, rpc_base_url or "")) if engine else None
    running.loaded = loaded
    loaded.client_binding = binding
    invoker = Invoker(loaded, binding)
    clock = engine.clock if engine else RealClock()
    if engine is None and opts.clock == "virtual":
        log.warning("No durable engine: timers run on the real clock")
    try:
        timers = running.timers = TimerRunner(loaded.by_trigger("timerTrigger"), clock, invoker, state, opts.timers)
    except ScheduleError as exc:
        raise StartupError(str(exc)) from None

    middlewares = [easy_auth_middleware(signing_key)] if opts.easy_auth else []
    app = web.Application(middlewares=middlewares, client_max_size=MAX_REQUEST_BODY)
    admin = running.admin = AdminApi(loaded, keys, invoker, timers)
    admin.add_routes(app)
    EventGridWebhook(loaded, keys, invoker).add_routes(app)
    if engine:
        engine.add_routes(app, master_key=keys.master_key, system_key=durable_key)
    HttpTriggerRouter(loaded, keys, invoker, config.route_prefix).add_routes(app)  # last: may be a catch-all

    if engine:
        await engine.start()
    running.runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await running.runner.setup()
    await web.SockSite(running.runner, sock).start()
    await timers.start()
    return host_url, endpoints_document(host_url, keys, opts, config, running.emulator, loaded, rpc_base_url)


async def stop_host(running: RunningHost) -> None:
    steps = [
        ("timers", running.timers and running.timers.stop),
        ("admin runs", running.admin and running.admin.drain),
        ("listener", running.runner and running.runner.cleanup),
        ("rpc listener", running.rpc and running.rpc.stop),
        ("durable engine", running.engine and running.engine.stop),
        ("emulators", running.emulator and running.emulator.stop),
    ]
    for name, step in steps:
        if not step:
            continue
        try:
            await asyncio.wait_for(step(), timeout=15)
        except Exception as exc:
            log.error("Stopping the %s failed: %s", name, type(exc).__name__)
    if running.loaded:
        running.loaded.close()
    if running.sock and running.runner is None:  # never handed to a site
        running.sock.close()


async def serve(opts: ServeOptions) -> int:
    """Run until SIGINT/SIGTERM. Returns the process exit code."""
    opts.state.mkdir(parents=True, exist_ok=True)
    configure_logging(opts.state)
    endpoints_path = opts.state / "endpoints.json"
    endpoints_path.unlink(missing_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = RunningHost()
    try:
        host_url, document = await start_host(opts, running)
    except StartupError as exc:
        log.error("devhost cannot start: %s", exc)
        await stop_host(running)
        return 2
    except Exception:
        log.exception("devhost cannot start")
        await stop_host(running)
        return 1
    write_private(endpoints_path, json.dumps(document, indent=2))
    ready = (
        f"devhost ready: {host_url} (app {document['app']}, clock {opts.clock}, "
        f"easy auth {'on' if opts.easy_auth else 'off'}, emulators {'on' if running.emulator else 'off'}); "
        f"endpoints in {endpoints_path}"
    )
    log.info(ready)
    print(ready, flush=True)
    await stop.wait()
    log.info("devhost stopping")
    with contextlib.suppress(FileNotFoundError):
        endpoints_path.unlink()
    await stop_host(running)
    log.info("devhost stopped")
    return 0
