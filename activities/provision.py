"""Activity `provision_new_key`: a new key on the target, accepted by it, stored as Key Vault's current version.

Order (invariant I2 — the newest enabled version is always a key the target accepts):
1. list the scope's keys (ARM); list the secret's versions (Key Vault, properties only);
2. with a probe, read the app's host names (ARM, activities/site_hosts.py) — before anything is created,
   so a probe destination that is not the app's own host stops the step with nothing changed;
   create the key name without a value if it is absent, and read the generated value back (ARM);
3. probe the target with it until accepted — host instances cache keys, so a fresh key is refused for a
   while. Never accepted: return accepted=false and write nothing to Key Vault (DESIGN stores first and
   verifies after; storing a key the target refuses would hand consumers a dead key);
4. store it as a new version tagged stage=current (or reuse the version this rotation already stored);
5. re-tag the previous current version stage=previous.

A re-run after a crash at any point converges: the key name derives from the rotation id (an existing
key is read, not recreated), and a version tagged with the rotation id is reused — it was only written
after the target accepted the key, so the probe is skipped. Cost per key: 3 ARM calls (listkeys, PUT,
listkeys), plus the Site read when the target has a probe (cached per worker for verify and drift), and
3 Key Vault calls (list, set, update); the master key adds one Key Vault read on a re-run.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from activities import probe as probing
from activities import secret_versions, site_hosts
from activities.function_keys import FunctionKeyStore
from activities.secret_versions import SecretVersions, Version
from activities.targets import TargetRefused, target_for
from rotation import naming
from rotation.contracts import ActivityRequest
from rotation.messages import Provisioned, ProvisionRequest
from rotation.policy import MASTER_KEY_NAME, Target
from rotation.redaction import SafeError

log = logging.getLogger("keyrotation.activities.provision")


def derived_key_name(target: Target, rotation_id: str, key_name: str | None) -> str:
    """The key name this rotation owns: naming.key_name(base, rotation id). A different name is refused,
    so a re-run always finds the same key and compensation never deletes someone else's."""
    expected = naming.key_name(target.base_key_name, rotation_id)
    if key_name is not None and key_name.lower() != expected.lower():
        raise ValueError(f"keyName: expected {expected} (derived from rotation {rotation_id}), got {key_name!r}")
    return expected


def previous_version(versions: list[Version], rotation_id: str) -> Version | None:
    """The version consumers used before this rotation: the newest enabled one of ours from another
    rotation that is not revoked (stage current before the re-tag, previous after it)."""
    candidates = [
        v for v in secret_versions.ours(versions) if v.enabled and v.rotation_id != rotation_id and v.stage != "revoked"
    ]
    return candidates[-1] if candidates else None


def provision_new_key(request: ActivityRequest) -> dict[str, Any]:
    """ProvisionRequest -> Provisioned: names, version ids, accepted, probeAttempts. Never a value; it
    publishes nothing (the orchestrator announces)."""
    rotation_id = ProvisionRequest.from_json(request).rotation_id
    target = target_for(request)
    if target.is_master_key and naming.parse_rotation_id(rotation_id).mode != "emergency":
        raise TargetRefused(f"target {target.id}: the master key is renewed only by an emergency rotation")
    key_name = derived_key_name(target, rotation_id, request.get("keyName"))
    store = FunctionKeyStore(target)
    vault = SecretVersions(target)

    keys = store.list_keys()
    versions = vault.list()
    _refuse_replay(target, rotation_id, versions)
    previous = previous_version(versions, rotation_id)
    mine = [v for v in secret_versions.of_rotation(versions, rotation_id) if v.enabled]

    if target.is_master_key:
        stored, attempts, accepted = _provision_master(target, store, vault, rotation_id, mine, keys)
    else:
        stored, attempts, accepted = _provision_key(target, store, vault, rotation_id, key_name, mine)
    if vault.recovered:  # the secret had been soft-deleted: its versions are back, the previous one among them
        versions = vault.list()
        previous = previous_version(versions, rotation_id)
    previous_key_name = _previous_key_name(target, previous, versions, keys)
    if not accepted:
        log.warning("target %s never accepted key %s (%d probes): nothing stored", target.id, key_name, attempts)
        return _result(key_name, None, previous, previous_key_name, accepted=False, attempts=attempts)

    assert stored is not None
    if previous is not None:
        vault.ensure_stage(previous, "previous")
    log.info(
        "provisioned %s for %s: key %s, version %s (previous %s)",
        rotation_id,
        target.id,
        key_name,
        stored.version,
        previous.version if previous else None,
    )
    return _result(key_name, stored, previous, previous_key_name, accepted=True, attempts=attempts)


