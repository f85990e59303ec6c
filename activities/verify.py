"""Activity `verify_new_key`: does the target accept the key Key Vault now serves as this rotation's version?

The value is read from Key Vault by version inside the activity — what a consumer would read — so this
also proves the stored copy matches the target (drift would show as a refusal). Bounded retries absorb
host key caches (activities/probe.py).
"""

from __future__ import annotations

import logging
from typing import Any

from activities import probe as probing
from activities import site_hosts
from activities.secret_versions import SecretVersions
from activities.targets import target_for
from rotation import naming
from rotation.contracts import ActivityRequest
from rotation.messages import Verified
from rotation.redaction import SafeError

log = logging.getLogger("keyrotation.activities.verify")


def verify_new_key(request: ActivityRequest) -> dict[str, Any]:
    """VerifyRequest `{"rotationId", "targetId", "fingerprint", "version"}` -> Verified `{"verified", "attempts",
    "lastStatus"}`. Read-only (it publishes nothing), so a re-run is safe; no probe configured -> verified with
    0 attempts (nothing is read)."""
    rotation_id = request["rotationId"]
    naming.parse_rotation_id(rotation_id)
    target = target_for(request)
    version = request.get("version")
    if not isinstance(version, str) or not version:
        raise ValueError("version: required (the Key Vault version provision stored)")
    if target.probe is None:
        return Verified(verified=True).to_json()
    site_hosts.probe_url(target)  # the destination first: a refused one stops here, nothing read or sent
    value = SecretVersions(target).read_value(version)
    outcome = probing.probe_until_accepted(target, value)
    if outcome.unavailable:  # no verdict (down, throttled): the step is retried later, not rolled back yet
        raise SafeError(outcome.unavailable)
    log.info(
        "verify %s on %s: version %s %s after %d attempt(s)",
        rotation_id,
        target.id,
        version,
        "accepted" if outcome.accepted else "refused",
        outcome.attempts,
    )
    return Verified(outcome.accepted, outcome.attempts, outcome.last_status).to_json()
