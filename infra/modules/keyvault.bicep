// The vault the rotated keys are stored in: RBAC only, soft delete and purge protection, audit logs to
// the workspace. The app is Key Vault Secrets Officer (list versions, get, set, update properties);
// consumers are Key Vault Secrets User (read the key they are given).
param name string
param location string
param tags object
param workspaceId string
param appPrincipalId string
param consumerPrincipalIds array

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take(name, 24)
  location: location
  tags: tags
  // checkov:skip=CKV_AZURE_109: the app (no VNet here) reaches the vault over its public endpoint; access is RBAC-only (Secrets Officer for the app, Secrets User for consumers) and audited. Private endpoint: docs/deploy.md, Hardening
  // checkov:skip=CKV_AZURE_189: same as CKV_AZURE_109: consumers in other networks read their keys from it; every request needs an Entra token and an RBAC role
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
  name: 'keyrotation-audit'
  scope: vault
  properties: {
    workspaceId: workspaceId
    // Resource-specific mode: the audit lands in AZKVAuditLogs, the table adoption reads by default
    // (policy keyVault.auditTable; without this the rows go to AzureDiagnostics).
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, 'key-vault-secrets-officer')
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource consumerAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principalId in consumerPrincipalIds: {
    name: guid(vault.id, principalId, 'key-vault-secrets-user')
    scope: vault
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
      principalId: principalId
    }
  }
]

output name string = vault.name
output vaultUri string = vault.properties.vaultUri
