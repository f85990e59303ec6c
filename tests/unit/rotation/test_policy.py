"""The rotation policy: the shipped files validate, every rule's error names the target and the field,
defaults merge as documented, setting references resolve."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from rotation.durations import DurationError, format_duration, parse_duration
from rotation.policy import (
    APP_ROOT,
    SCHEMA_PATH,
    PolicyError,
    Threshold,
    load_policy,
    parse_policy,
    parse_target,
    policy_path,
    render_kql,
)

CONFIG = APP_ROOT / "config"
LOCAL_ENV = {
    "KEY_VAULT_URL": "https://127.0.0.1:8443",
    "ARM_ENDPOINT": "https://127.0.0.1:8443",
    "LOG_ANALYTICS_WORKSPACE_ID": "11111111-2222-3333-4444-555555555555",
}
SITE = (
    "/subscriptions/3f2b6c1e-8a4d-4e5f-9a7b-1c2d3e4f5a6b/resourceGroups/rg-orders/providers/Microsoft.Web/sites/orders"
)
WORKSPACE = "6c1f0a2e-3d4b-4f5a-9b8c-7d6e5f4a3b2c"


def target(**changes: Any) -> dict[str, Any]:
    """A valid target; its base key name and secret follow its id so targets built here never collide."""
    target_id = changes.get("id", "orders-api")
    base: dict[str, Any] = {
        "id": target_id,
        "functionApp": SITE,
        "keyScope": {"kind": "host"},
        "baseKeyName": f"{target_id[:20]}-client",
        "keyVault": {"vaultUrl": "https://kv-prod.vault.azure.net", "secretName": f"{target_id}-client-key"},
        "monitoring": {"signal": "consumer-dependencies", "workspaceId": WORKSPACE},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def policy(*targets: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": 1, "targets": list(targets)}
    if defaults is not None:
        doc["defaults"] = defaults
    return doc


def problems(doc: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(doc, env or {})
    return [str(issue) for issue in caught.value.issues]


# -- the shipped files --------------------------------------------------------------------------------


def test_example_policy_for_azure_validates() -> None:
    loaded = load_policy(CONFIG / "rotation-policy.example.json", environ={})
    ids = [t.id for t in loaded]
    assert "orders-api" in ids
    scopes = {t.key_scope.kind for t in loaded}
    assert scopes == {"host", "function", "masterKey"}
    staging = loaded.target("orders-api-staging")
    assert staging is not None and staging.function_app.resource_id.endswith("/sites/orders-api-prod/slots/staging")


def test_local_policy_has_the_demo_targets_and_resolves_emulator_urls() -> None:
    loaded = load_policy(CONFIG / "rotation-policy.local.json", environ=LOCAL_ENV)
    host = [t for t in loaded if t.key_scope.kind == "host"]
    function = [t for t in loaded if t.key_scope.kind == "function"]
    assert host and function, "the demo needs a host functionKeys target and a function-key target"
    for t in host + function:
        assert t.consumers, f"{t.id} has no consumers"
        assert t.probe is not None, f"{t.id} has no probe"
        assert t.key_vault.vault_url == "https://127.0.0.1:8443"
        assert t.probe.base_url is None  # the probe goes to the host name ARM reports, as on Azure
        assert t.probe.url("https://demo.azurewebsites.net") == f"https://demo.azurewebsites.net{t.probe.path}"
        assert t.monitoring.workspace_id == LOCAL_ENV["LOG_ANALYTICS_WORKSPACE_ID"]


def test_local_policy_without_the_devhost_settings_names_each_missing_setting() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(CONFIG / "rotation-policy.local.json", environ={})
    text = str(caught.value)
    assert "defaults: keyVault.vaultUrl: refers to app setting KEY_VAULT_URL" in text
    assert "LOG_ANALYTICS_WORKSPACE_ID" in text  # the probe names no endpoint: ARM reports its host


@pytest.mark.parametrize("name", ["rotation-policy.example.json", "rotation-policy.local.json"])
def test_shipped_files_validate_against_the_schema_file_as_written(name: str) -> None:
    """What an operator's editor does with the `$schema` reference: the raw file, references unresolved."""
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    errors = list(Draft202012Validator(schema).iter_errors(json.loads((CONFIG / name).read_text())))
    assert errors == []


