"""The operator API's test stack: the real app on devhost (virtual clock, no timers) with the emulators,
the demo policy's function apps seeded, and helpers to call the API as someone, read the durable
instances and the emulators' request log, and drive a rotation to a stage.

The clock's auto-advance is off: a rotation stays in a stage until a test moves time (`advance`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from rotation.identity import ROLES
from rotation.policy import Policy, load_policy
from tests.rotation_harness import LOCAL_POLICY, TERMINAL, Durable
from tools.demo_seed import create_operator_keys, seed_sites
from tools.devhost_launcher import ROOT, Devhost, running_devhost

BASE_ENV = {"ROTATION_POLICY_PATH": str(LOCAL_POLICY), "ROTATION_SCHEDULE": "0 0 3 * * *"}
ORDERS, REPORTS, MASTER = "demo-orders", "demo-reports-export", "demo-orders-master"
BILLING = ("billing-worker", "00000000-0000-0000-0000-00000000c001")  # a registered consumer of demo-orders
FINANCE = ("finance-portal", "00000000-0000-0000-0000-00000000c003")  # of demo-reports-export
QUIET = ("overlap", "held", "watching")
UNREADABLE_SIGNAL = {"operation": "logs.query", "status": 400, "code": "BadArgumentError", "times": None}


class ApiStack:
    """One devhost with the app, and everything a test needs around the operator API."""

    def __init__(self, host: Devhost) -> None:
        self.host = host
        self.durable = Durable(host)
        self.stack = host  # the same launcher also speaks to the emulators' control API
        self._tokens: dict[tuple[str, tuple[str, ...], str | None], str] = {}

    # -- calling the API ----------------------------------------------------------------------------
    def token(self, name: str, *roles: str, oid: str | None = None) -> str:
        key = (name, tuple(roles), oid)
        if key not in self._tokens:
            self._tokens[key] = self.host.token(name, *roles, oid=oid)
        return self._tokens[key]

    def call(
        self, method: str, path: str, *, as_: str | None = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> requests.Response:
        """`as_` is a bearer token (see token()); None calls anonymously."""
        all_headers = dict(headers or {})
        if as_ is not None:
            all_headers["Authorization"] = f"Bearer {as_}"
        path = f"/api/{path.lstrip('/')}"
        return self.host.request(method, path, headers=all_headers, anonymous=as_ is None, **kw)

    def all_roles(self, name: str = "admin", oid: str | None = None) -> str:
        return self.token(name, *ROLES, oid=oid)

    # -- durable state ------------------------------------------------------------------------------
    def instances(self) -> dict[str, tuple[str, str]]:
        """instance id -> (created time, runtime status)."""
        response = self.host.get("/runtime/webhooks/durabletask/instances", params=self.durable.code)
        response.raise_for_status()
        return {i["instanceId"]: (i["createdTime"], i["runtimeStatus"]) for i in response.json()}

    def starts(self) -> set[tuple[str, str]]:
        """Every (instance, created time): a new start or a restart of an id changes it."""
        return {(iid, created) for iid, (created, _) in self.instances().items()}

    def raised_events(self, instance_id: str) -> int:
        try:
            history = self.durable.history(instance_id)
        except requests.HTTPError:
            return 0
        return sum(1 for e in history if e.get("EventType") in (15, "EventRaised"))

    def status(self, instance_id: str) -> dict[str, Any]:
        return self.durable.status(instance_id)

    def stage(self, instance_id: str) -> str | None:
        custom = self.status(instance_id).get("customStatus")
        return custom.get("stage") if isinstance(custom, dict) else None

    def wait(self, instance_id: str, stage: str | None = None, timeout: float = 60) -> dict[str, Any]:
        return self.durable.wait(instance_id, stage=stage, timeout=timeout)

    def settle(self, timeout: float = 30) -> None:
        """Until every running rotation waits on a timer or an event (overlap, held, watching): no
        activity is then in flight, so the emulators see no calls until a test acts or moves time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [
                iid
                for iid, (_, runtime) in self.instances().items()
                if runtime in ("Running", "Pending") and self.stage(iid) not in QUIET and iid.startswith("rotation-")
            ]
            if not busy:
                return
            time.sleep(0.03)
        raise TimeoutError(f"rotations still busy: {busy}")

    def advance(self, seconds: float) -> None:
        self.durable.clock(advanceBy=seconds)

    def terminate(self, instance_id: str) -> None:
        """Test housekeeping through the Durable HTTP API (not the operator API under test)."""
        status = self.status(instance_id)
        if status.get("runtimeStatus") in ("Running", "Pending"):
            self.host.post(
                f"/runtime/webhooks/durabletask/instances/{instance_id}/terminate",
                params={**self.durable.code, "reason": "test reset"},
            )
            deadline = time.monotonic() + 20
            while self.status(instance_id).get("runtimeStatus") not in TERMINAL and time.monotonic() < deadline:
                time.sleep(0.02)

    # -- emulators ----------------------------------------------------------------------------------
    def emulator_state(self) -> dict[str, Any]:
        return self.stack.control_json("state")

    def request_log(self, since: int = 0) -> list[dict[str, Any]]:
        return list(self.stack.control_json(f"requests?since={since}")["value"])

    def last_seq(self) -> int:
        log = self.request_log()
        return max((int(r["seq"]) for r in log), default=0)

    def add_fault(self, rule: dict[str, Any]) -> None:
        self.stack.control("POST", "faults", json=rule).raise_for_status()

    def live_keys(self, site: str, scope: str = "functionKeys", function: str | None = None) -> dict[str, str]:
        """name -> value of the live keys of one scope of a production-slot site (from the snapshot)."""
        for s in self.emulator_state()["arm"]["sites"]:
            if s["name"] != site:
                continue
            instance = next(i for i in s["instances"] if i.get("slot") is None)
            return {
                k["name"]: k["value"]
                for k in instance["keys"]
                if k["retired"] is None and k["scope"] == scope and (function is None or k["function"] == function)
            }
        raise KeyError(site)

    def policy(self) -> Policy:
        env = {"KEY_VAULT_URL": self.stack.emulator["keyVault"], **self.stack.app_settings()}
        return load_policy(LOCAL_POLICY, env)

    # -- driving a rotation -------------------------------------------------------------------------
    def fresh_rotation(self, target_id: str, stage: str = "overlap") -> str:
        """A new on-demand rotation of the target (through the API) in `stage` ("overlap" or "held")."""
        self.terminate(f"rotation-{target_id}")
        operator = self.token("operator", "KeyRotation.Operator")
        response = self.call("POST", f"targets/{target_id}/rotations", as_=operator)
        assert response.status_code == 202, response.text
        rotation_id = response.json()["rotationId"]
        self.wait(f"rotation-{target_id}", stage="overlap")
        if stage == "held":
            self.advance(3 * 86400)  # past the overlap: the gate cannot read its signal, so it holds
            self.wait(f"rotation-{target_id}", stage="held")
        return rotation_id


@contextmanager
def api_stack(state: Path, *, easy_auth: bool = True, unreadable_signal: bool = True) -> Iterator[ApiStack]:
    with running_devhost(state, ROOT, clock="virtual", timers=False, easy_auth=easy_auth, env=BASE_ENV) as host:
        api = ApiStack(host)
        api.durable.clock(autoAdvance=False)
        targets = list(api.policy())
        seed_sites(api.stack, targets)
        create_operator_keys(api.stack, targets)
        if unreadable_signal:
            api.add_fault(UNREADABLE_SIGNAL)
        yield api
