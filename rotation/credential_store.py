"""The target's dual-credential store, as the rotation steps see it.

Functions keys are the first kind: ARM's host/function key APIs on a Microsoft.Web site. Other
credentials with the same shape — several named credentials valid at once, the service generating
values — can follow behind this interface without touching the orchestrations: storage account keys
(key1/key2), Event Grid topic keys, Cosmos DB keys. Implementations live in `activities/` (they call
Azure); this module holds only the contract, so it imports nothing from Azure.

Rules every implementation keeps:
- Values exist only inside an activity, wrapped in SecretValue, on their way to Key Vault or to a
  probe. No method's result other than read_value() carries a value.
- Every method is idempotent: create() of an existing name reports it instead of regenerating it;
  delete() of a missing name is success (404 = done); renew() of a kind without overlap is the one
  call that changes a value in place, and a re-run is caught before it (rotation.key_plan compares the
  stored value first).
- Stores take no decisions: which names to create, keep or delete is rotation.key_plan's (pure), and the
  activities obtain a store only from activities/credential_stores.credential_store_for(target).
- Errors are raised as CredentialStoreError, its message made by redaction.safe_error_message (no
  request or response bodies), with `retryable` telling whether backing off can help (the target's
  host down: 500/503 from listkeys; throttled: 429).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rotation.redaction import MASK


class SecretValue:
    """A credential value that does not print itself: repr/str/format show ***, so an accidental log
    line or f-string carries nothing. Call reveal() at the one place the value must be sent."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret value is a non-empty string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"SecretValue({MASK})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SecretValue cannot be pickled or serialized")


@dataclass(frozen=True)
class CreateResult:
    """create()'s answer. `created` is False when the name already existed (a re-run after a crash)."""

    name: str
    created: bool


@dataclass(frozen=True)
class ProbeResult:
    """Whether the target accepted a credential, with the status seen; `detail` is safe to log."""

    accepted: bool
    status: int | None
    detail: str = ""
    retry_after: float | None = None  # seconds a throttled or unavailable target asked to wait


class CredentialStoreError(RuntimeError):
    """A store operation failed; `retryable` says whether backing off and trying again can help."""

    def __init__(self, message: str, *, retryable: bool, status_code: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code


@runtime_checkable
class CredentialStore(Protocol):
    """One target's named credentials (for Functions keys: one app or slot, one key scope)."""

    @property
    def kind(self) -> str:
        """What kind of credential this is, e.g. `functions-key`: shown in statuses and audit logs."""
        ...

    @property
    def supports_overlap(self) -> bool:
        """False when a new credential replaces the old one in place (the Functions master key): such a
        target can only be rotated by an emergency rotation, with no overlap."""
        ...

    def create(self, name: str) -> CreateResult:
        """Create credential `name` letting the service generate its value (never supply one). If the
        name exists, leave it alone and return created=False."""
        ...

    def list_names(self) -> list[str]:
        """The names currently defined (for Functions keys: the scope's keys, never system keys)."""
        ...

    def read_value(self, name: str) -> SecretValue | None:
        """The current value of `name`, or None when it does not exist. The only method returning a value;
        its result must go straight to Key Vault or a probe, inside the same activity."""
        ...

    def delete(self, name: str) -> bool:
        """Delete `name`. True when this call deleted it, False when it was already gone (both are success)."""
        ...

    def renew(self, name: str) -> None:
        """Have the service generate a new value for `name` in place (only a kind without overlap, such as
        the Functions master key: the old value dies with it). A kind with overlap refuses."""
        ...

    def probe(self, value: SecretValue) -> ProbeResult:
        """Present `value` to the target the way a consumer would (for Functions keys: the policy's probe
        route, key in the x-functions-key header) and report whether it was accepted. One attempt: the
        caller owns retries, because hosts cache keys and accept a new one only after a reload."""
        ...
