"""Revocation is verified: after the old keys are deleted, their old values are presented to the target
until it refuses every one of them.

Deleting a key through ARM does not make every host instance refuse it at once. Each instance caches
the keys it granted (azure-functions-host SecretManager `_authorizationCache`, no expiry) and clears
that cache only after a write it handled itself or a change it sees in the shared sentinel file; an
instance that misses the change keeps granting a key it granted before (docs/emulators.md, "Host key
caches"). So "deleted" is not "dead": for an emergency, the evidence that a leaked key is dead is the
target refusing it.

The values come from Key Vault, read by version inside the activity while those versions are still
enabled (a disabled version cannot be read: 403 SecretDisabled), and never leave it (I1): not in the
request or result, not in a log line or exception. So the versions of the revoked keys stay enabled —
never as Key Vault's latest, and with their keys already deleted on the target — until the target refuses
them or the bound passes; then they are disabled. A first round runs inside `revoke_old_keys` right after
the deletes (most rotations end there, at no history cost); later rounds are this module's activity
`verify_revocation`, called by the orchestrator after durable timers, each reading the values again.

A round sends each value REQUESTS_PER_ROUND times: instances sit behind a load balancer, so one refusal
may come from the instance that handled the delete while another still grants the key. Only 401/403
from every request count as refused; no answer, 5xx or 429 is no verdict, and the next round tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from activities.probe import REFUSED, probe_once
from activities.secret_versions import SecretVersions, Version
from activities.targets import target_for
from rotation import key_plan
from rotation.contracts import ActivityRequest
from rotation.credential_store import SecretValue
from rotation.messages import RevocationRound
from rotation.policy import Target

log = logging.getLogger("keyrotation.activities.revocation")

REQUESTS_PER_ROUND = 3  # per revoked value; all must be refused (several host instances, load balanced)


@dataclass(frozen=True)
class Round:
    """One probing round's verdict, value-free: which revoked keys the target still accepted (or gave no
    verdict on), by key name (or version id for a version without our key-name tag)."""

    still_accepted: tuple[str, ...]
    statuses: tuple[int | None, ...]

    @property
    def refused(self) -> bool:
        return not self.still_accepted


def label(version: Version) -> str:
    return version.key_name or version.version


def probe_round(target: Target, revoked: Sequence[tuple[str, SecretValue]]) -> Round:
    """Present each revoked value REQUESTS_PER_ROUND times; a value counts as refused only when every
    request was answered 401/403."""
    still: list[str] = []
    statuses: list[int | None] = []
    for name, value in revoked:
        for _ in range(REQUESTS_PER_ROUND):
            result = probe_once(target, value)
            statuses.append(result.status)
            if result.status not in REFUSED:
                still.append(name)
                break
    return Round(tuple(still), tuple(statuses))


def read_values(vault: SecretVersions, versions: Sequence[Version]) -> list[tuple[str, SecretValue]]:
    """The values of the still-enabled versions, read by version (values stay in this process)."""
    return [(label(v), vault.read_value(v.version)) for v in versions if v.enabled]


def disable_all(vault: SecretVersions, versions: Sequence[Version]) -> list[str]:
    for version in versions:
        vault.ensure_stage(version, "revoked", disable=True)
    return [v.version for v in versions]


def verify_revocation(request: ActivityRequest) -> dict[str, Any]:
    """RevocationRoundRequest `{"rotationId", "targetId", "fingerprint", "versions", "disabledVersions",
    "final"}` -> RevocationRound `{"refused", "stillAccepted", "disabledVersions"}`.

    One probing round with the values of `versions` (our versions whose keys revoke deleted). Refused:
    the versions are disabled (the orchestrator announces OldKeyRevoked with firstRefusedAt). Still accepted
    and `final` (the policy's probe.revokedWithin has passed): the versions are disabled anyway — their keys
    are deleted and no consumer may read them — and the failure is logged at ERROR for the orchestrator's
    RotationDegraded. A re-run after the versions were disabled finds nothing to probe: refused."""
    target = target_for(request)
    vault = SecretVersions(target)
    wanted = list(request.get("versions") or [])
    listed = {v.version: v for v in vault.list()}
    versions = [listed[v] for v in wanted if v in listed]
    verdict = probe_round(target, read_values(vault, versions))  # none left enabled: a re-run, refused
    if not key_plan.settle_revocation(verdict.refused, final=bool(request.get("final"))):
        log.info("%s: revoked keys %s still accepted; probing again later", target.id, list(verdict.still_accepted))
        return RevocationRound(False, verdict.still_accepted).to_json()
    disabled = disable_all(vault, versions)
    result = RevocationRound(verdict.refused, verdict.still_accepted, tuple(disabled)).to_json()
    if not verdict.refused:
        within = target.probe.revoked_within if target.probe else None
        log.error(
            "%s: revoked keys %s are still accepted by the target after probe.revokedWithin (%s): a host instance"
            " still grants them; see docs/runbook.md, 'An old key is still accepted'",
            target.id,
            list(verdict.still_accepted),
            within,
        )
    return result
