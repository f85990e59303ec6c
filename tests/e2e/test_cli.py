"""The `keyrotation` command as a user runs it: the installed console script in a subprocess, against the
local stack (tests/api_stack.py), its output and exit codes — each error case included. A plan changes
nothing (the emulators see only reads, the change journal stays as it was) and shows no key value.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from tests.api_stack import MASTER, ORDERS, REPORTS, ApiStack, api_stack
from triggers.openapi import document

pytestmark = pytest.mark.slow

COMMAND = Path(sys.executable).with_name("keyrotation")
# What a plan may ask of the emulators: listings of key names (ARM answers them with values, which the
# app drops) and Key Vault version properties. Never a secret value (keyvault.get_secret), never a write.
# identity.token: the managed identity endpoint, asked once per client and resource (a read of nothing)
READS = {"arm.list_function_keys", "arm.list_host_keys", "keyvault.list_versions", "identity.token"}
REASON = "cli test: key pasted in a ticket"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    if not COMMAND.exists():
        pytest.fail(f"{COMMAND} is missing: `make setup` installs the keyrotation command (pip install -e .)")
    with api_stack(tmp_path_factory.mktemp("cli")) as stack:
        yield stack


def run(api: ApiStack, *args: str, state: Path | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTATION_")}
    env["KEYROTATION_CONFIG"] = str(api.host.state_dir / "no-config.json")
    command = [str(COMMAND), *args, "--state", str(state or api.host.state_dir)]
    return subprocess.run(command, capture_output=True, text=True, env=env, input=stdin, timeout=120, check=False)


def key_values(api: ApiStack) -> list[str]:
    """Every key value the emulated apps hold (live or retired): none may appear in any output."""
    values = []
    for site in api.emulator_state()["arm"]["sites"]:
        for instance in site["instances"]:
            values += [k["value"] for k in instance["keys"] if k.get("value")]
    return values


def no_values(api: ApiStack, *outputs: str) -> None:
    values = key_values(api)
    assert values
    for output in outputs:
        assert not [v for v in values if v in output], "a key value appeared in the command's output"


def schema(name: str) -> dict[str, Any]:
    doc = document()
    return {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keyrotation: ") and text in lines[0], result.stderr


def test_plan_lists_every_target_with_its_verdict_and_blast_radius_and_changes_nothing(api: ApiStack) -> None:
    seq = api.last_seq()
    changes = len(api.stack.control_json("changes")["value"])
    result = run(api, "plan")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for target in (ORDERS, REPORTS, MASTER):
        row = next(line for line in lines if line.startswith(f"{target} "))
        assert "key(s) deleted" in row
    orders = next(line for line in lines if line.startswith(f"{ORDERS} "))
    assert " yes " in orders and "no-current-version" in orders and "orders-client" in orders
    master = next(line for line in lines if line.startswith(f"{MASTER} "))
    assert "emergency rotation only" in master
    assert "─" not in result.stdout and "\x1b[" not in result.stdout  # not a TTY: plain text, no colour

    as_json = run(api, "plan", "--json")
    assert as_json.returncode == 0
    jsonschema.validate(json.loads(as_json.stdout), schema("PlanAll"))
    detail = run(api, "plan", ORDERS, "--mode", "emergency", "--json")
    planned = json.loads(detail.stdout)
    jsonschema.validate(planned, schema("Plan"))
    assert planned["deleteKeys"] == ["orders-client"] and planned["overlap"] == "PT0S"
    assert not planned["gate"]["applies"]

    operations = {r["operation"] for r in api.request_log(since=seq)}
    assert operations and operations <= READS, operations
    assert len(api.stack.control_json("changes")["value"]) == changes
    assert not api.instances()  # nothing started either
    no_values(api, result.stdout, as_json.stdout, detail.stdout)


def test_targets_lists_the_policy(api: ApiStack) -> None:
    result = run(api, "targets")
    assert result.returncode == 0, result.stderr
    assert {ORDERS, REPORTS, MASTER} <= {line.split()[0] for line in result.stdout.splitlines()[2:] if line}


def test_errors_exit_with_their_code_and_one_line(api: ApiStack, tmp_path: Path) -> None:
    one_line_error(run(api, "plan", "no-such-target"), 5, "404 target_not_found")
    one_line_error(run(api, "plan", "Bad_Id"), 2, "400 invalid_input")
    one_line_error(run(api, "rotate", MASTER), 6, "409 master_key_emergency_only")
    one_line_error(run(api, "status", f"{ORDERS}-20260101t000000z-e"), 5, "404 rotation_not_found")
    one_line_error(
        run(api, "emergency", ORDERS, "--reason", REASON, "--yes", "--role", "KeyRotation.Reader"), 4, "403 forbidden"
    )
    starts = api.starts()
    one_line_error(run(api, "emergency", ORDERS, "--reason", REASON), 9, "not confirmed")  # stdin is no TTY
    assert api.starts() == starts
    usage = run(api, "emergency", ORDERS)  # --reason is required
    assert usage.returncode == 2 and "--reason" in usage.stderr

    # 401: a token signed with another key; 7: nothing listens where endpoints.json says.
    forged = tmp_path / "forged"
    forged.mkdir()
    shutil.copy(api.host.state_dir / "endpoints.json", forged / "endpoints.json")
    (forged / "easyauth.key").write_text("c29tZSBvdGhlciBrZXkgZm9yIHRoZSB0ZXN0IG9ubHk")
    one_line_error(run(api, "targets", state=forged), 3, "401 unauthenticated")
    down = tmp_path / "down"
    down.mkdir()
    endpoints = json.loads((api.host.state_dir / "endpoints.json").read_text())
    (down / "endpoints.json").write_text(json.dumps({**endpoints, "host": "http://127.0.0.1:9"}))
    shutil.copy(api.host.state_dir / "easyauth.key", down / "easyauth.key")
    one_line_error(run(api, "targets", state=down), 7, "cannot reach the app")
    one_line_error(run(api, "targets", state=tmp_path / "nothing"), 7, "no local stack running")


def test_the_read_routes_refuse_what_they_do_not_take(api: ApiStack) -> None:
    reader = api.token("reader", "KeyRotation.Reader")
    bad = {
        f"targets/{ORDERS}/plan?mode=sideways": "mode",
        f"targets/{ORDERS}/plan?overlap=PT0S": "overlap",
        f"targets/{ORDERS}/plan?mode=emergency&overlap=P99D": "overlap",
        f"targets/{ORDERS}/rotations?limit=0": "limit",
        f"targets/{ORDERS}/rotations?limit=many": "limit",
        f"targets/{ORDERS}/rotations?cursor={REPORTS}-20260101t000000z-s": "cursor",
        "plan?code=abc": "code",
        "openapi.json?x=1": "x",
    }
    for path, field in bad.items():
        response = api.call("GET", path, as_=reader)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["field"] == field, path
    assert api.call("GET", "targets/no-such-target/rotations", as_=reader).status_code == 404
    served = api.call("GET", "openapi.json", as_=reader).json()
    assert served == document()


def refused(api: ApiStack, key: str) -> bool:
    url = f"{api.stack.emulator['url']}/_targets/demo-orders.azurewebsites.net/api/ping"
    response = requests.get(url, headers={"x-functions-key": key}, verify=api.stack.ca_bundle, timeout=10)
    return response.status_code == 401


def test_emergency_kills_every_old_key_shows_the_timeline_and_the_history(api: ApiStack) -> None:
    old = {n: v for n, v in api.live_keys("demo-orders").items() if n.startswith("orders-client")}
    assert old and not any(refused(api, v) for v in old.values())
    api.durable.clock(autoAdvance=True)
    try:
        result = run(api, "emergency", ORDERS, "--reason", REASON, "--yes", "--interval", "0.2", "--timeout", "120")
    finally:
        api.durable.clock(autoAdvance=False)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "blast radius" in result.stdout and "orders-client" in result.stdout
    assert "revoke" in result.stdout and "completed" in result.stdout.splitlines()[-1]
    assert all(refused(api, v) for v in old.values())
    rotation_id = next(w for w in result.stdout.split() if w.startswith(f"{ORDERS}-") and w.endswith("-e"))

    history = run(api, "history", ORDERS)
    assert history.returncode == 0, history.stderr
    row = next(line for line in history.stdout.splitlines() if line.startswith(rotation_id))
    assert "emergency" in row and "completed" in row and REASON in row
    page = json.loads(run(api, "history", ORDERS, "--json", "--limit", "1").stdout)
    jsonschema.validate(page, schema("History"))
    assert page["rotations"][0]["rotationId"] == rotation_id

    status = run(api, "status", rotation_id)
    assert status.returncode == 0 and "completed" in status.stdout
    assert run(api, "watch", rotation_id).returncode == 0  # already over: the timeline, at once
    one_line_error(run(api, "approve", rotation_id), 6, "409 wrong_stage")
    no_values(api, result.stdout, history.stdout, status.stdout)
