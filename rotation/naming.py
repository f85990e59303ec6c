"""Every name the product derives: rotation ids, key names per generation, Key Vault tags, instance ids.

Names are pure functions of their inputs so a step re-run after a crash computes the same name and
converges (DESIGN: "names are derived from the rotation id"): provision derives the new key name from
the rotation id, finds the key already there, and reads it instead of creating another.

Key names follow what the Functions host and ARM accept: they travel as a URL path segment
(`.../host/default/functionKeys/{name}`), the host reserves names starting with `_` (`_master`, and
it refuses to delete `_`-prefixed keys), compares names case-insensitively, and its Key Vault secret
storage escapes every character that is not a letter or digit into 4 (`-` -> `-045`). So generated
names are lowercase letters, digits and `-` only, and short: base name (1-32) + 19 = at most 51.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal

from rotation.durations import as_utc
from rotation.policy import MASTER_KEY_NAME, generation_suffix_re

Mode = Literal["scheduled", "on-demand", "emergency"]
Stage = Literal["current", "previous", "revoked"]

MODES: tuple[Mode, ...] = ("scheduled", "on-demand", "emergency")
STAGES: tuple[Stage, ...] = ("current", "previous", "revoked")
_MODE_CODE: dict[str, str] = {"scheduled": "s", "on-demand": "o", "emergency": "e"}
_CODE_MODE: dict[str, Mode] = {"s": "scheduled", "o": "on-demand", "e": "emergency"}

TIMESTAMP_FORMAT = "%Y%m%dt%H%M%Sz"
ROTATION_INSTANCE_PREFIX = "rotation-"
SCHEDULER_INSTANCE_PREFIX = "scheduler-"

# Key Vault tags on every version this product writes (names <= 512 chars, values <= 256 chars).
TAG_MANAGED_BY = "managedBy"
TAG_TARGET = "target"
TAG_ROTATION_ID = "rotationId"
TAG_KEY_NAME = "keyName"
TAG_STAGE = "stage"
MANAGED_BY = "keyrotation"

_TARGET_ID = r"[a-z0-9][a-z0-9-]{1,46}[a-z0-9]"
_ROTATION_ID = re.compile(rf"^(?P<target>{_TARGET_ID})-(?P<ts>\d{{8}}t\d{{6}}z)-(?P<mode>[soe])$")
_SUFFIX = generation_suffix_re()


class NamingError(ValueError):
    """An input that cannot name anything (e.g. not a rotation id); the message says which."""


@dataclass(frozen=True)
class RotationIdParts:
    target_id: str
    started_at: datetime
    mode: Mode


def _stamp(at: datetime) -> str:
    return as_utc(at).strftime(TIMESTAMP_FORMAT)


def rotation_id(target_id: str, mode: Mode, started_at: datetime) -> str:
    """`orders-api-20260105t030000z-s`: one generation of one target. Seconds resolution: the singleton
    instance per target means two rotations of a target never start in the same second."""
    if mode not in _MODE_CODE:
        raise NamingError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    rid = f"{target_id}-{_stamp(started_at)}-{_MODE_CODE[mode]}"
    if not _ROTATION_ID.match(rid):
        raise NamingError(f"{target_id!r} is not a target id")
    return rid


def parse_rotation_id(value: str) -> RotationIdParts:
    """The parts of a rotation id; NamingError for anything else, an impossible date included (month 13,
    February 30, hour 25): such an id names no rotation that could ever have started."""
    if not isinstance(value, str):
        raise _not_a_rotation_id(value)
    return _parse_rotation_id(value)


def _not_a_rotation_id(value: object) -> NamingError:
    return NamingError(f"{value!r} is not a rotation id (<target>-<yyyymmdd>t<hhmmss>z-<s|o|e>)")


@lru_cache(maxsize=4096)
def _parse_rotation_id(value: str) -> RotationIdParts:
    # Memoised: every replay of a rotation parses its id several times (strptime is most of that).
    match = _ROTATION_ID.match(value)
    if not match:
        raise _not_a_rotation_id(value)
    try:
        started = as_utc(datetime.strptime(match["ts"], TIMESTAMP_FORMAT))
    except ValueError:
        raise NamingError(f"{value!r} is not a rotation id: its timestamp is not a date and time") from None
    return RotationIdParts(match["target"], started, _CODE_MODE[match["mode"]])


def is_rotation_id(value: str) -> bool:
    try:
        parse_rotation_id(value)
    except NamingError:
        return False
    return True


def key_name(base_key_name: str, rotation_id_: str) -> str:
    """The key name a rotation creates on the target: `<base>-<yyyymmdd>t<hhmmss>z-<mode>`. The master
    key has one fixed name; it is renewed in place."""
    if base_key_name == MASTER_KEY_NAME:
        return MASTER_KEY_NAME
    parse_rotation_id(rotation_id_)  # refuse anything else
    return f"{base_key_name}-{rotation_id_.rsplit('-', 2)[-2]}-{rotation_id_[-1]}"


def belongs_to_base(base_key_name: str, name: str) -> bool:
    """Whether a key on the target is one of this base name's generations (or the bare base name: the
    pre-existing key the first rotation replaces). `orders-v2` is not a generation of `orders`."""
    lowered, base = name.lower(), base_key_name.lower()
    if lowered == base:
        return True
    return lowered.startswith(base) and bool(_SUFFIX.fullmatch(lowered[len(base) :]))


def generations(base_key_name: str, names: Iterable[str]) -> list[str]:
    """This base name's keys among `names`, oldest first (the bare base name counts as oldest)."""
    mine = [n for n in names if belongs_to_base(base_key_name, n)]
    return sorted(mine, key=lambda n: (len(n) != len(base_key_name), n[len(base_key_name) :].lower()))


