"""The adapters a service uses: requests (a real local HTTP server as the target), httpx (sync and async,
on httpx's mock transport), the framework-neutral webhook, and the Azure Functions blueprint. Each sends
the key only in `x-functions-key` and retries a refusal once with the kit's better key."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from keyrotation_kit import ConsumerKit, handle_webhook, kit_session
from keyrotation_kit.functions import FUNCTION_NAME, handle_trigger, rotation_events_blueprint
from kit_fakes import R1, R2, TARGET, A, B, Clock, FakeVault, announcement, make_kit, value_of


class Target:
    def __init__(self) -> None:
        self.live = {value_of(A)}
        self.seen: list[str | None] = []


@pytest.fixture
def target() -> Iterator[tuple[Target, str]]:
    state = Target()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            key = self.headers.get("x-functions-key")
            state.seen.append(key)
            status = 200 if key in state.live else 401
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"no")

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/api/ping"
    finally:
        server.shutdown()
        server.server_close()


def emergency(kit: ConsumerKit, vault: FakeVault, clock: Clock) -> None:
    """The key held dies and a new one is in Key Vault; no event has arrived."""
    clock.now += 60
    vault.write(B, R2)


def test_requests_session_resends_a_refused_request_once_with_the_new_key(target: tuple[Target, str]) -> None:
    state, url = target
    clock, vault = Clock(), FakeVault({A: R1})
    kit = make_kit(vault, clock=clock)
    with kit_session(kit) as session:
        assert session.get(url, timeout=5).status_code == 200
        emergency(kit, vault, clock)
        state.live = {value_of(B)}
        response = session.get(url, timeout=5)
        assert response.status_code == 200 and [r.status_code for r in response.history] == [401]
        state.live = set()  # nothing works any more: one resend, then the 401 comes back
        assert session.get(url, timeout=5).status_code == 401
    assert state.seen == [value_of(A), value_of(A), value_of(B), value_of(B)]
    kit.acks.flush()
    assert kit.state()["ack"]["rotationId"] == R2


def test_httpx_auth_retries_once_sync_and_async() -> None:
    httpx = pytest.importorskip("httpx", reason="httpx is the kit's optional extra (requirements-dev.txt pins it)")
    from keyrotation_kit.httpx_auth import FunctionKeyAuth

    live = {value_of(A)}
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-functions-key"))
        return httpx.Response(200 if request.headers.get("x-functions-key") in live else 401)

    clock, vault = Clock(), FakeVault({A: R1})
    kit = make_kit(vault, clock=clock)
    with httpx.Client(auth=FunctionKeyAuth(kit), transport=httpx.MockTransport(answer)) as client:
        assert client.get("https://orders.example/api/ping").status_code == 200
        emergency(kit, vault, clock)
        live = {value_of(B)}
        assert client.get("https://orders.example/api/ping").status_code == 200
    assert seen == [value_of(A), value_of(A), value_of(B)]

    async def run() -> int:
        transport = httpx.MockTransport(answer)
        async with httpx.AsyncClient(auth=FunctionKeyAuth(kit), transport=transport) as client:
            return (await client.get("https://orders.example/api/ping")).status_code

    clock.now += 60
    vault.write("c" * 32, "orders-api-20260501t030000z-s")
    live = {value_of("c" * 32)}
    assert asyncio.run(run()) == 200
    assert seen[-2:] == [value_of(B), value_of("c" * 32)]


def test_the_webhook_answers_the_handshake_and_handles_a_batch() -> None:
    vault = FakeVault({A: R1, B: R2})
    kit = make_kit(vault)
    hello = handle_webhook(kit, "OPTIONS", {"WebHook-Request-Origin": "eventgrid.azure.net"}, b"")
    assert hello.status == 200 and hello.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    batch = [announcement(A), announcement(B, R2, "2026-04-01T03:00:05.000Z")]
    assert handle_webhook(kit, "POST", {}, json.dumps(batch).encode()).status == 200
    assert kit.state()["version"] == B
    assert handle_webhook(kit, "POST", {}, b"not json").status == 400
    vault.down = True
    later = announcement("c" * 32, "orders-api-20260501t030000z-s", "2026-05-01T03:00:05.000Z")
    assert handle_webhook(kit, "POST", {}, json.dumps(later).encode()).status == 503  # Event Grid redelivers


def test_the_functions_blueprint_feeds_the_kit() -> None:
    func = pytest.importorskip("azure.functions")
    kit = make_kit(FakeVault({A: R1}))
    bp = rotation_events_blueprint(kit)
    app = func.FunctionApp()
    app.register_functions(bp)
    functions = {f.get_function_name(): f for f in app.get_functions()}
    assert [b.type for b in functions[FUNCTION_NAME].get_bindings()] == ["eventGridTrigger"]
    data = announcement(A)["data"]
    event = func.EventGridEvent(id="e1", data=data, topic="t", subject=f"targets/{TARGET}",
                                event_type="KeyRotation.NewKeyAvailable", event_time=None,
                                data_version="1")  # fmt: skip
    assert handle_trigger(kit, event) == "switched" and kit.state()["version"] == A
