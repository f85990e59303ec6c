// Key rotation orchestrator for Azure Functions keys: everything `azd up` provisions.
// Subscription scope only to create the resource group, the custom role definition and the per-target
// role assignments (which live in the targets' resource groups); every other resource is in the group.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; names and tags every resource.')
param environmentName string

@minLength(1)
@description('Azure region of every resource.')
param location string

@description('Comma-separated (no spaces) ARM ids of the function apps whose keys are rotated (the policy targets\' functionApp values; the azd hooks fill it from config/rotation-policy.json). Empty: no target yet.')
param targetFunctionAppIds string = ''

@description('Comma-separated (no spaces) object ids of the consumers\' principals: they get Key Vault Secrets User on the vault to read the keys they are given.')
param consumerPrincipalIds string = ''

@description('Client id of the Entra app registration that Easy Auth validates tokens for (created by infra/hooks/entra-app.sh).')
param authClientId string

@description('NCRONTAB schedule of the scheduled rotation run (ROTATION_SCHEDULE).')
param rotationSchedule string = '0 0 3 * * *'

@minValue(1)
@maxValue(64)
@description('How many rotations run at once (ROTATION_MAX_CONCURRENCY).')
param rotationMaxConcurrency int = 8

@minValue(1)
@maxValue(6000)
@description('Rotation starts per minute per tick after a burst of 25 (ROTATION_MAX_STARTS_PER_MINUTE); 50 is half of Log Analytics\' query rate for four queries per rotation (rotation/pacing.py). Raise it only when the app\'s identity and workspace serve nothing else.')
param rotationMaxStartsPerMinute int = 50

@description('The policy file the deployment ships, relative to the app root (ROTATION_POLICY_PATH).')
param rotationPolicyPath string = 'config/rotation-policy.json'

@description('Log Analytics query endpoint (LOGS_ENDPOINT); the public cloud\'s by default.')
param logsEndpoint string = 'https://api.loganalytics.io'

@description('Set once the app code is deployed (the postdeploy hook does): the Key Vault near-expiry subscription targets a function that must exist.')
@allowed([
  'true'
  'false'
])
param appCodeDeployed string = 'false'

@secure()
@description('The app\'s signing key (KEYROTATION_SIGNING_KEY, rotation/signing.py): main.parameters.json reads it back from the vault with azd\'s secretOrRandomPassword, so it is generated once and kept; the app reads it through a Key Vault reference.')
param signingKey string

@description('Object id of the principal running azd (AZURE_PRINCIPAL_ID, set by azd): it may write the signing key so azd can read it back on the next provision. Empty: nobody but the app.')
param deployerPrincipalId string = ''

@description('Optional action group id notified by the RotationFailed / RotationHeld / DriftDetected alerts.')
param alertActionGroupId string = ''

var tags = {
  'azd-env-name': environmentName
  app: 'keyrotation'
}
var suffix = uniqueString(subscription().id, environmentName, location)
// Comma-separated, no spaces (azd parameters are strings; the hooks write them so).
var targets = empty(targetFunctionAppIds) ? [] : split(targetFunctionAppIds, ',')
var consumers = empty(consumerPrincipalIds) ? [] : split(consumerPrincipalIds, ',')

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-keyrotation-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-keyrotation-${suffix}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    suffix: suffix
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
    actionGroupId: alertActionGroupId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stkr${suffix}'
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-kr-${suffix}'
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceResourceId
    appPrincipalId: identity.outputs.principalId
    consumerPrincipalIds: consumers
  }
}

module signingVault 'modules/signing-vault.bicep' = {
  name: 'signing-vault'
  scope: rg
  params: {
    name: 'kv-krs-${suffix}'
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceResourceId
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: deployerPrincipalId
    signingKey: signingKey
  }
}

module eventGrid 'modules/eventgrid.bicep' = {
  name: 'eventgrid'
  scope: rg
  params: {
    name: 'evgt-keyrotation-${suffix}'
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceResourceId
    appPrincipalId: identity.outputs.principalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: 'func-keyrotation-${suffix}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    workspaceId: monitoring.outputs.workspaceResourceId
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    authClientId: authClientId
    appSettings: {
      AZURE_CLIENT_ID: identity.outputs.clientId
      AZURE_TENANT_ID: tenant().tenantId
      ARM_ENDPOINT: environment().resourceManager
      EVENTGRID_TOPIC_ENDPOINT: eventGrid.outputs.endpoint
      LOGS_ENDPOINT: logsEndpoint
      LOG_ANALYTICS_WORKSPACE_ID: monitoring.outputs.workspaceCustomerId
      KEY_VAULT_URL: keyVault.outputs.vaultUri
      ROTATION_POLICY_PATH: rotationPolicyPath
      ROTATION_SCHEDULE: rotationSchedule
      ROTATION_MAX_CONCURRENCY: string(rotationMaxConcurrency)
      ROTATION_MAX_STARTS_PER_MINUTE: string(rotationMaxStartsPerMinute)
      // A Key Vault reference: the platform resolves it with the app's identity (keyVaultReferenceIdentity).
      KEYROTATION_SIGNING_KEY: '@Microsoft.KeyVault(VaultName=${signingVault.outputs.name};SecretName=${signingVault.outputs.secretName})'
    }
  }
}

module nearExpiry 'modules/keyvault-events.bicep' = if (appCodeDeployed == 'true') {
  name: 'keyvault-events'
  scope: rg
  params: {
    name: 'evgst-kv-${suffix}'
    location: location
    tags: tags
    keyVaultName: keyVault.outputs.name
    functionAppName: functionApp.outputs.name
  }
}

module keyRole 'modules/role-definition.bicep' = {
  name: 'keyrotation-role-definition'
  params: {
    environmentName: environmentName
    assignableScopes: empty(targets) ? [rg.id] : targets
  }
}

module targetAccess 'modules/target-access.bicep' = [
  for (id, i) in targets: {
    name: 'target-access-${i}'
    scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
    params: {
      siteName: split(id, '/')[8]
      principalId: identity.outputs.principalId
      roleDefinitionId: keyRole.outputs.id
    }
  }
]

output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = functionApp.outputs.uri
output KEY_VAULT_URL string = keyVault.outputs.vaultUri
output KEYROTATION_SIGNING_VAULT_NAME string = signingVault.outputs.name
output EVENTGRID_TOPIC_ENDPOINT string = eventGrid.outputs.endpoint
output LOG_ANALYTICS_WORKSPACE_ID string = monitoring.outputs.workspaceCustomerId
output KEYROTATION_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output KEYROTATION_ROLE_DEFINITION_ID string = keyRole.outputs.id
