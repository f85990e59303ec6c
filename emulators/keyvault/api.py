"""The Key Vault secrets data plane, as the unmodified `SecretClient` speaks it.

One vault per listener; its base URL is taken from the request's Host so returned ids match the URL
the client used. As strict as Azure where the app could be caught out: every unauthenticated request
(including the client's body-less first PUT) gets the 401 challenge, reading a disabled version is
403, a soft-deleted name cannot be set again (409), purge is refused under purge protection, names
and api-versions are validated, and paging follows `nextLink`. Every secret operation is audited
(emulators/keyvault/audit.py); the rows are what Log Analytics serves as Key Vault audit logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from emulators.core.auth import Caller, TokenError, bearer_token, parse_token
from emulators.core.errors import keyvault_error
from emulators.core.operations import run_operation
from emulators.core.state import STATE_KEY, EmulatorState
from emulators.keyvault import audit as keyvault_audit
from emulators.keyvault.audit import AuditEntry
from emulators.keyvault.secret_store import MAX_PAGE_SIZE, RECOVERABLE_DAYS, Secret, Vault, Version

SERVICE = "keyvault"
RESOURCE = "https://vault.azure.net"
API_VERSIONS = frozenset({"2026-04-01", "2025-07-01", "7.6", "7.5", "7.4", "7.3", "7.2", "7.1", "7.0", "2016-10-01"})
LATEST_API_VERSION = "2026-04-01"
NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION = re.compile(r"^[0-9a-f]{32}$")
MAX_VALUE_BYTES = 25 * 1024
MAX_TAGS = 15
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256
MAX_CONTENT_TYPE = 255
NOT_FOUND_HINT = (
    " If you recently deleted this secret you may be able to recover it using the correct recovery command."
    " For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)

VAULT_KEY = web.AppKey("keyvault_vault", Vault)
Handler = Callable[[web.Request, Vault], Awaitable[web.StreamResponse]]


class KeyVaultFailure(Exception):
    """A refusal in Key Vault's error envelope, raised from deep in a handler."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner

    def response(self) -> web.Response:
        return keyvault_error(self.status, self.code, self.message, self.inner)


def bad_parameter(message: str) -> KeyVaultFailure:
    return KeyVaultFailure(400, "BadParameter", message)


def secret_not_found(name: str, version: str | None = None) -> KeyVaultFailure:
    ident = f"{name}/{version}" if version else name
    return KeyVaultFailure(
        404, "SecretNotFound", f"A secret with (name/id) {ident} was not found in this key vault.{NOT_FOUND_HINT}"
    )


# -- authentication: the challenge every unauthenticated request gets (quirk 4) --
def _claimed_audience(token: str) -> Any:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("aud")
    except (IndexError, ValueError, AttributeError):
        return None


def challenge(state: EmulatorState, message: str) -> web.Response:
    header = f'Bearer authorization="https://login.windows.net/{state.tenant_id}", resource="{RESOURCE}"'
    return keyvault_error(401, "Unauthorized", message, headers={"WWW-Authenticate": header})


async def authenticate(request: web.Request) -> Caller | web.StreamResponse:
    state = request.app[STATE_KEY]
    token = bearer_token(request)
    if token is None:
        return challenge(state, "AKV10000: Request is missing a Bearer or PoP token.")
    try:
        return parse_token(token, SERVICE)
    except TokenError as exc:
        if "audience" in str(exc):
            found = _claimed_audience(token)
            return challenge(state, f"AKV10022: Invalid audience. Expected {RESOURCE}, found: {found}.")
        return challenge(state, str(exc))


# -- request checks --
def check_api_version(request: web.Request) -> str:
    version = request.query.get("api-version")
    if not version:
        raise bad_parameter("The api-version query parameter is required.")
    if version not in API_VERSIONS:
        raise bad_parameter(
            f"The specified version ({version}) is not recognized. "
            f"Consider using the latest supported version ({LATEST_API_VERSION})."
        )
    return version