def _refuse_replay(target: Target, rotation_id: str, versions: list[Version]) -> None:
    """A rotation older than one already stored for this target is a replayed or stale request (a signed
    input copied from an instance's status or a Supersede in the history): it must not create, renew or
    later revoke anything. Nothing has changed when this raises."""
    started = naming.parse_rotation_id(rotation_id).started_at
    newer = sorted(
        v.rotation_id
        for v in versions
        if v.rotation_id
        and naming.is_rotation_id(v.rotation_id)
        and naming.parse_rotation_id(v.rotation_id).started_at > started
    )
    if newer:
        raise TargetRefused(
            f"rotation {rotation_id} is older than rotation {newer[-1]}, already stored for {target.id}: "
            "a replayed or stale request; nothing was changed"
        )


def _provision_key(
    target: Target, store: FunctionKeyStore, vault: SecretVersions, rotation_id: str, key_name: str, mine: list[Version]
) -> tuple[Version | None, int, bool]:
    existing = store.find(key_name)
    if existing is not None and mine:
        return mine[-1], 0, True  # stored after the target accepted it: nothing left but the re-tag
    _check_probe_destination(target)
    if existing is None:
        store.create(key_name)
    value = store.read_value(key_name)
    if value is None:
        raise SafeError(f"key {key_name} is not listed on {target.function_app.resource_id} after it was created")
    outcome = probing.probe_until_accepted(target, value)
    if outcome.unavailable:  # no verdict (down, throttled): the step is retried later, nothing is stored
        raise SafeError(outcome.unavailable)
    if not outcome.accepted:
        return None, outcome.attempts, False
    stored = vault.add(value, rotation_id, key_name, _expiry(target, rotation_id))
    for stale in mine:  # stored for a key that was deleted since (e.g. compensated): never current again
        vault.ensure_stage(stale, "revoked", disable=True)
    return stored, outcome.attempts, True


def _provision_master(
    target: Target,
    store: FunctionKeyStore,
    vault: SecretVersions,
    rotation_id: str,
    mine: list[Version],
    keys: dict[str, Any],
) -> tuple[Version | None, int, bool]:
    """The master key is renewed in place (no overlap). Idempotent by value: when a version tagged with
    this rotation already holds the current master value, the renewal happened and was stored."""
    current = keys.get(MASTER_KEY_NAME)
    if mine and current is not None and vault.read_value(mine[-1].version) == current:
        return mine[-1], 0, True
    _check_probe_destination(target)
    store.renew_master()
    value = store.read_value(MASTER_KEY_NAME)
    if value is None:
        raise SafeError(f"the master key of {target.function_app.resource_id} is not listed after renewal")
    # The old value died with the renewal, so the new one is stored whatever the probe says: Key Vault
    # must hold the only master key there is (I2). A refusal is reported, not rolled back (it can't be).
    outcome = probing.probe_until_accepted(target, value)
    stored = vault.add(value, rotation_id, MASTER_KEY_NAME, _expiry(target, rotation_id))
    for stale in mine:  # holds a master value renewed away since: never current again
        vault.ensure_stage(stale, "revoked", disable=True)
    if not outcome.accepted:
        log.warning("master key of %s renewed and stored, but the probe never accepted it", target.id)
    return stored, outcome.attempts, True


def _check_probe_destination(target: Target) -> None:
    """Refuse (ProbeDestinationRefused) before a key is made when the probe would go anywhere but the app's
    own host names as ARM reports them; the answer is cached, so the probe itself asks ARM no more."""
    if target.probe is not None:
        site_hosts.probe_url(target)


def _expiry(target: Target, rotation_id: str) -> datetime:
    """Next due + overlap, counted from the rotation's start (from its id: reproducible on a re-run)."""
    return target.secret_expiry(naming.parse_rotation_id(rotation_id).started_at)


def _previous_key_name(
    target: Target, previous: Version | None, versions: list[Version], keys: dict[str, Any]
) -> str | None:
    """The key consumers held before: the previous version's key name; on first adoption (no version of
    ours at all) the bare base name when the target has it."""
    if previous is not None:
        return previous.key_name
    if secret_versions.ours(versions):
        return None
    base = target.base_key_name.lower()
    return next((name for name in keys if name.lower() == base), None)


def _result(
    key_name: str,
    stored: Version | None,
    previous: Version | None,
    previous_key_name: str | None,
    *,
    accepted: bool,
    attempts: int,
) -> dict[str, Any]:
    return Provisioned(
        key_name=key_name,
        version=stored.version if stored else None,
        secret_id=stored.secret_id if stored else None,
        previous_version=previous.version if previous else None,
        previous_secret_id=previous.secret_id if previous else None,
        previous_key_name=previous_key_name,
        accepted=accepted,
        probe_attempts=attempts,
    ).to_json()
