"""Key Vault secrets as SQLite rows: the vault's settings, secrets, their versions, soft-deleted names.

Names are case-insensitive in Key Vault, so rows are keyed by the lower-cased name and keep the
casing the secret was first created with. "Latest" is the most recently created version, enabled or
not (that is what makes a disabled newest version fail reads of latest). Every mutation is journaled
with `record_change` in the same transaction, with a value fingerprint and never a value.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from emulators.core import clock
from emulators.core.store import Store, fingerprint

SCHEMA = """
CREATE TABLE IF NOT EXISTS keyvault_secrets (
    name_key TEXT PRIMARY KEY, name TEXT NOT NULL, deleted_on INTEGER, scheduled_purge INTEGER);
CREATE TABLE IF NOT EXISTS keyvault_versions (
    ord INTEGER PRIMARY KEY AUTOINCREMENT, name_key TEXT NOT NULL, version TEXT NOT NULL, value TEXT NOT NULL,
    content_type TEXT, tags TEXT, enabled INTEGER NOT NULL, nbf INTEGER, exp INTEGER,
    created INTEGER NOT NULL, updated INTEGER NOT NULL, UNIQUE (name_key, version));
CREATE INDEX IF NOT EXISTS keyvault_versions_by_name ON keyvault_versions (name_key, version);
"""

RECOVERABLE_DAYS = 90
PURGE_PROTECTION_SETTING = "keyvault.purge_protection"
PAGE_SIZE_SETTING = "keyvault.page_size"
DEFAULT_PAGE_SIZE = 5  # Azure's default is 25; smaller so tests and the demo cross pages
MAX_PAGE_SIZE = 25


@dataclass
class Version:
    name: str
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    nbf: int | None
    exp: int | None
    created: int
    updated: int
    ord: int = 0

    def journal(self) -> dict[str, Any]:
        """What the change journal keeps of a version: everything but the value, plus its fingerprint."""
        return {
            "name": self.name,
            "version": self.version,
            "enabled": self.enabled,
            "tags": self.tags,
            "contentType": self.content_type,
            "nbf": self.nbf,
            "exp": self.exp,
            "value_fingerprint": fingerprint(self.value),
        }


@dataclass
class Secret:
    name: str
    deleted_on: int | None
    scheduled_purge: int | None
    versions: list[Version] = field(default_factory=list)  # in creation order

    @property
    def latest(self) -> Version:
        return self.versions[-1]


def new_version_id() -> str:
    return secrets.token_hex(16)


def now() -> int:
    return int(clock.now())


def _version(row: Any, name: str) -> Version:
    return Version(
        name=name,
        version=row["version"],
        value=row["value"],
        content_type=row["content_type"],
        tags=json.loads(row["tags"]) if row["tags"] is not None else None,
        enabled=bool(row["enabled"]),
        nbf=row["nbf"],
        exp=row["exp"],
        created=row["created"],
        updated=row["updated"],
        ord=row["ord"],
    )


def subject(name: str) -> str:
    return f"keyvault/secrets/{name.lower()}"


class Vault:
    """The one vault this listener serves."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_schema(SCHEMA)

    # -- vault settings (control API) --
    @property
    def purge_protection(self) -> bool:
        return self.store.get_setting(PURGE_PROTECTION_SETTING) != "false"

    @property
    def page_size(self) -> int:
        return int(self.store.get_setting(PAGE_SIZE_SETTING) or DEFAULT_PAGE_SIZE)

    @property
    def recovery_level(self) -> str:
        return "Recoverable" if self.purge_protection else "Recoverable+Purgeable"

    def configure(self, seq: int | None, purge_protection: bool | None, page_size: int | None) -> None:
        with self.store.transaction():
            if purge_protection is not None:
                self.store.set_setting(PURGE_PROTECTION_SETTING, "true" if purge_protection else "false")
            if page_size is not None:
                self.store.set_setting(PAGE_SIZE_SETTING, str(page_size))
            self.store.record_change(seq, "keyvault.vault_configured", "keyvault/vault", self.settings())

    def settings(self) -> dict[str, Any]:
        return {"purgeProtection": self.purge_protection, "pageSize": self.page_size}

    # -- reads --
    def secret(self, name: str, *, with_versions: bool = True) -> Secret | None:
        row = self.store.one("SELECT * FROM keyvault_secrets WHERE name_key = ?", (name.lower(),))
        if row is None:
            return None
        found = Secret(name=row["name"], deleted_on=row["deleted_on"], scheduled_purge=row["scheduled_purge"])
        if with_versions:
            rows = self.store.query("SELECT * FROM keyvault_versions WHERE name_key = ? ORDER BY ord", (name.lower(),))
            found.versions = [_version(r, found.name) for r in rows]
        return found

    def secrets_page(self, *, deleted: bool, after: str | None, limit: int) -> list[Secret]:
        """Secrets ordered by lower-cased name (keyset paging), each with its latest version only."""
        rows = self.store.query(
            "SELECT s.*, v.* FROM keyvault_secrets s JOIN keyvault_versions v ON v.ord ="
            " (SELECT MAX(ord) FROM keyvault_versions WHERE name_key = s.name_key)"
            f" WHERE s.deleted_on IS {'NOT ' if deleted else ''}NULL AND s.name_key > ?"  # nosec B608  # only a literal NOT is interpolated
            " ORDER BY s.name_key LIMIT ?",
            (after or "", limit),
        )
        return [
            Secret(
                name=r["name"],
                deleted_on=r["deleted_on"],
                scheduled_purge=r["scheduled_purge"],
                versions=[_version(r, r["name"])],
            )
            for r in rows
        ]

    def versions_page(self, name: str, after: str | None, limit: int) -> list[Version]:
        """Versions of a live secret ordered by version id, as Key Vault lists them (not by age)."""
        rows = self.store.query(
            "SELECT s.name, v.* FROM keyvault_versions v JOIN keyvault_secrets s ON s.name_key = v.name_key"
            " WHERE v.name_key = ? AND s.deleted_on IS NULL AND v.version > ? ORDER BY v.version LIMIT ?",
            (name.lower(), after or "", limit),
        )
        return [_version(r, r["name"]) for r in rows]

    # -- mutations --
    def add_version(
        self,
        seq: int | None,
        name: str,
        value: str,
        *,
        content_type: str | None,
        tags: dict[str, str] | None,
        enabled: bool,
        nbf: int | None,
        exp: int | None,
    ) -> Version:
        stamp = now()
        with self.store.transaction() as conn:
            row = conn.execute("SELECT name FROM keyvault_secrets WHERE name_key = ?", (name.lower(),)).fetchone()
            if row is None:
                conn.execute("INSERT INTO keyvault_secrets(name_key, name) VALUES (?, ?)", (name.lower(), name))
                stored_name = name
            else:
                stored_name = row["name"]
            version = Version(
                name=stored_name,
                version=new_version_id(),
                value=value,
                content_type=content_type,
                tags=tags,
                enabled=enabled,
                nbf=nbf,
                exp=exp,
                created=stamp,
                updated=stamp,
            )
            cur = conn.execute(
                "INSERT INTO keyvault_versions(name_key, version, value, content_type, tags, enabled, nbf, exp,"
                " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name.lower(),
                    version.version,
                    value,
                    content_type,
                    json.dumps(tags) if tags is not None else None,
                    int(enabled),
                    nbf,
                    exp,
                    stamp,
                    stamp,
                ),
            )
            version.ord = int(cur.lastrowid or 0)
            self.store.record_change(seq, "keyvault.version_set", subject(name), {**version.journal(), "latest": True})
        return version

    def update_version(self, seq: int | None, version: Version, changes: dict[str, Any]) -> Version:
        """Apply `changes` (keys of Version: enabled, nbf, exp, tags, content_type) to one version."""
        updated = Version(**{**asdict(version), **changes, "updated": now()})
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE keyvault_versions SET content_type = ?, tags = ?, enabled = ?, nbf = ?, exp = ?, updated = ?"
                " WHERE ord = ?",
                (
                    updated.content_type,
                    json.dumps(updated.tags) if updated.tags is not None else None,
                    int(updated.enabled),
                    updated.nbf,
                    updated.exp,
                    updated.updated,
                    updated.ord,
                ),
            )
            detail = updated.journal()
            del detail["value_fingerprint"]  # the value does not change
            self.store.record_change(
                seq, "keyvault.version_updated", subject(version.name), {**detail, "changed": sorted(changes)}
            )
        return updated

    def soft_delete(self, seq: int | None, secret: Secret) -> Secret:
        deleted_on = now()
        purge_on = deleted_on + RECOVERABLE_DAYS * 86400
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE keyvault_secrets SET deleted_on = ?, scheduled_purge = ? WHERE name_key = ?",
                (deleted_on, purge_on, secret.name.lower()),
            )
            self.store.record_change(
                seq,
                "keyvault.secret_deleted",
                subject(secret.name),
                {"name": secret.name, "versions": [v.version for v in secret.versions]},
            )
        return Secret(secret.name, deleted_on, purge_on, secret.versions)

    def recover(self, seq: int | None, secret: Secret) -> Secret:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE keyvault_secrets SET deleted_on = NULL, scheduled_purge = NULL WHERE name_key = ?",
                (secret.name.lower(),),
            )
            self.store.record_change(
                seq,
                "keyvault.secret_recovered",
                subject(secret.name),
                {"name": secret.name, "versions": [v.version for v in secret.versions]},
            )
        return Secret(secret.name, None, None, secret.versions)

    def purge(self, seq: int | None, secret: Secret) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM keyvault_versions WHERE name_key = ?", (secret.name.lower(),))
            conn.execute("DELETE FROM keyvault_secrets WHERE name_key = ?", (secret.name.lower(),))
            self.store.record_change(
                seq,
                "keyvault.secret_purged",
                subject(secret.name),
                {"name": secret.name, "versions": [v.version for v in secret.versions]},
            )

    # -- the control API's view, values included --
    def snapshot(self) -> dict[str, Any]:
        live: dict[str, Any] = {}
        deleted: dict[str, Any] = {}
        for row in self.store.query("SELECT name_key FROM keyvault_secrets ORDER BY name_key"):
            secret = self.secret(row["name_key"])
            if secret is None:
                continue
            entry: dict[str, Any] = {
                "name": secret.name,
                "latest": secret.latest.version if secret.versions else None,
                "versions": [
                    {k: v for k, v in asdict(version).items() if k not in ("name", "ord")}
                    for version in secret.versions
                ],
            }
            if secret.deleted_on is None:
                live[secret.name] = entry
            else:
                deleted[secret.name] = {
                    **entry,
                    "deletedDate": secret.deleted_on,
                    "scheduledPurgeDate": secret.scheduled_purge,
                }
        return {"vault": self.settings(), "secrets": live, "deleted": deleted}
