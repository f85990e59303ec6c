"""Key Vault emulator on the wire: what Azure refuses (raw HTTP), and state across a restart."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from activities.clients import secret_client
from emulators.core.local_identity import LOCAL_EMULATORS, LocalTokenCredential
from tests.emulator_process import Emulator, running_emulator

API = "api-version=2026-04-01"
CHALLENGE = (
    'Bearer authorization="https://login.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47", '
    'resource="https://vault.azure.net"'
)


def token(audience: str = "https://vault.azure.net") -> str:
    return (
        LocalTokenCredential(str(uuid.uuid4()), "wire", endpoint=LOCAL_EMULATORS)
        .get_token(f"{audience}/.default")
        .token
    )


def call(emulator: Emulator, method: str, path: str, auth: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    return requests.request(method, f"{emulator.url}{path}", headers=headers, verify=emulator.ca, timeout=10, **kwargs)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_unauthenticated_requests_get_the_challenge_and_store_nothing(emulator: Emulator) -> None:
    name = unique("nobody")
    for method, path, body in (
        ("PUT", f"/secrets/{name}?{API}", None),  # the SDK's body-less first PUT
        ("PUT", f"/secrets/{name}?{API}", {"value": "sneaky"}),
        ("GET", f"/secrets?{API}", None),
        ("GET", f"/secrets/{name}/?{API}", None),
        ("DELETE", f"/deletedsecrets/{name}?{API}", None),
    ):
        response = call(emulator, method, path, json=body)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == CHALLENGE
        assert response.json() == {
            "error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}
        }
    assert name not in emulator.state()["keyvault"]["secrets"]


def test_a_token_for_another_audience_is_challenged(emulator: Emulator) -> None:
    response = call(
        emulator, "PUT", f"/secrets/{unique('aud')}?{API}", token("https://management.azure.com"), json={"value": "v"}
    )
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == CHALLENGE
    assert response.json()["error"]["message"].startswith("AKV10022: Invalid audience.")


def test_an_authenticated_set_without_a_value_is_refused(emulator: Emulator) -> None:
    name = unique("novalue")
    for body in (None, {}, {"value": None}, {"value": 42}):
        response = call(emulator, "PUT", f"/secrets/{name}?{API}", token(), json=body)
        assert response.status_code == 400 and response.json()["error"]["code"] == "BadParameter"
    assert name not in emulator.state()["keyvault"]["secrets"]


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/secrets", "api-version"),
        ("/secrets?api-version=1999-01-01", "1999-01-01"),
        (f"/secrets/bad_name/?{API}", "bad_name"),
        (f"/secrets/{'a' * 128}/?{API}", "a" * 128),
        (f"/secrets?{API}&maxresults=0", "maxresults"),
        (f"/secrets?{API}&maxresults=26", "maxresults"),
        (f"/secrets?{API}&$skiptoken=not-a-token", "skiptoken"),
    ],
)
def test_bad_requests_are_400_bad_parameter(emulator: Emulator, path: str, fragment: str) -> None:
    response = call(emulator, "GET", path, token())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadParameter" and fragment in error["message"]


def test_tag_and_size_limits(emulator: Emulator) -> None:
    name = unique("limits")
    too_many = {f"t{i}": "v" for i in range(16)}
    assert (
        call(emulator, "PUT", f"/secrets/{name}?{API}", token(), json={"value": "v", "tags": too_many}).status_code
        == 400
    )
    big = "x" * (25 * 1024 + 1)
    assert call(emulator, "PUT", f"/secrets/{name}?{API}", token(), json={"value": big}).status_code == 400
    assert call(emulator, "PUT", f"/secrets/{name}?{API}", token(), json={"value": "x" * 25 * 1024}).status_code == 200


def test_names_are_case_insensitive(emulator: Emulator) -> None:
    name = unique("Mixed")
    first = call(emulator, "PUT", f"/secrets/{name}?{API}", token(), json={"value": "one"}).json()
    second = call(emulator, "PUT", f"/secrets/{name.lower()}?{API}", token(), json={"value": "two"}).json()
    assert first["id"].rsplit("/", 1)[0] == second["id"].rsplit("/", 1)[0] == f"{emulator.url}/secrets/{name}"
    assert call(emulator, "GET", f"/secrets/{name.upper()}/?{API}", token()).json()["value"] == "two"


def test_bundles_have_azure_shapes_and_deletes_carry_no_value(emulator: Emulator) -> None:
    name, auth = unique("shape"), token()
    body = {"value": "v", "contentType": "text/plain", "attributes": {"enabled": True, "exp": 4102444800}}
    created = call(emulator, "PUT", f"/secrets/{name}?{API}", auth, json=body).json()
    assert set(created) == {"value", "id", "attributes", "contentType"}  # no tags were given
    assert set(created["attributes"]) == {"enabled", "exp", "created", "updated", "recoveryLevel", "recoverableDays"}
    assert isinstance(created["attributes"]["created"], int) and created["attributes"]["exp"] == 4102444800

    patched = call(emulator, "PATCH", f"{created['id'][len(emulator.url) :]}?{API}", auth, json={"tags": {}}).json()
    assert "value" not in patched and patched["tags"] == {}

    deleted = call(emulator, "DELETE", f"/secrets/{name}?{API}", auth).json()
    assert "value" not in deleted
    assert deleted["recoveryId"] == f"{emulator.url}/deletedsecrets/{name}" and deleted["id"] == created["id"]
    listed = call(emulator, "GET", f"/deletedsecrets?{API}&maxresults=25", auth).json()
    while listed["nextLink"]:
        if any(i["recoveryId"].endswith(f"/{name}") for i in listed["value"]):
            break
        listed = call(emulator, "GET", listed["nextLink"][len(emulator.url) :], auth).json()
    (entry,) = [i for i in listed["value"] if i["recoveryId"].endswith(f"/{name}")]
    assert entry["id"] == f"{emulator.url}/secrets/{name}" and "value" not in entry


def test_last_page_has_a_null_next_link(emulator: Emulator) -> None:
    name, auth = unique("last"), token()
    for i in range(3):
        call(emulator, "PUT", f"/secrets/{name}?{API}", auth, json={"value": str(i)}).raise_for_status()
    first = call(emulator, "GET", f"/secrets/{name}/versions?{API}&maxresults=2", auth).json()
    assert len(first["value"]) == 2 and first["nextLink"].startswith(f"{emulator.url}/secrets/{name}/versions?")
    second = call(emulator, "GET", first["nextLink"][len(emulator.url) :], auth).json()
    assert len(second["value"]) == 1 and second["nextLink"] is None


def test_state_and_audit_survive_a_restart(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as first:
        client = secret_client(first.url, first.settings())
        kept = client.set_secret("kept", "v1", tags={"stage": "previous"})
        disabled = client.set_secret("kept", "v2").properties.version
        client.update_secret_properties("kept", disabled, enabled=False)
        client.set_secret("gone", "x")
        client.begin_delete_secret("gone").wait()
        audit_before = first.control("GET", "keyvault/audit").json()["value"]

    with running_emulator(tmp_path) as second:
        client = secret_client(second.url, second.settings())
        again = client.get_secret("kept", kept.properties.version)
        assert (again.id, again.value, again.properties.tags) == (kept.id, "v1", {"stage": "previous"})
        with pytest.raises(HttpResponseError) as caught:
            client.get_secret("kept")
        assert caught.value.status_code == 403
        with pytest.raises(ResourceExistsError):
            client.set_secret("gone", "y")
        assert second.control("GET", "keyvault/audit").json()["value"][: len(audit_before)] == audit_before


def test_a_dropped_connection_leaves_no_audit_row(emulator: Emulator, clean_faults: Emulator) -> None:
    name, auth = unique("reset"), token()
    call(emulator, "PUT", f"/secrets/{name}?{API}", auth, json={"value": "v"}).raise_for_status()
    since = emulator.control("GET", "keyvault/audit").json()["value"][-1]["seq"]
    emulator.fault(operation="keyvault.get_secret", mode="reset", times=1)

    with pytest.raises(requests.ConnectionError):
        call(emulator, "GET", f"/secrets/{name}/?{API}", auth)
    assert call(emulator, "GET", f"/secrets/{name}/?{API}", auth).json()["value"] == "v"

    rows = emulator.control("GET", f"keyvault/audit?since={since}").json()["value"]
    assert [(r["operation"], r["status"]) for r in rows] == [("SecretGet", 200)]
