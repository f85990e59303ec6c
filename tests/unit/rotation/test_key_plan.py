"""The I2 plans (rotation/key_plan.py) over every small state, and the activities' executors carrying them out
against an in-memory target and Key Vault (the Cosmic Python shape: a pure model, fakes for the I/O).

I2: the newest enabled Key Vault version of ours is always a key the target accepts. The rules the docs state
for it (DESIGN.md "lifecycle" and I2; docs/architecture.md "What each one does", "Why this order", "Safety
rails", "Drift"; docs/runbook.md "Stuck rotations"; docs/faults.md "End state"), each with the tests that
cover it:

I2   every write of a revoke, compensation or drift repair keeps I2 if it held before (checked after each
     write, so a step that gives up half-way leaves it true), and Key Vault's latest stays enabled
       -> every test run through `World` (revoke, compensation, drift exhaustive tests)
Provision
PV1  only the key named naming.key_name(base, rotation id) is created; another name is refused
       -> test_provision_creates_only_the_derived_key_name_and_refuses_another
PV2  an existing key is read, not recreated; PV3 a version tagged with this rotation id is reused (nothing
     probed or stored again); PV6 versions of this rotation whose key is gone are revoked once a new one is
     stored; PV5 the previous version is the newest enabled one of ours from another rotation, not revoked
       -> test_provision_plan_over_every_small_state
PV4  a rotation older than one already stored is refused before anything changes
       -> test_provision_refuses_a_rotation_older_than_one_already_stored
PV7  the master key is renewed in place, never created; a re-run is told apart by value
       -> test_provision_plan_over_every_small_state (renews_in_place cases)
PV8  the key consumers held before: the previous version's key; on first adoption the bare base name
       -> test_previous_key_name_is_the_previous_versions_key_or_the_bare_base_name_on_adoption
Revoke
RV1  the kept version must be ours and enabled, the kept key on the target, else nothing is revoked
       -> test_revoke_refuses_a_kept_version_or_key_that_consumers_could_not_use
RV2  never the kept key, a key outside the base-name family or a reserved `_` name; named ones outside refused
RV3  never the kept version or another copy of its key, never a version we did not write for this target
RV4  emergency: every other key of the family and every other enabled version of ours
RV5  sweep: the named ones plus every other key of the family and enabled version of ours older than the kept
RV8  keys deleted on the target before any version is disabled
RV9  absent names cost no call and are still reported; a re-run writes nothing
       -> test_revoke_over_every_small_state (RV2-RV5, RV8, RV9, I2),
          test_revoke_refuses_keys_outside_the_family_and_versions_not_ours
RV6  a version newer than the kept one is never disabled nor its key deleted (Key Vault's latest would turn
     disabled); one written within the kept version's second is not newer
       -> test_revoke_spares_a_late_newer_version_and_its_key_but_not_one_of_the_same_second
RV7  an emergency spares nothing: the kept key is stored again as the newest version first, unless Key Vault
     already serves a copy
       -> test_emergency_revoke_stores_the_kept_key_again_before_disabling_a_newer_rival
RV10 a kind renewed in place (the master key): nothing deleted on the target, old versions disabled
       -> test_a_key_renewed_in_place_deletes_nothing_and_disables_the_old_versions
RV11 revoked versions are disabled once the target refuses their values, when nothing was verified, or at
     the bound; still accepted before it, they stay enabled to be presented again
       -> test_revoked_versions_are_disabled_only_when_refused_unverifiable_or_at_the_bound
Compensation
CP1  every version this rotation stored is disabled (also when none is named); a named version it did not
     store, a foreign previousVersion or another key name is refused
       -> test_compensation_over_every_small_state, test_compensation_refuses_what_the_rotation_does_not_own
CP2  the previous key is current again first: re-tagged when nothing newer was stored, else its value stored
     again as the newest version (latest stays readable); a re-run reuses that copy
CP3  without a previous version id: the version consumers used before, even one never re-tagged
CP4  a disabled version is never re-enabled
CP5  the new key is deleted last (404 = done); a re-run writes nothing to Key Vault
       -> test_compensation_over_every_small_state (CP2-CP5, I2)
Drift
DR1  a target with a rotation between provision and revoke (an enabled `previous`), or nothing current, is
     skipped; DR2 in sync: nothing written; DR5 a missing key: nothing written, the scheduler rotates (the
     master key: unreadable, never rotated)
       -> test_drift_plan_over_every_small_state
DR3  another value on the target: stored as a repair first, the drifted version disabled second; a repair
     counts as newer than what it repaired; DR4 a crash between the two is finished by the next check
       -> test_drift_repair_stores_first_disables_second_and_a_rerun_finishes_an_interrupted_one
DR6  Key Vault changed before the repair is written: skipped (the rotation wins)
       -> test_drift_repair_yields_to_a_rotation_that_stored_a_version_meanwhile
Structure
     activities get a store only from credential_store_for and use only the CredentialStore interface
       -> test_activities_obtain_credential_stores_only_from_the_factory,
          test_the_fake_is_a_credential_store_and_the_factory_builds_one_without_calling_azure

Abandoning a stuck rotation (undone like a compensation before its announcement, untouched after) is the
compensation plan plus one branch in activities/abandon.py:
tests/integration/emulators/test_stuck_activities.py covers it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from activities import revocation, revoke
from activities.credential_stores import credential_store_for
from activities.drift import DriftCheck
from rotation import key_plan, naming
from rotation.credential_store import CreateResult, CredentialStore, ProbeResult, SecretValue
from rotation.key_plan import TAG_REPAIR_OF, StaleRotation, Version
from rotation.naming import read_secret_tags, restaged_tags, secret_tags
from rotation.policy import MASTER_KEY_NAME, Target, load_policy

ROOT = Path(__file__).resolve().parents[3]
ENV = {
    "KEY_VAULT_URL": "https://127.0.0.1:9",
    "LOG_ANALYTICS_WORKSPACE_ID": "00000000-0000-0000-0000-0000000000aa",
    "ARM_ENDPOINT": "https://127.0.0.1:9",
}
TARGET_ID = "demo-orders"
BASE = "orders-client"
T0 = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
OTHERS = ["default", "orders-v2"]  # keys on the target outside the family: never touched


def policy_target(target_id: str = TARGET_ID) -> Target:
    found = load_policy(ROOT / "config" / "rotation-policy.local.json", ENV).target(target_id)
    assert found is not None
    return found


TARGET = policy_target()


def rid(generation: int, mode: naming.Mode = "scheduled") -> str:
    return naming.rotation_id(TARGET_ID, mode, T0 + timedelta(days=30 * generation))


def key(generation: int) -> str:
    return naming.key_name(BASE, rid(generation))


def version(
    vid: str,
    rotation_id: str | None,
    key_name: str | None,
    created: datetime,
    *,
    stage: naming.Stage = "current",
    enabled: bool = True,
    extra: dict[str, str] | None = None,
) -> Version:
    """A version as SecretVersions lists it; no rotation id: someone else's (no tags of ours)."""
    tags = {**(extra or {}), **(secret_tags(TARGET_ID, rotation_id, key_name or "", stage) if rotation_id else {})}
    return Version(vid, f"https://vault/secrets/s/{vid}", enabled, created, None, tags, read_secret_tags(tags))


