"""The names the layers share for a rotation's progress and for the events sent to it.

The values are the wire strings (custom status `stage`, event `data.stage`, `raise_event` names), so a
`StrEnum` member compares equal to the string an older history or a client holds; renaming a value is a
breaking change to the status API, the event schema or running instances.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a rotation is, as its custom status says (`stage`) and `keyrotation status` shows it."""

    ABANDONING = "abandoning"  # step 0: closing the stuck predecessor this rotation replaces
    PROVISIONING = "provisioning"
    VERIFYING = "verifying"
    OVERLAP = "overlap"
    GATE = "gate"
    HELD = "held"
    EXTENDED = "extended"
    REVOKING = "revoking"
    WATCHING = "watching"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"
    REFUSED = "refused"  # the input was refused before anything ran


class Stage(StrEnum):
    """The lifecycle stage an event reports (`data.stage` of RotationFailed and RotationDegraded)."""

    PROVISION = "provision"
    VERIFY = "verify"
    ANNOUNCE = "announce"
    OVERLAP = "overlap"
    GATE = "gate"
    REVOKE = "revoke"
    WATCH = "watch"


# The stage a failure in each phase is reported under.
STAGE_OF_PHASE: dict[Phase, Stage] = {
    Phase.PROVISIONING: Stage.PROVISION,
    Phase.COMPENSATING: Stage.PROVISION,
    Phase.VERIFYING: Stage.VERIFY,
    Phase.OVERLAP: Stage.OVERLAP,
    Phase.GATE: Stage.GATE,
    Phase.HELD: Stage.GATE,
    Phase.EXTENDED: Stage.GATE,
    Phase.REVOKING: Stage.REVOKE,
    Phase.WATCHING: Stage.WATCH,
}


def stage_of(phase: str, default: Stage) -> Stage:
    """The stage a failure in `phase` is reported under; `default` for a phase without one (a custom status
    from an older history may hold any string)."""
    return STAGE_OF_PHASE.get(Phase(phase), default) if phase in Phase else default


# Phases a rotation ends in: it published RotationCompleted / RotationFailed before entering them.
TERMINAL_PHASES = frozenset({Phase.COMPLETED, Phase.FAILED, Phase.ABORTED, Phase.SUPERSEDED})
# Phases reached only after NewKeyAvailable: consumers may hold the new key, so it is never undone.
ANNOUNCED_PHASES = frozenset({Phase.OVERLAP, Phase.GATE, Phase.HELD, Phase.EXTENDED, Phase.REVOKING, Phase.WATCHING})


class Mail(StrEnum):
    """External events the API raises on a rotation instance (each signed, see rotation/signing.py)."""

    CONSUMER_ACK = "ConsumerAck"
    APPROVE = "Approve"
    ABORT = "Abort"
    EXTEND = "Extend"
    SUPERSEDE = "Supersede"  # an emergency rotation of the same target takes over