def keys_to_revoke(base_key_name: str, names: Iterable[str], keep: str) -> list[str]:
    """Every other generation of the base name: what an emergency rotation deletes (never `keep`, never
    a key outside the family, never a reserved `_` name)."""
    return [n for n in generations(base_key_name, names) if n.lower() != keep.lower() and not n.startswith("_")]


def rotation_instance_id(target_id: str) -> str:
    """The orchestration instance id of a target's rotation: the singleton guard (one per target)."""
    return f"{ROTATION_INSTANCE_PREFIX}{target_id}"


def target_of_instance(instance_id: str) -> str | None:
    if instance_id.startswith(ROTATION_INSTANCE_PREFIX):
        candidate = instance_id[len(ROTATION_INSTANCE_PREFIX) :]
        return candidate if re.fullmatch(_TARGET_ID, candidate) else None
    return None


def scheduler_instance_id(tick: datetime, granularity: timedelta = timedelta(minutes=1)) -> str:
    """The scheduler orchestration of one timer tick. The tick time is floored to `granularity`, so the
    same tick delivered twice (a few hundred ms apart) maps to one instance and the second is a no-op."""
    seconds = int(granularity.total_seconds())
    if seconds < 1:
        raise NamingError("granularity must be at least one second")
    at = as_utc(tick)
    floored = datetime.fromtimestamp(int(at.timestamp()) // seconds * seconds, at.tzinfo)
    return f"{SCHEDULER_INSTANCE_PREFIX}{_stamp(floored)}"


@dataclass(frozen=True)
class SecretTags:
    """What the product records on each Key Vault version; lets a re-run find its own version."""

    target_id: str
    rotation_id: str
    key_name: str
    stage: Stage

    def to_tags(self) -> dict[str, str]:
        return {
            TAG_MANAGED_BY: MANAGED_BY,
            TAG_TARGET: self.target_id,
            TAG_ROTATION_ID: self.rotation_id,
            TAG_KEY_NAME: self.key_name,
            TAG_STAGE: self.stage,
        }

    def with_stage(self, stage: Stage) -> SecretTags:
        if stage not in STAGES:
            raise NamingError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        return SecretTags(self.target_id, self.rotation_id, self.key_name, stage)


def secret_tags(target_id: str, rotation_id_: str, key_name_: str, stage: Stage = "current") -> dict[str, str]:
    return SecretTags(target_id, rotation_id_, key_name_, stage).with_stage(stage).to_tags()


def read_secret_tags(tags: Mapping[str, str] | None) -> SecretTags | None:
    """The product's tags on a version, or None for a version it did not write (or tags it cannot trust)."""
    if not tags or tags.get(TAG_MANAGED_BY) != MANAGED_BY:
        return None
    stage = tags.get(TAG_STAGE)
    target_id, rotation_id_, key_name_ = tags.get(TAG_TARGET), tags.get(TAG_ROTATION_ID), tags.get(TAG_KEY_NAME)
    if stage not in STAGES or not (target_id and rotation_id_ and key_name_):
        return None
    return SecretTags(target_id, rotation_id_, key_name_, stage)


def restaged_tags(tags: Mapping[str, str], stage: Stage) -> dict[str, str]:
    """A version's tags with a new stage, keeping any tags others added."""
    if stage not in STAGES:
        raise NamingError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return {**tags, TAG_STAGE: stage}