def value_of(key_name: str) -> str:
    return f"value-of-{key_name}"


# -- in-memory fakes ------------------------------------------------------------------------------------


@dataclass
class FakeStore:
    """A target's credentials in memory (the CredentialStore interface, as a second kind would provide it)."""

    keys: dict[str, str]
    supports_overlap: bool = True
    kind: str = "in-memory"
    calls: list[tuple[str, str]] = field(default_factory=list)
    on_write: Any = None

    def create(self, name: str) -> CreateResult:
        if key_plan.spelled(self.keys, name):
            return CreateResult(name, created=False)
        self.keys[name] = value_of(name)
        self._wrote("create", name)
        return CreateResult(name, created=True)

    def list_names(self) -> list[str]:
        return sorted(self.keys)

    def read_value(self, name: str) -> SecretValue | None:
        actual = key_plan.spelled(self.keys, name)
        return SecretValue(self.keys[actual]) if actual else None

    def delete(self, name: str) -> bool:
        actual = key_plan.spelled(self.keys, name)
        self._wrote("delete", name)
        if actual is None:
            return False
        del self.keys[actual]
        return True

    def renew(self, name: str) -> None:
        self.keys[name] = value_of(name) + "-renewed"
        self._wrote("renew", name)

    def probe(self, value: SecretValue) -> ProbeResult:
        ok = value.reveal() in self.keys.values()
        return ProbeResult(ok, 200 if ok else 401)

    def _wrote(self, what: str, name: str) -> None:
        self.calls.append((what, name))
        if self.on_write:
            self.on_write(f"{what} {name}")


