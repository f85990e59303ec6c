"""The Functions host's key caches, per host instance, as azure-functions-host's SecretManager keeps them.

Source: Azure/azure-functions-host `src/WebJobs.Script.WebHost/Security/KeyManagement/SecretManager.cs`
(and `BaseSecretsRepository.cs`); docs/emulators.md ("Host key caches") cites each behaviour. In short:

- Each instance loads its host secrets (`_hostSecrets`) and each function's secrets (`_functionSecrets`)
  on first use and keeps them until they are cleared.
- A key that authorized a request is remembered in `_authorizationCache` (keyed by value + function)
  with no expiry: the next request with it is granted from that cache without looking at the secrets.
- An unknown key makes the instance drop its loaded secrets and try once more, but at most once a
  minute (`TimeSpan.FromMinutes(1)` since `_lastCacheResetTime`); the retried result is not cached. The
  authorization cache is *not* dropped by that reload.
- Everything is cleared only by `ClearCacheOnChange`: after a write on this instance
  (`PersistSecretsAsync`), or when the repository's sentinel-file watcher reports a change written by
  another instance (`OnSecretsChanged`). An instance without a working watcher keeps granting a deleted
  key it had granted before, until something clears its cache or it restarts.

Pure: the caller passes the time (the emulators' shared clock) and the key rows holding the presented
value; nothing here reads a clock or a database, so tests drive it with any time they like.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

RELOAD_THROTTLE_SECONDS = 60.0  # SecretManager: `(DateTime.UtcNow - _lastCacheResetTime) > TimeSpan.FromMinutes(1)`
HOST_KINDS = frozenset({"masterKey", "functionKeys", "systemKeys"})  # ScriptSecretsType.Host: one host.json
LABELS = {"masterKey": "masterKey", "functionKeys": "hostKey", "function": "functionKey"}
ORDER = {"masterKey": 0, "systemKeys": 1, "functionKeys": 2, "function": 3}  # GetAuthorizationLevelAsync's order


@dataclass(frozen=True)
class KeyRow:
    """One stored key (a row of arm_keys): when it was written and when it was deleted or renewed."""

    kind: str  # masterKey | functionKeys | systemKeys | function
    name: str
    created: float
    retired: float | None = None

    def live_at(self, moment: float) -> bool:
        return self.created <= moment and (self.retired is None or moment < self.retired)


@dataclass(frozen=True)
class Grant:
    authorized_by: str  # masterKey | hostKey | functionKey
    key_name: str


@dataclass
class HostInstance:
    """One host instance's SecretManager state. `watches_sentinel`: its sentinel-file watcher sees writes
    made by other instances."""

    index: int
    watches_sentinel: bool = True
    host_loaded: float | None = None  # when `_hostSecrets` was loaded; None: not cached
    function_loaded: dict[str, float] = field(default_factory=dict)  # function (lower case) -> load time
    authorizations: dict[tuple[str, str], Grant] = field(default_factory=dict)
    last_reset: float = float("-inf")  # `_lastCacheResetTime` starts at DateTime.MinValue
    served: int = 0

    def authorize(self, function: str, presented: str, rows: Iterable[KeyRow], now: float) -> Grant | None:
        """GetAuthorizationLevelOrNullAsync for an HTTP function with authLevel function. `rows`: every stored
        key (live or not) whose value is `presented`. System keys never open a function (the emulator's
        documented rule), so a system-key match is a refusal."""
        self.served += 1
        fn = function.lower()
        cached = self.authorizations.get((presented, fn))
        if cached is not None:
            return cached
        candidates = sorted(rows, key=lambda r: ORDER.get(r.kind, 9))
        secrets_cached = self.host_loaded is not None or bool(self.function_loaded)
        grant = self._match(fn, candidates, now)
        if grant is not None:
            self.authorizations[(presented, fn)] = grant
            return grant
        if secrets_cached and now - self.last_reset > RELOAD_THROTTLE_SECONDS:
            self.host_loaded = None
            self.function_loaded.clear()
            self.last_reset = now
            return self._match(fn, candidates, now)  # the host returns the retry's result uncached
        return None

    def _match(self, fn: str, rows: list[KeyRow], now: float) -> Grant | None:
        """GetAuthorizationLevelAsync: the host secrets (loaded if not cached), then the function's."""
        if self.host_loaded is None:
            self.host_loaded = now
        for row in rows:
            if row.kind in HOST_KINDS and row.live_at(self.host_loaded):
                return None if row.kind == "systemKeys" else Grant(LABELS[row.kind], row.name)
        loaded = self.function_loaded.setdefault(fn, now)
        for row in rows:
            if row.kind == "function" and row.live_at(loaded):
                return Grant(LABELS[row.kind], row.name)
        return None

    def clear_on_change(self, host_secrets: bool, function: str | None) -> None:
        """ClearCacheOnChange: the authorization cache always; the host secrets after a host-key write, else
        that function's secrets (every function's when that one was not cached)."""
        self.authorizations.clear()
        if host_secrets and self.host_loaded is not None:
            self.host_loaded = None
        elif not host_secrets:
            fn = (function or "").lower()
            if fn and fn in self.function_loaded:
                del self.function_loaded[fn]
            else:
                self.function_loaded.clear()

    def describe(self) -> dict[str, object]:
        """What the control API shows (key names, never values)."""
        return {
            "index": self.index,
            "watchesSentinel": self.watches_sentinel,
            "hostSecretsLoadedAt": self.host_loaded,
            "functionSecretsLoadedAt": dict(self.function_loaded),
            "cachedAuthorizations": [
                {"function": fn, "keyName": g.key_name, "authorizedBy": g.authorized_by}
                for (_v, fn), g in sorted(self.authorizations.items(), key=lambda item: (item[0][1], item[1].key_name))
            ],
            "lastReloadAt": None if self.last_reset == float("-inf") else self.last_reset,
            "requestsServed": self.served,
        }


@dataclass
class HostFarm:
    """The instances of one app or slot. Requests go round-robin (deterministic: instance 0, 1, ...);
    a key write through ARM is handled by instance 0, which clears its own caches at once, and reaches
    the others through the sentinel file when they watch it."""

    instances: list[HostInstance]
    next_index: int = 0

    @classmethod
    def of(cls, count: int, unwatched: Iterable[int] = ()) -> HostFarm:
        deaf = set(unwatched)
        return cls([HostInstance(i, watches_sentinel=i not in deaf) for i in range(count)])

    def pick(self, wanted: int | None = None) -> HostInstance:
        if wanted is not None:
            return self.instances[wanted]
        instance = self.instances[self.next_index % len(self.instances)]
        self.next_index += 1
        return instance

    def written(self, host_secrets: bool, function: str | None) -> None:
        """A key write through ARM (handled by instance 0): PersistSecretsAsync clears the writer's cache,
        the sentinel file every watching instance's."""
        for instance in self.instances:
            if instance.index == 0 or instance.watches_sentinel:
                instance.clear_on_change(host_secrets, function)

    @property
    def all_watch(self) -> bool:
        return all(i.watches_sentinel for i in self.instances[1:])
