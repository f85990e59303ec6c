// The app's signing key (rotation/signing.py: it signs rotation inputs and the events the API raises) in a
// vault of its own: the rotated keys' vault gives every consumer Key Vault Secrets User, and whoever can
// read the signing key can start or decide rotations with the Durable system key (threat model 3.2, 3.6).
// Only the app reads it (through a Key Vault reference); the deploying principal, when given, may write it
// so that azd's secretOrRandomPassword can read back the key it generated (infra/main.parameters.json).
param name string
param location string
param tags object
param workspaceId string
param appPrincipalId string

@description('Object id of the principal running azd (AZURE_PRINCIPAL_ID); empty: none.')
param deployerPrincipalId string = ''

@secure()
param signingKey string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take(name, 24)
  location: location
  tags: tags
  // checkov:skip=CKV_AZURE_109: as the rotated keys' vault (keyvault.bicep): no VNet in this template; RBAC-only, one reader (the app), audited. Private endpoint: docs/deploy.md, Hardening
  // checkov:skip=CKV_AZURE_189: same as CKV_AZURE_109
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource audit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'keyrotation-signing-audit'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

resource signingKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'keyrotation-signing-key'
  // checkov:skip=CKV_AZURE_41: the signing key does not expire by date: it is changed as a ring (new key first, old ones kept while rotations signed with them may still run; docs/deploy.md, The signing key); an expiry would stop every rotation at once
  properties: {
    value: signingKey
    contentType: 'text/plain'
  }
}

resource appReads 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, 'key-vault-secrets-user')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource deployerWrites 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, 'key-vault-secrets-officer')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
    principalId: deployerPrincipalId
  }
}

output name string = vault.name
output secretName string = signingKeySecret.name
