"""ARM for Microsoft.Web function app keys, as `WebSiteManagementClient` (azure-mgmt-web 11.0.1) calls it.

ARM paths are case-insensitive and aiohttp routing is not, so one catch-all route parses the path
itself and picks the operation before the shared pipeline (auth → faults → handler) runs. Errors come
in two shapes, as in Azure: the ARM envelope `{"error": {...}}` from the ARM front door (auth,
api-version, unknown resources) and Microsoft.Web's PascalCase envelope from the resource provider
(body validation, the host runtime's answers).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from emulators.arm import keys as arm_keys
from emulators.arm import target_apps
from emulators.arm.sites import HOST_KINDS, MASTER_KEY_NAME, SITES_KEY, Instance, KeyScope, SiteStore
from emulators.core.auth import AUDIENCES, Caller, TokenError, bearer_token, parse_token
from emulators.core.errors import arm_error, default_code, msweb_error
from emulators.core.operations import run_operation
from emulators.core.state import STATE_KEY, EmulatorState

# Microsoft.Web api-versions ARM routes for sites (stable ones; ARM refuses any other).
API_VERSIONS = frozenset(
    {
        "2016-08-01", "2018-02-01", "2018-11-01", "2019-08-01", "2020-06-01", "2020-09-01", "2020-10-01",
        "2020-12-01", "2021-01-01", "2021-01-15", "2021-02-01", "2021-03-01", "2022-03-01", "2022-09-01",
        "2023-01-01", "2023-12-01", "2024-04-01", "2024-11-01", "2025-03-01", "2025-05-01",
    }
)  # fmt: skip
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FUNCTIONS_PAGE_SIZE = 50

# -- authentication: ARM's 401s ------------------------------------------------------------------


def _unauthorized(code: str, message: str, tenant: str) -> web.Response:
    challenge = (
        f'Bearer authorization_uri="https://login.windows.net/{tenant}", error="invalid_token", '
        f'error_description="{message}"'
    )
    return arm_error(401, code, message, {"WWW-Authenticate": challenge})


def _claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return value if isinstance(value, dict) else None


async def authenticate(request: web.Request) -> Caller | web.StreamResponse:
    """Bearer token for https://management.azure.com, refused with ARM's codes and challenge."""
    tenant = request.app[STATE_KEY].tenant_id
    token = bearer_token(request)
    if token is None:
        return _unauthorized(
            "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.", tenant
        )
    claims = _claims(token)
    if claims is None:
        return _unauthorized(
            "InvalidAuthenticationToken", "The access token is invalid: it is not a well-formed JWT.", tenant
        )
    try:
        return parse_token(token, "arm")
    except TokenError as exc:
        if claims.get("aud") not in AUDIENCES["arm"]:
            return _unauthorized(
                "InvalidAuthenticationTokenAudience",
                f"The access token has been obtained for wrong audience or resource '{claims.get('aud')}'. It should"
                " exactly match with one of the allowed audiences 'https://management.core.windows.net/',"
                "'https://management.azure.com/','https://management.azure.com'.",
                tenant,
            )
        if "expiry" in str(exc):
            message = "The access token expiry UTC time is in the past."
            return _unauthorized("ExpiredAuthenticationToken", message, tenant)
        return _unauthorized("InvalidAuthenticationToken", f"The access token is invalid. {exc}", tenant)


# -- Microsoft.Web errors ------------------------------------------------------------------------


def host_runtime_error(status: int, reason: str | None = None) -> web.Response:
    """What Microsoft.Web answers when the app's host runtime fails a key operation."""
    reason = reason or default_code(status)
    return msweb_error(status, default_code(status), f"Encountered an error ({reason}) from host runtime.")


def host_runtime_fault(operation: str = "arm.list_host_keys", status: int = 500, **rule: Any) -> dict[str, Any]:
    """A fault rule (for POST /_emulator/faults) making `operation` fail the way an unhealthy host does."""
    reason = default_code(status)
    message = f"Encountered an error ({reason}) from host runtime."
    body = {
        "Code": reason,
        "Message": message,
        "Target": None,
        "Details": [{"Message": message}, {"Code": reason}, {"ErrorEntity": {"Code": reason, "Message": message}}],
        "Innererror": None,
    }
    return {"operation": operation, "status": status, "body": body, **rule}


