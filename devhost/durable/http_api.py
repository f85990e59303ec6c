"""HTTP surface of the durable engine, shaped like the Durable extension's HttpApiHandler.

- rpc API (``rpcBaseUrl``): what the unmodified Python ``DurableOrchestrationClient`` calls. The real
  extension serves it on its own loopback listener (``LocalHttpListener``), never on the public port;
  devhost does the same (``devhost/durable/rpc_listener.py``), under a per-run secret path segment.
- ``/runtime/webhooks/durabletask/...``: the public Durable HTTP API (``code`` = the
  durabletask_extension system key or the master key).
- ``/admin/devhost/clock`` and ``/admin/devhost/durable/...``: devhost-only controls (master key).

Bodies never reach the logs: only names, ids and status codes do.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from devhost.durable import events as ev
from devhost.durable.clock import ClockError
from devhost.durable.events import OrchestrationStatus
from devhost.durable.store import Instance
from devhost.keys import presented_key

if TYPE_CHECKING:
    from devhost.durable.engine import DurableEngine

log = logging.getLogger("devhost.durable.http")

RPC_PREFIX = "/durabletask"
RPC_SEGMENT = "rpc_segment"  # the route variable holding the per-run secret
PUBLIC_PREFIX = "/runtime/webhooks/durabletask"
CLOCK_ROUTE = "/admin/devhost/clock"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def client_binding(host_base_url: str, system_key: str, task_hub: str, rpc_base_url: str) -> dict[str, Any]:
    """The durable client binding payload the worker hands to ``client_name`` (a JSON string there).

    As the extension builds it: the webhook URLs name the public host (with the system key), while
    ``rpcBaseUrl``, the only one the Python client calls, names the loopback rpc listener."""
    base = host_base_url.rstrip("/")
    webhook = f"{base}{PUBLIC_PREFIX}"
    key = quote(system_key, safe="")
    suffix = f"taskHub={quote(task_hub, safe='')}&connection=Storage&code={key}"
    instance = f"{webhook}/instances/INSTANCEID"
    return {
        "taskHubName": task_hub,
        "creationUrls": {
            "createNewInstancePostUri": f"{webhook}/orchestrators/{{functionName}}[/{{instanceId}}]?code={key}",
            "createAndWaitOnNewInstancePostUri": (
                f"{webhook}/orchestrators/{{functionName}}[/{{instanceId}}]"
                f"?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&code={key}"
            ),
        },
        "managementUrls": _management_urls(instance, "INSTANCEID", suffix),
        "baseUrl": webhook,
        "requiredQueryStringParameters": f"code={key}",
        "rpcBaseUrl": rpc_base_url,
    }


def _management_urls(instance_url: str, instance_id: str, suffix: str) -> dict[str, str]:
    return {
        "id": instance_id,
        "statusQueryGetUri": f"{instance_url}?{suffix}",
        "sendEventPostUri": f"{instance_url}/raiseEvent/{{eventName}}?{suffix}",
        "terminatePostUri": f"{instance_url}/terminate?reason={{text}}&{suffix}",
        "rewindPostUri": f"{instance_url}/rewind?reason={{text}}&{suffix}",
        "purgeHistoryDeleteUri": f"{instance_url}?{suffix}",
        "restartPostUri": f"{instance_url}/restart?{suffix}",
        "suspendPostUri": f"{instance_url}/suspend?reason={{text}}&{suffix}",
        "resumePostUri": f"{instance_url}/resume?reason={{text}}&{suffix}",
    }


def _json_value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _status_time(stamp: str) -> str:
    return ev.parse_time(stamp).strftime("%Y-%m-%dT%H:%M:%SZ")


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() == "true"


def _error(status: int, message: str, exception_message: str, exception_type: str) -> web.Response:
    """The ASP.NET CreateErrorResponse body the Python client reads (``ExceptionMessage``)."""
    body = {
        "Message": message,
        "ExceptionMessage": exception_message,
        "ExceptionType": exception_type,
        "StackTrace": None,
    }
    return web.json_response(body, status=status)


def _keys_match(candidate: str | None, *keys: str) -> bool:
    if not candidate:
        return False
    return any(key and hmac.compare_digest(candidate.encode(), key.encode()) for key in keys)


class DurableHttpApi:
    def __init__(self, engine: DurableEngine, *, master_key: str, system_key: str) -> None:
        self.engine = engine
        self.master_key = master_key
        self.system_key = system_key

    def add_routes(self, app: web.Application) -> None:
        """The public port: the Durable HTTP API (system or master key) and devhost's controls."""
        self._add_api(app, PUBLIC_PREFIX, self._system_key)
        app.router.add_get(CLOCK_ROUTE, self._master_key(self.get_clock))
        app.router.add_post(CLOCK_ROUTE, self._master_key(self.set_clock))
        app.router.add_get("/admin/devhost/durable/instances/{instance_id}/history", self._master_key(self.raw_history))

    def add_rpc_routes(self, app: web.Application, secret: str) -> None:
        """The rpc listener: the same API under ``/{secret}/durabletask``, no key (as the extension's)."""
        self._add_api(app, f"/{{{RPC_SEGMENT}}}{RPC_PREFIX}", self._rpc_secret(secret))

    def _add_api(self, app: web.Application, prefix: str, guard: Callable[[Handler], Handler]) -> None:
        app.router.add_post(f"{prefix}/orchestrators/{{name}}", guard(self.start))
        app.router.add_post(f"{prefix}/orchestrators/{{name}}/{{instance_id}}", guard(self.start))
        app.router.add_get(f"{prefix}/instances/", guard(self.list_instances))
        app.router.add_get(f"{prefix}/instances", guard(self.list_instances))
        app.router.add_delete(f"{prefix}/instances/", guard(self.purge_where))
        app.router.add_delete(f"{prefix}/instances", guard(self.purge_where))
        app.router.add_get(f"{prefix}/instances/{{instance_id}}", guard(self.get_status))
        app.router.add_delete(f"{prefix}/instances/{{instance_id}}", guard(self.purge))
        app.router.add_post(f"{prefix}/instances/{{instance_id}}/raiseEvent/{{event}}", guard(self.raise_event))
        app.router.add_post(f"{prefix}/instances/{{instance_id}}/terminate", guard(self.terminate))
        app.router.add_post(f"{prefix}/instances/{{instance_id}}/{{operation}}", guard(self.unsupported))

    # -- guards -----------------------------------------------------------------------------------
    def _rpc_secret(self, secret: str) -> Callable[[Handler], Handler]:
        """A wrong secret segment is an unknown path: 404, as for any path the listener does not serve."""

        def guard(handler: Handler) -> Handler:
            async def guarded(request: web.Request) -> web.StreamResponse:
                if not hmac.compare_digest(request.match_info.get(RPC_SEGMENT, "").encode(), secret.encode()):
                    return web.Response(status=404)
                return await handler(request)

            return guarded

        return guard

    def _system_key(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            supplied = presented_key(request)
            if not _keys_match(supplied, self.system_key, self.master_key):
                return web.Response(status=401)
            return await handler(request)

        return guarded

    def _master_key(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            supplied = presented_key(request)
            if not _keys_match(supplied, self.master_key):
                return web.Response(status=401)
            return await handler(request)

        return guarded

    # -- orchestration API ------------------------------------------------------------------------
    def _public_base(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}{PUBLIC_PREFIX}"

    def check_status_payload(self, request: web.Request, instance_id: str) -> dict[str, str]:
        suffix = (
            f"taskHub={quote(self.engine.task_hub, safe='')}&connection=Storage&code={quote(self.system_key, safe='')}"
        )
        instance_url = f"{self._public_base(request)}/instances/{quote(instance_id, safe='')}"
        urls = _management_urls(instance_url, instance_id, suffix)
        urls.pop("rewindPostUri")
        return urls

    async def start(self, request: web.Request) -> web.StreamResponse:
        from devhost.durable.engine import InstanceExists, UnknownOrchestrator

        name = request.match_info["name"]
        body = await request.text()
        input_text: str | None = None
        if body.strip():
            try:
                value = json.loads(body)
            except ValueError:
                return _error(
                    400, "Invalid JSON content", "Invalid JSON content", "Newtonsoft.Json.JsonReaderException"
                )
            input_text = _as_input_text(value)
        try:
            instance_id = self.engine.start_new(name, request.match_info.get("instance_id"), input_text)
        except UnknownOrchestrator as exc:
            return _error(
                400, "One or more of the arguments submitted is incorrect", str(exc), "System.ArgumentException"
            )
        except InstanceExists as exc:
            return _error(
                500,
                "Something went wrong while processing your request",
                str(exc),
                "DurableTask.Core.Exceptions.OrchestrationAlreadyExistsException",
            )
        payload = self.check_status_payload(request, instance_id)
        headers = {"Location": payload["statusQueryGetUri"], "Retry-After": "10"}
        return web.json_response(payload, status=202, headers=headers)

    def status_body(
        self, instance: Instance, *, show_history: bool, show_output: bool, show_input: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": instance.name,
            "instanceId": instance.instance_id,
            "runtimeStatus": instance.status,
            "input": _json_value(instance.input) if show_input else None,
            "customStatus": _json_value(instance.custom_status),
            "output": _json_value(instance.output),
            "createdTime": _status_time(instance.created_time),
            "lastUpdatedTime": _status_time(instance.last_updated_time),
        }
        if show_history and instance.status != OrchestrationStatus.Pending.name:
            raw = self.engine.get_history(instance.instance_id)
            body["historyEvents"] = ev.friendly_history(raw, show_output=show_output, show_input=show_input)
        return body

    async def get_status(self, request: web.Request) -> web.StreamResponse:
        instance = self.engine.get_instance(request.match_info["instance_id"])
        if instance is None:
            return web.Response(status=404)
        body = self.status_body(
            instance,
            show_history=_flag(request, "showHistory", False),
            show_output=_flag(request, "showHistoryOutput", False),
            show_input=_flag(request, "showInput", True),
        )
        if instance.status in ("Running", "Pending", "ContinuedAsNew", "Suspended"):
            headers = {"Location": str(request.url), "Retry-After": "5"}
            return web.json_response(body, status=202, headers=headers)
        failed_500 = instance.status == "Failed" and _flag(request, "returnInternalServerErrorOnFailure", False)
        return web.json_response(body, status=500 if failed_500 else 200)

    async def list_instances(self, request: web.Request) -> web.StreamResponse:
        try:
            filters = _filters(request)
        except ValueError as exc:
            return _error(
                400, "One or more of the arguments submitted is incorrect", str(exc), "System.ArgumentException"
            )
        show_input = _flag(request, "showInput", False)
        instances = self.engine.list_instances(**filters)
        top = request.query.get("top")
        if top and top.isdigit():
            instances = instances[: int(top)]
        bodies = [self.status_body(i, show_history=False, show_output=False, show_input=show_input) for i in instances]
        return web.json_response(bodies)

    async def purge(self, request: web.Request) -> web.StreamResponse:
        if self.engine.purge(request.match_info["instance_id"]) == 0:
            return web.Response(status=404)
        return web.json_response({"instancesDeleted": 1})

    async def purge_where(self, request: web.Request) -> web.StreamResponse:
        try:
            filters = _filters(request)
        except ValueError as exc:
            return _error(
                400, "One or more of the arguments submitted is incorrect", str(exc), "System.ArgumentException"
            )
        if not filters.get("created_from"):
            return web.json_response("Please provide value for 'createdTimeFrom' parameter.", status=400)
        count = self.engine.purge_where(filters["created_from"], filters.get("created_to"), filters.get("statuses"))
        if count == 0:
            return web.Response(status=404)
        return web.json_response({"instancesDeleted": count})

    async def raise_event(self, request: web.Request) -> web.StreamResponse:
        from devhost.durable.engine import InstanceGone, InstanceNotFound

        instance_id = request.match_info["instance_id"]
        instance = self.engine.get_instance(instance_id)
        if instance is None:
            return web.Response(status=404)
        if instance.status in ev.TERMINAL_STATUSES:
            return web.Response(status=410)
        if request.content_type.lower() != "application/json":
            return _error(
                400,
                "Only application/json request content is supported",
                "Only application/json request content is supported",
                "System.ArgumentException",
            )
        body = await request.text()
        if body.strip():
            try:
                json.loads(body)
            except ValueError:
                return _error(
                    400, "Invalid JSON content", "Invalid JSON content", "Newtonsoft.Json.JsonReaderException"
                )
        try:
            # Stored as sent: the Python client double-encodes, so the orchestrator sees JSON text,
            # exactly as on the real host.
            self.engine.raise_event(instance_id, request.match_info["event"], body if body.strip() else None)
        except InstanceNotFound:
            return web.Response(status=404)
        except InstanceGone:
            return web.Response(status=410)
        return web.Response(status=202)

    async def terminate(self, request: web.Request) -> web.StreamResponse:
        from devhost.durable.engine import InstanceGone, InstanceNotFound

        try:
            self.engine.terminate(request.match_info["instance_id"], request.query.get("reason"))
        except InstanceNotFound:
            return web.Response(status=404)
        except InstanceGone:
            return web.Response(status=410)
        return web.Response(status=202)

    async def unsupported(self, request: web.Request) -> web.StreamResponse:
        operation = request.match_info["operation"]
        known = ("suspend", "resume", "rewind", "restart")
        if operation.lower() not in known:
            return web.Response(status=404)
        return web.json_response({"Message": f"devhost does not implement '{operation}'"}, status=501)

    # -- devhost controls -------------------------------------------------------------------------
    def _clock_body(self) -> dict[str, Any]:
        clock = self.engine.clock
        return {"mode": clock.mode, "now": ev.fmt_time(clock.now()), "autoAdvance": clock.auto_advance}

    async def get_clock(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._clock_body())

    async def set_clock(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        if not isinstance(body, dict) or not body.keys() & {"autoAdvance", "advanceBy", "advanceTo"}:
            return web.json_response(
                {"error": "give autoAdvance, advanceBy (seconds) or advanceTo (ISO 8601)"}, status=400
            )
        clock = self.engine.clock
        try:
            if "autoAdvance" in body:
                if not isinstance(body["autoAdvance"], bool):
                    raise ClockError("autoAdvance must be true or false")
                self.engine.set_auto_advance(body["autoAdvance"])
            if "advanceBy" in body:
                seconds = body["advanceBy"]
                if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                    raise ClockError("advanceBy must be a number of seconds")
                clock.advance_by(float(seconds))
            if "advanceTo" in body:
                try:
                    moment = datetime.fromisoformat(str(body["advanceTo"]).replace("Z", "+00:00"))
                except ValueError:
                    raise ClockError("advanceTo must be an ISO 8601 time") from None
                clock.advance_to(moment)
        except ClockError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        log.info("Clock control: %s", ", ".join(sorted(body)))
        return web.json_response(self._clock_body())

    async def raw_history(self, request: web.Request) -> web.StreamResponse:
        instance = self.engine.get_instance(request.match_info["instance_id"])
        if instance is None:
            return web.Response(status=404)
        return web.json_response(self.engine.get_history(instance.instance_id))


def _as_input_text(value: Any) -> str:
    """The start body is JSON; the Python client sends its (already JSON) input as a JSON string."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return json.dumps(value)
        return value
    return json.dumps(value)


def _filters(request: web.Request) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for param, key in (("createdTimeFrom", "created_from"), ("createdTimeTo", "created_to")):
        if request.query.get(param):
            filters[key] = ev.fmt_time(ev.parse_time(request.query[param]))
    statuses = [s.strip() for s in request.query.get("runtimeStatus", "").split(",") if s.strip()]
    if statuses:
        unknown = [s for s in statuses if s not in OrchestrationStatus.__members__]
        if unknown:
            raise ValueError(f"unknown runtimeStatus: {', '.join(unknown)}")
        filters["statuses"] = statuses
    if request.query.get("instanceIdPrefix"):
        filters["prefix"] = request.query["instanceIdPrefix"]
    return filters
