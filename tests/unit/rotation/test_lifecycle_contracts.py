"""The typed contracts of the rotation lifecycle (rotation/messages.py, rotation/inputs.py) and the shape
issue 14 asks of the orchestrator: one side effect per activity, a short lifecycle, small modules."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from orchestrations.rotation import RotationRun
from rotation.identity import Actor
from rotation.inputs import RotationInput
from rotation.messages import (
    FailureCount,
    Provisioned,
    ProvisionRequest,
    Revoked,
    RevokeRequest,
    TargetRef,
)
from rotation.policy import trusted_target
from tests.rotation_harness import local_target

ROOT = Path(__file__).resolve().parents[3]
REF = TargetRef("demo-orders", "f" * 64, {"step": {"attempts": 3}})
# Lifecycle activities that change a key or a secret: none of them may publish (announce is its own step).
KEY_CHANGING = ("provision.py", "verify.py", "revoke.py", "revocation.py", "abandon.py", "drift.py")


def test_a_request_travels_as_the_camel_case_object_the_history_holds() -> None:
    request = RevokeRequest("demo-orders-20261122t030000z-s", REF, "k2", "v2", None, ("v1",), sweep=True)
    wire = request.to_json()
    assert wire == {
        "rotationId": "demo-orders-20261122t030000z-s",
        "targetId": "demo-orders",
        "fingerprint": "f" * 64,
        "calls": {"step": {"attempts": 3}},
        "keepKeyName": "k2",
        "keepVersion": "v2",
        "revokeKeyNames": None,  # null: an emergency's "every other key", kept distinct from an empty list
        "revokeVersions": ["v1"],
        "sweep": True,
        "verify": False,
    }
    assert RevokeRequest.from_json(wire) == request


def test_a_result_missing_optional_fields_takes_their_defaults_and_a_missing_required_one_is_named() -> None:
    assert Provisioned.from_json({"keyName": "k2", "version": "v2"}).accepted is True
    with pytest.raises(ValueError, match=r"ProvisionRequest\.rotationId: required"):
        ProvisionRequest.from_json({"targetId": "demo-orders", "fingerprint": "f"})


def test_a_revoke_result_carries_the_pending_lists_only_while_a_verification_is_pending() -> None:
    assert Revoked(("k1",), ("v1",)).to_json() == {"deletedKeys": ["k1"], "disabledVersions": ["v1"]}
    pending = Revoked(("k1",), (), ("v1",), ("k1",), refused=False).to_json()
    assert pending["refused"] is False and pending["pendingVersions"] == ["v1"]


def test_a_failure_count_that_could_not_be_read_is_not_counted() -> None:
    assert not FailureCount.from_json({"failures": None, "baseline": 0, "error": "timeout"}).counted
    assert FailureCount.from_json({"failures": 3, "baseline": 1, "error": None}).counted


def test_the_orchestration_input_keeps_the_shape_every_earlier_release_signed() -> None:
    given = RotationInput("demo-orders-20261122t030000z-s", "scheduled", "demo-orders", "f", Actor("schedule", "timer"))
    assert set(given.to_json()) == {"rotationId", "mode", "targetId", "fingerprint", "actor", "reason"}
    assert RotationInput.from_json(given.to_json()) == given


def test_a_resolved_target_is_rebuilt_without_the_schema_pass_and_equals_the_validated_one() -> None:
    from rotation.policy import parse_target

    data = local_target("demo-orders")
    assert trusted_target(parse_target(data).to_json()) == parse_target(data)


def test_no_lifecycle_activity_that_changes_a_key_or_secret_publishes() -> None:
    for name in KEY_CHANGING:
        tree = ast.parse((ROOT / "activities" / name).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "activities.events_publish" not in modules, name
        assert not imported & {"publish_events", "with_step_events", "event_publisher"}, name


def test_the_lifecycle_reads_in_at_most_eighty_lines_and_every_orchestration_module_in_three_hundred() -> None:
    assert len(inspect.getsource(RotationRun.lifecycle).splitlines()) <= 80
    for module in (ROOT / "orchestrations").glob("*.py"):
        if module.name != "scheduler.py":  # another part of issue 14 splits it
            assert len(module.read_text().splitlines()) <= 300, module.name
