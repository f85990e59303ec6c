"""The typed contracts between the rotation orchestrator and its lifecycle activities.

Each activity has a frozen request and a frozen result. On the wire they are the camelCase JSON objects
the history already holds (`to_json` / `from_json`): the orchestrator passes `request.to_json()` and
reads `Result.from_json(...)`, the activity reads `Request.from_json(...)` and returns `result.to_json()`.
Explicit, not the Durable SDK's custom-object codec (`azure.functions._durable_functions`
`_serialize_custom_object`): that one writes `__module__`/`__class__` into the payload and imports the
module a payload names when it reads one back, which an input raised through the Durable system key
could choose; it is also deprecated in favour of typed decoding. The activities' annotation stays
`ActivityRequest` (rotation/contracts.py: the worker's indexer refuses anything but a class).

Nothing here carries a key value (I1): names, version ids and verdicts only. Fields are trusted: the
target was validated at policy load and the orchestration input at the API (rotation/inputs.py); a
missing required field raises ValueError naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Self

from rotation.policy import Target


@lru_cache(maxsize=512)  # field names only: every replay of a rotation converts the same few
def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _wire(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_wire(v) for v in value]
    if isinstance(value, Message):
        return value.to_json()
    return value


class Message:
    """`to_json`/`from_json` for a frozen dataclass: snake_case fields as camelCase keys, tuples as lists.
    A field named `ref` is the TargetRef, flattened into the object (every step request names its target
    the same way)."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # a mixin: every subclass is a dataclass
            value = getattr(self, f.name)
            if f.name == "ref":
                data.update(value.to_json())
            else:
                data[camel(f.name)] = _wire(value)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}: must be a JSON object")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # a mixin: every subclass is a dataclass
            key = camel(f.name)
            if f.name == "ref":
                values["ref"] = TargetRef.from_json(data)
            elif key in data:
                raw = data[key]
                values[f.name] = tuple(raw) if isinstance(raw, list) else raw
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{cls.__name__}.{key}: required")
        return cls(**values)


@dataclass(frozen=True)
class TargetRef(Message):
    """How a step request names its target: the id and fingerprint (the activity resolves the deployed
    policy's target, activities/targets.py) and the call budget the rotation started with."""

    target_id: str
    fingerprint: str
    calls: Mapping[str, Any] | None = None

    @staticmethod
    def of(target: Target, fingerprint: str) -> TargetRef:
        return TargetRef(target.id, fingerprint, target.to_json().get("calls"))

    def to_json(self) -> dict[str, Any]:
        return {"targetId": self.target_id, "fingerprint": self.fingerprint, "calls": self.calls}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(data.get("targetId"), data.get("fingerprint"), data.get("calls"))  # type: ignore[arg-type]  # checked by the activity (targets.py)


# -- provision -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProvisionRequest(Message):
    rotation_id: str
    ref: TargetRef
    key_name: str | None = None


@dataclass(frozen=True)
class Provisioned(Message):
    """Names and version ids of what provision stored; `accepted` False: the target never accepted the
    new key and nothing was stored."""

    key_name: str
    version: str | None = None
    secret_id: str | None = None
    previous_version: str | None = None
    previous_secret_id: str | None = None
    previous_key_name: str | None = None
    accepted: bool = True
    probe_attempts: int = 0


# -- verify ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyRequest(Message):
    rotation_id: str
    ref: TargetRef
    version: str


@dataclass(frozen=True)
class Verified(Message):
    verified: bool = False
    attempts: int = 0
    last_status: int | None = None


# -- compensate and abandon ------------------------------------------------------------------------
@dataclass(frozen=True)
class CompensateRequest(Message):
    rotation_id: str
    ref: TargetRef
    key_name: str | None = None
    version: str | None = None
    previous_version: str | None = None


@dataclass(frozen=True)
class Compensated(Message):
    disabled_version: str | None = None
    restored_version: str | None = None
    deleted_key: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.disabled_version or self.restored_version or self.deleted_key)


