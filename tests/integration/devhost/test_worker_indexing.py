"""The app as Azure's Python worker sees it: indexed and loaded by the pinned azure-functions-runtime.

On Azure the worker indexes function_app.py before anything runs; a function it refuses does not exist
(the activities once did not: `request: dict[str, Any]` is an annotation the worker rejects). These
tests index the rotation app and the sample consumer through the runtime pinned in requirements.txt,
so a load error of that kind fails `make test` instead of a deployment.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from activities.blueprint import ACTIVITIES, CLIENT_ACTIVITIES
from devhost.app_loader import load_app
from devhost.worker.runtime import WorkerInitError

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "samples" / "consumer"


def pinned(requirements: Path, package: str) -> str:
    found = re.search(rf"^{re.escape(package)}==([\w.]+)", requirements.read_text(), re.MULTILINE)
    assert found, f"{requirements} does not pin {package}"
    return found[1]


def test_the_runtime_under_test_is_the_one_azure_will_run() -> None:
    assert metadata.version("azure-functions-runtime") == pinned(ROOT / "requirements.txt", "azure-functions-runtime")
    assert pinned(SAMPLE / "requirements.txt", "azure-functions-runtime") == pinned(
        ROOT / "requirements.txt", "azure-functions-runtime"
    )


def test_the_worker_indexes_and_loads_every_function_of_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATION_POLICY_PATH", str(ROOT / "config" / "rotation-policy.example.json"))
    app = load_app(ROOT)
    try:
        kinds = {name: fn.trigger_type for name, fn in app.functions.items()}
    finally:
        app.close()
    activities = {a.__name__ for a in (*ACTIVITIES, *CLIENT_ACTIVITIES)}
    assert {n for n, k in kinds.items() if k == "activityTrigger"} == activities
    assert kinds["rotation_orchestrator"] == kinds["scheduler_orchestrator"] == "orchestrationTrigger"
    assert kinds["rotation_timer"] == "timerTrigger" and kinds["secret_near_expiry"] == "eventGridTrigger"
    # The API table of DESIGN.md (9) and the read routes for tools (plan x2, history, openapi.json: issue 13).
    assert sum(k == "httpTrigger" for k in kinds.values()) == 13
    assert len(kinds) == len(activities) + 2 + 2 + 13


def test_the_worker_indexes_and_loads_every_function_of_the_sample_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CONSUMER_TARGET_ID": "demo-orders",
        "CONSUMER_SECRET_NAME": "demo-orders-key",
        "CONSUMER_KEY_VAULT_URL": "https://contoso.vault.azure.net",
        "KEYROTATION_API_URL": "https://keyrotation.azurewebsites.net",
        "KEYROTATION_API_AUDIENCE": "api://keyrotation",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(SAMPLE))
    app = load_app(SAMPLE)
    try:
        kinds = {name: fn.trigger_type for name, fn in app.functions.items()}
    finally:
        app.close()
    assert kinds == {
        "on_rotation_event": "eventGridTrigger",
        "consumer_state": "httpTrigger",
        "call_target": "httpTrigger",
    }


def test_an_annotation_the_worker_refuses_fails_the_load(tmp_path: Path) -> None:
    """The check can fail: the very annotation the activities had is refused, naming the function."""
    (tmp_path / "function_app.py").write_text(
        "from typing import Any\n"
        "import azure.durable_functions as df\n"
        "app = df.DFApp()\n"
        "@app.activity_trigger(input_name='request')\n"
        "def refused(request: dict[str, Any]) -> dict[str, Any]:\n"
        "    return request\n"
    )
    with pytest.raises(WorkerInitError) as failure:
        load_app(tmp_path)
    assert "cannot load the refused function" in failure.value.worker_message
    assert "invalid non-type annotation dict[str, typing.Any]" in failure.value.worker_message
