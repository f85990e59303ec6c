"""Process lifecycle: ready file, clean SIGTERM shutdown, crash + restart on the same state, emulators."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import requests

from tools.devhost_launcher import HOST_APP, running_devhost

pytestmark = pytest.mark.slow

APP_ENV = {"TICK_SCHEDULE": "0 0 0 1 1 *", "FAST_SCHEDULE": "0 0 0 1 1 *"}


def test_sigterm_shuts_down_cleanly_and_removes_endpoints(tmp_path: Path) -> None:
    with running_devhost(tmp_path, HOST_APP, emulators=False, env=APP_ENV) as host:
        endpoints = tmp_path / "endpoints.json"
        assert stat.S_IMODE(os.stat(endpoints).st_mode) == 0o600  # it holds the host keys
        assert host.endpoints["pid"] == host.process.pid
        assert {
            "host",
            "rpcBaseUrl",
            "masterKey",
            "systemKeys",
            "emulator",
            "caBundle",
            "clock",
        } <= host.endpoints.keys()
        assert host.endpoints["rpcBaseUrl"].endswith("/durabletask/")
        assert "devhost ready: http://127.0.0.1:" in host.output()
        url = host.url
        assert host.stop() == 0
        assert not endpoints.exists()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/api/whoami", timeout=5)
        log = (tmp_path / "logs" / "host.log").read_text()
        assert "devhost stopped" in log and "Traceback" not in log


def test_crash_and_restart_keep_keys_and_tokens(tmp_path: Path) -> None:
    with running_devhost(tmp_path, HOST_APP, emulators=False, env=APP_ENV) as host:
        keys_before = (host.master_key, host.function_key, host.endpoints["systemKeys"])
        token = host.token("alice", "KeyRotation.Reader")
        host.kill()
        assert (tmp_path / "endpoints.json").exists()  # a crash leaves the stale file behind
        host.restart()
        assert (host.master_key, host.function_key, host.endpoints["systemKeys"]) == keys_before
        assert host.get("api/secured", params={"code": host.function_key}).status_code == 200
        seen = host.get("api/whoami", headers={"Authorization": f"Bearer {token}"}).json()
        assert seen["headers"]["x-ms-client-principal-name"] == "alice"


def test_with_emulators_the_app_is_pointed_at_them(tmp_path: Path) -> None:
    with running_devhost(
        tmp_path, HOST_APP, emulators=True, env={**APP_ENV, "ARM_ENDPOINT": "https://management.azure.com"}
    ) as host:
        emulator = host.endpoints["emulator"]
        assert emulator["url"].startswith("https://127.0.0.1:")
        assert Path(host.endpoints["caBundle"]).is_file()
        assert host.get("api/settings/ARM_ENDPOINT").json() == {"value": emulator["url"]}  # never real Azure
        assert host.get("api/settings/REQUESTS_CA_BUNDLE").json() == {"value": host.endpoints["caBundle"]}
        identity = emulator["managedIdentity"]
        assert host.get("api/settings/IDENTITY_ENDPOINT").json() == {"value": identity["IDENTITY_ENDPOINT"]}
        control = requests.get(f"{emulator['control']}/state", verify=host.endpoints["caBundle"], timeout=10)
        assert control.status_code == 200
        assert (tmp_path / "emulator").is_dir()
        assert host.stop() == 0


def _gone(pid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_the_app_runs_on_a_worker_process_of_its_own_whose_logs_reach_the_host_log(tmp_path: Path) -> None:
    with running_devhost(tmp_path, HOST_APP, emulators=False, env=APP_ENV) as host:
        answered = host.get("api/worker")
        assert answered.status_code == 200
        worker_pid = answered.json()["pid"]
        assert worker_pid == host.endpoints["workerPid"] != host.process.pid
        host.stop()
        log = (tmp_path / "logs" / "host.log").read_text()
        assert f"WARNING host_app.worker: answered from process {worker_pid}" in log
        assert _gone(worker_pid), "the worker outlived its host's shutdown"


def test_a_host_crash_takes_its_worker_with_it(tmp_path: Path) -> None:
    with running_devhost(tmp_path, HOST_APP, emulators=False, env=APP_ENV) as host:
        worker_pid = host.endpoints["workerPid"]
        host.kill()
        assert _gone(worker_pid), "a worker outlived its host's crash"
        host.restart()
        assert host.endpoints["workerPid"] != worker_pid
        assert host.get("api/worker").json()["pid"] == host.endpoints["workerPid"]


def test_a_worker_that_dies_fails_its_calls_at_once_and_says_so(tmp_path: Path) -> None:
    with running_devhost(tmp_path, HOST_APP, emulators=False, env=APP_ENV) as host:
        assert host.post("api/worker/exit", timeout=30).status_code == 500
        started = time.monotonic()
        assert host.get("api/worker", timeout=30).status_code == 500  # no wait on a process that is gone
        assert time.monotonic() - started < 5
        log = (tmp_path / "logs" / "host.log").read_text()
        assert "exited with code 3; devhost does not restart it" in log
