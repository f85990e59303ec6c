"""The consumer kit in real rotations, on the local stack: a test service — two instances, each with its
own identity, using only the kit's public API — calls a demo target several times a second while the
real app rotates its key, first on schedule, then in an emergency; then Key Vault goes down.

- scheduled: zero failed calls; each instance acknowledges through the app's API after its first success
  with the new key, and those acks end the overlap. Instance 2's event subscription is missing (a lost
  event): its jittered periodic refresh finds the new version, whose Key Vault tags name the rotation.
- emergency (the old key dies at once): at most one failed call per instance, then success.
- Key Vault outage: calls keep working with the cached key, and the reads back off.

The virtual clock's auto-advance is off, so the overlap ends only by the acks. The per-phase report is
printed (`pytest -s`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from keyrotation_kit import ConsumerKit, handle_webhook, kit_session, load_settings

from emulators.core.store import fingerprint
from rotation.naming import rotation_instance_id
from rotation.policy import Target, load_policy
from tests.e2e.test_consumer_rotation import write_policy as consumer_policy
from tools import demo_report
from tools.consumer_stack import FAST_RETRIES, ConsumerSpec, consumer_environment, mint_token
from tools.demo_seed import OPERATOR, create_operator_keys, seed_sites
from tools.devhost_launcher import DemoStack

pytestmark = pytest.mark.slow

TARGET = "kit-demo"
INSTANCES = [
    ("billing-worker", "00000000-0000-0000-0000-00000000c0d1"),
    ("shipping-worker", "00000000-0000-0000-0000-00000000c0d2"),
]
RESPONDER = ("responder", "00000000-0000-0000-0000-0000000000e1")
SUBSCRIPTION = "/subscriptions/00000000-0000-0000-0000-000000000000"
APP_ID = f"{SUBSCRIPTION}/resourceGroups/keyrotation-kit/providers/Microsoft.Web/sites/{TARGET}"
CALL_EVERY = 0.1  # seconds: ten calls a second per instance
REFRESH_SECONDS = 1.0  # the periodic fallback, short so a lost event is caught up within the test


def write_policy(path: Path) -> Path:
    return consumer_policy(path, TARGET, APP_ID, "kit-demo-client", tuple(INSTANCES))


@dataclass
class Service:
    """One instance of the test service: the kit, a webhook for its events, and a caller thread."""

    name: str
    kit: ConsumerKit
    url: str
    verify: str
    calls: list[tuple[str, int, bool]] = field(default_factory=list)  # (phase, status, retried)
    phase: str = "warm-up"
    stop: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def webhook(self) -> str:
        kit = self.kit

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply = handle_webhook(kit, self.command, dict(self.headers), body)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_OPTIONS = _answer

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.threads.append(threading.Thread(target=self.server.serve_forever, daemon=True))
        self.threads[-1].start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/events"

    def call_continuously(self) -> None:
        def run() -> None:
            with kit_session(self.kit) as session:
                while not self.stop.wait(CALL_EVERY):
                    try:
                        response = session.get(self.url, verify=self.verify, timeout=10, allow_redirects=False)
                        status, retried = response.status_code, bool(response.history)
                    except Exception:
                        status, retried = 0, False
                    self.calls.append((self.phase, status, retried))

        self.threads.append(threading.Thread(target=run, daemon=True))
        self.threads[-1].start()

    def failures(self, phase: str) -> int:
        return sum(1 for p, status, _ in self.calls if p == phase and status != 200)

    def report(self, phase: str) -> str:
        mine = [c for c in self.calls if c[0] == phase]
        retried = sum(1 for c in mine if c[2])
        counters = self.kit.state()["counters"]
        return (
            f"{self.name}: {len(mine)} calls, {self.failures(phase)} failed, {retried} retried; "
            f"Key Vault reads {counters['keyVaultReads']}, failures {counters['keyVaultFailures']}"
        )

    def close(self) -> None:
        self.stop.set()
        if self.server:
            self.server.shutdown()
            self.server.server_close()
        for thread in self.threads:
            thread.join(timeout=10)
        self.kit.close()


@dataclass
class World:
    stack: DemoStack
    target: Target
    services: list[Service]

    def set_phase(self, phase: str) -> None:
        for service in self.services:
            service.phase = phase

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} did not happen within {timeout:.0f} s: {self.stack.tail()}")

    def rotation(self) -> dict[str, Any]:
        return self.stack.status(rotation_instance_id(TARGET)) or {}

    def finished(self, rotation_id: str | None = None) -> dict[str, Any]:
        def done() -> bool:
            status = self.rotation()
            custom = status.get("customStatus") or {}
            mine = rotation_id is None or custom.get("rotationId") == rotation_id
            return mine and status.get("runtimeStatus") in ("Completed", "Failed", "Terminated")

        self.wait("the rotation's end", done)
        return self.rotation()

    def keep_calling(self, seconds: float) -> None:
        time.sleep(seconds)


def store_operator_key(stack: DemoStack, target: Target) -> None:
    """The key the operator made, put in Key Vault by hand (untagged): what the kit reads on first use."""
    value = demo_report.live_keys(stack.control_json("state"), target)[target.base_key_name]
    with stack.secret_client_as(OPERATOR, target.key_vault.vault_url) as vault:
        vault.set_secret(target.key_vault.secret_name, value)


def subscribe_webhook(stack: DemoStack, name: str, endpoint: str) -> None:
    subject = f"targets/{TARGET}"
    body = {
        "endpoint": endpoint,
        "deliverySchema": "CloudEventSchemaV1_0",
        "filter": {"subjectBeginsWith": subject, "subjectEndsWith": subject},
        "retrySchedule": FAST_RETRIES,
    }
    response = stack.control("PUT", f"eventgrid/subscriptions/{name}", json=body)
    assert response.status_code in (200, 201), response.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("kit-stack")
    stack = DemoStack(root / "main", policy=str(write_policy(root / "policy.json")))
    stack.start()
    services: list[Service] = []
    try:
        stack.set_auto_advance(False)
        emu = stack.emulator
        env = {"KEY_VAULT_URL": emu["keyVault"], **stack.app_settings()}
        target = load_policy(stack.policy, env).target(TARGET)
        assert target is not None and target.probe is not None
        seed_sites(stack, [target])
        create_operator_keys(stack, [target])
        store_operator_key(stack, target)
        url = f"{emu['url']}/_targets/{target.function_app.default_host_name}{target.probe.path}"
        for index, (name, oid) in enumerate(INSTANCES):
            spec = ConsumerSpec(TARGET, oid, name, emu["keyVault"], target.key_vault.secret_name)
            settings = consumer_environment(stack.endpoints, spec, mint_token(stack.state_dir, name, oid))
            kit = ConsumerKit(load_settings({**settings, "CONSUMER_REFRESH_SECONDS": str(REFRESH_SECONDS)}))
            service = Service(name, kit.start(), url, stack.ca_bundle)
            services.append(service)
            endpoint = service.webhook()
            if index == 0:  # instance 2 never gets its events: the lost-event case
                subscribe_webhook(stack, f"kit-{name}", endpoint)
            service.call_continuously()
        world = World(stack, target, services)
        world.wait("the first successful calls", lambda: all(s.calls and s.calls[-1][1] == 200 for s in services))
        yield world
    finally:
        for service in services:
            service.close()
        stack.stop()


def test_a_scheduled_rotation_costs_no_failed_call_and_both_acks_end_the_overlap(world: World) -> None:
    world.set_phase("scheduled")
    assert world.stack.run_function("rotation_timer") == 202
    final = world.finished()
    world.keep_calling(1.5)  # past the revocation of the old key
    world.set_phase("after-scheduled")
    print("\nscheduled rotation: " + "; ".join(s.report("scheduled") for s in world.services))

    assert final["runtimeStatus"] == "Completed" and final["output"]["outcome"] == "completed", final
    steps = final["customStatus"]["steps"]
    overlap = next(s for s in steps if s["step"] == "overlap")
    assert overlap["detail"] == "every consumer switched", steps
    acked = {s["actor"]["objectId"] for s in steps if s["step"] == "ack"}
    assert acked == {oid for _, oid in INSTANCES}, steps
    for service in world.services:
        assert service.failures("scheduled") == 0, service.report("scheduled")
        state = service.kit.state()
        assert state["secretId"] == final["customStatus"]["secretId"]
        assert state["ack"]["status"] == "acknowledged" and state["ack"]["rotationId"] == final["output"]["rotationId"]
    # The live key is the one both hold; the old key is gone from the target.
    keys = demo_report.live_keys(world.stack.control_json("state"), world.target)
    assert world.target.base_key_name not in keys
    held = {s.kit.state()["fingerprint"] for s in world.services}
    assert held == {fingerprint(keys[final["output"]["keyName"]])}
    # The lost event: instance 2 switched by its periodic refresh (no event was ever delivered to it).
    assert world.services[1].kit.state()["counters"]["events"] == 0
    assert world.services[0].kit.state()["counters"]["events"] >= 1


def test_an_emergency_costs_at_most_one_failed_call_per_instance(world: World) -> None:
    world.set_phase("emergency")
    status = world.stack.api_as(
        *RESPONDER, "KeyRotation.Emergency", "POST", f"/targets/{TARGET}/emergency-rotation",
        json={"reason": "kit test: the key was pasted in a chat"},
    )  # fmt: skip
    assert status == 202
    final = world.finished()
    assert final["customStatus"]["mode"] == "emergency" and final["runtimeStatus"] == "Completed", final
    world.keep_calling(1.5)
    world.set_phase("after-emergency")
    world.keep_calling(0.5)
    print("\nemergency rotation: " + "; ".join(s.report("emergency") for s in world.services))
    for service in world.services:
        assert service.failures("emergency") <= 1, service.report("emergency")
        assert [c[1] for c in service.calls if c[0] == "after-emergency"][:3] == [200] * 3
        assert service.kit.state()["secretId"] == final["customStatus"]["secretId"]


def test_a_key_vault_outage_keeps_the_cached_key_and_backs_off(world: World) -> None:
    stack = world.stack
    before = {s.name: s.kit.state()["counters"]["keyVaultFailures"] for s in world.services}
    fault = {"operation": "keyvault.*", "status": 503, "times": None}
    stack.control("POST", "faults", json=fault).raise_for_status()
    world.set_phase("outage")
    outage = 6.0
    try:
        world.keep_calling(outage)
    finally:
        stack.control("DELETE", "faults").raise_for_status()
    world.set_phase("after-outage")
    print("\nKey Vault outage: " + "; ".join(s.report("outage") for s in world.services))
    for service in world.services:
        assert service.failures("outage") == 0, service.report("outage")
        tried = service.kit.state()["counters"]["keyVaultFailures"] - before[service.name]
        # Every REFRESH_SECONDS without backoff (6); with it (1, 2, 4 s, half jittered) at most 4.
        assert 1 <= tried <= 4, tried
        assert "HTTP 503" in str(service.kit.state()["lastRefreshError"])
    world.wait(
        "recovery after the outage",
        lambda: all(s.kit.state()["lastRefreshError"] is None for s in world.services),
        timeout=MAX_RECOVERY,
    )


MAX_RECOVERY = 40.0  # the longest backoff after four failures (8 s), plus the periodic interval and slack
