"""The durable client's rpc API on its own loopback listener, as the Durable extension serves it.

The extension's ``LocalHttpListener`` (Azure/azure-functions-durable-extension
``src/WebJobs.Extensions.DurableTask/LocalHttpListener.cs``) listens on ``http://127.0.0.1:17071/``,
or, when that port is taken, on a random port of 30000-30999 (10 attempts in all), and hands every
request to ``HttpApiHandler`` without any key: on Azure that loopback lives inside the app's sandbox.
Locally it is the developer's loopback, open to every process and browser page on the machine, so
devhost adds one thing the extension does not have: a random path segment per run
(``http://127.0.0.1:<port>/<secret>/durabletask/``). The unmodified SDK client calls whatever
``rpcBaseUrl`` the binding names, so it never notices.
"""

from __future__ import annotations

import logging
import random
import secrets
import socket
from collections.abc import Callable

from aiohttp import web

from devhost.durable.http_api import RPC_PREFIX

log = logging.getLogger("devhost.durable.rpc")

DEFAULT_PORT = 17071  # LocalHttpListener.DefaultPort
FALLBACK_PORTS = range(30000, 31000)  # LocalHttpListener.MinPort .. MaxPort (exclusive, Random.Next)
MAX_ATTEMPTS = 10  # LocalHttpListener.StartAsync maxAttempts


class RpcListenerError(OSError):
    """No port could be opened; the message says how many were tried."""


def bind_rpc_socket(first_port: int = DEFAULT_PORT, pick: Callable[[range], int] = random.choice) -> socket.socket:
    """Bind 127.0.0.1 the way LocalHttpListener does: the default port first, then random untried ones.

    ``first_port=0`` lets the OS choose (in-process tests that start many listeners)."""
    tried: set[int] = set()
    for attempt in range(MAX_ATTEMPTS if first_port else 1):
        port = first_port
        while attempt and port in tried | {first_port}:
            port = pick(FALLBACK_PORTS)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may find TIME_WAIT sockets
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(128)  # with SO_REUSEADDR, a port another socket listens on may fail only here
        except OSError:
            sock.close()
            log.warning("Failed to open local port %d for the durable rpc endpoint", port)
            tried.add(port)
            continue
        sock.setblocking(False)
        return sock
    raise RpcListenerError(f"unable to find a port to open the durable rpc endpoint on after {len(tried)} attempts")


class RpcListener:
    """One aiohttp site on a loopback socket serving only the rpc routes under a secret segment."""

    def __init__(self, add_routes: Callable[[web.Application, str], None], first_port: int = DEFAULT_PORT) -> None:
        self._add_routes = add_routes
        self._first_port = first_port
        self._secret = secrets.token_urlsafe(24)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        """Open the listener; returns ``rpcBaseUrl`` (trailing slash, as the Python client needs)."""
        sock = bind_rpc_socket(self._first_port)
        app = web.Application(client_max_size=100 * 1024 * 1024)
        self._add_routes(app, self._secret)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/{self._secret}{RPC_PREFIX}/"
        log.info("Opened local http RPC endpoint on 127.0.0.1:%d", port)  # the port only: the path is a secret
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
