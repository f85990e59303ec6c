"""A stand-in for the rotation app's `POST /api/rotations/{id}/ack`, for consumer tests.

It records every acknowledgement (path and bearer token), answers from a queue of statuses (202 when
empty), and can forward each accepted ack to a callback — the rotation e2e test raises the
orchestration's `ConsumerAck` event there, which is what the real route does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACK_PATH = re.compile(r"^/api/rotations/([^/]+)/ack$")


@dataclass
class StubApi:
    url: str = ""
    statuses: list[int] = field(default_factory=list)
    acks: list[tuple[str, str]] = field(default_factory=list)  # (rotation id, Authorization header)
    on_ack: Callable[[str], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, rotation_id: str, authorization: str) -> int:
        with self.lock:
            self.acks.append((rotation_id, authorization))
            status = self.statuses.pop(0) if self.statuses else 202
        if status == 202 and self.on_ack:
            self.on_ack(rotation_id)
        return status

    def acks_for(self, rotation_id: str) -> list[str]:
        with self.lock:
            return [auth for rid, auth in self.acks if rid == rotation_id]


@contextmanager
def running_stub_api() -> Iterator[StubApi]:
    stub = StubApi()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            match = ACK_PATH.match(self.path)
            status = stub.answer(match.group(1), self.headers.get("Authorization", "")) if match else 404
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
