"""The emulated function apps: sites, slots, functions and their keys, in SQLite.

Names compare case-insensitively everywhere (ARM resource names, key names, host names) and keep the
case they were created with. A key is never overwritten in place: renewing or deleting it stamps the
old row `retired` and (on renewal) adds a new row. Each row records when host instances start and stop
accepting it (`keyCacheSeconds` after the change through ARM; at once for keys seeded by the control
API), so the data plane can emulate lagging key caches and tests can replay what was accepted when.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from emulators import arm_keys
from emulators.store import Store, fingerprint

MASTER_KEY_NAME = "_master"
HOST_KINDS = ("functionKeys", "systemKeys", "masterKey")
DEFAULT_LOCATION = "East US"
HOST_SUFFIX = ".azurewebsites.net"

SCHEMA = """
CREATE TABLE IF NOT EXISTS arm_sites (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL COLLATE NOCASE,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE,
    location TEXT NOT NULL,
    key_cache_seconds REAL NOT NULL DEFAULT 0,
    strict_key_values INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    UNIQUE (subscription, resource_group, name));
CREATE TABLE IF NOT EXISTS arm_slots (
    site_id INTEGER NOT NULL, name TEXT NOT NULL COLLATE NOCASE, UNIQUE (site_id, name));
CREATE TABLE IF NOT EXISTS arm_functions (
    site_id INTEGER NOT NULL, name TEXT NOT NULL COLLATE NOCASE, UNIQUE (site_id, name));
CREATE TABLE IF NOT EXISTS arm_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id INTEGER NOT NULL,
    slot TEXT NOT NULL COLLATE NOCASE,          -- '' for the production slot
    kind TEXT NOT NULL,                         -- functionKeys | systemKeys | masterKey | function
    function TEXT NOT NULL COLLATE NOCASE,      -- '' for host keys
    name TEXT NOT NULL COLLATE NOCASE,
    value TEXT NOT NULL,
    created REAL NOT NULL,
    retired REAL,
    accepted_from REAL NOT NULL,               -- when host instances start accepting it
    accepted_until REAL);                      -- when they stop (retired + keyCacheSeconds)
CREATE UNIQUE INDEX IF NOT EXISTS arm_keys_live ON arm_keys (site_id, slot, kind, function, name)
    WHERE retired IS NULL;
"""


def iso_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Site:
    id: int
    subscription: str
    resource_group: str
    name: str
    location: str
    key_cache_seconds: float
    strict_key_values: bool

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Web/sites/{self.name}"
        )


@dataclass(frozen=True)
class Instance:
    """The production site or one of its slots: each has its own host and its own keys."""

    site: Site
    slot: str | None

    @property
    def resource_id(self) -> str:
        return f"{self.site.resource_id}/slots/{self.slot}" if self.slot else self.site.resource_id

    @property
    def host_label(self) -> str:
        return (f"{self.site.name}-{self.slot}" if self.slot else self.site.name).lower()

    @property
    def host_name(self) -> str:
        return self.host_label + HOST_SUFFIX

    @property
    def slot_key(self) -> str:
        return self.slot or ""


@dataclass(frozen=True)
class KeyScope:
    """Where a key lives: a host kind (functionKeys/systemKeys/masterKey) or one function's keys."""

    kind: str
    function: str = ""

    def path(self, instance: Instance, name: str) -> str:
        if self.kind == "function":
            return f"{instance.resource_id}/functions/{self.function}/keys/{name}"
        return f"{instance.resource_id}/host/default/{self.kind}/{name}"

    def seed(self) -> int:
        return {"masterKey": arm_keys.MASTER_SEED, "systemKeys": arm_keys.SYSTEM_SEED}.get(
            self.kind, arm_keys.FUNCTION_SEED
        )


@dataclass(frozen=True)
class KeyChange:
    created: bool  # False: an existing key was renewed
    name: str
    value: str


def _site(row: Any) -> Site:
    return Site(
        id=row["id"],
        subscription=row["subscription"],
        resource_group=row["resource_group"],
        name=row["name"],
        location=row["location"],
        key_cache_seconds=row["key_cache_seconds"],
        strict_key_values=bool(row["strict_key_values"]),
    )


