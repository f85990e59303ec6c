"""The sample consumer in a real scheduled rotation: the real app on devhost rotates a target, the Event
Grid emulator delivers NewKeyAvailable to the consumer on its own devhost, and its acknowledgement
through the app's own `POST /api/rotations/{id}/ack` (Easy Auth token, KeyRotation.Consumer role) —
the only registered consumer's — ends the overlap early.

The sample acknowledges after its first call that worked with the new key (the kit's rule), so the
test calls through it while the rotation runs. The policy is written here: one target, one consumer
whose object id is the sample's. The virtual clock's auto-advance is off so time moves only in real
time and the overlap can only end by the ack.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from emulators.core.store import fingerprint
from rotation.naming import rotation_instance_id
from rotation.policy import Target, load_policy
from tools import demo_report
from tools.consumer_stack import ConsumerHost, ConsumerSpec, consumer_environment, mint_token, subscribe
from tools.demo_seed import create_operator_keys, seed_sites
from tools.devhost_launcher import DemoStack

pytestmark = pytest.mark.slow

TARGET = "consumer-demo"
CONSUMER = ("billing-worker", "00000000-0000-0000-0000-00000000c0de")
SUBSCRIPTION = "/subscriptions/00000000-0000-0000-0000-000000000000"
APP_ID = f"{SUBSCRIPTION}/resourceGroups/keyrotation-consumer/providers/Microsoft.Web/sites/{TARGET}"


def write_policy(
    path: Path,
    target_id: str = TARGET,
    app_id: str = APP_ID,
    base_key_name: str = "consumer-demo-client",
    consumers: tuple[tuple[str, str], ...] = (CONSUMER,),
) -> Path:
    """A policy of one host-key target with a probe and these consumers; the secret is named after the key."""
    policy = {
        "version": 1,
        "defaults": {
            "interval": "P30D",
            "overlap": "P1D",
            "keyVault": {"vaultUrl": "%KEY_VAULT_URL%"},
            "probe": {"attempts": 3, "delay": "PT1S"},
            "monitoring": {
                "signal": "consumer-dependencies",
                "workspaceId": "%LOG_ANALYTICS_WORKSPACE_ID%",
                "threshold": {"maxFailures": 5, "maxRatio": 2.0},
                "watch": "PT0S",
            },
            "hold": {"deadline": "P1D", "defaultAction": "abort"},
        },
        "targets": [
            {
                "id": target_id,
                "functionApp": app_id,
                "keyScope": {"kind": "host"},
                "baseKeyName": base_key_name,
                "keyVault": {"secretName": f"{base_key_name}-key"},
                "probe": {"path": "/api/ping"},
                "consumers": [{"name": name, "objectId": oid} for name, oid in consumers],
            }
        ],
    }
    path.write_text(json.dumps(policy, indent=2))
    return path


def wait_for_end(stack: DemoStack, consumer: ConsumerHost, timeout: float = 60) -> dict[str, Any]:
    """Until the rotation ends, the consumer keeps calling its target: its first success with the new key
    is what sends the acknowledgement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if consumer.state()["version"] is not None:  # Key Vault holds nothing before the rotation's first key
            called = consumer.call_target()
            assert called.status_code == 200 and called.json()["targetStatus"] == 200, called.text
        status = stack.status(rotation_instance_id(TARGET))
        if status and status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"rotation did not finish: {stack.tail()}\nconsumer:\n{consumer.tail()}")


def test_the_sample_consumers_ack_ends_the_overlap_of_a_scheduled_rotation(tmp_path: Path) -> None:
    stack = DemoStack(tmp_path / "main", policy=str(write_policy(tmp_path / "policy.json")))
    stack.start()
    consumer: ConsumerHost | None = None
    try:
        stack.set_auto_advance(False)
        emu = stack.emulator
        env = {"KEY_VAULT_URL": emu["keyVault"], **stack.app_settings()}
        target: Target | None = load_policy(stack.policy, env).target(TARGET)
        assert target is not None and target.probe is not None
        seed_sites(stack, [target])
        create_operator_keys(stack, [target])
        probe_url = f"{emu['url']}/_targets/{target.function_app.default_host_name}{target.probe.path}"
        spec = ConsumerSpec(TARGET, CONSUMER[1], CONSUMER[0], emu["keyVault"], target.key_vault.secret_name, probe_url)
        token = mint_token(stack.state_dir, CONSUMER[0], CONSUMER[1])
        consumer = ConsumerHost(tmp_path / "consumer", consumer_environment(stack.endpoints, spec, token)).start()
        subscribe(stack.endpoints, consumer, TARGET)

        assert stack.run_function("rotation_timer") == 202
        final = wait_for_end(stack, consumer)
        assert final["runtimeStatus"] == "Completed" and final["output"]["outcome"] == "completed", final

        steps = final["customStatus"]["steps"]
        overlap = next(s for s in steps if s["step"] == "overlap")
        assert overlap["detail"] == "every consumer switched", steps
        ack = next(s for s in steps if s["step"] == "ack")
        assert ack["actor"]["objectId"] == CONSUMER[1]
        assert not [s for s in steps if s["step"] == "adoption"], "the overlap must end by the ack, not the audit"

        # The consumer holds the new key: the fingerprint of the value live on the target under the new name.
        state = stack.control_json("state")
        keys = demo_report.live_keys(state, target)
        new_name = final["output"]["keyName"]
        assert "consumer-demo-client" not in keys and new_name in keys  # the old key is revoked
        held = consumer.state()
        assert held["fingerprint"] == fingerprint(keys[new_name])
        assert held["secretId"] == final["customStatus"]["secretId"]
        assert held["ack"]["status"] == "acknowledged"
        called = consumer.call_target()  # after revocation, the held key still opens the target
        assert called.status_code == 200 and called.json()["targetStatus"] == 200, called.text
    finally:
        if consumer:
            consumer.stop()
        stack.stop()
