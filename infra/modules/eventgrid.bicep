// The topic the app publishes KeyRotation.* CloudEvents to (docs/events.md): Entra only.
param name string
param location string
param tags object
param workspaceId string
param appPrincipalId string

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  // checkov:skip=CKV_AZURE_193: publishing is Entra-only (disableLocalAuth) and only the app holds EventGrid Data Sender; consumers' subscriptions deliver from it. Private endpoint: docs/deploy.md, Hardening
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource delivery 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'keyrotation-delivery'
  scope: topic
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

resource dataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, appPrincipalId, 'eventgrid-data-sender')
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'd5a91429-5739-47e2-a06b-3470a27159e7')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output endpoint string = topic.properties.endpoint
