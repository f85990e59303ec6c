"""Run this checkout's benchmarks/scale.py against the app as issue 16 was filed (commit cb68cf9), so the
two can be measured back to back on the same machine (docs/performance.md).

The old checkout (a git worktree, by default ../as-filed-cb68cf9 beside this checkout; OLDCODE=... for
another) lacks what the current benchmark imports, so this shim loads the current benchmark file as a
module after putting the old code's packages in sys.modules, and swaps in only what differs:

* tools.devhost_launcher.DemoStack -> a subclass of the old tools/demo_stack.py DemoStack that takes the
  new constructor arguments (policy=, extra_env=, worker=) and the new zero-argument app_settings();
* policy_document -> the current one plus probe.baseUrl "%ARM_ENDPOINT%/_targets/<app>.azurewebsites.net"
  on every target (the old emulators have no front-end proxy for https://<app>.azurewebsites.net; the
  old demo policy reaches its apps the same way);
* rotation.*, tools.demo_seed (seed_sites, create_operator_keys) -> the old code's own.

devhost itself is started by the old DemoStack from the old checkout (cwd and PYTHONPATH = OLDCODE), so
the app, devhost, the durable engine and the emulators measured are all the old code's. The old devhost
runs the app in its own process (no worker process, no --worker option): --worker is refused here.

    git worktree add ../as-filed-cb68cf9 cb68cf9 && ln -s "$PWD/.venv" ../as-filed-cb68cf9/.venv
    cd ../as-filed-cb68cf9 && .venv/bin/python <this checkout>/benchmarks/scale_as_filed.py --targets 1000 \
        [--concurrency 8] [--overlap PT1H] [--idle-grace 0.02] [--timeout 14400] [--keep DIR]

Not measured by the old code's log: tick_max_replayed_history is the old tick's whole history (one
execution, never continued as new), an upper bound.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NEW = Path(__file__).resolve().parents[1]
OLD = Path(os.environ.get("OLDCODE", NEW.parent / "as-filed-cb68cf9")).resolve()  # the worktree made below
OLD_COMMIT = "cb68cf9"

# The old code first, so `rotation`, `tools`, `activities`... are its packages. (The shared venv's editable
# install puts this checkout on sys.path too, but after these.)
sys.path.insert(0, str(OLD))
os.chdir(OLD)

import tools.demo_stack as old_stack  # noqa: E402

import tools.demo_seed as old_seed  # noqa: E402
from rotation import durations as _durations  # noqa: E402,F401  (old; the benchmark imports parse_duration)
from rotation import policy as _policy  # noqa: E402,F401

for _name, _module in list(sys.modules.items()):
    _file = getattr(_module, "__file__", None) or ""
    if _name != "__main__" and _file.startswith(str(NEW) + os.sep):  # __main__: this file
        raise SystemExit(f"scale_as_filed: {_name} was imported from {NEW}, not from the old code at {OLD}")


@dataclass
class DemoStack(old_stack.DemoStack):
    """The old demo stack with the current DemoStack's constructor and app_settings() signature."""

    policy: str = old_stack.POLICY
    extra_env: dict[str, str] = field(default_factory=dict)
    worker: str = "in-process"  # informational: the old devhost has no worker process

    def environment(self) -> dict[str, str]:
        env = super().environment()  # os.environ, PYTHONPATH=old root, ROTATION_SCHEDULE, idle grace default
        env["ROTATION_POLICY_PATH"] = self.policy
        env.update(self.extra_env)  # ROTATION_MAX_CONCURRENCY, DEVHOST_CLOCK_IDLE_GRACE (old engine reads it)
        return env

    def app_settings(self, local_identity: str = old_seed.OPERATOR[0]) -> dict[str, str]:
        return super().app_settings(local_identity)

    def stop(self, timeout: float = 20) -> int | None:
        """Before stopping: the tick's history length. The old devhost's episode log line has no replay
        count and the old scheduler never continues as new (one execution), so its last episode replayed
        about its whole history: that stands in for tick_max_replayed_history (an upper bound)."""
        if self.process is not None and self.process.poll() is None:
            try:
                ticks = self.instances("scheduler-")
                if ticks:
                    path = f"/admin/devhost/durable/instances/{ticks[0]['instanceId']}/history"
                    TICK_HISTORY.append(len(self.admin("GET", path).json()))
            except Exception as exc:  # a figure, not the measurement: never lose the run over it
                print(f"scale_as_filed: could not read the tick's history: {exc}", file=sys.stderr)
        return super().stop(timeout)


TICK_HISTORY: list[int] = []


# The current benchmark imports `tools.devhost_launcher`: give it one holding the adapter.
launcher = types.ModuleType("tools.devhost_launcher")
launcher.DemoStack = DemoStack  # type: ignore[attr-defined]
launcher.StackError = old_stack.StackError  # type: ignore[attr-defined]
sys.modules["tools.devhost_launcher"] = launcher

_spec = importlib.util.spec_from_file_location("newscale", NEW / "benchmarks" / "scale.py")
assert _spec and _spec.loader
scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale)  # inserts NEW at sys.path[0]; its imports resolve to the modules above
while str(NEW) in sys.path[: sys.path.index(str(OLD)) + 1]:
    sys.path.remove(str(NEW))  # any later import must find the old code first again

assert scale.DemoStack is DemoStack
assert scale.seed_sites is old_seed.seed_sites and scale.create_operator_keys is old_seed.create_operator_keys
assert scale.load_policy.__module__ == "rotation.policy"
assert str(sys.modules["rotation.policy"].__file__).startswith(str(OLD))

_new_policy_document = scale.policy_document


def policy_document(count: int, overlap: str) -> dict[str, Any]:
    """The current benchmark's policy, with the probe pointed at the old emulators' target-app route."""
    document = _new_policy_document(count, overlap)
    for target in document["targets"]:
        host = f"{target['functionApp'].rsplit('/', 1)[1].lower()}.azurewebsites.net"
        target["probe"] = {"baseUrl": f"%ARM_ENDPOINT%/_targets/{host}", **target["probe"]}
    return document


scale.policy_document = policy_document
_new_run = scale.run


def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The current run(), with the two tick figures the old code's log cannot give filled in (see stop())."""
    figures = _new_run(*args, **kwargs)
    if figures.get("tick_executions") is None and TICK_HISTORY:
        figures["tick_executions"] = 1
        figures["tick_max_replayed_history"] = TICK_HISTORY[-1]
    return dict(figures)


scale.run = run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--worker" or a.startswith("--worker=") for a in argv):
        raise SystemExit("scale_as_filed: the old devhost (cb68cf9) has no --worker option; it runs the app in-process")
    # The current main() passes worker= to DemoStack; the adapter ignores it (old devhost: one process).
    print(f"OLD app code {OLD_COMMIT} at {OLD}; benchmark from {NEW / 'benchmarks' / 'scale.py'}", flush=True)
    return int(scale.main(argv))


if __name__ == "__main__":
    raise SystemExit(main())
