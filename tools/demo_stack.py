"""The demo's handle on the local stack: starts `python -m devhost serve` on a virtual clock with the real
app, and talks to devhost (admin, Durable HTTP API, clock) and to the emulators' control API.

Every devhost response body the demo sees is kept (`DemoStack.seen`) so the I1 scan can prove none of
them carried a key value. Emulator control responses are not kept: that API returns values by design.

devhost's Easy Auth, like App Service's with `Return401`, refuses a request without a token before any
key is checked, so the admin and Durable calls sign in with a role-less devhost token as well.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
POLICY = "config/rotation-policy.local.json"
DURABLE_SYSTEM_KEY = "durabletask_extension"
INSTANCES = "/runtime/webhooks/durabletask/instances"
IDLE_GRACE = "0.75"


def tools_token(state_dir: Path, endpoints: dict[str, Any]) -> str:
    """A role-less token from the devhost's own signing key ("" when its Easy Auth is off)."""
    if not endpoints.get("easyAuth"):
        return ""
    from devhost.easy_auth import issue_token, load_or_create_signing_key

    return issue_token(load_or_create_signing_key(state_dir), "devhost-tools", [], ttl=6 * 3600)


class StackError(RuntimeError):
    """The local stack did not do what the demo needs; the message says what and where to look."""


