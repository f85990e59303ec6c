"""The OpenAPI document (GET /api/openapi.json) is the contract: every route the app registers is in it
with its method and role, and every example validates against its schema. A route added without its
entry fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from rotation.identity import ROLES
from tests.rotation_harness import LOCAL_POLICY, PLACEHOLDER_ENV, ROOT
from triggers.openapi import document

ROUTES_SCRIPT = """
import json
import function_app
found = []
for function in function_app.app.get_functions():
    for binding in function.get_bindings():
        spec = binding.get_dict_repr()
        if spec.get("type") == "httpTrigger":
            found += [("/api/" + spec["route"], str(getattr(m, "value", m)).lower()) for m in spec["methods"]]
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def routes() -> set[tuple[str, str]]:
    """(path, method) of every HTTP trigger function_app registers, read in a fresh interpreter (the app's
    blueprints are module-level: a second app in this process would register their functions twice)."""
    env = {**os.environ, **PLACEHOLDER_ENV, "ROTATION_POLICY_PATH": str(LOCAL_POLICY)}
    out = subprocess.run(
        [sys.executable, "-c", ROUTES_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    return {(path, method) for path, method in json.loads(out)}


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method): op for path, item in doc["paths"].items() for method, op in item.items()}


def test_every_registered_route_is_documented_and_nothing_else(routes: set[tuple[str, str]]) -> None:
    documented = set(operations(document()))
    assert len(routes) >= 13
    assert routes - documented == set(), "routes missing from triggers/openapi.py"
    assert documented - routes == set(), "documented routes the app does not register"


def test_each_operation_names_its_role_and_the_errors_every_route_can_answer() -> None:
    for (path, method), op in operations(document()).items():
        assert op["x-app-role"] in ROLES, (path, method)
        assert op["security"] == [{"easyAuth": [op["x-app-role"]]}]
        assert {"401", "403", "500"} <= set(op["responses"]), (path, method)
        for name in (p["$ref"].rsplit("/", 1)[-1] for p in op["parameters"]):
            assert name in document()["components"]["parameters"]
        placeholders = {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
        assert placeholders <= {p["$ref"].rsplit("/", 1)[-1] for p in op["parameters"]}, (path, method)


def examples(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], Any]]:
    out = []
    for (path, method), op in operations(doc).items():
        bodies = [("request", op.get("requestBody", {}).get("content", {}))]
        bodies += [(status, answer.get("content", {})) for status, answer in op["responses"].items()]
        for where, content in bodies:
            media = content.get("application/json", {})
            if "example" in media:
                out.append((f"{method.upper()} {path} {where}", media["schema"], media["example"]))
    return out


def test_every_example_validates_against_its_schema() -> None:
    doc = document()
    found = examples(doc)
    assert len(found) >= 15
    for where, schema, example in found:
        validator = jsonschema.Draft202012Validator({**schema, "components": doc["components"]})
        errors = [e.message for e in validator.iter_errors(example)]
        assert not errors, (where, errors)


def test_a_wrong_example_is_caught() -> None:
    doc = document()
    schema = {"$ref": "#/components/schemas/Plan", "components": doc["components"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"targetId": "demo-orders"}, schema)


def test_the_document_is_openapi_3_1_and_a_copy() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"]
    doc["paths"].clear()
    assert document()["paths"]
