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

The choices are rotation/key_plan.py's (plan_revoke, emergency_keep, plan_compensation: pure, unit-tested
over every small state); this module reads the state, asks for the plan and carries it out in that order.
"""

from __future__ import annotations

import logging
from typing import Any

from activities import revocation
from activities.credential_stores import credential_store_for
from activities.secret_versions import SecretVersions, Version
from activities.targets import target_for
from rotation import key_plan, naming
from rotation.contracts import ActivityRequest
from rotation.credential_store import CredentialStore, SecretValue
from rotation.key_plan import CompensationPlan, RevokePlan
from rotation.messages import Revoked
from rotation.policy import Target

log = logging.getLogger("keyrotation.activities.revoke")


# -- revoke ----------------------------------------------------------------------------------------


def kept_as_newest(vault: SecretVersions, versions: list[Version], keep: Version) -> tuple[Version, list[Version]]:
    """An emergency spares nothing: a version of ours as new as the kept one or newer (a drift repair that
    raced the emergency, a late write of an abandoned rotation) may hold the leaked key, and Key Vault's
    one-second `created` cannot always say which is "latest" (Key Vault is asked then). So the kept key is
    stored again, as the version written last, before the others are disabled: latest is never left
    disabled (found by review). The rule is key_plan.emergency_keep; a re-run finds that copy (same rotation
    and key name) and no rival left, and writes nothing."""
    planned = key_plan.emergency_keep(versions, keep)
    if not planned.rivals:
        return planned.newest_own, versions
    served = key_plan.served_copy(planned, vault.latest_version())  # one second of resolution: ask Key Vault
    if served is not None:
        return served, versions
    assert keep.rotation_id and keep.key_name  # ours: kept_version() only returns versions with our tags
    expires = keep.expires or vault.target.secret_expiry(keep.created)
    copy = vault.add(vault.read_value(keep.version), keep.rotation_id, keep.key_name, expires)
    log.warning("%s: kept key stored again as version %s before revoking newer versions", vault.name, copy.version)
    return copy, vault.list()


def _plan_revoke(
    target: Target, store: CredentialStore, vault: SecretVersions, request: ActivityRequest
) -> tuple[RevokePlan, list[str]]:
    """Read the state and plan (key_plan.plan_revoke); also the target's key names, as listed before any
    delete."""
    names, version_ids = request.get("revokeKeyNames"), request.get("revokeVersions")
    versions = vault.list()
    keep = key_plan.kept_version(versions, request["keepVersion"], target.id)
    if names is None:  # an emergency spares nothing: see kept_as_newest
        keep, versions = kept_as_newest(vault, versions, keep)
    present = store.list_names() if store.supports_overlap else None  # renewed in place: nothing old is left
    plan = key_plan.plan_revoke(
        target.base_key_name,
        target.id,
        present,
        versions,
        keep,
        request["keepKeyName"],
        names,
        version_ids,
        bool(request.get("sweep")),
    )
    if plan.spared:
        log.warning(
            "%s: versions %s are newer than the kept %s: left, with their keys, for the next rotation",
            target.id,
            [v.version for v in plan.spared],
            request["keepVersion"],
        )
    return plan, present or []


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
    store = credential_store_for(target)
    vault = SecretVersions(target)
    plan, present = _plan_revoke(target, store, vault, request)

    doomed = {d.name.lower() for d in plan.delete_keys}
    listed: dict[str, SecretValue] = {}  # values of the keys about to go, read once (kept in this process)
    if request.get("verify"):
        listed = {n: v for n in present if n.lower() in doomed and (v := store.read_value(n)) is not None}
    deleted = delete_planned(store, plan)

    retiring = list(plan.disable_versions)
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
    if not key_plan.settle_revocation(verdict.refused if verdict else None, final=False):
        assert verdict is not None
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


def delete_planned(store: CredentialStore, plan: RevokePlan) -> list[str]:
    """Delete the planned keys on the target (before any version is disabled: I2 order); the names now
    gone, in plan order, including those already absent (listed just before: they cost no call)."""
    for deletion in plan.delete_keys:
        if deletion.call:
            store.delete(deletion.name)
    return [d.name for d in plan.delete_keys]


# -- compensate ------------------------------------------------------------------------------------


def compensate_rotation(request: ActivityRequest) -> dict[str, Any]:
    """`{"rotationId", "targetId", "fingerprint", "keyName", "version", "previousVersion"}` -> `{"disabledVersion",
    "restoredVersion", "deletedKey"}`. Undoes a rotation that failed before consumers were told: the previous
    version becomes current again, then every version this rotation stored is disabled (also when `version`
    is null: provision may have stored one before failing), then the new key is deleted (key_plan.
    plan_compensation).

    The master key cannot be undone (the renewal already replaced the old value), so for a master-key
    target this changes nothing and says so in the log."""
    rotation_id = request["rotationId"]
    naming.parse_rotation_id(rotation_id)
    target = target_for(request)
    store = credential_store_for(target)
    if not store.supports_overlap:
        key_plan.derived_key_name(target.base_key_name, rotation_id, request.get("keyName"))  # still refused
        log.warning("rotation %s renewed the master key of %s in place: nothing to compensate", rotation_id, target.id)
        return {"disabledVersion": None, "restoredVersion": None, "deletedKey": False}

    vault = SecretVersions(target)
    plan = key_plan.plan_compensation(
        target.base_key_name,
        target.id,
        vault.list(),
        rotation_id,
        request.get("keyName"),
        request.get("version"),
        request.get("previousVersion"),
    )
    restored, deleted = undo(target, store, vault, plan)
    log.info(
        "compensated %s on %s: version %s disabled, %s current again, key %s %s",
        rotation_id,
        target.id,
        plan.reported_disabled,
        restored,
        plan.delete_key,
        "deleted" if deleted else "already gone",
    )
    return {"disabledVersion": plan.reported_disabled, "restoredVersion": restored, "deletedKey": deleted}


def undo(
    target: Target, store: CredentialStore, vault: SecretVersions, plan: CompensationPlan
) -> tuple[str | None, bool]:
    """Carry out a compensation plan in the I2 order: restore the previous key as current, only then disable
    this rotation's versions (until the previous key is newest again, the new one stays served), and delete
    the new key last. The restored version id, and whether this call deleted the key."""
    restored = _restore_previous(target, vault, plan)
    for version in plan.disable_versions:
        vault.ensure_stage(version, "revoked", disable=True)
    return restored, store.delete(plan.delete_key)


def _restore_previous(target: Target, vault: SecretVersions, plan: CompensationPlan) -> str | None:
    """Make the previous key current again, as planned (key_plan.plan_restore). Key Vault's "latest" is the
    newest version even when it is disabled (reading it then fails with 403 SecretDisabled), so re-tagging
    the previous version is not enough once this rotation stored a newer one: its value is stored again as
    the newest version and the superseded original is disabled."""
    restore = plan.restore
    previous = restore.previous
    if restore.action == "none" or previous is None:
        return None
    if restore.action == "retag":
        vault.ensure_stage(previous, "current")
        return previous.version
    if restore.action == "reuse-copy":
        assert restore.copy is not None
        restored = restore.copy
    else:
        assert previous.rotation_id and previous.key_name
        expires = previous.expires or target.secret_expiry(previous.created)
        restored = vault.add(vault.read_value(previous.version), previous.rotation_id, previous.key_name, expires)
    vault.ensure_stage(previous, "previous", disable=True)
    return restored.version
