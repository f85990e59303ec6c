"""devhost's doors as Azure's (issue 12, finding 4): Easy Auth in front of every path but the Event Grid
webhook, keys checked in addition; the durable rpc API only on its own loopback listener, behind a
per-run secret segment; no system key in any reply an unauthenticated caller of the public port gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tools.devhost_launcher import HOST_APP, Devhost, running_devhost

pytestmark = pytest.mark.slow

DURABLE = "runtime/webhooks/durabletask"
BROWSER_POST = {"Content-Type": "text/plain", "Origin": "https://evil.example"}  # a CORS "simple request"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    env = {"TICK_SCHEDULE": "0 0 0 1 1 *", "FAST_SCHEDULE": "0 0 0 1 1 *"}
    with running_devhost(tmp_path_factory.mktemp("doors"), HOST_APP, emulators=False, env=env) as running:
        yield running


def instance_ids(host: Devhost) -> set[str]:
    """What exists, read as an operator would: token + system key."""
    response = host.get(f"{DURABLE}/instances", params={"code": host.system_key("durabletask_extension")})
    assert response.status_code == 200, response.text
    return {i["instanceId"] for i in response.json()}


def secrets_in(host: Devhost, response: requests.Response) -> list[str]:
    """Which host keys a reply carries, in its body or its headers."""
    text = response.text + json.dumps(dict(response.headers))
    keys = {"master": host.master_key, **{name: value for name, value in host.endpoints["systemKeys"].items()}}
    return [name for name, value in keys.items() if value in text]


def test_a_system_key_without_a_token_is_refused_before_the_key_is_checked(host: Devhost) -> None:
    key = {"code": host.system_key("durabletask_extension")}
    before = instance_ids(host)

    status = host.get(f"{DURABLE}/instances", params=key, anonymous=True)
    start = host.post(f"{DURABLE}/orchestrators/hello_orchestrator/forged-1", params=key, json="x", anonymous=True)
    master = host.post(f"{DURABLE}/orchestrators/hello_orchestrator/forged-2", params={"code": host.master_key},
                       json="x", anonymous=True)  # fmt: skip

    for refused in (status, start, master):
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert secrets_in(host, refused) == []
    assert instance_ids(host) == before, "a refused start started something"
    # the token is needed in addition to the key, not instead of it
    assert host.get(f"{DURABLE}/instances").status_code == 401
    assert "WWW-Authenticate" not in host.get(f"{DURABLE}/instances").headers  # the host's key check, not Easy Auth


@pytest.mark.parametrize(
    "method,path,key",
    [
        ("GET", "api/whoami", None),  # an anonymous-level function: Easy Auth still answers first
        ("GET", "api/secured", "function"),
        ("POST", "admin/functions/tick", "master"),
        ("GET", "admin/host/status", "master"),
        ("GET", "admin/devhost/clock", "master"),
        ("GET", f"{DURABLE}/instances/x", "system"),
        ("POST", "durabletask/orchestrators/hello_orchestrator", None),  # where the rpc API used to be
        ("GET", "no/such/path", None),
    ],
)
def test_every_door_but_the_event_grid_webhook_needs_a_token(
    host: Devhost, method: str, path: str, key: str | None
) -> None:
    codes = {
        "function": host.function_key,
        "master": host.master_key,
        "system": host.system_key("durabletask_extension"),
    }
    params = {"code": codes[key]} if key else {}
    response = host.request(method, path, params=params, json={"input": ""}, anonymous=True)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="devhost"'
    assert response.content == b"" and secrets_in(host, response) == []


def test_the_event_grid_webhook_is_excluded_and_still_needs_its_key(host: Devhost) -> None:
    params = {"functionName": "on_event", "code": host.system_key("eventgrid_extension")}
    handshake = [
        {
            "id": "1",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "subject": "",
            "data": {"validationCode": "abc"},
            "eventTime": "2026-01-01T00:00:00Z",
            "dataVersion": "1",
        }
    ]
    headers = {"aeg-event-type": "SubscriptionValidation"}
    for spelling in ("runtime/webhooks/EventGrid", "runtime/webhooks/eventgrid"):
        accepted = host.post(spelling, params=params, json=handshake, headers=headers, anonymous=True)
        assert accepted.status_code == 200 and accepted.json() == {"validationResponse": "abc"}
    keyless = host.post("runtime/webhooks/EventGrid", params={"functionName": "on_event"}, json=handshake,
                        headers=headers, anonymous=True)  # fmt: skip
    assert keyless.status_code == 401 and "WWW-Authenticate" not in keyless.headers  # the host's key check


def test_the_rpc_api_is_on_its_own_loopback_listener_behind_a_secret(host: Devhost) -> None:
    rpc, public = urlsplit(host.rpc_url), urlsplit(host.url)
    assert rpc.hostname == "127.0.0.1" and rpc.port != public.port
    secret, prefix = rpc.path.strip("/").split("/")
    assert prefix == "durabletask" and len(secret) >= 32
    # with a token, the public port has no rpc routes at all
    assert host.get("durabletask/instances").status_code == 404
    assert host.get(f"{secret}/durabletask/instances").status_code == 404
    # on the rpc listener, a path without the secret (or with another) is unknown
    listener = f"http://127.0.0.1:{rpc.port}"
    for path in ("/durabletask/instances", f"/{secret[:-1]}x/durabletask/instances", f"/{DURABLE}/instances"):
        assert requests.get(f"{listener}{path}", timeout=10).status_code == 404
    assert requests.get(f"{host.rpc_url}instances", timeout=10).status_code == 200  # what the app's client calls


def test_a_text_plain_post_from_a_browser_page_starts_nothing(host: Devhost) -> None:
    before = instance_ids(host)
    rpc_port = urlsplit(host.rpc_url).port
    body = json.dumps("from a web page")
    key = {"code": host.system_key("durabletask_extension")}
    attempts = [
        (f"{host.url}/durabletask/orchestrators/hello_orchestrator/page-1", {}),  # the old rpc door
        (f"{host.url}/{DURABLE}/orchestrators/hello_orchestrator/page-2", key),  # even with a leaked key
        (f"http://127.0.0.1:{rpc_port}/durabletask/orchestrators/hello_orchestrator/page-3", {}),  # Azure's path
    ]
    for url, params in attempts:
        response = requests.post(url, params=params, data=body, headers=BROWSER_POST, timeout=10)
        assert response.status_code in (401, 404), (url, response.status_code)
        assert secrets_in(host, response) == []
    assert instance_ids(host) == before


def test_the_apps_durable_client_still_works_through_the_rpc_listener(host: Devhost) -> None:
    started = host.post("api/orchestrators/hello_orchestrator", json="doors")
    assert started.status_code == 202, started.text
    payload: dict[str, Any] = started.json()
    # the check-status URLs name the public API; a client needs a token there, as on Azure
    assert requests.get(payload["statusQueryGetUri"], timeout=10).status_code == 401
    assert host.get(payload["statusQueryGetUri"].removeprefix(host.url)).status_code in (200, 202)
