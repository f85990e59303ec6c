"""Loads a v2-programming-model function app the way the Python worker does.

The worker imports ``function_app.py`` from the app root, finds the ``FunctionApp`` instance and calls
``get_functions()`` exactly once (a second call raises ``ValueError``), so the result is cached here.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func

TRIGGER_TYPES = ("httpTrigger", "timerTrigger", "eventGridTrigger", "orchestrationTrigger", "activityTrigger")


@dataclass(frozen=True)
class FunctionInfo:
    """What the host needs to know to drive one function."""

    name: str
    trigger_type: str
    trigger: Any  # the azure.functions trigger object: .route, .methods, .auth_level, .schedule ...
    trigger_param: str  # the keyword the trigger payload is passed under
    bindings: tuple[Any, ...]
    user_function: Callable[..., Any]
    is_async: bool
    durable_client_param: str | None = None  # keyword for the durable client binding, if any
    function_json: str = ""

    @property
    def route(self) -> str:
        return getattr(self.trigger, "route", None) or self.name

    @property
    def methods(self) -> list[str]:
        methods = getattr(self.trigger, "methods", None)
        if not methods:
            return ["GET", "POST"]
        return [str(getattr(m, "value", m)).upper() for m in methods]

    @property
    def auth_level(self) -> str:
        level = getattr(self.trigger, "auth_level", None)
        return str(getattr(level, "value", level) or "FUNCTION").upper()


@dataclass
class LoadedApp:
    root: Path
    app: Any
    functions: dict[str, FunctionInfo] = field(default_factory=dict)

    def by_trigger(self, trigger_type: str) -> list[FunctionInfo]:
        return [f for f in self.functions.values() if f.trigger_type == trigger_type]

    def get(self, name: str) -> FunctionInfo | None:
        """Function names are case-insensitive on the real host."""
        found = self.functions.get(name)
        if found:
            return found
        lowered = name.lower()
        return next((f for n, f in self.functions.items() if n.lower() == lowered), None)


def _find_app(module: Any) -> Any:
    for value in vars(module).values():
        if isinstance(value, func.FunctionRegister):
            return value
    raise LookupError(f"{module.__file__} defines no FunctionApp instance")


def _describe(fn: Any) -> FunctionInfo:
    trigger = fn.get_trigger()
    bindings = tuple(fn.get_bindings())
    client = next((b.name for b in bindings if b.type == "durableClient"), None)
    user = fn.get_user_function()
    return FunctionInfo(
        name=fn.get_function_name(),
        trigger_type=trigger.type,
        trigger=trigger,
        trigger_param=trigger.name,
        bindings=bindings,
        user_function=user,
        is_async=inspect.iscoroutinefunction(user),
        durable_client_param=client,
        function_json=fn.get_function_json(),
    )


def load_app(root: str | Path = ".", module_name: str = "function_app") -> LoadedApp:
    """Import ``<root>/function_app.py`` with ``root`` on sys.path, as the worker does."""
    root = Path(root).resolve()
    script = root / f"{module_name}.py"
    if not script.is_file():
        raise FileNotFoundError(f"no {module_name}.py in {root}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location(module_name, script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    app = _find_app(module)
    loaded = LoadedApp(root=root, app=app)
    for fn in app.get_functions():  # once only: a second call raises ValueError
        info = _describe(fn)
        loaded.functions[info.name] = info
    return loaded
