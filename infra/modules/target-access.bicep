// One target app: the custom key role for the orchestrator's identity, scoped to that app only.
param siteName string
param principalId string
param roleDefinitionId string

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: siteName
}

resource keyAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(site.id, principalId, roleDefinitionId)
  scope: site
  properties: {
    roleDefinitionId: roleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
