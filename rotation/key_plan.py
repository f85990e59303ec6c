"""The rules of invariant I2 as pure plans: which credentials and Key Vault versions a step creates, keeps,
deletes, disables or restores, given what the target and Key Vault hold now.

I2: from the first step to the last, the newest enabled Key Vault version of the target's secret is a key the
target accepts. The activities keep it by *order* (create on the target, store in Key Vault, ..., delete on
the target, disable the version) and by *choice*, and the choices live here: each function takes the observed
state (the target's credential names, the secret's versions as `Version`s, the rotation's ids) and returns a
frozen plan with the reason for each decision. Nothing here calls Azure or holds a value; the activities read
the state, call a plan function and carry the plan out through the target's `CredentialStore`
(`activities/credential_stores.py`) and the secret's versions (`activities/secret_versions.py`). A re-run
reads the new state and plans again, which is what makes the steps idempotent: a plan of a finished step
has nothing left to do (or only calls that cost nothing, such as a delete answered 404).

The functions speak of credentials, not Functions keys: a kind whose new value replaces the old one in place
(`renews_in_place`, the Functions master key; `CredentialStore.supports_overlap` False) deletes nothing on the
target and restores nothing, and every other kind follows the base-name family rules of rotation.naming.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from rotation import naming
from rotation.naming import SecretTags, Stage

TAG_REPAIR_OF = "repairOf"  # a drift repair names the version it replaced
TAG_DRIFT_CHECK = "driftCheck"


@dataclass(frozen=True)
class Version:
    """One version of the target's secret, properties only (Key Vault's SecretProperties, minus the SDK)."""

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


# -- reading the state ------------------------------------------------------------------------------


def age(version: Version) -> tuple[datetime, datetime, str]:
    """Sort key, oldest first. Key Vault lists in id order and `created` has one-second resolution, so
    versions written within one second are told apart by their rotation's start (rotation ids carry it)."""
    started = datetime.min.replace(tzinfo=UTC)
    if version.rotation_id and naming.is_rotation_id(version.rotation_id):
        started = naming.parse_rotation_id(version.rotation_id).started_at
    return version.created, started, version.version


def ours(versions: Iterable[Version]) -> list[Version]:
    """Versions this product wrote for this target: the only ones any plan changes."""
    return [v for v in versions if v.ours is not None]


def newest_enabled(versions: Iterable[Version]) -> Version | None:
    """The newest enabled version this product wrote for the target: what consumers read as current."""
    candidates = [v for v in ours(versions) if v.enabled]
    return candidates[-1] if candidates else None


def of_rotation(versions: Iterable[Version], rotation_id: str) -> list[Version]:
    return [v for v in ours(versions) if v.rotation_id == rotation_id]


def find(versions: Iterable[Version], version: str | None) -> Version | None:
    return next((v for v in versions if version and v.version == version), None)


def spelled(names: Iterable[str], name: str) -> str | None:
    """`name` as the target spells it (credential names are case-insensitive), or None when absent."""
    wanted = name.lower()
    return next((n for n in names if n.lower() == wanted), None)


# -- provision --------------------------------------------------------------------------------------


def derived_key_name(base_key_name: str, rotation_id: str, key_name: str | None) -> str:
    """The key name this rotation owns: naming.key_name(base, rotation id). A different name is refused,
    so a re-run always finds the same key and compensation never deletes someone else's."""
    expected = naming.key_name(base_key_name, rotation_id)
    if key_name is not None and key_name.lower() != expected.lower():
        raise ValueError(f"keyName: expected {expected} (derived from rotation {rotation_id}), got {key_name!r}")
    return expected


def newer_rotation(versions: Iterable[Version], rotation_id: str) -> str | None:
    """The newest rotation already stored that started after `rotation_id`: a replayed or stale request
    must not create, renew or later revoke anything. None when `rotation_id` is the newest."""
    started = naming.parse_rotation_id(rotation_id).started_at
    newer = sorted(
        v.rotation_id
        for v in versions
        if v.rotation_id
        and naming.is_rotation_id(v.rotation_id)
        and naming.parse_rotation_id(v.rotation_id).started_at > started
    )
    return newer[-1] if newer else None


