"""Authorization matrix of the operator API, on the real app through devhost: every route x {no identity,
a forged principal header with App Service Authentication off, an identity without the route's role,
an identity with it} → 401 / 401 / 403 / 2xx, and the refused requests start, raise and terminate
nothing (durable instances, raised events, and the emulators' request log are unchanged).

With Easy Auth on, the platform (devhost) refuses an unauthenticated request before the app sees it;
with it off, the app's own 401 answers, so both doors are checked."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from rotation.identity import ROLES
from tests.api_stack import BILLING, ORDERS, REPORTS, ApiStack, api_stack

pytestmark = pytest.mark.slow

OID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"


@pytest.fixture(scope="module")
def on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    with api_stack(tmp_path_factory.mktemp("authz-on")) as stack:
        yield stack


@pytest.fixture(scope="module")
def off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    with api_stack(tmp_path_factory.mktemp("authz-off"), easy_auth=False) as stack:
        yield stack


def forged_principal(oid: str = BILLING[1]) -> str:
    """What Easy Auth would forward for a caller holding every role, made up by the client."""
    claims = [{"typ": "name", "val": "mallory"}, {"typ": OID_CLAIM, "val": oid}]
    claims += [{"typ": "roles", "val": role} for role in ROLES]
    body = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(body).encode()).decode()


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {rotation} is filled by prepare()
    role: str
    ok: int
    body: dict[str, Any] | None = None
    prepare: Callable[[ApiStack], str] | None = None  # returns the rotation id, leaving it in the right stage
    oid: str | None = None  # the caller's object id (ack: a registered consumer)


def idle(target_id: str) -> Callable[[ApiStack], str]:
    def prepare(api: ApiStack) -> str:
        api.terminate(f"rotation-{target_id}")
        return ""

    return prepare


def in_overlap(api: ApiStack) -> str:
    return api.fresh_rotation(ORDERS)


def held(api: ApiStack) -> str:
    return api.fresh_rotation(ORDERS, "held")


OPERATOR, EMERGENCY, APPROVER = "KeyRotation.Operator", "KeyRotation.Emergency", "KeyRotation.Approver"
READER, CONSUMER = "KeyRotation.Reader", "KeyRotation.Consumer"
ROUTES = [
    Route("GET", "targets", READER, 200),
    Route("GET", f"targets/{ORDERS}", READER, 200),
    Route("GET", "plan", READER, 200),
    Route("GET", f"targets/{ORDERS}/plan", READER, 200),
    Route("GET", f"targets/{ORDERS}/rotations", READER, 200),
    Route("GET", "openapi.json", READER, 200),
    Route("POST", f"targets/{REPORTS}/rotations", OPERATOR, 202, {"reason": "routine"}, idle(REPORTS)),
    Route("POST", f"targets/{REPORTS}/emergency-rotation", EMERGENCY, 202, {"reason": "leaked"}),
    Route("GET", "rotations/{rotation}", READER, 200, None, in_overlap),
    Route("POST", "rotations/{rotation}/ack", CONSUMER, 202, {}, in_overlap, BILLING[1]),
    Route("POST", "rotations/{rotation}/approve", APPROVER, 202, {}, held),
    Route("POST", "rotations/{rotation}/abort", APPROVER, 202, {"reason": "no"}, held),
    Route("POST", "rotations/{rotation}/extend", APPROVER, 202, {"by": "PT6H"}, held),
]


def observed(api: ApiStack) -> tuple[Any, ...]:
    """What a refused request must not change: instances started, events raised, calls to Azure."""
    time.sleep(0.2)  # an event raised by mistake would be in the history by then
    starts = api.starts()
    raised = {iid: api.raised_events(iid) for iid, _ in starts}
    return starts, raised, [r for r in api.request_log() if r["service"] != "control"]


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
def test_every_route_needs_an_identity_and_its_role(on: ApiStack, off: ApiStack, route: Route) -> None:
    rotation = route.prepare(on) if route.prepare else ""
    on.settle()
    path = route.path.format(rotation=rotation or "demo-orders-20260101t000000z-s")
    others = [r for r in ROLES if r != route.role]
    kwargs: dict[str, Any] = {} if route.body is None else {"json": route.body}
    before_on, before_off = observed(on), observed(off)

    anonymous = on.call(route.method, path, **kwargs)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    # With Easy Auth on, devhost (like App Service) strips a principal header the client made up.
    stripped = on.call(route.method, path, headers={"X-MS-CLIENT-PRINCIPAL": forged_principal()}, **kwargs)
    assert stripped.status_code == 401, stripped.text
    # With Easy Auth off nothing stands in front: the app refuses the anonymous caller itself ...
    app_refused = off.call(route.method, path, **kwargs)
    assert app_refused.status_code == 401, app_refused.text
    assert app_refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert app_refused.json()["error"]["code"] == "unauthenticated"
    # ... and a made-up principal header reaches the app, which must not trust it.
    forged = off.call(route.method, path, headers={"X-MS-CLIENT-PRINCIPAL": forged_principal()}, **kwargs)
    assert forged.status_code == 401, forged.text
    without_role = on.call(route.method, path, as_=on.token("no-role", *others, oid=route.oid), **kwargs)
    assert without_role.status_code == 403, without_role.text
    assert route.role in without_role.json()["error"]["message"]

    assert observed(on) == before_on, "a refused request changed something"
    assert observed(off) == before_off, "a refused request changed something"

    allowed = on.call(route.method, path, as_=on.token("allowed", route.role, oid=route.oid), **kwargs)
    assert allowed.status_code == route.ok, allowed.text
    assert allowed.headers["Content-Type"].startswith("application/json")
