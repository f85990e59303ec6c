"""The rotation lifecycle of one target: provision → verify → announce → overlap → gate → revoke → watch.

One instance per target (`rotation-<targetId>`, the singleton guard of invariant I3). Deterministic:
time comes from `context.current_utc_datetime`, every decision from the input and activity results,
and no key value ever enters the input, the results or the custom status (I1). The input names the target
and is signed by the app; step 0 resolves the target from the deployed policy (rotation/inputs.py), and
events raised on the rotation count only when the app signed them (`authentic`, orchestrations/run.py).

`RotationRun.lifecycle` is the whole story, one `yield from` per stage; the stages live in overlap.py,
gate.py, revocation.py and endings.py, the platform concerns (activities, timeline, publishing, the race
against `Supersede`) in run.py. Each activity does one side effect: announcing is a step of its own.

History budget (DESIGN: ≤ 100 events for overlaps up to 30 days). Every await costs about four history
events, so: RotationStarted and NewKeyAvailable go out in one announce; durable timers are at most 6 days
(the SDK would split longer ones into 3-day sub-timers); Key Vault adoption is polled at two points of a
short overlap, or at the middle 6-day boundary of a long one, never more; acknowledgements arrive as
external events and cost no polling. Measured
(tests/integration/devhost/test_orchestration_lifecycle.py): 68 for a 30-day overlap, 96 when the old
key is never refused and all four revocation rounds run.
"""

from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df

from orchestrations.endings import Endings, refused
from orchestrations.gate import Gate
from orchestrations.overlap import Announced, OverlapWaits
from orchestrations.predecessor import Predecessor
from orchestrations.request import RotationRequest
from orchestrations.retry import KEY_STEP, VERIFY_STEP, step_error
from orchestrations.revocation import Revoking
from orchestrations.run import Orchestration, StageFailed, Superseded
from rotation import events, naming
from rotation.contracts import json_object
from rotation.durations import format_timestamp
from rotation.inputs import InputError, check_shape, check_start_time
from rotation.messages import (
    Abandoned,
    AbandonRequest,
    Provisioned,
    ProvisionRequest,
    Resolution,
    Verified,
    VerifyRequest,
)
from rotation.policy import MASTER_KEY_NAME
from rotation.stages import Phase, Stage

bp = df.Blueprint()


