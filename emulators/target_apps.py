"""The emulated target function apps: their control routes and their HTTP data plane.

Control (test/demo only, returns key values): `PUT /_emulator/sites/{subscription}/{resourceGroup}/{name}`
creates or extends an app, `GET /_emulator/sites[/...]` reads them. Data plane: `/_targets/{host}/api/{fn}`
answers like the Functions host does for an HTTP function with authLevel `function`, so code can probe
a key and tests can see which keys a target accepts, including host instances' key-cache lag.
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from emulators.arm_sites import SITES_KEY, SiteStore
from emulators.operations import run_operation

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
RESOURCE_GROUP = re.compile(r"^[-\w.()]{0,89}[-\w()]$")
SITE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,58}[A-Za-z0-9])?$")
SLOT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}[A-Za-z0-9])?$")
FUNCTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}$")
SYSTEM_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SPEC_FIELDS = {"functions", "slots", "systemKeys", "keyCacheSeconds", "strictKeyValues", "location"}
MAX_KEY_CACHE_SECONDS = 3600


def _bad(message: str) -> web.Response:
    return web.json_response({"error": {"code": "BadRequest", "message": message}}, status=400)


def _names(spec: dict[str, Any], field: str, pattern: re.Pattern[str]) -> str | None:
    values = spec.get(field, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and pattern.match(v) for v in values):
        return f"{field}: a list of names matching {pattern.pattern}"
    if len({v.lower() for v in values}) != len(values):
        return f"{field}: names must be unique (case-insensitively)"
    return None


def validate_spec(subscription: str, resource_group: str, name: str, spec: Any) -> str | None:
    """Why a site definition is refused (naming the field), or None."""
    if not GUID.match(subscription):
        return "subscription: must be a GUID"
    if not RESOURCE_GROUP.match(resource_group):
        return "resourceGroup: 1-90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'"
    if not SITE_NAME.match(name):
        return "name: 1-60 letters, digits or '-', not starting or ending with '-'"
    if not isinstance(spec, dict):
        return "body: must be a JSON object"
    unknown = set(spec) - SPEC_FIELDS
    if unknown:
        return f"unknown field(s): {', '.join(sorted(unknown))}"
    for field, pattern in (("functions", FUNCTION_NAME), ("slots", SLOT_NAME), ("systemKeys", SYSTEM_KEY_NAME)):
        problem = _names(spec, field, pattern)
        if problem:
            return problem
    cache = spec.get("keyCacheSeconds", 0)
    if isinstance(cache, bool) or not isinstance(cache, int | float) or not 0 <= cache <= MAX_KEY_CACHE_SECONDS:
        return f"keyCacheSeconds: a number from 0 to {MAX_KEY_CACHE_SECONDS}"
    if not isinstance(spec.get("strictKeyValues", False), bool):
        return "strictKeyValues: true or false"
    if not isinstance(spec.get("location", ""), str):
        return "location: a string"
    return None


def _host_clash(sites: SiteStore, subscription: str, resource_group: str, name: str, slots: list[str]) -> str | None:
    """Host names are global in Azure ({app}.azurewebsites.net, {app}-{slot}...): refuse a clash."""
    labels = {name.lower(), *(f"{name}-{slot}".lower() for slot in slots)}
    for site in sites.sites():
        if (site.subscription.lower(), site.resource_group.lower(), site.name.lower()) == (
            subscription.lower(),
            resource_group.lower(),
            name.lower(),
        ):
            continue
        for instance in sites.instances(site):
            if instance.host_label in labels:
                return f"host name {instance.host_name} is already taken by {instance.resource_id}"
    return None


async def put_site(request: web.Request) -> web.Response:
    sites = request.app[SITES_KEY]
    sub, rg, name = (request.match_info[k] for k in ("subscription", "resourceGroup", "name"))
    try:
        spec = await request.json() if request.can_read_body else {}
    except ValueError:
        return _bad("body: not JSON")
    problem = validate_spec(sub, rg, name, spec)
    if problem:
        return _bad(problem)
    existing = sites.site(sub, rg, name)
    slots = [*spec.get("slots", []), *(sites.slots(existing) if existing else [])]
    clash = _host_clash(sites, sub, rg, name, slots)
    if clash:
        return web.json_response({"error": {"code": "Conflict", "message": clash}}, status=409)
    created, site = sites.upsert_site(sub, rg, name, spec, request["seq"])
    return web.json_response(sites.describe(site), status=201 if created else 200)


async def list_sites(request: web.Request) -> web.Response:
    return web.json_response({"value": request.app[SITES_KEY].snapshot()["sites"]})


async def get_site(request: web.Request) -> web.Response:
    sites = request.app[SITES_KEY]
    site = sites.site(*(request.match_info[k] for k in ("subscription", "resourceGroup", "name")))
    if site is None:
        return web.json_response({"error": {"code": "NotFound", "message": "no such site"}}, status=404)
    return web.json_response(sites.describe(site))


async def regenerate_keys(request: web.Request) -> web.Response:
    """Body `{"slot": "staging"}` (optional): every live key of that instance gets a new value at once."""
    sites = request.app[SITES_KEY]
    site = sites.site(*(request.match_info[k] for k in ("subscription", "resourceGroup", "name")))
    if site is None:
        return web.json_response({"error": {"code": "NotFound", "message": "no such site"}}, status=404)
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        return _bad("body: not JSON")
    slot = body.get("slot") if isinstance(body, dict) else None
    if not isinstance(body, dict) or set(body) - {"slot"} or not (slot is None or isinstance(slot, str)):
        return _bad("body: only an optional string `slot` is accepted")
    instance = sites.instance(site, slot)
    if instance is None:
        return web.json_response({"error": {"code": "NotFound", "message": f"no slot {slot}"}}, status=404)
    return web.json_response({"regenerated": sites.regenerate_keys(instance, request["seq"])})


# -- the data plane ------------------------------------------------------------------------------


def _presented_key(request: web.Request) -> str | None:
    """The host reads `x-functions-key` first, then the `code` query parameter."""
    header = request.headers.get("x-functions-key")
    if header:
        return header
    return request.query.get("code") or None


async def _invoke(request: web.Request) -> web.StreamResponse:
    sites = request.app[SITES_KEY]
    instance = sites.instance_by_host(request.match_info["host"])
    if instance is None:
        return web.Response(status=404)
    function = sites.function(instance.site, request.match_info["function"])
    if function is None:
        return web.Response(status=404)
    presented = _presented_key(request)
    granted = sites.authorize(instance, function, presented, time.time()) if presented else None
    if granted is None:
        return web.Response(status=401)
    authorized_by, key_name = granted
    return web.json_response({"function": function, "authorizedBy": authorized_by, "keyName": key_name})


async def invoke(request: web.Request) -> web.StreamResponse:
    return await run_operation(request, "target", "target.invoke", None, _invoke)


def register(app: web.Application, sites: SiteStore) -> None:
    app[SITES_KEY] = sites
    app.router.add_put("/_emulator/sites/{subscription}/{resourceGroup}/{name}", put_site)
    app.router.add_get("/_emulator/sites/{subscription}/{resourceGroup}/{name}", get_site)
    app.router.add_post("/_emulator/sites/{subscription}/{resourceGroup}/{name}/regenerate-keys", regenerate_keys)
    app.router.add_get("/_emulator/sites", list_sites)
    app.router.add_route("*", "/_targets/{host}/api/{function}", invoke)
