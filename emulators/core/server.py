"""One HTTPS listener on loopback serving every emulated Azure service and the control API, plus the
HTTPS proxy (emulators/arm/proxy.py) through which the app reaches emulated target apps by host name."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from emulators.arm import api as arm
from emulators.arm import target_apps
from emulators.arm.proxy import ConnectProxy
from emulators.arm.sites import SITES_KEY
from emulators.core import clock, control, identity
from emulators.core.faults import Faults
from emulators.core.operations import request_log
from emulators.core.state import STATE_KEY, EmulatorState
from emulators.core.store import Store
from emulators.core.tls import server_context
from emulators.eventgrid import api as eventgrid
from emulators.keyvault import api as keyvault
from emulators.loganalytics import api as loganalytics

log = logging.getLogger("emulators")

SERVICES = (control, identity, arm, keyvault, eventgrid, loganalytics)
MAX_BODY = 4 * 1024 * 1024  # above Event Grid's 1 MB so the topic can answer 413 itself
# Never through the proxy: the emulators' own endpoints and devhost are loopback addresses.
NO_PROXY = "127.0.0.1,localhost,::1"


@dataclass
class RunningEmulator:
    state: EmulatorState
    runner: web.AppRunner
    url: str
    ca_path: Path
    proxy: ConnectProxy

    def endpoints(self) -> dict[str, Any]:
        """Where each emulated service listens; what devhost writes into endpoints.json."""
        return {
            "url": self.url,
            "arm": self.url,
            "keyVault": self.url,
            "eventGridTopic": f"{self.url}/api/events",
            "eventGridTopicKey": self.state.topic_key,
            "appSigningKey": self.state.persistent_secret("app.signing_key"),  # KEYROTATION_SIGNING_KEY (tests)
            "logAnalytics": self.url,
            "workspaceId": self.state.workspace_id,
            "tenantId": self.state.tenant_id,
            "control": f"{self.url}/_emulator",
            "caBundle": str(self.ca_path),
            "proxy": self.proxy.url,
            "managedIdentity": {
                **identity.app_settings(self.state),
                "objectId": identity.APP_IDENTITY.object_id,
                "resourceId": identity.APP_IDENTITY.resource_id,
            },
        }

    def app_settings(self) -> dict[str, str]:
        """The app settings that point the app at the emulators (names read by rotation/settings.py); what
        App Service gives an app with a managed identity (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`, served by
        emulators/core/identity.py, and the identity's `AZURE_CLIENT_ID`); and the standard variables `requests`
        and azure-core read: the proxy (both spellings: urllib lets a lower-case one win, so a stray one in
        the environment must not route the probe elsewhere) and the CA bundle they trust."""
        return {
            **proxy_settings(self.proxy.url),
            **platform_settings(self.ca_path),
            **identity.app_settings(self.state),
            "ARM_ENDPOINT": self.url,
            "KEY_VAULT_URL": self.url,
            "EVENTGRID_TOPIC_ENDPOINT": f"{self.url}/api/events",
            "LOGS_ENDPOINT": self.url,
            "LOG_ANALYTICS_WORKSPACE_ID": self.state.workspace_id,
            "AZURE_TENANT_ID": self.state.tenant_id,
            # On Azure a Key Vault reference the platform resolves (infra/modules/functionapp.bicep); here the
            # value itself, one per state folder so a restarted stack still accepts what it signed.
            "KEYROTATION_SIGNING_KEY": self.state.persistent_secret("app.signing_key"),
        }

    def use_clock(self, source: Callable[[], float] | None) -> None:
        """Take time from the hosting process's clock (seconds since the epoch): devhost passes its durable
        engine's, so virtual-time runs age keys and host key caches as real-time runs do (emulators/core/clock.py)."""
        clock.use(source)

    async def stop(self) -> None:
        clock.use(None)
        await self.proxy.stop()
        for cleanup in reversed(self.state.cleanup):
            result = cleanup()
            if asyncio.iscoroutine(result):
                await result
        await self.runner.cleanup()
        self.state.store.close()


def proxy_settings(proxy_url: str) -> dict[str, str]:
    """HTTPS_PROXY/NO_PROXY (and their lower-case twins) sending https:// to the emulators' proxy."""
    return {"HTTPS_PROXY": proxy_url, "https_proxy": proxy_url, "NO_PROXY": NO_PROXY, "no_proxy": NO_PROXY}


def platform_settings(ca_path: Path) -> dict[str, str]:
    """`REQUESTS_CA_BUNDLE`: the CA `requests` (and so azure-core's transport and azure-identity) trusts
    when a client does not pass `connection_verify`; the local CA stands in for the public roots."""
    return {"REQUESTS_CA_BUNDLE": str(ca_path)}


def latest_stamp(store: Store) -> float:
    """The newest time the request log or the journal recorded (their last rows: the clock is monotonic)."""
    stamps = []
    for table in ("requests", "changes"):
        row = store.one(f"SELECT ts FROM {table} ORDER BY seq DESC LIMIT 1")  # nosec B608  # literal names
        if row is not None:
            stamps.append(datetime.fromisoformat(str(row["ts"]).replace("Z", "+00:00")).timestamp())
    return max(stamps, default=float("-inf"))


def build_app(state: EmulatorState) -> web.Application:
    app = web.Application(middlewares=[request_log, target_apps.by_host_name], client_max_size=MAX_BODY)
    app[STATE_KEY] = state
    for service in SERVICES:
        service.register(app, state)
    return app


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def start_emulators(state_dir: Path, port: int = 0, host: str = "127.0.0.1") -> RunningEmulator:
    """Start the listener on the running loop. With port 0, reuse the port this state folder had
    before when it is free: URLs (Key Vault secret ids) recorded before a restart stay valid."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    store = Store(state_dir / "emulator.sqlite")
    clock.hold_at_least(latest_stamp(store))  # a restart never stamps earlier than before (emulators/core/clock.py)
    ssl_ctx, ca_path = server_context(state_dir / "tls")
    state = EmulatorState(state_dir=state_dir, store=store, faults=Faults(store), ca_path=ca_path)
    if port == 0:
        previous = store.get_setting("server.port")
        if previous and _port_is_free(int(previous)):
            port = int(previous)
    app = build_app(state)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, reuse_address=True)
    await site.start()
    server = site._server
    assert server is not None and server.sockets  # type: ignore[union-attr]
    bound = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    store.set_setting("server.port", str(bound))
    state.base_url = f"https://{host}:{bound}"
    proxy = ConnectProxy(store, app[SITES_KEY], (host, bound))
    previous_proxy = store.get_setting("proxy.port")
    proxy_port = int(previous_proxy) if previous_proxy and _port_is_free(int(previous_proxy)) else 0
    await proxy.start(host, proxy_port)
    store.set_setting("proxy.port", proxy.url.rsplit(":", 1)[1])
    log.info("emulators listening on %s, proxy %s (CA bundle %s)", state.base_url, proxy.url, ca_path)
    return RunningEmulator(state=state, runner=runner, url=state.base_url, ca_path=ca_path, proxy=proxy)


async def serve_forever(state_dir: Path, port: int) -> None:
    emulator = await start_emulators(state_dir, port)
    endpoints_path = state_dir / "endpoints.json"
    tmp = endpoints_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"emulator": emulator.endpoints(), "pid": os.getpid()}, indent=2))
    tmp.replace(endpoints_path)
    print(f"emulators ready at {emulator.url} (state {state_dir})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    endpoints_path.unlink(missing_ok=True)
    await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulators", description="Local Azure service emulators")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the emulators until SIGINT/SIGTERM")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--state", type=Path, default=Path(".devhost/emulator"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve_forever(args.state, args.port))
