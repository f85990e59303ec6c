"""check_drift against the emulators: what an operator and a consumer see when a target's keys change
behind the rotation's back (the host regenerates them, someone deletes one) — Key Vault repaired from
listkeys or a rotation asked for, a DriftDetected event, nothing written when in sync or unreadable,
running rotations left alone, and never a key value in the output, the logs or the events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from activities.drift import check_drift
from activities.due_targets import find_due_targets
from activities.events_publish import publish_events
from activities.function_keys import FunctionKeyStore
from emulators.core.invariants import Place, TargetRef, check_i2, parse_instant, scan, secret_values
from rotation import events, naming
from rotation.durations import format_timestamp
from rotation.policy import Target, parse_policy
from tests.emulator_process import Emulator
from tests.integration.emulators.test_activities_keys import (
    env,  # noqa: F401 - the fixture
    last_seq,
    live_keys,
    newest_enabled,
    operations,
    provision,
    run_logged,
    snapshot,
    target_document,
    versions,
)

NOW = datetime.now(UTC).replace(microsecond=0)
WRITES = ("keyvault.set_secret", "keyvault.update_secret")


class Stack:
    """The policy of one test's targets, written where the activity reads it."""

    def __init__(self, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.env = emulator
        self.path = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.json"
        self.docs: list[dict[str, Any]] = []
        monkeypatch.setenv("ROTATION_POLICY_PATH", str(self.path))

    def add(self, **options: Any) -> Target:
        doc = target_document(self.env, **options)
        return self.add_document(doc)

    def add_document(self, doc: dict[str, Any]) -> Target:
        self.docs.append(doc)
        self.path.write_text(json.dumps({"version": 1, "targets": self.docs}))
        return parse_policy({"version": 1, "targets": [doc]}, environ={}).targets[0]

    def rotated(self, **options: Any) -> tuple[Target, dict[str, Any]]:
        """A target with one finished rotation: its key on the target, stored as the current version."""
        target = self.add(**options)
        return target, provision(target, naming.rotation_id(target.id, "scheduled", NOW))


def regenerate(emulator: Emulator, target: Target) -> None:
    """The host regenerates every key of the app (it could not decrypt its secrets)."""
    app = target.function_app
    response = emulator.control("POST", f"sites/{app.subscription_id}/{app.resource_group}/{app.name}/regenerate-keys")
    assert response.status_code == 200, response.text


def event_seq(emulator: Emulator) -> int:
    stored = emulator.control("GET", "eventgrid/events").json()["value"]
    return stored[-1]["seq"] if stored else 0


def drift_events(emulator: Emulator, since: int) -> list[dict[str, Any]]:
    stored = emulator.control("GET", f"eventgrid/events?since={since}").json()["value"]
    return [e["event"] for e in stored if e["type"] == events.DRIFT_DETECTED]


def by_target(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["targetId"]: entry for entry in result["drift"]}


def assert_no_values(emulator: Emulator, *texts: str) -> None:
    """Invariant I1 with the emulator's own scanner: raw, URL-encoded and base64 forms of every value."""
    places = [Place.text(f"text {i}", text) for i, text in enumerate(texts)]
    findings = scan(secret_values(emulator.state()), places)
    assert not findings, [str(f) for f in findings]


def check(caplog: pytest.LogCaptureFixture, **request: Any) -> dict[str, Any]:
    """check_drift, then its DriftDetected events through publish_events, as orchestrations/drift.py does
    (the activity that writes repairs does not publish)."""
    result = run_logged(caplog, check_drift, {"now": format_timestamp(NOW), **request})
    if result.get("events"):
        run_logged(caplog, publish_events, {"events": result["events"]})
    return result


@pytest.fixture
def stack(env: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_faults: Emulator) -> Stack:  # noqa: F811
    return Stack(env, tmp_path, monkeypatch)


def test_host_regenerated_key_is_restored_from_listkeys(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    emu = stack.env
    target, first = stack.rotated()
    master_doc = {
        **target_document(emu, kind="masterKey"),
        "functionApp": stack.docs[0]["functionApp"],
        "probe": stack.docs[0]["probe"],
    }
    master = stack.add_document(master_doc)  # the same app's master key, stored too
    master_first = provision(master, naming.rotation_id(master.id, "emergency", NOW))
    due_before = find_due_targets({"now": format_timestamp(NOW)})
    drifted = newest_enabled(emu, target)
    assert drifted is not None
    regenerate(emu, target)
    assert live_keys(emu, target)[first["keyName"]] != drifted["value"]  # consumers now read a dead key

    events_since, since = event_seq(emu), last_seq(emu)
    result = check(caplog)
    found = by_target(result)

    assert result["checked"] == 2 and result["inSync"] == 0
    assert set(found) == {target.id, master.id}
    entry = found[target.id]
    assert entry["outcome"] == "restored" and entry["keyName"] == first["keyName"]
    assert entry["repairOf"] == first["version"] and entry["rotationId"] == drifted["tags"]["rotationId"]
    # Key Vault now serves the target's value, under the same key name and rotation, with the same expiry.
    current = newest_enabled(emu, target)
    assert current is not None and current["version"] == entry["version"] != first["version"]
    assert current["value"] == live_keys(emu, target)[first["keyName"]]
    assert current["tags"]["keyName"] == first["keyName"] and current["tags"]["stage"] == "current"
    assert current["tags"]["repairOf"] == first["version"] and current["exp"] == drifted["exp"]
    old = next(v for v in versions(emu, target) if v["version"] == first["version"])
    assert old["enabled"] is False and old["tags"]["stage"] == "revoked"
    # Stored first, disabled second: the newest enabled version was never the drifted one after the repair.
    for each in (target, master):
        writes = [
            r["operation"]
            for r in emu.requests_log(since)
            if each.key_vault.secret_name in r["path"] and r["operation"] in WRITES
        ]
        assert writes == ["keyvault.set_secret", "keyvault.update_secret"], writes
    # What a restore costs (docs/architecture.md): Key Vault list, get, list again, set, update; one listkeys.
    served = [r for r in emu.requests_log(since) if r["status"] == 200]
    on_secret = sorted(r["operation"] for r in served if target.key_vault.secret_name in r["path"])
    assert on_secret == sorted(["keyvault.list_versions"] * 2 + ["keyvault.get_secret", *WRITES]), on_secret
    arm = [r["operation"] for r in served if r["operation"].startswith("arm.")]
    assert arm == ["arm.list_host_keys"] * 2  # one per target: the host key and the master key of one app
    changes = emu.control("GET", "changes").json()["value"]
    repaired_at = max(
        parse_instant(c["ts"])
        for c in changes
        if c["kind"] == "keyvault.version_set" and c["detail"]["version"] == entry["version"]
    )
    violations = check_i2(changes, [TargetRef.from_target(target)])
    assert violations and all(parse_instant(v.at) < repaired_at for v in violations)  # only the drift itself
    # The master key was restored the same way, and never rotated (renewing it is for emergencies).
    assert found[master.id]["outcome"] == "restored" and found[master.id]["repairOf"] == master_first["version"]
    master_current = newest_enabled(emu, master)
    assert master_current is not None and master_current["value"] == live_keys(emu, master)["_master"]
    # The repair does not move the schedule: the due date comes from the drifted version's expiry.
    due_after = find_due_targets({"now": format_timestamp(NOW)})
    assert due_after["notDue"] == due_before["notDue"]

    published = drift_events(emu, events_since)
    mine = next(e for e in published if e["subject"] == f"targets/{target.id}")
    assert mine["data"]["drift"] == "value-mismatch" and mine["data"]["repair"] == "restored"
    assert mine["data"]["secretId"] == entry["secretId"] and mine["data"]["previousSecretId"] == first["secretId"]
    assert mine["id"] in [e["id"] for e in result["events"]]  # the events the scheduler publishes
    assert_no_values(emu, json.dumps(result), caplog.text, json.dumps(published))


def test_a_second_run_after_a_repair_finds_the_target_in_sync(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    emu = stack.env
    target, _ = stack.rotated()
    regenerate(emu, target)
    assert by_target(check(caplog))[target.id]["outcome"] == "restored"
    before, since, events_since = snapshot(emu, target), last_seq(emu), event_seq(emu)

    again = check(caplog, checkId="drift-later")
    assert again["drift"] == [] and again["inSync"] == 1
    assert snapshot(emu, target) == before
    assert set(operations(emu, since)) <= {"keyvault.list_versions", "keyvault.get_secret", "arm.list_host_keys"}
    assert drift_events(emu, events_since) == []


def test_in_sync_target_costs_three_reads_and_writes_nothing(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    emu = stack.env
    target, _ = stack.rotated()
    before, since, events_since = snapshot(emu, target), last_seq(emu), event_seq(emu)
    result = check(caplog)
    assert result == {"checkId": f"drift-{NOW.strftime(naming.TIMESTAMP_FORMAT)}", "checked": 1, "inSync": 1,
                      "drift": [], "skipped": []}  # fmt: skip
    assert snapshot(emu, target) == before
    assert sorted(operations(emu, since)) == ["arm.list_host_keys", "keyvault.get_secret", "keyvault.list_versions"]
    assert drift_events(emu, events_since) == []


def test_key_deleted_out_of_band_is_reported_missing_for_a_rotation(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    emu = stack.env
    target, first = stack.rotated()
    FunctionKeyStore(target).delete(first["keyName"])  # someone removed it by hand
    before, events_since = snapshot(emu, target), event_seq(emu)

    result = check(caplog)
    entry = by_target(result)[target.id]
    assert entry["outcome"] == "missing" and entry["keyName"] == first["keyName"]
    assert entry["version"] == first["version"] and entry["target"] == target.to_json()
    assert snapshot(emu, target) == before  # nothing to restore: the value is gone with the key
    [event] = drift_events(emu, events_since)
    assert event["data"]["drift"] == "key-missing-on-target" and event["data"]["repair"] == "rotation"
    assert event["data"]["secretId"] == first["secretId"] and event["data"]["previousSecretId"] is None
    assert_no_values(emu, json.dumps(result), caplog.text)


@pytest.mark.parametrize(
    "operation", ["keyvault.list_versions", "keyvault.get_secret", "keyvault.set_secret", "arm.list_host_keys"]
)
def test_unreadable_target_is_reported_and_nothing_is_written(
    stack: Stack, caplog: pytest.LogCaptureFixture, operation: str
) -> None:
    emu = stack.env
    target, _ = stack.rotated()
    healthy, _ = stack.rotated()
    regenerate(emu, target)
    regenerate(emu, healthy)
    before, events_since = snapshot(emu, target), event_seq(emu)
    match = target.key_vault.secret_name if operation.startswith("keyvault") else target.function_app.name
    emu.fault(operation=operation, status=403, code="Forbidden", match=match, times=None)

    result = check(caplog)
    entry = by_target(result)[target.id]
    assert entry["outcome"] == "unreadable" and "403" in entry["reason"]
    assert snapshot(emu, target) == before  # never a guess
    assert by_target(result)[healthy.id]["outcome"] == "restored"  # one target's failure stops no other
    assert [e["subject"] for e in drift_events(emu, events_since)] == [f"targets/{healthy.id}"]
    assert_no_values(emu, json.dumps(result), caplog.text)


def test_repair_interrupted_before_disabling_is_finished_by_the_next_run(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    emu = stack.env
    target, first = stack.rotated()
    regenerate(emu, target)
    emu.fault(operation="keyvault.update_secret", status=403, match=target.key_vault.secret_name, times=None)
    assert by_target(check(caplog))[target.id]["outcome"] == "unreadable"
    enabled = [v for v in versions(emu, target) if v["enabled"]]
    assert len(enabled) == 2  # stored, not yet disabled: the repair is already what consumers read
    assert newest_enabled(emu, target)["value"] == live_keys(emu, target)[first["keyName"]]  # type: ignore[index]

    emu.clear_faults()
    entry = by_target(check(caplog))[target.id]
    assert entry["outcome"] == "restored" and entry["repairOf"] == first["version"]
    assert [v["version"] for v in versions(emu, target) if v["enabled"]] == [entry["version"]]
    assert len(versions(emu, target)) == 2  # finished, not repaired twice


def test_rotation_in_flight_is_not_touched(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    emu = stack.env
    running, _ = stack.rotated()  # the scheduler says its rotation instance is running
    overlapping, _ = stack.rotated()  # a rotation between provision and revoke: two enabled versions
    provision(overlapping, naming.rotation_id(overlapping.id, "on-demand", NOW.replace(year=NOW.year + 1)))
    regenerate(emu, running)
    regenerate(emu, overlapping)
    before = (snapshot(emu, running), snapshot(emu, overlapping))
    since = last_seq(emu)

    result = check(caplog, inFlight=[running.id])
    assert result["drift"] == [] and result["checked"] == 1
    reasons = {s["targetId"]: s["reason"] for s in result["skipped"]}
    assert reasons[running.id] == "a rotation is running"
    assert "provision and revoke" in reasons[overlapping.id]
    assert (snapshot(emu, running), snapshot(emu, overlapping)) == before
    assert not [r for r in emu.requests_log(since) if running.key_vault.secret_name in r["path"]]


def test_disabled_targets_are_not_checked(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    emu = stack.env
    target = stack.add(enabled=False)
    since = last_seq(emu)
    result = check(caplog)
    assert result["checked"] == 0 and result["drift"] == [] and result["skipped"] == []
    assert not [r for r in emu.requests_log(since) if target.key_vault.secret_name in r["path"]]


def test_bad_input_names_the_field(env: Emulator) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="now"):
        check_drift({"now": "soon"})
    with pytest.raises(ValueError, match="inFlight"):
        check_drift({"now": format_timestamp(NOW), "inFlight": "rotation-x"})
    with pytest.raises(ValueError, match="checkId"):
        check_drift({"now": format_timestamp(NOW), "checkId": "a b"})


def test_regenerate_keys_control_route_answers_like_the_others(env: Emulator) -> None:  # noqa: F811
    doc = target_document(env)
    app = parse_policy({"version": 1, "targets": [doc]}, environ={}).targets[0].function_app
    base = f"sites/{app.subscription_id}/{app.resource_group}/{app.name}/regenerate-keys"
    assert env.control("POST", base, json={"slot": "nope"}).status_code == 404
    assert env.control("POST", base, json={"slots": []}).status_code == 400
    regenerated = env.control("POST", base).json()["regenerated"]
    assert {"scope": "masterKey", "function": None, "name": "_master"} in regenerated
    assert all("value" not in r for r in regenerated)
