"""Derive the deployment's parameters from the rotation policy the deployment ships.

The policy is the one list of targets and consumers: the custom key role is assigned on every target's
function app, and every consumer gets Key Vault Secrets User on the vault. Prints shell assignments
for infra/hooks/preprovision.sh (comma-separated, no spaces: what main.bicep splits).

    python infra/hooks/policy_params.py config/rotation-policy.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

_SITE_ID = re.compile(r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[^/]+/providers/Microsoft\.Web/sites/[^/]+$")
_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class PolicyParamsError(ValueError):
    pass


def params(policy: dict[str, Any]) -> dict[str, str]:
    apps: dict[str, str] = {}
    consumers: dict[str, str] = {}
    sections = [policy.get("defaults") or {}, *(policy.get("targets") or [])]
    for i, target in enumerate(policy.get("targets") or []):
        app = str(target.get("functionApp", ""))
        if not _SITE_ID.match(app):
            raise PolicyParamsError(f"targets[{i}].functionApp: not a function app ARM id: {app!r}")
        apps.setdefault(app.lower(), app)
    for section in sections:
        for consumer in section.get("consumers") or []:
            object_id = str(consumer.get("objectId", ""))
            if not _OBJECT_ID.match(object_id):
                raise PolicyParamsError(f"consumer {consumer.get('name')!r}: objectId is not a GUID: {object_id!r}")
            consumers.setdefault(object_id.lower(), object_id.lower())
    return {
        "KEYROTATION_TARGET_APP_IDS": ",".join(sorted(apps.values(), key=str.lower)),
        "KEYROTATION_CONSUMER_PRINCIPAL_IDS": ",".join(sorted(consumers.values())),
    }


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "config/rotation-policy.json")
    try:
        values = params(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    for name, value in values.items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
