"""`make demo`: one scheduled rotation tick over the demo targets, end to end on the local stack.

It starts devhost (the real app, the emulators, a virtual clock), seeds what Azure would already hold
(the target apps, the keys an operator made by hand, telemetry with 401s for one target), fires the
timer once, then plays the people around a rotation: a consumer of demo-orders reads its new key and
another acknowledges, so that overlap ends early; an approver releases demo-reports-export when the
gate holds it. When every rotation is over it prints a timeline per rotation, checks the end state and
the invariants I1 and I2, and exits 0 only if everything is as expected. Act 2 (tools/demo_emergency.py):
a responder's emergency rotation over HTTP ends an on-demand rotation mid-overlap, and the sample
consumer picks up the new key by itself.

Run from the repository root: `python -m tools.demo [--state DIR] [--timeout SECONDS]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from azure.core.exceptions import AzureError

from emulators.core.invariants import I1Finding, Place, TargetRef, check_i2, describe_findings, scan, secret_values
from emulators.core.invariants import state_files as invariant_state_files
from rotation.identity import ROLE_APPROVER, ROLE_CONSUMER
from rotation.naming import rotation_instance_id
from rotation.policy import Policy, PolicyError, Target, load_policy
from tools import demo_emergency as emergency
from tools import demo_report as report
from tools import demo_seed as seed
from tools.devhost_launcher import POLICY, ROOT, DemoStack, StackError

HELD_TARGET = "demo-reports-export"
CONSUMER_TARGET = "demo-orders"
READER = "00000000-0000-0000-0000-00000000c001"  # reads the new version: seen in the Key Vault audit
ACKER = "00000000-0000-0000-0000-00000000c002"  # acknowledges over the ConsumerAck event
APPROVER = {"name": "demo-approver", "objectId": "00000000-0000-0000-0000-0000000000a1"}
APPROVE_REASON = "demo: failures are from a test client"
TERMINAL = {"Completed", "Failed", "Terminated", "Canceled"}
POLL_SECONDS = 0.05
START_GRACE_SECONDS = 30  # how long the rotations may take to appear after the tick


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Watch:
    """What the demo saw and did while the rotations ran."""

    finals: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: dict[str, tuple[str, str]] = field(default_factory=dict)
    consumer_done: bool = False
    consumer_note: str = "the demo never saw demo-orders in its overlap stage"
    approved: bool | None = None
    timed_out: bool = False
    real_seconds: float = 0.0


@contextlib.contextmanager
def clock_paused(stack: DemoStack) -> Iterator[None]:
    """Hold the virtual clock still while the demo acts, so a jump cannot end the stage under us."""
    stack.set_auto_advance(False)
    try:
        yield
    finally:
        stack.set_auto_advance(True)


def stage_of(status: Mapping[str, Any] | None) -> tuple[str, str]:
    if status is None:
        return "not started", ""
    custom = status.get("customStatus")
    stage = custom.get("stage", "") if isinstance(custom, Mapping) else ""
    return str(status.get("runtimeStatus", "")), str(stage)


def act_as_consumers(stack: DemoStack, target: Target, status: Mapping[str, Any], watch: Watch) -> None:
    custom = status.get("customStatus") or {}
    version = custom.get("version") if isinstance(custom, Mapping) else None
    reader, acker = target.consumer(READER), target.consumer(ACKER)
    if not version or reader is None or acker is None:
        watch.consumer_note = "customStatus has no version, or the policy lacks the demo's consumers"
        return
    with clock_paused(stack):
        seed.consumer_reads_version(stack, target, str(version), (reader.object_id, reader.name))
        say(f"    {reader.name} read version {report.short_version(version)} from Key Vault (audit → adoption)")
        rotation_id = custom.get("rotationId") if isinstance(custom, Mapping) else None
        path = f"/rotations/{rotation_id}/ack"
        code = stack.api_as(acker.name, acker.object_id, ROLE_CONSUMER, "POST", path, json={})
        say(f"    {acker.name} acknowledged the new key (POST /api{path} → HTTP {code})")
    watch.consumer_done = code == 202
    watch.consumer_note = "both consumers switched during overlap" if code == 202 else f"ConsumerAck: HTTP {code}"


def approve(stack: DemoStack, target: Target, watch: Watch) -> None:
    with clock_paused(stack):
        custom = (stack.status(rotation_instance_id(target.id)) or {}).get("customStatus") or {}
        path = f"/rotations/{custom.get('rotationId')}/approve"
        body = {"reason": APPROVE_REASON}
        code = stack.api_as(APPROVER["name"], APPROVER["objectId"], ROLE_APPROVER, "POST", path, json=body)
    watch.approved = code == 202
    say(f"    {APPROVER['name']} approved the held rotation (POST /api{path} → HTTP {code}): {APPROVE_REASON}")


def watch_rotations(stack: DemoStack, policy: Policy, timeout: float) -> Watch:
    """Poll each due target's rotation until all are over (or the timeout), printing stage changes."""
    targets = [t for t in policy if t.schedulable]
    watch = Watch()
    started = time.monotonic()
    while True:
        statuses = {t.id: stack.status(rotation_instance_id(t.id)) for t in targets}
        for target in targets:
            status = statuses[target.id]
            key = stage_of(status)
            if status is None or key == watch.stages.get(target.id):
                continue
            watch.stages[target.id] = key
            now = report.short_time(stack.clock().get("now"))
            say(f"  {now}  {target.id:<22} {key[1] or '—':<13} {key[0]}")
            if target.id == CONSUMER_TARGET and key[1] == "overlap" and not watch.consumer_done:
                act_as_consumers(stack, target, status, watch)
            if target.id == HELD_TARGET and key[1] == "held" and watch.approved is None:
                approve(stack, target, watch)
        present = {tid: s for tid, s in statuses.items() if s is not None}
        elapsed = time.monotonic() - started
        if len(present) == len(targets) and all(s.get("runtimeStatus") in TERMINAL for s in present.values()):
            watch.finals = present
            break
        if elapsed > timeout or (not present and elapsed > START_GRACE_SECONDS):
            watch.finals = present
            watch.timed_out = True
            break
        time.sleep(POLL_SECONDS)
    watch.real_seconds = time.monotonic() - started
    return watch


