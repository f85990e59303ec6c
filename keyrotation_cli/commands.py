"""The commands: each reads or acts through the app's HTTP API (never Durable directly: events count only
when the app signed them) and prints a table, a timeline, or --json."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from keyrotation_cli import render
from keyrotation_cli.connection import NOT_CONFIRMED, OK, ROTATION_FAILED, Connection, Failure

# The stages a rotation passes through, in order (orchestrations/rotation.py); the progress display's steps.
STAGES = ("pending", "provisioning", "verifying", "overlap", "gate", "revoking", "watching", "completed")
SUCCESS = ("completed",)


def show(args: Any, data: Any, human: Callable[[Any], None]) -> None:
    if args.json:
        render.emit_json(data)
    else:
        human(data)


# -- targets and plans ------------------------------------------------------------------------------


def targets(conn: Connection, args: Any) -> int:
    def human(data: Any) -> None:
        rows = []
        for t in data["targets"]:
            flight = t.get("inFlight") or {}
            last = t.get("lastRotation") or {}
            rows.append([
                t["id"], t["enabled"], t.get("currentKeyName"),
                f"{last.get('rotationId')} ({last.get('outcome')})" if last else None,
                f"{flight.get('rotationId')} ({flight.get('stage')})" if flight else None, t.get("nextDue"),
            ])  # fmt: skip
        render.table("Targets", ["TARGET", "ENABLED", "CURRENT KEY", "LAST ROTATION", "IN FLIGHT", "NEXT DUE"], rows)

    show(args, conn.call("GET", "targets"), human)
    return OK


def blast_radius(plan: dict[str, Any]) -> str:
    radius = plan["blastRadius"]
    keys = "?" if radius["keysDeleted"] is None else radius["keysDeleted"]
    versions = "?" if radius["versionsDisabled"] is None else radius["versionsDisabled"]
    moves = radius["consumersToMove"]
    return f"{keys} key(s) deleted, {versions} version(s) disabled, {moves} consumer(s) told, {radius['when']}"


def plan_detail(plan: dict[str, Any]) -> None:
    verdict = "would start" if plan["starts"] else "would not start"
    render.line(f"{plan['targetId']} ({plan['mode']}): {verdict}: {plan['why']}", "bold")
    current = plan.get("current") or {}
    app = plan["functionApp"]
    disables = plan["disableVersions"]
    render.fields([
        ("rotation id", plan["rotationId"]),
        ("new key", plan["newKeyName"]),
        ("current key", f"{current.get('keyName')} (version {current.get('version')})" if current else None),
        ("app", f"{app['resourceId']} (slot {app['slot']}, {app['keyScope']['kind']})"),
        ("deletes keys", plan["deleteKeys"] if plan["deleteKeys"] is not None else "unknown (ARM unreadable)"),
        ("disables versions", [v["version"] for v in disables] if disables is not None else "unknown"),
        ("overlap", plan["overlap"]),
        ("gate", "applies" if plan["gate"]["applies"] else "none (emergency or master key)"),
        ("blast radius", blast_radius(plan)),
    ])  # fmt: skip
    if plan["consumers"]:
        rows = [[c["name"], c["objectId"], c.get("lastRotationId"), c["acknowledgedLast"]] for c in plan["consumers"]]
        render.table("Consumers to notify", ["CONSUMER", "OBJECT ID", "LAST ROTATION", "ACKNOWLEDGED"], rows)
    for warning in plan["warnings"]:
        render.line(f"warning: {warning}", "yellow")


def plan(conn: Connection, args: Any) -> int:
    if args.target:
        params = {"mode": args.mode} if args.mode else None
        show(args, conn.call("GET", f"targets/{args.target}/plan", params=params), plan_detail)
        return OK

    def human(data: Any) -> None:
        rows = [
            [p["targetId"], "yes" if p["starts"] else "no", p["why"], p["newKeyName"] if p["starts"] else None,
             p["deleteKeys"], blast_radius(p), len(p["warnings"])]
            for p in data["targets"]
        ]  # fmt: skip
        render.table(
            f"Next scheduler tick (as of {data['at']})",
            ["TARGET", "ROTATES", "WHY", "NEW KEY", "DELETES", "BLAST RADIUS", "WARNINGS"],
            rows,
        )
        for p in data["targets"]:
            for warning in p["warnings"]:
                render.line(f"{p['targetId']}: warning: {warning}", "yellow")

    show(args, conn.call("GET", "plan"), human)
    return OK


# -- acting ---------------------------------------------------------------------------------------


def accepted(args: Any, data: dict[str, Any], conn: Connection) -> int:
    if args.json and not getattr(args, "watch", False):
        render.emit_json(data)
        return OK
    if not args.json:
        render.line(f"{data.get('mode', 'rotation')} {data['rotationId']} of {data['targetId']} accepted", "green")
        if data.get("supersededRotationId"):
            render.line(f"supersedes {data['supersededRotationId']}")
    if getattr(args, "watch", False):
        return watch_rotation(conn, args, data["rotationId"])
    return OK


def rotate(conn: Connection, args: Any) -> int:
    body = {"reason": args.reason} if args.reason else {}
    return accepted(args, conn.call("POST", f"targets/{args.target}/rotations", body=body), conn)


def confirm(args: Any, target: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise Failure(NOT_CONFIRMED, "not confirmed: pass --yes to run an emergency rotation without a terminal")
    answer = input(f"Kill these keys of {target} now? Type the target id to confirm: ")
    if answer.strip() != target:
        raise Failure(NOT_CONFIRMED, "not confirmed: nothing was changed")


def emergency(conn: Connection, args: Any) -> int:
    params = {"mode": "emergency", **({"overlap": args.overlap} if args.overlap else {})}
    planned = conn.call("GET", f"targets/{args.target}/plan", params=params)
    if not args.json:
        plan_detail(planned)
    confirm(args, args.target)
    body = {"reason": args.reason, **({"overlap": args.overlap} if args.overlap else {})}
    return accepted(args, conn.call("POST", f"targets/{args.target}/emergency-rotation", body=body), conn)


def decide(conn: Connection, args: Any) -> int:
    body: dict[str, Any] = {"reason": args.reason} if args.reason else {}
    if args.command == "extend":
        body["by"] = args.by
    data = conn.call("POST", f"rotations/{args.rotation}/{args.command}", body=body)

    def human(d: Any) -> None:
        render.line(f"{d['action']} sent to {d['rotationId']} (see `keyrotation status {d['rotationId']}`)", "green")

    show(args, data, human)
    return OK


# -- following a rotation -------------------------------------------------------------------------


def step_line(step: dict[str, Any]) -> str:
    who = (step.get("actor") or {}).get("name")
    detail = step.get("detail") or ""
    return f"{step.get('at')}  {step.get('step'):<10} {step.get('status'):<9} {detail}{f' (by {who})' if who else ''}"


def status_detail(view: dict[str, Any]) -> None:
    trigger = view.get("trigger") or {}
    actor = (trigger.get("actor") or {}).get("name")
    render.fields([
        ("rotation", view["rotationId"]), ("target", view["targetId"]), ("mode", view["mode"]),
        ("stage", view["stage"]), ("outcome", view["outcome"]), ("by", actor), ("reason", trigger.get("reason")),
        ("new key", view.get("keyName")), ("overlap ends", view.get("overlapEndsAt")),
        ("started", view.get("createdAt")), ("updated", view.get("lastUpdatedAt")),
    ])  # fmt: skip
    if view.get("hold"):
        render.line(f"held: {view['hold']}", "yellow")
    revocation = view.get("revocation") or {}
    if revocation.get("firstRefusedAt"):
        render.line(f"old key first refused: {revocation['firstRefusedAt']}", "green")
    elif revocation.get("status") in ("verifying", "still-accepted"):
        still = ", ".join(revocation.get("stillAccepted") or [])
        render.line(f"old key still accepted ({revocation['status']}): {still}", "red")
    render.line("timeline:")
    for step in view.get("steps") or []:
        render.line(f"  {step_line(step)}")


def ended(view: dict[str, Any]) -> int:
    return OK if view.get("outcome") in SUCCESS else ROTATION_FAILED


def status(conn: Connection, args: Any) -> int:
    view = conn.call("GET", f"rotations/{args.rotation}")
    show(args, view, status_detail)
    return OK


def watch(conn: Connection, args: Any) -> int:
    return watch_rotation(conn, args, args.rotation)


def watch_rotation(conn: Connection, args: Any, rotation_id: str) -> int:
    """Poll the rotation until it ends, printing each new step of its timeline; a progress bar of the
    stages on a terminal. Exit 0 when it completed, ROTATION_FAILED when it ended otherwise."""
    deadline = time.monotonic() + args.wait_timeout
    seen = 0
    progress = None
    task = None
    if render.is_tty() and not args.json:
        from rich.progress import BarColumn, Progress, TextColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), console=render.console, transient=True)
        progress.start()
        task = progress.add_task("pending", total=len(STAGES) - 1)
    try:
        while True:
            view = conn.call("GET", f"rotations/{rotation_id}")
            steps = view.get("steps") or []
            if not args.json:
                for step in steps[seen:]:
                    (progress.console.print if progress else print)(step_line(step))
            seen = len(steps)
            if progress is not None and task is not None:
                stage = view.get("stage") or "pending"
                progress.update(task, description=f"{rotation_id}: {stage}")
                if stage in STAGES:
                    progress.update(task, completed=STAGES.index(stage))
            if view.get("outcome") is not None:
                break
            if time.monotonic() > deadline:
                raise Failure(
                    ROTATION_FAILED,
                    f"{rotation_id} still {view.get('stage')} after {args.wait_timeout:.0f} s (still running)",
                )
            time.sleep(args.interval)
    finally:
        if progress is not None:
            progress.stop()
    if args.json:
        render.emit_json(view)
    else:
        style = "green" if ended(view) == OK else "red"
        render.line(f"{rotation_id}: {view.get('outcome')} (stage {view.get('stage')})", style)
    return ended(view)


def history(conn: Connection, args: Any) -> int:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(args.limit), **({"cursor": cursor} if cursor else {})}
        page = conn.call("GET", f"targets/{args.target}/rotations", params=params)
        items += page["rotations"]
        cursor = page.get("nextCursor")
        if not cursor or not args.all:
            break
    data = {"targetId": args.target, "rotations": items, "nextCursor": cursor}

    def human(d: Any) -> None:
        rows = []
        for r in d["rotations"]:
            trigger = r.get("trigger") or {}
            who = (trigger.get("actor") or {}).get("name")
            rows.append(
                [
                    r["rotationId"],
                    r["mode"],
                    r["outcome"],
                    r["startedAt"],
                    r.get("endedAt"),
                    who,
                    trigger.get("reason"),
                    r["keyInUse"],
                ]
            )
        render.table(
            f"Rotations of {d['targetId']}, newest first",
            ["ROTATION", "MODE", "OUTCOME", "STARTED", "ENDED", "BY", "REASON", "KEY IN USE"],
            rows,
        )
        if d.get("nextCursor"):
            render.line(f"more: --all, or the API's cursor {d['nextCursor']}")

    show(args, data, human)
    return OK
