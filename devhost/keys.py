"""The host's own keys (master, function, system), made once per state folder like the real host's.

They live in ``<state>/host-keys.json`` (mode 0600) so a restart keeps the URLs that embed them
(durable status URLs, Event Grid subscriptions) valid. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

SYSTEM_KEY_NAMES = ("durabletask_extension", "eventgrid_extension")


def new_key_value() -> str:
    """A 40-byte url-safe value, close in shape to what the host generates."""
    return base64.urlsafe_b64encode(secrets.token_bytes(40)).decode().rstrip("=")


def write_private(path: Path, text: str) -> None:
    """Write a secret file atomically with mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class HostKeys:
    master_key: str
    function_keys: dict[str, str]  # host-level function keys: valid for every function
    system_keys: dict[str, str]

    def is_master(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.master_key.encode())

    def is_function_key(self, presented: str | None) -> bool:
        """Function-level auth accepts any host function key or the master key (system keys: no)."""
        if not presented:
            return False
        matches = [hmac.compare_digest(presented.encode(), v.encode()) for v in self.function_keys.values()]
        return any(matches) or self.is_master(presented)

    def is_system_key(self, name: str, presented: str | None) -> bool:
        """Extension webhooks take their own system key; the master key works everywhere."""
        expected = self.system_keys.get(name)
        if not presented or expected is None:
            return False
        return hmac.compare_digest(presented.encode(), expected.encode()) or self.is_master(presented)

    def to_json(self) -> dict[str, object]:
        return {"masterKey": self.master_key, "functionKeys": self.function_keys, "systemKeys": self.system_keys}


def load_or_create_host_keys(state_dir: Path) -> HostKeys:
    """Read ``host-keys.json``; create missing keys (and the file) so old state keeps working."""
    path = state_dir / "host-keys.json"
    data: dict = {}
    if path.is_file():
        data = json.loads(path.read_text())
    changed = not path.is_file()
    if not data.get("masterKey"):
        data["masterKey"], changed = new_key_value(), True
    function_keys = data.setdefault("functionKeys", {})
    if not function_keys.get("default"):
        function_keys["default"], changed = new_key_value(), True
    system_keys = data.setdefault("systemKeys", {})
    for name in SYSTEM_KEY_NAMES:
        if not system_keys.get(name):
            system_keys[name], changed = new_key_value(), True
    if changed:
        write_private(path, json.dumps(data, indent=2))
    return HostKeys(data["masterKey"], dict(function_keys), dict(system_keys))


def presented_key(request: web.Request) -> str | None:
    """The key a caller presents. The header wins: when ``x-functions-key`` is present the ``code`` query
    parameter is not read at all (azure-functions-host, ``AuthorizationLevelAttribute`` /
    ``AuthenticationLevelHandler``: "header takes precedence")."""
    if "x-functions-key" in request.headers:
        return request.headers.get("x-functions-key")
    return request.query.get("code")
