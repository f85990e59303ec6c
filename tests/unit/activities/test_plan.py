"""The plan and the history as pure functions of what Azure holds: the same verdicts as the rotation's own
code (due_targets.assess, the revoke rules), scheduled and emergency told apart, history paged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from activities import history, plan
from activities.secret_versions import Version
from rotation.naming import read_secret_tags, secret_tags
from rotation.policy import Target, load_policy
from tests.rotation_harness import LOCAL_POLICY, PLACEHOLDER_ENV

NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def target(target_id: str = "demo-orders") -> Target:
    found = load_policy(LOCAL_POLICY, PLACEHOLDER_ENV).target(target_id)
    assert found is not None
    return found


def version(t: Target, vid: str, rotation_id: str, key: str, created: datetime, *, stage: str = "current",
            enabled: bool = True) -> Version:  # fmt: skip
    tags = secret_tags(t.id, rotation_id, key, stage)  # type: ignore[arg-type]  # a Stage literal in every call
    return Version(vid, f"{t.key_vault.secret_id()}/{vid}", enabled, created, None, tags, read_secret_tags(tags))


def two_generations(t: Target) -> list[Version]:
    old = version(t, "v1", f"{t.id}-20260101t030000z-s", "orders-client-20260101t030000z-s", NOW - timedelta(days=59),
                  stage="previous")  # fmt: skip
    new = version(t, "v2", f"{t.id}-20260201t030000z-o", "orders-client-20260201t030000z-o", NOW - timedelta(days=28))
    return [old, new]


KEYS = ["default", "orders-client-20260101t030000z-s", "orders-client-20260201t030000z-o", "orders-v2"]


def test_scheduled_plan_follows_the_due_rule_and_the_sweep_after_the_overlap_and_gate() -> None:
    t = target()
    state = plan.State(two_generations(t), KEYS, [])
    early = plan.compose(t, "scheduled", state, plan.Latest(), NOW)
    assert not early["starts"] and early["due"] is False and early["nextDue"]
    late = plan.compose(t, "scheduled", state, plan.Latest(), NOW + t.interval)
    assert late["starts"] and late["why"] == "interval-elapsed"
    # Every generation of the family goes (the sweep), never another key family nor the system default.
    assert late["deleteKeys"] == ["orders-client-20260201t030000z-o", "orders-client-20260101t030000z-s"]
    assert [v["version"] for v in late["disableVersions"]] == ["v2", "v1"]
    assert late["gate"]["applies"] and "failure gate" in late["revokedWhen"]
    assert late["newKeyName"].startswith("orders-client-") and late["newKeyName"].endswith("-s")


def test_an_emergency_kills_the_whole_family_at_once_and_supersedes_a_running_rotation() -> None:
    t = target()
    running = plan.Latest(rotation_id=f"{t.id}-20260228t030000z-s", running=True, stage="overlap")
    state = plan.State(two_generations(t), KEYS, [])
    emergency = plan.compose(t, "emergency", state, running, NOW)
    assert emergency["starts"] and "supersedes" in emergency["why"]
    assert set(emergency["deleteKeys"]) == set(KEYS[1:3]) and emergency["overlap"] == "PT0S"
    assert not emergency["gate"]["applies"] and emergency["revokedWhen"].startswith("at once")
    assert any("in flight" in w for w in emergency["warnings"])
    scheduled = plan.compose(t, "scheduled", state, running, NOW)
    assert not scheduled["starts"] and "is running" in scheduled["why"]


def test_consumers_acknowledgements_of_the_latest_rotation() -> None:
    t = target()
    first, second = t.consumers[0], t.consumers[1]
    steps = [
        {"step": "ack", "status": "done", "at": "x", "actor": {"objectId": first.object_id}},
        {"step": "adoption", "status": "done", "at": "x", "detail": f"{second.name} read the new version"},
    ]
    latest = plan.Latest(rotation_id=f"{t.id}-20260201t030000z-o", outcome="completed", steps=steps)
    consumers = plan.compose(t, "scheduled", plan.State([], [], []), latest, NOW)["consumers"]
    answered = {c["name"]: c["acknowledgedLast"] for c in consumers}
    assert answered[first.name] and answered[second.name]
    assert all(v is False for n, v in answered.items() if n not in (first.name, second.name))


def test_unreadable_services_leave_unknowns_and_say_why() -> None:
    t = target()
    result = plan.compose(t, "scheduled", plan.State(None, None, ["Key Vault read failed: 403"]), plan.Latest(), NOW)
    assert not result["starts"] and "unreadable" in result["why"]
    assert result["deleteKeys"] is None and result["blastRadius"]["keysDeleted"] is None
    assert "Key Vault read failed: 403" in result["warnings"]


def test_history_newest_first_with_rolled_back_rotations_and_pages() -> None:
    t = target()
    base = NOW - timedelta(days=90)
    first = version(t, "v1", f"{t.id}-20251201t030000z-s", "k1", base, stage="previous", enabled=False)
    undone = version(t, "v2", f"{t.id}-20260101t030000z-s", "k2", base + timedelta(days=31), stage="revoked",
                     enabled=False)  # fmt: skip
    copy = version(t, "v3", f"{t.id}-20251201t030000z-s", "k1", base + timedelta(days=31, seconds=5))
    items = history.entries(t, [first, undone, copy], None)
    assert [e["rotationId"] for e in items] == [undone.rotation_id, first.rotation_id]
    assert items[0]["outcome"] == "rolled-back" and items[1]["outcome"] == "completed" and items[1]["keyInUse"]
    latest = {
        "rotationId": f"{t.id}-20260201t030000z-e",
        "outcome": None,
        "stage": "overlap",
        "trigger": {"reason": "x"},
    }
    items = history.entries(t, [first, undone, copy], latest)
    assert items[0]["outcome"] == "running" and items[0]["source"] == "durable-status"
    superseded = version(t, "v4", f"{t.id}-20260201t020000z-o", "k4", NOW - timedelta(days=28, hours=2))
    items = history.entries(t, [first, undone, copy, superseded], latest)
    assert next(e for e in items if e["rotationId"] == superseded.rotation_id)["outcome"] == "superseded"
    chunk, cursor = history.page(items, 3, None)
    assert len(chunk) == 3 and cursor == chunk[-1]["rotationId"]
    rest, end = history.page(items, 3, cursor)
    assert [e["rotationId"] for e in rest] == [first.rotation_id] and end is None


def test_a_target_never_rotated_has_an_empty_history() -> None:
    assert history.entries(target(), [], None) == []
    assert history.page([], 20, None) == ([], None)