def _bad_request(message: str) -> web.Response:
    return msweb_error(400, "BadRequest", message)


# -- path parsing --------------------------------------------------------------------------------


@dataclass
class ArmRequest:
    subscription: str
    resource_group: str
    site: str
    slot: str | None
    rest: list[str] = field(default_factory=list)


def parse_path(raw_path: str) -> ArmRequest | None:
    """`/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}[/slots/{slot}]/...`."""
    segments = [unquote(s) for s in raw_path.rstrip("/").split("/")[1:]]
    fixed = ["subscriptions", None, "resourcegroups", None, "providers", "microsoft.web", "sites", None]
    if len(segments) < len(fixed):
        return None
    for want, got in zip(fixed, segments, strict=False):
        if want is not None and got.lower() != want:
            return None
    request = ArmRequest(segments[1], segments[3], segments[7], None, segments[8:])
    if len(request.rest) >= 2 and request.rest[0].lower() == "slots":
        request.slot, request.rest = request.rest[1], request.rest[2:]
    return request


Handler = Callable[[web.Request, Instance, ArmRequest], Awaitable[web.StreamResponse]]


def route(method: str, rest: list[str]) -> tuple[str, Handler] | None:
    """The operation name and handler for the part of the path after the site (or slot)."""
    low = [s.lower() for s in rest]
    n = len(low)
    if n == 0 and method == "GET":
        return "arm.get_site", get_site
    if n == 3 and low[:2] == ["host", "default"] and low[2] == "listkeys" and method == "POST":
        return "arm.list_host_keys", list_host_keys
    if n == 4 and low[:2] == ["host", "default"]:
        if method == "PUT":
            return "arm.put_host_secret", put_host_secret
        if method == "DELETE":
            return "arm.delete_host_secret", delete_host_secret
    if n == 1 and low[0] == "functions" and method == "GET":
        return "arm.list_functions", list_functions
    if n == 2 and low[0] == "functions" and method == "GET":
        return "arm.get_function", get_function
    if n == 3 and low[0] == "functions" and low[2] == "listkeys" and method == "POST":
        return "arm.list_function_keys", list_function_keys
    if n == 4 and low[0] == "functions" and low[2] == "keys":
        if method == "PUT":
            return "arm.put_function_secret", put_function_secret
        if method == "DELETE":
            return "arm.delete_function_secret", delete_function_secret
    return None


# -- the front door: api-version and resource resolution -----------------------------------------


def _api_version(request: web.Request) -> str | None:
    for name, value in request.query.items():
        if name.lower() == "api-version":
            return value
    return None


def _resolve(request: web.Request, arm: ArmRequest) -> Instance | web.Response:
    sites = request.app[SITES_KEY]
    version = _api_version(request)
    if not version:
        return arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if version not in API_VERSIONS:
        supported = ", ".join(sorted(API_VERSIONS))
        return arm_error(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for location 'eastus' and API version '{version}' for type"
            f" 'sites'. The supported api-versions are '{supported}'.",
        )
    if not GUID.match(arm.subscription):
        message = f"The provided subscription identifier '{arm.subscription}' is malformed or invalid."
        return arm_error(400, "InvalidSubscriptionId", message)
    if not sites.subscription_known(arm.subscription):
        return arm_error(404, "SubscriptionNotFound", f"The subscription '{arm.subscription}' could not be found.")
    if not sites.resource_group_known(arm.subscription, arm.resource_group):
        return arm_error(404, "ResourceGroupNotFound", f"Resource group '{arm.resource_group}' could not be found.")
    site = sites.site(arm.subscription, arm.resource_group, arm.site)
    if site is None:
        return _resource_not_found(f"Microsoft.Web/sites/{arm.site}", arm.resource_group)
    instance = sites.instance(site, arm.slot)
    if instance is None:
        return _resource_not_found(f"Microsoft.Web/sites/slots/{site.name}/{arm.slot}", arm.resource_group)
    return instance


