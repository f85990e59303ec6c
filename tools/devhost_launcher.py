"""The one launcher of ``python -m devhost serve``: tests, the demo, the fault campaign and the benchmark
start devhost through it, wait for endpoints.json, talk to it and stop it.

Usage::

    with running_devhost(tmp_path, app_dir=HOST_APP, emulators=False, env={...}) as host:
        host.get("/api/items/1").json()
        host.kill()      # SIGKILL: a crash, endpoints.json stays behind
        host.restart()   # same state folder, same keys; endpoints refreshed

    stack = DemoStack(state_dir)  # the real app on a virtual clock, timers off (the demo's stack)
    stack.start(); stack.status("rot-..."); stack.stop()

devhost's Easy Auth, like App Service's with ``Return401``, refuses every request without a token but the
Event Grid webhook's, so host calls sign in with a role-less tools token from the state folder's own
signing key, unless the caller passes its own ``Authorization`` header or ``anonymous=True``.

Every devhost response body the admin/Durable helpers see is kept (``seen``) so an I1 scan can prove none
of them carried a key value. Emulator control responses are not kept: that API returns values by design.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
HOST_APP = ROOT / "tests" / "host_app"
POLICY = "config/rotation-policy.local.json"
DURABLE_SYSTEM_KEY = "durabletask_extension"
INSTANCES = "/runtime/webhooks/durabletask/instances"
IDLE_GRACE = "0.75"


class StackError(RuntimeError):
    """The local stack did not do what was asked; the message says what and where to look."""


def tools_token(state_dir: Path, endpoints: dict[str, Any]) -> str:
    """A role-less token ("devhost-tools") from the devhost's own signing key ("" when its Easy Auth is off)."""
    if not endpoints.get("easyAuth"):
        return ""
    from devhost.easy_auth import issue_token, load_or_create_signing_key

    return issue_token(load_or_create_signing_key(state_dir), "devhost-tools", [], ttl=6 * 3600)


def wait_for_endpoints(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, Any]:
    """endpoints.json is written atomically once the host is ready; ours carries our pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                data = None
            if data and data.get("pid") == process.pid:
                return dict(data)
        if process.poll() is not None:
            raise StackError(f"devhost exited with code {process.returncode} before it was ready")
        time.sleep(0.05)
    raise StackError(f"devhost was not ready within {timeout:.0f} s ({path} did not appear)")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM, then SIGKILL after ``timeout``: devhost flushes its logs and closes its databases on SIGTERM."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def devhost_command(
    state_dir: Path,
    app_dir: Path = ROOT,
    *,
    emulators: bool = True,
    easy_auth: bool = True,
    clock: str = "real",
    timers: bool = True,
    extra_args: Sequence[str] = (),
) -> list[str]:
    command = [sys.executable, "-m", "devhost", "serve", "--port", "0", "--state", str(state_dir)]
    command += ["--app", str(app_dir), "--clock", clock, "--easy-auth", "on" if easy_auth else "off"]
    command += [] if emulators else ["--no-emulators"]
    command += [] if timers else ["--no-timers"]
    return command + list(extra_args)


def checkout_environment(**settings: str) -> dict[str, str]:
    """The process environment with this checkout importable, and ``settings`` on top."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **settings}


class HostEndpoints:
    """What a running devhost says of itself (its ready file's `endpoints`), read the same way by the host
    process (`Devhost`) and the in-process stack (tests/inprocess_stack.py)."""

    endpoints: dict[str, Any]

    @property
    def url(self) -> str:
        return str(self.endpoints["host"])

    @property
    def master_key(self) -> str:
        return str(self.endpoints["masterKey"])

    @property
    def function_key(self) -> str:
        return str(self.endpoints["functionKeys"]["default"])

    def system_key(self, name: str) -> str:
        return str(self.endpoints["systemKeys"][name])

    @property
    def rpc_url(self) -> str:
        """rpcBaseUrl: the durable client's loopback listener (secret segment included, trailing slash)."""
        return str(self.endpoints["rpcBaseUrl"])


