"""DESIGN's dependency rules, checked on the source: what the deployed app may import, and where."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
APP_PACKAGES = ("triggers", "orchestrations", "activities", "rotation")
LOCAL_ONLY = ("devhost", "emulators", "tools", "tests", "samples")
SERVICE_SDKS = ("azure.keyvault", "azure.mgmt", "azure.eventgrid", "azure.monitor", "azure.identity")


def app_files() -> list[Path]:
    files = [ROOT / "function_app.py"]
    for package in APP_PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def imports(path: Path, module_level_only: bool = False) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", app_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_app_never_imports_the_local_stack(path: Path) -> None:
    bad = [name for name in imports(path) if name.split(".")[0] in LOCAL_ONLY]
    assert not bad, f"{path.name} imports {bad}: the deployed package has no devhost/emulators/tools/tests"


@pytest.mark.parametrize("path", app_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_service_sdks_are_imported_lazily_and_only_by_activities(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    anywhere = [n for n in imports(path) if n.startswith(SERVICE_SDKS)]
    at_import = [n for n in imports(path, module_level_only=True) if n.startswith(SERVICE_SDKS)]
    if package != "activities":
        assert not anywhere, f"{path.name} imports {anywhere}: only activities/ talk to Azure services"
    else:
        assert not at_import, f"{path.name} imports {at_import} at module level: `import function_app` must stay fast"
