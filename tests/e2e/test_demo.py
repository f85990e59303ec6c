"""`make demo` (tools/): what it seeds, how it judges a rotation's end state, what its timeline shows, and
the whole demo end to end."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotation.policy import Policy, Target, load_policy
from tests.emulator_process import Emulator
from tools import demo_report as report
from tools import demo_seed as seed
from tools.devhost_launcher import POLICY, ROOT, DemoStack

SITE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/keyrotation-demo/providers/Microsoft.Web/sites"
)
OLD_VALUE = "o" * 54 + "=="
NEW_VALUE = "n" * 54 + "=="
NEW_NAME = "orders-client-20260105t030000z-s"


def local_policy(
    url: str = "https://127.0.0.1:8443", workspace: str = "00000000-0000-0000-0000-0000000000ff"
) -> Policy:
    env = {"KEY_VAULT_URL": url, "ARM_ENDPOINT": url, "LOG_ANALYTICS_WORKSPACE_ID": workspace}
    return load_policy(ROOT / POLICY, environ=env)


@pytest.fixture(scope="module")
def orders() -> Target:
    target = local_policy().target("demo-orders")
    assert target is not None
    return target


# -- recorded end states ---------------------------------------------------------------------------


def final_status(**custom: Any) -> dict[str, Any]:
    status = {
        "rotationId": "demo-orders-20260105t030000z-s",
        "targetId": "demo-orders",
        "mode": "scheduled",
        "stage": "completed",
        "keyName": NEW_NAME,
        "version": "b" * 32,
        "secretId": "https://127.0.0.1:8443/secrets/demo-orders-client-key/" + "b" * 32,
        "previousKeyName": "orders-client",
        "previousVersion": "a" * 32,
        "overlapEndsAt": "2026-01-07T03:00:00Z",
        "trigger": {"actor": {"kind": "schedule", "name": "timer"}, "reason": "interval-elapsed"},
        "steps": [
            {"step": "provision", "status": "done", "at": "2026-01-05T03:00:00Z", "detail": f"key {NEW_NAME}"},
            {"step": "overlap", "status": "done", "at": "2026-01-05T19:00:00Z", "detail": "every consumer switched"},
            {"step": "done", "status": "done", "at": "2026-01-05T19:15:00Z"},
        ],
        "hold": None,
        **custom,
    }
    return {"runtimeStatus": "Completed", "customStatus": status, "output": {"outcome": "completed"}}


def emulator_state(old_key_live: bool = False, old_enabled: bool = False, new_value: str = NEW_VALUE) -> dict[str, Any]:
    retired = None if old_key_live else "2026-01-05T19:00:00.000Z"
    keys = [
        {"scope": "masterKey", "function": None, "name": "_master", "value": "m" * 56, "retired": None},
        {"scope": "functionKeys", "function": None, "name": "default", "value": "d" * 56, "retired": None},
        {"scope": "functionKeys", "function": None, "name": "orders-client", "value": OLD_VALUE, "retired": retired},
        {"scope": "functionKeys", "function": None, "name": NEW_NAME, "value": NEW_VALUE, "retired": None},
        {"scope": "functionKeys", "function": None, "name": "orders-v2", "value": "v" * 56, "retired": None},
    ]
    versions = [
        {"version": "a" * 32, "value": OLD_VALUE, "enabled": old_enabled, "created": 1},
        {"version": "b" * 32, "value": new_value, "enabled": True, "created": 2},
    ]
    return {
        "arm": {"sites": [{"id": f"{SITE}/demo-orders", "instances": [{"slot": None, "keys": keys}]}]},
        "keyvault": {"secrets": {"demo-orders-client-key": {"versions": versions}}},
    }


def events(*types: str, target: str = "demo-orders") -> list[dict[str, Any]]:
    return [
        {
            "id": f"id-{i}",
            "type": f"KeyRotation.{t}",
            "subject": f"targets/{target}",
            "event": {"time": f"2026-01-05T03:0{i}:00Z"},
        }
        for i, t in enumerate(types)
    ]


ALL_EVENTS = ("RotationStarted", "NewKeyAvailable", "OldKeyRevoked", "RotationCompleted")


def failed_checks(checks: list[report.Check]) -> list[str]:
    return [c.text for c in checks if not c.ok]


def test_a_correct_rotation_passes_every_check(orders: Target) -> None:
    received = events(*ALL_EVENTS) + events(*ALL_EVENTS)[1:2]  # NewKeyAvailable delivered twice (same id)
    checks = report.check_rotation(orders, final_status(), emulator_state(), received, held=False)
    assert failed_checks(checks) == [] and len(checks) == 5


@pytest.mark.parametrize(
    ("final", "state", "received", "complaint"),
    [
        (final_status() | {"runtimeStatus": "Failed"}, emulator_state(), events(*ALL_EVENTS), "ended Failed"),
        (final_status(), emulator_state(old_key_live=True), events(*ALL_EVENTS), "still there: orders-client"),
        (final_status(), emulator_state(new_value="x" * 56), events(*ALL_EVENTS), "values differ"),
        (final_status(version="c" * 32), emulator_state(), events(*ALL_EVENTS), "(it is bbbbbbbb…)"),
        (final_status(), emulator_state(old_enabled=True), events(*ALL_EVENTS), "still enabled: aaaaaaaa…"),
        (final_status(), emulator_state(), events(*ALL_EVENTS[1:]), "received: NewKeyAvailable → Old"),
        (final_status(), emulator_state(), events(*reversed(ALL_EVENTS)), "received: RotationCompleted → Old"),
        (None, emulator_state(), [], "no rotation instance was started"),
    ],
)
def test_each_expectation_can_fail(
    orders: Target, final: dict[str, Any] | None, state: dict[str, Any], received: list[dict[str, Any]], complaint: str
) -> None:
    failures = failed_checks(report.check_rotation(orders, final, state, received, held=False))
    assert any(complaint in failure for failure in failures), failures


def test_a_held_rotation_needs_the_hold_event_and_the_approval(orders: Target) -> None:
    held = events("RotationStarted", "NewKeyAvailable", "RotationHeld", "OldKeyRevoked", "RotationCompleted")
    assert failed_checks(report.check_rotation(orders, final_status(), emulator_state(), held, True, True)) == []
    not_approved = failed_checks(report.check_rotation(orders, final_status(), emulator_state(), held, True, False))
    assert not_approved == [
        "held by the gate, approved by the demo's approver, then completed (the approval was not delivered)"
    ]
    never_held = failed_checks(
        report.check_rotation(orders, final_status(), emulator_state(), events(*ALL_EVENTS), True, True)
    )
    assert len(never_held) == 2 and "never held" in never_held[1]


def test_the_timeline_shows_steps_keys_versions_and_events_but_no_value(orders: Target) -> None:
    lines = report.timeline(orders, final_status(), emulator_state(), events(*ALL_EVENTS), real_seconds=2.5)
    text = "\n".join(lines)
    assert "2026-01-05 03:00:00  provision" in text
    assert f"orders-client  →  {NEW_NAME}" in text
    assert "current bbbbbbbb…  previous aaaaaaaa… (disabled)" in text
    assert "ended 1d 8h 0m early" in text
    event_lines = [line.split()[-2:] for line in lines if "Rotation" in line or "Key" in line.split()[-1]]
    assert event_lines[-4:] == [
        ["03:00:00", "RotationStarted"],
        ["03:01:00", "NewKeyAvailable"],
        ["03:02:00", "OldKeyRevoked"],
        ["03:03:00", "RotationCompleted"],
    ]
    assert "elapsed    16h 15m 0s virtual (2.5 s real)" in text
    for value in (OLD_VALUE, NEW_VALUE, OLD_VALUE.rstrip("=")):
        assert value not in text


def test_the_timeline_of_a_rotation_that_never_started(orders: Target) -> None:
    text = "\n".join(report.timeline(orders, None, {}, []))
    assert "not started" in text and "events     none received" in text


def test_sites_come_from_the_policy() -> None:
    specs = {s.name: s.functions for s in seed.site_specs(local_policy())}
    assert specs == {"demo-orders": ("ping",), "demo-reports": ("ExportReport",)}


# -- seeding against the emulators -----------------------------------------------------------------


def stack_on(emulator: Emulator, tmp_path: Path) -> DemoStack:
    return DemoStack(tmp_path, endpoints={"emulator": emulator.endpoints, "caBundle": emulator.ca})


def test_seeding_builds_what_the_demo_needs(emulator: Emulator, tmp_path: Path) -> None:
    stack = stack_on(emulator, tmp_path)
    policy = local_policy(emulator.url, emulator.endpoints["workspaceId"])
    seed.seed_sites(stack, policy)
    made = seed.create_operator_keys(stack, policy)
    assert made == [
        "demo-orders/host/functionKeys/orders-client",
        "demo-reports/functions/ExportReport/keys/reports-export",
    ]
    assert seed.create_operator_keys(stack, policy) == []  # a rerun keeps the operator's keys as they are
    puts = [r for r in emulator.requests_log() if r["method"] == "PUT" and r["path"].startswith("/subscriptions/")]
    assert {r["caller"] for r in puts} == {seed.OPERATOR[0]} and {r["status"] for r in puts} == {201}

    now = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
    assert seed.seed_telemetry(stack, policy, now, failing="demo-reports-export") == {
        "demo-orders": 16,
        "demo-reports-export": 20,
    }
    http = emulator.state()["loganalytics"]["rows"][emulator.endpoints["workspaceId"]]["AppServiceHTTPLogs"]
    failures = [r for r in http if r["ScStatus"] == 401]
    assert len(failures) == 12 and {r["CsHost"] for r in failures} == {"demo-reports.azurewebsites.net"}
    stamps = [datetime.fromisoformat(r["TimeGenerated"].replace("Z", "+00:00")) for r in failures]
    assert all(now < at < now + timedelta(days=1) for at in stamps)  # inside the overlap, none in the baseline


def test_a_consumer_read_lands_in_the_key_vault_audit_under_its_identity(emulator: Emulator, tmp_path: Path) -> None:
    from activities.clients import secret_client

    stack = stack_on(emulator, tmp_path)
    target = local_policy(emulator.url).target("demo-orders")
    assert target is not None
    with secret_client(emulator.url, emulator.settings()) as vault:
        version = vault.set_secret(target.key_vault.secret_name, NEW_VALUE).properties.version
    seed.consumer_reads_version(stack, target, str(version), ("00000000-0000-0000-0000-00000000c001", "billing-worker"))
    audit = emulator.control("GET", "keyvault/audit").json()["value"]
    reads = [r for r in audit if r["operation"] == "SecretGet" and r["status"] == 200]
    assert [(r["caller_oid"], r["version"]) for r in reads] == [("00000000-0000-0000-0000-00000000c001", version)]


# -- the demo itself -------------------------------------------------------------------------------


@pytest.mark.slow
def test_make_demo_end_to_end(tmp_path: Path) -> None:
    """What `make demo` runs: exit 0 only when both rotations ended as expected and I1/I2 hold."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--state", str(tmp_path / "demo"), "--timeout", "90"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "demo PASSED" in result.stdout and "FAIL " not in result.stdout
    for line in ("PASS  I1", "PASS  I2", "RotationHeld", "approved"):
        assert line in result.stdout
