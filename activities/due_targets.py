"""Activity `find_due_targets`: which policy targets the scheduler should rotate now, and why.

A target's age is its Key Vault secret's, not the key's on the target: the newest enabled version this
product wrote (found by tags, properties only — no value is read) is the current key. It is due when
there is none, when it was created an interval ago, or when its expiry is within one overlap (the new key
must be announced early enough for the overlap to finish before the old version expires).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from activities import secret_versions
from rotation.contracts import ActivityRequest
from rotation.durations import as_utc, format_timestamp
from rotation.policy import Target, load_policy
from rotation.redaction import safe_error_message
from rotation.scheduling import DueQuery, DueTargets

log = logging.getLogger("keyrotation.activities.due_targets")

# Key Vault reads in flight at once: enough for 1,000 targets in seconds, far below vault throttling
# (Key Vault allows thousands of GETs per 10 seconds per vault).
MAX_PARALLEL_READS = 8


def parse_time(value: object, field: str) -> datetime:
    """An ISO 8601 instant from the orchestrator (UTC when it names no zone)."""
    try:
        if isinstance(value, str):
            return as_utc(datetime.fromisoformat(value))
    except ValueError:
        pass
    raise ValueError(f"{field}: must be an ISO 8601 timestamp, got {value!r}")


def assess(target: Target, versions: list[secret_versions.Version], now: datetime) -> dict[str, Any]:
    """The due/not-due verdict for one target from its versions' properties (pure)."""
    current = secret_versions.newest_enabled(versions)
    entry = {"targetId": target.id, "target": target.to_json()}
    if current is None:
        return {**entry, "due": True, "reason": "no-current-version", "currentVersion": None, "currentKeyName": None}
    interval_due = target.next_due(current.created)
    expiry_due = current.expires - target.overlap if current.expires else None
    found = {"currentVersion": current.version, "currentKeyName": current.key_name}
    if interval_due <= now:
        return {**entry, "due": True, "reason": "interval-elapsed", **found}
    if expiry_due is not None and expiry_due <= now:
        return {**entry, "due": True, "reason": "expires-soon", **found}
    next_due = min(d for d in (interval_due, expiry_due) if d is not None)
    return {"targetId": target.id, "due": False, "nextDue": format_timestamp(next_due)}


def find_due_targets(request: ActivityRequest) -> dict[str, Any]:
    """`DueQuery` -> `DueTargets` (rotation/scheduling.py): targets in policy order; `only`: just these
    target ids, for the scheduler's second read of targets it could not read.

    Disabled and master-key targets are skipped (the master key is emergency-only). A target whose vault
    cannot be read is skipped with the reason and `unreadable: true`, so one target's failure does not
    stop the others; the scheduler reads it again after a pause, and its next tick tries it again."""
    query = DueQuery.from_json(request)
    now = parse_time(request.get("now"), "now")
    policy = [t for t in load_policy() if query.only is None or t.id in query.only]
    due: list[dict[str, Any]] = []
    not_due: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    schedulable: list[Target] = []
    for target in policy:
        if not target.enabled:
            skipped.append({"targetId": target.id, "reason": "disabled"})
        elif target.is_master_key:
            skipped.append({"targetId": target.id, "reason": "master key: emergency rotation only"})
        else:
            schedulable.append(target)

    clients: dict[tuple[str, Any], Any] = {}

    def client_for(target: Target) -> Any:
        from activities import clients as factory

        key = (target.key_vault.vault_url, target.calls)  # the target's call budget, not the built-in one
        if key not in clients:
            clients[key] = factory.secret_client(target.key_vault.vault_url, budget=target.calls)
        return clients[key]

    for target in schedulable:  # clients are built up front: the factory is not meant for threads
        client_for(target)

    def read(target: Target) -> dict[str, Any]:
        try:
            versions = secret_versions.SecretVersions(target, client_for(target)).list()
        except Exception as exc:
            return {"targetId": target.id, "error": safe_error_message(exc)}
        return assess(target, versions, now)

    with ThreadPoolExecutor(max_workers=MAX_PARALLEL_READS) as pool:
        results = list(pool.map(read, schedulable))
    for result in results:
        if "error" in result:
            log.warning("target %s skipped: %s", result["targetId"], result["error"])
            reason = f"Key Vault read failed: {result['error']}"
            skipped.append({"targetId": result["targetId"], "reason": reason, "unreadable": True})
        elif result.pop("due"):
            due.append(result)
        else:
            not_due.append(result)
    summary = f"{len(due)} due, {len(not_due)} not due, {len(skipped)} skipped"
    log.info("due targets at %s: %s", format_timestamp(now), summary)
    return DueTargets(tuple(due), tuple(not_due), tuple(skipped)).to_json()
