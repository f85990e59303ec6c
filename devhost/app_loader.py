"""Loads a v2-programming-model function app through Azure's Python worker runtime, as the host does.

The host learns an app's functions only from the worker: worker init indexes ``function_app.py``
(importing it, calling ``get_functions()`` once, validating every binding), then the functions-metadata
response lists each function with its id and raw bindings (function.json shaped). Everything devhost
knows about a function (trigger, route, schedule, auth level, the durable client parameter) comes from
those raw bindings, and every call goes back through the worker by function id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devhost.worker.process import WorkerProcess
from devhost.worker.runtime import WorkerHost, WorkerRuntime, raw_bindings


@dataclass(frozen=True)
class FunctionInfo:
    """What the host needs to know to drive one function: the worker's metadata, read as the host reads it."""

    name: str
    function_id: str
    trigger_type: str
    trigger: dict[str, Any]  # the trigger's raw binding: route, methods, authLevel, schedule, ...
    trigger_param: str  # the binding name the trigger payload is passed under
    bindings: tuple[dict[str, Any], ...]
    durable_client_param: str | None = None  # binding name of the durable client input, if any

    @property
    def route(self) -> str:
        return str(self.trigger.get("route") or self.name)

    @property
    def methods(self) -> list[str]:
        methods = self.trigger.get("methods")
        if not methods:
            return ["GET", "POST"]
        return [str(m).upper() for m in methods]

    @property
    def auth_level(self) -> str:
        return str(self.trigger.get("authLevel") or "FUNCTION").upper()

    @property
    def schedule(self) -> str:
        return str(self.trigger.get("schedule") or "")

    @property
    def run_on_startup(self) -> bool:
        return bool(self.trigger.get("runOnStartup"))

    @property
    def use_monitor(self) -> bool | None:
        value = self.trigger.get("useMonitor")
        return None if value is None else bool(value)


@dataclass
class LoadedApp:
    root: Path
    worker: WorkerHost
    functions: dict[str, FunctionInfo] = field(default_factory=dict)
    # The durable client binding's JSON, for any function with a durableClient input (set by the host
    # once the durable engine listens; activities may take one too).
    client_binding: Callable[[], str] | None = None

    def by_trigger(self, trigger_type: str) -> list[FunctionInfo]:
        return [f for f in self.functions.values() if f.trigger_type == trigger_type]

    def get(self, name: str) -> FunctionInfo | None:
        """Function names are case-insensitive on the real host."""
        found = self.functions.get(name)
        if found:
            return found
        lowered = name.lower()
        return next((f for n, f in self.functions.items() if n.lower() == lowered), None)

    def close(self) -> None:
        self.worker.close()


def describe(metadata: Any) -> FunctionInfo:
    """One function from its RpcFunctionMetadata."""
    bindings = tuple(raw_bindings(metadata))
    trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), None)
    if trigger is None:
        raise LookupError(f"function {metadata.name} has no trigger binding")
    client = next((b["name"] for b in bindings if b.get("type") == "durableClient"), None)
    return FunctionInfo(
        name=metadata.name,
        function_id=metadata.function_id,
        trigger_type=str(trigger["type"]),
        trigger=trigger,
        trigger_param=str(trigger["name"]),
        bindings=bindings,
        durable_client_param=client,
    )


WORKER_MODES = ("process", "thread")


def load_app(root: str | Path = ".", worker_mode: str = "process") -> LoadedApp:
    """Start the worker on ``<root>`` and read the app's functions from its metadata. ``process`` runs the
    worker as Azure does, on a process of its own; ``thread`` runs it inside this process (the in-process
    test stack, which scripts the app from the test)."""
    root = Path(root).resolve()
    if not (root / "function_app.py").is_file():
        raise FileNotFoundError(f"no function_app.py in {root}")
    if worker_mode not in WORKER_MODES:
        raise ValueError(f"worker must be one of {', '.join(WORKER_MODES)}, not {worker_mode!r}")
    worker: WorkerHost = WorkerProcess(root) if worker_mode == "process" else WorkerRuntime(root)
    loaded = LoadedApp(root=root, worker=worker)
    try:
        for metadata in worker.start():
            info = describe(metadata)
            loaded.functions[info.name] = info
    except BaseException:
        worker.close()
        raise
    return loaded
