"""Activity `abandon_rotation`: step 0 of a rotation that replaces a stuck one (Failed or Terminated
mid-way, see rotation/stuck.py), so a half-finished rotation never blocks or litters the target.

Before the stuck rotation announced its key, no consumer can hold it: it is undone exactly like a
compensation (its Key Vault versions disabled, the previous version current again, then its key deleted:
the I2 order of compensate_rotation). After the announcement consumers may already use it, so nothing is
touched here: the replacing rotation's revoke deletes every other key of the family once its own overlap
is over. Either way the orchestrator publishes the stuck rotation's RotationFailed with its own announcement
(its own rotation id, so its event id is stable: a re-run or a second replacement publishes the same event).

Idempotent: compensation converges on a re-run, and the event id repeats.
"""

from __future__ import annotations

import logging
from typing import Any

from activities.revoke import compensate_rotation
from activities.secret_versions import SecretVersions
from activities.targets import target_for
from rotation import key_plan, naming
from rotation.contracts import ActivityRequest
from rotation.messages import Abandoned

log = logging.getLogger("keyrotation.activities.abandon")


def _stuck_rotation_id(request: dict[str, Any], target_id: str) -> str:
    replaces = request.get("replaces")
    stuck = replaces.get("rotationId") if isinstance(replaces, dict) else None
    if not isinstance(stuck, str) or not naming.is_rotation_id(stuck):
        raise ValueError("replaces.rotationId: must be a rotation id")
    if naming.parse_rotation_id(stuck).target_id != target_id:
        raise ValueError(f"replaces.rotationId: {stuck} is not a rotation of {target_id}")
    if stuck == request.get("rotationId"):
        raise ValueError("replaces.rotationId: a rotation cannot replace itself")
    return stuck


def abandon_rotation(request: ActivityRequest) -> dict[str, Any]:
    """`{"rotationId", "targetId", "fingerprint", "replaces": {rotationId, announced, version?,
    previousVersion?}}`
    -> Abandoned `{"abandoned", "compensated", "undone", "currentKeyName", "currentVersion"}`: names and
    version ids only. It publishes nothing: the orchestrator sends the stuck rotation's RotationFailed
    (saying `compensated`) with its own announcement; an undo that fails raises (the step is retried)."""
    target = target_for(request)
    stuck = _stuck_rotation_id(request, target.id)
    replaces: dict[str, Any] = request["replaces"]
    undone: dict[str, Any] | None = None
    current_key_name = current_version = None
    if not replaces.get("announced"):
        undone = compensate_rotation(
            {
                "rotationId": stuck,
                "targetId": request.get("targetId"),
                "fingerprint": request.get("fingerprint"),
                "keyName": None,
                "version": replaces.get("version"),
                "previousVersion": replaces.get("previousVersion"),
            }
        )
        current = key_plan.newest_enabled(SecretVersions(target).list())
        if current is not None:
            current_key_name, current_version = current.key_name, current.version
    compensated = bool(undone and any(undone.get(k) for k in ("deletedKey", "disabledVersion", "restoredVersion")))
    log.info(
        "abandoned stuck rotation %s of %s (%s at stage %s): %s",
        stuck,
        target.id,
        replaces.get("runtimeStatus"),
        replaces.get("stage"),
        "undone" if compensated else "kept its keys for the next revoke" if undone is None else "nothing to undo",
    )
    return Abandoned(stuck, compensated, undone, current_key_name, current_version).to_json()
