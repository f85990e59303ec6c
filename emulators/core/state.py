"""What every emulated service shares: the store, fault rules, identities and the public URL."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from emulators.core.faults import Faults
from emulators.core.store import Store

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@dataclass
class EmulatorState:
    state_dir: Path
    store: Store
    faults: Faults
    ca_path: Path
    base_url: str = ""  # https://127.0.0.1:PORT, known once the listener is bound
    tenant_id: str = TENANT_ID
    snapshot_providers: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    cleanup: list[Callable[[], Any]] = field(default_factory=list)

    def persistent_secret(self, name: str, make: Callable[[], str] | None = None) -> str:
        """A value generated once per state folder (topic key, workspace id)."""
        value = self.store.get_setting(name)
        if value is None:
            value = make() if make else secrets.token_urlsafe(32)
            self.store.set_setting(name, value)
        return value

    @property
    def topic_key(self) -> str:
        return self.persistent_secret("eventgrid.topic_key")

    @property
    def workspace_id(self) -> str:
        return self.persistent_secret("logs.workspace_id", lambda: str(uuid.uuid4()))


STATE_KEY = web.AppKey("emulator_state", EmulatorState)
