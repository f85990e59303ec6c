"""The operator API's read-only views for tools: dry-run plans, rotation history, the OpenAPI document.

A plan is what a rotation would do now, made by the code a rotation runs (activities/plan.py): these are
the routes that read Azure directly (Key Vault properties, one ARM key listing), in a worker thread, and
never write. History is read from the Key Vault versions' tags (activities/history.py says why). Same
Easy Auth roles and error rules as every route (triggers/api_http.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from activities import history, plan
from activities.secret_versions import SecretVersions
from rotation import naming
from rotation.identity import ROLE_READER, Caller
from rotation.policy import Target
from rotation.redaction import safe_error_message
from triggers.api_http import (
    ANON,
    ApiError,
    Reply,
    api_route,
    bad_request,
    handle,
    policy,
    shown_name,
    target_from_path,
)
from triggers.api_targets import emergency_overlap, snapshot
from triggers.api_views import Snapshot, rotation_view
from triggers.openapi import document

bp = df.Blueprint()


def query(req: func.HttpRequest, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, only `allowed` ones (a function key in `code` is refused as everywhere)."""
    out: dict[str, str] = {}
    for name, value in req.params.items():
        if name.lower() == "code":
            raise bad_request("code", "function keys are not accepted: sign in (App Service Authentication)")
        if name not in allowed:
            raise bad_request(shown_name(name), f"is not a known query parameter (known: {', '.join(allowed)})")
        out[name] = value
    return out


def latest_of(snap: Snapshot | None) -> plan.Latest:
    if snap is None:
        return plan.Latest()
    return plan.Latest(
        rotation_id=snap.rotation_id,
        running=snap.running,
        stage=snap.stage,
        outcome=snap.outcome,
        stuck=snap.stuck,
        steps=snap.steps,
    )


def plan_mode(target: Target, params: dict[str, str]) -> tuple[naming.Mode, timedelta | None]:
    mode = params.get("mode", "scheduled")
    if mode not in plan.MODES:
        raise bad_request("mode", f"must be one of {', '.join(plan.MODES)}")
    overlap = None
    if "overlap" in params:
        if mode != "emergency":
            raise bad_request("overlap", "is only for mode=emergency (other rotations take the policy's overlap)")
        overlap = emergency_overlap(target, params["overlap"])
    return mode, overlap


@api_route(bp, "GET", "targets/{target}/plan", ROLE_READER)
async def api_plan_target(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    target = target_from_path(req)
    mode, overlap = plan_mode(target, query(req, ("mode", "overlap")))
    snap = await snapshot(client, target.id)
    state = await asyncio.to_thread(plan.read_state, target)
    body = plan.compose(target, mode, state, latest_of(snap), datetime.now(UTC), overlap)
    return Reply(200, body, audit={"targetId": target.id})


@api_route(bp, "GET", "plan", ROLE_READER)
async def api_plan_all(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    query(req, ())
    targets = list(policy())
    snaps = await asyncio.gather(*(snapshot(client, t.id) for t in targets))
    states = await asyncio.to_thread(plan.read_states, targets)
    now = datetime.now(UTC)
    plans = [
        plan.compose(t, "scheduled", s, latest_of(snap), now) for t, s, snap in zip(targets, states, snaps, strict=True)
    ]
    return Reply(200, {"at": plans[0]["at"] if plans else None, "targets": plans})


def page_size(params: dict[str, str]) -> int:
    raw = params.get("limit", str(history.DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= history.MAX_LIMIT:
        raise bad_request("limit", f"must be a whole number from 1 to {history.MAX_LIMIT}")
    return int(raw)


@api_route(bp, "GET", "targets/{target}/rotations", ROLE_READER)
async def api_list_rotations(req: func.HttpRequest, client: df.DurableOrchestrationClient, caller: Caller) -> Reply:
    target = target_from_path(req)
    params = query(req, ("limit", "cursor"))
    limit = page_size(params)
    cursor = params.get("cursor")
    if cursor is not None and not (
        naming.is_rotation_id(cursor) and naming.parse_rotation_id(cursor).target_id == target.id
    ):
        raise bad_request("cursor", "must be the nextCursor of the previous page (a rotation id of this target)")
    snap = await snapshot(client, target.id)
    try:
        versions = await asyncio.to_thread(SecretVersions(target).list)
    except Exception as exc:
        raise ApiError(
            502, "key_vault_unreadable", f"the history is read from Key Vault: {safe_error_message(exc)}"
        ) from None
    items = history.entries(target, versions, rotation_view(snap) if snap else None)
    chunk, next_cursor = history.page(items, limit, cursor)
    body: dict[str, Any] = {"targetId": target.id, "rotations": chunk, "nextCursor": next_cursor}
    return Reply(200, body, audit={"targetId": target.id})


@bp.route(route="openapi.json", methods=["GET"], auth_level=ANON)
async def api_openapi(req: func.HttpRequest) -> func.HttpResponse:
    async def work(caller: Caller) -> Reply:
        query(req, ())
        return Reply(200, document())

    return await handle(req, "GET /openapi.json", ROLE_READER, work)
