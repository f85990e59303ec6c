"""The target's Key Vault secret as a history of versions this product wrote, told apart by their tags.

Tags (rotation.naming.secret_tags) say which rotation wrote a version, for which key name, and its stage
(current / previous / revoked); a re-run finds its own version by rotation id instead of writing another.
Versions someone else wrote (no `managedBy` tag, or another target's) are never changed.

Everything here reads version *properties* (no values) except read_value(), which returns a
SecretValue for a probe inside the same activity. Listing asks for the largest page Key Vault serves, so
a secret with up to 25 versions costs one call (DESIGN budget: at most 4 Key Vault calls per key).

409 Conflict: a write to a name someone soft-deleted (ObjectIsDeletedButRecoverable) recovers the secret
first — under purge protection that is the only way to write the name again, and its old versions come
back with it (`recovered` tells the caller to list again); any other 409 is a transient conflict (a
deletion or recovery in progress) and is retried within the policy's call budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from rotation.credential_store import SecretValue
from rotation.durations import as_utc
from rotation.key_plan import Version as Version  # the pure plans' view of a version (re-exported)
from rotation.key_plan import age
from rotation.key_plan import find as find
from rotation.key_plan import newest_enabled as newest_enabled
from rotation.key_plan import of_rotation as of_rotation
from rotation.key_plan import ours as ours
from rotation.naming import Stage, read_secret_tags, restaged_tags, secret_tags
from rotation.policy import Target
from rotation.redaction import SafeError

if TYPE_CHECKING:
    from azure.keyvault.secrets import SecretClient, SecretProperties

log = logging.getLogger("keyrotation.activities.secret_versions")

CONTENT_TYPE = "application/vnd.keyrotation.functions-key"
DELETED_BUT_RECOVERABLE = "ObjectIsDeletedButRecoverable"
CONFLICT_BACKOFF = 0.8  # seconds before the first retry of a conflict, doubling (azure-core's factor)
PAGE_SIZE = 25  # Key Vault's maximum page
T = TypeVar("T")


def _version(props: SecretProperties, target_id: str) -> Version:
    tags = dict(props.tags or {})
    tagged = read_secret_tags(tags)
    if tagged is not None and tagged.target_id != target_id:
        tagged = None
    created = props.created_on
    return Version(
        version=str(props.version),
        secret_id=str(props.id),
        enabled=bool(props.enabled),
        created=as_utc(created) if created else datetime.min.replace(tzinfo=UTC),
        expires=as_utc(props.expires_on) if props.expires_on else None,
        tags=tags,
        ours=tagged,
    )


class SecretVersions:
    """The versions of one target's Key Vault secret."""

    def __init__(self, target: Target, client: SecretClient | None = None) -> None:
        self.target = target
        self.name = target.key_vault.secret_name
        self._client = client
        self.recovered = False  # this object recovered the soft-deleted secret: versions listed before are stale

    @property
    def client(self) -> SecretClient:
        if self._client is None:
            from activities import clients

            self._client = clients.secret_client(self.target.key_vault.vault_url, budget=self.target.calls)
        return self._client

    def _call(self, action: str, operation: Callable[[], T], *, recover: bool = False) -> T:
        """SDK errors become SafeError: status and error code kept, no request or response body (I1).
        A 409 is retried within the call budget; with `recover` (a write that creates a version), one on a
        soft-deleted name recovers the secret first."""
        conflicts = 0
        while True:
            deleted = False
            try:
                return operation()
            except SafeError as exc:  # the call gave up by the policy's budget (CallGaveUp): not retried here
                error = SafeError.from_exception(exc)
                raise SafeError(f"{action} {self.name}: {error}", error.status_code, error.error_code) from None
            except Exception as exc:
                error = SafeError.from_exception(exc)
                deleted = error.status_code == 409 and recover and not self.recovered and _deleted_but_recoverable(exc)
                if not deleted and (error.status_code != 409 or conflicts >= self.target.calls.retries):
                    note = f" (still in conflict after {conflicts} retries)" if conflicts else ""
                    message = f"{action} {self.name}: {error}{note}"
                    raise SafeError(message, error.status_code, error.error_code) from None
            # Outside the handler, so nothing raised from here on chains the SDK's exception (I1).
            if deleted:
                self.recover()
            else:
                conflicts += 1
                time.sleep(self._conflict_wait(conflicts))

    def _conflict_wait(self, retry: int) -> float:
        """Back-off before retry `retry` of a conflict, never longer than the policy's longest wait."""
        return min(CONFLICT_BACKOFF * 2.0 ** (retry - 1), self.target.calls.max_retry_after.total_seconds())

    def recover(self) -> None:
        """Recover the soft-deleted secret and wait until Key Vault serves it again (its versions return)."""
        budget = self.target.calls.call_timeout.total_seconds()
        poller = self._call("recover deleted secret", lambda: self.client.begin_recover_deleted_secret(self.name))
        self._call("wait for the recovery of", lambda: poller.wait(timeout=budget))
        if not poller.done():
            raise SafeError(f"recover deleted secret {self.name}: not served again within calls.callTimeout")
        self.recovered = True
        log.warning(
            "secret %s was soft-deleted: recovered it (with its old versions) to store a new version", self.name
        )

    # -- reading -------------------------------------------------------------------------------------

    def list(self) -> list[Version]:
        """Every version (ours or not), oldest first."""

        def run() -> list[Version]:
            pages = self.client.list_properties_of_secret_versions(self.name, max_page_size=PAGE_SIZE)
            return [_version(p, self.target.id) for p in pages]

        return sorted(self._call("list versions of", run), key=age)

    def latest_version(self) -> str | None:
        """The version Key Vault serves as "latest" (the one written last), or None when it is disabled
        (Key Vault then answers 403). Its value is read by the SDK and dropped here."""
        try:
            secret = self._call("read the latest version of", lambda: self.client.get_secret(self.name))
        except SafeError as exc:
            if exc.status_code == 403:
                return None
            raise
        return str(secret.properties.version)

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

        stored = self._call("store a new version of", run, recover=True)
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


def _deleted_but_recoverable(exc: BaseException) -> bool:
    """Key Vault's 409 for a name in the deleted-but-recoverable state (innererror code, or the code)."""
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None) or {}
    codes = {getattr(error, "code", None), inner.get("code") if isinstance(inner, dict) else None}
    return DELETED_BUT_RECOVERABLE in codes
