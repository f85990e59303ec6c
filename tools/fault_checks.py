"""What must hold after every fault run, as pure functions of what the run recorded.

Each check returns violations as sentences an engineer can act on (which target, which rotation, what
was wrong); values from the emulator state are compared, never quoted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from emulators.core.invariants import TargetRef, check_i2
from rotation import naming
from rotation.naming import belongs_to_base
from rotation.policy import Target
from tools import demo_report

TERMINAL = ("Completed", "Failed", "Terminated")
LOUD_EVENTS = ("RotationFailed", "RotationHeld")
# How much earlier than Retry-After allows a retry may come (clock granularity, request-log rounding).
RETRY_AFTER_TOLERANCE = 0.05
SHARED_PATH_OPERATIONS = ("eventgrid.publish", "logs.query")


def received(state: Mapping[str, Any], target_id: str) -> list[Mapping[str, Any]]:
    """The CloudEvents received for a target, in order, each id once (Event Grid is at-least-once)."""
    seen: set[str] = set()
    out: list[Mapping[str, Any]] = []
    for row in (state.get("eventgrid") or {}).get("events", []):
        if row.get("subject") != f"targets/{target_id}" or row.get("id") in seen:
            continue
        seen.add(str(row.get("id")))
        out.append(row)
    return out


def _kind(row: Mapping[str, Any]) -> str:
    return str(row.get("type", "")).removeprefix(demo_report.EVENT_PREFIX)


def _rotation_of(row: Mapping[str, Any]) -> str | None:
    data = (row.get("event") or {}).get("data") or {}
    return data.get("rotationId") if isinstance(data, Mapping) else None


def check_finished(
    statuses: Mapping[str, Mapping[str, Any] | None], skipped: Mapping[str, str] | None = None
) -> list[str]:
    """Every rotation ended, and none by an unhandled exception (a Failed instance is a bug: the
    lifecycle catches every step failure and reports it). A target the scheduler could not assess is
    skipped with the reason in its summary (the next tick tries again): that is not a violation."""
    out = []
    for target_id, status in statuses.items():
        if status is None and target_id in (skipped or {}):
            continue
        if status is None:
            out.append(f"{target_id}: no rotation instance was ever started")
        elif status.get("runtimeStatus") not in TERMINAL:
            stage = (status.get("customStatus") or {}).get("stage")
            out.append(f"{target_id}: rotation did not finish (runtime {status.get('runtimeStatus')}, stage {stage})")
        elif status.get("runtimeStatus") != "Completed":
            out.append(f"{target_id}: rotation instance {status.get('runtimeStatus')}: {status.get('output')}")
    return out


def check_loud(statuses: Mapping[str, Mapping[str, Any] | None], state: Mapping[str, Any]) -> list[str]:
    """A rotation that did not complete says so: a RotationFailed or RotationHeld event for it, and an
    output naming the reason."""
    out = []
    for target_id, status in statuses.items():
        output = (status or {}).get("output")
        if not isinstance(output, Mapping) or output.get("outcome") == "completed":
            continue
        rotation_id = output.get("rotationId")
        loud = [r for r in received(state, target_id) if _kind(r) in LOUD_EVENTS and _rotation_of(r) == rotation_id]
        if not loud:
            out.append(f"{target_id}: rotation {rotation_id} ended {output.get('outcome')} without RotationFailed/Held")
        if not (output.get("error") or output.get("supersededBy")):
            out.append(
                f"{target_id}: rotation {rotation_id} ended {output.get('outcome')} with no reason in its output"
            )
    return out


def check_one_rotation_at_a_time(state: Mapping[str, Any], target_ids: Iterable[str]) -> list[str]:
    """I3 as consumers see it: once another rotation's events start, an earlier rotation sends nothing
    but its ending (RotationFailed/Completed may trail a supersede), and never a new key."""
    out = []
    for target_id in target_ids:
        order: list[str] = []
        for row in received(state, target_id):
            rotation = _rotation_of(row)
            if rotation is None:
                continue
            if rotation not in order:
                order.append(rotation)
            elif order[-1] != rotation and _kind(row) not in ("RotationFailed", "RotationCompleted"):
                out.append(f"{target_id}: {rotation} sent {_kind(row)} after {order[-1]} had started")
    return out


def check_i2_journal(
    changes: Sequence[Mapping[str, Any]],
    served: Sequence[Mapping[str, Any]],
    targets: Sequence[Target],
    soft_deleted: Iterable[str] = (),
) -> list[str]:
    """I2 after every emulator request. A secret the schedule deleted before the run is the world's
    fault, not the app's, until the app recovers it (then I2 holds again from that request on; a
    secret never recovered shows up in the end state)."""
    recovered: dict[str, int] = {}
    for change in changes:
        if change.get("kind") == "keyvault.secret_recovered":
            name = str(change.get("subject", "")).rsplit("/", 1)[-1].lower()
            recovered.setdefault(name, int(change.get("request_seq") or change["seq"]))
    deleted = {t.key_vault.secret_name.lower() for t in targets if t.id in set(soft_deleted)}

    def world_made(v: Any) -> bool:
        name = str(v.secret_name).lower()
        return name in deleted and "deleted" in v.reason and (v.request_seq or 0) < recovered.get(name, 1 << 62)

    found = [v for v in check_i2(changes, [TargetRef.from_target(t) for t in targets], served) if not world_made(v)]
    return [f"I2: {v}" for v in found[:5]]


def check_end_state(state: Mapping[str, Any], targets: Sequence[Target], soft_deleted: Iterable[str] = ()) -> list[str]:
    """No orphaned key (a key of the base name on the target that no enabled Key Vault version holds)
    and no enabled Key Vault version the target refuses.

    A secret the schedule deleted beforehand and no rotation got to recover is the world's state: only
    the keys a rotation created (generations, not the bare base name) are judged there."""
    out = []
    for target in targets:
        live = demo_report.live_keys(state, target)
        family = {name: value for name, value in live.items() if belongs_to_base(target.base_key_name, name)}
        secrets = {name.lower() for name in ((state.get("keyvault") or {}).get("secrets") or {})}
        if target.id in set(soft_deleted) and target.key_vault.secret_name.lower() not in secrets:
            made = sorted(n for n in family if n.lower() != target.base_key_name.lower())
            if made:
                out.append(f"{target.id}: key(s) left on the target while its secret stayed deleted: {made}")
            continue
        enabled = [v for v in demo_report.secret_versions(state, target) if v.get("enabled")]
        held = {v.get("value") for v in enabled}
        orphans = sorted(name for name, value in family.items() if value not in held)
        if orphans:
            out.append(f"{target.id}: orphaned key(s) on the target, in no enabled Key Vault version: {orphans}")
        dead = [str(v.get("version")) for v in enabled if v.get("value") not in live.values()]
        if dead:
            out.append(f"{target.id}: enabled Key Vault version(s) the target refuses: {dead}")
        if not enabled:
            out.append(f"{target.id}: no enabled Key Vault version left: consumers have nothing to read")
        versions = demo_report.secret_versions(state, target)
        if versions and not versions[-1].get("enabled"):
            latest = versions[-1].get("version")
            out.append(f"{target.id}: the newest version {latest} is disabled: readers of 'latest' get 403")
    return out


def check_completed_cleanly(
    statuses: Mapping[str, Mapping[str, Any] | None], state: Mapping[str, Any], targets: Sequence[Target]
) -> list[str]:
    """A rotation that says `completed` revoked what it replaced: the base name's only key on the target
    is its new key, and the only enabled version of ours is one holding that key."""
    out = []
    for target in targets:
        output = ((statuses.get(target.id) or {}).get("output")) or {}
        if not isinstance(output, Mapping) or output.get("outcome") != "completed":
            continue
        live = demo_report.live_keys(state, target)
        family = sorted(n for n in live if belongs_to_base(target.base_key_name, n))
        if family != [output.get("keyName")]:
            out.append(f"{target.id}: completed, yet the target holds {family} (expected only {output.get('keyName')})")
        ours = [
            v
            for v in demo_report.secret_versions(state, target)
            if v.get("enabled") and (v.get("tags") or {}).get(naming.TAG_MANAGED_BY) == naming.MANAGED_BY
        ]
        if len(ours) != 1 or ours[0].get("value") != live.get(str(output.get("keyName"))):
            out.append(f"{target.id}: completed, yet {len(ours)} enabled versions of ours remain (expected one)")
    return out


def _instant(text: Any) -> datetime | None:
    return demo_report.parse_time(str(text)) if text else None


def check_retry_after(
    requests: Sequence[Mapping[str, Any]],
    retry_after: Mapping[str, float],
    tries_per_call: int,
    kills: Sequence[float] = (),
) -> list[str]:
    """Inside one call, a request answered 429/503 with Retry-After is not repeated (same method and
    path) sooner.

    Only the SDK's own retries are judged here, in real time: after `tries_per_call` failed tries in a
    row the call gave up and the next try belongs to the step's durable retry, which waits on the
    durable (virtual) clock. `retry_after` maps operation names to the Retry-After the schedule set;
    the request log does not carry the header. Calls every rotation makes on one path (the Event Grid
    topic, the Logs query) are skipped: there a new call's first try looks like another call's retry
    (tests/integration/emulators/test_call_discipline.py times those per call). `kills`: when the host was killed (epoch
    seconds); a try after a kill is a new attempt of the step, not a retry inside the lost call."""
    out = []
    streak: dict[tuple[Any, Any], int] = {}
    for i, row in enumerate(requests):
        if str(row.get("operation")) in SHARED_PATH_OPERATIONS:
            continue
        key = (row.get("method"), row.get("path"))
        fault = str(row.get("fault") or "")
        if not fault.startswith("status:"):
            streak.pop(key, None)
            continue
        streak[key] = streak.get(key, 0) + 1
        wait = retry_after.get(str(row.get("operation")))
        if not wait or str(row.get("status")) not in ("429", "503") or streak[key] % tries_per_call == 0:
            continue
        ended = _instant(row.get("wall_ts") or row.get("ts"))  # real waits: the wall clock
        if ended is None:
            continue
        ended_s = ended.timestamp() + float(row.get("duration_ms") or 0) / 1000
        later = next((r for r in requests[i + 1 :] if (r.get("method"), r.get("path")) == key), None)
        at = _instant(later.get("wall_ts") or later.get("ts")) if later else None
        if at is not None and any(ended_s <= k <= at.timestamp() for k in kills):
            continue
        if at is not None and at.timestamp() + RETRY_AFTER_TOLERANCE < ended_s + wait:
            gap = at.timestamp() - ended_s
            out.append(f"Retry-After {wait:g} s ignored: {key[0]} {key[1]} repeated after {gap:.2f} s")
    return out
