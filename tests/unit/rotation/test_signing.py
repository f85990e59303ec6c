"""What the app signs and how a rotation checks it: inputs naming a target, events for one rotation and
hold, a key ring, and the fingerprint of where a target's keys go."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from activities import targets
from rotation import signing
from rotation.identity import SCHEDULE_ACTOR
from rotation.inputs import InputError, check_shape, rotation_input
from rotation.policy import parse_target
from tests.rotation_harness import LOCAL_POLICY, PLACEHOLDER_ENV, local_target

KEY = b"k" * 40
OTHER = b"o" * 40
RID = "demo-orders-20261122t030000z-s"


def demo_input(key: bytes = KEY, **extra: Any) -> dict[str, Any]:
    return rotation_input(
        parse_target(local_target("demo-orders")), RID, "scheduled", SCHEDULE_ACTOR, "due", key=key, **extra
    )


def test_an_input_names_its_target_and_is_signed() -> None:
    request = demo_input()
    assert "target" not in request and request["targetId"] == "demo-orders"
    assert signing.verify_input(KEY, request)
    assert not signing.verify_input(OTHER, request)
    assert not signing.verify_input(KEY, {**request, "reason": "other"})
    assert not signing.verify_input(KEY, {**request, "probe": {"baseUrl": "https://attacker.example"}})
    assert signing.verify_input_any((OTHER, KEY), request)  # a ring: any key verifies


def test_an_event_signature_binds_rotation_event_and_payload() -> None:
    payload = signing.sign_event(KEY, RID, "Approve", {"actor": {"name": "alice"}, "heldAt": "t1"})
    assert signing.verify_event(KEY, RID, "Approve", payload)
    assert not signing.verify_event(KEY, RID, "Abort", payload)  # another event
    assert not signing.verify_event(KEY, "demo-orders-20261123t030000z-s", "Approve", payload)  # another rotation
    assert not signing.verify_event(KEY, RID, "Approve", {**payload, "actor": {"name": "the CISO"}})
    env = {signing.SIGNING_KEY_SETTING: f"{OTHER.decode()}, {KEY.decode()}"}
    assert signing.event_problem(RID, "Approve", payload, {"heldAt": "t1"}, env) is None
    assert signing.event_problem(RID, "Approve", payload, {"heldAt": "t2"}, env) == (
        "heldAt does not match this rotation's state"
    )
    assert signing.event_problem(RID, "Approve", {"actor": {}}, {}, env) == "not signed by this app"


@pytest.mark.parametrize(
    "value",
    ["", "short", f"{'k' * 40} short", "@Microsoft.KeyVault(VaultName=kv-krs-abc;SecretName=keyrotation-signing-key)"],
)
def test_without_a_usable_key_nothing_is_signed_or_accepted(value: str) -> None:
    env = {signing.SIGNING_KEY_SETTING: value}
    with pytest.raises(signing.SigningKeyError, match="KEYROTATION_SIGNING_KEY"):
        signing.signing_keys(env)
    assert signing.event_problem(RID, "Approve", {}, {}, env) is not None


def test_the_input_must_fit_its_instance() -> None:
    request = demo_input()
    assert check_shape(request, "rotation-demo-orders") is request
    with pytest.raises(InputError, match="not a rotation of instance"):
        check_shape(request, "rotation-demo-orders-twin")
    with pytest.raises(InputError, match="mode"):
        check_shape({**request, "mode": "emergency"}, "rotation-demo-orders")
    with pytest.raises(InputError, match="not signed"):
        check_shape({k: v for k, v in request.items() if k != "signature"}, "rotation-demo-orders")
    with pytest.raises(InputError, match="rotationId"):
        check_shape({**request, "rotationId": "demo-orders-20261301t000000z-s"}, "rotation-demo-orders")


def test_the_fingerprint_moves_with_where_keys_go_only() -> None:
    base = local_target("demo-orders")
    fingerprint = parse_target(base).fingerprint
    assert parse_target({**base, "overlap": "P1D", "description": "edited"}).fingerprint == fingerprint
    assert parse_target({**base, "consumers": []}).fingerprint == fingerprint
    moved = [
        {**base, "keyVault": {**base["keyVault"], "secretName": "elsewhere"}},
        {**base, "baseKeyName": "other-client"},
        {**base, "probe": {**base["probe"], "path": "/api/elsewhere"}},
        {**base, "functionApp": base["functionApp"].replace("demo-orders", "demo-reports")},
    ]
    assert all(parse_target(t).fingerprint != fingerprint for t in moved)


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(LOCAL_POLICY.read_text())
    for name, value in {**PLACEHOLDER_ENV, "ROTATION_POLICY_PATH": str(path)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(signing.SIGNING_KEY_SETTING, KEY.decode())
    return path


def test_a_step_acts_only_on_the_deployed_target(deployed: Path) -> None:
    request = demo_input()
    assert targets.target_for(request).id == "demo-orders"
    with pytest.raises(targets.TargetRefused, match="not a target of the deployed"):
        targets.target_for({**request, "targetId": "not-in-policy"})
    with pytest.raises(targets.TargetRefused, match="not a rotation of target"):
        targets.target_for({**request, "rotationId": "demo-reports-export-20261122t030000z-s"})
    # The policy is redeployed mid-rotation with the secret elsewhere: the next step refuses to act.
    document = json.loads(deployed.read_text())
    document["targets"][0]["keyVault"] = {"secretName": "moved-secret"}
    deployed.write_text(json.dumps(document))
    with pytest.raises(targets.TargetRefused, match="changed where its keys go"):
        targets.target_for(request)


def test_the_first_step_refuses_what_the_app_did_not_sign(deployed: Path) -> None:
    resolved = targets.resolve_target({"input": demo_input()})
    assert resolved["fingerprint"] == parse_target(local_target("demo-orders")).fingerprint
    assert parse_target(resolved["target"]).id == "demo-orders"
    assert "not signed" in targets.resolve_target({"input": demo_input(OTHER)})["refused"]
    master = rotation_input(
        parse_target(local_target("demo-orders-master")),
        "demo-orders-master-20261122t030000z-s",
        "scheduled",
        SCHEDULE_ACTOR,
        "due",
        key=KEY,
    )
    assert "only by an emergency" in targets.resolve_target({"input": master})["refused"]
