"""The in-process stack (tests/inprocess_stack.py) leaves the pytest process as it found it, and refuses
loudly what it cannot isolate: a second app while one is loaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from activities import clients
from devhost.server import StartupError
from tests.inprocess_stack import IsolationError, running_inprocess
from tests.rotation_harness import SCRIPTED_POLICY_ENV, Durable
from tools.devhost_launcher import ROOT

APP = ROOT / "tests" / "rotation_app"
ENV = {**SCRIPTED_POLICY_ENV, "ROTATION_SCRIPT": "unused.json", "ROTATION_CALLS": "unused.jsonl"}


def test_a_stack_runs_the_scripted_app_and_puts_settings_path_and_caches_back(tmp_path: Path) -> None:
    environ, path, app_module = dict(os.environ), list(sys.path), sys.modules.get("function_app")
    with running_inprocess(tmp_path / "host", APP, env=ENV) as host:
        assert os.environ["KEY_VAULT_URL"] == ENV["KEY_VAULT_URL"] == host.env["KEY_VAULT_URL"]
        assert Path(sys.modules["function_app"].__file__ or "").parent == APP
        assert clients.settings().arm_endpoint.startswith(ENV["ARM_ENDPOINT"])  # cached: this stack's settings
        assert Durable(host).clock()["mode"] == "virtual"
    assert dict(os.environ) == environ and sys.path == path and sys.modules.get("function_app") is app_module
    assert clients.settings.cache_info().currsize == 0  # the next test reads its own settings
    assert "Durable engine started" in host.output()


def test_a_second_stack_in_one_process_is_refused_naming_the_first(tmp_path: Path) -> None:
    with (
        running_inprocess(tmp_path / "one", APP, env=ENV),
        pytest.raises(IsolationError, match=r"rotation_app.*one app per process"),
        running_inprocess(tmp_path / "two", APP, env=ENV),
    ):
        pass  # pragma: no cover


def test_a_stack_that_cannot_start_still_puts_the_settings_back(tmp_path: Path) -> None:
    environ = dict(os.environ)
    with (
        pytest.raises(StartupError, match=r"no function_app\.py"),
        running_inprocess(tmp_path / "host", tmp_path, env={"KEYROTATION_TEST_MARKER": "1"}),
    ):
        pass  # pragma: no cover
    assert dict(os.environ) == environ