def secret_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME.match(name):
        raise bad_parameter(f"The request URI contains an invalid name: {name}")
    return name


def vault_url(request: web.Request) -> str:
    return f"https://{request.host}"


def page_request(request: web.Request, vault: Vault) -> tuple[int, int | None, str | None]:
    """(page size, maxresults as given, position after which the page starts)."""
    given: int | None = None
    raw = request.query.get("maxresults")
    if raw is not None:
        try:
            given = int(raw)
        except ValueError:
            given = 0
        if not 1 <= given <= MAX_PAGE_SIZE:
            raise bad_parameter(
                f"The value {raw} is not valid for the parameter maxresults. "
                f"It must be an integer from 1 to {MAX_PAGE_SIZE}."
            )
    after = None
    token = request.query.get("$skiptoken")
    if token is not None:
        try:
            after = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["after"]
            if not isinstance(after, str):
                raise ValueError("after")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise bad_parameter("The $skiptoken parameter is invalid.") from exc
    return given or vault.page_size, given, after


def next_link(request: web.Request, api_version: str, given: int | None, after: str) -> str:
    token = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).rstrip(b"=").decode()
    link = f"{vault_url(request)}{request.path}?api-version={api_version}&$skiptoken={token}"
    return f"{link}&maxresults={given}" if given else link


