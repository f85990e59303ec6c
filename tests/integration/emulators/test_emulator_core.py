"""The emulator's shared plumbing: TLS with a local CA, the control API, fault rules, request log."""

from __future__ import annotations

import requests

from tests.emulator_process import Emulator


def test_serves_https_only_with_the_local_ca(emulator: Emulator) -> None:
    assert emulator.url.startswith("https://127.0.0.1:")
    assert requests.get(f"{emulator.url}/_emulator/health", verify=emulator.ca, timeout=5).json() == {"status": "ok"}
    try:
        requests.get(f"{emulator.url}/_emulator/health", timeout=5)
    except requests.exceptions.SSLError:
        pass
    else:
        raise AssertionError("a client without the local CA must not trust the emulator")


def test_fault_rules_are_validated_with_the_field_named(clean_faults: Emulator) -> None:
    bad = clean_faults.control("POST", "faults", json={"operation": "arm.list_host_keys", "status": 200})
    assert bad.status_code == 400 and "status" in bad.json()["error"]["message"]
    bad = clean_faults.control("POST", "faults", json={"operation": "x", "status": 429, "colour": "red"})
    assert bad.status_code == 400 and "colour" in bad.json()["error"]["message"]
    ok = clean_faults.control(
        "POST", "faults", json={"operation": "arm.*", "status": 429, "retry_after": 2, "times": 3}
    )
    assert ok.status_code == 201
    (rule,) = clean_faults.control("GET", "faults").json()["value"]
    assert rule["operation"] == "arm.*" and rule["remaining"] == 3 and rule["retry_after"] == 2


def test_request_log_excludes_control_calls(emulator: Emulator) -> None:
    before = emulator.requests_log()
    emulator.control("GET", "health")
    assert emulator.requests_log() == before