@dataclass
class DemoStack:
    state_dir: Path
    process: subprocess.Popen[bytes] | None = None
    endpoints: dict[str, Any] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)  # each distinct devhost response text -> where first seen
    _token: str = ""
    policy: str = POLICY  # the rotation policy file the app loads
    extra_env: dict[str, str] = field(default_factory=dict)  # app settings on top (e.g. ROTATION_MAX_CONCURRENCY)

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def output_path(self) -> Path:
        """devhost's stdout and stderr (its log also goes to logs/host.log)."""
        return self.state_dir / "devhost-output.log"

    @property
    def host_log(self) -> Path:
        return self.state_dir / "logs" / "host.log"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "devhost",
            "serve",
            "--port",
            "0",
            "--state",
            str(self.state_dir),
            "--app",
            str(ROOT),
            "--clock",
            "virtual",
            "--no-timers",  # the demo fires the one scheduled tick itself; a jumping clock must not add more
        ]

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "ROTATION_POLICY_PATH": self.policy, **self.extra_env}
        env.setdefault("ROTATION_SCHEDULE", "0 0 3 * * *")  # the timer's %setting%; never fires (--no-timers)
        # The clock jumps after this much idle real time: long enough for the demo's 50 ms polling to see a
        # stage it must act on (overlap, held) before a jump ends it, even on a loaded machine.
        env.setdefault("DEVHOST_CLOCK_IDLE_GRACE", IDLE_GRACE)
        return env

    def start(self, timeout: float = 60) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        endpoints_path = self.state_dir / "endpoints.json"
        endpoints_path.unlink(missing_ok=True)
        with self.output_path.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                self.command(), cwd=ROOT, env=self.environment(), stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if endpoints_path.exists():
                try:
                    data = json.loads(endpoints_path.read_text())
                except ValueError:
                    data = None
                if data and data.get("pid") == self.process.pid:
                    self.endpoints = data
                    return
            if self.process.poll() is not None:
                raise StackError(f"devhost exited with code {self.process.returncode} before it was ready")
            time.sleep(0.05)
        self.stop()
        raise StackError(f"devhost was not ready within {timeout:.0f} s")

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM and wait (the clean shutdown: logs flushed, databases closed)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def tail(self, lines: int = 15) -> list[str]:
        """The end of devhost's output: what an operator looks at first when something did not happen."""
        if not self.output_path.exists():
            return []
        return self.output_path.read_text(errors="replace").splitlines()[-lines:]

    # -- devhost ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return str(self.endpoints["host"])

    @property
    def emulator(self) -> dict[str, Any]:
        return dict(self.endpoints["emulator"])

    @property
    def ca_bundle(self) -> str:
        return str(self.endpoints["caBundle"])

    def bearer(self) -> dict[str, str]:
        """The Authorization header devhost's Easy Auth wants (none when it is off)."""
        if not self._token:
            self._token = tools_token(self.state_dir, self.endpoints)
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _host(self, method: str, path: str, *, key: str, **kwargs: Any) -> requests.Response:
        timeout = kwargs.pop("timeout", 30)
        headers = {"x-functions-key": key, **self.bearer(), **kwargs.pop("headers", {})}
        response = requests.request(method, f"{self.url}{path}", headers=headers, timeout=timeout, **kwargs)
        self.seen.setdefault(response.text, f"HTTP response to {method} {path.split('?')[0]}")
        return response

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self._host(method, path, key=str(self.endpoints["masterKey"]), **kwargs)

    def durable(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The public Durable HTTP API, authorized by the durabletask_extension system key."""
        return self._host(
            method, f"{INSTANCES}{path}", key=str(self.endpoints["systemKeys"][DURABLE_SYSTEM_KEY]), **kwargs
        )

    def status(self, instance_id: str) -> dict[str, Any] | None:
        response = self.durable("GET", f"/{instance_id}")
        if response.status_code == 404:
            return None
        if response.status_code not in (200, 202):
            raise StackError(f"status of {instance_id}: HTTP {response.status_code}")
        return dict(response.json())

    def instances(self, prefix: str) -> list[dict[str, Any]]:
        response = self.durable("GET", "", params={"instanceIdPrefix": prefix})
        return list(response.json()) if response.status_code == 200 else []

    def api_as(self, name: str, object_id: str, role: str, method: str, path: str, **kwargs: Any) -> int:
        """Call the app's API (`/api/...`) as a principal holding `role`: the way consumers and approvers
        act on a rotation (the API checks the role and stage and signs the event it raises; an event raised
        straight on the Durable API is ignored, rotation/signing.py)."""
        from devhost.easy_auth import issue_token, load_or_create_signing_key

        token = issue_token(load_or_create_signing_key(self.state_dir), name, [role], oid=object_id, ttl=3600)
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        response = requests.request(method, f"{self.url}/api{path}", headers=headers, timeout=30, **kwargs)
        self.seen.setdefault(response.text, f"HTTP response to {method} /api{path.split('?')[0]}")
        return response.status_code

    def run_function(self, name: str) -> int:
        return self.admin("POST", f"/admin/functions/{name}", json={"input": ""}).status_code

    def clock(self) -> dict[str, Any]:
        return dict(self.admin("GET", "/admin/devhost/clock").json())

    def set_auto_advance(self, on: bool) -> None:
        self.admin("POST", "/admin/devhost/clock", json={"autoAdvance": on}).raise_for_status()

    # -- emulators' control API (test/demo only: it returns values; never printed, never kept) -----
    def control(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        timeout = kwargs.pop("timeout", 30)
        url = f"{self.emulator['control']}/{path.lstrip('/')}"
        return requests.request(method, url, verify=self.ca_bundle, timeout=timeout, **kwargs)

    def control_json(self, path: str) -> Any:
        response = self.control("GET", path)
        response.raise_for_status()
        return response.json()

    def app_settings(self) -> dict[str, str]:
        """The app's endpoint settings (for loading the policy the way the app does)."""
        emu = self.emulator
        return {
            "ARM_ENDPOINT": emu["url"],
            "EVENTGRID_TOPIC_ENDPOINT": emu["eventGridTopic"],
            "LOGS_ENDPOINT": emu["url"],
            "LOG_ANALYTICS_WORKSPACE_ID": emu["workspaceId"],
        }

    def credential_as(self, who: tuple[str, str]) -> Any:
        """A person's or service's own identity (object id, name) — not the app's, which has its managed
        identity: tokens minted locally, usable only against the emulators (emulators/local_identity.py)."""
        from emulators.local_identity import LocalTokenCredential

        emu = self.emulator
        return LocalTokenCredential(who[0], who[1], endpoint=str(emu["url"]), tenant_id=str(emu["tenantId"]))

    def web_client_as(self, who: tuple[str, str], subscription_id: str) -> Any:
        """WebSiteManagementClient as `who`, built as the app builds it (quirk 1 is the caller's concern)."""
        from azure.mgmt.web import WebSiteManagementClient

        return WebSiteManagementClient(
            self.credential_as(who),
            subscription_id,
            base_url=str(self.emulator["url"]),
            credential_scopes=["https://management.azure.com/.default"],
            connection_verify=self.ca_bundle,
        )

    def secret_client_as(self, who: tuple[str, str], vault_url: str) -> Any:
        """SecretClient as `who`; a loopback vault cannot pass the challenge's resource check (quirk 4)."""
        from azure.keyvault.secrets import SecretClient

        return SecretClient(
            vault_url, self.credential_as(who), verify_challenge_resource=False, connection_verify=self.ca_bundle
        )
