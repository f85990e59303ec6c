"""Shared fixtures: an emulator process per test module."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.emulator_process import PLATFORM_VARIABLES, Emulator, running_emulator


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with running_emulator(tmp_path_factory.mktemp("emulator")) as emu:
        yield emu


@pytest.fixture
def clean_faults(emulator: Emulator) -> Iterator[Emulator]:
    emulator.clear_faults()
    yield emulator
    emulator.clear_faults()


@pytest.fixture(autouse=True)
def platform_environment() -> Iterator[None]:
    """A test that has no managed identity endpoint of its own (from a fixture or Emulator.settings()) gets
    one that answers nothing (the discard port on loopback), so a credential built without an emulator fails
    at once instead of probing the Azure VM metadata address. The platform variables are put back as they
    were before the test."""
    saved = {name: os.environ.get(name) for name in PLATFORM_VARIABLES}
    if not saved["IDENTITY_ENDPOINT"]:
        os.environ.update({"IDENTITY_ENDPOINT": "https://127.0.0.1:9/msi/token", "IDENTITY_HEADER": "no-emulator"})
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