def _resource_not_found(resource: str, resource_group: str) -> web.Response:
    return arm_error(
        404,
        "ResourceNotFound",
        f"The Resource '{resource}' under resource group '{resource_group}' was not found. For more details please"
        " go to https://aka.ms/ARMResourceNotFoundFix",
    )


def _function(request: web.Request, instance: Instance, name: str) -> str | web.Response:
    found = request.app[SITES_KEY].function(instance.site, name)
    if found is None:
        resource = f"Microsoft.Web/sites/functions/{instance.site.name}/{name}"
        return _resource_not_found(resource, instance.site.resource_group)
    return found


async def dispatch(request: web.Request) -> web.StreamResponse:
    arm = parse_path(request.rel_url.raw_path)
    found = route(request.method, arm.rest) if arm else None
    if arm is None or found is None:
        return await run_operation(request, "arm", "arm.unknown_route", authenticate, _no_route)
    name, handler = found

    async def handle(req: web.Request) -> web.StreamResponse:
        instance = _resolve(req, arm)
        if isinstance(instance, web.StreamResponse):
            return instance
        return await handler(req, instance, arm)

    return await run_operation(request, "arm", name, authenticate, handle)


async def _no_route(request: web.Request) -> web.StreamResponse:
    return arm_error(
        404,
        "NotFound",
        f"No HTTP resource was found that matches the request URI '{request.method} {request.path}'."
        " The emulator serves Microsoft.Web/sites GET and key operations only.",
    )


# -- operations ----------------------------------------------------------------------------------


async def list_host_keys(request: web.Request, instance: Instance, arm: ArmRequest) -> web.StreamResponse:
    sites = request.app[SITES_KEY]
    master = sites.live_keys(instance, KeyScope("masterKey")).get(MASTER_KEY_NAME)
    return web.json_response(
        {
            "masterKey": master,
            "functionKeys": sites.live_keys(instance, KeyScope("functionKeys")),
            "systemKeys": sites.live_keys(instance, KeyScope("systemKeys")),
        }
    )


async def list_function_keys(request: web.Request, instance: Instance, arm: ArmRequest) -> web.StreamResponse:
    function = _function(request, instance, arm.rest[1])
    if isinstance(function, web.StreamResponse):
        return function
    # Flat {name: value}, not the StringDictionary the spec describes (the SDK reads r["default"]).
    return web.json_response(request.app[SITES_KEY].live_keys(instance, KeyScope("function", function)))


def _host_scope(key_type: str, key_name: str) -> KeyScope | web.Response:
    kinds = {k.lower(): k for k in HOST_KINDS}
    kind = kinds.get(key_type.lower())
    if kind is None:
        return _bad_request(f"Invalid key type '{key_type}'. Valid key types: {', '.join(HOST_KINDS)}.")
    if key_name.lower() == MASTER_KEY_NAME:
        return KeyScope("masterKey")  # the host treats _master under any host key type as the master key
    if kind == "masterKey":
        return _bad_request(f"The masterKey key type holds only the key named '{MASTER_KEY_NAME}'.")
    return KeyScope(kind)


async def _read_key_body(request: web.Request, key_name: str) -> str | web.Response | None:
    """The value to set (None: generate one) from `{"properties": {"name", "value"}}` (quirk 1)."""
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        return arm_error(
            400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: {exc}."
        )
    if not isinstance(body, dict):
        return arm_error(400, "InvalidRequestContent", "The request content must be a JSON object.")
    props = next((v for k, v in body.items() if k.lower() == "properties"), None)
    if props is None:
        return _bad_request("Properties object is not present in the request body.")
    if not isinstance(props, dict):
        return _bad_request("Properties must be a JSON object.")
    fields = {k.lower(): v for k, v in props.items()}
    body_name = fields.get("name")
    if body_name is not None and (not isinstance(body_name, str) or body_name.lower() != key_name.lower()):
        return _bad_request(f"The key name in the request body ('{body_name}') does not match the URL ('{key_name}').")
    value = fields.get("value")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return _bad_request("The key value must be a string.")
    return value