def test_policy_path_comes_from_the_app_setting() -> None:
    assert policy_path({}) == APP_ROOT / "config" / "rotation-policy.json"
    assert policy_path({"ROTATION_POLICY_PATH": "config/rotation-policy.local.json"}) == (
        APP_ROOT / "config" / "rotation-policy.local.json"
    )
    assert policy_path({"ROTATION_POLICY_PATH": "/etc/p.json"}) == Path("/etc/p.json")


def test_missing_and_malformed_files_are_reported_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"file not found.*ROTATION_POLICY_PATH"):
        load_policy(tmp_path / "nope.json", environ={})
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1,\n "targets": [}')
    with pytest.raises(PolicyError, match=r"(?s)bad.json.*not valid JSON.*line 2"):
        load_policy(bad, environ={})


# -- every rule names the target and the field ---------------------------------------------------------

RULES: list[tuple[str, dict[str, Any], str]] = [
    ("id pattern", {"id": "Orders_API", "baseKeyName": "x"}, "id: must be 3-48 lowercase"),
    (
        "slot in the app id",
        {"functionApp": SITE + "/slots/staging"},
        "functionApp: must be the ARM id of a function app",
    ),
    (
        "not a site",
        {"functionApp": SITE.replace("Microsoft.Web/sites", "Microsoft.Storage/storageAccounts")},
        "functionApp:",
    ),
    ("production slot", {"slot": "production"}, "slot: omit slot for the production slot"),
    (
        "system keys",
        {"keyScope": {"kind": "systemKeys"}},
        "keyScope.kind: systemKeys cannot be rotated: they belong to extensions",
    ),
    ("function name missing", {"keyScope": {"kind": "function"}}, "keyScope.function: is required"),
    (
        "function on host scope",
        {"keyScope": {"kind": "host", "function": "F"}},
        "keyScope.function: is only allowed with kind function",
    ),
    (
        "master key without flag",
        {"keyScope": {"kind": "masterKey"}, "baseKeyName": None},
        "allowMasterKey: must be true to rotate the master key",
    ),
    (
        "master key flag false",
        {"keyScope": {"kind": "masterKey"}, "baseKeyName": None, "allowMasterKey": False},
        "allowMasterKey: must be true",
    ),
    (
        "master key with base name",
        {"keyScope": {"kind": "masterKey"}, "allowMasterKey": True},
        "baseKeyName: is not used for the master key",
    ),
    (
        "flag off the master key",
        {"allowMasterKey": True},
        "allowMasterKey: is only allowed with keyScope kind masterKey",
    ),
    ("base name missing", {"baseKeyName": None}, "baseKeyName: is required"),
    ("base name reserved prefix", {"baseKeyName": "_orders"}, "baseKeyName: must be 1-32 lowercase"),
    (
        "base name like a generation",
        {"baseKeyName": "orders-20260101t000000z-s"},
        "baseKeyName: must not end like a generated key name",
    ),
    (
        "host-managed secret name",
        {"keyVault": {"vaultUrl": "https://kv.vault.azure.net", "secretName": "host--functionKey--orders"}},
        "keyVault.secretName: must not start with 'host--' or 'function--'",
    ),
    (
        "secret name characters",
        {"keyVault": {"vaultUrl": "https://kv.vault.azure.net", "secretName": "orders_key"}},
        "keyVault.secretName: must be 1-127 letters, digits or '-'",
    ),
    (
        "plain http vault",
        {"keyVault": {"vaultUrl": "http://kv.vault.azure.net", "secretName": "k"}},
        "keyVault.vaultUrl: must be an https:// vault URL",
    ),
    (
        "no vault anywhere",
        {"keyVault": {"secretName": "k"}},
        "keyVault.vaultUrl: is required (on the target or in defaults.keyVault)",
    ),
    ("months", {"interval": "P1M"}, "interval: must be an ISO 8601 duration in weeks, days"),
    ("interval too short", {"interval": "PT12H"}, "interval: must be at least 1 day"),
    ("interval too long", {"interval": "P400D"}, "interval: must be at most 365 days"),
    ("overlap too long", {"interval": "P90D", "overlap": "P31D"}, "overlap: must be at most 30 days"),
    ("overlap too short", {"overlap": "PT30M"}, "overlap: must be at least 1 hour"),
    (
        "overlap not shorter than interval",
        {"interval": "P7D", "overlap": "P7D"},
        "overlap: must be shorter than interval (7 days)",
    ),
    (
        "probe query string",
        {"probe": {"path": "/api/ping?code=x"}},
        "probe.path: must be a path starting with '/' without a query string",
    ),
    (
        "probe expects refusal",
        {"probe": {"path": "/api/ping", "expectStatus": [200, 401]}},
        "probe.expectStatus: must not contain 401 or 403",
    ),
    ("probe attempts", {"probe": {"path": "/api/ping", "attempts": 0}}, "probe.attempts: must be at least 1"),
    ("probe delay", {"probe": {"path": "/api/ping", "delay": "PT10M"}}, "probe.delay: must be at most 5 minutes"),
    (
        "probe http base",
        {"probe": {"path": "/p", "baseUrl": "http://orders.azurewebsites.net"}},
        "probe.baseUrl: must be an https:// URL",
    ),
    (
        "unknown signal",
        {"monitoring": {"signal": "app-insights", "workspaceId": WORKSPACE}},
        "monitoring.signal: must be one of consumer-dependencies",
    ),
    (
        "no signal",
        {"monitoring": {"workspaceId": WORKSPACE}},
        "monitoring.signal: is required (on the target or in defaults.monitoring)",
    ),
    (
        "two query scopes",
        {"monitoring": {"signal": "target-requests", "workspaceId": WORKSPACE, "resourceId": SITE}},
        "monitoring: must have exactly one of workspaceId and resourceId",
    ),
    (
        "no query scope",
        {"monitoring": {"signal": "target-requests"}},
        "monitoring: must have exactly one of workspaceId and resourceId",
    ),
    (
        "workspace not a guid",
        {"monitoring": {"signal": "target-requests", "workspaceId": "prod"}},
        "monitoring.workspaceId: must be a GUID",
    ),
    (
        "kql without query",
        {"monitoring": {"signal": "kql", "workspaceId": WORKSPACE}},
        "monitoring.query: is required with signal kql",
    ),
    (
        "query with a preset",
        {"monitoring": {"signal": "target-requests", "workspaceId": WORKSPACE, "query": "T"}},
        "monitoring.query: is only used with signal kql",
    ),
    (
        "unknown placeholder",
        {"monitoring": {"signal": "kql", "workspaceId": WORKSPACE, "query": "T | where A == '{appname}'"}},
        "monitoring.query: unknown placeholder {appname}",
    ),
    (
        "both tests off",
        {
            "monitoring": {
                "signal": "target-requests",
                "workspaceId": WORKSPACE,
                "threshold": {"maxFailures": None, "maxRatio": None},
            }
        },
        "monitoring.threshold: must keep at least one",
    ),
    (
        "ratio below one",
        {"monitoring": {"signal": "target-requests", "workspaceId": WORKSPACE, "threshold": {"maxRatio": 0.5}}},
        "monitoring.threshold.maxRatio: must be at least 1",
    ),
    (
        "watch too long",
        {"monitoring": {"signal": "target-requests", "workspaceId": WORKSPACE, "watch": "P2D"}},
        "monitoring.watch: must be at most 1 day",
    ),
    ("hold action", {"hold": {"defaultAction": "retry"}}, "hold.defaultAction: must be approve or abort"),
    ("hold deadline", {"hold": {"deadline": "P30D"}}, "hold.deadline: must be at most 14 days"),
    ("emergency overlap", {"emergency": {"maxOverlap": "P2D"}}, "emergency.maxOverlap: must be at most 1 day"),
    (
        "consumer object id",
        {"consumers": [{"name": "billing", "objectId": "billing-app"}]},
        "consumers[0].objectId: must be a GUID",
    ),
    (
        "consumer twice",
        {"consumers": [{"name": "a", "objectId": WORKSPACE}, {"name": "b", "objectId": WORKSPACE.upper()}]},
        "consumers[1].objectId: " + WORKSPACE.upper() + " is listed twice",
    ),
    (
        "consumer name twice",
        {"consumers": [{"name": "a", "objectId": WORKSPACE}, {"name": "A", "objectId": SITE[15:51]}]},
        "consumers[1].name: 'A' is listed twice",
    ),
    ("typo", {"intervall": "P30D"}, "intervall: is not a known field (check the spelling)"),
]


