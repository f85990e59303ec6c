"""What a rotation of a target would do now, without doing it: the API's dry run (GET /api/targets/{t}/plan).

The verdicts come from the code the rotation itself runs, never from a copy of its rules: `due_targets.assess`
(is it due, and why), `key_plan.previous_version` (which key the new one replaces), `naming.key_name` (the
name it would create) and `key_plan.plan_key_deletions` / `key_plan.plan_version_disables` (what the revoke
step deletes and disables, scheduled and emergency alike). `read_state` makes only reads: the Key Vault
versions' properties (no value) and one ARM list of the scope's keys, whose values stay inside
the credential store and are dropped here — a plan holds key names and version ids, never a key value (I1).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from activities import due_targets
from activities.credential_stores import credential_store_for
from activities.secret_versions import SecretVersions, Version
from rotation import key_plan, naming
from rotation.durations import format_duration, format_timestamp
from rotation.policy import Target
from rotation.redaction import safe_error_message

MODES: tuple[naming.Mode, ...] = ("scheduled", "on-demand", "emergency")


@dataclass(frozen=True)
class Latest:
    """What the target's latest rotation instance says (read by the caller from the Durable status)."""

    rotation_id: str | None = None
    running: bool = False
    stage: str | None = None
    outcome: str | None = None
    stuck: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class State:
    """The reads a plan is made of; an unreadable service leaves its part None and says why."""

    versions: list[Version] | None
    key_names: list[str] | None
    errors: list[str]


def read_state(target: Target, vault_client: Any = None, web_client: Any = None) -> State:
    """Key Vault versions (properties only) and the names of the scope's keys on the target (one ARM list)."""
    errors: list[str] = []
    versions: list[Version] | None = None
    names: list[str] | None = None
    try:
        versions = SecretVersions(target, vault_client).list()
    except Exception as exc:
        errors.append(f"Key Vault read failed: {safe_error_message(exc)}")
    try:
        names = credential_store_for(target, web_client).list_names()
    except Exception as exc:
        errors.append(f"ARM read failed: {safe_error_message(exc)}")
    return State(versions, names, errors)


def read_states(targets: list[Target]) -> list[State]:
    """read_state for many targets, MAX_PARALLEL_READS at a time (as the scheduler reads them); the
    clients are built first, one per vault / subscription and budget (the factory is not meant for threads)."""
    from activities import clients

    vaults: dict[tuple[str, Any], Any] = {}
    webs: dict[tuple[str, Any], Any] = {}
    pairs = []
    for target in targets:
        vault_key = (target.key_vault.vault_url, target.calls)
        web_key = (target.function_app.subscription_id, target.calls)
        if vault_key not in vaults:
            vaults[vault_key] = clients.secret_client(target.key_vault.vault_url, budget=target.calls)
        if web_key not in webs:
            webs[web_key] = clients.web_client(target.function_app.subscription_id, budget=target.calls)
        pairs.append((target, vaults[vault_key], webs[web_key]))
    with ThreadPoolExecutor(max_workers=due_targets.MAX_PARALLEL_READS) as pool:
        return list(pool.map(lambda p: read_state(*p), pairs))


def _version_view(version: Version) -> dict[str, Any]:
    return {
        "version": version.version,
        "secretId": version.secret_id,
        "keyName": version.key_name,
        "rotationId": version.rotation_id,
        "stage": version.stage,
        "createdAt": format_timestamp(version.created),
        "expiresAt": format_timestamp(version.expires) if version.expires else None,
    }


def _consumers(target: Target, latest: Latest) -> list[dict[str, Any]]:
    """Each consumer, and whether it acknowledged (or was seen reading the new version in) the latest rotation."""
    acked = {str((s.get("actor") or {}).get("objectId", "")).lower() for s in latest.steps if s.get("step") == "ack"}
    read = {str(s.get("detail", "")) for s in latest.steps if s.get("step") == "adoption" and s.get("status") == "done"}
    out = []
    for consumer in target.consumers:
        if latest.rotation_id is None:
            answered: bool | None = None
        else:
            answered = consumer.object_id in acked or f"{consumer.name} read the new version" in read
        out.append(
            {
                "name": consumer.name,
                "objectId": consumer.object_id,
                "lastRotationId": latest.rotation_id,
                "acknowledgedLast": answered,
            }
        )
    return out


