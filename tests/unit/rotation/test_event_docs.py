"""docs/events.md tells consumers the truth: it lists exactly the event types the app can publish, and
each example is an event the app could send (valid against its schema, with the id the app derives).
The sample consumer stays deployable on its own: it imports nothing from the rotation app and pins the
same versions of what it shares with it."""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from rotation import events

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "events.md"
SAMPLE = ROOT / "samples" / "consumer"
SECTION = re.compile(r"^### `(KeyRotation\.[A-Za-z]+)`$", re.MULTILINE)
JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.DOTALL)
APP_PACKAGES = {"rotation", "activities", "orchestrations", "triggers", "devhost", "emulators", "tools", "tests"}


def documented_examples() -> dict[str, list[dict[str, Any]]]:
    """Type heading -> the JSON examples under it (up to the next heading of any level)."""
    text = DOC.read_text()
    found: dict[str, list[dict[str, Any]]] = {}
    headings = list(SECTION.finditer(text))
    for heading in headings:
        rest = text[heading.end() :]
        end = re.search(r"^#{1,3} ", rest, re.MULTILINE)
        body = rest[: end.start()] if end else rest
        assert heading.group(1) not in found, f"{heading.group(1)} is documented twice"
        found[heading.group(1)] = [json.loads(block) for block in JSON_BLOCK.findall(body)]
    return found


def test_the_doc_lists_exactly_the_event_types_the_app_defines() -> None:
    assert sorted(documented_examples()) == sorted(events.EVENT_TYPES)


@pytest.mark.parametrize("event_type", events.EVENT_TYPES)
def test_each_documented_example_is_an_event_the_app_could_send(event_type: str) -> None:
    examples = documented_examples().get(event_type)
    assert examples, f"docs/events.md has no example for {event_type}"
    schema = json.loads(events.schema_path(event_type).read_text())
    for example in examples:
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(example)
        assert example["type"] == event_type
        data = example["data"]
        assert example["subject"] == f"targets/{data['targetId']}"
        if event_type == events.DRIFT_DETECTED:
            key = f"drift|{data['checkId']}|{data['targetId']}|{data['drift']}|{data['keyName'] or ''}"
            expected = events.event_id(key, event_type)
        else:
            occurrence = data["hold"] if event_type == events.ROTATION_HELD else None
            expected = events.event_id(data["rotationId"], event_type, occurrence)
        assert example["id"] == expected, "the documented id is not the one the app derives"


def test_a_schema_refuses_a_key_value_in_an_event() -> None:
    example = documented_examples()[events.NEW_KEY_AVAILABLE][0]
    leaked = {**example, "data": {**example["data"], "value": "a" * 56}}
    schema = json.loads(events.schema_path(events.NEW_KEY_AVAILABLE).read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(leaked, schema)


def test_the_sample_consumer_imports_nothing_from_the_rotation_app() -> None:
    files = sorted(SAMPLE.rglob("*.py"))
    assert SAMPLE / "function_app.py" in files
    own = {p.stem for p in SAMPLE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    allowed = set(sys.stdlib_module_names) | {"azure", "requests", "keyrotation_kit", *own}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in APP_PACKAGES, f"{path.relative_to(ROOT)} imports {name} from the rotation app"
                assert top in allowed, f"{path.relative_to(ROOT)} imports {name}, not in its requirements.txt"


def test_the_sample_pins_what_it_shares_with_the_app_at_the_same_versions() -> None:
    def pins(path: Path) -> dict[str, str]:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return dict(line.split("==", 1) for line in lines if line)

    sample, app = pins(SAMPLE / "requirements.txt"), pins(ROOT / "requirements.txt")
    kit = tomllib.loads((ROOT / "kit" / "pyproject.toml").read_text())["project"]
    assert sample.pop(kit["name"]) == kit["version"], "the sample pins the kit's own version"
    assert sample and all(version == app.get(name) for name, version in sample.items()), (sample, app)


def test_the_kit_imports_only_what_its_pyproject_declares() -> None:
    kit = ROOT / "kit" / "src" / "keyrotation_kit"
    # azure-core (azure.core) comes with azure-identity and azure-keyvault-secrets; azure.functions is
    # imported only inside the Functions helper, which only a Functions app (that has it) calls.
    allowed = set(sys.stdlib_module_names) | {"azure", "requests", "httpx", "keyrotation_kit"}
    for path in sorted(kit.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.relative_to(ROOT)} imports {name}"