def previous_version(versions: Iterable[Version], rotation_id: str) -> Version | None:
    """The version consumers used before this rotation: the newest enabled one of ours from another
    rotation that is not revoked (stage current before the re-tag, previous after it)."""
    candidates = [v for v in ours(versions) if v.enabled and v.rotation_id != rotation_id and v.stage != "revoked"]
    return candidates[-1] if candidates else None


def previous_key_name(
    base_key_name: str, previous: Version | None, versions: Iterable[Version], key_names: Iterable[str]
) -> str | None:
    """The key consumers held before: the previous version's key name; on first adoption (no version of
    ours at all) the bare base name when the target has it."""
    if previous is not None:
        return previous.key_name
    if ours(versions):
        return None
    return spelled(key_names, base_key_name)


@dataclass(frozen=True)
class ProvisionPlan:
    """What provision does. `reuse`: this rotation's version is already stored (it was written only after
    the target accepted the key), so nothing is created, probed or stored again — for a kind renewed in
    place only when `reuse_needs_value_check` finds the version holding the current value. Otherwise:
    `create` the key when absent (or `renew` it in place), probe it, store a new version, then revoke
    `retire_after_store` (versions of this rotation whose key is gone: never current again) and re-tag
    `previous` stage=previous."""

    key_name: str
    previous: Version | None
    create: bool
    renew: bool
    reuse: Version | None
    reuse_needs_value_check: bool
    retire_after_store: tuple[Version, ...]
    why: str


def plan_provision(
    base_key_name: str,
    rotation_id: str,
    key_name: str | None,
    key_names: Sequence[str],
    versions: Sequence[Version],
    *,
    renews_in_place: bool,
) -> ProvisionPlan:
    """Raises ValueError for a key name not derived from the rotation id, and StaleRotation for a rotation
    older than one already stored (nothing has changed then)."""
    name = derived_key_name(base_key_name, rotation_id, key_name)
    newer = newer_rotation(versions, rotation_id)
    if newer is not None:
        raise StaleRotation(rotation_id, newer)
    previous = previous_version(versions, rotation_id)
    mine = tuple(v for v in of_rotation(versions, rotation_id) if v.enabled)
    present = spelled(key_names, name) is not None
    if renews_in_place:  # the value check tells a finished renewal from one still to do
        return ProvisionPlan(
            name,
            previous,
            create=False,
            renew=True,
            reuse=mine[-1] if mine else None,
            reuse_needs_value_check=bool(mine),
            retire_after_store=mine,
            why="renewed before, if the stored value matches" if mine else "renew in place, store the new value",
        )
    if present and mine:
        return ProvisionPlan(
            name,
            previous,
            create=False,
            renew=False,
            reuse=mine[-1],
            reuse_needs_value_check=False,
            retire_after_store=(),
            why="key and version already stored",
        )
    return ProvisionPlan(
        name,
        previous,
        create=not present,
        renew=False,
        reuse=None,
        reuse_needs_value_check=False,
        retire_after_store=mine,
        why="key exists (created before a crash): read it, probe, store" if present else "create, probe, store",
    )


class StaleRotation(ValueError):
    """A rotation older than one already stored for this target (a replayed or copied request)."""

    def __init__(self, rotation_id: str, newer: str) -> None:
        super().__init__(f"rotation {rotation_id} is older than rotation {newer}")
        self.rotation_id = rotation_id
        self.newer = newer


# -- revoke -----------------------------------------------------------------------------------------


def kept_version(versions: Iterable[Version], keep_version: str | None, target_id: str) -> Version:
    """The version a revoke keeps: ours and enabled, or disabling the others would leave consumers no
    enabled version at all (I2)."""
    keep = find(ours(versions), keep_version)
    if keep is None or not keep.enabled:
        raise ValueError(f"keepVersion: {keep_version} is not an enabled version of {target_id}'s secret")
    return keep


def written_after(version: Version, keep: Version) -> bool:
    """Certainly written after the kept version. Key Vault's `created` has one-second resolution, and
    rotations of one target can start in the same second (an emergency over a stuck rotation): within the
    kept version's second nothing counts as later, so leftovers are never spared by a coin toss."""
    return version.created > keep.created


def newer_than_kept(versions: Iterable[Version], keep: Version) -> list[Version]:
    """Enabled versions of ours written after the kept one (a late write of an abandoned rotation)."""
    return [v for v in ours(versions) if v.enabled and written_after(v, keep)]


