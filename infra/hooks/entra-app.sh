#!/bin/sh
# The Entra app registration Easy Auth validates tokens for, with the five app roles the API authorizes
# on (rotation/identity.py ROLES). Idempotent: finds the registration by name, creates it if missing,
# then makes its roles, identifier URI and service principal what this script says.
# Needs: az CLI signed in as someone who may create app registrations (Application Developer, or
# Cloud Application Administrator when users may not register apps), and AZURE_ENV_NAME.
# Writes KEYROTATION_AUTH_CLIENT_ID into the azd environment. docs/deploy.md explains why a script.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
name="keyrotation-${AZURE_ENV_NAME:?AZURE_ENV_NAME is not set}"

app_id=$(az ad app list --display-name "$name" --query "[0].appId" -o tsv)
if [ -z "$app_id" ]; then
  echo "creating app registration $name"
  app_id=$(az ad app create --display-name "$name" --sign-in-audience AzureADMyOrg --query appId -o tsv)
fi
az ad app update --id "$app_id" \
  --identifier-uris "api://$app_id" \
  --app-roles "@$here/app-roles.json"
# v2 tokens (issuer .../v2.0, as Easy Auth is configured); one delegated scope so that people can get a
# token with the Azure CLI, which is pre-authorized (docs/runbook.md "Get a token"). Two PATCHes: a scope
# must exist before it can be pre-authorized.
object_id=$(az ad app show --id "$app_id" --query id -o tsv)
scope_id=7e3a1c52-94d8-4f0b-a6e1-5c2b9d8f0a11
azure_cli=04b07795-8ddb-461a-bbee-02f9e1bf7b46
az rest --method PATCH --url "https://graph.microsoft.com/v1.0/applications/$object_id" \
  --headers Content-Type=application/json --body "{\"api\": {\"requestedAccessTokenVersion\": 2,
  \"oauth2PermissionScopes\": [{\"id\": \"$scope_id\", \"value\": \"user_impersonation\",
  \"type\": \"User\", \"isEnabled\": true,
  \"adminConsentDisplayName\": \"Call the key rotation API\",
  \"adminConsentDescription\": \"Call the key rotation API as the signed-in user (app roles still apply).\",
  \"userConsentDisplayName\": \"Call the key rotation API\",
  \"userConsentDescription\": \"Call the key rotation API as you (your app roles still apply).\"}]}}"
az rest --method PATCH --url "https://graph.microsoft.com/v1.0/applications/$object_id" \
  --headers Content-Type=application/json --body "{\"api\": {\"preAuthorizedApplications\": [
  {\"appId\": \"$azure_cli\", \"delegatedPermissionIds\": [\"$scope_id\"]}]}}"
if ! az ad sp show --id "$app_id" >/dev/null 2>&1; then
  az ad sp create --id "$app_id" >/dev/null
fi
# Only principals holding one of the roles get a token for the API at all.
az ad sp update --id "$app_id" --set appRoleAssignmentRequired=true
azd env set KEYROTATION_AUTH_CLIENT_ID "$app_id"
echo "app registration $name: client id $app_id"