@dataclass
class FakeVault:
    """The target's secret in memory, duck-typing the SecretVersions methods the executors call."""

    versions: list[Version]
    values: dict[str, str]
    target: Target = TARGET
    name: str = "secret"
    writes: list[str] = field(default_factory=list)
    on_write: Any = None

    def list(self) -> list[Version]:
        return sorted(self.versions, key=key_plan.age)

    def latest_version(self) -> str | None:
        listed = self.list()
        return listed[-1].version if listed and listed[-1].enabled else None

    def read_value(self, vid: str) -> SecretValue:
        found = key_plan.find(self.versions, vid)
        assert found is not None and found.enabled, f"Key Vault answers 403 for disabled version {vid}"
        return SecretValue(self.values[vid])

    def add(
        self,
        value: SecretValue,
        rotation_id: str,
        key_name: str,
        expires: datetime,
        extra_tags: dict[str, str] | None = None,
    ) -> Version:
        vid = f"n{len(self.writes)}"
        newest = max((v.created for v in self.versions), default=T0)
        tags = {**(extra_tags or {}), **secret_tags(TARGET_ID, rotation_id, key_name, "current")}
        stored = Version(vid, vid, True, newest + timedelta(seconds=1), expires, tags, read_secret_tags(tags))
        self.versions.append(stored)
        self.values[vid] = value.reveal()
        self._wrote(f"add {vid}")
        return stored

    def ensure_stage(self, v: Version, stage: naming.Stage, *, disable: bool = False) -> bool:
        if v.stage == stage and (not disable or not v.enabled):
            return False
        assert v.ours is not None, f"version {v.version} is not ours: never changed"
        tags = restaged_tags(v.tags, stage)
        updated = replace(v, enabled=False if disable else v.enabled, tags=tags, ours=read_secret_tags(tags))
        self.versions = [updated if x.version == v.version else x for x in self.versions]
        self._wrote(f"stage {v.version} {stage}{' disabled' if disable else ''}")
        return True

    def _wrote(self, what: str) -> None:
        self.writes.append(what)
        if self.on_write:
            self.on_write(what)


class World:
    """A target and its secret; after every write it checks that I2 and a readable latest still hold if
    they held before (so any prefix of a step's writes — one that gave up half-way — keeps them)."""

    def __init__(self, keys: dict[str, str], versions: list[Version], values: dict[str, str], **store: Any) -> None:
        self.store = FakeStore(dict(keys), **store)
        self.vault = FakeVault(list(versions), dict(values))
        self.journal: list[str] = []
        self.held = self.i2()
        self.readable = self.latest_readable()
        self.store.on_write = self.vault.on_write = self._check

    def i2(self) -> bool:
        """Consumers never read a dead key: the newest enabled version of ours, if any, is accepted."""
        current = key_plan.newest_enabled(self.vault.list())
        return current is None or self.vault.values[current.version] in self.store.keys.values()

    def latest_readable(self) -> bool:
        """Key Vault's latest (the newest version, even disabled) is never disabled while one of ours is enabled."""
        mine = key_plan.ours(self.vault.list())
        return not any(v.enabled for v in mine) or mine[-1].enabled

    def _check(self, what: str) -> None:
        self.journal.append(what)
        if self.held:
            assert self.i2(), f"I2 broken by {what!r} after {self.journal}"
        if self.readable:
            assert self.latest_readable(), f"Key Vault's latest disabled by {what!r} after {self.journal}"


# -- state enumeration -------------------------------------------------------------------------------------

VersionState = str  # "absent" | "enabled" | "disabled"
STATES: tuple[VersionState, ...] = ("absent", "enabled", "disabled")


@dataclass(frozen=True)
class Case:
    """Three generations of ours (0 oldest), each with a version state and whether its key is on the target,
    plus optionally someone else's enabled version written last."""

    states: tuple[VersionState, ...]
    present: tuple[bool, ...]
    foreign: bool
    bare_base: bool

    def build(self) -> tuple[dict[str, str], list[Version], dict[str, str]]:
        keys = {name: value_of(name) for name in OTHERS}
        if self.bare_base:
            keys[BASE] = value_of(BASE)
        versions: list[Version] = []
        newest_enabled = max((g for g, s in enumerate(self.states) if s == "enabled"), default=None)
        for g, (state, present) in enumerate(zip(self.states, self.present, strict=True)):
            if present:
                keys[key(g)] = value_of(key(g))
            if state == "absent":
                continue
            stage: naming.Stage = "revoked" if state == "disabled" else "current" if g == newest_enabled else "previous"
            created = T0 + timedelta(days=30 * g, minutes=1)
            versions.append(version(f"v{g}", rid(g), key(g), created, stage=stage, enabled=state == "enabled"))
        values = {v.version: value_of(v.key_name or "") for v in versions}
        if self.foreign:
            versions.append(version("f", None, None, T0 + timedelta(days=200)))
            values["f"] = "someone-elses-value"
        return keys, versions, values


def cases() -> Iterator[Case]:
    for states in itertools.product(STATES, repeat=3):
        for present in itertools.product((True, False), repeat=3):
            for foreign, bare in itertools.product((False, True), repeat=2):
                yield Case(states, present, foreign, bare)


