"""An HTTPS forward proxy (HTTP CONNECT, RFC 9110 section 9.3.6) standing in for the network between the
app and App Service, so the probe can call an emulated target by its real host name.

devhost sets `HTTPS_PROXY` to this listener (and `NO_PROXY` to loopback) for the app, the standard
variables `requests` and azure-core honour: a request for `https://{app}.azurewebsites.net/...` becomes
`CONNECT {app}.azurewebsites.net:443`, which is tunnelled to the emulators' own TLS listener. TLS runs end
to end inside the tunnel (the certificate covers the App Service names, emulators/core/tls.py), and the
listener routes the request by its Host to the emulated app (emulators/arm/target_apps.py). The app needs no
code path of its own for this: on Azure the same request goes straight to App Service.

The emulated network reaches App Service host names of emulated apps on port 443 and nothing else: any
other CONNECT is refused (403), an unknown App Service name gets 502 (as a proxy answers a name that does
not resolve), and every attempt is in the request log (service `proxy`, operation `proxy.connect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from emulators.arm.sites import SiteStore
from emulators.core import hosts
from emulators.core.store import Store, iso, utcnow, wall_iso

log = logging.getLogger("emulators.arm.proxy")

MAX_HEAD = 8 * 1024
HEAD_TIMEOUT = 10.0
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Verdict:
    status: int
    reason: str


def decide(sites: SiteStore, method: str, authority: str) -> Verdict:
    """What the proxy does with `METHOD authority`: 200 tunnels, anything else refuses."""
    if method != "CONNECT":
        return Verdict(405, "only CONNECT is supported (https:// through a tunnel)")
    host, sep, port = authority.rpartition(":")
    if not sep or not host:
        return Verdict(400, "CONNECT needs host:port")
    host = host.strip("[]").lower()
    if not hosts.is_app_service_host(host) or port != "443":
        return Verdict(403, "the emulated network reaches only App Service host names on port 443")
    if sites.instance_by_host(host) is None:
        return Verdict(502, "no emulated app has this host name")
    return Verdict(200, "Connection Established")


class ConnectProxy:
    """The proxy listener; `upstream` is the emulators' TLS listener it tunnels to."""

    def __init__(self, store: Store, sites: SiteStore, upstream: tuple[str, int]) -> None:
        self.store = store
        self.sites = sites
        self.upstream = upstream
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        bound = self.server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    def _record(self, method: str, authority: str, status: int) -> None:
        self.store.execute(
            "INSERT INTO requests(ts, wall_ts, method, path, query, service, operation, status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (iso(utcnow()), wall_iso(), method[:16], authority[:300], "", "proxy", "proxy.connect", status),
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        if len(head) > MAX_HEAD:
            await self._refuse(writer, Verdict(431, "request head too large"))
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        method, authority = (parts[0], parts[1]) if len(parts) == 3 else ("", "")
        verdict = decide(self.sites, method, authority) if method else Verdict(400, "malformed request line")
        self._record(method or "?", authority, verdict.status)
        if verdict.status != 200:
            await self._refuse(writer, verdict)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            await self._refuse(writer, Verdict(502, "the emulators' listener is not reachable"))
            return
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    async def _refuse(self, writer: asyncio.StreamWriter, verdict: Verdict) -> None:
        body = verdict.reason.encode()
        writer.write(
            f"HTTP/1.1 {verdict.status} {verdict.reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy bytes until either side closes; then close the sink."""
    try:
        while chunk := await source.read(CHUNK):
            sink.write(chunk)
            await sink.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            sink.close()
