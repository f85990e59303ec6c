"""Probes keep their connection to a target's host between probes, and never keep its cookies."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from activities.probe import probe_session


class _Target(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the front end of an app
    seen: list[tuple[int, str | None]] = []

    def do_GET(self) -> None:  # http.server calls it by this name
        type(self).seen.append((self.client_address[1], self.headers.get("Cookie")))
        body = b"ok"
        self.send_response(200)
        self.send_header("Set-Cookie", "ARRAffinity=instance-0; Path=/; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def target() -> Iterator[str]:
    _Target.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/ping"
    server.shutdown()
    server.server_close()


def test_later_probes_reuse_the_connection_and_send_no_affinity_cookie(target: str) -> None:
    for _ in range(3):
        with probe_session().get(target, timeout=5) as response:
            assert response.status_code == 200
    ports = {port for port, _ in _Target.seen}
    assert len(_Target.seen) == 3 and len(ports) == 1, "each probe opened a new connection"
    assert [cookie for _, cookie in _Target.seen] == [None, None, None]


def test_each_thread_has_a_session_of_its_own() -> None:
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(probe_session()))
    thread.start()
    thread.join()
    assert other[0] is not probe_session() and probe_session() is probe_session()
