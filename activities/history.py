"""A target's past rotations (GET /api/targets/{t}/rotations), from the one record that outlives them.

The Durable instance `rotation-<target>` keeps only the latest rotation (each start replaces the record,
on Azure Storage as on devhost), so it cannot be the history. The target's Key Vault secret can: every
rotation that stored a key left a version tagged with its rotation id, key name and stage
(rotation/naming.py), and versions are kept (disabled, never deleted) on Azure as locally. So the history
is the versions' tags, newest rotation first, with the latest rotation's Durable status laid over its
entry (outcome, who and why, timestamps). What tags cannot say is said as unknown (null), never guessed:
an older rotation's actor and reason live in the audit log (docs/cli.md). A rotation that stored no
version (refused, or failed before provisioning) appears only while it is the latest.
"""

from __future__ import annotations

from typing import Any

from activities import secret_versions
from activities.secret_versions import Version
from rotation import naming
from rotation.durations import format_timestamp
from rotation.policy import Target

MAX_LIMIT = 100
DEFAULT_LIMIT = 20


def _derived(target: Target, rotation_id: str, mine: list[Version], own: list[Version], after: str | None) -> str:
    """How an older rotation ended, as far as the versions say: `rolled-back` when a version of an
    earlier rotation was stored after its own (compensation stores the previous key again);
    `superseded` when the next rotation is an emergency that began before this one's overlap could end
    (only an emergency starts while a rotation runs); else `completed` (its key was announced, and no
    other rotation could start until it ended)."""
    started = naming.parse_rotation_id(rotation_id).started_at
    last = max(v.created for v in own)
    later_copies = [v for v in mine if v.rotation_id != rotation_id and v.created > last]
    if any(naming.parse_rotation_id(str(v.rotation_id)).started_at < started for v in later_copies):
        return "rolled-back"
    if after is not None:
        following = naming.parse_rotation_id(after)
        if following.mode == "emergency" and following.started_at < started + target.overlap:
            return "superseded"
    return "completed"


def entries(target: Target, versions: list[Version], latest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every rotation on record, newest first (pure). `latest`: the rotation view of the target's instance."""
    mine = [v for v in secret_versions.ours(versions) if v.rotation_id and naming.is_rotation_id(v.rotation_id)]
    current = secret_versions.newest_enabled(mine)
    by_id: dict[str, list[Version]] = {}
    for v in mine:
        by_id.setdefault(str(v.rotation_id), []).append(v)
    latest_id = latest.get("rotationId") if latest else None
    ids = set(by_id) | ({latest_id} if isinstance(latest_id, str) and naming.is_rotation_id(latest_id) else set())
    ordered = sorted(ids, key=lambda r: (naming.parse_rotation_id(r).started_at, r))
    following = {r: ordered[i + 1] if i + 1 < len(ordered) else None for i, r in enumerate(ordered)}
    out = []
    for rid in ids:
        parts = naming.parse_rotation_id(rid)
        own = by_id.get(rid, [])
        entry: dict[str, Any] = {
            "rotationId": rid,
            "mode": parts.mode,
            "startedAt": format_timestamp(parts.started_at),
            "outcome": _derived(target, rid, mine, own, following[rid]) if own else None,
            "source": "key-vault",
            "keyName": own[-1].key_name if own else None,
            "keyInUse": bool(current and current.rotation_id == rid),
            "versions": [
                {"version": v.version, "stage": v.stage, "enabled": v.enabled, "createdAt": format_timestamp(v.created)}
                for v in own
            ],
            "trigger": None,  # who and why: in the Durable status of the latest only
            "endedAt": None,
        }
        if latest and rid == latest_id:
            entry.update(
                outcome=latest.get("outcome") or "running",
                stage=latest.get("stage"),
                source="durable-status",
                trigger=latest.get("trigger"),
                keyName=latest.get("keyName") or entry["keyName"],
                endedAt=latest.get("lastUpdatedAt") if latest.get("outcome") else None,
            )
        out.append(entry)
    out.sort(key=lambda e: (e["startedAt"], e["rotationId"]), reverse=True)
    return out


def page(items: list[dict[str, Any]], limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The `limit` entries after `cursor` (the last rotation id of the previous page), and the next cursor."""
    start = 0
    if cursor is not None:
        start = next((i + 1 for i, e in enumerate(items) if e["rotationId"] == cursor), len(items))
    chunk = items[start : start + limit]
    more = start + limit < len(items)
    return chunk, (chunk[-1]["rotationId"] if more and chunk else None)
