"""Activity `check_drift`: does Key Vault's current version still hold a key the target accepts?

Keys change behind the rotation's back: a host that cannot decrypt its secrets silently regenerates
them, an operator renews or deletes one by hand. Consumers then read a dead key from Key Vault
(invariant I2 broken with no rotation running). Once per scheduler tick this compares, for every
enabled target, the newest enabled version of ours (its value read inside this activity only) with the
target's listkeys for that version's key name:

- `in-sync`: nothing is written.
- `restored`: the key name is on the target with another value. The target's value (probed first when
  the target has a probe: host caches lag a renewal) is stored as a new version with the drifted
  version's rotation id, key name and expiry (so the schedule does not move) plus tags `repairOf` and
  `driftCheck`; then the drifted version is disabled (stage revoked). Store first, disable second (I2).
  A crash between the two is finished by the next run, which finds the repair by its `repairOf` tag.
- `missing`: the key name is gone, and its value with it: nothing to restore. The scheduler rotates now.
- `unreadable`: ARM or Key Vault failed, or the target refused its own listed value: reported, nothing
  written, never guessed. The next tick checks again.

Never touched (I3, the rotation owns the target): targets the scheduler says have a rotation running,
and targets whose versions show one between provision and revoke (an enabled `previous` version; this
also catches a rotation that started after the tick looked). Versions are listed again just before a
repair is written, so a rotation that stored a version meanwhile wins. Disabled targets are not
checked. The master key is checked and restored like any key (restoring writes only Key Vault), but
drift never rotates it: that renews it in place, which is for emergencies only.

The verdicts are rotation/key_plan.py's (drift_subject, plan_drift, still_current); this module reads,
compares values inside the activity and writes what the plan says.

Each finding becomes a `KeyRotation.DriftDetected` event, returned as `events` (no value in them, I1)
for the scheduler's own publish step: an activity that writes a secret does not also publish (one side
effect per activity), so a failed publish never re-runs a repair. Cost per target in sync:
one version listing and one value read (Key Vault), one listkeys (ARM).
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from activities.credential_stores import credential_store_for
from activities.due_targets import MAX_PARALLEL_READS, parse_time
from activities.secret_versions import SecretVersions, Version
from rotation import events, key_plan, naming
from rotation.contracts import ActivityRequest
from rotation.credential_store import CredentialStore, SecretValue
from rotation.key_plan import TAG_DRIFT_CHECK, TAG_REPAIR_OF, DriftOutcome
from rotation.policy import Target, load_policy
from rotation.redaction import safe_error_message

log = logging.getLogger("keyrotation.activities.drift")

Outcome = DriftOutcome
CHECK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass
class Finding:
    """One target's verdict; `entry()` is what leaves the activity (never a value)."""

    target: Target
    outcome: Outcome
    reason: str | None = None
    current: Version | None = None  # the version compared
    restored: Version | None = None  # the version written by the repair
    extra: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"targetId": self.target.id, "outcome": self.outcome}
        if self.current is not None:
            entry.update(keyName=self.current.key_name, rotationId=self.current.rotation_id)
        if self.restored is not None:
            entry.update(version=self.restored.version, secretId=self.restored.secret_id)
            entry["repairOf"] = self.current.version if self.current else None
        elif self.current is not None:
            entry.update(version=self.current.version, secretId=self.current.secret_id)
        if self.reason:
            entry["reason"] = self.reason
        if self.outcome == "missing":
            entry["target"] = self.target.to_json()  # what the scheduler's rotation input carries
        return {**entry, **self.extra}


class DriftCheck:
    """One target's check and repair as key_plan plans it, with clients built by the caller (shared across
    threads)."""

    def __init__(self, target: Target, store: CredentialStore, vault: SecretVersions, check_id: str) -> None:
        self.target = target
        self.store = store
        self.vault = vault
        self.check_id = check_id

    def run(self) -> Finding:
        try:
            return self._run()
        except Exception as exc:  # ARM, Key Vault or the probe: report, never guess
            return Finding(self.target, "unreadable", safe_error_message(exc))

    def _run(self) -> Finding:
        versions = self.vault.list()
        subject = key_plan.drift_subject(versions)
        current = subject.current
        if current is None:
            return Finding(self.target, subject.outcome, subject.reason)
        listed = self.store.read_value(current.key_name or "")
        matches = listed is not None and self.vault.read_value(current.version) == listed
        plan = key_plan.plan_drift(
            versions, current, listed is not None, matches, renews_in_place=not self.store.supports_overlap
        )
        if plan.store_repair:
            assert listed is not None
            return self._restore(current, listed)
        if plan.disable is not None:  # in sync with a repair whose drifted version a crash left enabled
            self.vault.ensure_stage(plan.disable, "revoked", disable=True)
            return Finding(self.target, plan.outcome, plan.reason, plan.disable, current)
        return Finding(self.target, plan.outcome, plan.reason, plan.current)

    def _restore(self, current: Version, listed: SecretValue) -> Finding:
        """Store the target's value as a new version (tagged repairOf), then disable the drifted one (I2)."""
        from activities import probe as probing

        outcome = probing.probe_until_accepted(self.target, listed)
        if not outcome.accepted:
            detail = f"the target refused its own listed value of {current.key_name} ({outcome.detail})"
            return Finding(self.target, "unreadable", detail, current)
        if not key_plan.still_current(self.vault.list(), current):  # a rotation stored a version since: it wins
            return Finding(self.target, "skipped", "Key Vault changed during the check", current)
        rotation_id, key_name = current.rotation_id or "", current.key_name or ""
        expires = current.expires or self.target.secret_expiry(naming.parse_rotation_id(rotation_id).started_at)
        tags = {TAG_REPAIR_OF: current.version, TAG_DRIFT_CHECK: self.check_id}
        restored = self.vault.add(listed, rotation_id, key_name, expires, extra_tags=tags)
        self.vault.ensure_stage(current, "revoked", disable=True)
        return Finding(self.target, "restored", f"key {key_name} had another value on the target", current, restored)