@pytest.mark.parametrize(("rule", "changes", "expected"), RULES, ids=[r[0] for r in RULES])
def test_each_rule_reports_target_and_field(rule: str, changes: dict[str, Any], expected: str) -> None:
    found = problems(policy(target(id="other-api"), target(**changes)))
    label = f'targets[1] (id "{changes.get("id", "orders-api")}"): '
    assert any(p.startswith(label) and expected in p for p in found), found


def test_the_message_reads_as_the_operator_sees_it() -> None:
    bad = target(interval="P90D", overlap="P31D")
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy(target(id="billing-api"), target(id="reports-api"), bad), {}, source="policy.json")
    assert [str(i) for i in caught.value.issues] == ['targets[2] (id "orders-api"): overlap: must be at most 30 days']
    assert str(caught.value).startswith("invalid rotation policy policy.json (1 problem(s)):")


def test_every_problem_is_reported_at_once() -> None:
    found = problems(policy(target(id="a-api", interval="P1M"), target(id="b-api", keyScope={"kind": "systemKeys"})))
    assert any(p.startswith('targets[0] (id "a-api"): interval:') for p in found)
    assert any(p.startswith('targets[1] (id "b-api"): keyScope.kind: systemKeys') for p in found)


def test_document_level_rules() -> None:
    assert problems({"targets": []}) == ["version: is required"]
    assert problems({"version": 2, "targets": []}) == ["version: must be 1 (the only policy format version)"]
    assert problems(policy(target(), defaults={"id": "x"})) == [
        "defaults: id: cannot have a policy-wide default; set it on each target"
    ]
    assert problems(policy(target(), defaults={"keyVault": {"secretName": "x"}})) == [
        "defaults: keyVault.secretName: cannot have a policy-wide default (only vaultUrl and auditTable can)"
    ]
    assert parse_policy(policy(), {}).targets == ()