def family_left(world: World) -> set[str]:
    return {n for n in world.store.keys if naming.belongs_to_base(BASE, n)}


# -- provision -----------------------------------------------------------------------------------------


def test_provision_creates_only_the_derived_key_name_and_refuses_another() -> None:
    plan = key_plan.plan_provision(BASE, rid(1), None, [], [], renews_in_place=False)
    assert plan.key_name == key(1) and plan.create
    assert key_plan.plan_provision(BASE, rid(1), key(1).upper(), [], [], renews_in_place=False).key_name == key(1)
    with pytest.raises(ValueError, match="keyName: expected"):
        key_plan.plan_provision(BASE, rid(1), key(0), [], [], renews_in_place=False)
    master = key_plan.plan_provision(MASTER_KEY_NAME, rid(1, "emergency"), None, [], [], renews_in_place=True)
    assert master.key_name == MASTER_KEY_NAME and master.renew and not master.create


def test_provision_refuses_a_rotation_older_than_one_already_stored() -> None:
    for state in ("enabled", "disabled"):
        later = [version("v2", rid(2), key(2), T0 + timedelta(days=60), enabled=state == "enabled")]
        with pytest.raises(StaleRotation, match=rid(2)):
            key_plan.plan_provision(BASE, rid(1), None, [key(2)], later, renews_in_place=False)
    foreign = [version("f", None, None, T0 + timedelta(days=90))]  # someone else's version has no rotation id
    assert key_plan.plan_provision(BASE, rid(1), None, [], foreign, renews_in_place=False).create


def test_provision_plan_over_every_small_state() -> None:
    """Generation 2 is the rotation provisioning; 0 and 1 are earlier ones."""
    checked = 0
    for case in cases():
        keys, versions, _ = case.build()
        for renews in (False, True):
            plan = key_plan.plan_provision(BASE, rid(2), None, sorted(keys), versions, renews_in_place=renews)
            mine = [v for v in versions if v.rotation_id == rid(2) and v.enabled]
            earlier = [v for v in versions if v.ours and v.rotation_id != rid(2) and v.enabled and v.stage != "revoked"]
            label = f"{case} renews={renews}: {plan}"
            assert plan.previous == (earlier[-1] if earlier else None), label  # PV5
            if renews:  # PV7
                assert plan.renew and not plan.create, label
                assert plan.reuse == (mine[-1] if mine else None) and plan.reuse_needs_value_check == bool(mine), label
            elif case.present[2] and mine:  # PV3
                assert plan.reuse == mine[-1] and not plan.create and not plan.reuse_needs_value_check, label
            else:  # PV2: create only when absent; PV6: this rotation's orphaned versions retired after the store
                assert plan.reuse is None and plan.create == (not case.present[2]), label
                assert plan.retire_after_store == tuple(mine), label
            assert plan.previous not in plan.retire_after_store, label  # the previous one is re-tagged, not revoked
            checked += 1
    assert checked == 27 * 8 * 4 * 2


def test_previous_key_name_is_the_previous_versions_key_or_the_bare_base_name_on_adoption() -> None:
    prev = version("v0", rid(0), key(0), T0)
    assert key_plan.previous_key_name(BASE, prev, [prev], [key(0), BASE]) == key(0)
    assert key_plan.previous_key_name(BASE, None, [], ["ORDERS-CLIENT", "default"]) == "ORDERS-CLIENT"
    assert key_plan.previous_key_name(BASE, None, [], ["default"]) is None
    revoked = version("v0", rid(0), key(0), T0, stage="revoked", enabled=False)
    assert key_plan.previous_key_name(BASE, None, [revoked], [BASE]) is None  # ours exist: no adoption


# -- revoke --------------------------------------------------------------------------------------------


def run_revoke(world: World, request: dict[str, Any]) -> tuple[key_plan.RevokePlan, list[str], list[str]]:
    """What revoke_old_keys does without a probe: plan, delete on the target, then disable."""
    plan, _ = revoke._plan_revoke(TARGET, world.store, world.vault, request)  # type: ignore[arg-type]
    deleted = revoke.delete_planned(world.store, plan)
    disabled = revocation.disable_all(world.vault, plan.disable_versions)  # type: ignore[arg-type]
    return plan, deleted, disabled


def revoke_requests(versions: Sequence[Version], keep: Version) -> Iterator[tuple[str, dict[str, Any]]]:
    """The requests the orchestrator sends: emergency, scheduled with sweep, and explicit lists without it."""
    earlier = [v for v in key_plan.ours(versions) if v.enabled and v.created < keep.created]
    previous = earlier[-1] if earlier else None  # provision's previousVersion: older than the new key's
    named = [previous.key_name] if previous and previous.key_name else []
    wanted = [previous.version] if previous else []
    base = {"keepKeyName": keep.key_name, "keepVersion": keep.version}
    yield "emergency", {**base, "revokeKeyNames": None, "revokeVersions": None}
    yield "sweep", {**base, "revokeKeyNames": named, "revokeVersions": wanted, "sweep": True}
    yield "explicit", {**base, "revokeKeyNames": named, "revokeVersions": wanted}


