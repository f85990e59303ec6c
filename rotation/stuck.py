"""Stuck rotations: a `rotation-<target>` instance that stopped mid-way (Failed: an unhandled exception;
Terminated: someone used the Durable API) and so never published how it ended, nor cleaned up after
itself — or one that ended failed before its announcement and could not undo its new key (its
compensation failed: the key would sit on the target, held by no enabled version, until the next
rotation). Whoever starts the next rotation of the target (the timer, Key Vault's near-expiry event, the
operator API) reads the instance first and hands the new rotation a `replaces` record; the new rotation
abandons the stuck one as its step 0 (orchestrations/predecessor.py, activities/abandon.py).

Pure functions of a status snapshot (runtime status, custom status, input, output), shared by every door
so they agree on what "stuck" means. No key value exists here: custom status and input never hold one.
"""

from __future__ import annotations

from typing import Any

from rotation import naming
from rotation.reasons import clean_optional
from rotation.redaction import redact
from rotation.stages import ANNOUNCED_PHASES, TERMINAL_PHASES, Phase

# Runtime statuses of an instance that stopped without the orchestrator deciding to.
STOPPED = frozenset({"Failed", "Terminated", "Canceled"})
MAX_DETAIL = 200


def _steps(custom: dict[str, Any]) -> list[dict[str, Any]]:
    steps = custom.get("steps")
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def compensation_failure(custom: dict[str, Any]) -> str | None:
    """The detail of a failed compensation step, when the rotation ended failed with one."""
    if custom.get("stage") != Phase.FAILED:
        return None
    failed = [s for s in _steps(custom) if s.get("step") == "compensate" and s.get("status") == "failed"]
    return str(failed[-1].get("detail") or "compensation failed") if failed else None


def is_stuck(runtime: str | None, custom: dict[str, Any]) -> bool:
    """Stopped (Failed/Terminated) at a stage that is not an ending, or ended failed with its new key not
    undone. An instance without a custom status never ran its first step (the first episode sets the stage
    and schedules provision together)."""
    stage = custom.get("stage")
    rotation_id = custom.get("rotationId")
    if not (isinstance(stage, str) and isinstance(rotation_id, str) and naming.is_rotation_id(rotation_id)):
        return False
    if runtime == "Completed":
        return compensation_failure(custom) is not None
    return runtime in STOPPED and stage not in TERMINAL_PHASES


def stop_detail(runtime: str, output: Any) -> str | None:
    """The termination reason or failure message, redacted and short (it lands in an event)."""
    if not isinstance(output, str) or not output.strip():
        return None
    line = redact(output.strip().splitlines()[0])
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 3] + "..."


def announced(custom: dict[str, Any]) -> bool:
    """Whether NewKeyAvailable went out: the timeline says so, or the stage lies past it. A rotation
    stopped while its verify step was publishing may have announced without the timeline knowing; it is
    treated as unannounced and undone, and its RotationFailed (compensated) tells any consumer that heard
    the announcement to go back to Key Vault's latest version (docs/runbook.md)."""
    said = any(s.get("step") == "announce" and s.get("status") == "done" for s in _steps(custom))
    return said or custom.get("stage") in ANNOUNCED_PHASES


def predecessor(
    runtime: str | None, custom: dict[str, Any], given: dict[str, Any], output: Any
) -> dict[str, Any] | None:
    """The `replaces` record for a new rotation of this target, or None when the instance is not stuck.

    `given` is the stuck instance's input: a rotation that stopped while abandoning its own predecessor
    passes that one on (it had done nothing else yet, and that one still needs closing)."""
    if not is_stuck(runtime, custom):
        return None
    inherited = given.get("replaces")
    if custom.get("stage") == Phase.ABANDONING and isinstance(inherited, dict) and inherited.get("rotationId"):
        return inherited
    raw_trigger = custom.get("trigger")
    trigger = raw_trigger if isinstance(raw_trigger, dict) else {}
    started = next((s.get("at") for s in _steps(custom) if s.get("step") == "requested"), None)
    undone = compensation_failure(custom) if runtime == "Completed" else None
    record = {
        "rotationId": custom["rotationId"],
        "mode": custom.get("mode") or given.get("mode"),
        "trigger": {
            "actor": trigger.get("actor") or given.get("actor"),
            "reason": clean_optional(trigger.get("reason")),
        },
        "startedAt": started,
        "stage": "compensating" if undone is not None else custom["stage"],
        "runtimeStatus": runtime,
        "detail": stop_detail(str(runtime), undone if undone is not None else output),
        "announced": False if undone is not None else announced(custom),
        "keyName": custom.get("keyName"),
        "version": custom.get("version"),
        "previousVersion": custom.get("previousVersion"),
    }
    record["reason"] = abandon_reason(record)
    if isinstance(inherited, dict) and inherited.get("rotationId"):
        # It replaced a stuck rotation itself and stopped before publishing that one's RotationFailed,
        # perhaps: its successor publishes it again (same event id). One level: older ones were closed.
        record["replaces"] = {k: v for k, v in inherited.items() if k != "replaces"}
    return record


def abandon_reason(record: dict[str, Any]) -> str:
    """What RotationFailed says about the stuck rotation (and the API and the scheduler's summary)."""
    text = f"abandoned: instance {record.get('runtimeStatus')} at stage {record.get('stage')}"
    if record.get("runtimeStatus") == "Completed":
        text = "abandoned: it failed and could not undo its new key"
    detail = record.get("detail")
    return f"{text} ({detail})" if detail else text


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a `replaces` record an API answer or a scheduler summary shows."""
    return {k: record.get(k) for k in ("rotationId", "mode", "stage", "runtimeStatus", "announced", "reason")}


def successor_mode(record: dict[str, Any] | None, default: naming.Mode) -> naming.Mode:
    """An unattended door (timer, near-expiry) resumes a stuck emergency as an emergency: a responder
    asked for the leaked key to die, and a scheduled successor would keep it valid for a whole overlap."""
    return "emergency" if record is not None and record.get("mode") == "emergency" else default