def test_targets_must_not_share_an_id_a_secret_or_a_key_family() -> None:
    found = problems(policy(target(), target()))
    assert 'targets[1] (id "orders-api"): id: is also used by targets[0]' in found
    assert 'targets[1] (id "orders-api"): keyVault.secretName: is also the secret of targets[0]' in found
    assert any(p.startswith('targets[1] (id "orders-api"): baseKeyName: targets[0] already rotates') for p in found)
    # Key Vault names are case-insensitive; vault URLs differing only by a trailing slash are one vault.
    twin = target(
        id="orders-twin",
        keyVault={"vaultUrl": "https://KV-PROD.vault.azure.net/", "secretName": "ORDERS-API-CLIENT-KEY"},
    )
    assert problems(policy(target(), twin)) == [
        'targets[1] (id "orders-twin"): keyVault.secretName: is also the secret of targets[0]'
    ]
    # The same base name on another slot or another function is another family.
    staging = target(id="orders-staging", slot="staging", baseKeyName="orders-api-client")
    function = target(id="orders-fn", keyScope={"kind": "function", "function": "F"}, baseKeyName="orders-api-client")
    assert len(parse_policy(policy(target(), staging, function), {}).targets) == 3


# -- defaults ------------------------------------------------------------------------------------------


def test_builtin_defaults_apply_to_a_minimal_target() -> None:
    t = parse_policy(policy(target()), {}).targets[0]
    assert (t.interval, t.overlap) == (timedelta(days=90), timedelta(days=3))
    assert t.enabled and t.schedulable and t.consumers == () and t.probe is None
    assert t.monitoring.threshold == Threshold(max_failures=10, max_ratio=2.0)
    assert t.monitoring.watch == timedelta(minutes=30)
    assert (t.hold.deadline, t.hold.default_action) == (timedelta(days=2), "abort")
    assert t.emergency_max_overlap == timedelta(hours=1)


def test_policy_defaults_apply_and_the_target_wins_field_by_field() -> None:
    defaults = {
        "interval": "P30D",
        "keyVault": {"vaultUrl": "https://shared.vault.azure.net"},
        "monitoring": {"signal": "consumer-dependencies", "workspaceId": WORKSPACE, "threshold": {"maxFailures": 3}},
        "hold": {"defaultAction": "approve"},
    }
    a = target(id="a-api", keyVault={"secretName": "a"}, monitoring=None)
    b = target(
        id="b-api",
        keyVault={"secretName": "b"},
        interval="P60D",
        monitoring={"threshold": {"maxRatio": None}},
        hold={"deadline": "PT6H"},
    )
    first, second = parse_policy(policy(a, b, defaults=defaults), {}).targets
    assert first.key_vault.vault_url == "https://shared.vault.azure.net"
    assert first.interval == timedelta(days=30)
    assert first.monitoring.threshold == Threshold(3, 2.0)
    assert first.hold.default_action == "approve"
    assert second.interval == timedelta(days=60)
    assert second.monitoring.signal == "consumer-dependencies"
    assert second.monitoring.threshold == Threshold(3, None)
    assert (second.hold.deadline, second.hold.default_action) == (timedelta(hours=6), "approve")


