"""Start ``python -m devhost serve`` in a subprocess, wait for endpoints.json, talk to it.

Usage::

    with running_devhost(tmp_path, app_dir=HOST_APP, emulators=False, env={...}) as host:
        host.get("/api/items/1").json()
        host.kill()      # SIGKILL: a crash, endpoints.json stays behind
        host.restart()   # same state folder, same keys; endpoints refreshed

With Easy Auth on, devhost (like App Service with ``Return401``) refuses every request without a token
but the Event Grid webhook's, so ``request`` signs in as a role-less tools identity unless the caller
passes its own ``Authorization`` header or ``anonymous=True``.
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
                return data
        if process.poll() is not None:
            raise RuntimeError(f"devhost exited with {process.returncode} before it was ready")
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout}s")


@dataclass
class Devhost:
    state_dir: Path
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    endpoints: dict[str, Any] = field(default_factory=dict)
    _tools_token: str = ""

    @property
    def url(self) -> str:
        return self.endpoints["host"]

    @property
    def master_key(self) -> str:
        return self.endpoints["masterKey"]

    @property
    def function_key(self) -> str:
        return self.endpoints["functionKeys"]["default"]

    def system_key(self, name: str) -> str:
        return self.endpoints["systemKeys"][name]

    @property
    def output_path(self) -> Path:
        """stdout + stderr of every run of this host, appended."""
        return self.state_dir / "devhost-process.log"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def start(self, timeout: float = 60) -> Devhost:
        (self.state_dir / "endpoints.json").unlink(missing_ok=True)  # a killed host leaves a stale one
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.output_path.open("ab") as out:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=out, stderr=out)
        try:
            self.endpoints = wait_for_endpoints(self.state_dir / "endpoints.json", self.process, timeout)
        except Exception as exc:
            self.kill()
            raise RuntimeError(f"{exc}\n--- devhost output ---\n{self.output()[-4000:]}") from None
        return self

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait: the clean shutdown path. Returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: simulate a crash (endpoints.json and in-flight work are left as they were)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout: float = 60) -> Devhost:
        self.kill()
        return self.start(timeout)

    @property
    def rpc_url(self) -> str:
        """rpcBaseUrl: the durable client's loopback listener (secret segment included, trailing slash)."""
        return str(self.endpoints["rpcBaseUrl"])

    def tools_token(self) -> str:
        """A role-less devhost token ("devhost-tools"): what the tests sign host calls (keys, Durable API) with."""
        if not self._tools_token:
            from tools.demo_stack import tools_token

            self._tools_token = tools_token(self.state_dir, self.endpoints)
        return self._tools_token

    def request(self, method: str, path: str, *, anonymous: bool = False, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        headers = dict(kwargs.pop("headers", None) or {})
        signed_in = any(name.lower() == "authorization" for name in headers)
        if self.endpoints.get("easyAuth") and not anonymous and not signed_in:
            headers["Authorization"] = f"Bearer {self.tools_token()}"
        return requests.request(method, f"{self.url}/{path.lstrip('/')}", headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def token(self, name: str, *roles: str, ttl: int = 3600, oid: str | None = None) -> str:
        """A bearer token from ``python -m devhost token`` for this state folder."""
        command = [sys.executable, "-m", "devhost", "token", "--name", name, "--state", str(self.state_dir)]
        command += [arg for role in roles for arg in ("--role", role)]
        command += ["--ttl", str(ttl)] + (["--oid", oid] if oid else [])
        return subprocess.run(
            command, cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        ).stdout.strip()


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
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    command = devhost_command(
        state_dir,
        app_dir,
        emulators=emulators,
        easy_auth=easy_auth,
        clock=clock,
        timers=timers,
        extra_args=extra_args,
    )
    host = Devhost(state_dir=state_dir, command=command, env=full_env)
    host.start(timeout)
    try:
        yield host
    finally:
        host.stop()