def test_revoke_over_every_small_state() -> None:
    runs = 0
    for case in cases():
        for g in range(3):
            if case.states[g] != "enabled" or not case.present[g]:
                continue  # RV1: refused, see its own test
            keys, versions, values = case.build()
            keep = next(v for v in versions if v.version == f"v{g}")
            for mode, request in revoke_requests(versions, keep):
                world = World(keys, versions, values)
                plan, deleted, disabled = run_revoke(world, request)
                label = f"{case} keep=v{g} {mode}: {world.journal}"
                kept_key = keep.key_name or ""
                after = world.vault.list()
                spared = {v.version for v in plan.spared}
                # RV2: the kept key, other families and reserved names are never deleted.
                assert kept_key in world.store.keys and set(OTHERS) <= set(world.store.keys), label
                assert all(naming.belongs_to_base(BASE, n) and not n.startswith("_") for n in deleted), label
                # RV3: no copy of the kept key, no version of someone else, is disabled.
                assert all(v.enabled for v in after if v.key_name == kept_key or v.ours is None), label
                # RV8: every delete on the target comes before the first disable.
                kinds = [w.split()[0] for w in world.journal]
                assert kinds == sorted(kinds, key=lambda k: k != "delete" and k != "add"), label
                enabled_ours = {v.key_name for v in key_plan.ours(after) if v.enabled}
                if mode == "emergency":  # RV4 (and RV7: nothing is spared)
                    assert not spared and family_left(world) == {kept_key}, label
                    assert enabled_ours == {kept_key}, label
                elif mode == "sweep":  # RV5, RV6
                    spared_keys = {v.key_name for v in plan.spared}
                    assert family_left(world) - {kept_key} <= spared_keys, label
                    assert enabled_ours - {kept_key} <= spared_keys, label
                else:  # explicit lists: exactly those
                    assert deleted == list(request["revokeKeyNames"]), label
                    assert disabled == list(request["revokeVersions"]), label
                # RV9: a re-run writes nothing and reports the same explicit lists.
                before = list(world.journal)
                again, deleted_again, _ = run_revoke(world, request)
                assert world.journal == before, f"{label}; the re-run wrote {world.journal[len(before) :]}"
                assert not any(d.call for d in again.delete_keys), label
                if mode == "explicit":
                    assert deleted_again == deleted, label
                runs += 1
    assert runs > 1000


def test_revoke_refuses_a_kept_version_or_key_that_consumers_could_not_use() -> None:
    keys, versions, values = Case(("enabled", "disabled", "enabled"), (True, True, False), False, False).build()
    world = World(keys, versions, values)
    request = {"revokeKeyNames": None, "revokeVersions": None}
    with pytest.raises(ValueError, match="keepVersion: v1 is not an enabled version"):
        run_revoke(world, {**request, "keepKeyName": key(1), "keepVersion": "v1"})
    with pytest.raises(ValueError, match="keepVersion: f is not an enabled version"):
        run_revoke(world, {**request, "keepKeyName": key(1), "keepVersion": "f"})
    with pytest.raises(ValueError, match=f"keepKeyName: {key(2)} is not a key on target {TARGET_ID}"):
        run_revoke(world, {**request, "keepKeyName": key(2), "keepVersion": "v2"})
    assert world.journal == []


def test_revoke_refuses_keys_outside_the_family_and_versions_not_ours() -> None:
    keys, versions, _ = Case(("enabled", "enabled", "enabled"), (True, True, True), True, False).build()
    for name in ("default", "orders-v2", "_master"):
        with pytest.raises(ValueError, match=f"revokeKeyNames: {name} is not a key of base name {BASE}"):
            key_plan.plan_key_deletions(BASE, sorted(keys), key(2), [name], sweep=False)
    with pytest.raises(ValueError, match=f"revokeVersions: f is not a version this product wrote for {TARGET_ID}"):
        key_plan.plan_version_disables(TARGET_ID, versions, versions[2], ["f"], sweep=False)
    assert key_plan.plan_key_deletions(BASE, sorted(keys), key(2), [key(2)], sweep=False) == []  # the kept one