def _check_value(instance: Instance, scope: KeyScope, value: str) -> web.Response | None:
    problem = arm_keys.value_problem(value)
    if problem:
        return _bad_request(problem)
    if instance.site.strict_key_values and not arm_keys.is_identifiable(value, scope.seed()):
        return host_runtime_error(400, "BadRequest")
    return None


async def _put_key(request: web.Request, instance: Instance, scope: KeyScope, key_name: str) -> web.StreamResponse:
    if scope.kind != "masterKey" and not KEY_NAME.match(key_name):
        return _bad_request(
            f"Invalid key name '{key_name}': use 1-128 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit."
        )
    value = await _read_key_body(request, key_name)
    if isinstance(value, web.StreamResponse):
        return value
    if value is not None:
        refused = _check_value(instance, scope, value)
        if refused is not None:
            return refused
    name = MASTER_KEY_NAME if scope.kind == "masterKey" else key_name
    change = request.app[SITES_KEY].set_key(instance, scope, name, value, request["seq"])
    if scope.kind == "function":
        path, rtype = f"{instance.resource_id}/functions/{scope.function}/keys/{change.name}", "functions/keys"
    else:
        path, rtype = f"{instance.resource_id}/host/default/{scope.kind}/{change.name}", f"host/{scope.kind}"
    slot_type = "sites/slots" if instance.slot else "sites"
    body = {
        "id": path,
        "name": change.name,
        "type": f"Microsoft.Web/{slot_type}/{rtype}",
        "location": instance.site.location,
        "properties": {"name": change.name, "value": change.value},
    }
    # The host answers Created for a generated master key and Updated for a supplied one.
    created = (value is None) if scope.kind == "masterKey" else change.created
    return web.json_response(body, status=201 if created else 200)


async def put_host_secret(request: web.Request, instance: Instance, arm: ArmRequest) -> web.StreamResponse:
    scope = _host_scope(arm.rest[2], arm.rest[3])
    if isinstance(scope, web.StreamResponse):
        return scope
    return await _put_key(request, instance, scope, arm.rest[3])


async def put_function_secret(request: web.Request, instance: Instance, arm: ArmRequest) -> web.StreamResponse:
    function = _function(request, instance, arm.rest[1])
    if isinstance(function, web.StreamResponse):
        return function
    return await _put_key(request, instance, KeyScope("function", function), arm.rest[3])


async def _delete_key(request: web.Request, instance: Instance, scope: KeyScope, key_name: str) -> web.StreamResponse:
    if scope.kind == "masterKey":
        return _bad_request("Cannot delete System Key.")  # the master key can be renewed, never deleted
    if not request.app[SITES_KEY].delete_key(instance, scope, key_name, request["seq"]):
        return host_runtime_error(404, "NotFound")
    return web.Response(status=204)


async def delete_host_secret(request: web.Request, instance: Instance, arm: ArmRequest) -> web.StreamResponse:
    scope = _host_scope(arm.rest[2], arm.rest[3])
    if isinstance(scope, web.StreamResponse):
        return scope
    return await _delete_key(request, instance, scope, arm.rest[3])


async def delete_function_secret(request: web.Request, instance: Instance, arm: ArmRequest) -> web.StreamResponse:
    function = _function(request, instance, arm.rest[1])
    if isinstance(function, web.StreamResponse):
        return function
    return await _delete_key(request, instance, KeyScope("function", function), arm.rest[3])


def function_envelope(instance: Instance, function: str) -> dict[str, Any]:
    """A FunctionEnvelope as Microsoft.Web returns it (snake_case properties, as the real API has them)."""
    host = f"https://{instance.host_name}"
    site = instance.site
    name = f"{site.name}/{instance.slot}/{function}" if instance.slot else f"{site.name}/{function}"
    return {
        "id": f"{instance.resource_id}/functions/{function}",
        "name": name,
        "type": "Microsoft.Web/sites/slots/functions" if instance.slot else "Microsoft.Web/sites/functions",
        "location": site.location,
        "properties": {
            "name": function,
            "function_app_id": instance.resource_id,
            "script_root_path_href": f"{host}/admin/vfs/home/site/wwwroot/",
            "script_href": f"{host}/admin/vfs/home/site/wwwroot/function_app.py",
            "config_href": None,
            "test_data_href": None,
            "secrets_file_href": None,
            "href": f"{host}/admin/functions/{function}",
            "config": {
                "name": function,
                "entryPoint": function,
                "scriptFile": "function_app.py",
                "language": "python",
                "functionDirectory": "/home/site/wwwroot",
                "bindings": [
                    {
                        "name": "req",
                        "type": "httpTrigger",
                        "direction": "IN",
                        "authLevel": "FUNCTION",
                        "methods": ["GET", "POST"],
                        "route": function,
                    },
                    {"name": "$return", "type": "http", "direction": "OUT"},
                ],
            },
            "files": None,
            "test_data": None,
            "invoke_url_template": f"{host}/api/{function.lower()}",
            "language": "python",
            "isDisabled": False,
        },
    }


