"""How long `import function_app` takes in a fresh interpreter (DESIGN budget: 300 ms).

Each run is a new process, as a cold Functions worker is. Prints the median over N runs of the whole
import, and of the part that is ours: the worker has already imported azure.functions before it loads
the app, and azure.durable_functions (with aiohttp) is a fixed cost of any Durable Functions app.

    .venv/bin/python benchmarks/import_time.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "ROTATION_POLICY_PATH": str(ROOT / "config" / "rotation-policy.local.json"),
    "KEY_VAULT_URL": "https://127.0.0.1:8443",
    "LOG_ANALYTICS_WORKSPACE_ID": "00000000-0000-0000-0000-000000000001",
    "ARM_ENDPOINT": "https://127.0.0.1:8443",
}
PROBE = """
import time, importlib
for name in {preload!r}:
    importlib.import_module(name)
start = time.perf_counter()
import function_app
print((time.perf_counter() - start) * 1000)
"""


def measure(preload: tuple[str, ...], runs: int) -> float:
    samples = []
    for _ in range(runs):
        done = subprocess.run(  # noqa: S603 - our own interpreter and a fixed probe
            [sys.executable, "-c", PROBE.format(preload=preload)],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            check=True,
        )
        samples.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    cases = [
        ("cold interpreter", ()),
        ("after azure.functions (as in the worker)", ("azure.functions",)),
        ("ours only (after azure.durable_functions)", ("azure.functions", "azure.durable_functions")),
    ]
    print(f"import function_app, median of {runs} fresh processes (budget 300 ms)")
    for label, preload in cases:
        print(f"  {label:<44} {measure(preload, runs):7.1f} ms")


if __name__ == "__main__":
    main()
