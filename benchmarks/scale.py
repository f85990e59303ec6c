"""One scheduled tick over N generated targets on the local stack (real app, real activities, emulators),
on the virtual clock, and what it cost.

Generates a policy of N host-key targets (one emulated function app each, probe on, no consumers, the
given overlap), seeds the apps and their operator keys, fires the timer once and waits for the tick to
finish. Prints: wall time, rotations/s, CPU per rotation (devhost's process, which serves the host, the
durable engine and the emulators, plus the worker process that runs the app; together and each), mean
and peak rotations in flight and the tick's virtual span against the ideal (ceil(N / concurrency) x
overlap), requests per key per service, history events per rotation and per tick execution, peak RSS per
process, the state folder's size, and how fast the machine ran a fixed Python loop before and after.

    .venv/bin/python -m benchmarks.scale --targets 100 [--concurrency 8] [--overlap PT1H] [--keep DIR]
        [--worker process|thread]
    make bench-scale N=100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rotation.durations import parse_duration  # noqa: E402
from rotation.policy import load_policy  # noqa: E402
from tools.demo_seed import create_operator_keys, seed_sites  # noqa: E402
from tools.devhost_launcher import DemoStack  # noqa: E402

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
TICK_EPISODE = re.compile(
    r"Orchestration scheduler_orchestrator \(instance (\S+)\) episode: \w+; replayed (\d+) history"
)
CLOCK_SKIP = "Virtual clock skipped"
POLL_SECONDS = 1.0


def policy_document(count: int, overlap: str) -> dict[str, Any]:
    local = json.loads((ROOT / "config" / "rotation-policy.local.json").read_text())
    targets = [
        {
            "id": f"scale-{i:04d}",
            "functionApp": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/keyrotation-scale/providers/"
            f"Microsoft.Web/sites/scale-app-{i:04d}",
            "keyScope": {"kind": "host"},
            "baseKeyName": "client",
            "keyVault": {"secretName": f"scale-{i:04d}-key"},
            "overlap": overlap,
            "probe": {"path": "/api/ping", "expectStatus": [200]},
        }
        for i in range(count)
    ]
    return {"$schema": local["$schema"], "version": 1, "defaults": local["defaults"], "targets": targets}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1024 / 1024


def in_flight(spans: list[tuple[datetime, datetime]]) -> tuple[float, int, float]:
    """Mean and peak rotations in flight over the tick's virtual span, and that span in seconds."""
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    span = max((end - start).total_seconds(), 1e-9)
    mean = sum((e - s).total_seconds() for s, e in spans) / span
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return mean, peak, span


def wait_for_tick(stack: DemoStack, timeout: float, count: int) -> dict[str, Any]:
    """The tick's final status. Polls lightly, the tick's own status without its input: a 1,000-target
    tick carries about 100 KB of state, and listing the instances with their inputs every second put
    work on the host that the benchmark then counted as the app's."""
    deadline = time.monotonic() + timeout
    last, tick_id = "", None
    while time.monotonic() < deadline:
        if tick_id is None:
            ticks = stack.instances("scheduler-")
            tick_id = ticks[0]["instanceId"] if ticks else None
        status = stack.durable("GET", f"/{tick_id}", params={"showInput": "false"}).json() if tick_id else {}
        if status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            final = stack.status(str(tick_id))
            assert final is not None
            return final
        if tick_id:
            custom = status.get("customStatus") or {}
            line = f"  running {len(custom.get('running') or [])}, queued {custom.get('queued', '?')} of {count}"
            if line != last:
                print(line, flush=True)
                last = line
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"the tick did not finish within {timeout:.0f} s: {stack.tail()}")


