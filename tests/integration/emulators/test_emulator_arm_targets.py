"""The emulated target function apps: the control API that seeds them, the data plane that tells which
keys a target accepts (including host key-cache lag), and state surviving a restart."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from activities.clients import web_client
from tests.emulator_process import Emulator, running_emulator


def new_site(emulator: Emulator, **spec: Any) -> tuple[str, str, str, dict[str, Any]]:
    sub, rg, name = str(uuid.uuid4()), f"rg-{uuid.uuid4().hex[:8]}", f"app-{uuid.uuid4().hex[:10]}"
    response = emulator.control("PUT", f"sites/{sub}/{rg}/{name}", json=spec)
    assert response.status_code == 201, response.text
    return sub, rg, name, response.json()


def keys_of(site: dict[str, Any], slot: str | None = None) -> dict[tuple[str, str | None, str], dict[str, Any]]:
    """Live keys of one instance by (scope, function, name)."""
    (instance,) = [i for i in site["instances"] if i["slot"] == slot]
    return {(k["scope"], k["function"], k["name"]): k for k in instance["keys"] if k["retired"] is None}


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def invoke(
    emulator: Emulator, host: str, function: str, key: str | None = None, instance: int | None = None, **kwargs: Any
) -> requests.Response:
    headers = {"x-functions-key": key} if key else {}
    if instance is not None:
        headers["x-emulator-instance"] = str(instance)
    return requests.get(
        f"{emulator.url}/_targets/{host}/api/{function}", headers=headers, verify=emulator.ca, timeout=10, **kwargs
    )


def test_put_site_creates_then_keeps_keys(emulator: Emulator) -> None:
    sub, rg, name, site = new_site(emulator, functions=["fnA"], slots=["staging"], systemKeys=["eventgrid_extension"])
    assert [i["hostName"] for i in site["instances"]] == [
        f"{name}.azurewebsites.net",
        f"{name}-staging.azurewebsites.net",
    ]
    for slot in (None, "staging"):
        assert set(keys_of(site, slot)) == {
            ("masterKey", None, "_master"),
            ("functionKeys", None, "default"),
            ("systemKeys", None, "eventgrid_extension"),
            ("function", "fnA", "default"),
        }
    again = emulator.control("PUT", f"sites/{sub}/{rg}/{name}", json={"functions": ["fnB"]})
    assert again.status_code == 200
    updated = again.json()
    assert updated["functions"] == ["fnA", "fnB"]
    before, after = keys_of(site), keys_of(updated)
    assert {k: v["value"] for k, v in before.items()} == {k: after[k]["value"] for k in before}
    assert ("function", "fnB", "default") in after
    listed = emulator.control("GET", "sites").json()["value"]
    assert any(s["id"] == site["id"] for s in listed)
    state = emulator.state()["arm"]["sites"]
    assert any(s["id"] == site["id"] and keys_of(s) == keys_of(updated) for s in state)


def test_put_site_validates_with_the_field_named(emulator: Emulator) -> None:
    sub = str(uuid.uuid4())
    cases = [
        (f"sites/not-a-guid/rg/app-{uuid.uuid4().hex[:6]}", {}, "subscription"),
        (f"sites/{sub}/rg/app-{uuid.uuid4().hex[:6]}", {"functions": ["ok", "bad name"]}, "functions"),
        (f"sites/{sub}/rg/app-{uuid.uuid4().hex[:6]}", {"hostInstances": 0}, "hostInstances"),
        (f"sites/{sub}/rg/app-{uuid.uuid4().hex[:6]}", {"unwatchedHostInstances": [1, 1]}, "unwatchedHostInstances"),
        (f"sites/{sub}/rg/app-{uuid.uuid4().hex[:6]}", {"keyCacheSeconds": 2}, "keyCacheSeconds"),
        (f"sites/{sub}/rg/app-{uuid.uuid4().hex[:6]}", {"colour": "red"}, "colour"),
        (f"sites/{sub}/rg/-bad-", {}, "name"),
    ]
    for path, body, field in cases:
        response = emulator.control("PUT", path, json=body)
        assert response.status_code == 400 and field in response.json()["error"]["message"], (path, response.text)


def test_host_names_are_global(emulator: Emulator) -> None:
    _, _, name, _ = new_site(emulator)
    clash = emulator.control("PUT", f"sites/{uuid.uuid4()}/other-rg/{name}", json={})
    assert clash.status_code == 409
    _, _, base, _ = new_site(emulator, slots=["blue"])
    slot_clash = emulator.control("PUT", f"sites/{uuid.uuid4()}/rg/{base}-blue", json={})
    assert slot_clash.status_code == 409


def test_data_plane_accepts_function_host_and_master_keys_only(emulator: Emulator) -> None:
    _, _, name, site = new_site(emulator, functions=["fnA", "fnB"], systemKeys=["eventgrid_extension"])
    keys = keys_of(site)
    function_key = keys[("function", "fnA", "default")]["value"]
    host_key = keys[("functionKeys", None, "default")]["value"]
    master = keys[("masterKey", None, "_master")]["value"]
    system_key = keys[("systemKeys", None, "eventgrid_extension")]["value"]

    ok = invoke(emulator, name, "fnA", function_key)
    assert ok.status_code == 200
    assert ok.json() == {"function": "fnA", "authorizedBy": "functionKey", "keyName": "default"}
    assert function_key not in ok.text
    assert invoke(emulator, name, "fnB", function_key).status_code == 401  # another function's key
    assert invoke(emulator, f"{name}.azurewebsites.net", "FNB", host_key).json()["authorizedBy"] == "hostKey"
    assert invoke(emulator, name, "fnA", master).json() == {
        "function": "fnA",
        "authorizedBy": "masterKey",
        "keyName": "_master",
    }
    for refused in (system_key, "not-a-key", None):
        response = invoke(emulator, name, "fnA", refused)
        assert response.status_code == 401 and response.content == b""
    assert invoke(emulator, name, "nope", master).status_code == 404
    assert invoke(emulator, "no-such-app", "fnA", master).status_code == 404


def test_code_query_works_and_the_header_wins(emulator: Emulator) -> None:
    _, _, name, site = new_site(emulator, functions=["fnA"])
    key = keys_of(site)[("function", "fnA", "default")]["value"]
    assert invoke(emulator, name, "fnA", params={"code": key}).status_code == 200
    assert invoke(emulator, name, "fnA", "wrong-key", params={"code": key}).status_code == 401
    logged = [r for r in emulator.requests_log() if r["operation"] == "target.invoke" and name in r["path"]]
    assert logged and all(key not in r["query"] for r in logged)


def test_slot_host_uses_the_slot_keys(emulator: Emulator) -> None:
    _, _, name, site = new_site(emulator, functions=["fnA"], slots=["staging"])
    production = keys_of(site)[("function", "fnA", "default")]["value"]
    staging = keys_of(site, "staging")[("function", "fnA", "default")]["value"]
    assert invoke(emulator, f"{name}-staging", "fnA", staging).status_code == 200
    assert invoke(emulator, f"{name}-staging", "fnA", production).status_code == 401
    assert invoke(emulator, name, "fnA", staging).status_code == 401


def test_an_instance_that_misses_the_sentinel_keeps_granting_a_deleted_key(emulator: Emulator) -> None:
    """Two host instances; instance 1 does not watch the sentinel file. A key both granted before its
    deletion stays granted by instance 1 from its authorization cache and is refused by instance 0 (which
    handled the write); a new key is granted by instance 1 after its reload on an unknown key."""
    sub, rg, name, _ = new_site(emulator, functions=["fnA"], hostInstances=2, unwatchedHostInstances=[1])
    apps = web_client(sub, emulator.settings()).web_apps
    old = apps.list_function_keys(rg, name, "fnA")["default"]
    assert [invoke(emulator, name, "fnA", old, instance=i).status_code for i in (0, 1)] == [200, 200]
    apps.delete_function_secret(rg, name, "fnA", "default")
    fresh = apps.create_or_update_function_secret(rg, name, "fnA", "fresh", {"properties": {}})["properties"]["value"]

    assert invoke(emulator, name, "fnA", old, instance=0).status_code == 401
    assert invoke(emulator, name, "fnA", old, instance=1).status_code == 200  # cached grant, no expiry
    assert invoke(emulator, name, "fnA", fresh, instance=1).status_code == 200  # unknown: reloaded once
    assert invoke(emulator, name, "fnA", old, instance=1).status_code == 200  # the reload keeps grants
    round_robin = [invoke(emulator, name, "fnA", old) for _ in range(2)]
    assert sorted((r.headers["x-emulator-instance"], r.status_code) for r in round_robin) == [("0", 401), ("1", 200)]
    (site,) = [s for s in emulator.state()["arm"]["sites"] if s["name"] == name]
    deaf = site["instances"][0]["hostInstances"][1]
    assert deaf["watchesSentinel"] is False
    assert {"function": "fna", "keyName": "default", "authorizedBy": "functionKey"} in deaf["cachedAuthorizations"]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    sub, rg, name = str(uuid.uuid4()), "rg-restart", f"app-{uuid.uuid4().hex[:10]}"
    with running_emulator(tmp_path) as first:
        assert first.control("PUT", f"sites/{sub}/{rg}/{name}", json={"functions": ["fnA"]}).status_code == 201
        apps = web_client(sub, first.settings()).web_apps
        value = apps.create_or_update_function_secret(rg, name, "fnA", "kept", {"properties": {}})["properties"][
            "value"
        ]
        before = apps.list_host_keys(rg, name)
    with running_emulator(tmp_path) as second:
        apps = web_client(sub, second.settings()).web_apps
        assert apps.list_function_keys(rg, name, "fnA")["kept"] == value
        assert dict(apps.list_host_keys(rg, name)) == dict(before)
        assert invoke(second, name, "fnA", value).status_code == 200
        assert second.control("PUT", f"sites/{sub}/{rg}/{name}", json={}).status_code == 200