@dataclass(frozen=True)
class EmergencyKeep:
    """Whether an emergency must store its kept key again before it revokes. `rivals`: enabled versions of
    ours, not holding the kept key, as new as its newest copy or newer (they may hold the leaked key, and
    Key Vault's one-second `created` cannot always order them). With rivals the activity asks Key Vault
    which version it serves as latest (`served_copy`), and stores the kept key again when it is none of
    `own`. A re-run finds that copy (same rotation and key name) and no rival left, and writes nothing."""

    newest_own: Version
    own: tuple[Version, ...]
    rivals: tuple[Version, ...]


def emergency_keep(versions: Iterable[Version], keep: Version) -> EmergencyKeep:
    mine = ours(versions)
    own = [v for v in mine if v.enabled and v.rotation_id == keep.rotation_id and v.key_name == keep.key_name]
    newest_own = max(own, key=lambda v: v.created)
    rivals = [v for v in mine if v.enabled and v not in own and v.created >= newest_own.created]
    return EmergencyKeep(newest_own, tuple(own), tuple(rivals))


def served_copy(keep: EmergencyKeep, latest: str | None) -> Version | None:
    """The copy of the kept key Key Vault serves as latest, or None (then it is stored again)."""
    return next((v for v in keep.own if v.version == latest), None)


def plan_key_deletions(
    base_key_name: str,
    present: Sequence[str],
    keep: str,
    names: Sequence[str] | None,
    sweep: bool,
    spared: AbstractSet[str] = frozenset(),
) -> list[str]:
    """Which of the `present` key names a revoke deletes. None = emergency: every other key of the family;
    `sweep` adds those to the named ones, except `spared` (lower-cased names held by a version newer than
    the kept one). Named keys outside the family, or reserved `_` names, are refused; the kept one is
    never deleted."""
    family = [n for n in naming.keys_to_revoke(base_key_name, present, keep) if n.lower() not in spared]
    if names is None:
        return family
    wanted: list[str] = []
    for name in names:
        if name.lower() == keep.lower():
            continue
        if name.startswith("_") or not naming.belongs_to_base(base_key_name, name):
            raise ValueError(f"revokeKeyNames: {name} is not a key of base name {base_key_name}")
        wanted.append(name)
    if sweep:
        wanted += [n for n in family if n.lower() not in {w.lower() for w in wanted}]
    return wanted


def plan_version_disables(
    target_id: str, versions: Sequence[Version], keep: Version | None, wanted: Sequence[str] | None, sweep: bool
) -> list[Version]:
    """Our versions to disable. None = emergency: every other enabled version of ours not written after the
    kept one; `sweep` adds those to the named ones. `keep` None: the kept version is yet to be written (the
    API's dry run), so it is newer than all of them. A named version that is not ours is refused."""
    mine = ours(versions)
    kept = keep.version if keep else None
    others = [v for v in mine if v.enabled and v.version != kept and not (keep and written_after(v, keep))]
    if wanted is None:
        return others
    chosen: list[Version] = []
    for version in wanted:
        if version == kept:
            continue
        found = find(mine, version)
        if found is None:
            raise ValueError(f"revokeVersions: {version} is not a version this product wrote for {target_id}")
        chosen.append(found)
    if sweep:
        chosen += [v for v in others if v.version not in {c.version for c in chosen}]
    return chosen


@dataclass(frozen=True)
class KeyDeletion:
    """One key the revoke reports deleted; `call` is False when it is already absent (no call, still done)."""

    name: str
    call: bool


@dataclass(frozen=True)
class RevokePlan:
    """Delete `delete_keys` on the target first, then disable `disable_versions` (stage revoked): the old
    versions are no longer the newest by then (I2 order). `spared`: versions newer than the kept one, left
    enabled with their keys for the next rotation (disabling them would make Key Vault's latest disabled)."""

    keep: Version
    delete_keys: tuple[KeyDeletion, ...]
    disable_versions: tuple[Version, ...]
    spared: tuple[Version, ...]