def run(
    count: int, concurrency: int, overlap: str, state: Path, timeout: float, grace: float, worker: str
) -> dict[str, Any]:
    policy_file = state / "policy.json"
    state.mkdir(parents=True, exist_ok=True)
    policy_file.write_text(json.dumps(policy_document(count, overlap)))
    stack = DemoStack(
        state / "stack",
        policy=str(policy_file),
        # The clock jumps after `grace` s of idle real time (the demo waits longer so it can act between
        # jumps); nothing outside the engine acts here, so a short grace races nothing.
        extra_env={"ROTATION_MAX_CONCURRENCY": str(concurrency), "DEVHOST_CLOCK_IDLE_GRACE": str(grace)},
        worker=worker,
    )
    stack.start()
    try:
        env = {"KEY_VAULT_URL": stack.emulator["keyVault"], **stack.app_settings()}
        targets = list(load_policy(policy_file, env))
        print(f"seeding {count} apps and their operator keys ...", flush=True)
        seed_sites(stack, targets)
        create_operator_keys(stack, targets)
        assert stack.process is not None
        pids = {"host": stack.process.pid}
        if stack.endpoints.get("workerPid"):
            pids["worker"] = int(stack.endpoints["workerPid"])
        seq0 = max((int(r["seq"]) for r in stack.control_json("requests")["value"]), default=0)
        cpu0, wall0 = {n: proc_cpu_seconds(p) for n, p in pids.items()}, time.monotonic()
        print(f"tick over {count} targets, concurrency {concurrency}, overlap {overlap} ...", flush=True)
        if stack.run_function("rotation_timer") != 202:
            raise RuntimeError("the timer did not start")
        tick = wait_for_tick(stack, timeout, count)
        wall = time.monotonic() - wall0
        cpu = {n: proc_cpu_seconds(p) - cpu0[n] for n, p in pids.items()}
        summary = tick.get("output") or {}
        completed = summary.get("completed") or []
        spans, histories = [], []
        for item in completed:
            status = stack.status(f"rotation-{item['targetId']}") or {}
            spans.append((_at(status["createdTime"]), _at(status["lastUpdatedTime"])))
            path = f"/admin/devhost/durable/instances/rotation-{item['targetId']}/history"
            histories.append(len(stack.admin("GET", path).json()))
        served = [r for r in stack.control_json(f"requests?since={seq0}")["value"] if r.get("service")]
        requests_by_service = Counter(r["service"] for r in served)
        by_operation = Counter(f"{r['method']} {r.get('operation')}" for r in served if r["service"] != "proxy")
        log = stack.host_log.read_text(errors="replace")
        replayed = [int(n) for _, n in TICK_EPISODE.findall(log)]
        skips = log.count(CLOCK_SKIP)
        rss = {n: peak_rss_mb(p) for n, p in pids.items()}
    finally:
        stack.stop()
    mean, peak, span = in_flight(spans) if spans else (0.0, 0, 0.0)
    ideal = math.ceil(count / concurrency) * parse_duration(overlap).total_seconds()
    rotated = max(len(completed), 1)
    return {
        "targets": count,
        "concurrency": concurrency,
        "completed": len(completed),
        "failed": len(summary.get("failed") or []),
        "wall_s": round(wall, 1),
        "clock_skips": skips,
        "idle_grace_s": round(skips * grace, 1),
        "rotations_per_s": round(len(completed) / wall, 2) if wall else None,
        "cpu_per_rotation_s": round(sum(cpu.values()) / rotated, 3),
        "cpu_per_rotation_by_process_s": {n: round(c / rotated, 3) for n, c in cpu.items()},
        "mean_in_flight": round(mean, 1),
        "peak_in_flight": peak,
        "virtual_span_h": round(span / 3600, 1),
        "ideal_span_h": round(ideal / 3600, 1),
        "requests_per_key": {k: round(v / rotated, 1) for k, v in sorted(requests_by_service.items())},
        "operations_per_key": {k: round(v / rotated, 1) for k, v in sorted(by_operation.items())},
        "history_per_rotation": round(statistics.mean(histories), 1) if histories else None,
        "tick_executions": summary.get("executions"),
        "tick_max_replayed_history": max(replayed) if replayed else None,
        "peak_rss_mb": {n: round(r, 1) for n, r in rss.items()},
        "state_mb": round(folder_mb(state / "stack"), 1),
    }


def machine_loop_ms() -> float:
    """How fast this machine runs Python right now (a fixed loop, best of 5): its speed drifts by half
    within a session, so only runs whose loops agree compare."""
    return round(min(timeit.repeat("sum(i * i for i in range(1000000))", number=1, repeat=5)) * 1000, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--overlap", default="PT1H")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--idle-grace", type=float, default=0.02, help="devhost's clock idle grace (s)")
    parser.add_argument(
        "--worker",
        choices=("process", "thread"),
        default="process",
        help="the app's worker on its own process, as on Azure (default), or inside devhost's",
    )
    parser.add_argument("--keep", type=Path, help="state folder to use and keep (default: a temporary one)")
    args = parser.parse_args(argv)
    state = args.keep or Path(tempfile.mkdtemp(prefix="scale-"))
    before = machine_loop_ms()
    try:
        figures = run(args.targets, args.concurrency, args.overlap, state, args.timeout, args.idle_grace, args.worker)
    finally:
        if args.keep is None:
            shutil.rmtree(state, ignore_errors=True)
    figures["machine_loop_ms"] = {"before": before, "after": machine_loop_ms()}
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key.ljust(width)}  {value}")
    return 0 if figures["completed"] == args.targets else 1


if __name__ == "__main__":
    raise SystemExit(main())
