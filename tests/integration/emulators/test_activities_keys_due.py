"""find_due_targets against the emulators: each reason a target is due, not due or skipped, from Key Vault
version properties only (one listing per target, no value read), and one unreadable vault not stopping
the others."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from activities import clients
from activities.due_targets import find_due_targets
from rotation import naming
from rotation.durations import format_timestamp
from rotation.policy import Target, parse_policy, parse_target
from tests.emulator_process import Emulator
from tests.integration.emulators.test_activities_keys import (
    assert_no_values,
    calls,
    env,  # noqa: F401 - the fixture
    last_seq,
    operations,
    provision,
    run_logged,
    target_document,
)


def parse_target_doc(doc: dict[str, Any]) -> Target:
    return parse_policy({"version": 1, "targets": [doc]}, environ={}).targets[0]


def by_id(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["targetId"]: e for e in entries}


def test_due_targets_by_reason(
    env: Emulator,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_faults: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    docs = {name: target_document(env) for name in ("empty", "fresh", "expiring", "broken")}
    docs["disabled"] = target_document(env, enabled=False)
    docs["master"] = target_document(env, kind="masterKey")
    targets = {name: parse_target_doc(doc) for name, doc in docs.items()}
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": 1, "targets": list(docs.values())}))
    monkeypatch.setenv("ROTATION_POLICY_PATH", str(policy))

    real_now = datetime.now(UTC)
    clients.secret_client(env.url).set_secret(docs["empty"]["keyVault"]["secretName"], "not-ours-" + "a" * 40)
    fresh = provision(targets["fresh"], naming.rotation_id(targets["fresh"].id, "scheduled", real_now))
    # Started long ago, so its expiry (start + interval + overlap) has passed although it was written now.
    old_start = datetime(2020, 1, 1, tzinfo=UTC)
    expiring = provision(targets["expiring"], naming.rotation_id(targets["expiring"].id, "scheduled", old_start))
    clean_faults.fault(
        operation="keyvault.list_versions", status=403, code="Forbidden", match=docs["broken"]["keyVault"]["secretName"]
    )

    since = last_seq(env)
    now = format_timestamp(real_now + timedelta(minutes=1))
    result = run_logged(caplog, find_due_targets, {"now": now})
    due, not_due, skipped = by_id(result["due"]), by_id(result["notDue"]), by_id(result["skipped"])
    ids = {name: t.id for name, t in targets.items()}

    assert set(due) == {ids["empty"], ids["expiring"]}
    assert due[ids["empty"]]["reason"] == "no-current-version"  # a version someone else wrote does not count
    assert due[ids["empty"]]["currentVersion"] is None and due[ids["empty"]]["currentKeyName"] is None
    assert due[ids["expiring"]]["reason"] == "expires-soon"
    assert due[ids["expiring"]]["currentVersion"] == expiring["version"]
    assert due[ids["expiring"]]["currentKeyName"] == expiring["keyName"]
    assert parse_target(due[ids["empty"]]["target"]) == targets["empty"]
    assert set(not_due) == {ids["fresh"]}
    next_due = datetime.fromisoformat(not_due[ids["fresh"]]["nextDue"])
    assert real_now + timedelta(days=89) < next_due <= real_now + timedelta(days=90, minutes=1)
    assert skipped[ids["disabled"]]["reason"] == "disabled"
    assert "master key" in skipped[ids["master"]]["reason"]
    assert "403" in skipped[ids["broken"]]["reason"]
    # One listing per schedulable target (+ one challenge round trip per vault client); nothing else.
    assert set(operations(env, since)) == {"keyvault.list_versions"}
    assert calls(env, since)["keyvault"] <= 4 + 1
    assert_no_values(env, json.dumps(result), caplog.text)

    clean_faults.clear_faults()
    later = format_timestamp(real_now + timedelta(days=90, minutes=1))
    result = find_due_targets({"now": later})
    due = by_id(result["due"])
    assert due[ids["fresh"]]["reason"] == "interval-elapsed" and due[ids["fresh"]]["currentVersion"] == fresh["version"]
    assert find_due_targets({"now": later}) == result  # read-only: a re-run answers the same


def test_due_targets_refuses_a_missing_time(env: Emulator) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="now"):
        find_due_targets({"now": "yesterday"})
