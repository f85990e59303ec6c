"""The scheduler at scale, with the real scheduler and its real start/progress activities over stand-in
rotations (tests/scheduler_app): a tick of 200 targets keeps its concurrency window full, spans about
the ideal virtual time, and no execution of it replays more than a fixed number of history events
(continue-as-new carries the state), so replay cost per rotation does not grow with the number of targets.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pytest

from benchmarks.scale import TICK_EPISODE, policy_document
from orchestrations.scheduler import YIELDS_PER_EXECUTION
from tests.inprocess_stack import running_inprocess
from tests.rotation_harness import PLACEHOLDER_ENV, TEST_SIGNING_KEY, Durable
from tools.devhost_launcher import ROOT

pytestmark = pytest.mark.slow

APP = ROOT / "tests" / "scheduler_app"
TARGETS, WINDOW, OVERLAP = 200, 8, 3600
# Per execution: at most YIELDS_PER_EXECUTION steps of about four events each (task scheduled and
# completed, the episode's started and completed markers), plus the execution's start and, in the first
# execution, the discovery of due targets and drift.
HISTORY_BOUND = 4 * YIELDS_PER_EXECUTION + 40


def scheduler_env(policy: Path, targets: int) -> dict[str, str]:
    return {
        **PLACEHOLDER_ENV,
        "ROTATION_POLICY_PATH": str(policy),
        "KEYROTATION_SIGNING_KEY": TEST_SIGNING_KEY,
        "SCHEDULER_TARGETS": str(targets),
        "SCHEDULER_OVERLAP_SECONDS": str(OVERLAP),
        "DEVHOST_CLOCK_IDLE_GRACE": "0.1",  # the clock jumps sooner: nothing here races it
    }


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_tick_of_200_targets_keeps_its_window_full_with_bounded_history(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(policy_document(TARGETS, f"PT{OVERLAP}S")))
    env = scheduler_env(policy, TARGETS)
    with running_inprocess(tmp_path / "host", APP, env=env) as host:
        durable = Durable(host)
        durable.start("scheduler_orchestrator", "scale-tick", {"tick": "2026-11-22T03:00:00.000Z", "maxConcurrency": 8})
        status = durable.wait("scale-tick", timeout=240)
        summary = status["output"]
        spans = []
        for item in summary["completed"]:
            rotation = durable.status(f"rotation-{item['targetId']}")
            spans.append((_at(rotation["createdTime"]), _at(rotation["lastUpdatedTime"])))
        log = (tmp_path / "host" / "logs" / "host.log").read_text()

    assert status["runtimeStatus"] == "Completed"
    assert len(summary["completed"]) == TARGETS and summary["failed"] == [] and summary["inFlight"] == []
    assert summary["executions"] > 1  # it continued as new along the way, carrying the summary

    replayed = [int(n) for instance, n in TICK_EPISODE.findall(log) if instance == "scale-tick"]
    assert replayed and max(replayed) <= HISTORY_BOUND, (max(replayed), HISTORY_BOUND)

    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    span = (end - start).total_seconds()
    ideal = math.ceil(TARGETS / WINDOW) * OVERLAP
    in_flight = sum((e - s).total_seconds() for s, e in spans) / span
    print(
        f"\nscheduler at N={TARGETS}, window {WINDOW}: virtual span {span / 3600:.1f} h (ideal {ideal / 3600:.0f} h), "
        f"mean in flight {in_flight:.1f}, executions {summary['executions']}, "
        f"max replayed history {max(replayed)} events (bound {HISTORY_BOUND})"
    )
    assert span <= 1.5 * ideal  # a slot frees about when its rotation ends: at its expected end, read then
    assert in_flight >= 6


def test_a_wide_window_starts_a_burst_then_paces_its_starts_within_the_rate(tmp_path: Path) -> None:
    targets, per_minute = 60, 30  # a window of 64 would start all 60 at once; the bucket lets 25 through
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(policy_document(targets, f"PT{OVERLAP}S")))
    env = scheduler_env(policy, targets)
    request = {"tick": "2026-11-22T03:00:00.000Z", "maxConcurrency": 64, "maxStartsPerMinute": str(per_minute)}
    with running_inprocess(tmp_path / "host", APP, env=env) as host:
        durable = Durable(host)
        durable.start("scheduler_orchestrator", "paced-tick", request)
        status = durable.wait("paced-tick", timeout=240)
        summary = status["output"]
        starts = sorted(_at(durable.status(f"rotation-{i['targetId']}")["createdTime"]) for i in summary["completed"])

    assert status["runtimeStatus"] == "Completed" and len(summary["completed"]) == targets
    burst, rate = 25, per_minute / 60
    assert summary["pacedStarts"] > 0  # starts waited for a token (the count depends on the polls between)
    offsets = [(s - starts[0]).total_seconds() for s in starts]
    assert offsets[burst - 1] < 5  # the burst goes at once
    assert offsets[-1] >= (targets - burst) / rate  # the rest no faster than the rate
    for i, first in enumerate(offsets):  # and no window of time holds more than burst + rate x its length
        for j in range(i, len(offsets)):
            assert j - i + 1 <= burst + rate * (offsets[j] - first) + 1, (i, j)