class SiteStore:
    """Sites, slots, functions and keys; every key mutation journaled (fingerprints only)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_schema(SCHEMA)

    # -- lookups ---------------------------------------------------------------------------------
    def subscription_known(self, subscription: str) -> bool:
        return self.store.one("SELECT 1 FROM arm_sites WHERE subscription = ?", (subscription,)) is not None

    def resource_group_known(self, subscription: str, resource_group: str) -> bool:
        row = self.store.one(
            "SELECT 1 FROM arm_sites WHERE subscription = ? AND resource_group = ?", (subscription, resource_group)
        )
        return row is not None

    def site(self, subscription: str, resource_group: str, name: str) -> Site | None:
        row = self.store.one(
            "SELECT * FROM arm_sites WHERE subscription = ? AND resource_group = ? AND name = ?",
            (subscription, resource_group, name),
        )
        return _site(row) if row else None

    def sites(self) -> list[Site]:
        return [_site(r) for r in self.store.query("SELECT * FROM arm_sites ORDER BY id")]

    def slots(self, site: Site) -> list[str]:
        rows = self.store.query("SELECT name FROM arm_slots WHERE site_id = ? ORDER BY rowid", (site.id,))
        return [r["name"] for r in rows]

    def instance(self, site: Site, slot: str | None) -> Instance | None:
        if not slot:
            return Instance(site, None)
        row = self.store.one("SELECT name FROM arm_slots WHERE site_id = ? AND name = ?", (site.id, slot))
        return Instance(site, row["name"]) if row else None

    def instances(self, site: Site) -> list[Instance]:
        return [Instance(site, None), *(Instance(site, s) for s in self.slots(site))]

    def instance_by_host(self, host: str) -> Instance | None:
        label = host.lower().removesuffix(HOST_SUFFIX)
        for site in self.sites():
            for instance in self.instances(site):
                if instance.host_label == label:
                    return instance
        return None

    def functions(self, site: Site) -> list[str]:
        rows = self.store.query("SELECT name FROM arm_functions WHERE site_id = ? ORDER BY rowid", (site.id,))
        return [r["name"] for r in rows]

    def function(self, site: Site, name: str) -> str | None:
        """The function's name as created, or None when the app has no such function."""
        row = self.store.one("SELECT name FROM arm_functions WHERE site_id = ? AND name = ?", (site.id, name))
        return row["name"] if row else None

    def live_keys(self, instance: Instance, scope: KeyScope) -> dict[str, str]:
        rows = self.store.query(
            "SELECT name, value FROM arm_keys WHERE site_id = ? AND slot = ? AND kind = ? AND function = ?"
            " AND retired IS NULL ORDER BY id",
            (instance.site.id, instance.slot_key, scope.kind, scope.function),
        )
        return {r["name"]: r["value"] for r in rows}

    def live_key(self, instance: Instance, scope: KeyScope, name: str) -> Any:
        return self.store.one(
            "SELECT * FROM arm_keys WHERE site_id = ? AND slot = ? AND kind = ? AND function = ? AND name = ?"
            " AND retired IS NULL",
            (instance.site.id, instance.slot_key, scope.kind, scope.function, name),
        )

    # -- mutations (each journaled with fingerprints, never values) ------------------------------
    def set_key(
        self,
        instance: Instance,
        scope: KeyScope,
        name: str,
        value: str | None,
        seq: int | None,
        *,
        seeded: bool = False,
    ) -> KeyChange:
        """Create or renew a key; a missing value is generated the way the host generates it.
        `seeded` keys (made with the app by the control API) are accepted at once."""
        now = time.time()
        lag = 0.0 if seeded else instance.site.key_cache_seconds
        with self.store.transaction() as conn:
            current = conn.execute(
                "SELECT * FROM arm_keys WHERE site_id = ? AND slot = ? AND kind = ? AND function = ? AND name = ?"
                " AND retired IS NULL",
                (instance.site.id, instance.slot_key, scope.kind, scope.function, name),
            ).fetchone()
            stored_name = current["name"] if current else name
            new_value = value if value is not None else arm_keys.generate(scope.seed())
            if current:
                conn.execute(
                    "UPDATE arm_keys SET retired = ?, accepted_until = ? WHERE id = ?", (now, now + lag, current["id"])
                )
            conn.execute(
                "INSERT INTO arm_keys (site_id, slot, kind, function, name, value, created, accepted_from)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    instance.site.id,
                    instance.slot_key,
                    scope.kind,
                    scope.function,
                    stored_name,
                    new_value,
                    now,
                    now + lag,
                ),
            )
            detail = self._detail(instance, scope, stored_name, new_value, now)
            detail["acceptedFrom"] = iso_ts(now + lag)
            if current:
                detail["previousFingerprint"] = fingerprint(current["value"])
                detail["previousAcceptedUntil"] = iso_ts(now + lag)
            self.store.record_change(seq, "arm.key_set", scope.path(instance, stored_name), detail)
        return KeyChange(created=current is None, name=stored_name, value=new_value)

    def delete_key(self, instance: Instance, scope: KeyScope, name: str, seq: int | None) -> bool:
        now = time.time()
        lag = instance.site.key_cache_seconds
        with self.store.transaction() as conn:
            current = conn.execute(
                "SELECT * FROM arm_keys WHERE site_id = ? AND slot = ? AND kind = ? AND function = ? AND name = ?"
                " AND retired IS NULL",
                (instance.site.id, instance.slot_key, scope.kind, scope.function, name),
            ).fetchone()
            if current is None:
                return False
            conn.execute(
                "UPDATE arm_keys SET retired = ?, accepted_until = ? WHERE id = ?", (now, now + lag, current["id"])
            )
            detail = self._detail(instance, scope, current["name"], current["value"], now)
            detail["acceptedUntil"] = iso_ts(now + lag)
            self.store.record_change(seq, "arm.key_deleted", scope.path(instance, current["name"]), detail)
        return True

    def _detail(self, instance: Instance, scope: KeyScope, name: str, value: str, ts: float) -> dict[str, Any]:
        return {
            "site": instance.site.resource_id,
            "slot": instance.slot,
            "hostName": instance.host_name,
            "scope": scope.kind,
            "function": scope.function or None,
            "key": name,
            "fingerprint": fingerprint(value),
            "at": iso_ts(ts),
        }

    def upsert_site(
        self,
        subscription: str,
        resource_group: str,
        name: str,
        spec: dict[str, Any],
        seq: int | None,
    ) -> tuple[bool, Site]:
        """Create the app (or add to it): every instance gets `_master`, a `default` host key, the
        requested system keys and a `default` key per function. Existing keys are kept."""
        site = self.site(subscription, resource_group, name)
        created = site is None
        if site is None:
            self.store.execute(
                "INSERT INTO arm_sites (subscription, resource_group, name, location, key_cache_seconds,"
                " strict_key_values, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    subscription,
                    resource_group,
                    name,
                    spec.get("location") or DEFAULT_LOCATION,
                    spec.get("keyCacheSeconds", 0),
                    int(bool(spec.get("strictKeyValues", False))),
                    iso_ts(time.time()),
                ),
            )
        else:
            for field, column, convert in (
                ("keyCacheSeconds", "key_cache_seconds", float),
                ("strictKeyValues", "strict_key_values", lambda v: int(bool(v))),
                ("location", "location", str),
            ):
                if field in spec:
                    sql = f"UPDATE arm_sites SET {column} = ? WHERE id = ?"  # nosec B608  # column: from the literal tuple above
                    self.store.execute(sql, (convert(spec[field]), site.id))
        site = self.site(subscription, resource_group, name)
        assert site is not None
        for slot in spec.get("slots", []):
            self.store.execute("INSERT OR IGNORE INTO arm_slots (site_id, name) VALUES (?, ?)", (site.id, slot))
        for function in spec.get("functions", []):
            self.store.execute("INSERT OR IGNORE INTO arm_functions (site_id, name) VALUES (?, ?)", (site.id, function))
        self.store.record_change(
            seq,
            "arm.site_created" if created else "arm.site_updated",
            site.resource_id,
            {
                "slots": self.slots(site),
                "functions": self.functions(site),
                "keyCacheSeconds": site.key_cache_seconds,
                "strictKeyValues": site.strict_key_values,
            },
        )
        for instance in self.instances(site):
            self._ensure_key(instance, KeyScope("masterKey"), MASTER_KEY_NAME, seq)
            self._ensure_key(instance, KeyScope("functionKeys"), "default", seq)
            for system_key in spec.get("systemKeys", []):
                self._ensure_key(instance, KeyScope("systemKeys"), system_key, seq)
            for function in self.functions(site):
                self._ensure_key(instance, KeyScope("function", function), "default", seq)
        return created, site

    def regenerate_keys(self, instance: Instance, seq: int | None) -> list[dict[str, Any]]:
        """New values for every live key of the instance, effective at once: what a host does when it can
        no longer decrypt its stored secrets. Nothing tells the key's owners (drift, out of band)."""
        rows = self.store.query(
            "SELECT kind, function, name FROM arm_keys WHERE site_id = ? AND slot = ? AND retired IS NULL ORDER BY id",
            (instance.site.id, instance.slot_key),
        )
        for row in rows:
            self.set_key(instance, KeyScope(row["kind"], row["function"]), row["name"], None, seq, seeded=True)
        return [{"scope": r["kind"], "function": r["function"] or None, "name": r["name"]} for r in rows]

    def _ensure_key(self, instance: Instance, scope: KeyScope, name: str, seq: int | None) -> None:
        if self.live_key(instance, scope, name) is None:
            self.set_key(instance, scope, name, None, seq, seeded=True)

    # -- the data plane: which key does a host instance accept right now -------------------------
    def authorize(self, instance: Instance, function: str, presented: str, now: float) -> tuple[str, str] | None:
        """(authorizedBy, keyName) when `presented` opens `function`, else None.

        A key counts from `accepted_from` until `accepted_until`. The host checks the master key, then
        host keys, then function keys; system keys never open a function."""
        rows = self.store.query(
            "SELECT kind, name, accepted_from, accepted_until FROM arm_keys"
            " WHERE site_id = ? AND slot = ? AND value = ?"
            " AND (kind IN ('masterKey', 'functionKeys') OR (kind = 'function' AND function = ?))",
            (instance.site.id, instance.slot_key, presented, function),
        )
        order = {"masterKey": 0, "functionKeys": 1, "function": 2}
        labels = {"masterKey": "masterKey", "functionKeys": "hostKey", "function": "functionKey"}
        for row in sorted(rows, key=lambda r: order[r["kind"]]):
            if row["accepted_from"] <= now and (row["accepted_until"] is None or now < row["accepted_until"]):
                return labels[row["kind"]], row["name"]
        return None

    # -- what tests and the control API see (values included: test-only) -------------------------
    def describe(self, site: Site) -> dict[str, Any]:
        instances = []
        for instance in self.instances(site):
            rows = self.store.query(
                "SELECT * FROM arm_keys WHERE site_id = ? AND slot = ? ORDER BY id", (site.id, instance.slot_key)
            )
            instances.append(
                {
                    "slot": instance.slot,
                    "hostName": instance.host_name,
                    "resourceId": instance.resource_id,
                    "keys": [
                        {
                            "scope": r["kind"],
                            "function": r["function"] or None,
                            "name": r["name"],
                            "value": r["value"],
                            "created": iso_ts(r["created"]),
                            "retired": iso_ts(r["retired"]) if r["retired"] is not None else None,
                            "acceptedFrom": iso_ts(r["accepted_from"]),
                            "acceptedUntil": iso_ts(r["accepted_until"]) if r["accepted_until"] is not None else None,
                        }
                        for r in rows
                    ],
                }
            )
        return {
            "id": site.resource_id,
            "subscription": site.subscription,
            "resourceGroup": site.resource_group,
            "name": site.name,
            "location": site.location,
            "keyCacheSeconds": site.key_cache_seconds,
            "strictKeyValues": site.strict_key_values,
            "functions": self.functions(site),
            "slots": self.slots(site),
            "instances": instances,
        }

    def snapshot(self) -> dict[str, Any]:
        return {"sites": [self.describe(site) for site in self.sites()]}


SITES_KEY = web.AppKey("arm_sites", SiteStore)