@dataclass(frozen=True)
class AbandonRequest(Message):
    rotation_id: str
    ref: TargetRef
    replaces: Mapping[str, Any]


@dataclass(frozen=True)
class Abandoned(Message):
    abandoned: str | None = None
    compensated: bool = False
    undone: Mapping[str, Any] | None = None
    current_key_name: str | None = None
    current_version: str | None = None


# -- revoke and the later revocation rounds --------------------------------------------------------
@dataclass(frozen=True)
class RevokeRequest(Message):
    """None lists: an emergency (every other key of the family, every other version of ours); `sweep`:
    the named ones and every other of the family; `verify`: probe the old values once deleted."""

    rotation_id: str
    ref: TargetRef
    keep_key_name: str
    keep_version: str
    revoke_key_names: tuple[str, ...] | None = None
    revoke_versions: tuple[str, ...] | None = None
    sweep: bool = False
    verify: bool = False


@dataclass(frozen=True)
class Revoked(Message):
    """`refused`: None when not probed, True when the target refused every old value, False when one was
    still accepted (then `pending_versions` stay enabled for the later rounds)."""

    deleted_keys: tuple[str, ...] = ()
    disabled_versions: tuple[str, ...] = ()
    pending_versions: tuple[str, ...] = ()
    still_accepted: tuple[str, ...] = ()
    unverifiable: tuple[str, ...] = ()
    refused: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """Only what the outcome has: the lists of a pending verification when one is pending."""
        data = super().to_json()
        if self.refused is not False:
            for key in ("pendingVersions", "stillAccepted", "unverifiable"):
                del data[key]
        if self.refused is None:
            del data["refused"]
        return data


@dataclass(frozen=True)
class RevocationRoundRequest(Message):
    rotation_id: str
    ref: TargetRef
    versions: tuple[str, ...] = ()
    disabled_versions: tuple[str, ...] = ()
    final: bool = False


@dataclass(frozen=True)
class RevocationRound(Message):
    refused: bool = False
    still_accepted: tuple[str, ...] = ()
    disabled_versions: tuple[str, ...] = ()


# -- publish ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublishRequest(Message):
    """CloudEvents built by rotation/events.py, with the target's call budget (no target otherwise)."""

    events: tuple[Mapping[str, Any], ...] = field(default=())
    calls: Mapping[str, Any] | None = None


# -- the queries and the event check (their activities read plain requests; the orchestrator types them) --
@dataclass(frozen=True)
class AdoptionRequest(Message):
    ref: TargetRef
    secret_id: str
    since: str
    until: str


@dataclass(frozen=True)
class Adoption(Message):
    """Consumers (Entra object ids) seen reading the new version in the Key Vault audit."""

    readers: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class FailureCountRequest(Message):
    """Auth failures in `window` against `baseline` (each `{"start", "end"}`, ISO 8601)."""

    ref: TargetRef
    window: Mapping[str, str]
    baseline: Mapping[str, str]


@dataclass(frozen=True)
class FailureCount(Message):
    """A null count is never zero: `error` says why it could not be read. `query_failed`: the activity
    itself gave up (set by the orchestrator, never sent)."""

    signal: str | None = None
    failures: int | None = None
    baseline: int | None = None
    error: str | None = None
    query_failed: bool = False

    @property
    def counted(self) -> bool:
        return self.error is None and self.failures is not None and self.baseline is not None


@dataclass(frozen=True)
class EventCheck(Message):
    """Did the app sign this external event for this rotation (and does it match `expect`)?"""

    rotation_id: str
    event: str
    payload: Mapping[str, Any]
    expect: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict(Message):
    valid: bool = False
    why: str | None = None


@dataclass(frozen=True)
class Resolution(Message):
    """resolve_target's verdict on an orchestration input: the deployed policy's target (policy JSON,
    trusted from here on) and its fingerprint, or why the rotation is refused."""

    target: Mapping[str, Any] | None = None
    fingerprint: str | None = None
    refused: str | None = None
