"""What replaying one rotation costs the worker: its stored episodes run again through the Durable SDK in
this process, as each orchestrator episode runs them on Azure (the whole history, every time).

Reads a state folder kept by `benchmarks/scale.py --keep DIR` (devhost's `durable.sqlite3`), rebuilds the
payload of each of one completed rotation's episodes from its history (past events played, the episode's
own new events not) and prints the CPU time of all of them, the part the SDK spends building its history
events (`DurableOrchestrationContext.from_json`, `dateutil` on every timestamp), and the app's own code
against that part, from cProfile (the figure docs/performance.md compares changes of the app by).

    .venv/bin/python -m benchmarks.scale --targets 10 --keep /tmp/scale10
    .venv/bin/python -m benchmarks.replay /tmp/scale10 [--rounds 20]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from azure.durable_functions import DurableOrchestrationContext  # noqa: E402

from devhost.durable.episode import PROTOCOL  # noqa: E402
from devhost.durable.events import EventType  # noqa: E402
from orchestrations.rotation import rotation_orchestrator  # noqa: E402


def episode_payloads(database: Path) -> list[str]:
    """The orchestration payloads of one completed rotation's episodes, in order: each episode begins at
    an OrchestratorStarted event and its new events run to the next OrchestratorCompleted."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    row = db.execute(
        "SELECT instance_id, input FROM instances WHERE name = 'rotation_orchestrator' AND status = 'Completed'"
        " ORDER BY instance_id LIMIT 1"
    ).fetchone()
    if row is None:
        raise SystemExit(f"{database}: no completed rotation to replay")
    instance_id, given = row
    query = "SELECT event FROM history WHERE instance_id = ? ORDER BY seq"
    history = [json.loads(event) for (event,) in db.execute(query, (instance_id,))]
    types = [event["EventType"] for event in history]
    starts = [i for i, kind in enumerate(types) if kind == EventType.ORCHESTRATOR_STARTED]
    payloads = []
    done = EventType.ORCHESTRATOR_COMPLETED
    for start in starts:
        end = next((i for i in range(start, len(history)) if types[i] == done), len(history))
        past, new = history[:start], history[start:end]
        played = [{**e, "IsPlayed": True} for e in past] + [{**e, "IsPlayed": False} for e in new]
        payload = {"history": played, "input": given, "instanceId": instance_id, "isReplaying": bool(past)}
        payloads.append(json.dumps({**payload, "parentInstanceId": None, **PROTOCOL}))
    return payloads


def cpu_ms(work: Callable[[], Any], rounds: int) -> float:
    started = time.process_time()
    for _ in range(rounds):
        work()
    return (time.process_time() - started) / rounds * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("state", type=Path, help="a state folder kept by benchmarks/scale.py --keep")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    payloads = episode_payloads(args.state / "stack" / "durable.sqlite3")

    def replay() -> None:
        for payload in payloads:
            rotation_orchestrator(payload)

    def parse() -> None:
        for payload in payloads:
            DurableOrchestrationContext.from_json(payload)

    replay()  # imports and first calls out of the figures
    total, parsing = cpu_ms(replay, args.rounds), cpu_ms(parse, args.rounds)
    profile = cProfile.Profile()
    profile.runcall(replay)
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]

    def cumulative(function: str) -> float:
        return float(sum(row[3] for key, row in stats.items() if key[2] == function))

    print(f"episodes                 {len(payloads)}")
    print(f"events replayed          {sum(p.count('EventType') for p in payloads)}")
    print(f"cpu_ms                   {total:.1f}")
    print(f"sdk_history_parsing_ms   {parsing:.1f}")
    print(f"app_code_vs_sdk_parsing  {cumulative('rotation_orchestrator') / cumulative('from_json'):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