def test_a_target_choosing_where_to_query_replaces_the_default_choice() -> None:
    defaults = {"monitoring": {"signal": "kql", "workspaceId": WORKSPACE, "query": "T | summarize failures=count()"}}
    t = target(monitoring={"signal": "target-http-logs", "resourceId": SITE})
    got = parse_policy(policy(t, defaults=defaults), {}).targets[0].monitoring
    assert (got.signal, got.resource_id, got.workspace_id, got.query) == ("target-http-logs", SITE, None, None)


def test_probe_defaults_only_fill_in_targets_that_have_a_probe() -> None:
    defaults = {"probe": {"attempts": 3, "delay": "PT2S"}}
    with_probe = target(id="a-api", probe={"path": "/api/ping"})
    without = target(id="b-api")
    a, b = parse_policy(policy(with_probe, without, defaults=defaults), {}).targets
    assert a.probe is not None and (a.probe.attempts, a.probe.delay, a.probe.method) == (3, timedelta(seconds=2), "GET")
    assert a.probe.expect_status == (200,)
    assert b.probe is None


def test_master_key_targets_are_emergency_only() -> None:
    t = parse_policy(policy(target(keyScope={"kind": "masterKey"}, allowMasterKey=True, baseKeyName=None)), {}).targets[
        0
    ]
    assert t.is_master_key and not t.schedulable and t.base_key_name == "_master"
    assert t.key_scope.host_key_type == "masterKey"


def test_disabled_targets_are_not_scheduled() -> None:
    t = parse_policy(policy(target(enabled=False)), {}).targets[0]
    assert not t.schedulable


# -- setting references --------------------------------------------------------------------------------


def test_setting_references_resolve_anywhere_and_double_percent_is_literal() -> None:
    t = target(
        keyVault={"vaultUrl": "%VAULT%", "secretName": "%PREFIX%-key"},
        description="100%% of %TEAM%",
    )
    env = {"VAULT": "https://kv-x.vault.azure.net/", "PREFIX": "orders", "TEAM": "payments"}
    got = parse_policy(policy(t), env).targets[0]
    assert got.key_vault.vault_url == "https://kv-x.vault.azure.net"
    assert got.key_vault.secret_name == "orders-key"
    assert got.description == "100% of payments"


def test_a_missing_or_empty_setting_is_named_with_where_it_is_used() -> None:
    t = target(keyVault={"vaultUrl": "%VAULT%", "secretName": "k"})
    expected = [
        'targets[0] (id "orders-api"): keyVault.vaultUrl: refers to app setting VAULT (%VAULT%), which is not set'
    ]
    assert problems(policy(t), {}) == expected
    assert problems(policy(t), {"VAULT": "  "}) == expected


def test_a_resolved_value_is_still_validated() -> None:
    t = target(keyVault={"vaultUrl": "%VAULT%", "secretName": "k"})
    assert problems(policy(t), {"VAULT": "http://127.0.0.1:1"}) == [
        'targets[0] (id "orders-api"): keyVault.vaultUrl: must be an https:// vault URL without a path, '
        "e.g. https://kv-rotation.vault.azure.net"
    ]


# -- the model -----------------------------------------------------------------------------------------


def test_a_target_round_trips_through_its_json_form() -> None:
    """Orchestrations take a target snapshot as input; parsing it back gives the same target."""
    loaded = load_policy(CONFIG / "rotation-policy.example.json", environ={})
    for t in loaded:
        data = t.to_json()
        json.dumps(data)
        assert parse_target(copy.deepcopy(data)) == t


def test_function_app_ids_and_host_names() -> None:
    t = parse_policy(policy(target(slot="Staging")), {}).targets[0]
    assert t.function_app.site_id == SITE
    assert t.function_app.resource_id == SITE + "/slots/Staging"
    assert t.function_app.default_host_name == "orders-staging.azurewebsites.net"
    assert (t.function_app.subscription_id, t.function_app.resource_group) == (
        "3f2b6c1e-8a4d-4e5f-9a7b-1c2d3e4f5a6b",
        "rg-orders",
    )


