"""infra/: the Bicep says what the code needs, no more. Parsed with pycep-parser; fast, no network.

- The custom role holds exactly the Microsoft.Web actions of the SDK calls activities/function_keys.py
  and activities/site_hosts.py make (their ARM_ACTIONS tables, checked against the calls in their source).
- The app settings the template produces are SETTING_NAMES, plus a short,
  named list of platform settings; docs/deploy.md lists them all.
- Nothing is assigned at subscription scope; the security baseline properties are set.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from activities import function_keys, site_hosts
from rotation.events import DRIFT_DETECTED, ROTATION_FAILED, ROTATION_HELD
from rotation.identity import ROLES
from rotation.policy import DEFAULT_AUDIT_TABLE, KeyScope
from rotation.settings import SETTING_NAMES

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"
# What the platform itself reads; the app never does (docs/deploy.md, "App settings").
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}


@functools.cache
def bicep(relative: str) -> dict[str, Any]:
    return BicepParser().parse(file_path=INFRA / relative)


def bicep_files() -> list[str]:
    return sorted(str(p.relative_to(INFRA)) for p in INFRA.rglob("*.bicep"))


def resources(relative: str, type_: str) -> list[dict[str, Any]]:
    return [r["config"] for r in bicep(relative)["resources"].values() if r["type"] == type_]


def one(relative: str, type_: str) -> dict[str, Any]:
    (found,) = resources(relative, type_)
    return found


# -- the custom role ---------------------------------------------------------------------------------


def sdk_operations_called() -> set[str]:
    """Every `self._operation("<name>")` in function_keys.py: the WebSiteManagementClient calls it makes."""
    tree = ast.parse(Path(function_keys.__file__).read_text(encoding="utf-8"))
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "_operation"
        and isinstance(node.args[0], ast.Constant)
    }


def test_arm_actions_table_covers_exactly_the_sdk_calls_and_their_slot_variants() -> None:
    called = sdk_operations_called()
    assert called == {
        "list_host_keys",
        "list_function_keys",
        "create_or_update_host_secret",
        "create_or_update_function_secret",
        "delete_host_secret",
        "delete_function_secret",
    }
    expected_operations = called | {f"{name}_slot" for name in called}
    assert {operation for operation, _ in function_keys.ARM_ACTIONS} == expected_operations


def test_host_secret_actions_are_per_key_type_the_policy_can_name() -> None:
    key_types = {KeyScope(kind).host_key_type for kind in ("host", "masterKey")}
    assert key_types == {"functionKeys", "masterKey"}
    for operation in ("create_or_update_host_secret", "create_or_update_host_secret_slot"):
        assert {t for op, t in function_keys.ARM_ACTIONS if op == operation} == key_types
    # The master key is renewed, never deleted (FunctionKeyStore.delete refuses `_` names).
    for operation in ("delete_host_secret", "delete_host_secret_slot"):
        assert {t for op, t in function_keys.ARM_ACTIONS if op == operation} == {"functionKeys"}
    for (operation, key_type), action in function_keys.ARM_ACTIONS.items():
        assert (key_type is None) == ("host_secret" not in operation), operation
        assert action.startswith(
            "Microsoft.Web/sites/slots/" if operation.endswith("_slot") else "Microsoft.Web/sites/"
        )
        assert action.endswith("/action" if operation.startswith("list_") else ("/delete", "/write"))


def test_site_read_actions_cover_exactly_the_host_name_reads() -> None:
    tree = ast.parse(Path(site_hosts.__file__).read_text(encoding="utf-8"))
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "web_apps"
    }
    assert called == {"get", "get_slot"}
    assert {operation for operation, _ in site_hosts.ARM_ACTIONS} == called
    assert site_hosts.ARM_ACTIONS[("get", None)] == "Microsoft.Web/sites/read"
    assert site_hosts.ARM_ACTIONS[("get_slot", None)] == "Microsoft.Web/sites/slots/read"


def custom_role() -> dict[str, Any]:
    return one("modules/role-definition.bicep", "Microsoft.Authorization/roleDefinitions")


def test_custom_role_actions_are_exactly_the_ones_the_activities_call() -> None:
    (permissions,) = custom_role()["properties"]["permissions"]
    actions = bicep("modules/role-definition.bicep")["variables"][permissions["actions"]]["value"]
    assert len(actions) == len(set(actions))
    assert set(actions) == set(function_keys.ARM_ACTIONS.values()) | set(site_hosts.ARM_ACTIONS.values())
    assert not any("*" in action for action in actions)
    assert permissions["notActions"] == permissions["dataActions"] == permissions["notDataActions"] == []


def test_custom_role_is_assignable_to_the_targets_and_assigned_per_target_app() -> None:
    assert custom_role()["properties"]["assignableScopes"] == "assignableScopes"
    role_module = bicep("main.bicep")["modules"]["keyRole"]["config"]
    assert role_module["params"]["assignableScopes"]["operator"]["type"] == "conditional"
    per_target = bicep("main.bicep")["modules"]["targetAccess"]
    assert per_target["detail"]["path"] == "modules/target-access.bicep"
    assignment = one("modules/target-access.bicep", "Microsoft.Authorization/roleAssignments")
    assert assignment["scope"] == "site"
    site = bicep("modules/target-access.bicep")["resources"]["site"]
    assert site["type"] == "Microsoft.Web/sites" and site["existing"] is True


def test_nothing_is_assigned_at_subscription_scope() -> None:
    for relative in bicep_files():
        if bicep(relative)["globals"].get("scope", {}).get("value") == "subscription":
            types = {r["type"] for r in bicep(relative)["resources"].values()}
            assert types <= {"Microsoft.Resources/resourceGroups", "Microsoft.Authorization/roleDefinitions"}, relative


BUILT_IN_ROLES = {
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
    "73c42c96-874c-492b-b04d-ab87d138a893": "Log Analytics Reader",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
}


def test_built_in_roles_are_the_documented_ones_on_single_resources() -> None:
    text = "\n".join((INFRA / f).read_text(encoding="utf-8") for f in bicep_files())
    for guid, name in BUILT_IN_ROLES.items():
        assert guid in text, name
    for relative in bicep_files():
        for assignment in resources(relative, "Microsoft.Authorization/roleAssignments"):
            config = assignment.get("config", assignment)  # a loop's body is under config
            assert config.get("scope") not in (None, "resourceGroup()", "subscription()"), relative
    deploy = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for name in BUILT_IN_ROLES.values():
        assert name in deploy, name


# -- app settings ------------------------------------------------------------------------------------


def test_app_settings_are_the_settings_module() -> None:
    app_settings = bicep("main.bicep")["modules"]["functionApp"]["config"]["params"]["appSettings"]
    assert set(app_settings) == set(SETTING_NAMES)
    client_id = json.dumps(app_settings["AZURE_CLIENT_ID"])  # the identity ManagedIdentityCredential selects
    assert all(f'"{part}"' in client_id for part in ("identity", "outputs", "clientId"))


def test_the_start_pace_parameter_defaults_to_the_apps_own_pace() -> None:
    from rotation import pacing

    parameter = bicep("main.bicep")["parameters"]["rotationMaxStartsPerMinute"]
    assert parameter["default"] == round(pacing.default_pace().per_second * 60)


def test_platform_settings_are_named_and_the_site_gets_both_lists() -> None:
    platform = bicep("modules/functionapp.bicep")["variables"]["platformSettings"]["value"]
    assert set(platform) == PLATFORM_SETTINGS
    assert not PLATFORM_SETTINGS & set(SETTING_NAMES)
    loop = one("modules/functionapp.bicep", "Microsoft.Web/sites")["properties"]["siteConfig"]["appSettings"]
    union = loop["loop_type"]["detail"]["array_name"]["function"]["parameters"]["arg_1"]["function"]
    assert union == {"type": "union", "parameters": {"arg_1": "appSettings", "arg_2": "platformSettings"}}
    text = (INFRA / "modules" / "functionapp.bicep").read_text(encoding="utf-8")
    assert "AzureWebJobsStorage__connectionString" not in text and "AccountKey" not in text


def test_deploy_doc_lists_every_app_setting() -> None:
    deploy = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for name in set(SETTING_NAMES) | PLATFORM_SETTINGS:
        assert f"`{name}`" in deploy, name


# -- security baseline -------------------------------------------------------------------------------


def test_function_app_baseline() -> None:
    site = one("modules/functionapp.bicep", "Microsoft.Web/sites")
    props = site["properties"]
    assert site["identity"]["type"] == "UserAssigned"
    assert props["httpsOnly"] is True
    assert props["functionsRuntimeAdminIsolationEnabled"] is True
    assert props["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.13"}
    assert props["functionAppConfig"]["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    config = props["siteConfig"]
    assert config["minTlsVersion"] == "1.2" and config["ftpsState"] == "Disabled"
    assert config["remoteDebuggingEnabled"] is False
    assert "*" not in config["cors"]["allowedOrigins"]
    plan = one("modules/functionapp.bicep", "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    policies = resources("modules/functionapp.bicep", "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted(p["name"] for p in policies) == ["ftp", "scm"]
    assert all(p["properties"]["allow"] is False for p in policies)


def test_easy_auth_requires_entra_authentication() -> None:
    auth = one("modules/functionapp.bicep", "Microsoft.Web/sites/config")
    assert auth["name"] == "authsettingsV2"
    props = auth["properties"]
    assert props["platform"]["enabled"] is True
    assert props["globalValidation"]["requireAuthentication"] is True
    assert props["globalValidation"]["unauthenticatedClientAction"] == "Return401"
    assert props["globalValidation"]["excludedPaths"] == ["/runtime/webhooks/EventGrid"]
    assert props["identityProviders"]["azureActiveDirectory"]["enabled"] is True


def test_app_roles_are_the_ones_the_api_authorizes_on() -> None:
    roles = json.loads((INFRA / "hooks" / "app-roles.json").read_text(encoding="utf-8"))
    assert [r["value"] for r in roles] == list(ROLES)
    assert len({r["id"] for r in roles}) == len(roles)
    assert all(r["isEnabled"] for r in roles)


def test_data_services_baseline() -> None:
    storage = one("modules/storage.bicep", "Microsoft.Storage/storageAccounts")["properties"]
    assert storage["allowSharedKeyAccess"] is False and storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    vault = one("modules/keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True and vault["enablePurgeProtection"] is True
    topic = one("modules/eventgrid.bicep", "Microsoft.EventGrid/topics")["properties"]
    assert topic["inputSchema"] == "CloudEventSchemaV1_0" and topic["disableLocalAuth"] is True
    insights = one("modules/monitoring.bicep", "Microsoft.Insights/components")["properties"]
    assert insights["DisableLocalAuth"] is True and insights["WorkspaceResourceId"]
    workspace = one("modules/monitoring.bicep", "Microsoft.OperationalInsights/workspaces")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True


def test_diagnostics_near_expiry_subscription_and_alerts() -> None:
    audit = one("modules/keyvault.bicep", "Microsoft.Insights/diagnosticSettings")["properties"]
    assert audit["logs"] == [{"categoryGroup": "audit", "enabled": True}]
    # resource-specific mode: the audit lands in AZKVAuditLogs, the table adoption reads by default
    assert audit["logAnalyticsDestinationType"] == "Dedicated" and DEFAULT_AUDIT_TABLE == "AZKVAuditLogs"
    logs = one("modules/functionapp.bicep", "Microsoft.Insights/diagnosticSettings")["properties"]["logs"]
    assert logs == [{"category": "FunctionAppLogs", "enabled": True}]
    subscription = one("modules/keyvault-events.bicep", "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    assert subscription["properties"]["filter"]["includedEventTypes"] == ["Microsoft.KeyVault.SecretNearExpiry"]
    assert subscription["properties"]["destination"]["endpointType"] == "AzureFunction"
    text = (INFRA / "modules" / "keyvault-events.bicep").read_text(encoding="utf-8")
    assert "/functions/secret_near_expiry'" in text
    alerts = bicep("modules/monitoring.bicep")["variables"]["alertEvents"]["value"]
    assert [a["type"] for a in alerts] == [ROTATION_FAILED, ROTATION_HELD, DRIFT_DETECTED]


def kql_grammar_errors(query: str) -> list[str]:
    """Syntax errors of a real KQL grammar (kusto-query-language-parser, requirements-dev.txt)."""
    from antlr4 import CommonTokenStream, InputStream
    from antlr4.error.ErrorListener import ErrorListener
    from kusto_query_language_parser.parse_tools.KqlLexer import KqlLexer
    from kusto_query_language_parser.parse_tools.KqlParser import KqlParser

    errors: list[str] = []

    class Collect(ErrorListener):
        def syntaxError(self, recognizer: Any, offendingSymbol: Any, line: int, column: int, msg: str, e: Any) -> None:
            errors.append(f"{line}:{column} {msg}")

    lexer = KqlLexer(InputStream(query))
    lexer.removeErrorListeners()
    lexer.addErrorListener(Collect())
    parser = KqlParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(Collect())
    parser.top()
    return errors


def alert_query(event_type: str) -> str:
    """The rule's query for one event type, as Bicep interpolates it."""
    rules = one("modules/monitoring.bicep", "Microsoft.Insights/scheduledQueryRules")
    (criterion,) = rules["config"]["properties"]["criteria"]["allOf"]
    return criterion["query"].replace("${event.type}", event_type)