def prepare_state(state_dir: Path) -> None:
    """A fresh state folder per run; refuse to wipe one a running devhost still uses."""
    endpoints = state_dir / "endpoints.json"
    if endpoints.exists():
        with contextlib.suppress(ValueError, OSError):
            pid = int(json.loads(endpoints.read_text()).get("pid", 0))
            if pid and Path(f"/proc/{pid}").exists():
                raise StackError(f"a devhost (pid {pid}) is still running on {state_dir}; stop it first")
    shutil.rmtree(state_dir, ignore_errors=True)


def scheduler_summary(stack: DemoStack) -> list[str]:
    lines = []
    for instance in stack.instances("scheduler-"):
        output = instance.get("output")
        summary = report.compact(output, 110) if output is not None else "no output"
        lines.append(f"  {instance.get('instanceId')}: {instance.get('runtimeStatus')}; {summary}")
    return lines or ["  no scheduler instance found"]


def invariant_checks(
    stack: DemoStack, policy: Policy, state: Mapping[str, Any], watch: Watch
) -> tuple[list[report.Check], list[str]]:
    """I2 over the whole journal; I1 over devhost's state folder (after it stopped), the events, the
    custom statuses and every devhost response the demo saw."""
    changes = stack.control_json("changes")["value"]
    served = stack.control_json("requests")["value"]
    violations = check_i2(changes, [TargetRef.from_target(t) for t in policy], served)
    texts = [Place.text(label, text) for text, label in stack.seen.items()]
    for row in (state.get("eventgrid") or {}).get("events", []):
        texts.append(Place.text(f"Event Grid event {row.get('id')} ({row.get('type')})", json.dumps(row)))
    for tid, final in watch.finals.items():
        texts.append(Place.text(f"custom status of rotation-{tid}", json.dumps(final.get("customStatus"))))
        texts.append(Place.text(f"output of rotation-{tid}", json.dumps(final.get("output"))))
    details = [str(v) for v in violations[:20]]
    checks = [
        report.Check(
            not violations,
            "I2",
            f"newest enabled Key Vault version accepted by its target after each of {len(served)} requests"
            + (f" ({len(violations)} violation(s))" if violations else ""),
        )
    ]
    stack.stop()
    files = invariant_state_files(stack.state_dir, exclude=[stack.state_dir / "emulator"])
    values = secret_values(state)
    findings: list[I1Finding] = scan(values, [*files, *texts])
    # Positive control: the emulators' own database holds every value, so a scan that finds none there is blind.
    emulator_dir = stack.state_dir / "emulator"
    control = invariant_state_files(emulator_dir, exclude=[emulator_dir / "tls"]) if emulator_dir.is_dir() else []
    seen_in_control = {f.value_label for f in scan(values, control)}
    blind = len(seen_in_control) < len(values)
    checks.append(
        report.Check(
            not findings and not blind and bool(values),
            "I1",
            f"none of {len(values)} key values in {len(files)} state files (history, logs) or {len(texts)} "
            "responses, statuses and events"
            + (f" ({len(findings)} finding(s))" if findings else "")
            + (" (the scan is blind: it missed values in the emulators' own database)" if blind else ""),
        )
    )
    return checks, details + describe_findings(findings)


