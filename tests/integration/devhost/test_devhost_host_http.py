"""HTTP triggers and the Easy Auth simulation, against a real ``python -m devhost serve`` process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.devhost_launcher import HOST_APP, Devhost, running_devhost

pytestmark = pytest.mark.slow

APP_ENV = {"TICK_SCHEDULE": "0 0 0 1 1 *", "FAST_SCHEDULE": "0 0 0 1 1 *", "FROM_TEST_ENV": "yes"}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    with running_devhost(tmp_path_factory.mktemp("devhost"), HOST_APP, emulators=False, env=APP_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def host_without_easy_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    env = {**APP_ENV, "WEBSITE_AUTH_ENABLED": "True"}  # a stray variable must not make the app believe
    state = tmp_path_factory.mktemp("devhost-noauth")
    with running_devhost(state, HOST_APP, emulators=False, easy_auth=False, env=env) as running:
        yield running


def test_route_params_query_and_optional_segments(host: Devhost) -> None:
    full = host.get("api/items/42/widget", params={"verbose": "1"}).json()
    assert full["function"] == "item"
    assert full["route"] == {"id": "42", "name": "widget"}
    assert full["params"] == {"verbose": "1"}
    assert host.get("api/items/42").json()["route"] == {"id": "42"}


def test_literal_route_wins_and_constraints_filter(host: Devhost) -> None:
    assert host.get("api/items/latest").json()["function"] == "latest_item"
    assert host.get("api/items/not-a-number").status_code == 404


def test_catch_all_route(host: Devhost) -> None:
    assert host.get("api/files/a/b/c.txt").json()["route"] == {"path": "a/b/c.txt"}


def test_unknown_route_is_404_and_wrong_method_is_405(host: Devhost) -> None:
    assert host.get("api/nothing/here").status_code == 404
    assert host.get("nothing").status_code == 404
    wrong = host.request("DELETE", "api/items/1")
    assert wrong.status_code == 405
    assert "GET" in wrong.headers["Allow"]


def test_body_headers_and_status_round_trip(host: Devhost) -> None:
    response = host.request("PUT", "api/echo", data=b'{"a": 1}', headers={"Content-Type": "application/json"})
    assert response.status_code == 201
    assert response.content == b'{"a": 1}'
    assert response.headers["X-Echo-Method"] == "PUT"
    assert response.headers["Content-Type"].startswith("application/json")


def test_function_level_needs_a_function_or_master_key(host: Devhost) -> None:
    assert host.get("api/secured").status_code == 401
    assert host.get("api/secured", params={"code": "wrong"}).status_code == 401
    assert host.get("api/secured", params={"code": host.system_key("eventgrid_extension")}).status_code == 401
    assert host.get("api/secured", params={"code": host.function_key}).status_code == 200
    assert host.get("api/secured", headers={"x-functions-key": host.function_key}).status_code == 200
    assert host.get("api/secured", params={"code": host.master_key}).status_code == 200


def test_the_key_header_wins_over_the_code_parameter(host: Devhost) -> None:
    """As the host reads keys: a present x-functions-key header is the key, whatever `code` says."""
    wrong, right = {"x-functions-key": "wrong"}, {"code": host.function_key}
    assert host.get("api/secured", headers=wrong, params=right).status_code == 401
    assert (
        host.get("api/secured", headers={"x-functions-key": host.function_key}, params={"code": "wrong"}).status_code
        == 200
    )


def test_admin_level_needs_the_master_key(host: Devhost) -> None:
    assert host.get("api/admin-only", params={"code": host.function_key}).status_code == 401
    assert host.get("api/admin-only", headers={"x-functions-key": host.master_key}).status_code == 200


def test_unhandled_exception_is_an_empty_500_and_the_log_has_no_message(host: Devhost) -> None:
    response = host.get("api/boom")
    assert response.status_code == 500
    assert response.content == b""
    log = Path(host.endpoints["logFile"]).read_text()
    assert "Functions.boom" in log and "RuntimeError" in log
    assert "s3cr3t" not in log and "s3cr3t" not in host.output()


def test_app_settings_reach_the_app(host: Devhost) -> None:
    assert host.get("api/settings/FROM_TEST_ENV").json() == {"value": "yes"}
    assert host.get("api/settings/WEBSITE_AUTH_ENABLED").json() == {"value": "True"}


# -- Easy Auth ------------------------------------------------------------------------------------


def test_anonymous_caller_is_refused_before_the_app(host: Devhost) -> None:
    response = host.get("api/whoami", anonymous=True)  # an anonymous-level function: Easy Auth answers first
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="devhost"'


def test_client_sent_principal_headers_are_stripped(host: Devhost) -> None:
    forged = {
        "X-MS-CLIENT-PRINCIPAL": "eyJhdXRoX3R5cCI6ImFhZCJ9",
        "X-MS-CLIENT-PRINCIPAL-NAME": "mallory",
        "X-MS-CLIENT-PRINCIPAL-ID": "00000000-0000-0000-0000-000000000000",
        "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
        "X-MS-TOKEN-AAD-ACCESS-TOKEN": "whatever",
    }
    assert host.get("api/whoami", headers=forged, anonymous=True).status_code == 401  # a forged header is no token
    seen = host.get("api/whoami", headers=forged).json()  # signed in as the tools identity: only its headers
    assert seen["headers"]["x-ms-client-principal-name"] == "devhost-tools"
    assert "mallory" not in json.dumps(seen) and "x-ms-token-aad-access-token" not in seen["headers"]


def test_devhost_token_becomes_principal_headers(host: Devhost) -> None:
    token = host.token(
        "alice", "KeyRotation.Emergency", "KeyRotation.Reader", oid="11111111-2222-3333-4444-555555555555"
    )
    forged = {"X-MS-CLIENT-PRINCIPAL-NAME": "mallory", "Authorization": f"Bearer {token}"}
    seen = host.get("api/whoami", headers=forged).json()
    assert seen["headers"] == {
        "x-ms-client-principal-name": "alice",
        "x-ms-client-principal-id": "11111111-2222-3333-4444-555555555555",
        "x-ms-client-principal-idp": "aad",
    }
    principal = seen["principal"]
    assert principal["auth_typ"] == "aad"
    roles = [c["val"] for c in principal["claims"] if c["typ"] == principal["role_typ"]]
    assert roles == ["KeyRotation.Emergency", "KeyRotation.Reader"]
    names = [c["val"] for c in principal["claims"] if c["typ"] == principal["name_typ"]]
    assert names == ["alice"]


def test_invalid_or_expired_token_is_refused_by_the_host(host: Devhost) -> None:
    for token in ("not-a-token", host.token("alice", "KeyRotation.Operator", ttl=-10)):
        response = host.get("api/whoami", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "not-a-token" not in response.text


def test_token_from_another_state_folder_is_refused(host: Devhost, tmp_path: Path) -> None:
    from devhost.easy_auth import issue_token, load_or_create_signing_key

    foreign = issue_token(load_or_create_signing_key(tmp_path), "alice", ["KeyRotation.Emergency"])
    assert host.get("api/whoami", headers={"Authorization": f"Bearer {foreign}"}).status_code == 401


def test_easy_auth_off_passes_headers_through_and_unsets_the_flag(host_without_easy_auth: Devhost) -> None:
    host = host_without_easy_auth
    seen = host.get("api/whoami", headers={"X-MS-CLIENT-PRINCIPAL-NAME": "mallory", "Authorization": "Bearer x"}).json()
    assert seen["headers"] == {"x-ms-client-principal-name": "mallory"}
    assert seen["authorization"] is True
    assert seen["authEnabled"] is None