def drift_event(finding: Finding, check_id: str, now: datetime) -> dict[str, Any] | None:
    """The DriftDetected event of a finding that changed something or needs a rotation; else None."""
    current = finding.current
    if current is None or finding.outcome not in ("restored", "missing"):
        return None
    if finding.outcome == "restored":
        assert finding.restored is not None
        drift: events.DriftKind = "value-mismatch"
        secret_id, previous = finding.restored.secret_id, current.secret_id
        detail = (
            f"key {current.key_name} had another value on the target than version {current.version}: "
            f"the target's value is now version {finding.restored.version}, version {current.version} is disabled"
        )
    else:
        drift, secret_id, previous = "key-missing-on-target", current.secret_id, None
        detail = f"key {current.key_name} of version {current.version} is no longer on the target: a rotation starts"
    return events.drift_detected(
        finding.target.id,
        check_id=check_id,
        drift=drift,
        key_name=current.key_name,
        secret_id=secret_id,
        previous_secret_id=previous,
        rotation_id=current.rotation_id if current.rotation_id and naming.is_rotation_id(current.rotation_id) else None,
        detected_at=now,
        detail=detail,
    )


def _request_fields(request: dict[str, Any]) -> tuple[datetime, str, set[str]]:
    now = parse_time(request.get("now"), "now")
    check_id = request.get("checkId") or f"drift-{now.strftime(naming.TIMESTAMP_FORMAT)}"
    if not isinstance(check_id, str) or not CHECK_ID.match(check_id):
        raise ValueError("checkId: must be 1-128 letters, digits, '.', '_', ':' or '-'")
    in_flight = request.get("inFlight") or []
    if not isinstance(in_flight, list) or not all(isinstance(t, str) for t in in_flight):
        raise ValueError("inFlight: must be a list of target ids")
    return now, check_id, set(in_flight)


def check_drift(request: ActivityRequest) -> dict[str, Any]:
    """`{"now", "checkId"?, "inFlight"?: [targetId]}` -> `{"checkId", "checked", "inSync", "drift": [...],
    "skipped": [...]}` plus `published` or `unpublished` when there was drift. `drift` lists restored,
    missing and unreadable targets (targetId, outcome, keyName, version, secretId, reason); a missing one
    carries its target for the rotation. Never a value."""
    now, check_id, in_flight = _request_fields(request)
    targets = [t for t in load_policy() if t.enabled]
    skipped: list[dict[str, str | None]] = [
        {"targetId": t.id, "reason": "a rotation is running"} for t in targets if t.id in in_flight
    ]
    targets = [t for t in targets if t.id not in in_flight]

    from activities import clients as factory

    # Clients are built up front, one per vault and subscription: the factory is not meant for threads.
    vaults: dict[tuple[str, Any], Any] = {}
    webs: dict[tuple[str, Any], Any] = {}
    for target in targets:  # keyed by the target's call budget too: each call honours its own policy
        url, sub = (target.key_vault.vault_url, target.calls), (target.function_app.subscription_id, target.calls)
        if url not in vaults:
            vaults[url] = factory.secret_client(target.key_vault.vault_url, budget=target.calls)
        if sub not in webs:
            webs[sub] = factory.web_client(target.function_app.subscription_id, budget=target.calls)

    def check(target: Target) -> Finding:
        store = credential_store_for(target, webs[(target.function_app.subscription_id, target.calls)])
        vault = SecretVersions(target, vaults[(target.key_vault.vault_url, target.calls)])
        return DriftCheck(target, store, vault, check_id).run()

    with ThreadPoolExecutor(max_workers=MAX_PARALLEL_READS) as pool:
        findings = list(pool.map(check, targets))

    drift = [f for f in findings if f.outcome in ("restored", "missing", "unreadable")]
    skipped += [{"targetId": f.target.id, "reason": f.reason} for f in findings if f.outcome == "skipped"]
    for finding in drift:
        level = logging.INFO if finding.outcome == "restored" else logging.WARNING
        entry = finding.entry()
        where = f" (key {entry['keyName']}, version {entry['version']})" if entry.get("version") else ""
        log.log(level, "drift check %s: target %s %s: %s%s", check_id, finding.target.id, finding.outcome,
                finding.reason, where)  # fmt: skip
    in_sync = sum(1 for f in findings if f.outcome == "in-sync")
    log.info(
        "drift check %s: %d checked, %d in sync, %d drifted or unreadable, %d skipped",
        check_id,
        len(findings),
        in_sync,
        len(drift),
        len(skipped),
    )
    result = {
        "checkId": check_id,
        "checked": len(findings),
        "inSync": in_sync,
        "drift": [f.entry() for f in drift],
        "skipped": skipped,
    }
    found = [e for e in (drift_event(f, check_id, now) for f in drift) if e is not None]
    return {**result, "events": found} if found else result
