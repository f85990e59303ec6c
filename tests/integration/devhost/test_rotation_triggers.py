"""The real app on devhost: policy validation at startup, the timer's duplicate-tick rule, and Key Vault
near-expiry events starting (or ignoring) a rotation."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from rotation.policy import parse_policy
from tests.rotation_harness import LOCAL_POLICY, PLACEHOLDER_ENV, Durable
from tools.devhost_launcher import ROOT, Devhost, devhost_command, running_devhost
from triggers.near_expiry import read_near_expiry

BASE_ENV = {"ROTATION_POLICY_PATH": str(LOCAL_POLICY), "ROTATION_SCHEDULE": "0 0 3 * * *"}
SUB, RG = "00000000-0000-0000-0000-000000000000", "keyrotation-demo"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    state = tmp_path_factory.mktemp("triggers")
    with running_devhost(state, ROOT, clock="virtual", timers=False, env=BASE_ENV) as host:
        emulator = host.endpoints["emulator"]
        for site, function in (("demo-orders", "ping"), ("demo-reports", "ExportReport")):
            requests.put(
                f"{emulator['control']}/sites/{SUB}/{RG}/{site}",
                json={"functions": [function]},
                verify=emulator["caBundle"],
                timeout=10,
            ).raise_for_status()
        yield host


def instances(host: Devhost, prefix: str) -> list[dict]:
    durable = Durable(host)
    response = host.get("/runtime/webhooks/durabletask/instances", params={**durable.code, "instanceIdPrefix": prefix})
    response.raise_for_status()
    return response.json()


def test_an_invalid_policy_stops_the_app_at_startup_naming_target_and_field(tmp_path: Path) -> None:
    policy = json.loads(LOCAL_POLICY.read_text())
    policy["targets"][0]["baseKeyName"] = "Not A Key Name!"
    policy["targets"][1]["keyScope"] = {"kind": "systemKeys"}
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps(policy))
    command = devhost_command(tmp_path / "state", ROOT, clock="virtual", timers=False)
    env = {**os.environ, **BASE_ENV, "ROTATION_POLICY_PATH": str(bad), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert 'targets[0] (id "demo-orders"): baseKeyName' in done.stderr
    assert 'targets[1] (id "demo-reports-export"): keyScope' in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state" / "endpoints.json").exists()


def near_expiry(secret: str, version: str = "0" * 32) -> list[dict]:
    return [
        {
            "id": f"evt-{secret}",
            "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.KeyVault/vaults/emulator",
            "subject": secret,
            "eventType": "Microsoft.KeyVault.SecretNearExpiry",
            "eventTime": "2026-11-22T03:00:00Z",
            "dataVersion": "1",
            "data": {
                "Id": f"https://127.0.0.1/secrets/{secret}/{version}",
                "VaultName": "127",
                "ObjectType": "Secret",
                "ObjectName": secret,
                "Version": version,
            },
        }
    ]


def deliver(host: Devhost, events: list[dict]) -> int:
    params = {"functionName": "secret_near_expiry", "code": host.system_key("eventgrid_extension")}
    headers = {"aeg-event-type": "Notification"}
    return host.post("/runtime/webhooks/EventGrid", params=params, headers=headers, json=events).status_code


def test_near_expiry_of_a_policy_secret_starts_that_targets_rotation(app: Devhost) -> None:
    assert deliver(app, near_expiry("demo-reports-export-key")) == 202
    status = Durable(app).wait("rotation-demo-reports-export", stage="overlap", timeout=30)
    assert status["customStatus"]["trigger"]["actor"]["kind"] == "event"
    assert "near expiry" in status["customStatus"]["trigger"]["reason"]
    # A second delivery of the same event (Event Grid is at-least-once) starts nothing new: the running
    # rotation is the same one (same rotation id, same start), not a restart of the instance id.
    (before,) = instances(app, "rotation-demo-reports-export")
    assert deliver(app, near_expiry("demo-reports-export-key")) == 202
    time.sleep(0.3)
    (after,) = instances(app, "rotation-demo-reports-export")
    assert after["createdTime"] == before["createdTime"]
    assert after["customStatus"]["rotationId"] == before["customStatus"]["rotationId"]


def test_near_expiry_of_other_secrets_is_ignored_with_a_log_line(app: Devhost) -> None:
    before = {i["instanceId"] for i in instances(app, "rotation-")}
    assert deliver(app, near_expiry("someone-elses-secret")) == 202
    time.sleep(0.5)
    assert {i["instanceId"] for i in instances(app, "rotation-")} == before
    log = (app.state_dir / "logs" / "host.log").read_text()
    assert "Ignored near-expiry event: secret someone-elses-secret of vault 127 is not in the policy" in log


LEAKED = "fr5V3_DuT3sj89nhoI-R-3L0Kmm_e87q7Dv-9QEBdNRYAzFu7A7yeA=="


def forged(**data: object) -> list[dict]:
    """A near-expiry event for demo-orders' secret, with some data fields replaced (None: left out)."""
    (event,) = near_expiry("demo-orders-client-key")
    event["data"] = {k: v for k, v in {**event["data"], **data}.items() if v is not None}
    return [event]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"Version": f"{LEAKED}\x00\x1b[2J\u202e\r\n"}, "data.Version"),  # the issue-12 repro
        ({"Version": "f" * 200_000}, "data.Version"),  # the other one: a 200 KB reason
        ({"Version": "0" * 31}, "data.Version"),
        ({"Version": None}, "data.Version"),
        ({"VaultName": None}, "data.VaultName"),  # any vault would have done
        ({"VaultName": "someone-elses-vault"}, "is not in the policy"),
        ({"ObjectName": "demo-orders-client-key\u2028"}, "data.ObjectName"),
        ({"ObjectName": 42}, "data.ObjectName"),
    ],
)
def test_a_forged_near_expiry_event_is_dropped_with_a_value_free_line(app: Devhost, data: dict, field: str) -> None:
    """Issue 12: with only the eventgrid_extension key, a key value in `data.Version` was accepted; the
    rotation it started crashed and kept the value in its input. Now nothing starts, and the delivery
    still succeeds (the trigger cannot refuse one event; a failure would only make Event Grid resend it)."""
    log_file = app.state_dir / "logs" / "host.log"
    seen = len(log_file.read_text())
    assert deliver(app, forged(**data)) == 202
    time.sleep(0.3)
    assert instances(app, "rotation-demo-orders") == []
    log = log_file.read_text()[seen:]
    assert "Ignored near-expiry event: " in log and field in log
    assert LEAKED not in log and "\x1b" not in log and "f" * 100 not in log