def plan_revoke(
    base_key_name: str,
    target_id: str,
    present: Sequence[str] | None,
    versions: Sequence[Version],
    keep: Version,
    keep_name: str,
    names: Sequence[str] | None,
    version_ids: Sequence[str] | None,
    sweep: bool,
) -> RevokePlan:
    """`present` None: a kind renewed in place, nothing old is left on the target to delete. Otherwise the
    kept key must be there (ValueError: revoking the rest would leave consumers nothing). Versions holding
    the kept key (the announced one, or its copy stored again by an emergency) are never disabled."""
    spared = newer_than_kept(versions, keep)
    deletions: list[KeyDeletion] = []
    if present is not None:
        if spelled(present, keep_name) is None:
            raise ValueError(f"keepKeyName: {keep_name} is not a key on target {target_id}; refusing to revoke")
        left = {n.lower() for n in present}
        spared_names = {v.key_name.lower() for v in spared if v.key_name}
        for name in plan_key_deletions(base_key_name, present, keep_name, names, sweep, spared_names):
            deletions.append(KeyDeletion(name, call=name.lower() in left))
            left.discard(name.lower())
    kept_key = (keep.rotation_id, keep.key_name)
    disables = [
        v
        for v in plan_version_disables(target_id, versions, keep, version_ids, sweep)
        if (v.rotation_id, v.key_name) != kept_key
    ]
    return RevokePlan(keep, tuple(deletions), tuple(disables), tuple(spared))


def settle_revocation(refused: bool | None, final: bool) -> bool:
    """Whether the revoked versions are disabled now: when the target refused their old values, when there
    was nothing to verify (`refused` None), or at the verification bound (`final`: their keys are deleted
    and no consumer may read them). Still accepted before the bound: left enabled for a later round, so
    their values can be presented again (a disabled version cannot be read)."""
    return refused is None or refused or final


# -- compensate -------------------------------------------------------------------------------------

RestoreAction = Literal["none", "retag", "reuse-copy", "store-copy"]


@dataclass(frozen=True)
class Restore:
    """How the previous key becomes current again. `retag`: `previous` back to stage current (this rotation
    stored nothing newer). `store-copy`: its value stored again as the newest version (Key Vault's latest
    is the newest version even when disabled), then the original disabled. `reuse-copy`: a re-run, the copy
    is `copy`; the original is disabled. `none`: nothing to restore (no previous, or it is disabled: a
    disabled version is never re-enabled, its key may be gone)."""

    action: RestoreAction
    previous: Version | None
    copy: Version | None
    why: str


@dataclass(frozen=True)
class CompensationPlan:
    """Restore first, then disable `disable_versions` (every version this rotation stored), then delete
    `delete_key` last: a compensation that gives up half-way leaves consumers an accepted key, never a
    disabled latest. `reported_disabled` is the version id the result names."""

    restore: Restore
    disable_versions: tuple[Version, ...]
    reported_disabled: str | None
    delete_key: str


def plan_restore(
    target_id: str, versions: Sequence[Version], rotation_id: str, previous_id: str | None, stored: Sequence[Version]
) -> Restore:
    """`stored`: the versions this rotation stored. Without `previous_id` (provision failed before reporting
    it): the version consumers used before, even when provision died before re-tagging it. Its value is
    stored again only when one of `stored` is newer than it; a re-run finds the copy newest, and stores
    nothing (found by the exhaustive tests: every re-run without an id stored one more copy)."""
    mine = ours(versions)
    others = [v for v in mine if v.rotation_id != rotation_id]
    if previous_id:
        previous = find(others, previous_id)
        if previous is None:
            raise ValueError(f"previousVersion: {previous_id} is not a version this product wrote for {target_id}")
    elif stored:  # whatever consumers used before must be newest again; still `current` if never re-tagged
        previous = previous_version(mine, rotation_id)
    else:
        enabled = [v for v in others if v.enabled]
        previous = enabled[-1] if enabled and enabled[-1].stage == "previous" else None
    if previous is None:
        return Restore("none", None, None, "no previous version to restore")
    copies = [
        v for v in others if v.rotation_id == previous.rotation_id and v.version != previous.version and v.enabled
    ]
    if copies:
        return Restore("reuse-copy", previous, copies[-1], "its copy was stored before (a re-run)")
    if not previous.enabled:
        return Restore("none", previous, None, "the previous version is disabled: never re-enabled")
    if not any(age(v) > age(previous) for v in stored):
        return Restore("retag", previous, None, "nothing newer was stored: re-tag it current")
    return Restore("store-copy", previous, None, "a newer version was stored: store its value again as the newest")