def test_revoke_spares_a_late_newer_version_and_its_key_but_not_one_of_the_same_second() -> None:
    keep = version("v1", rid(1), key(1), T0 + timedelta(days=30))
    late = version("v2", rid(2), key(2), T0 + timedelta(days=30, seconds=1))  # an abandoned rotation's late write
    same = version("v0", rid(0), key(0), T0 + timedelta(days=30), stage="previous")  # within the kept one's second
    keys = {key(g): value_of(key(g)) for g in range(3)}
    values = {v.version: value_of(v.key_name or "") for v in (keep, late, same)}
    world = World(keys, [same, keep, late], values)
    request = {"keepKeyName": key(1), "keepVersion": "v1", "revokeKeyNames": [key(0)], "revokeVersions": ["v0"]}
    plan, deleted, disabled = run_revoke(world, {**request, "sweep": True})
    assert [v.version for v in plan.spared] == ["v2"] and deleted == [key(0)] and disabled == ["v0"]
    assert key(2) in world.store.keys and key_plan.newest_enabled(world.vault.list()) == late


def test_emergency_revoke_stores_the_kept_key_again_before_disabling_a_newer_rival() -> None:
    keep = version("v1", rid(1, "emergency"), naming.key_name(BASE, rid(1, "emergency")), T0 + timedelta(days=30))
    rival = version("v2", rid(2), key(2), T0 + timedelta(days=30))  # same second: `created` cannot order them
    keys = {keep.key_name or "": "kept", key(2): "leaked"}
    world = World(keys, [keep, rival], {"v1": "kept", "v2": "leaked"})
    request = {"keepKeyName": keep.key_name, "keepVersion": "v1", "revokeKeyNames": None, "revokeVersions": None}
    plan, deleted, disabled = run_revoke(world, request)
    assert world.journal[0].startswith("add ") and plan.keep.version == world.journal[0].split()[1]
    assert deleted == [key(2)] and disabled == ["v2"]
    assert world.vault.latest_version() == plan.keep.version and world.vault.values[plan.keep.version] == "kept"
    # Key Vault already serves the kept key as latest (the rival's rotation started earlier): nothing is
    # stored again, the rival is still disabled and its key deleted.
    older = version("v0", rid(0), key(0), T0 + timedelta(days=30))
    served = World({keep.key_name or "": "kept", key(0): "leaked"}, [older, keep], {"v1": "kept", "v0": "leaked"})
    plan, deleted, disabled = run_revoke(served, request)
    assert plan.keep == keep and not any(w.startswith("add") for w in served.journal)
    assert deleted == [key(0)] and disabled == ["v0"]


def test_a_key_renewed_in_place_deletes_nothing_and_disables_the_old_versions() -> None:
    old = version("v0", rid(0, "emergency"), MASTER_KEY_NAME, T0, stage="previous")
    new = version("v1", rid(1, "emergency"), MASTER_KEY_NAME, T0 + timedelta(days=30))
    world = World({MASTER_KEY_NAME: "renewed"}, [old, new], {"v0": "old", "v1": "renewed"}, supports_overlap=False)
    request = {"keepKeyName": MASTER_KEY_NAME, "keepVersion": "v1", "revokeKeyNames": [], "revokeVersions": None}
    plan, deleted, disabled = run_revoke(world, request)
    assert deleted == [] and world.store.calls == [] and disabled == ["v0"]
    plan = key_plan.plan_revoke(MASTER_KEY_NAME, TARGET_ID, None, [old, new], new, MASTER_KEY_NAME, [], ["v0"], False)
    assert plan.delete_keys == () and [v.version for v in plan.disable_versions] == ["v0"]


def test_revoked_versions_are_disabled_only_when_refused_unverifiable_or_at_the_bound() -> None:
    for refused, final in itertools.product((None, True, False), (False, True)):
        expected = refused is not False or final
        assert key_plan.settle_revocation(refused, final) is expected, (refused, final)


# -- compensate ----------------------------------------------------------------------------------------


def compensation_cases() -> Iterator[tuple[str, World, dict[str, Any]]]:
    """Generations 0 and 1 before this rotation (2); this rotation stored nothing, one version, or a stale
    one plus a new one; its key on the target or not; the previous id given or not."""
    for earlier in itertools.product(("absent", "current", "previous", "disabled"), repeat=2):
        for stored in ("none", "enabled", "disabled", "stale+new"):
            for present, named, give_previous in itertools.product((True, False), repeat=3):
                versions: list[Version] = []
                keys = {name: value_of(name) for name in OTHERS}
                for g, state in enumerate(earlier):
                    if state == "absent":
                        continue
                    stage: naming.Stage = "revoked" if state == "disabled" else state  # type: ignore[assignment]
                    created = T0 + timedelta(days=30 * g)
                    versions.append(version(f"v{g}", rid(g), key(g), created, stage=stage, enabled=state != "disabled"))
                    if state != "disabled":
                        keys[key(g)] = value_of(key(g))
                at = T0 + timedelta(days=60)
                if stored in ("enabled", "stale+new"):
                    versions.append(version("v2", rid(2), key(2), at + timedelta(seconds=2)))
                if stored in ("disabled", "stale+new"):
                    versions.append(version("v2s", rid(2), key(2), at, stage="revoked", enabled=False))
                if present:
                    keys[key(2)] = value_of(key(2))
                values = {v.version: value_of(v.key_name or "") for v in versions}
                mine = [v for v in versions if v.rotation_id == rid(2)]
                previous = key_plan.previous_version(versions, rid(2))
                request = {
                    "keyName": None,
                    "version": mine[-1].version if named and mine else None,
                    "previousVersion": previous.version if give_previous and previous else None,
                }
                yield f"{earlier} stored={stored} present={present} {request}", World(keys, versions, values), request


