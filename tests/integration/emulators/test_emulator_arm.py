"""ARM Microsoft.Web keys emulator, exercised with the unmodified WebSiteManagementClient built by the
app's own client factory: every key operation (sites and slots), Azure's quirks, errors and retries."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.mgmt.web import WebSiteManagementClient
from azure.mgmt.web.models import KeyInfo

from activities.clients import web_client
from emulators.arm.api import host_runtime_fault
from emulators.core.local_identity import LOCAL_EMULATORS, LocalTokenCredential
from emulators.core.store import fingerprint
from tests.emulator_process import Emulator

API = "api-version=2025-05-01"


def new_site(emulator: Emulator, **spec: Any) -> tuple[str, str, str]:
    """A fresh app (unique subscription, group and name) so tests sharing the emulator never collide."""
    sub, rg, name = str(uuid.uuid4()), f"rg-{uuid.uuid4().hex[:8]}", f"app-{uuid.uuid4().hex[:10]}"
    response = emulator.control("PUT", f"sites/{sub}/{rg}/{name}", json=spec)
    assert response.status_code == 201, response.text
    return sub, rg, name


def client_for(emulator: Emulator, sub: str) -> WebSiteManagementClient:
    return web_client(sub, emulator.settings())


def with_status(pipeline_response: Any, deserialized: Any, headers: Any) -> tuple[int, Any]:
    """`cls=` hook: the HTTP status next to the deserialized body (201 vs 200 is part of the contract)."""
    return pipeline_response.http_response.status_code, deserialized


def assert_generated(value: str) -> None:
    """The host's identifiable key shape: 40 bytes as 56 URL-safe base64 characters, AzFu before the checksum."""
    assert len(value) == 56 and value.endswith("=="), value
    assert "+" not in value and "/" not in value
    assert len(base64.urlsafe_b64decode(value)) == 40
    assert value[44:48] == "AzFu"


def arm_token(audience: str = "https://management.azure.com") -> str:
    return (
        LocalTokenCredential(str(uuid.uuid4()), "tester", endpoint=LOCAL_EMULATORS)
        .get_token(f"{audience}/.default")
        .token
    )


