"""Stages revoke and watch: the old keys deleted on the target and their Key Vault versions disabled,
verified by probing the old values until the target refuses them (activities/revocation.py), then
OldKeyRevoked announced; then a short post-revocation watch whose spike is reported (RotationDegraded),
never undone. Never restore a key revoked by an emergency rotation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrations.retry import KEY_STEP, step_error
from orchestrations.run import Event, Orchestration, RunBase
from rotation import events
from rotation.durations import format_duration, format_timestamp
from rotation.messages import Provisioned, RevocationRound, RevocationRoundRequest, Revoked, RevokeRequest
from rotation.stages import Phase, Stage


@dataclass(frozen=True)
class Revocation:
    """What revoke did, and the events that go out with the completion (a RotationDegraded, or an
    OldKeyRevoked whose own announce failed)."""

    at: datetime
    deleted: tuple[str, ...]
    disabled: tuple[str, ...]
    events: tuple[Event, ...] = ()


class Revoking(RunBase):
    def revoke(self, provisioned: Provisioned) -> Orchestration:
        """Delete the old keys and disable their versions: what the plan names, and with `sweep` every
        other key of the family (orphans of failed or abandoned rotations); an emergency every other key.
        Consumers were told about the new key and may already use it: a failure here never rolls back."""
        yield from self.superseded_by()  # an emergency revokes every key of the family itself
        self.enter(Phase.REVOKING)
        names: tuple[str, ...] | None
        versions: tuple[str, ...] | None
        if self.emergency:
            names, versions = None, None  # every other key of the family, every other version of ours
        elif self.target.is_master_key:
            names, versions = (), None
        else:
            previous = provisioned.previous_key_name
            names = (previous,) if previous and previous != provisioned.key_name else ()
            versions = (provisioned.previous_version,) if provisioned.previous_version else ()
        verify = self.target.probe is not None
        deleting_at = self.now
        request = RevokeRequest(
            self.rotation_id,
            self.ref,
            keep_key_name=provisioned.key_name,
            keep_version=provisioned.version or "",
            revoke_key_names=names,
            revoke_versions=versions,
            sweep=not self.emergency,  # after the overlap every consumer was told to move
            verify=verify,
        )
        revoked = Revoked.from_json(
            (yield from self.call(Stage.REVOKE, "revoke_old_keys", KEY_STEP, request, compensate=False))
        )
        deleted, disabled, revoked_at = revoked.deleted_keys, revoked.disabled_versions, self.now
        if revoked.refused is False:
            still = ", ".join(revoked.still_accepted)
            self.note("revoke", "done", f"deleted {', '.join(deleted) or 'no key'}; still accepted: {still}")
            return (yield from self.confirm_revocation(deleting_at, revoked_at, revoked))
        self.note(
            "revoke", "done", f"deleted {', '.join(deleted) or 'no key'}; disabled {len(disabled)} Key Vault version(s)"
        )
        if revoked.refused:
            self.refused_at(deleting_at, deleting_at, 0)
        else:
            self.status.revocation = {"status": "not-verified", "firstRefusedAt": None, "stillAccepted": []}
            self.publish_status()
        # With a probe the old key is dead once the target refuses the old values: firstRefusedAt is now.
        unsent = yield from self.announce_revoked(deleting_at, deleted, disabled, deleting_at if verify else None)
        return Revocation(revoked_at, deleted, disabled, unsent)

    def announce_revoked(
        self, deleted_at: datetime, deleted: Sequence[str], disabled: Sequence[str], refused_at: datetime | None
    ) -> Orchestration:
        """Announce OldKeyRevoked (what was actually revoked); returns it when the publish failed, for the
        completion's publish to send again."""
        revoked = self.old_key_revoked(deleted_at, deleted, disabled, refused_at)
        error = yield from self.announce(revoked)
        if error is None:
            return ()
        self.note("announce", "failed", f"OldKeyRevoked: {error}")
        return (revoked,)

    def old_key_revoked(
        self, deleted_at: datetime, deleted: Sequence[str], disabled: Sequence[str], refused_at: datetime | None
    ) -> Event:
        vault = self.target.key_vault
        return events.old_key_revoked(
            self.info,
            key_name=self.status.key_name or "",
            revoked_key_names=list(deleted),
            revoked_secret_ids=[vault.secret_id(v) for v in disabled],
            revoked_at=deleted_at,
            first_refused_at=refused_at,
        )

    def refused_at(self, deleted_at: datetime, at: datetime, rounds: int) -> None:
        """The audit trail of a verified revocation: when the old values were first refused."""
        after = format_duration(at - deleted_at) if at > deleted_at else "at once"
        self.status.revocation = {"status": "refused", "firstRefusedAt": format_timestamp(at), "stillAccepted": []}
        detail = f"old key first refused at {format_timestamp(at)} ({after} after deletion, round {rounds + 1})"
        self.status.step("revocation", "verified", at, detail)
        self.publish_status()

    def confirm_revocation(self, deleted_at: datetime, revoked_at: datetime, revoked: Revoked) -> Orchestration:
        """Probe the revoked values again on durable timers until the target refuses them, at most until the
        policy's probe.revokedWithin after the deletion: rounds at 1/8, 1/4, 1/2 and all of it (four rounds,
        about 32 history events, only when the first round found a key still accepted). Each round's activity
        reads the values from Key Vault itself, so they never enter the history. Still accepted at the bound:
        RotationDegraded (cause old-key-accepted) and an ERROR log (the activity)."""
        assert self.target.probe is not None
        bound, deleted = self.target.probe.revoked_within, revoked.deleted_keys
        pending, already = revoked.pending_versions, revoked.disabled_versions
        still, unverifiable = revoked.still_accepted, revoked.unverifiable
        self.status.revocation = {
            "status": "verifying",
            "firstRefusedAt": None,
            "stillAccepted": list(still),
            "deadline": format_timestamp(deleted_at + bound),
        }
        self.publish_status()
        problem = ""
        if unverifiable:
            # Accepted after the delete, and no Key Vault version of ours holds the value to try it again.
            problem = (
                f"the target still accepted {', '.join(unverifiable)} after it was deleted, and no Key Vault version"
                " holds its value to probe it again: check the target's host instances (docs/runbook.md)"
            )
        for round_no, fraction in enumerate((8, 4, 2, 1), start=1):
            if not pending:
                break
            yield from self.sleep_until(deleted_at + bound / fraction)
            last, started = fraction == 1, self.now
            request = RevocationRoundRequest(self.rotation_id, self.ref, pending, already, final=last)
            try:
                result = RevocationRound.from_json((yield self.activity("verify_revocation", KEY_STEP, request)))
            except Exception as exc:
                problem = f"probing failed: {step_error(exc)}"
                self.note("revocation", "failed", problem)
                continue
            if result.refused and not unverifiable:
                self.refused_at(deleted_at, started, round_no)
                disabled = (*already, *result.disabled_versions)
                unsent = yield from self.announce_revoked(deleted_at, deleted, disabled, started)
                return Revocation(revoked_at, deleted, disabled, unsent)
            if result.refused:
                already += result.disabled_versions
                still, pending = unverifiable, ()
                break
            problem = problem if unverifiable else ""
            still = result.still_accepted or still
            self.status.revocation = {**self.status.revocation, "stillAccepted": [*still, *unverifiable]}
            self.publish_status()
            if last:
                already += result.disabled_versions
        accepted = list(dict.fromkeys([*still, *unverifiable]))
        degraded = self.revocation_degraded(deleted_at, deleted, accepted, problem, already)
        return Revocation(revoked_at, deleted, already, degraded)

    def revocation_degraded(
        self, deleted_at: datetime, deleted: Sequence[str], still: list[str], problem: str, disabled: Sequence[str]
    ) -> tuple[Event, ...]:
        """The old key was still accepted (or could not be probed) when the bound passed: loud."""
        assert self.target.probe is not None
        bound = format_duration(self.target.probe.revoked_within)
        why = problem or (
            f"the target still accepted {', '.join(still) or 'a revoked key'} {bound} after it was deleted"
            " (probe.revokedWithin): a host instance still grants it from its key cache"
        )
        self.status.revocation = {**(self.status.revocation or {}), "status": "still-accepted", "detail": why}
        self.note("revocation", "degraded", why)
        return (
            # the keys are deleted; that they are dead is what could not be shown
            self.old_key_revoked(deleted_at, deleted, disabled, None),
            events.rotation_degraded(
                self.info,
                key_name=self.status.key_name or "",
                revoked_key_names=list(deleted),
                failures=None,
                baseline=None,
                window_start=deleted_at,
                window_end=self.now,
                detected_at=self.now,
                cause="old-key-accepted",
                accepted_key_names=still,
                detail=why,
            ),
        )

    def watch(self, revocation: Revocation) -> Orchestration:
        """A short post-revocation window: a failure spike is reported (RotationDegraded), never undone.
        Returns the events to publish with the completion."""
        watch = self.target.monitoring.watch
        if watch <= timedelta(0):
            return ()
        self.enter(Phase.WATCHING)
        start = revocation.at
        yield from self.sleep_until(start + watch)
        window_end = self.now
        counted = yield from self.count_failures(start, window_end, window_end - start)
        failures, baseline = counted.failures, counted.baseline
        if counted.query_failed:
            self.note("watch", "failed", counted.error)
            return ()
        if failures is None or baseline is None:
            self.note("watch", "failed", f"signal unavailable: {counted.error}")
            return ()
        if not self.target.monitoring.threshold.breached(failures, baseline):
            self.note("watch", "done", f"{failures} auth failures after revocation")
            return ()
        self.note("watch", "degraded", f"{failures} auth failures after revocation, baseline {baseline}")
        degraded = events.rotation_degraded(
            self.info,
            key_name=self.status.key_name or "",
            revoked_key_names=list(revocation.deleted),
            failures=failures,
            baseline=baseline,
            window_start=start,
            window_end=window_end,
            detected_at=self.now,
        )
        return (degraded,)
