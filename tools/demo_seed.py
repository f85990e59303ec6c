"""The world around the demo's rotations: the target apps, the keys an operator made by hand before the
product existed, the telemetry the gate will read, and a consumer picking up its new key.

Everything goes through public surfaces: the emulators' control API for what Azure would already hold
(apps, telemetry), the official SDK clients for what people do (an operator creating keys with
WebSiteManagementClient, a consumer reading Key Vault with SecretClient under its own identity).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rotation.durations import format_timestamp
from rotation.policy import Target
from tools.devhost_launcher import Devhost, StackError

OPERATOR = ("00000000-0000-0000-0000-0000000000e0", "demo-operator")
_PROBE_FUNCTION = re.compile(r"^/api/([A-Za-z][A-Za-z0-9_-]*)$")


@dataclass(frozen=True)
class SiteSpec:
    subscription: str
    resource_group: str
    name: str
    functions: tuple[str, ...]


def site_specs(targets: Iterable[Target]) -> list[SiteSpec]:
    """One emulated app per function app in the policy, with the functions its targets name (their
    key scope, or the function their probe calls)."""
    sites: dict[tuple[str, str, str], list[str]] = {}
    for target in targets:
        app = target.function_app
        functions = sites.setdefault((app.subscription_id, app.resource_group, app.name), [])
        named = [target.key_scope.function] if target.key_scope.function else []
        match = _PROBE_FUNCTION.match(target.probe.path) if target.probe else None
        named += [match.group(1)] if match else []
        functions.extend(f for f in named if f.lower() not in {x.lower() for x in functions})
    return [SiteSpec(sub, rg, name, tuple(fns)) for (sub, rg, name), fns in sites.items()]


def seed_sites(stack: Devhost, targets: Iterable[Target]) -> list[SiteSpec]:
    specs = site_specs(targets)
    for spec in specs:
        path = f"sites/{spec.subscription}/{spec.resource_group}/{spec.name}"
        response = stack.control("PUT", path, json={"functions": list(spec.functions)})
        if response.status_code not in (200, 201):
            raise StackError(f"the emulator refused app {spec.name}: HTTP {response.status_code} {response.text[:200]}")
    return specs


def create_operator_keys(stack: Devhost, targets: Iterable[Target]) -> list[str]:
    """The pre-existing key named after each target's base name, as an operator made it by hand: PUT
    without a value (the platform generates it; quirk 1: a plain dict with `properties`). Skipped
    when already there, so a rerun on the same state does not renew it."""
    made: list[str] = []
    for target in targets:
        if target.is_master_key:
            continue
        app, name = target.function_app, target.base_key_name
        with stack.web_client_as(OPERATOR, app.subscription_id) as web:
            body = {"properties": {"name": name}}
            if target.key_scope.kind == "function":
                function = str(target.key_scope.function)
                listed = dict(web.web_apps.list_function_keys(app.resource_group, app.name, function))
                nested = listed.get("properties")  # ARM answers a flat map; the SDK model may wrap it
                existing = nested if isinstance(nested, dict) else listed
                if name.lower() not in {k.lower() for k in existing}:
                    web.web_apps.create_or_update_function_secret(app.resource_group, app.name, function, name, body)
                    made.append(f"{app.name}/functions/{function}/keys/{name}")
            else:
                existing = web.web_apps.list_host_keys(app.resource_group, app.name).function_keys or {}
                if name.lower() not in {k.lower() for k in existing}:
                    web.web_apps.create_or_update_host_secret(app.resource_group, app.name, "functionKeys", name, body)
                    made.append(f"{app.name}/host/functionKeys/{name}")
    return made


def _post_rows(stack: Devhost, table: str, rows: list[dict[str, Any]]) -> int:
    response = stack.control("POST", "telemetry", json={"table": table, "rows": rows})
    if response.status_code != 201:
        raise StackError(f"the emulator refused {table} rows: HTTP {response.status_code} {response.text[:300]}")
    return int(response.json()["inserted"])


def seed_telemetry(stack: Devhost, targets: Iterable[Target], now: datetime, failing: str) -> dict[str, int]:
    """Healthy traffic for every target in both gate windows; for `failing`, 401s inside its overlap
    window only (none in the baseline), so its gate holds it. Rows are stamped in virtual time."""
    counts: dict[str, int] = {}
    for target in targets:
        if target.is_master_key:
            continue
        host = target.function_app.default_host_name
        stamps = [now + timedelta(hours=h) for h in (-20, -14, -8, -3, 2, 5, 9, 14)]
        window = target.overlap
        failures = [now + timedelta(minutes=30) + window * (i / 24) for i in range(12)] if target.id == failing else []
        if target.monitoring.signal == "target-http-logs":
            path = f"/api/{target.key_scope.function or 'ping'}"
            resource = target.function_app.resource_id.lower()

            def row(
                at: datetime, status: int, host: str = host, path: str = path, rid: str = resource
            ) -> dict[str, Any]:
                return {
                    "TimeGenerated": format_timestamp(at),
                    "CsHost": host,
                    "CsMethod": "GET",
                    "CsUriStem": path,
                    "ScStatus": status,
                    "TimeTaken": 35,
                    "_ResourceId": rid,
                }

            rows = [row(at, 200) for at in stamps] + [row(at, 401) for at in failures]
            counts[target.id] = _post_rows(stack, "AppServiceHTTPLogs", rows)
        elif target.monitoring.signal == "consumer-dependencies":
            rows = [
                {
                    "TimeGenerated": format_timestamp(at),
                    "AppRoleName": consumer.name,
                    "DependencyType": "HTTP",
                    "Name": "GET /api/ping",
                    "Target": host,
                    "ResultCode": "401" if at in failures else "200",
                    "Success": at not in failures,
                    "DurationMs": 12.5,
                }
                for consumer in target.consumers
                for at in stamps + failures
            ]
            counts[target.id] = _post_rows(stack, "AppDependencies", rows) if rows else 0
    return counts


def consumer_reads_version(stack: Devhost, target: Target, version: str, who: tuple[str, str]) -> None:
    """A consumer service fetching the announced version under its own identity: the Key Vault audit
    records its object id, which is how the rotation sees adoption. The value is dropped unseen."""
    with stack.secret_client_as(who, target.key_vault.vault_url) as client:
        secret = client.get_secret(target.key_vault.secret_name, version)
        if not secret.value:
            raise StackError(f"{who[1]} read an empty value from version {version}")
        del secret
