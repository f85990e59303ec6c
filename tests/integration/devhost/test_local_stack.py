"""The whole local stack in one process tree: devhost serve + emulators, wired the way the app sees them.

An app function reads its settings (pointing at the emulators) and the Event Grid emulator delivers
a CloudEvent published by the official SDK to devhost's Event Grid webhook, which invokes the app.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.messaging import CloudEvent

from activities.clients import event_publisher, secret_client, web_client
from rotation.settings import load_settings
from tests.emulator_process import PLATFORM_VARIABLES
from tools.devhost_launcher import HOST_APP, Devhost, running_devhost

SUB, RG, SITE = "11111111-2222-3333-4444-555555555555", "rg-local", "orders-api"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    with running_devhost(
        tmp_path_factory.mktemp("stack"),
        app_dir=HOST_APP,
        env={"TICK_SCHEDULE": "0 0 0 1 1 *", "FAST_SCHEDULE": "0 0 0 1 1 *"},
    ) as host:
        yield host


def app_setting(host: Devhost, name: str) -> str | None:
    return host.get(f"/api/settings/{name}").json()["value"]


def control(host: Devhost, method: str, path: str, **kwargs: Any) -> requests.Response:
    emu = host.endpoints["emulator"]
    return requests.request(method, f"{emu['control']}/{path}", verify=emu["caBundle"], timeout=10, **kwargs)


def test_app_settings_point_the_app_at_the_emulators(stack: Devhost) -> None:
    emu = stack.endpoints["emulator"]
    identity = emu["managedIdentity"]
    assert app_setting(stack, "KEYROTATION_CREDENTIAL") is None
    assert app_setting(stack, "ARM_ENDPOINT") == emu["arm"]
    assert app_setting(stack, "EVENTGRID_TOPIC_ENDPOINT") == emu["eventGridTopic"]
    assert app_setting(stack, "WEBSITE_AUTH_ENABLED") == "True"
    assert app_setting(stack, "IDENTITY_ENDPOINT") == identity["IDENTITY_ENDPOINT"] == f"{emu['url']}/msi/token"
    assert app_setting(stack, "AZURE_CLIENT_ID") == identity["AZURE_CLIENT_ID"]
    assert Path(app_setting(stack, "REQUESTS_CA_BUNDLE") or "").is_file()


def app_environment(stack: Devhost) -> dict[str, str]:
    """The app's settings as devhost gave them, with the platform's variables (managed identity endpoint,
    CA bundle) put in this process's environment, where azure-identity and requests read them."""
    names = ["ARM_ENDPOINT", "LOGS_ENDPOINT", "EVENTGRID_TOPIC_ENDPOINT", "KEY_VAULT_URL", "AZURE_CLIENT_ID"]
    os.environ.update({name: app_setting(stack, name) or "" for name in PLATFORM_VARIABLES})
    return {name: app_setting(stack, name) or "" for name in names}


def test_official_clients_built_from_the_app_settings_reach_the_emulators(stack: Devhost) -> None:
    env = app_environment(stack)
    cfg = load_settings(env)
    assert control(stack, "PUT", f"sites/{SUB}/{RG}/{SITE}", json={"functions": ["probe"]}).status_code == 201
    keys = web_client(SUB, cfg).web_apps.list_host_keys(RG, SITE)
    assert set(keys.function_keys or {}) == {"default"}
    vault = secret_client(env["KEY_VAULT_URL"], cfg)
    stored = vault.set_secret("orders-api-key", keys.function_keys["default"])
    assert vault.get_secret("orders-api-key", stored.properties.version).value == keys.function_keys["default"]


def test_event_grid_emulator_delivers_to_the_devhost_webhook(stack: Devhost) -> None:
    stack.request("DELETE", "/api/calls")
    webhook = (
        f"{stack.url}/runtime/webhooks/EventGrid?functionName=on_event&code={stack.system_key('eventgrid_extension')}"
    )
    created = control(
        stack,
        "PUT",
        "eventgrid/subscriptions/local-consumer",
        json={
            "endpoint": webhook,
            "deliverySchema": "CloudEventSchemaV1_0",
            "filter": {"subjectBeginsWith": "targets/orders-api"},
        },
    )
    assert created.status_code in (200, 201), created.text
    cfg = load_settings(app_environment(stack))
    publisher = event_publisher(cfg)
    wanted = CloudEvent(
        source="/keyrotation",
        type="KeyRotation.NewKeyAvailable",
        subject="targets/orders-api",
        data={"rotationId": "r-1"},
    )
    ignored = CloudEvent(
        source="/keyrotation", type="KeyRotation.NewKeyAvailable", subject="targets/other", data={"rotationId": "r-2"}
    )
    publisher.send([wanted, ignored])
    deadline = time.monotonic() + 15
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = [c for c in stack.get("/api/calls").json() if c["kind"] == "event"]
        if seen:
            break
        time.sleep(0.1)
    assert [(c["cls"], c["id"], c["type"], c["subject"], c["data"]) for c in seen] == [
        ("CloudEvent", wanted.id, "KeyRotation.NewKeyAvailable", "targets/orders-api", {"rotationId": "r-1"})
    ]
    deliveries = control(stack, "GET", "eventgrid/deliveries?subscription=local-consumer").json()["value"]
    assert [d["eventId"] for d in deliveries] == [wanted.id], "the subject filter must keep the other event out"