def test_a_real_near_expiry_event_names_its_target_and_version() -> None:
    """The docs page's own example writes `"Version": " ee059b…"`: surrounding spaces are dropped."""
    policy = parse_policy(json.loads(LOCAL_POLICY.read_text()), PLACEHOLDER_ENV)
    data = near_expiry("DEMO-ORDERS-CLIENT-KEY", " " + "AB" * 16)[0]["data"]
    found, why = read_near_expiry(policy, data)
    assert found is not None and why == "" and found.target.id == "demo-orders"
    assert found.reason == f"Key Vault reported version {'ab' * 16} of demo-orders-client-key near expiry"
    master, why = read_near_expiry(policy, near_expiry("demo-orders-master-key")[0]["data"])
    assert master is None and "not a scheduled target" in why


def test_a_duplicate_timer_tick_starts_one_scheduler(app: Devhost) -> None:
    headers = {"x-functions-key": app.master_key}
    for _ in range(2):
        assert app.post("/admin/functions/rotation_timer", headers=headers, json={"input": ""}).status_code == 202
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not instances(app, "scheduler-"):
        time.sleep(0.1)
    time.sleep(1)  # let the second invocation finish its check
    assert len(instances(app, "scheduler-")) == 1
    assert "duplicate tick ignored" in (app.state_dir / "logs" / "host.log").read_text()
