"""Start `python -m emulators serve` in a subprocess and talk to its control API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from emulators.core.local_identity import LocalTokenCredential
from emulators.core.server import platform_settings, proxy_settings
from rotation.settings import Settings, load_settings

# What App Service (and devhost) put in the app's process environment rather than its settings mapping:
# azure-identity and requests read them from os.environ, so tests set them there (tests/conftest.py
# restores them after every test).
PLATFORM_VARIABLES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE")

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Emulator:
    state_dir: Path
    endpoints: dict[str, Any]
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return self.endpoints["url"]

    @property
    def ca(self) -> str:
        return self.endpoints["caBundle"]

    @property
    def proxy(self) -> str:
        return self.endpoints["proxy"]

    @property
    def app_object_id(self) -> str:
        """The app's managed identity's object id: the caller the services record for the app."""
        return str(self.endpoints["managedIdentity"]["objectId"])

    def app_settings(self) -> dict[str, str]:
        """What devhost gives the app: endpoints, the managed identity endpoint, the proxy to the emulated
        apps and the CA bundle."""
        identity = self.endpoints["managedIdentity"]
        return {
            **proxy_settings(self.proxy),
            **platform_settings(Path(self.ca)),
            "IDENTITY_ENDPOINT": identity["IDENTITY_ENDPOINT"],
            "IDENTITY_HEADER": identity["IDENTITY_HEADER"],
            "AZURE_CLIENT_ID": identity["AZURE_CLIENT_ID"],
            "ARM_ENDPOINT": self.url,
            "EVENTGRID_TOPIC_ENDPOINT": self.endpoints["eventGridTopic"],
            "LOGS_ENDPOINT": self.url,
            "LOG_ANALYTICS_WORKSPACE_ID": self.endpoints["workspaceId"],
        }

    def settings(self, **overrides: str) -> Settings:
        """The app's settings, with the platform's variables put in os.environ, where the SDKs read them."""
        values = {**self.app_settings(), **overrides}
        os.environ.update({name: values[name] for name in PLATFORM_VARIABLES})
        return load_settings(values)

    def credential_as(self, object_id: str, name: str | None = None) -> LocalTokenCredential:
        """Another identity than the app's (a consumer, an operator), for clients built by the test."""
        return LocalTokenCredential(object_id, name, endpoint=self.url, tenant_id=self.endpoints["tenantId"])

    def control(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call /_emulator/<path>."""
        return requests.request(
            method, f"{self.url}/_emulator/{path.lstrip('/')}", verify=self.ca, timeout=10, **kwargs
        )

    def state(self) -> dict[str, Any]:
        response = self.control("GET", "state")
        response.raise_for_status()
        return response.json()

    def fault(self, **rule: Any) -> None:
        self.control("POST", "faults", json=rule).raise_for_status()

    def clear_faults(self) -> None:
        self.control("DELETE", "faults").raise_for_status()

    def requests_log(self, since: int = 0, *, tokens: bool = False) -> list[dict[str, Any]]:
        """The requests to the emulated services; the credential's own token requests (`identity.token`,
        one per client and resource) only with `tokens=True`, so call counts are the services' calls."""
        log = self.control("GET", f"requests?since={since}").json()["value"]
        return [r for r in log if tokens or r.get("operation") != "identity.token"]


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass  # half-written; the writer renames atomically, so retry
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before writing {path}")
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout}s")


@contextmanager
def running_emulator(state_dir: Path) -> Iterator[Emulator]:
    endpoints_path = state_dir / "endpoints.json"
    endpoints_path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators", "serve", "--port", "0", "--state", str(state_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoints = wait_for_file(endpoints_path, process)["emulator"]
        yield Emulator(state_dir, endpoints, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
