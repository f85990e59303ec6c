"""The target's Key Vault secret as a history of versions this product wrote, told apart by their tags.

Tags (rotation.naming.secret_tags) say which rotation wrote a version, for which key name, and its stage
(current / previous / revoked); a re-run finds its own version by rotation id instead of writing another.
Versions someone else wrote (no `managedBy` tag, or another target's) are never changed.

Everything here reads version *properties* (no values) except read_value(), which returns a
SecretValue for a probe inside the same activity. Listing asks for the largest page Key Vault serves, so
a secret with up to 25 versions costs one call (DESIGN budget: at most 4 Key Vault calls per key).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from rotation import naming
from rotation.credential_store import SecretValue
from rotation.durations import as_utc
from rotation.naming import SecretTags, Stage, read_secret_tags, restaged_tags, secret_tags
from rotation.policy import Target
from rotation.redaction import SafeError

if TYPE_CHECKING:
    from azure.keyvault.secrets import SecretClient, SecretProperties

log = logging.getLogger("keyrotation.activities.secret_versions")

CONTENT_TYPE = "application/vnd.keyrotation.functions-key"
PAGE_SIZE = 25  # Key Vault's maximum page
T = TypeVar("T")


@dataclass(frozen=True)
class Version:
    """One version of the target's secret, properties only."""

    version: str
    secret_id: str  # versioned id
    enabled: bool
    created: datetime
    expires: datetime | None
    tags: dict[str, str]
    ours: SecretTags | None  # our tags, when this product wrote it for this target

    @property
    def stage(self) -> Stage | None:
        return self.ours.stage if self.ours else None

    @property
    def rotation_id(self) -> str | None:
        return self.ours.rotation_id if self.ours else None

    @property
    def key_name(self) -> str | None:
        return self.ours.key_name if self.ours else None


def _version(props: SecretProperties, target_id: str) -> Version:
    tags = dict(props.tags or {})
    ours = read_secret_tags(tags)
    if ours is not None and ours.target_id != target_id:
        ours = None
    created = props.created_on
    return Version(
        version=str(props.version),
        secret_id=str(props.id),
        enabled=bool(props.enabled),
        created=as_utc(created) if created else datetime.min.replace(tzinfo=UTC),
        expires=as_utc(props.expires_on) if props.expires_on else None,
        tags=tags,
        ours=ours,
    )


def _age(version: Version) -> tuple[datetime, datetime, str]:
    """Sort key, oldest first. Key Vault lists in id order and `created` has one-second resolution, so
    versions written within one second are told apart by their rotation's start (rotation ids carry it)."""
    started = datetime.min.replace(tzinfo=UTC)
    if version.rotation_id and naming.is_rotation_id(version.rotation_id):
        started = naming.parse_rotation_id(version.rotation_id).started_at
    return version.created, started, version.version


class SecretVersions:
    """The versions of one target's Key Vault secret."""

    def __init__(self, target: Target, client: SecretClient | None = None) -> None:
        self.target = target
        self.name = target.key_vault.secret_name
        self._client = client

    @property
    def client(self) -> SecretClient:
        if self._client is None:
            from activities import clients

            self._client = clients.secret_client(self.target.key_vault.vault_url, budget=self.target.calls)
        return self._client

    def _call(self, action: str, operation: Callable[[], T]) -> T:
        """SDK errors become SafeError: status and error code kept, no request or response body (I1)."""
        try:
            return operation()
        except SafeError:
            raise
        except Exception as exc:
            error = SafeError.from_exception(exc)
            raise SafeError(f"{action} {self.name}: {error}", error.status_code, error.error_code) from None

    # -- reading -------------------------------------------------------------------------------------

    def list(self) -> list[Version]:
        """Every version (ours or not), oldest first."""

        def run() -> list[Version]:
            pages = self.client.list_properties_of_secret_versions(self.name, max_page_size=PAGE_SIZE)
            return [_version(p, self.target.id) for p in pages]

        return sorted(self._call("list versions of", run), key=_age)

    def read_value(self, version: str) -> SecretValue:
        """The value of one version, for a probe inside this activity (never returned or logged)."""
        secret = self._call("read version of", lambda: self.client.get_secret(self.name, version))
        if not secret.value:
            raise SafeError(f"version {version} of {self.name} has no value")
        return SecretValue(secret.value)

    # -- writing -------------------------------------------------------------------------------------

    def add(
        self,
        value: SecretValue,
        rotation_id: str,
        key_name: str,
        expires: datetime,
        extra_tags: dict[str, str] | None = None,
    ) -> Version:
        """Store a new version tagged stage=current for this rotation; it becomes the secret's latest.
        `extra_tags` add to ours, never replace them (a drift repair records what it repaired)."""
        tags = {**(extra_tags or {}), **secret_tags(self.target.id, rotation_id, key_name, "current")}

        def run() -> Any:
            return self.client.set_secret(
                self.name, value.reveal(), enabled=True, tags=tags, content_type=CONTENT_TYPE, expires_on=expires
            )

        stored = self._call("store a new version of", run)
        log.info("stored version %s of %s for %s (key %s)", stored.properties.version, self.name, rotation_id, key_name)
        return _version(stored.properties, self.target.id)

    def restage(self, version: Version, stage: Stage, *, disable: bool = False) -> Version:
        """Re-tag one of our versions (other tags kept), disabling it when asked. Versions we did not
        write for this target are refused: they belong to someone else."""
        if version.ours is None:
            owner = f"this product for {self.target.id}"
            raise SafeError(f"version {version.version} of {self.name} was not written by {owner}")
        tags = restaged_tags(version.tags, stage)
        enabled = False if disable else None

        def run() -> Any:
            return self.client.update_secret_properties(self.name, version.version, enabled=enabled, tags=tags)

        updated = self._call("update version of", run)
        log.info("version %s of %s: stage %s%s", version.version, self.name, stage, ", disabled" if disable else "")
        return _version(updated, self.target.id)

    def ensure_stage(self, version: Version, stage: Stage, *, disable: bool = False) -> bool:
        """restage() unless the version is already there (a re-run costs no call). True when it changed."""
        if version.stage == stage and (not disable or not version.enabled):
            return False
        self.restage(version, stage, disable=disable)
        return True


# -- choosing versions (pure) -----------------------------------------------------------------------


def ours(versions: Iterable[Version]) -> list[Version]:
    return [v for v in versions if v.ours is not None]


def newest_enabled(versions: Iterable[Version]) -> Version | None:
    """The newest enabled version this product wrote for the target: what consumers read as current."""
    candidates = [v for v in ours(versions) if v.enabled]
    return candidates[-1] if candidates else None


def of_rotation(versions: Iterable[Version], rotation_id: str) -> list[Version]:
    return [v for v in ours(versions) if v.rotation_id == rotation_id]


def find(versions: Iterable[Version], version: str | None) -> Version | None:
    return next((v for v in versions if version and v.version == version), None)
