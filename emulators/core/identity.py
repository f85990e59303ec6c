"""The App Service managed identity endpoint: the local token service the app's ManagedIdentityCredential calls.

On Azure the platform gives the app `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`; azure-identity
(`ManagedIdentityCredential` → msal's App Service path, msal/managed_identity.py
`_obtain_token_on_app_service`) sends `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=R&client_id=C`
with `X-IDENTITY-HEADER`, and reads `access_token` and `expires_on` from the answer. This module serves
that protocol for the app's one user-assigned identity (the deployment gives the app no system-assigned
identity, infra/modules/identity.bicep), so the production credential path is the only one the app has.
Shapes and sources: docs/emulators.md, "Managed identity".

The tokens are HS256 JWTs signed with a key kept in the state folder. The services do not check the
signature (emulators/core/auth.py: they cannot check Entra's either); they read `aud`, `exp` and `oid`.
"""

from __future__ import annotations

import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from emulators.core.auth import AUDIENCES, Caller
from emulators.core.operations import run_operation
from emulators.core.state import STATE_KEY, EmulatorState

SERVICE = "identity"
PATH = "/msi/token"
API_VERSION = "2019-08-01"
TOKEN_LIFETIME = 24 * 3600  # unverified; long enough that no local run refreshes mid-step
ID_PARAMETERS = ("client_id", "principal_id", "object_id", "mi_res_id")
# Resources the emulated services accept (emulators/core/auth.py), by the service that accepts them.
RESOURCES = {resource: service for service, resources in AUDIENCES.items() for resource in resources}


@dataclass(frozen=True)
class ManagedIdentity:
    """A user-assigned identity: what App Service selects by `client_id`, `principal_id`/`object_id` or
    `mi_res_id`. The object (principal) id is what Key Vault's audit records as the caller."""

    client_id: str
    object_id: str
    resource_id: str
    name: str

    def matches(self, parameter: str, value: str) -> bool:
        mine = self.client_id if parameter == "client_id" else self.object_id
        if parameter == "mi_res_id":
            mine = self.resource_id
        return value.lower() == mine.lower()


APP_IDENTITY = ManagedIdentity(
    client_id="00000000-0000-0000-0000-00000000c11e",
    object_id="00000000-0000-0000-0000-00000000a11e",
    resource_id=(
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/emulator/providers"
        "/Microsoft.ManagedIdentity/userAssignedIdentities/id-keyrotation"
    ),
    name="id-keyrotation",
)


def identity_header(state: EmulatorState) -> str:
    """The `IDENTITY_HEADER` value (App Service rotates it; here it is fixed per state folder)."""
    return state.persistent_secret("identity.header", lambda: str(uuid.uuid4()))


def _signing_key(state: EmulatorState) -> str:
    return state.persistent_secret("identity.signing_key")


def error(status: int, message: str) -> web.Response:
    """App Service's token service error body: `{"statusCode", "message", "correlationId"}`
    (Azure/azure-sdk-for-net#43691); msal turns it into `error_description`."""
    body = {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}
    return web.json_response(body, status=status)


def mint(state: EmulatorState, identity: ManagedIdentity, resource: str, now: float | None = None) -> tuple[str, int]:
    """A JWT for `resource` carrying the claims Entra puts in an app-only v1 access token."""
    issued = int(time.time() if now is None else now)
    expires = issued + TOKEN_LIFETIME
    claims: dict[str, Any] = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{state.tenant_id}/",
        "iat": issued,
        "nbf": issued,
        "exp": expires,
        "appid": identity.client_id,
        "appidacr": "2",
        "idtyp": "app",
        "oid": identity.object_id,
        "sub": identity.object_id,
        "tid": state.tenant_id,
        "ver": "1.0",
        "xms_mirid": identity.resource_id,
    }
    return jwt.encode(claims, _signing_key(state), algorithm="HS256"), expires


async def _check_header(request: web.Request) -> Caller | web.StreamResponse:
    """The SSRF guard: the request must carry `X-IDENTITY-HEADER` equal to `IDENTITY_HEADER`."""
    presented = request.headers.get("X-IDENTITY-HEADER", "")
    expected = identity_header(request.app[STATE_KEY])
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        return error(401, "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.")
    return Caller(oid="identity-header", name="X-IDENTITY-HEADER", audience="", claims={})


def select_identity(query: dict[str, str], identities: tuple[ManagedIdentity, ...]) -> ManagedIdentity | str:
    """The identity the request names, or why none: at most one id parameter; none means the
    system-assigned identity, which the deployment does not give the app."""
    named = [(p, query[p]) for p in ID_PARAMETERS if query.get(p)]
    if len(named) > 1:
        return f"Only one of {', '.join(ID_PARAMETERS)} may be given."
    if not named:
        return "Unable to load the proper Managed Identity."
    parameter, value = named[0]
    found = next((i for i in identities if i.matches(parameter, value)), None)
    return found or "Unable to load the proper Managed Identity."


async def _token(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    query = {k: v for k, v in request.query.items()}
    if query.get("api-version") != API_VERSION:
        return error(400, f"api-version must be {API_VERSION}, got {query.get('api-version')!r}.")
    resource = query.get("resource", "")
    if not resource:
        return error(400, "The resource parameter is required.")
    chosen = select_identity(query, (APP_IDENTITY,))
    if isinstance(chosen, str):
        return error(400, chosen)
    if resource not in RESOURCES:
        # msal: "Empirically, wrong resource ends up with a vague statusCode=500" (managed_identity.py).
        return error(500, f"No token can be issued for resource '{resource}'.")
    token, expires = mint(state, chosen, resource)
    request["caller"] = Caller(oid=chosen.object_id, name=chosen.name, audience=resource, claims={})
    return web.json_response(
        {
            "access_token": token,
            "expires_on": str(expires),
            "not_before": str(expires - TOKEN_LIFETIME),
            "resource": resource,
            "token_type": "Bearer",  # nosec B105  # the token type the docs name, not a secret
            "client_id": chosen.client_id,
        }
    )


async def token(request: web.Request) -> web.StreamResponse:
    """GET /msi/token: operation `identity.token` (fault rules can target it)."""
    return await run_operation(request, SERVICE, "identity.token", _check_header, _token)


def app_settings(state: EmulatorState) -> dict[str, str]:
    """What App Service sets for an app with this identity: the platform's `IDENTITY_ENDPOINT` and
    `IDENTITY_HEADER`, and the `AZURE_CLIENT_ID` app setting the deployment adds (infra/main.bicep)."""
    return {
        "IDENTITY_ENDPOINT": f"{state.base_url}{PATH}",
        "IDENTITY_HEADER": identity_header(state),
        "AZURE_CLIENT_ID": APP_IDENTITY.client_id,
    }


def register(app: web.Application, state: EmulatorState) -> None:
    app.router.add_get(PATH, token)
    state.snapshot_providers[SERVICE] = lambda: {
        "endpoint": f"{state.base_url}{PATH}",
        "identities": [
            {
                "clientId": APP_IDENTITY.client_id,
                "objectId": APP_IDENTITY.object_id,
                "resourceId": APP_IDENTITY.resource_id,
            }
        ],
    }