async def list_functions(request: web.Request, instance: Instance, arm: ArmRequest) -> web.StreamResponse:
    functions = request.app[SITES_KEY].functions(instance.site)
    token = next((v for k, v in request.query.items() if k.lower() == "$skiptoken"), "0")
    try:
        start = max(int(token), 0)
    except ValueError:
        return arm_error(400, "InvalidSkipToken", f"The skip token '{token}' is not valid.")
    page = functions[start : start + FUNCTIONS_PAGE_SIZE]
    next_link = None
    if start + FUNCTIONS_PAGE_SIZE < len(functions):
        base = request.app[STATE_KEY].base_url
        next_link = (
            f"{base}{instance.resource_id}/functions?api-version={_api_version(request)}"
            f"&$skipToken={start + FUNCTIONS_PAGE_SIZE}"
        )
    return web.json_response({"value": [function_envelope(instance, f) for f in page], "nextLink": next_link})


async def get_function(request: web.Request, instance: Instance, arm: ArmRequest) -> web.StreamResponse:
    function = _function(request, instance, arm.rest[1])
    if isinstance(function, web.StreamResponse):
        return function
    return web.json_response(function_envelope(instance, function))


def site_resource(instance: Instance) -> dict[str, Any]:
    """The Site ARM returns for `GET .../sites/{app}[/slots/{slot}]` (WebApps_Get / WebApps_GetSlot), with
    the properties the emulator can stand behind; its host names are what the probe may be sent to."""
    site = instance.site
    properties: dict[str, Any] = {
        "state": "Running",
        "hostNames": instance.host_names,
        "repositorySiteName": site.name,
        "usageState": "Normal",
        "enabled": True,
        "enabledHostNames": instance.enabled_host_names,
        "availabilityState": "Normal",
        "hostNameSslStates": [
            {"name": name, "sslState": "Disabled", "hostType": "Repository" if ".scm." in name else "Standard"}
            for name in instance.enabled_host_names
        ],
        "reserved": True,
        "lastModifiedTimeUtc": site.created,
        "resourceGroup": site.resource_group,
        "defaultHostName": instance.host_name,
        "httpsOnly": True,
        "hostNamesDisabled": False,
        "publicNetworkAccess": "Enabled",
    }
    if site.domain_scope:
        properties["autoGeneratedDomainNameLabelScope"] = site.domain_scope
    return {
        "id": instance.resource_id,
        "name": f"{site.name}/{instance.slot}" if instance.slot else site.name,
        "type": "Microsoft.Web/sites/slots" if instance.slot else "Microsoft.Web/sites",
        "kind": "functionapp,linux",
        "location": site.location,
        "properties": properties,
    }


async def get_site(request: web.Request, instance: Instance, arm: ArmRequest) -> web.StreamResponse:
    return web.json_response(site_resource(instance))


# -- registration --------------------------------------------------------------------------------

_SUBSCRIPTIONS = "".join(f"[{c}{c.upper()}]" for c in "subscriptions")


def register(app: web.Application, state: EmulatorState) -> None:
    """ARM routes (any case), the target apps' data plane and control routes, the `arm` snapshot."""
    sites = SiteStore(state.store)
    app.router.add_route("*", "/{prefix:" + _SUBSCRIPTIONS + "}/{tail:.*}", dispatch)
    target_apps.register(app, sites)
    state.snapshot_providers["arm"] = sites.snapshot
