"""Activities `revoke_old_keys` and `compensate_rotation`: retiring keys, forwards and backwards.

Both keep invariant I2 — the newest enabled Key Vault version is always a key the target accepts — by
their order. Revoke deletes keys on the target first (their versions are no longer the newest), then
disables their versions. Compensation first makes the previous key current again (re-tagged, or its value
stored again as the newest version when this rotation stored one: Key Vault's "latest" is the newest
version even when disabled), then disables the new version, and only then deletes the new key — so a
compensation that gives up half-way (Key Vault unreadable) leaves consumers an accepted key, never a
disabled "latest". Neither ever touches a key outside the target's base-name family, the key being kept, or a Key
Vault version another writer (or another target) owns. Deletes treat 404 as done, and versions already in
the wanted state cost no call, so a re-run converges.

A scheduled or on-demand rotation revokes with `sweep`: besides the previous key it names, every other key
of the family and every other enabled version of ours goes too, so keys left valid by a failed, aborted or
abandoned rotation (orphans) never outlive the next completed rotation. It runs only after the rotation's
own overlap, when every consumer was told to move to the kept key. A version newer than the kept one (a
late write of an abandoned rotation) is never disabled and its key never deleted: Key Vault's "latest"
would turn into a disabled version. The next rotation finds it older than its own and sweeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet
from typing import Any

from activities import revocation, secret_versions
from activities.function_keys import FunctionKeyStore
from activities.provision import derived_key_name, previous_version
from activities.secret_versions import SecretVersions, Version
from activities.targets import target_for
from rotation import naming
from rotation.contracts import ActivityRequest
from rotation.credential_store import SecretValue
from rotation.messages import Revoked
from rotation.policy import Target

log = logging.getLogger("keyrotation.activities.revoke")


# -- revoke ----------------------------------------------------------------------------------------


def _keys_to_delete(
    target: Target, store: FunctionKeyStore, keep: str, names: list[str] | None, sweep: bool, spared: set[str]
) -> list[str]:
    """The names to delete, as the target spells them (plan_key_deletions over the target's keys now);
    the kept key must be on the target."""
    present = store.list_names()
    if not any(n.lower() == keep.lower() for n in present):
        raise ValueError(f"keepKeyName: {keep} is not on {target.function_app.resource_id}; refusing to revoke")
    return plan_key_deletions(target, present, keep, names, sweep, spared)


def plan_key_deletions(
    target: Target,
    present: list[str],
    keep: str,
    names: list[str] | None,
    sweep: bool,
    spared: AbstractSet[str] = frozenset(),
) -> list[str]:
    """Which of the `present` key names a revoke deletes (pure: the rule itself, shared with the API's
    plan). None = emergency: every other key of the family; `sweep` adds those to the named ones, except
    `spared` (held by a version newer than the kept one)."""
    family = [n for n in naming.keys_to_revoke(target.base_key_name, present, keep) if n.lower() not in spared]
    if names is None:
        return family
    wanted: list[str] = []
    for name in names:
        if name.lower() == keep.lower():
            continue
        if name.startswith("_") or not naming.belongs_to_base(target.base_key_name, name):
            raise ValueError(f"revokeKeyNames: {name} is not a key of base name {target.base_key_name}")
        wanted.append(name)
    if sweep:
        wanted += [n for n in family if n.lower() not in {w.lower() for w in wanted}]
    return wanted


def plan_version_disables(
    target: Target, versions: list[Version], keep: Version | None, wanted: list[str] | None, sweep: bool
) -> list[Version]:
    """Our versions to disable (pure; the API's plan calls it too). None = emergency: every other enabled
    version of ours older than the kept one; `sweep` adds those to the named ones. `keep` None: the kept
    version is yet to be written (a plan), so it is newer than all of them."""
    mine = secret_versions.ours(versions)
    kept = keep.version if keep else None
    others = [v for v in mine if v.enabled and v.version != kept and not (keep and _written_after(v, keep))]
    if wanted is None:
        return others
    chosen: list[Version] = []
    for version in wanted:
        if version == kept:
            continue
        found = secret_versions.find(mine, version)
        if found is None:
            raise ValueError(f"revokeVersions: {version} is not a version this product wrote for {target.id}")
        chosen.append(found)
    if sweep:
        chosen += [v for v in others if v.version not in {c.version for c in chosen}]
    return chosen


def _written_after(version: Version, keep: Version) -> bool:
    """Certainly written after the kept version. Key Vault's `created` has one-second resolution, and
    rotations of one target can start in the same second (an emergency over a stuck rotation): within the
    kept version's second nothing counts as later, so leftovers are never spared by a coin toss."""
    return version.created > keep.created


def _newer_than_kept(versions: list[Version], keep: Version) -> list[Version]:
    """Enabled versions of ours written after the kept one (a late write of an abandoned rotation)."""
    return [v for v in secret_versions.ours(versions) if v.enabled and _written_after(v, keep)]


def _kept_as_newest(vault: SecretVersions, versions: list[Version], keep: Version) -> tuple[Version, list[Version]]:
    """An emergency spares nothing: a version of ours as new as the kept one or newer (a drift repair that
    raced the emergency, a late write of an abandoned rotation) may hold the leaked key, and Key Vault's
    one-second `created` cannot always say which is "latest" (Key Vault is asked then). So the kept key is
    stored again, as the version
    written last, before the others are disabled: latest is never left disabled (found by review). A
    re-run finds that copy (same rotation and key name) and no rival left, and writes nothing."""
    mine = secret_versions.ours(versions)
    own = [v for v in mine if v.enabled and v.rotation_id == keep.rotation_id and v.key_name == keep.key_name]
    newest_own = max(own, key=lambda v: v.created)
    rivals = [v for v in mine if v.enabled and v not in own and v.created >= newest_own.created]
    if not rivals:
        return newest_own, versions
    latest = vault.latest_version()  # one second of resolution cannot order them: ask Key Vault
    served = next((v for v in own if v.version == latest), None)
    if served is not None:
        return served, versions
    assert keep.rotation_id and keep.key_name  # ours: find() only returns versions with our tags
    expires = keep.expires or vault.target.secret_expiry(keep.created)
    copy = vault.add(vault.read_value(keep.version), keep.rotation_id, keep.key_name, expires)
    log.warning("%s: kept key stored again as version %s before revoking newer versions", vault.name, copy.version)
    return copy, vault.list()


def revoke_old_keys(request: ActivityRequest) -> dict[str, Any]:
    """`{"rotationId"?, "targetId", "fingerprint", "keepKeyName", "keepVersion", "revokeKeyNames",
    "revokeVersions", "sweep"?, "verify"?}`
    (null lists: emergency; `sweep`: the named ones and every other of the family) -> `{"deletedKeys",
    "disabledVersions"}` (Revoked): the names now gone from the target and the versions now disabled
    (already-done ones included for explicit lists, so a re-run reports the same). It publishes nothing: the
    orchestrator announces OldKeyRevoked with those lists.

    `verify` (a target with a probe): the old values, read from the versions about to be disabled, are
    presented to the target once the keys are deleted (activities/revocation.py). Refused: as above, plus
    `"refused": true`. Still accepted: nothing is disabled or published; `pendingVersions` (left enabled),
    `stillAccepted` (key names) and `"refused": false` go back for the orchestrator's later rounds."""
    target = target_for(request)
    keep_name, keep_version = request["keepKeyName"], request["keepVersion"]
    names, version_ids = request.get("revokeKeyNames"), request.get("revokeVersions")
    sweep = bool(request.get("sweep"))
    vault = SecretVersions(target)
    versions = vault.list()
    keep = secret_versions.find(secret_versions.ours(versions), keep_version)
    if keep is None or not keep.enabled:
        # Disabling the others would leave consumers no enabled version at all (I2).
        raise ValueError(f"keepVersion: {keep_version} is not an enabled version of {target.id}'s secret")
    kept_key = (keep.rotation_id, keep.key_name)
    if names is None:  # an emergency spares nothing: see _kept_as_newest
        keep, versions = _kept_as_newest(vault, versions, keep)
    newer = _newer_than_kept(versions, keep)
    if newer:
        log.warning(
            "%s: versions %s are newer than the kept %s: left, with their keys, for the next rotation",
            target.id,
            [v.version for v in newer],
            keep_version,
        )
    spared = {v.key_name.lower() for v in newer if v.key_name}

    deleted: list[str] = []
    listed: dict[str, SecretValue] = {}  # values of the keys about to go, read once (kept in this process)
    if not target.is_master_key:  # the master key is renewed in place: nothing old left on the target
        store = FunctionKeyStore(target)
        doomed = _keys_to_delete(target, store, keep_name, names, sweep, spared)
        if request.get("verify"):
            listed = {n: v for n, v in store.list_keys().items() if n.lower() in {d.lower() for d in doomed}}
        for name in doomed:
            if store.find(name) is not None:  # listed just before: an absent name costs no call
                store.delete(name)
            deleted.append(name)

    retiring = [
        version
        for version in plan_version_disables(target, versions, keep, version_ids, sweep)
        if (version.rotation_id, version.key_name) != kept_key  # the announced version and its copy hold the kept key
    ]
    verdict = None
    if request.get("verify") and target.probe is not None:
        # Read while still enabled (a disabled version cannot be read), probe once the keys are deleted.
        # No value known (no version of ours held the old key): nothing to verify, `refused` stays absent.
        values = revocation.read_values(vault, retiring)
        versioned = {name.lower() for name, _ in values}
        # Keys with no version of ours (an adopted base key, leftovers): their values came from the target's
        # listing before the delete, so this round is the only one that can present them.
        unversioned = [(n, v) for n, v in listed.items() if n.lower() not in versioned]
        verdict = revocation.probe_round(target, values + unversioned) if values or unversioned else None
    if verdict is not None and not verdict.refused:
        log.info(
            "revoked for %s (keeping %s): keys %s deleted, still accepted: %s; versions %s left enabled until refused",
            target.id,
            keep_name,
            deleted,
            list(verdict.still_accepted),
            [v.version for v in retiring],
        )
        pending = [v.version for v in retiring if v.enabled]
        already = [v.version for v in retiring if not v.enabled]
        once = {n.lower() for n, _ in unversioned}
        return Revoked(
            deleted_keys=tuple(deleted),
            disabled_versions=tuple(already),
            pending_versions=tuple(pending),
            still_accepted=verdict.still_accepted,
            # Still accepted, and no Key Vault version holds the value to present it again later.
            unverifiable=tuple(n for n in verdict.still_accepted if n.lower() in once),
            refused=False,
        ).to_json()
    disabled = revocation.disable_all(vault, retiring)
    log.info(
        "revoked for %s (keeping %s, %s): keys %s, versions %s", target.id, keep_name, keep_version, deleted, disabled
    )
    return Revoked(tuple(deleted), tuple(disabled), refused=True if verdict is not None else None).to_json()


# -- compensate ------------------------------------------------------------------------------------


def compensate_rotation(request: ActivityRequest) -> dict[str, Any]:
    """`{"rotationId", "targetId", "fingerprint", "keyName", "version", "previousVersion"}` -> `{"disabledVersion",
    "restoredVersion", "deletedKey"}`. Undoes a rotation that failed before consumers were told: the previous
    version becomes current again, then every version this rotation stored is disabled (also when `version`
    is null: provision may have stored one before failing), then the new key is deleted.

    The master key cannot be undone (the renewal already replaced the old value), so for a master-key
    target this changes nothing and says so in the log."""
    rotation_id = request["rotationId"]
    naming.parse_rotation_id(rotation_id)
    target = target_for(request)
    key_name = derived_key_name(target, rotation_id, request.get("keyName"))
    if target.is_master_key:
        log.warning("rotation %s renewed the master key of %s in place: nothing to compensate", rotation_id, target.id)
        return {"disabledVersion": None, "restoredVersion": None, "deletedKey": False}

    vault = SecretVersions(target)
    versions = vault.list()
    mine = secret_versions.ours(versions)
    new_versions = secret_versions.of_rotation(mine, rotation_id)
    requested = request.get("version")
    if requested and secret_versions.find(new_versions, requested) is None:
        raise ValueError(f"version: {requested} was not stored by rotation {rotation_id}")
    restored = _restore_previous(target, vault, mine, rotation_id, request.get("previousVersion"), bool(new_versions))
    for version in new_versions:  # only now: until the previous key is newest again, the new one stays served
        vault.ensure_stage(version, "revoked", disable=True)
    disabled = requested or (new_versions[-1].version if new_versions else None)
    deleted = FunctionKeyStore(target).delete(key_name)
    log.info(
        "compensated %s on %s: version %s disabled, %s current again, key %s %s",
        rotation_id,
        target.id,
        disabled,
        restored,
        key_name,
        "deleted" if deleted else "already gone",
    )
    return {"disabledVersion": disabled, "restoredVersion": restored, "deletedKey": deleted}


def _restore_previous(
    target: Target,
    vault: SecretVersions,
    mine: list[Version],
    rotation_id: str,
    previous_id: str | None,
    superseded: bool,
) -> str | None:
    """Make the previous key current again. Key Vault's "latest" is the newest version even when it is
    disabled (reading it then fails with 403 SecretDisabled), so re-tagging the previous version is not
    enough once this rotation stored a newer one: its value is stored again as the newest version and
    the superseded original is disabled (`superseded`: this rotation stored a version). Without an id
    (provision failed before reporting it): the version consumers used before, even when provision died
    before re-tagging it (found by review: the new version was disabled as "latest" and nothing restored).
    A disabled version is never re-enabled: its key may be gone."""
    others = [v for v in mine if v.rotation_id != rotation_id]
    if previous_id:
        previous = secret_versions.find(others, previous_id)
        if previous is None:
            raise ValueError(f"previousVersion: {previous_id} is not a version this product wrote for {target.id}")
    elif superseded:  # this rotation stored a version: whatever consumers used before must be newest again
        previous = previous_version(mine, rotation_id)  # still stage=current when provision died before re-tagging
    else:
        enabled = [v for v in others if v.enabled]
        previous = enabled[-1] if enabled and enabled[-1].stage == "previous" else None
    if previous is None:
        return None
    copies = [
        v for v in others if v.rotation_id == previous.rotation_id and v.version != previous.version and v.enabled
    ]
    if copies:
        restored = copies[-1]  # a re-run: the copy was stored before
    elif not previous.enabled:
        return None
    elif not superseded:
        vault.ensure_stage(previous, "current")
        return previous.version
    else:
        assert previous.rotation_id and previous.key_name
        expires = previous.expires or target.secret_expiry(previous.created)
        restored = vault.add(vault.read_value(previous.version), previous.rotation_id, previous.key_name, expires)
    vault.ensure_stage(previous, "previous", disable=True)
    return restored.version
