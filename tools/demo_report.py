"""What the demo prints once the rotations are over: a timeline per rotation and the expectations, each
PASS or FAIL. Pure functions of what was recorded (final Durable statuses, the emulators' state and
received events), so they can be tested without a running stack. Values from the emulator state are
compared, never printed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rotation.naming import belongs_to_base
from rotation.policy import Target

EVENT_PREFIX = "KeyRotation."
STARTED, NEW_KEY, HELD, REVOKED, COMPLETED = (
    "RotationStarted",
    "NewKeyAvailable",
    "RotationHeld",
    "OldKeyRevoked",
    "RotationCompleted",
)


@dataclass(frozen=True)
class Check:
    ok: bool
    subject: str  # a target id, or "I1" / "I2"
    text: str

    def line(self, width: int) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.subject:<{width}}  {self.text}"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def short_time(text: str | None) -> str:
    at = parse_time(text)
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else "?"


def describe_duration(seconds: float) -> str:
    seconds = round(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    parts += [f"{minutes}m", f"{secs}s"] if not days else [f"{minutes}m"]
    return " ".join(parts)


def short_version(version: str | None) -> str:
    return f"{version[:8]}…" if version else "—"


def _flat(value: Any, nested: bool = False) -> str:
    """JSON-ish values as an operator reads them: `k=v` pairs, nulls dropped, lists of records by id."""
    if isinstance(value, Mapping):
        pairs = ", ".join(f"{k}={_flat(v, True)}" for k, v in value.items() if v not in (None, "", [], {}))
        return f"{{{pairs}}}" if nested else pairs
    if isinstance(value, list):
        if value and all(isinstance(x, Mapping) for x in value):
            ids = [str(x.get("targetId") or x.get("id") or x.get("name") or "?") for x in value]
            return f"{len(value)} ({' '.join(ids)})"
        return "[" + " ".join(_flat(x, True) for x in value) + "]"
    return str(value)


def compact(detail: Any, limit: int = 70) -> str:
    """One line, at most `limit` characters."""
    if detail is None:
        return ""
    text = " ".join(_flat(detail).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_types(events: Iterable[Mapping[str, Any]], target_id: str) -> list[tuple[str, str]]:
    """(type without prefix, time) of the events received for a target, in order, duplicates (same id,
    Event Grid is at-least-once) dropped."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for row in events:
        if row.get("subject") != f"targets/{target_id}" or row.get("id") in seen:
            continue
        seen.add(str(row.get("id")))
        event = row.get("event") or {}
        out.append((str(row.get("type", "")).removeprefix(EVENT_PREFIX), str(event.get("time") or "")))
    return out


def expected_events(held: bool) -> list[str]:
    return [STARTED, NEW_KEY, *([HELD] if held else []), REVOKED, COMPLETED]


# -- the emulator state, read for one target --------------------------------------------------------


def _instance(state: Mapping[str, Any], target: Target) -> Mapping[str, Any] | None:
    app = target.function_app
    for site in (state.get("arm") or {}).get("sites", []):
        if str(site.get("id", "")).lower() != app.site_id.lower():
            continue
        for instance in site.get("instances", []):
            if (instance.get("slot") or "").lower() == (app.slot or "").lower():
                return instance
    return None


def live_keys(state: Mapping[str, Any], target: Target) -> dict[str, str]:
    """name -> value of the keys live in the target's scope (host function keys, the function's keys,
    or the master key)."""
    instance = _instance(state, target) or {}
    scope = target.key_scope
    wanted = {"host": "functionKeys", "function": "function", "masterKey": "masterKey"}[scope.kind]
    keys: dict[str, str] = {}
    for key in instance.get("keys", []):
        if key.get("retired") is not None or key.get("scope") != wanted:
            continue
        if wanted == "function" and (key.get("function") or "").lower() != (scope.function or "").lower():
            continue
        keys[str(key["name"])] = str(key["value"])
    return keys


def secret_versions(state: Mapping[str, Any], target: Target) -> list[Mapping[str, Any]]:
    """The target secret's versions, oldest first."""
    secrets = (state.get("keyvault") or {}).get("secrets") or {}
    wanted = target.key_vault.secret_name.lower()
    for name, secret in secrets.items():
        if name.lower() == wanted:
            return sorted(secret.get("versions", []), key=lambda v: v.get("created") or 0)
    return []


# -- timeline -----------------------------------------------------------------------------------------


