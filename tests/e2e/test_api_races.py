"""Concurrent starts on one target over the operator API, on the real app through devhost: the loser of a
race is told which rotation won, never a 500 (issue 12, finding 5: `[202, 409 x3, 500 x4]` for 8
on-demand calls, `[202, 500 x7]` for 8 emergencies, when the winner computed the same rotation id)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
import requests

from tests.api_stack import ORDERS, REPORTS, ApiStack, api_stack

pytestmark = pytest.mark.slow

CALLERS = 8


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    with api_stack(tmp_path_factory.mktemp("api-races")) as stack:
        yield stack


def all_at_once(api: ApiStack, path: str, token: str, body: dict[str, str]) -> list[requests.Response]:
    """CALLERS identical requests released together (a barrier, so they overlap in the app)."""
    barrier = Barrier(CALLERS)

    def one(_: int) -> requests.Response:
        barrier.wait()
        return api.call("POST", path, as_=token, json=body)

    with ThreadPoolExecutor(CALLERS) as pool:
        return list(pool.map(one, range(CALLERS)))


def test_parallel_on_demand_starts_answer_one_202_and_409s_naming_it(api: ApiStack) -> None:
    api.terminate(f"rotation-{ORDERS}")
    operator = api.token("operator", "KeyRotation.Operator")
    starts = api.starts()
    answers = all_at_once(api, f"targets/{ORDERS}/rotations", operator, {"reason": "race"})
    assert Counter(r.status_code for r in answers) == {202: 1, 409: CALLERS - 1}, [r.text for r in answers]
    (won,) = [r.json()["rotationId"] for r in answers if r.status_code == 202]
    for lost in (r for r in answers if r.status_code == 409):
        error = lost.json()["error"]
        assert error["code"] == "rotation_running" and won in error["message"]
    assert len(api.starts() - starts) == 1  # one rotation started, nothing else
    assert api.wait(f"rotation-{ORDERS}", stage="overlap")["customStatus"]["rotationId"] == won


def test_parallel_emergencies_answer_one_202_and_200s_naming_the_running_emergency(api: ApiStack) -> None:
    api.terminate(f"rotation-{REPORTS}")
    responder = api.token("responder", "KeyRotation.Emergency")
    starts = api.starts()
    answers = all_at_once(api, f"targets/{REPORTS}/emergency-rotation", responder, {"reason": "leaked"})
    assert Counter(r.status_code for r in answers) == {202: 1, 200: CALLERS - 1}, [r.text for r in answers]
    (won,) = [r.json()["rotationId"] for r in answers if r.status_code == 202]
    assert {r.json()["rotationId"] for r in answers} == {won}
    assert all(r.json()["mode"] == "emergency" and r.headers["Location"].endswith(won) for r in answers)
    assert len(api.starts() - starts) == 1
    assert api.wait(f"rotation-{REPORTS}", stage="watching")["customStatus"]["rotationId"] == won


def test_an_emergency_that_loses_a_race_to_an_on_demand_start_supersedes_it(api: ApiStack) -> None:
    """Half on-demand, half emergency, released together: whoever starts first, the emergency ends up owning
    the target, and no emergency caller is told 409 (or 500) because an on-demand start won by a moment."""
    api.terminate(f"rotation-{ORDERS}")
    operator = api.token("operator", "KeyRotation.Operator")
    responder = api.token("responder", "KeyRotation.Emergency")
    barrier = Barrier(CALLERS)

    def one(index: int) -> requests.Response:
        emergency = index % 2 == 0
        path = f"targets/{ORDERS}/{'emergency-rotation' if emergency else 'rotations'}"
        barrier.wait()
        return api.call("POST", path, as_=responder if emergency else operator, json={"reason": "race"})

    with ThreadPoolExecutor(CALLERS) as pool:
        answers = list(pool.map(one, range(CALLERS)))
    emergencies, on_demand = answers[0::2], answers[1::2]
    assert all(r.status_code in (200, 202) for r in emergencies), [r.text for r in emergencies]
    assert all(r.status_code in (202, 409) for r in on_demand), [r.text for r in on_demand]
    named = {r.json()["rotationId"] for r in emergencies}
    final = api.wait(f"rotation-{ORDERS}", stage="watching")["customStatus"]
    assert final["mode"] == "emergency" and final["rotationId"] in named