def run_compensation(world: World, request: dict[str, Any]) -> tuple[str | None, bool, key_plan.CompensationPlan]:
    plan = key_plan.plan_compensation(
        BASE, TARGET_ID, world.vault.list(), rid(2), request["keyName"], request["version"], request["previousVersion"]
    )
    restored, deleted = revoke.undo(TARGET, world.store, world.vault, plan)  # type: ignore[arg-type]
    return restored, deleted, plan


def test_compensation_over_every_small_state() -> None:
    runs = 0
    for label, world, request in compensation_cases():
        disabled_before = {v.version for v in world.vault.list() if not v.enabled}
        stored = bool(key_plan.of_rotation(world.vault.list(), rid(2)))
        previous = key_plan.previous_version(world.vault.list(), rid(2))
        restored, _, plan = run_compensation(world, request)
        after = world.vault.list()
        label = f"{label}: {world.journal}"
        # CP1: every version this rotation stored is disabled; CP5: its key deleted, last.
        assert all(not v.enabled for v in after if v.rotation_id == rid(2)), label
        assert world.journal[-1] == f"delete {key(2)}" and key(2) not in world.store.keys, label
        # CP4: nothing disabled comes back.
        assert all(not v.enabled for v in after if v.version in disabled_before), label
        # CP2, CP3: the key consumers used before is what Key Vault serves again, and latest is readable.
        current = key_plan.newest_enabled(after)
        if previous is not None:
            assert current is not None and current.key_name == previous.key_name, label
            assert after[-1].enabled or not stored, label
            assert restored is not None or not stored, label
        assert plan.reported_disabled == (request["version"] or next(
            (v.version for v in reversed(after) if v.rotation_id == rid(2)), None)), label  # fmt: skip
        # CP5: a re-run writes nothing to Key Vault (the delete answers 404) and reports the same restore.
        before = list(world.journal)
        again, deleted_again, _ = run_compensation(world, request)
        assert world.journal[len(before) :] == [f"delete {key(2)}"] and not deleted_again, label
        # The same restore, except that a rotation that stored nothing finds its previous version current
        # already and reports nothing restored (without an id it restores only a version tagged previous).
        assert again == restored or (not stored and again is None and request["previousVersion"] is None), label
        runs += 1
    assert runs == 16 * 4 * 8


def test_compensation_refuses_what_the_rotation_does_not_own() -> None:
    v0 = version("v0", rid(0), key(0), T0)
    v2 = version("v2", rid(2), key(2), T0 + timedelta(days=60))
    with pytest.raises(ValueError, match=f"version: v0 was not stored by rotation {rid(2)}"):
        key_plan.plan_compensation(BASE, TARGET_ID, [v0, v2], rid(2), None, "v0", None)
    with pytest.raises(ValueError, match="previousVersion: v2 is not a version this product wrote"):
        key_plan.plan_compensation(BASE, TARGET_ID, [v0, v2], rid(2), None, None, "v2")
    with pytest.raises(ValueError, match="keyName: expected"):
        key_plan.plan_compensation(BASE, TARGET_ID, [v0, v2], rid(2), key(0), None, None)


# -- drift ---------------------------------------------------------------------------------------------


def drift_world(*, listed: str | None, repair: str, underway: bool, renews: bool = False) -> World:
    """Generation 1 is current (value `a`); `repair`: none, enabled or disabled (a repair of v1, value
    `b`); `underway`: an enabled previous version (a rotation between provision and revoke)."""
    name = MASTER_KEY_NAME if renews else key(1)
    versions = [version("v1", rid(1), name, T0 + timedelta(days=30))]
    values = {"v1": "a"}
    if repair != "none":
        tags = {TAG_REPAIR_OF: "v1"}
        # Written after v1 within its second: the version id orders them as Key Vault's write order does.
        versions.append(version("w1", rid(1), name, T0 + timedelta(days=30), extra=tags, enabled=repair == "enabled"))
        values["w1"] = "b"
    if underway:
        versions.insert(0, version("v0", rid(0), key(0), T0, stage="previous"))
        values["v0"] = "old"
    keys = {} if listed is None else {name: listed}
    return World(keys, versions, values, supports_overlap=not renews)


