"""The scheduler's start and progress activities against a scripted durable client: idempotent under
at-least-once execution, never a second rotation on a target, never a target rotated twice by two ticks."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from activities.rotation_starts import rotation_progress, start_rotation
from rotation import signing
from rotation.policy import current_policy
from rotation.scheduling import StartRequest
from tests.rotation_harness import SCRIPTED_POLICY_ENV

TICK = "2026-11-22T03:00:00.000Z"
OURS = "demo-orders-20261122t030000z-s"


def status(runtime: str, rotation_id: str, output: dict[str, Any] | None = None) -> Any:
    return SimpleNamespace(
        runtime_status=SimpleNamespace(name=runtime),
        input_=json.dumps({"rotationId": rotation_id}),
        custom_status={"stage": "overlap"},
        output=output,
    )


class Client:
    """get_status answers from a script (the last answer repeats); start_new is recorded."""

    def __init__(self, *answers: Any, refuse: bool = False) -> None:
        self.answers = list(answers) or [None]
        self.started: list[tuple[str, str, dict[str, Any]]] = []
        self.refuse = refuse

    async def get_status(self, instance_id: str, show_input: bool = False) -> Any:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def start_new(self, name: str, instance_id: str, payload: dict[str, Any]) -> None:
        if self.refuse:
            raise RuntimeError("An Orchestration instance with the status Running already exists.")
        self.started.append((name, instance_id, payload))


def start(client: Client, target_id: str = "demo-orders") -> dict[str, Any]:
    request = StartRequest(target_id, OURS, "interval-elapsed (tick t)", TICK).to_json()
    return asyncio.run(start_rotation(request, client))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def policy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SCRIPTED_POLICY_ENV.items():
        monkeypatch.setenv(name, value)


def test_a_free_target_is_started_with_its_definition_from_the_policy() -> None:
    client = Client(status("Completed", "demo-orders-20261001t030000z-s"))
    assert start(client) == {"started": True, "targetId": "demo-orders"}
    [(name, instance, payload)] = client.started
    assert (name, instance, payload["rotationId"]) == ("rotation_orchestrator", "rotation-demo-orders", OURS)
    # It names the target and is signed: the rotation's first step takes the definition from the policy.
    assert "target" not in payload and payload["targetId"] == "demo-orders"
    assert payload["fingerprint"] == current_policy().target("demo-orders").fingerprint  # type: ignore[union-attr]
    key = SCRIPTED_POLICY_ENV["KEYROTATION_SIGNING_KEY"].encode()
    assert signing.verify_input(key, payload) and payload["actor"]["kind"] == "schedule"


def test_a_retried_start_finds_its_own_rotation_even_once_it_ended_and_starts_nothing() -> None:
    for runtime in ("Running", "Completed", "Failed"):
        client = Client(status(runtime, OURS))
        assert start(client)["started"] is True and client.started == []


def test_a_running_rotation_keeps_the_target_and_is_reported_in_flight() -> None:
    client = Client(status("Running", "demo-orders-20261121t080000z-o"))
    answer = start(client)
    assert answer["started"] is False and answer["inFlight"]["rotationId"] == "demo-orders-20261121t080000z-o"
    assert client.started == []


def test_a_target_rotated_since_the_tick_began_is_not_rotated_again() -> None:
    client = Client(status("Completed", "demo-orders-20261123t030000z-s"))  # the next day's tick did it
    assert start(client) == {
        "started": False,
        "targetId": "demo-orders",
        "rotatedSince": "demo-orders-20261123t030000z-s",
    }
    assert client.started == []


def test_a_start_that_loses_the_race_reports_the_winner() -> None:
    client = Client(None, status("Running", "demo-orders-20261122t030005z-e"), refuse=True)
    answer = start(client)
    assert answer["started"] is False and answer["inFlight"]["rotationId"] == "demo-orders-20261122t030005z-e"


def test_a_target_gone_from_the_policy_is_not_started() -> None:
    client = Client(None)
    assert start(client, "no-such-target") == {"started": False, "targetId": "no-such-target", "notInPolicy": True}
    assert client.started == []


def test_progress_reads_running_ended_replaced_and_gone_rotations() -> None:
    def read(client: Client) -> dict[str, Any]:
        request = {"rotations": [{"targetId": "demo-orders", "rotationId": OURS}]}
        return asyncio.run(rotation_progress(request, client))["rotations"][0]  # type: ignore[arg-type]

    assert read(Client(status("Running", OURS)))["state"] == "running"
    ended = read(Client(status("Completed", OURS, {"outcome": "aborted"})))
    assert (ended["state"], ended["outcome"]) == ("ended", "aborted")
    replaced = read(Client(status("Running", "demo-orders-20261122t040000z-e")))
    assert (replaced["state"], replaced["by"]) == ("replaced", "demo-orders-20261122t040000z-e")
    assert read(Client(None, status("Running", OURS)))["state"] == "running"  # one failed read is not "gone"
    assert read(Client(None))["state"] == "gone"