@dataclass
class Devhost(HostEndpoints):
    """One devhost process on a state folder, and calls to it (host, Durable API, emulators' control API)."""

    state_dir: Path
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    endpoints: dict[str, Any] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)  # each distinct devhost response text -> where first seen
    _token: str = ""

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def output_path(self) -> Path:
        """stdout + stderr of every run of this host, appended (its log also goes to logs/host.log)."""
        return self.state_dir / "devhost-output.log"

    @property
    def host_log(self) -> Path:
        return self.state_dir / "logs" / "host.log"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def tail(self, lines: int = 15) -> list[str]:
        """The end of devhost's output: what an operator looks at first when something did not happen."""
        return self.output().splitlines()[-lines:]

    def start(self, timeout: float = 60) -> Devhost:
        (self.state_dir / "endpoints.json").unlink(missing_ok=True)  # a killed host leaves a stale one
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.output_path.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self.endpoints = wait_for_endpoints(self.state_dir / "endpoints.json", self.process, timeout)
        except StackError as exc:
            self.kill()
            raise StackError(f"{exc}\n--- devhost output ---\n" + "\n".join(self.tail(60))) from None
        return self

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM and wait: the clean shutdown (logs flushed, databases closed). Returns the exit code."""
        return None if self.process is None else stop_process(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL: simulate a crash (endpoints.json and in-flight work are left as they were)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout: float = 60) -> Devhost:
        self.kill()
        return self.start(timeout)

    # -- endpoints --------------------------------------------------------------------------------

    @property
    def emulator(self) -> dict[str, Any]:
        return dict(self.endpoints["emulator"])

    @property
    def ca_bundle(self) -> str:
        return str(self.endpoints["caBundle"])

    # -- signing in -------------------------------------------------------------------------------
    def tools_token(self) -> str:
        """The role-less tools token host calls are signed in with ("" when Easy Auth is off)."""
        if not self._token:
            self._token = tools_token(self.state_dir, self.endpoints)
        return self._token

    def bearer(self) -> dict[str, str]:
        """The Authorization header devhost's Easy Auth wants (none when it is off)."""
        token = self.tools_token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def token(self, name: str, *roles: str, ttl: int = 3600, oid: str | None = None) -> str:
        """A bearer token from ``python -m devhost token`` for this state folder, as an operator mints one."""
        command = [sys.executable, "-m", "devhost", "token", "--name", name, "--state", str(self.state_dir)]
        command += [arg for role in roles for arg in ("--role", role)]
        command += ["--ttl", str(ttl)] + (["--oid", oid] if oid else [])
        return subprocess.run(  # noqa: S603 - our own interpreter and fixed arguments
            command, cwd=ROOT, env=self.env or checkout_environment(), check=True, capture_output=True, text=True
        ).stdout.strip()

    # -- the host ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, anonymous: bool = False, **kwargs: Any) -> requests.Response:
        """Any host path, signed in as the tools identity unless ``anonymous`` or signed in already."""
        timeout = kwargs.pop("timeout", 30)
        headers = dict(kwargs.pop("headers", None) or {})
        signed_in = any(name.lower() == "authorization" for name in headers)
        if not anonymous and not signed_in:
            headers.update(self.bearer())
        url = f"{self.url}/{path.lstrip('/')}"
        return requests.request(method, url, headers=headers, timeout=timeout, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def _host(self, method: str, path: str, *, key: str, **kwargs: Any) -> requests.Response:
        headers = {"x-functions-key": key, **self.bearer(), **kwargs.pop("headers", {})}
        response = self.request(method, path, headers=headers, **kwargs)
        self.seen.setdefault(response.text, f"HTTP response to {method} {path.split('?')[0]}")
        return response

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self._host(method, path, key=self.master_key, **kwargs)

    def durable(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The public Durable HTTP API, authorized by the durabletask_extension system key."""
        return self._host(method, f"{INSTANCES}{path}", key=self.system_key(DURABLE_SYSTEM_KEY), **kwargs)

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
        response = self.request(method, f"/api{path}", headers=headers, **kwargs)
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
        identity: tokens minted locally, usable only against the emulators (emulators/core/local_identity.py)."""
        from emulators.core.local_identity import LocalTokenCredential

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


@dataclass
class DemoStack(Devhost):
    """The real app on a virtual clock with its timers off: the demo, the e2e tests, the fault campaign and
    the benchmark fire the scheduled tick themselves (a jumping clock must not add more)."""

    policy: str = POLICY  # the rotation policy file the app loads
    extra_env: dict[str, str] = field(default_factory=dict)  # app settings on top (e.g. ROTATION_MAX_CONCURRENCY)
    worker: str = "process"  # devhost serve --worker: the app's worker on its own process, or inside devhost

    def environment(self) -> dict[str, str]:
        env = checkout_environment(ROTATION_POLICY_PATH=self.policy, **self.extra_env)
        env.setdefault("ROTATION_SCHEDULE", "0 0 3 * * *")  # the timer's %setting%; never fires (--no-timers)
        # The clock jumps after this much idle real time: long enough for the demo's 50 ms polling to see a
        # stage it must act on (overlap, held) before a jump ends it, even on a loaded machine.
        env.setdefault("DEVHOST_CLOCK_IDLE_GRACE", IDLE_GRACE)
        return env

    def start(self, timeout: float = 60) -> DemoStack:
        self.command = devhost_command(
            self.state_dir, ROOT, clock="virtual", timers=False, extra_args=("--worker", self.worker)
        )
        self.env = self.environment()
        super().start(timeout)
        return self


@contextmanager
def running_devhost(
    state_dir: Path,
    app_dir: Path = ROOT,
    *,
    emulators: bool = True,
    easy_auth: bool = True,
    clock: str = "real",
    timers: bool = True,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 60,
) -> Iterator[Devhost]:
    """A started devhost; stopped with SIGTERM (or killed) on exit."""
    command = devhost_command(
        state_dir, app_dir, emulators=emulators, easy_auth=easy_auth, clock=clock, timers=timers, extra_args=extra_args
    )
    host = Devhost(state_dir=state_dir, command=command, env=checkout_environment(**(env or {})))
    host.start(timeout)
    try:
        yield host
    finally:
        host.stop()
