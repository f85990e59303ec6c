"""App settings and host.json, applied the way Core Tools does before the app is imported.

Layers, later ones winning except where noted:
1. the process environment;
2. ``local.settings.json`` "Values" in the app folder — like Core Tools, a value never overrides a
   variable already set in the process environment;
3. the emulators' settings (endpoints, the managed identity endpoint, the CA bundle) — always win,
   so a local run cannot be pointed at real Azure by a stray variable;
4. ``WEBSITE_AUTH_ENABLED=True`` when Easy Auth is simulated; removed when it is not, so the app
   sees exactly what the platform would tell it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("devhost.settings")


def read_local_settings(app_dir: Path) -> dict[str, str]:
    path = app_dir / "local.settings.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    values = data.get("Values") or {}
    return {str(k): "" if v is None else str(v) for k, v in values.items()}


def apply_app_settings(
    app_dir: Path,
    emulator_settings: dict[str, str] | None,
    easy_auth: bool,
    environ: MutableMapping[str, str] | None = None,
) -> dict[str, str]:
    """Apply the layers to ``environ`` (os.environ by default); returns the names set and where from."""
    env = os.environ if environ is None else environ
    origin: dict[str, str] = {}
    for name, value in read_local_settings(app_dir).items():
        if name in env:
            log.info("Skipping '%s' from local.settings.json: already set in the environment", name)
            continue
        env[name] = value
        origin[name] = "local.settings.json"
    for name, value in (emulator_settings or {}).items():
        env[name] = value
        origin[name] = "emulators"
    if easy_auth:
        env["WEBSITE_AUTH_ENABLED"] = "True"
        origin["WEBSITE_AUTH_ENABLED"] = "easy auth"
    elif env.pop("WEBSITE_AUTH_ENABLED", None) is not None:
        log.warning("Easy Auth is off: removed WEBSITE_AUTH_ENABLED from the app's environment")
    return origin


def _resolve(value: str) -> str:
    """host.json values may be ``%SETTING%`` references (read after the settings are applied)."""
    if len(value) > 2 and value.startswith("%") and value.endswith("%"):
        name = value[1:-1]
        if not os.environ.get(name):
            raise ValueError(f"host.json refers to app setting '{name}', which is not set")
        return os.environ[name]
    return value


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json the stand-in honours."""

    route_prefix: str = "api"
    hub_name: str = "KeyRotationHub"
    max_activity_workers: int = 8

    @classmethod
    def load(cls, app_dir: Path) -> HostConfig:
        path = app_dir / "host.json"
        if not path.is_file():
            return cls()
        data: dict[str, Any] = json.loads(path.read_text())
        extensions = data.get("extensions") or {}
        http = extensions.get("http") or {}
        durable = extensions.get("durableTask") or {}
        prefix = http.get("routePrefix", "api")
        return cls(
            route_prefix="" if prefix is None else str(prefix).strip("/"),
            hub_name=_resolve(str(durable.get("hubName") or cls.hub_name)),
            max_activity_workers=int(durable.get("maxConcurrentActivityFunctions") or cls.max_activity_workers),
        )