@pytest.mark.parametrize(
    ("threshold", "failures", "baseline", "held"),
    [
        (Threshold(10, 2.0), 11, 0, True),  # both exceeded (baseline 0 counts as 1)
        (Threshold(10, 2.0), 10, 0, False),  # at the count: not above it
        (Threshold(10, 2.0), 120, 100, False),  # many failures, but they were already there
        (Threshold(10, None), 11, 100, True),
        (Threshold(None, 2.0), 3, 1, True),
        (Threshold(None, 2.0), 2, 1, False),
    ],
)
def test_threshold_holds_only_when_every_enabled_test_is_exceeded(
    threshold: Threshold, failures: int, baseline: int, held: bool
) -> None:
    assert threshold.breached(failures, baseline) is held


def test_finding_the_target_of_a_key_vault_secret() -> None:
    loaded = load_policy(CONFIG / "rotation-policy.example.json", environ={})
    found = loaded.target_for_secret("ORDERS-API-WORKERS-KEY", "kv-keyrotation-prod")
    assert found is not None and found.id == "orders-api"
    assert loaded.target_for_secret("orders-api-workers-key", "https://kv-keyrotation-prod.vault.azure.net/") is found
    assert loaded.target_for_secret("orders-api-workers-key", "another-vault") is None
    assert loaded.target_for_secret("unknown") is None


def test_due_time_and_secret_expiry() -> None:
    t = parse_policy(policy(target(interval="P30D", overlap="P2D")), {}).targets[0]
    created = datetime(2026, 1, 1, tzinfo=UTC)
    assert t.next_due(created) == datetime(2026, 1, 31, tzinfo=UTC)
    assert t.secret_expiry(created) == datetime(2026, 2, 2, tzinfo=UTC)


def test_kql_placeholders_are_replaced_and_dynamic_literals_left_alone() -> None:
    t = parse_policy(policy(target(keyScope={"kind": "function", "function": "Export"})), {}).targets[0]
    query = "T | where Host == '{hostName}' and Fn == '{functionName}' | extend d = dynamic({\"a\": 1})"
    assert render_kql(query, t.kql_values()) == (
        "T | where Host == 'orders.azurewebsites.net' and Fn == 'Export' | extend d = dynamic({\"a\": 1})"
    )
    assert t.kql_values("Orders.Contoso.com")["hostName"] == "orders.contoso.com"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("P30D", timedelta(days=30)),
        ("PT12H", timedelta(hours=12)),
        ("P1DT6H30M", timedelta(days=1, hours=6, minutes=30)),
        ("P2W", timedelta(days=14)),
        ("PT0S", timedelta(0)),
        ("PT1.5S", timedelta(seconds=1.5)),
    ],
)
def test_durations_parse_and_format(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["P", "PT", "30D", "P1M", "P1Y", "P1DT", "-P1D", "P1.5D"])
def test_durations_outside_the_accepted_form_are_refused(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize(
    "text", ["PT99999999999999999999S", "P999999999999D", "P" + "9" * 400 + "D", "P36501D", "P9999999W"]
)
def test_durations_too_long_for_any_clock_are_refused_without_repeating_them(text: str) -> None:
    """Issue 12: these raised OverflowError (an API 500) instead of DurationError."""
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert "P36500D" in str(caught.value) and text not in str(caught.value)


def test_the_domain_imports_neither_azure_nor_jsonschema() -> None:
    """DESIGN: rotation/ imports no Azure SDK; jsonschema is loaded only when a policy is (import budget)."""
    code = (
        "import sys; import rotation.policy, rotation.naming, rotation.events, rotation.identity, "
        "rotation.redaction, rotation.credential_store, rotation.durations; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('azure', 'jsonschema')); print(bad); "
        "sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=APP_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_current_policy_is_parsed_once_and_again_after_an_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from rotation.policy import current_policy

    source = json.loads((CONFIG / "rotation-policy.local.json").read_text())
    file = tmp_path / "policy.json"
    file.write_text(json.dumps(source))
    monkeypatch.setenv("ROTATION_POLICY_PATH", str(file))
    for name, value in {
        "KEY_VAULT_URL": "https://127.0.0.1:1",
        "ARM_ENDPOINT": "https://127.0.0.1:1",
        "LOG_ANALYTICS_WORKSPACE_ID": "00000000-0000-0000-0000-000000000001",
    }.items():
        monkeypatch.setenv(name, value)
    first = current_policy()
    assert current_policy() is first  # unchanged file: no second parse
    source["targets"] = source["targets"][:1]
    file.write_text(json.dumps(source))
    stat = file.stat()
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert [t.id for t in current_policy()] == [source["targets"][0]["id"]]