def plan_compensation(
    base_key_name: str,
    target_id: str,
    versions: Sequence[Version],
    rotation_id: str,
    key_name: str | None,
    version: str | None,
    previous_id: str | None,
) -> CompensationPlan:
    """Undo a rotation that failed before consumers were told. Every version it stored is disabled, also
    when `version` is None (provision may have stored one before failing); a named `version` that it did
    not store is refused, as is a key name it does not own."""
    naming.parse_rotation_id(rotation_id)
    name = derived_key_name(base_key_name, rotation_id, key_name)
    new_versions = of_rotation(versions, rotation_id)
    if version and find(new_versions, version) is None:
        raise ValueError(f"version: {version} was not stored by rotation {rotation_id}")
    restore = plan_restore(target_id, versions, rotation_id, previous_id, new_versions)
    reported = version or (new_versions[-1].version if new_versions else None)
    return CompensationPlan(restore, tuple(new_versions), reported, name)


# -- drift ------------------------------------------------------------------------------------------


def current_version(versions: Sequence[Version]) -> Version | None:
    """The newest enabled version of ours; a repair counts as newer than the version it repaired even
    when both were written within Key Vault's one-second `created` resolution."""
    current = newest_enabled(versions)
    while current is not None:
        repair = next(
            (v for v in ours(versions) if v.enabled and v.tags.get(TAG_REPAIR_OF) == current.version),
            None,
        )
        if repair is None:
            return current
        current = repair
    return None


def rotation_underway(versions: Iterable[Version]) -> bool:
    """An enabled `previous` version: a rotation between provision and revoke owns the target."""
    return any(v.enabled and v.stage == "previous" for v in ours(versions))


DriftOutcome = Literal["in-sync", "restored", "missing", "unreadable", "skipped"]


@dataclass(frozen=True)
class DriftPlan:
    """A drift check's verdict and what it writes. `store_repair`: store the target's value as a new version
    (tagged repairOf `current`), then disable `current` — store first, disable second (I2). `disable` alone:
    finish a repair a crash interrupted (the repair is current and in sync; the drifted one still enabled)."""

    outcome: DriftOutcome
    reason: str | None
    current: Version | None
    store_repair: bool = False
    disable: Version | None = None


def drift_subject(versions: Sequence[Version]) -> DriftPlan:
    """Which version to compare with the target: outcome `skipped` when a rotation owns the target or there
    is nothing current (the scheduler rotates it when due); else the plan names `current`, still to judge."""
    if rotation_underway(versions):
        return DriftPlan("skipped", "a rotation is between provision and revoke", None)
    current = current_version(versions)
    if current is None:
        return DriftPlan("skipped", "no current version (the scheduler rotates it when due)", None)
    return DriftPlan("in-sync", None, current)


def plan_drift(
    versions: Sequence[Version], current: Version, listed: bool, matches: bool, *, renews_in_place: bool
) -> DriftPlan:
    """`listed`: the current version's key name is on the target; `matches`: its value there equals the
    version's. A missing key cannot be restored (its value is gone): the scheduler rotates the target —
    except a kind renewed in place, which drift never rotates (unreadable instead)."""
    key_name = current.key_name or ""
    if not listed:
        if renews_in_place:
            return DriftPlan("unreadable", "the target lists no master key", current)
        return DriftPlan("missing", f"key {key_name} is no longer on the target", current)
    if matches:
        repaired = find(ours(versions), current.tags.get(TAG_REPAIR_OF))
        if repaired is None or not repaired.enabled:
            return DriftPlan("in-sync", None, current)
        return DriftPlan("restored", "finished an interrupted repair", repaired, disable=repaired)
    reason = f"key {key_name} had another value on the target"
    return DriftPlan("restored", reason, current, store_repair=True, disable=current)


def still_current(versions: Sequence[Version], current: Version) -> bool:
    """Just before a repair is written: Key Vault unchanged since the check (a rotation that stored a version
    meanwhile owns the target, and wins)."""
    latest = current_version(versions)
    return not rotation_underway(versions) and latest is not None and latest.version == current.version
