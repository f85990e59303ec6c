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

What to create, reuse and retire is rotation/key_plan.plan_provision (pure); this module carries it out.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from activities import probe as probing
from activities import site_hosts
from activities.credential_stores import credential_store_for
from activities.secret_versions import SecretVersions, Version
from activities.targets import TargetRefused, target_for
from rotation import key_plan, naming
from rotation.contracts import ActivityRequest
from rotation.credential_store import CredentialStore
from rotation.key_plan import ProvisionPlan
from rotation.messages import Provisioned, ProvisionRequest
from rotation.policy import Target
from rotation.redaction import SafeError

log = logging.getLogger("keyrotation.activities.provision")


def provision_new_key(request: ActivityRequest) -> dict[str, Any]:
    """ProvisionRequest -> Provisioned: names, version ids, accepted, probeAttempts. Never a value; it
    publishes nothing (the orchestrator announces)."""
    rotation_id = ProvisionRequest.from_json(request).rotation_id
    target = target_for(request)
    if target.is_master_key and naming.parse_rotation_id(rotation_id).mode != "emergency":
        raise TargetRefused(f"target {target.id}: the master key is renewed only by an emergency rotation")
    store = credential_store_for(target)
    vault = SecretVersions(target)

    names = store.list_names()
    versions = vault.list()
    plan = _plan(target, rotation_id, request.get("keyName"), names, versions, store)
    key_name, previous = plan.key_name, plan.previous
    stored, attempts, accepted = _carry_out(target, store, vault, rotation_id, plan)
    if vault.recovered:  # the secret had been soft-deleted: its versions are back, the previous one among them
        versions = vault.list()
        previous = key_plan.previous_version(versions, rotation_id)
    previous_key_name = key_plan.previous_key_name(target.base_key_name, previous, versions, names)
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


def _plan(
    target: Target,
    rotation_id: str,
    key_name: str | None,
    names: list[str],
    versions: list[Version],
    store: CredentialStore,
) -> ProvisionPlan:
    """key_plan.plan_provision; a rotation older than one already stored is a replayed or stale request (a
    signed input copied from an instance's status or a Supersede in the history) and is refused before
    anything changes."""
    try:
        return key_plan.plan_provision(
            target.base_key_name, rotation_id, key_name, names, versions, renews_in_place=not store.supports_overlap
        )
    except key_plan.StaleRotation as stale:
        raise TargetRefused(
            f"rotation {rotation_id} is older than rotation {stale.newer}, already stored for {target.id}: "
            "a replayed or stale request; nothing was changed"
        ) from None


def _carry_out(
    target: Target, store: CredentialStore, vault: SecretVersions, rotation_id: str, plan: ProvisionPlan
) -> tuple[Version | None, int, bool]:
    """Reuse, or create / renew, probe and store, as planned. Values stay in this function's locals."""
    key_name = plan.key_name
    if plan.reuse is not None and not plan.reuse_needs_value_check:
        return plan.reuse, 0, True  # stored after the target accepted it: nothing left but the re-tag
    if plan.reuse is not None:  # renewed in place before: idempotent by value
        current = store.read_value(key_name)
        if current is not None and vault.read_value(plan.reuse.version) == current:
            return plan.reuse, 0, True
    _check_probe_destination(target)
    if plan.renew:
        store.renew(key_name)
    elif plan.create:
        store.create(key_name)
    value = store.read_value(key_name)
    if value is None:
        raise SafeError(f"key {key_name} is not listed on {target.function_app.resource_id} after it was written")
    outcome = probing.probe_until_accepted(target, value)
    if plan.renew:
        # The old value died with the renewal, so the new one is stored whatever the probe says: Key Vault
        # must hold the only master key there is (I2). A refusal is reported, not rolled back (it can't be).
        if not outcome.accepted:
            log.warning("master key of %s renewed and stored, but the probe never accepted it", target.id)
    elif outcome.unavailable:  # no verdict (down, throttled): the step is retried later, nothing is stored
        raise SafeError(outcome.unavailable)
    elif not outcome.accepted:
        return None, outcome.attempts, False
    stored = vault.add(value, rotation_id, key_name, _expiry(target, rotation_id))
    for stale in plan.retire_after_store:  # its key was deleted or renewed away since: never current again
        vault.ensure_stage(stale, "revoked", disable=True)
    return stored, outcome.attempts, True


def _check_probe_destination(target: Target) -> None:
    """Refuse (ProbeDestinationRefused) before a key is made when the probe would go anywhere but the app's
    own host names as ARM reports them; the answer is cached, so the probe itself asks ARM no more."""
    if target.probe is not None:
        site_hosts.probe_url(target)


def _expiry(target: Target, rotation_id: str) -> datetime:
    """Next due + overlap, counted from the rotation's start (from its id: reproducible on a re-run)."""
    return target.secret_expiry(naming.parse_rotation_id(rotation_id).started_at)


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
