"""The App Service managed identity endpoint, as azure-identity's ManagedIdentityCredential (msal's App
Service path) calls it, and as the emulated services then see the tokens it issues."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential

from activities import clients
from activities.clients import logs_client, secret_client, web_client
from tests.emulator_process import Emulator

RESOURCES = ("https://management.azure.com", "https://vault.azure.net", "https://eventgrid.azure.net")


def ask(emulator: Emulator, header: str | None = None, **params: str) -> requests.Response:
    identity = emulator.endpoints["managedIdentity"]
    query = {"api-version": "2019-08-01", "resource": "https://vault.azure.net", **params}
    sent = {"X-IDENTITY-HEADER": identity["IDENTITY_HEADER"] if header is None else header}
    return requests.get(identity["IDENTITY_ENDPOINT"], params=query, headers=sent, verify=emulator.ca, timeout=10)


def claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


@pytest.mark.parametrize("resource", [*RESOURCES, "https://api.loganalytics.io"])
def test_the_credential_gets_a_token_per_resource_naming_the_apps_identity(emulator: Emulator, resource: str) -> None:
    emulator.settings()
    identity = emulator.endpoints["managedIdentity"]
    token = ManagedIdentityCredential(client_id=identity["AZURE_CLIENT_ID"]).get_token(f"{resource}/.default")
    got = claims(token.token)
    assert got["aud"] == resource
    assert (got["oid"], got["appid"], got["tid"]) == (
        emulator.app_object_id,
        identity["AZURE_CLIENT_ID"],
        emulator.endpoints["tenantId"],
    )
    assert got["exp"] == token.expires_on and got["exp"] > got["iat"]


def test_the_answer_has_app_services_fields(emulator: Emulator) -> None:
    identity = emulator.endpoints["managedIdentity"]
    answer = ask(emulator, client_id=identity["AZURE_CLIENT_ID"])
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "expires_on", "not_before", "resource", "token_type", "client_id"}
    assert (body["resource"], body["token_type"], body["client_id"]) == (
        "https://vault.azure.net",
        "Bearer",
        identity["AZURE_CLIENT_ID"],
    )
    assert body["expires_on"] == str(claims(body["access_token"])["exp"])  # epoch seconds, as a string


def test_object_id_and_resource_id_select_the_same_identity(emulator: Emulator) -> None:
    identity = emulator.endpoints["managedIdentity"]
    for params in ({"principal_id": emulator.app_object_id}, {"mi_res_id": identity["resourceId"]}):
        answer = ask(emulator, **params)
        assert answer.status_code == 200, params
        assert claims(answer.json()["access_token"])["oid"] == emulator.app_object_id


APP = "the app's client id"
UNKNOWN = "Unable to load the proper Managed Identity"  # Azure/azure-sdk-for-net#43691


@pytest.mark.parametrize(
    ("header", "params", "status", "message"),
    [
        ("", {"client_id": APP}, 401, "X-IDENTITY-HEADER"),
        ("not-the-header", {"client_id": APP}, 401, "X-IDENTITY-HEADER"),
        (None, {"client_id": "00000000-0000-0000-0000-0000000000ff"}, 400, UNKNOWN),
        (None, {}, 400, UNKNOWN),  # no system-assigned identity
        (None, {"client_id": APP, "api-version": "2017-09-01"}, 400, "api-version"),
        (None, {"client_id": APP, "resource": ""}, 400, "resource"),
        (None, {"client_id": APP, "resource": "https://storage.azure.com"}, 500, "resource"),
    ],
)
def test_refusals_are_shaped_as_app_services(
    emulator: Emulator, header: str | None, params: dict[str, str], status: int, message: str
) -> None:
    app = emulator.endpoints["managedIdentity"]["AZURE_CLIENT_ID"]
    answer = ask(emulator, header, **{k: app if v == APP else v for k, v in params.items()})
    assert answer.status_code == status
    body = answer.json()
    assert set(body) == {"statusCode", "message", "correlationId"} and body["statusCode"] == status
    assert message in body["message"]


def test_two_identity_parameters_are_refused(emulator: Emulator) -> None:
    identity = emulator.endpoints["managedIdentity"]
    answer = ask(emulator, client_id=identity["AZURE_CLIENT_ID"], principal_id=emulator.app_object_id)
    assert answer.status_code == 400 and "Only one of" in answer.json()["message"]


def test_a_wrong_client_id_fails_the_credential_without_a_token(emulator: Emulator) -> None:
    emulator.settings()
    wrong = ManagedIdentityCredential(client_id="00000000-0000-0000-0000-0000000000ff")
    with pytest.raises((CredentialUnavailableError, ClientAuthenticationError), match="Managed Identity"):
        wrong.get_token("https://vault.azure.net/.default")


def test_every_app_client_authenticates_through_the_endpoint(emulator: Emulator) -> None:
    cfg = emulator.settings()
    since = max([r["seq"] for r in emulator.requests_log(tokens=True)], default=0)
    with secret_client(emulator.url, cfg) as vault:
        vault.set_secret("identity-check", "v" * 40)
    with web_client("00000000-0000-0000-0000-0000000000b1", cfg) as web, pytest.raises(ResourceNotFoundError):
        web.web_apps.list_host_keys("no-such-group", "no-such-app")  # authenticated, then 404
    logs_client(cfg).query_workspace(emulator.endpoints["workspaceId"], "AppRequests | count", timespan=None)
    log = emulator.requests_log(since, tokens=True)
    tokens = [r for r in log if r["operation"] == "identity.token"]
    assert {r["status"] for r in tokens} == {200}
    assert {r["query"].split("resource=")[1].split("&")[0] for r in tokens} == {
        "https%3A%2F%2Fvault.azure.net",
        "https%3A%2F%2Fmanagement.azure.com",
        "https%3A%2F%2Fapi.loganalytics.io",
    }
    served = [r for r in log if r["service"] in ("keyvault", "arm", "logs") and r["caller"]]
    assert served and {r["caller"] for r in served} == {emulator.app_object_id}


def test_a_fault_on_the_endpoint_fails_the_call_loudly(clean_faults: Emulator) -> None:
    cfg = clean_faults.settings()
    clients._credential.cache_clear()  # a credential kept by the process holds its tokens: a new one asks
    clean_faults.fault(operation="identity.token", status=503, times=None)
    with secret_client(clean_faults.url, cfg) as vault, pytest.raises(ClientAuthenticationError):
        vault.set_secret("identity-fault", "v" * 40)