def test_drift_plan_over_every_small_state(monkeypatch: pytest.MonkeyPatch) -> None:
    from activities import probe

    monkeypatch.setattr(probe, "probe_until_accepted", lambda target, value: probe.ProbeOutcome(True, 1, 200))
    for listed, repair, underway, renews in itertools.product(
        (None, "a", "b", "c"), ("none", "enabled", "disabled"), (False, True), (False, True)
    ):
        world = drift_world(listed=listed, repair=repair, underway=underway, renews=renews)
        finding = DriftCheck(TARGET, world.store, world.vault, "check-1").run()  # type: ignore[arg-type]
        served = "b" if repair == "enabled" else "a"  # a repair counts as newer than what it repaired
        label = f"listed={listed} repair={repair} underway={underway} renews={renews}: {finding.outcome}"
        label += f" ({finding.reason}) {world.journal}"
        if underway:  # DR1
            assert finding.outcome == "skipped" and world.journal == [], label
        elif listed is None:  # DR5
            assert finding.outcome == ("unreadable" if renews else "missing") and world.journal == [], label
        elif listed == served and repair != "enabled":  # DR2
            assert finding.outcome == "in-sync" and world.journal == [], label
        elif listed == served:  # DR4: the repair is in sync, the drifted version still enabled
            assert finding.outcome == "restored" and world.journal == ["stage v1 revoked disabled"], label
        else:  # DR3: the target's value stored first, the drifted version disabled second
            assert finding.outcome == "restored" and world.journal[0].startswith("add "), label
            assert world.journal[1].startswith("stage ") and world.journal[1].endswith("revoked disabled"), label
            assert world.vault.values[key_plan.current_version(world.vault.list()).version] == listed, label  # type: ignore[union-attr]
        assert world.i2() or finding.outcome in ("missing", "unreadable", "skipped"), label


def test_drift_repair_stores_first_disables_second_and_a_rerun_finishes_an_interrupted_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from activities import probe

    monkeypatch.setattr(probe, "probe_until_accepted", lambda target, value: probe.ProbeOutcome(True, 1, 200))
    world = drift_world(listed="b", repair="none", underway=False)
    world.vault.ensure_stage = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("Key Vault down"))  # type: ignore[method-assign]
    crashed = DriftCheck(TARGET, world.store, world.vault, "check-1").run()  # type: ignore[arg-type]
    assert crashed.outcome == "unreadable" and world.journal == ["add n0"] and world.i2()
    del world.vault.ensure_stage  # Key Vault is back: the next check finishes the repair
    finished = DriftCheck(TARGET, world.store, world.vault, "check-2").run()  # type: ignore[arg-type]
    assert finished.outcome == "restored" and finished.reason == "finished an interrupted repair"
    assert world.journal == ["add n0", "stage v1 revoked disabled"]
    assert DriftCheck(TARGET, world.store, world.vault, "check-3").run().outcome == "in-sync"  # type: ignore[arg-type]


def test_drift_repair_yields_to_a_rotation_that_stored_a_version_meanwhile() -> None:
    current = version("v1", rid(1), key(1), T0 + timedelta(days=30))
    newer = version("v2", rid(2), key(2), T0 + timedelta(days=60))
    previous = replace(current, tags=restaged_tags(current.tags, "previous"))
    previous = replace(previous, ours=read_secret_tags(previous.tags))
    assert key_plan.still_current([current], current)
    assert not key_plan.still_current([current, newer], current)
    assert not key_plan.still_current([previous, newer], current)


# -- structure -----------------------------------------------------------------------------------------


def test_the_fake_is_a_credential_store_and_the_factory_builds_one_without_calling_azure() -> None:
    assert isinstance(FakeStore({}), CredentialStore)
    store = credential_store_for(TARGET)
    assert isinstance(store, CredentialStore) and store.kind == "functions-key" and store.supports_overlap
    assert not credential_store_for(policy_target("demo-orders-master")).supports_overlap


def test_activities_obtain_credential_stores_only_from_the_factory() -> None:
    """Another credential kind adds an adapter and a branch in activities/credential_stores.py only."""
    allowed = {"function_keys.py", "credential_stores.py"}
    offenders = [
        path.name
        for path in sorted((ROOT / "activities").glob("*.py"))
        if path.name not in allowed and "FunctionKeyStore" in path.read_text()
    ]
    assert offenders == []