def run(stack: DemoStack, timeout: float) -> int:
    say(f"==> starting devhost (virtual clock, real app, policy {POLICY}) in {stack.state_dir}")
    stack.start()
    emu = stack.emulator
    policy = load_policy(ROOT / POLICY, environ={**stack.app_settings(), "KEY_VAULT_URL": emu["url"]})
    targets = list(policy)
    for needed in (HELD_TARGET, CONSUMER_TARGET):
        if policy.target(needed) is None:
            raise StackError(f"the local policy has no target {needed!r}; the demo is built around it")
    say(f"    host {stack.url}   emulators {emu['url']}")

    say("==> seeding the emulators (what Azure would already hold)")
    for spec in seed.seed_sites(stack, targets):
        say(f"    app {spec.name:<14} functions: {', '.join(spec.functions) or '—'}")
    for made in seed.create_operator_keys(stack, targets):
        say(f"    operator key {made} (value generated by the platform)")
    now = report.parse_time(stack.clock()["now"])
    assert now is not None
    counts = seed.seed_telemetry(stack, targets, now, failing=HELD_TARGET)
    for tid, count in counts.items():
        note = "401s in its overlap window, none in its baseline" if tid == HELD_TARGET else "healthy traffic"
        say(f"    telemetry {tid:<22} {count:>3} rows: {note}")

    say(
        f"==> one scheduled tick at virtual {report.short_time(stack.clock()['now'])}"
        " (POST /admin/functions/rotation_timer)"
    )
    code = stack.run_function("rotation_timer")
    if code != 202:
        raise StackError(f"the timer function answered HTTP {code} (is rotation_timer registered?)")
    say(f"  {'virtual time (UTC)':<19}  {'target':<22} {'stage':<13} runtime status")
    watch = watch_rotations(stack, policy, timeout)
    if watch.timed_out:
        say(f"    gave up waiting after {watch.real_seconds:.0f} s")
    say("==> scheduler")
    for line in scheduler_summary(stack):
        say(line)

    state = stack.control_json("state")
    events = stack.control_json("eventgrid/events")["value"]
    rotated = [t for t in targets if t.schedulable]
    say()
    for target in rotated:
        for line in report.timeline(target, watch.finals.get(target.id), state, events, watch.real_seconds):
            say(line)
        say()

    checks: list[report.Check] = []
    for target in rotated:
        held = target.id == HELD_TARGET
        checks += report.check_rotation(target, watch.finals.get(target.id), state, events, held, watch.approved)

    say("==> act 2: a key of demo-orders leaked; an incident responder rotates it over HTTP")
    act = emergency.run_act(stack, policy, say)
    state = stack.control_json("state")
    events = stack.control_json("eventgrid/events")["value"]
    orders = policy.target(emergency.TARGET)
    assert orders is not None
    say()
    for line in report.timeline(orders, act.final, state, events):
        say(line)
    say()
    checks += emergency.checks(stack, policy, act, state)
    if act.final:
        watch.finals[f"{emergency.TARGET} (emergency)"] = act.final
    invariants, details = invariant_checks(stack, policy, state, watch)
    checks += invariants
    width = max(len(c.subject) for c in checks)
    say("==> expectations")
    for check in checks:
        say(check.line(width))
    for line in details:
        say(f"      {line}")
    say(f"  note: {watch.consumer_note}")
    if watch.approved is None:
        say(f"  note: the demo never saw {HELD_TARGET} held, so it approved nothing")
    failed = [c for c in checks if not c.ok]
    if watch.timed_out:
        say(f"FAILED: the rotations did not all finish within {timeout:.0f} s real time")
    if failed or watch.timed_out:
        say(f"demo FAILED: {len(failed)} of {len(checks)} expectations not met")
        say(f"  logs: {stack.host_log}  and  {stack.output_path}")
        say(f"  state (history DB, emulator state): {stack.state_dir}")
        return 1
    say(f"demo PASSED: {len(checks)} expectations met in {watch.real_seconds:.1f} s of rotations")
    return 0


def keep_serving(state_dir: Path) -> None:
    """Leave the stack up until Ctrl-C, so the `keyrotation` command (docs/cli.md) can be tried on it."""
    say(f"the stack stays up ({state_dir}); in another terminal: .venv/bin/keyrotation plan  (Ctrl-C stops it)")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--state", default=".devhost/demo", help="state folder, wiped first (default .devhost/demo)")
    parser.add_argument("--timeout", type=float, default=120, help="real seconds to wait for the rotations")
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards (for `keyrotation`)")
    args = parser.parse_args(argv)
    state_dir = (ROOT / args.state).resolve() if not os.path.isabs(args.state) else Path(args.state)
    stack = DemoStack(state_dir)
    try:
        prepare_state(state_dir)
        code = run(stack, args.timeout)
        if args.keep:  # run() stopped devhost for the I1 scan: start it again on the same state
            stack.start()
            keep_serving(state_dir)
        return code
    except (StackError, PolicyError, requests.RequestException, AzureError) as exc:
        say(f"demo FAILED: {exc}")
        for line in stack.tail():
            say(f"  | {line}")
        say(f"  logs: {stack.host_log}  and  {stack.output_path}")
        return 2
    except KeyboardInterrupt:
        say("demo interrupted")
        return 130
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