def _verdict(
    target: Target, mode: naming.Mode, versions: list[Version] | None, latest: Latest, now: datetime
) -> dict[str, Any]:
    """Would the rotation start, and why (the scheduler's rules for `scheduled`, the API's for the others)."""
    if latest.running:
        if mode == "emergency":
            return {"starts": True, "due": None, "why": f"supersedes the running rotation {latest.rotation_id}"}
        return {"starts": False, "due": None, "why": f"rotation {latest.rotation_id} is running ({latest.stage})"}
    if not target.enabled and mode != "emergency":
        return {"starts": False, "due": None, "why": "disabled in the policy"}
    if target.is_master_key and mode != "emergency":
        return {"starts": False, "due": None, "why": "master key: emergency rotation only"}
    if mode != "scheduled":
        return {"starts": True, "due": None, "why": f"{mode} rotation on request"}
    if latest.stuck:
        return {"starts": True, "due": True, "why": f"stuck rotation {latest.rotation_id} is abandoned and replaced"}
    if versions is None:
        return {"starts": False, "due": None, "why": "Key Vault unreadable: the tick skips it and tries again"}
    verdict = due_targets.assess(target, versions, now)
    if verdict["due"]:
        return {"starts": True, "due": True, "why": verdict["reason"]}
    return {"starts": False, "due": False, "why": "not due", "nextDue": verdict["nextDue"]}


def compose(
    target: Target, mode: naming.Mode, state: State, latest: Latest, now: datetime, overlap: timedelta | None = None
) -> dict[str, Any]:
    """The plan (pure): what a `mode` rotation started at `now` would create, delete, disable and wait for."""
    rotation_id = naming.rotation_id(target.id, mode, now)
    emergency = mode == "emergency"
    new_key = naming.key_name(target.base_key_name, rotation_id)
    versions = state.versions
    current = key_plan.newest_enabled(versions) if versions is not None else None
    previous = key_plan.previous_version(versions, rotation_id) if versions is not None else None
    # The revoke step's arguments, as orchestrations/revocation.py passes them.
    names: list[str] | None
    wanted: list[str] | None
    if emergency:
        names, wanted = None, None
    elif target.is_master_key:
        names, wanted = [], None
    else:
        names = [previous.key_name] if previous and previous.key_name else []
        wanted = [previous.version] if previous else []
    deletes: list[str] | None = None
    if state.key_names is not None and not target.is_master_key:
        base = target.base_key_name
        deletes = key_plan.plan_key_deletions(base, state.key_names, new_key, names, sweep=not emergency)
    elif target.is_master_key:
        deletes = []
    disables = None
    if versions is not None:
        disables = [
            _version_view(v) for v in key_plan.plan_version_disables(target.id, versions, None, wanted, not emergency)
        ]

    if target.is_master_key:
        wait = timedelta(0)
    elif emergency:
        wait = min(overlap or timedelta(0), target.emergency_max_overlap)
    else:
        wait = target.overlap
    gate = not emergency and not target.is_master_key
    when = (
        "at once, after the new key is announced"
        if wait == timedelta(0)
        else f"after the overlap ({format_duration(wait)})"
    )
    if gate:
        when += " and the failure gate"
    consumers = _consumers(target, latest)
    warnings = list(state.errors)
    if target.probe is None:
        warnings.append("no probe: the new key is not tried against the app before it is announced")
    if not target.consumers:
        warnings.append("no consumers registered: nobody acknowledges, the overlap always runs to its end")
    if latest.running:
        warnings.append(f"rotation {latest.rotation_id} is in flight (stage {latest.stage})")
        if latest.stage == "held":
            warnings.append(f"rotation {latest.rotation_id} is held: it waits for an approver")
    if latest.stuck:
        warnings.append(f"rotation {latest.rotation_id} stopped mid-way (stuck): the next rotation abandons it")
    if target.is_master_key:
        warnings.append("master key: renewed in place, every caller holding it is refused at once")
    if not target.enabled:
        warnings.append("target disabled in the policy")
    app = target.function_app
    return {
        "targetId": target.id,
        "mode": mode,
        "at": format_timestamp(now),
        **_verdict(target, mode, versions, latest, now),
        "rotationId": rotation_id,
        "newKeyName": new_key,
        "current": _version_view(current) if current else None,
        "functionApp": {
            "resourceId": app.resource_id,
            "slot": app.slot or "production",
            "keyScope": {"kind": target.key_scope.kind, "function": target.key_scope.function},
        },
        "deleteKeys": deletes,
        "disableVersions": disables,
        "revokedWhen": when,
        "overlap": format_duration(wait),
        "gate": {
            "applies": gate,
            "signal": target.monitoring.signal if gate else None,
            "threshold": target.monitoring.threshold.to_json() if gate else None,
            "holdDeadline": format_duration(target.hold.deadline) if gate else None,
            "holdDefault": target.hold.default_action if gate else None,
        },
        "consumers": consumers,
        "blastRadius": {
            "keysDeleted": len(deletes) if deletes is not None else None,
            "versionsDisabled": len(disables) if disables is not None else None,
            "consumersToMove": len(consumers),
            "when": when,
        },
        "inFlight": {"rotationId": latest.rotation_id, "stage": latest.stage} if latest.running else None,
        "warnings": warnings,
    }