class RotationRun(OverlapWaits, Gate, Revoking, Endings):
    """One execution of the lifecycle; stages are sub-generators driven with `yield from`."""

    def run(self) -> Orchestration:
        """The lifecycle, its two early endings handled once each, then a late emergency's hand-over."""
        try:
            output = yield from self.lifecycle()
        except Superseded as signal:
            output = yield from self.supersede(signal.payload)
            return self.hand_over(signal.payload, output)
        except StageFailed as failure:
            output = yield from self.fail(failure)
        successor = self.successor or (yield from self.takeover_payload())
        if successor is not None:  # arrived as this rotation ended: it still takes over
            return self.hand_over(successor, output)
        return output

    def lifecycle(self) -> Orchestration:
        """provision → verify → announce → overlap → gate → revoke → watch; a stage that gives up raises
        StageFailed, an emergency taking over raises Superseded (both handled in `run`)."""
        given = self.req.input
        self.status.key_name = self.key_name()
        self.status.step("requested", "done", self.started, f"{given.mode} by {given.actor.name}")
        if self.req.replaces is not None:
            yield from self.stage(Phase.ABANDONING, "abandon", self.abandon_predecessor(self.req.replaces))
        # Step 1: a new key on the target, accepted by it, stored as Key Vault's current version.
        provisioned = yield from self.stage(Phase.PROVISIONING, "provision", self.provision())
        # Step 2: the target accepts the version Key Vault now serves (optional per target).
        if self.target.probe is not None:
            yield from self.stage(Phase.VERIFYING, "verify", self.verify(provisioned))
        # Step 3: consumers are told (RotationStarted, NewKeyAvailable).
        announced = yield from self.stage(None, "announce", self.announce_new_key(provisioned))
        # Step 4: both keys valid until the overlap ends or every consumer switched.
        if announced.overlap_ends > announced.at:
            yield from self.stage(Phase.OVERLAP, "overlap", self.wait_overlap(announced))
        # Step 5: auth failures against the baseline; held for a decision above the threshold.
        if not self.emergency and not self.target.is_master_key:
            yield from self.gate(announced)
        # Step 6: the old keys deleted and their versions disabled, verified refused; OldKeyRevoked.
        revocation = yield from self.revoke(provisioned)
        # Step 7: a short watch after revocation; a spike is reported, never undone.
        watched = yield from self.watch(revocation)
        return (yield from self.complete(provisioned, revocation, watched))

    # -- step 0 and steps 1 to 3 ---------------------------------------------------------------
    def key_name(self) -> str:
        if self.target.is_master_key:
            return MASTER_KEY_NAME
        return naming.key_name(self.target.base_key_name, self.rotation_id)

    def overlap(self) -> timedelta:
        if self.target.is_master_key:
            return timedelta(0)  # renewed in place: the old value is dead the moment the PUT returns
        if self.emergency:
            return min(self.req.overlap or timedelta(0), self.target.emergency_max_overlap)
        return self.target.overlap  # scheduled and on-demand rotations take the policy's overlap, nothing else

    def abandon_predecessor(self, stuck: Predecessor) -> Orchestration:
        """Step 0: close the stuck rotation this one replaces (see orchestrations/predecessor.py). After its
        announcement nothing is undone, so its RotationFailed simply goes out ahead of RotationStarted (no
        extra await: the history budget). Before it, one activity undoes it. A failed undo does not stop
        this rotation: the stuck key stays valid (it was accepted before it was stored, I2) and this
        rotation's revoke removes it; its RotationFailed then says compensated=false."""
        # What it was replacing may never have been closed: say it (same id).
        earlier = (
            () if stuck.earlier is None else (stuck.earlier.failed_event(self.target.id, self.now, compensated=False),)
        )
        if stuck.announced:
            self.untold = (*earlier, stuck.failed_event(self.target.id, self.now))
            return None, f"{stuck.rotation_id} ({stuck.reason}): its keys kept (announced) for this rotation's revoke"
        try:
            request = AbandonRequest(self.rotation_id, self.ref, stuck.record)
            result = Abandoned.from_json((yield self.activity("abandon_rotation", KEY_STEP, request)))
        except Exception as exc:
            self.untold = (*earlier, stuck.failed_event(self.target.id, self.now, compensated=False))
            self.note(
                "abandon",
                "failed",
                f"{stuck.rotation_id}: {step_error(exc)}; its keys are left to this rotation's revoke",
            )
            return None, None
        self.untold = (*earlier, stuck.failed_event(self.target.id, self.now, compensated=result.compensated))
        if result.current_key_name:  # the version consumers hold again once the stuck one is undone
            self.current_key_name = result.current_key_name
        undone = "its new key deleted, the previous version current again" if result.compensated else "nothing to undo"
        return None, f"{stuck.rotation_id} ({stuck.reason}): {undone}"

    def provision(self) -> Orchestration:
        """A new key on the target, accepted by it, stored as a new Key Vault version (activities/provision.py).
        Nobody was told about it yet, so a failure undoes it (compensation)."""
        started = events.rotation_started(
            self.info, key_name=self.key_name(), previous_key_name=self.current_key_name, overlap=self.overlap()
        )
        self.untold = (*self.untold, started)
        request = ProvisionRequest(self.rotation_id, self.ref, self.key_name())
        result = yield from self.call(Stage.PROVISION, "provision_new_key", KEY_STEP, request, compensate=True)
        provisioned = Provisioned.from_json(result)
        self.status.version = provisioned.version
        self.status.secret_id = provisioned.secret_id
        self.status.previous_key_name = provisioned.previous_key_name
        self.status.previous_version = provisioned.previous_version
        if not provisioned.accepted:
            detail = f"target refused the new key after {provisioned.probe_attempts} probes"
            self.note("provision", "failed", detail)
            raise StageFailed(Stage.VERIFY, "the target never accepted the new key", compensate=True)
        return provisioned, f"key {provisioned.key_name}, version {provisioned.version}"

    def verify(self, provisioned: Provisioned) -> Orchestration:
        """The target accepts the version Key Vault serves, read by version inside the activity."""
        request = VerifyRequest(self.rotation_id, self.ref, provisioned.version or "")
        result = yield from self.call(Stage.VERIFY, "verify_new_key", VERIFY_STEP, request, compensate=True)
        verified = Verified.from_json(result)
        if not verified.verified:
            detail = f"last status {verified.last_status} after {verified.attempts} attempts"
            self.note("verify", "failed", detail)
            raise StageFailed(Stage.VERIFY, f"probe refused the new key ({detail})", compensate=True)
        return verified, f"accepted after {verified.attempts} attempt(s)"

    def announce_new_key(self, provisioned: Provisioned) -> Orchestration:
        """Publish RotationStarted and NewKeyAvailable (and a replaced rotation's RotationFailed first).
        Failed: nobody was told, so a scheduled rotation rolls back (breaks no consumer); an emergency
        revokes the leaked key regardless, and consumers read Key Vault's latest."""
        at = self.now
        announced = Announced(at, at + self.overlap(), provisioned.secret_id or "")
        self.status.overlap_ends_at = format_timestamp(announced.overlap_ends)
        new_key = events.new_key_available(
            self.info,
            key_name=provisioned.key_name,
            secret_id=announced.secret_id,
            previous_key_name=provisioned.previous_key_name,
            previous_secret_id=provisioned.previous_secret_id,
            available_at=at,
            overlap_ends_at=announced.overlap_ends,
        )
        error = yield from self.announce(*self.untold, new_key)
        if error is None:
            self.untold = ()
            return announced, "NewKeyAvailable published"
        if not self.emergency:
            raise StageFailed(Stage.ANNOUNCE, error, compensate=True)
        self.note("announce", "failed", error)  # RotationStarted stays untold: it goes out with the ending
        return announced, None


@bp.orchestration_trigger(context_name="context")
def rotation_orchestrator(context: df.DurableOrchestrationContext) -> Orchestration:
    """Step 0 resolves the target the (signed) input names from the deployed policy; see rotation/inputs.py."""
    data = json_object(context.get_input())
    try:
        check_shape(data, context.instance_id)
        check_start_time(data, context.current_utc_datetime)
    except InputError as exc:
        return refused(context, data, str(exc))
    resolved = Resolution.from_json(
        (yield context.call_activity_with_retry("resolve_target", KEY_STEP, {"input": data}))
    )
    if resolved.refused or resolved.target is None or resolved.fingerprint is None:
        return refused(context, data, str(resolved.refused or "the target could not be resolved"))
    request = RotationRequest.of(data, resolved.target, resolved.fingerprint)
    return (yield from RotationRun(context, request).run())