async def read_body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        raise bad_parameter("The request body is empty; a JSON object is required.")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise bad_parameter("The request body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise bad_parameter("The request body must be a JSON object.")
    return body


def parse_properties(body: dict[str, Any]) -> dict[str, Any]:
    """contentType, tags and attributes (enabled, nbf, exp) as Version field changes."""
    changes: dict[str, Any] = {}
    if body.get("contentType") is not None:
        content_type = body["contentType"]
        if not isinstance(content_type, str) or len(content_type) > MAX_CONTENT_TYPE:
            raise bad_parameter(f"contentType: must be a string of at most {MAX_CONTENT_TYPE} characters.")
        changes["content_type"] = content_type
    if body.get("tags") is not None:
        tags = body["tags"]
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise bad_parameter("tags: must be an object of string values.")
        if len(tags) > MAX_TAGS:
            raise bad_parameter(f"tags: at most {MAX_TAGS} tags are allowed.")
        for key, value in tags.items():
            if len(key) > MAX_TAG_NAME or len(value) > MAX_TAG_VALUE:
                raise bad_parameter(
                    f"tags: names are at most {MAX_TAG_NAME} and values at most {MAX_TAG_VALUE} characters."
                )
        changes["tags"] = tags
    attributes = body.get("attributes")
    if attributes is not None:
        if not isinstance(attributes, dict):
            raise bad_parameter("attributes: must be an object.")
        if attributes.get("enabled") is not None:
            if not isinstance(attributes["enabled"], bool):
                raise bad_parameter("attributes.enabled: must be a boolean.")
            changes["enabled"] = attributes["enabled"]
        for key in ("nbf", "exp"):
            if attributes.get(key) is not None:
                stamp = attributes[key]
                if isinstance(stamp, bool) or not isinstance(stamp, int | float):
                    raise bad_parameter(f"attributes.{key}: must be a Unix time in seconds.")
                changes[key] = int(stamp)
    return changes


# -- response shapes --
def attributes(version: Version, vault: Vault) -> dict[str, Any]:
    out: dict[str, Any] = {"enabled": version.enabled}
    if version.nbf is not None:
        out["nbf"] = version.nbf
    if version.exp is not None:
        out["exp"] = version.exp
    out.update(
        created=version.created,
        updated=version.updated,
        recoveryLevel=vault.recovery_level,
        recoverableDays=RECOVERABLE_DAYS,
    )
    return out


def secret_id(base: str, version: Version) -> str:
    return f"{base}/secrets/{version.name}/{version.version}"


def item(base: str, version: Version, vault: Vault, *, versioned: bool, value: bool = False) -> dict[str, Any]:
    """A SecretBundle (value=True), a bundle without value, or a SecretItem (list entry)."""
    out: dict[str, Any] = {}
    if value:
        out["value"] = version.value
    out["id"] = secret_id(base, version) if versioned else f"{base}/secrets/{version.name}"
    out["attributes"] = attributes(version, vault)
    if version.tags is not None:
        out["tags"] = version.tags
    if version.content_type is not None:
        out["contentType"] = version.content_type
    return out


def deleted_item(base: str, secret: Secret, vault: Vault, *, versioned: bool) -> dict[str, Any]:
    """DeletedSecretBundle (versioned id) or DeletedSecretItem; never a value, as in Azure."""
    return {
        "recoveryId": f"{base}/deletedsecrets/{secret.name}",
        "deletedDate": secret.deleted_on,
        "scheduledPurgeDate": secret.scheduled_purge,
        **item(base, secret.latest, vault, versioned=versioned),
    }


# -- handlers --
def live_secret(vault: Vault, name: str) -> Secret:
    found = vault.secret(name)
    if found is None or found.deleted_on is not None or not found.versions:
        raise secret_not_found(name)
    return found


def deleted_secret(vault: Vault, name: str) -> Secret:
    found = vault.secret(name)
    if found is None or found.deleted_on is None or not found.versions:
        raise KeyVaultFailure(404, "SecretNotFound", f"Deleted Secret not found: {name}")
    return found


def pick_version(secret: Secret, name: str, version: str | None) -> Version:
    if not version:
        return secret.latest
    for candidate in secret.versions:
        if candidate.version == version:
            return candidate
    raise secret_not_found(name, version)


async def set_secret(request: web.Request, vault: Vault) -> web.StreamResponse:
    check_api_version(request)
    name = secret_name(request)
    body = await read_body(request)
    value = body.get("value")
    if not isinstance(value, str):
        raise bad_parameter("value: a string is required.")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise bad_parameter(f"value: at most {MAX_VALUE_BYTES} bytes are allowed.")
    props = parse_properties(body)
    existing = vault.secret(name, with_versions=False)
    if existing is not None and existing.deleted_on is not None:
        raise KeyVaultFailure(
            409,
            "Conflict",
            f"Secret {existing.name} is currently in a deleted but recoverable state, and its name cannot be "
            "reused; in this state, the secret can only be recovered or purged.",
            inner="ObjectIsDeletedButRecoverable",
        )
    version = vault.add_version(
        request["seq"],
        name,
        value,
        content_type=props.get("content_type"),
        tags=props.get("tags"),
        enabled=props.get("enabled", True),
        nbf=props.get("nbf"),
        exp=props.get("exp"),
    )
    base = vault_url(request)
    request["kv_secret_id"] = secret_id(base, version)
    return web.json_response(item(base, version, vault, versioned=True, value=True))


async def get_secret(request: web.Request, vault: Vault) -> web.StreamResponse:
    """Latest or by version. nbf/exp are informational: Key Vault serves expired and not-yet-valid secrets."""
    check_api_version(request)
    name = secret_name(request)
    version = pick_version(live_secret(vault, name), name, request.match_info.get("version"))
    if not version.enabled:
        raise KeyVaultFailure(
            403, "Forbidden", "Operation get is not allowed on a disabled secret.", inner="SecretDisabled"
        )
    base = vault_url(request)
    request["kv_secret_id"] = secret_id(base, version)
    return web.json_response(item(base, version, vault, versioned=True, value=True))


async def update_secret(request: web.Request, vault: Vault) -> web.StreamResponse:
    check_api_version(request)
    name = secret_name(request)
    version = pick_version(live_secret(vault, name), name, request.match_info.get("version"))
    changes = parse_properties(await read_body(request))
    updated = vault.update_version(request["seq"], version, changes)
    base = vault_url(request)
    request["kv_secret_id"] = secret_id(base, updated)
    return web.json_response(item(base, updated, vault, versioned=True))


async def list_versions(request: web.Request, vault: Vault) -> web.StreamResponse:
    api_version = check_api_version(request)
    name = secret_name(request)
    size, given, after = page_request(request, vault)
    rows = vault.versions_page(name, after, size + 1)
    base = vault_url(request)
    page = rows[:size]
    more = next_link(request, api_version, given, page[-1].version) if len(rows) > size else None
    return web.json_response({"value": [item(base, v, vault, versioned=True) for v in page], "nextLink": more})


async def list_secrets(request: web.Request, vault: Vault) -> web.StreamResponse:
    api_version = check_api_version(request)
    size, given, after = page_request(request, vault)
    rows = vault.secrets_page(deleted=False, after=after, limit=size + 1)
    base = vault_url(request)
    page = rows[:size]
    more = next_link(request, api_version, given, page[-1].name.lower()) if len(rows) > size else None
    return web.json_response({"value": [item(base, s.latest, vault, versioned=False) for s in page], "nextLink": more})


async def delete_secret(request: web.Request, vault: Vault) -> web.StreamResponse:
    check_api_version(request)
    name = secret_name(request)
    deleted = vault.soft_delete(request["seq"], live_secret(vault, name))
    base = vault_url(request)
    request["kv_secret_id"] = secret_id(base, deleted.latest)
    return web.json_response(deleted_item(base, deleted, vault, versioned=True))


async def get_deleted_secret(request: web.Request, vault: Vault) -> web.StreamResponse:
    check_api_version(request)
    name = secret_name(request)
    deleted = deleted_secret(vault, name)
    base = vault_url(request)
    request["kv_secret_id"] = secret_id(base, deleted.latest)
    return web.json_response(deleted_item(base, deleted, vault, versioned=True))


async def list_deleted_secrets(request: web.Request, vault: Vault) -> web.StreamResponse:
    api_version = check_api_version(request)
    size, given, after = page_request(request, vault)
    rows = vault.secrets_page(deleted=True, after=after, limit=size + 1)
    base = vault_url(request)
    page = rows[:size]
    more = next_link(request, api_version, given, page[-1].name.lower()) if len(rows) > size else None
    return web.json_response({"value": [deleted_item(base, s, vault, versioned=False) for s in page], "nextLink": more})


async def recover_deleted_secret(request: web.Request, vault: Vault) -> web.StreamResponse:
    check_api_version(request)
    name = secret_name(request)
    recovered = vault.recover(request["seq"], deleted_secret(vault, name))
    base = vault_url(request)
    request["kv_secret_id"] = secret_id(base, recovered.latest)
    return web.json_response(item(base, recovered.latest, vault, versioned=True))


async def purge_deleted_secret(request: web.Request, vault: Vault) -> web.StreamResponse:
    check_api_version(request)
    name = secret_name(request)
    deleted = deleted_secret(vault, name)
    if vault.purge_protection:
        raise KeyVaultFailure(
            403,
            "Forbidden",
            'Operation "purge" is not allowed because purge protection is enabled for this vault. Key Vault '
            f"service will automatically purge it after the retention period has passed.\r\nVault: {request.host}",
        )
    vault.purge(request["seq"], deleted)
    request["kv_secret_id"] = secret_id(vault_url(request), deleted.latest)
    return web.Response(status=204)


# -- the pipeline: authenticate → fault → handler, then one audit row whatever the outcome --
def route(operation: str, audit_operation: str, handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        vault = request.app[VAULT_KEY]

        async def run(req: web.Request) -> web.StreamResponse:
            try:
                return await handler(req, vault)
            except KeyVaultFailure as failure:
                return failure.response()

        status: int | None = None  # stays None when a reset fault drops the connection: no answer, no row
        try:
            response = await run_operation(request, SERVICE, f"{SERVICE}.{operation}", authenticate, run)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            if status is not None:
                caller = request.get("caller")
                keyvault_audit.append(
                    request.app[STATE_KEY].store,
                    AuditEntry(
                        operation=audit_operation,
                        secret_name=request.match_info.get("name"),
                        version=request.match_info.get("version") or None,
                        caller=caller if isinstance(caller, Caller) else None,
                        status=status,
                        request_uri=str(request.url),
                        secret_id=request.get("kv_secret_id"),
                    ),
                )

    handle.__name__ = operation
    return handle


# -- control routes (test/demo only) --
async def get_vault_settings(request: web.Request) -> web.Response:
    return web.json_response(request.app[VAULT_KEY].settings())


async def update_vault_settings(request: web.Request) -> web.Response:
    """PATCH /_emulator/keyvault/vault {"purgeProtection": bool, "pageSize": 1..25}."""
    vault = request.app[VAULT_KEY]
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return web.json_response({"error": {"code": "BadRequest", "message": "body: a JSON object"}}, status=400)
    unknown = set(body) - {"purgeProtection", "pageSize"}
    protection, size = body.get("purgeProtection"), body.get("pageSize")
    problem = None
    if unknown:
        problem = f"unknown field(s): {', '.join(sorted(unknown))}"
    elif protection is not None and not isinstance(protection, bool):
        problem = "purgeProtection: must be a boolean"
    elif size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 25):
        problem = f"pageSize: an integer from 1 to {MAX_PAGE_SIZE}"
    if problem:
        return web.json_response({"error": {"code": "BadRequest", "message": problem}}, status=400)
    vault.configure(request.get("seq"), protection, size)
    return web.json_response(vault.settings())


ROUTES: tuple[tuple[str, str, str, str, Handler], ...] = (
    # method, path, operation name (faults, request log), audit OperationName, handler
    ("GET", "/secrets", "list_secrets", "SecretList", list_secrets),
    ("PUT", "/secrets/{name}", "set_secret", "SecretSet", set_secret),
    ("GET", "/secrets/{name}", "get_secret", "SecretGet", get_secret),
    ("GET", "/secrets/{name}/", "get_secret", "SecretGet", get_secret),
    ("GET", "/secrets/{name}/versions", "list_versions", "SecretListVersions", list_versions),
    ("GET", "/secrets/{name}/{version}", "get_secret", "SecretGet", get_secret),
    ("PATCH", "/secrets/{name}", "update_secret", "SecretUpdate", update_secret),
    ("PATCH", "/secrets/{name}/", "update_secret", "SecretUpdate", update_secret),
    ("PATCH", "/secrets/{name}/{version}", "update_secret", "SecretUpdate", update_secret),
    ("DELETE", "/secrets/{name}", "delete_secret", "SecretDelete", delete_secret),
    ("GET", "/deletedsecrets", "list_deleted_secrets", "SecretListDeleted", list_deleted_secrets),
    ("GET", "/deletedsecrets/{name}", "get_deleted_secret", "SecretGetDeleted", get_deleted_secret),
    ("DELETE", "/deletedsecrets/{name}", "purge_deleted_secret", "SecretPurge", purge_deleted_secret),
    ("POST", "/deletedsecrets/{name}/recover", "recover_deleted_secret", "SecretRecover", recover_deleted_secret),
)


def register(app: web.Application, state: EmulatorState) -> None:
    """Add the vault's data plane, its audit log and control routes."""
    vault = Vault(state.store)
    app[VAULT_KEY] = vault
    for method, path, operation, audit_operation, handler in ROUTES:
        app.router.add_route(method, path, route(operation, audit_operation, handler))
    keyvault_audit.register(app, state.store)
    app.router.add_get("/_emulator/keyvault/vault", get_vault_settings)
    app.router.add_patch("/_emulator/keyvault/vault", update_vault_settings)
    state.snapshot_providers[SERVICE] = vault.snapshot
