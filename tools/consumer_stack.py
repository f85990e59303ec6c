"""Run the sample consumer (`samples/consumer/`) beside a running local stack, subscribed to its events.

A second `python -m devhost serve --app samples/consumer --no-emulators` gets the settings a consumer
would have in Azure, pointed at the main stack's emulators (Key Vault, the target's data plane, the CA
bundle) and at the main devhost's API, with a devhost-issued `KeyRotation.Consumer` token for its own
object id. Its Event Grid webhook is then subscribed to the emulator's topic with CloudEvents delivery
and an exact-subject filter `targets/<targetId>`.

    make serve   # in one terminal (state .devhost)
    python -m tools.consumer_stack --target demo-orders --consumer billing-worker   # in another

Tests and the demo use `ConsumerHost` / `start_consumer_beside` directly.
"""

from __future__ import annotations

import argparse
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

from tools.devhost_launcher import StackError, stop_process, tools_token, wait_for_endpoints

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_APP = ROOT / "samples" / "consumer"
EVENT_FUNCTION = "on_rotation_event"
CONSUMER_ROLE = "KeyRotation.Consumer"
FAST_RETRIES = [1, 2, 5, 10, 30]  # local retry schedule: a failed ack is retried within seconds


@dataclass(frozen=True)
class ConsumerSpec:
    """Who the consumer is and what it calls: one target, one Key Vault secret, one Entra object id."""

    target_id: str
    object_id: str
    name: str
    key_vault_url: str
    secret_name: str
    target_url: str | None = None


def mint_token(main_state: Path, name: str, object_id: str, ttl: int = 86400) -> str:
    """A bearer token the main devhost's Easy Auth accepts: the consumer's identity with its role."""
    command = [sys.executable, "-m", "devhost", "token", "--name", name, "--role", CONSUMER_ROLE]
    command += ["--oid", object_id, "--state", str(main_state), "--ttl", str(ttl)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)  # noqa: S603
    return done.stdout.strip()


def consumer_environment(
    main_endpoints: dict[str, Any], spec: ConsumerSpec, api_token: str, api_url: str | None = None
) -> dict[str, str]:
    """The sample's app settings on the local stack (README of samples/consumer lists the Azure ones)."""
    env = {
        "CONSUMER_TARGET_ID": spec.target_id,
        "CONSUMER_KEY_VAULT_URL": spec.key_vault_url,
        "CONSUMER_SECRET_NAME": spec.secret_name,
        "CONSUMER_CREDENTIAL": "loopback-token",
        "CONSUMER_OBJECT_ID": spec.object_id,
        "CONSUMER_CA_BUNDLE": str(main_endpoints["emulator"]["caBundle"]),
        "KEYROTATION_API_URL": api_url or str(main_endpoints["host"]),
        "KEYROTATION_API_TOKEN": api_token,
    }
    if spec.target_url:
        env["CONSUMER_TARGET_URL"] = spec.target_url
    return env


@dataclass
class ConsumerHost:
    """The sample consumer on its own devhost (no emulators, no timers)."""

    state_dir: Path
    settings: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    endpoints: dict[str, Any] = field(default_factory=dict)

    @property
    def output_path(self) -> Path:
        return self.state_dir / "devhost-output.log"

    def command(self) -> list[str]:
        app, state = str(SAMPLE_APP), str(self.state_dir)
        serve = ["serve", "--app", app, "--no-emulators", "--no-timers", "--port", "0", "--state", state]
        return [sys.executable, "-m", "devhost", *serve]

    def start(self, timeout: float = 60) -> ConsumerHost:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "endpoints.json"
        path.unlink(missing_ok=True)
        # Only what a Functions app gets: the process environment minus anything aimed at the main app.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUMER_", "KEYROTATION_"))}
        # The kit from this checkout (make setup also installs it into .venv; this keeps the source in use).
        env = {**base, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "kit" / "src")]), **self.settings}
        with self.output_path.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
                self.command(), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self.endpoints = wait_for_endpoints(path, self.process, timeout)
        except StackError as exc:
            self.stop()
            raise StackError(f"the consumer's {exc}: {self.tail()}") from None
        return self

    def stop(self, timeout: float = 20) -> None:
        if self.process:
            stop_process(self.process, timeout)

    def tail(self, lines: int = 20) -> str:
        text = self.output_path.read_text(errors="replace") if self.output_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        path = self.state_dir / "logs" / "host.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def url(self) -> str:
        return str(self.endpoints["host"])

    def webhook_url(self, function: str = EVENT_FUNCTION) -> str:
        code = self.endpoints["systemKeys"]["eventgrid_extension"]
        return f"{self.url}/runtime/webhooks/EventGrid?functionName={function}&code={code}"

    def _call(self, method: str, route: str) -> requests.Response:
        headers = {"x-functions-key": str(self.endpoints["functionKeys"]["default"])}
        token = tools_token(self.state_dir, self.endpoints)  # its devhost's Easy Auth refuses anonymous calls
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, f"{self.url}/api/{route}", headers=headers, timeout=30)

    def state(self) -> dict[str, Any]:
        """`GET /api/consumer/state`: version, fingerprint, ack — never the key."""
        response = self._call("GET", "consumer/state")
        response.raise_for_status()
        return dict(response.json())

    def call_target(self) -> requests.Response:
        return self._call("POST", "consumer/call-target")


