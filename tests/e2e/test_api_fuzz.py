"""Property-based fuzzing of every operator API route's path, query and body, on the real app through
devhost: never a 5xx, nothing started, raised or called in Azure by any of it, and a real key value put
into the inputs never comes back in a response (nor reaches the host log).

Every target already has an emergency rotation waiting in its post-revocation watch (the virtual clock
stands still), so even a request that happens to be valid can start nothing: on-demand answers 409,
emergency returns the running one, decisions and acks are in the wrong stage. Any new instance, raised
event or Azure call is therefore a bug.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_stack import MASTER, ORDERS, REPORTS, ApiStack, api_stack

pytestmark = pytest.mark.slow

TARGETS = (ORDERS, REPORTS, MASTER)
FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))


class World:
    """The fuzzed stack, the key values it must never echo, and what must not change."""

    def __init__(self, api: ApiStack) -> None:
        self.api = api
        self.token = api.all_roles("fuzzer")
        self.rotations: dict[str, str] = {}
        for target in TARGETS:
            body = {"reason": "fuzzing baseline"}
            response = api.call("POST", f"targets/{target}/emergency-rotation", as_=self.token, json=body)
            assert response.status_code == 202, response.text
            self.rotations[target] = response.json()["rotationId"]
            api.wait(f"rotation-{target}", stage="watching")
        self.keys = sorted(self.all_key_values())
        assert self.keys

    def all_key_values(self) -> set[str]:
        values: set[str] = set()
        for site in self.api.emulator_state()["arm"]["sites"]:
            for instance in site["instances"]:
                values.update(k["value"] for k in instance["keys"])
        return values

    def observe(self) -> tuple[Any, ...]:
        time.sleep(0.2)  # an event raised by mistake would be in the history by then
        api = self.api
        starts = api.starts()
        raised = {iid: api.raised_events(iid) for iid, _ in starts}
        return starts, raised, [r for r in api.request_log() if r["service"] != "control"]

    def check(self, method: str, path: str, query: dict[str, str], body: bytes | None) -> None:
        headers = {"Content-Type": "application/json"}
        response = self.api.call(method, path, as_=self.token, params=query, data=body, headers=headers)
        assert response.status_code < 500, (path, response.status_code, response.text)
        shown = response.text + json.dumps(dict(response.headers))
        for key in self.keys:
            assert key not in shown and quote(key, safe="") not in shown, "a key value came back"
        if response.headers.get("Content-Type", "").startswith("application/json"):
            if response.status_code >= 400:
                assert {"code", "message"} <= response.json()["error"].keys()
        else:  # the host's own routing (a path no route template matches), before the app
            assert response.status_code in (404, 405), (path, response.status_code, response.text)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with api_stack(tmp_path_factory.mktemp("api-fuzz")) as api:
        world = World(api)
        yield world
        log = (api.host.state_dir / "logs" / "host.log").read_text()
        assert not [k for k in world.all_key_values() if k in log], "a key value reached the host log"


# -- strategies -------------------------------------------------------------------------------------

KEY_SLOT = "\x00KEY\x00"  # replaced by a real key value when the example runs


def tainted_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Text, sometimes a real key value or one glued into text."""
    plain = st.text(max_size=max_size)
    return st.one_of(plain, st.just(KEY_SLOT), st.builds(lambda a, b: a + KEY_SLOT + b, plain, plain))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | tainted_text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tainted_text(12), inner, max_size=3),
    max_leaves=6,
)
KNOWN_FIELDS = st.sampled_from(["reason", "overlap", "by"])
OBJECTS = st.dictionaries(st.one_of(KNOWN_FIELDS, tainted_text(12)), JSON_VALUES, max_size=4)
OVERFLOWING = ["PT99999999999999999999S", "P999999999999D", "P" + "9" * 400 + "D"]  # issue 12: were 500s
DURATIONS = st.sampled_from(
    ["PT0S", "PT30M", "PT1H", "PT2H", "P1D", "P8D", "P1M", "-PT1H", "PT", "1h", "", *OVERFLOWING]
)
TYPED = st.fixed_dictionaries(
    {}, optional={"reason": st.one_of(tainted_text(600), JSON_VALUES), "overlap": DURATIONS, "by": DURATIONS}
)
BODIES = st.one_of(
    st.none(),
    st.builds(lambda d: json.dumps(d), OBJECTS),
    st.builds(lambda d: json.dumps(d), TYPED),
    st.builds(lambda v: json.dumps(v), JSON_VALUES),
    st.text(max_size=60),
    st.binary(max_size=60),
)
QUERIES = st.dictionaries(st.one_of(st.just("code"), tainted_text(12)), tainted_text(20), max_size=2)


IMPOSSIBLE_DATES = ["20261301t000000z", "20260230t000000z", "20260101t250000z"]  # issue 12: were 500s