def timeline(
    target: Target,
    final: Mapping[str, Any] | None,
    state: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    real_seconds: float | None = None,
) -> list[str]:
    status = (final or {}).get("customStatus") or {}
    if not isinstance(status, Mapping):
        status = {}
    runtime = (final or {}).get("runtimeStatus", "not started")
    head = f"── {target.id}"
    rid = status.get("rotationId")
    lines = [f"{head} {'─' * max(0, 78 - len(head))}"]
    lines.append(
        f"  rotation   {rid or '—'}  ({status.get('mode') or '?'}; {runtime}; stage {status.get('stage') or '?'})"
    )
    trigger = status.get("trigger")
    if trigger:
        lines.append(f"  trigger    {compact(trigger, 90)}")
    steps = [s for s in status.get("steps") or [] if isinstance(s, Mapping)]
    if steps:
        width = max(len(str(s.get("step", ""))) for s in steps)
        lines.append(f"  {'virtual time (UTC)':<21}{'step':<{width + 2}}{'status':<11}detail")
        for step in steps:
            lines.append(
                f"  {short_time(step.get('at')):<21}{step.get('step', '')!s:<{width + 2}}"
                f"{step.get('status', '')!s:<11}{compact(step.get('detail'))}"
            )
    overlap_end = next((s.get("at") for s in steps if s.get("step") == "overlap"), None)
    planned = status.get("overlapEndsAt")
    if overlap_end and planned:
        ended, until = parse_time(overlap_end), parse_time(planned)
        early = ended is not None and until is not None and ended < until
        lines.append(
            f"  overlap    ended {short_time(overlap_end)}, planned until {short_time(planned)}"
            + (
                f" (ended {describe_duration((until - ended).total_seconds())} early)"
                if early and until and ended
                else ""
            )
        )
    hold = status.get("hold")
    if hold:
        lines.append(f"  hold       {compact(hold, 90)}")
    lines.append(f"  key        {status.get('previousKeyName') or '—'}  →  {status.get('keyName') or '—'}")
    versions = secret_versions(state, target)
    enabled = [v for v in versions if v.get("enabled")]
    current = status.get("version")
    previous = status.get("previousVersion")
    previous_state = next(
        ("disabled" if not v.get("enabled") else "ENABLED" for v in versions if v.get("version") == previous), "—"
    )
    lines.append(
        f"  Key Vault  {target.key_vault.secret_name}: current {short_version(current)}"
        f"  previous {short_version(previous)} ({previous_state if previous else 'none: first rotation'})"
        f"  [{len(versions)} version(s), {len(enabled)} enabled]"
    )
    received = event_types(events, target.id)
    if received:
        lines.append("  events     " + short_time(received[0][1]) + "  " + received[0][0])
        lines.extend(f"             {short_time(at)}  {kind}" for kind, at in received[1:])
    else:
        lines.append("  events     none received")
    start = parse_time(steps[0].get("at")) if steps else None
    end = parse_time(steps[-1].get("at")) if steps else None
    if start and end:
        real = f" ({real_seconds:.1f} s real)" if real_seconds is not None else ""
        lines.append(f"  elapsed    {describe_duration((end - start).total_seconds())} virtual{real}")
    return lines


# -- expectations ------------------------------------------------------------------------------------


def check_rotation(
    target: Target,
    final: Mapping[str, Any] | None,
    state: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    held: bool,
    approved: bool | None = None,
) -> list[Check]:
    """What must be true of one target once its rotation is over (DESIGN lifecycle, I2's end state)."""
    tid = target.id
    if final is None:
        return [Check(False, tid, "no rotation instance was started for it (scheduler did not fan out?)")]
    status = final.get("customStatus") if isinstance(final.get("customStatus"), Mapping) else {}
    output = final.get("output") if isinstance(final.get("output"), Mapping) else {}
    runtime = final.get("runtimeStatus")
    outcome = output.get("outcome")
    checks = [
        Check(
            runtime == "Completed" and outcome == "completed",
            tid,
            f"rotation ended {runtime}, outcome {outcome or '—'} (expected Completed, completed)",
        )
    ]
    new_name, new_version, prev_version = status.get("keyName"), status.get("version"), status.get("previousVersion")
    keys = live_keys(state, target)
    family = [n for n in keys if belongs_to_base(target.base_key_name, n)]
    leftovers = [n for n in family if not new_name or n.lower() != str(new_name).lower()]
    checks.append(
        Check(
            bool(new_name) and not leftovers and len(family) == 1,
            tid,
            f"old keys gone from the target, only {new_name or '—'} left"
            + (f" (still there: {', '.join(leftovers)})" if leftovers else "")
            + ("" if family else " (no key of the family is live)"),
        )
    )
    versions = secret_versions(state, target)
    enabled = [v for v in versions if v.get("enabled")]
    newest = enabled[-1] if enabled else None
    same_value = bool(newest and new_name and keys.get(str(new_name)) == newest.get("value"))
    checks.append(
        Check(
            bool(newest and newest.get("version") == new_version and same_value),
            tid,
            f"new key {new_name or '—'} is Key Vault's newest enabled version {short_version(new_version)}"
            + ("" if newest else " (no enabled version)")
            + (
                ""
                if not newest or newest.get("version") == new_version
                else f" (it is {short_version(newest.get('version'))})"
            )
            + ("" if same_value or not newest else " (values differ)"),
        )
    )
    others_enabled = [v.get("version") for v in enabled if v.get("version") != new_version]
    if prev_version:
        prev = next((v for v in versions if v.get("version") == prev_version), None)
        ok = prev is not None and not prev.get("enabled") and not others_enabled
        text = f"previous version {short_version(prev_version)} disabled"
    else:
        ok = not others_enabled
        text = "no previous version to disable (first rotation adopted the operator's key)"
    if others_enabled:
        text += f" (still enabled: {', '.join(short_version(v) for v in others_enabled)})"
    checks.append(Check(ok, tid, text))
    got = [kind for kind, _ in event_types(events, tid)]
    want = expected_events(held)
    checks.append(
        Check(
            got == want,
            tid,
            "events " + " → ".join(want) + ("" if got == want else f" (received: {' → '.join(got) or 'none'})"),
        )
    )
    if held:
        was_held = HELD in got
        checks.append(
            Check(
                was_held and bool(approved) and outcome == "completed",
                tid,
                "held by the gate, approved by the demo's approver, then completed"
                + ("" if was_held else " (never held)")
                + ("" if approved else " (the approval was not delivered)"),
            )
        )
    return checks