def subscribe(
    main_endpoints: dict[str, Any],
    consumer: ConsumerHost,
    target_id: str,
    name: str | None = None,
    *,
    exact_subject: bool = True,
    retry_schedule: list[int] | None = None,
) -> dict[str, Any]:
    """Subscribe the consumer's webhook to the emulator's topic, as `az eventgrid event-subscription
    create` does in Azure. Exact subject: `targets/a` must not also match `targets/a-b`."""
    emu = main_endpoints["emulator"]
    subject = f"targets/{target_id}"
    body: dict[str, Any] = {
        "endpoint": consumer.webhook_url(),
        "deliverySchema": "CloudEventSchemaV1_0",
        "filter": {"subjectBeginsWith": subject, "subjectEndsWith": subject if exact_subject else ""},
        "retrySchedule": retry_schedule or FAST_RETRIES,
    }
    response = requests.put(
        f"{emu['control']}/eventgrid/subscriptions/{name or f'consumer-{target_id}'}",
        json=body,
        verify=emu["caBundle"],
        timeout=30,
    )
    if response.status_code not in (200, 201):
        raise RuntimeError(f"subscribing the consumer failed: HTTP {response.status_code} {response.text[:300]}")
    return dict(response.json())


def spec_from_policy(main_endpoints: dict[str, Any], policy_path: Path, target_id: str, consumer: str) -> ConsumerSpec:
    """The consumer's settings from the main app's policy: its secret, its probe URL, its object id."""
    from rotation.policy import load_policy

    emu = main_endpoints["emulator"]
    env = {
        "KEY_VAULT_URL": emu["keyVault"],
        "ARM_ENDPOINT": emu["arm"],
        "LOG_ANALYTICS_WORKSPACE_ID": emu["workspaceId"],
    }
    target = load_policy(policy_path, env).target(target_id)
    if target is None:
        raise SystemExit(f"no target {target_id!r} in {policy_path}")
    who = next((c for c in target.consumers if consumer in (c.name, c.object_id)), None)
    if who is None:
        raise SystemExit(f"{consumer!r} is not a registered consumer of {target_id}")
    # The sample calls its target on the emulators' data-plane route (its settings allow only loopback
    # hosts locally); on Azure CONSUMER_TARGET_URL is https://<app>.azurewebsites.net/<path>.
    host = target.function_app.default_host_name
    probe = f"{emu['url']}/_targets/{host}{target.probe.path}" if target.probe else None
    return ConsumerSpec(
        target.id, who.object_id, who.name, target.key_vault.vault_url, target.key_vault.secret_name, probe
    )


def start_consumer_beside(
    main_endpoints: dict[str, Any], main_state: Path, spec: ConsumerSpec, state_dir: Path
) -> ConsumerHost:
    """Start the sample for `spec` and subscribe it; the caller stops it."""
    token = mint_token(main_state, spec.name, spec.object_id)
    host = ConsumerHost(state_dir, consumer_environment(main_endpoints, spec, token)).start()
    try:
        subscribe(main_endpoints, host, spec.target_id)
    except Exception:
        host.stop()
        raise
    return host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.consumer_stack", description=__doc__.splitlines()[0])
    parser.add_argument("--main-state", type=Path, default=Path(".devhost"), help="the running stack's --state")
    parser.add_argument("--policy", type=Path, default=ROOT / "config" / "rotation-policy.local.json")
    parser.add_argument("--target", default="demo-orders")
    parser.add_argument("--consumer", default="billing-worker", help="a consumer of the target: name or object id")
    parser.add_argument("--state", type=Path, default=None, help="default: <main-state>/consumer-<target>")
    args = parser.parse_args(argv)
    endpoints = json.loads((args.main_state / "endpoints.json").read_text())
    spec = spec_from_policy(endpoints, args.policy, args.target, args.consumer)
    host = start_consumer_beside(
        endpoints, args.main_state, spec, args.state or args.main_state / f"consumer-{spec.target_id}"
    )
    print(f"sample consumer {spec.name} for {spec.target_id} ready: {host.url}/api/consumer/state", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while host.process and host.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