def segments(valid: list[str]) -> st.SearchStrategy[str]:
    impossible = [f"{ORDERS}-{stamp}-o" for stamp in IMPOSSIBLE_DATES]
    return st.one_of(
        st.sampled_from(valid + impossible), tainted_text(60), st.text(alphabet="abc-0123456789", max_size=60)
    )


def fill(value: Any, key: str) -> Any:
    return value.replace(KEY_SLOT, key) if isinstance(value, str) else value


ROUTES = [
    ("GET", "targets", None),
    ("GET", "targets/{}", "target"),
    ("POST", "targets/{}/rotations", "target"),
    ("POST", "targets/{}/emergency-rotation", "target"),
    ("GET", "rotations/{}", "rotation"),
    ("POST", "rotations/{}/ack", "rotation"),
    ("POST", "rotations/{}/approve", "rotation"),
    ("POST", "rotations/{}/abort", "rotation"),
    ("POST", "rotations/{}/extend", "rotation"),
]


@pytest.mark.parametrize(("method", "template", "kind"), ROUTES, ids=[f"{m} {t}" for m, t, _ in ROUTES])
def test_fuzzed_requests_never_fail_open_or_echo_a_key(world: World, method: str, template: str, kind: str) -> None:
    valid = list(TARGETS) if kind == "target" else [*world.rotations.values(), "demo-orders-20200101t000000z-s"]
    before = world.observe()

    @FUZZ
    @given(segment=segments(valid), query=QUERIES, body=BODIES, key_index=st.integers(0, 1000))
    def run(segment: str, query: dict[str, str], body: str | bytes | None, key_index: int) -> None:
        key = world.keys[key_index % len(world.keys)]
        path = template.format(quote(fill(segment, key), safe="")) if kind else template
        params = {fill(k, key): fill(v, key) for k, v in query.items()}
        data = fill(body, key)
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        world.check(method, path, params, raw)

    run()
    assert world.observe() == before, "a fuzzed request started, raised or called something"


def test_bodies_over_16_kib_are_refused_with_413(world: World) -> None:
    before = world.observe()
    big = json.dumps({"reason": "x" * (17 * 1024)}).encode()
    for path in (f"targets/{ORDERS}/emergency-rotation", f"rotations/{world.rotations[ORDERS]}/extend"):
        response = world.api.call("POST", path, as_=world.token, data=big)
        assert response.status_code == 413 and response.json()["error"]["field"] == "body"
    assert world.observe() == before


def test_errors_name_the_field_without_repeating_the_value(world: World) -> None:
    key = world.keys[0]
    cases = [
        (f"targets/{ORDERS}/emergency-rotation", {"reason": f"leaked: {key}"}, "reason"),
        (f"targets/{ORDERS}/emergency-rotation", {"reason": "leak", "overlap": key}, "overlap"),
        (f"targets/{ORDERS}/emergency-rotation", {"reason": "leak", "overlap": "PT2H"}, "overlap"),
        (f"targets/{ORDERS}/emergency-rotation", {"overlap": "PT0S"}, "reason"),
        (f"targets/{ORDERS}/rotations", {"reason": 42}, "reason"),
        (f"rotations/{world.rotations[ORDERS]}/extend", {"by": key}, "by"),
        (f"rotations/{world.rotations[ORDERS]}/extend", {}, "by"),
    ]
    for path, body, field in cases:
        response = world.api.call("POST", path, as_=world.token, json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error"]["field"] == field
        assert key not in response.text
    unknown = world.api.call("POST", f"targets/{ORDERS}/rotations", as_=world.token, json={key: "x"})
    assert unknown.status_code == 400 and key not in unknown.text
    assert unknown.json()["error"]["code"] == "unknown_field"
    coded = world.api.call("GET", "targets", as_=world.token, params={"code": key})
    assert coded.status_code == 400 and coded.json()["error"]["field"] == "code" and key not in coded.text


def test_overflowing_durations_and_impossible_rotation_dates_are_400_naming_the_field(world: World) -> None:
    """Issue 12: `parse_duration` raised OverflowError and `parse_rotation_id` a bare ValueError: 500s."""
    before = world.observe()
    running = world.rotations[ORDERS]
    for huge in OVERFLOWING:
        for path, body, field in (
            (f"targets/{ORDERS}/emergency-rotation", {"reason": "leak", "overlap": huge}, "overlap"),
            (f"rotations/{running}/extend", {"by": huge}, "by"),
        ):
            response = world.api.call("POST", path, as_=world.token, json=body)
            assert response.status_code == 400, (path, huge[:30], response.text)
            assert response.json()["error"]["field"] == field and huge not in response.text
    for stamp in IMPOSSIBLE_DATES:
        rotation_id = f"{ORDERS}-{stamp}-o"
        for method, suffix in (("GET", ""), ("POST", "/ack"), ("POST", "/approve"), ("POST", "/abort")):
            response = world.api.call(method, f"rotations/{rotation_id}{suffix}", as_=world.token, json={})
            assert response.status_code == 400, (rotation_id, suffix, response.text)
            assert response.json()["error"]["field"] == "id"
    assert world.observe() == before