def site_path(sub: str, rg: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{name}"


def log_for(emulator: Emulator, operation: str, path_part: str) -> list[dict[str, Any]]:
    return [r for r in emulator.requests_log() if r["operation"] == operation and path_part in r["path"]]


def test_list_host_keys_returns_generated_master_host_and_system_keys(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator, systemKeys=["eventgrid_extension"])
    keys = client_for(emulator, sub).web_apps.list_host_keys(rg, name)
    assert set(keys.function_keys) == {"default"} and set(keys.system_keys) == {"eventgrid_extension"}
    for value in (keys.master_key, keys.function_keys["default"], keys.system_keys["eventgrid_extension"]):
        assert_generated(value)
    assert len({keys.master_key, keys.function_keys["default"], keys.system_keys["eventgrid_extension"]}) == 3


def test_flat_keyinfo_body_is_refused_as_azure_does(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator)
    client = client_for(emulator, sub)
    with pytest.raises(HttpResponseError) as raised:
        client.web_apps.create_or_update_host_secret(rg, name, "functionKeys", "k1", KeyInfo(name="k1"))
    assert raised.value.status_code == 400
    assert "Properties object is not present in the request body." in raised.value.response.text()
    assert '"Code": "BadRequest"' in raised.value.response.text()  # Microsoft.Web's PascalCase envelope
    assert "k1" not in client.web_apps.list_host_keys(rg, name).function_keys


def test_put_with_properties_generates_then_renews_the_value(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator)
    client = client_for(emulator, sub)
    status, created = client.web_apps.create_or_update_host_secret(
        rg, name, "functionKeys", "k1", {"properties": {"name": "k1"}}, cls=with_status
    )
    assert status == 201
    first = created["properties"]["value"]
    assert created["properties"]["name"] == "k1" and created["id"].endswith("/host/default/functionKeys/k1")
    assert_generated(first)
    status, renewed = client.web_apps.create_or_update_host_secret(
        rg, name, "functionKeys", "k1", {"properties": {"name": "k1"}}, cls=with_status
    )
    assert status == 200 and renewed["properties"]["value"] != first
    assert client.web_apps.list_host_keys(rg, name).function_keys["k1"] == renewed["properties"]["value"]


def test_supplied_values_are_validated(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator)
    client = client_for(emulator, sub)
    for bad in ("short", "x" * 31, "has spaces and is long enough to pass the floor", "a" * 1025):
        with pytest.raises(HttpResponseError) as raised:
            client.web_apps.create_or_update_host_secret(rg, name, "functionKeys", "k2", {"properties": {"value": bad}})
        assert raised.value.status_code == 400, bad
    chosen = base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode()
    status, _ = client.web_apps.create_or_update_host_secret(
        rg, name, "functionKeys", "k2", {"properties": {"name": "k2", "value": chosen}}, cls=with_status
    )
    assert status == 201 and client.web_apps.list_host_keys(rg, name).function_keys["k2"] == chosen
    with pytest.raises(HttpResponseError) as raised:  # the body names another key than the URL
        client.web_apps.create_or_update_host_secret(rg, name, "functionKeys", "k2", {"properties": {"name": "k3"}})
    assert raised.value.status_code == 400


def test_strict_sites_accept_only_identifiable_values(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator, functions=["fnA"], strictKeyValues=True)
    client = client_for(emulator, sub)
    arbitrary = base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode()
    with pytest.raises(HttpResponseError) as raised:
        client.web_apps.create_or_update_function_secret(rg, name, "fnA", "k", {"properties": {"value": arbitrary}})
    assert raised.value.status_code == 400 and "from host runtime" in raised.value.response.text()
    generated = client.web_apps.list_function_keys(rg, name, "fnA")["default"]  # function-key seed, AzFu
    status, _ = client.web_apps.create_or_update_function_secret(
        rg, name, "fnA", "k", {"properties": {"value": generated}}, cls=with_status
    )
    assert status == 201


def test_host_key_delete_answers_204_then_404(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator)
    client = client_for(emulator, sub)
    client.web_apps.create_or_update_host_secret(rg, name, "functionKeys", "gone", {"properties": {}})
    assert client.web_apps.delete_host_secret(rg, name, "functionKeys", "gone") is None  # the SDK accepts only 204
    assert "gone" not in client.web_apps.list_host_keys(rg, name).function_keys
    with pytest.raises(ResourceNotFoundError):
        client.web_apps.delete_host_secret(rg, name, "functionKeys", "gone")
    assert [r["status"] for r in log_for(emulator, "arm.delete_host_secret", name)] == [204, 404]


def test_master_key_can_be_renewed_not_deleted(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator)
    client = client_for(emulator, sub)
    before = client.web_apps.list_host_keys(rg, name).master_key
    with pytest.raises(HttpResponseError) as raised:
        client.web_apps.delete_host_secret(rg, name, "masterKey", "_master")
    assert raised.value.status_code == 400
    status, renewed = client.web_apps.create_or_update_host_secret(
        rg, name, "masterKey", "_master", {"properties": {"name": "_master"}}, cls=with_status
    )
    after = client.web_apps.list_host_keys(rg, name).master_key
    assert status == 201 and after == renewed["properties"]["value"] != before
    assert_generated(after)
    with pytest.raises(HttpResponseError):
        client.web_apps.create_or_update_host_secret(rg, name, "masterKey", "other", {"properties": {}})


def test_function_keys_lifecycle(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator, functions=["fnA", "fnB"])
    client = client_for(emulator, sub)
    assert [f.name for f in client.web_apps.list_functions(rg, name)] == [f"{name}/fnA", f"{name}/fnB"]
    default = client.web_apps.list_function_keys(rg, name, "fnA")["default"]
    assert_generated(default)
    assert default != client.web_apps.list_function_keys(rg, name, "fnB")["default"]
    status, created = client.web_apps.create_or_update_function_secret(
        rg, name, "fnA", "caller1", {"properties": {"name": "caller1"}}, cls=with_status
    )
    assert status == 201 and created["id"].endswith("/functions/fnA/keys/caller1")
    status, _ = client.web_apps.create_or_update_function_secret(
        rg, name, "fnA", "caller1", {"properties": {}}, cls=with_status
    )
    assert status == 200
    keys = client.web_apps.list_function_keys(rg, name, "fnA")
    assert set(keys) == {"default", "caller1"}
    assert client.web_apps.delete_function_secret(rg, name, "fnA", "caller1") is None
    with pytest.raises(ResourceNotFoundError):
        client.web_apps.delete_function_secret(rg, name, "fnA", "caller1")
    with pytest.raises(ResourceNotFoundError):
        client.web_apps.list_function_keys(rg, name, "nope")
    with pytest.raises(ResourceNotFoundError):
        client.web_apps.create_or_update_function_secret(rg, name, "nope", "k", {"properties": {}})


def test_slots_have_their_own_keys(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator, functions=["fnA"], slots=["staging"])
    apps = client_for(emulator, sub).web_apps
    production, staging = apps.list_host_keys(rg, name), apps.list_host_keys_slot(rg, name, "staging")
    assert production.master_key != staging.master_key
    status, _ = apps.create_or_update_host_secret_slot(
        rg, name, "functionKeys", "s1", "staging", {"properties": {}}, cls=with_status
    )
    assert status == 201
    assert "s1" in apps.list_host_keys_slot(rg, name, "staging").function_keys
    assert "s1" not in apps.list_host_keys(rg, name).function_keys
    status, _ = apps.create_or_update_function_secret_slot(
        rg, name, "fnA", "f1", "staging", {"properties": {}}, cls=with_status
    )
    assert status == 201
    assert set(apps.list_function_keys_slot(rg, name, "fnA", "staging")) == {"default", "f1"}
    assert set(apps.list_function_keys(rg, name, "fnA")) == {"default"}
    functions = list(apps.list_instance_functions_slot(rg, name, "staging"))
    assert [f.properties.invoke_url_template for f in functions] == [
        f"https://{name}-staging.azurewebsites.net/api/fna"
    ]
    assert apps.delete_function_secret_slot(rg, name, "fnA", "f1", "staging") is None
    assert apps.delete_host_secret_slot(rg, name, "functionKeys", "s1", "staging") is None
    with pytest.raises(ResourceNotFoundError):
        apps.delete_host_secret_slot(rg, name, "functionKeys", "s1", "staging")
    with pytest.raises(ResourceNotFoundError) as raised:
        apps.list_host_keys_slot(rg, name, "nosuchslot")
    assert raised.value.error.code == "ResourceNotFound"


def test_unknown_resources_answer_404_in_the_arm_envelope(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator)
    apps = client_for(emulator, sub).web_apps
    cases = [(rg, "no-such-app", "ResourceNotFound"), ("no-such-rg", name, "ResourceGroupNotFound")]
    for group, app, code in cases:
        with pytest.raises(ResourceNotFoundError) as raised:
            apps.list_host_keys(group, app)
        assert raised.value.error.code == code
    with pytest.raises(ResourceNotFoundError) as raised:
        client_for(emulator, str(uuid.uuid4())).web_apps.list_host_keys(rg, name)
    assert raised.value.error.code == "SubscriptionNotFound"


def test_paths_and_names_are_case_insensitive(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator, functions=["fnA"])
    expected = client_for(emulator, sub).web_apps.list_function_keys(rg, name, "fnA")["default"]
    path = site_path(sub, rg, name).upper().replace("/PROVIDERS/", "/providers/") + "/FUNCTIONS/FNA/LISTKEYS"
    response = requests.post(
        f"{emulator.url}{path}?{API}",
        headers={"Authorization": f"Bearer {arm_token()}"},
        verify=emulator.ca,
        timeout=10,
    )
    assert response.status_code == 200 and response.json() == {"default": expected}


def test_api_version_is_required_and_checked(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator)
    url = f"{emulator.url}{site_path(sub, rg, name)}/host/default/listkeys"
    auth = {"Authorization": f"Bearer {arm_token()}"}
    missing = requests.post(url, headers=auth, verify=emulator.ca, timeout=10)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "MissingApiVersionParameter"
    unknown = requests.post(f"{url}?api-version=2099-01-01", headers=auth, verify=emulator.ca, timeout=10)
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "NoRegisteredProviderFound"


def test_requests_without_a_management_token_get_401(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator)
    url = f"{emulator.url}{site_path(sub, rg, name)}/host/default/listkeys?{API}"
    anonymous = requests.post(url, verify=emulator.ca, timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "AuthenticationFailed"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
    vault_scoped = WebSiteManagementClient(
        LocalTokenCredential(str(uuid.uuid4()), "wrong-audience", endpoint=emulator.url),
        sub,
        base_url=emulator.url,
        credential_scopes=["https://vault.azure.net/.default"],
        connection_verify=emulator.ca,
    )
    with pytest.raises(ClientAuthenticationError) as raised:
        vault_scoped.web_apps.list_host_keys(rg, name)
    assert raised.value.error.code == "InvalidAuthenticationTokenAudience"
    assert "functionKeys" not in raised.value.response.text()


def test_throttling_with_retry_after_is_retried_by_the_sdk(clean_faults: Emulator) -> None:
    emulator = clean_faults
    sub, rg, name = new_site(emulator)
    emulator.fault(operation="arm.list_host_keys", status=429, retry_after=1, match=name, times=1)
    keys = client_for(emulator, sub).web_apps.list_host_keys(rg, name)
    assert "default" in keys.function_keys
    first, second = log_for(emulator, "arm.list_host_keys", name)
    assert (first["status"], first["fault"], second["status"]) == (429, "status:429", 200)
    waited = datetime.fromisoformat(second["ts"]) - datetime.fromisoformat(first["ts"])
    assert 0.9 <= waited.total_seconds() < 5


def test_host_runtime_failure_on_listkeys_surfaces_after_the_sdk_retries(clean_faults: Emulator) -> None:
    emulator = clean_faults
    sub, rg, name = new_site(emulator)
    emulator.fault(**host_runtime_fault("arm.list_host_keys", 500, match=name, times=None))
    with pytest.raises(HttpResponseError) as raised:
        # The product's client, with a short backoff for this call only (default retry count).
        client_for(emulator, sub).web_apps.list_host_keys(rg, name, retry_backoff_factor=0.01)
    assert raised.value.status_code == 500
    assert "Encountered an error (InternalServerError) from host runtime." in raised.value.response.text()
    assert [r["status"] for r in log_for(emulator, "arm.list_host_keys", name)] == [500] * 4


def test_list_functions_follows_next_link(emulator: Emulator) -> None:
    functions = [f"fn{i:02d}" for i in range(60)]
    sub, rg, name = new_site(emulator, functions=functions)
    listed = [f.name.split("/")[-1] for f in client_for(emulator, sub).web_apps.list_functions(rg, name)]
    assert listed == functions
    assert len(log_for(emulator, "arm.list_functions", name)) == 2


def test_key_changes_are_journaled_with_fingerprints_only(emulator: Emulator) -> None:
    sub, rg, name = new_site(emulator, functions=["fnA"])
    since = emulator.control("GET", "changes").json()["value"][-1]["seq"]
    apps = client_for(emulator, sub).web_apps
    _, created = apps.create_or_update_function_secret(rg, name, "fnA", "j1", {"properties": {}}, cls=with_status)
    value = created["properties"]["value"]
    apps.delete_function_secret(rg, name, "fnA", "j1")
    changes = emulator.control("GET", f"changes?since={since}").json()["value"]
    assert [c["kind"] for c in changes] == ["arm.key_set", "arm.key_deleted"]
    subject = f"{site_path(sub, rg, name)}/functions/fnA/keys/j1"
    for change in changes:
        assert change["subject"] == subject
        assert change["detail"]["fingerprint"] == fingerprint(value)
        assert (change["detail"]["function"], change["detail"]["key"], change["detail"]["slot"]) == ("fnA", "j1", None)
        assert value not in str(change)
    puts = log_for(emulator, "arm.put_function_secret", name)
    assert changes[0]["request_seq"] == puts[-1]["seq"]