def test_alert_queries_are_valid_kql_matching_the_publish_log_line() -> None:
    for event_type in (ROTATION_FAILED, ROTATION_HELD, DRIFT_DETECTED):
        query = alert_query(event_type)
        assert kql_grammar_errors(query) == [], query
        assert query.startswith("FunctionAppLogs | ")
    # The line activities/events_publish.py logs for a batch: "<type> <id> <subject>" joined by ", ".
    source = (ROOT / "activities" / "events_publish.py").read_text(encoding="utf-8")
    assert '"published %d event(s): %s"' in source
    assert "f\"{e['type']} {e['id']} {e.get('subject', '')}\"" in source


# -- azd -----------------------------------------------------------------------------------------------


def test_parameters_file_covers_the_required_parameters() -> None:
    declared = bicep("main.bicep")["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    required = {name for name, p in declared.items() if p.get("default") is None}
    assert required <= set(given)
    assert set(given) <= set(declared)


def load_policy_params():
    spec = importlib.util.spec_from_file_location("policy_params", INFRA / "hooks" / "policy_params.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_policy_params_come_from_the_shipped_policy() -> None:
    module = load_policy_params()
    policy = json.loads((ROOT / "config" / "rotation-policy.example.json").read_text(encoding="utf-8"))
    values = module.params(policy)
    apps = values["KEYROTATION_TARGET_APP_IDS"].split(",")
    assert sorted(apps) == sorted({t["functionApp"] for t in policy["targets"]})
    assert " " not in values["KEYROTATION_CONSUMER_PRINCIPAL_IDS"]
    with pytest.raises(module.PolicyParamsError):
        module.params({"targets": [{"functionApp": "/subscriptions/x/resourceGroups/g"}]})


def test_the_signing_key_has_a_vault_only_the_app_reads() -> None:
    """Consumers hold Secrets User on the rotated keys' vault; the signing key must not be there (whoever
    reads it can start and decide rotations with the Durable system key: threat model 3.2)."""
    assert resources("modules/keyvault.bicep", "Microsoft.KeyVault/vaults/secrets") == []
    secret = one("modules/signing-vault.bicep", "Microsoft.KeyVault/vaults/secrets")
    assert secret["name"] == "keyrotation-signing-key"
    found = resources("modules/signing-vault.bicep", "Microsoft.Authorization/roleAssignments")
    assignments = [a.get("config", a) for a in found]  # a conditional resource's body is under config
    principals = sorted(a["properties"]["principalId"] for a in assignments)
    assert principals == ["appPrincipalId", "deployerPrincipalId"]
    reader = next(a for a in assignments if a["properties"]["principalId"] == "appPrincipalId")
    assert "4633458b-17de-408a-b874-0445c86b69e6" in json.dumps(reader)  # Secrets User: read, not write
    settings = bicep("main.bicep")["modules"]["functionApp"]["config"]["params"]["appSettings"]
    assert "signingVault.outputs.name" in json.dumps(settings["KEYROTATION_SIGNING_KEY"])
