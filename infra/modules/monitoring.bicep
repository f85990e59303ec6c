// Log Analytics + workspace-based Application Insights (local auth off: ingestion with Entra only), and
// the alerts on the app's structured logs: every published event is logged by activities/events_publish.py
// as "published N event(s): <type> <id> <subject>, ...". The rules read FunctionAppLogs (the app's
// diagnostic setting: every line) rather than AppTraces, which host.json's adaptive sampling thins.
param suffix string
param location string
param tags object
param appPrincipalId string
param actionGroupId string

@minValue(30)
param retentionInDays int = 90

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-keyrotation-${suffix}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-keyrotation-${suffix}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

// Telemetry ingestion with the app's identity (local auth is off).
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, 'monitoring-metrics-publisher')
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The telemetry activities query the workspace for consumers' authentication failures.
resource logAnalyticsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, appPrincipalId, 'log-analytics-reader')
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '73c42c96-874c-492b-b04d-ab87d138a893')
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

var alertEvents = [
  {
    type: 'KeyRotation.RotationFailed'
    severity: 1
    description: 'A rotation failed: the target may be left with an old key. See docs/runbook.md.'
  }
  {
    type: 'KeyRotation.RotationHeld'
    severity: 2
    description: 'A rotation is HELD waiting for an Approver decision (approve, abort or extend). See docs/runbook.md.'
  }
  {
    type: 'KeyRotation.DriftDetected'
    severity: 2
    description: 'A target\'s keys or Key Vault secret drifted from what the orchestrator last wrote. See docs/runbook.md.'
  }
]

resource alerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [
  for event in alertEvents: {
    name: 'alert-${replace(event.type, '.', '-')}-${suffix}'
    location: location
    tags: tags
    properties: {
      displayName: 'Key rotation: ${event.type}'
      description: event.description
      severity: event.severity
      enabled: true
      scopes: [
        workspace.id
      ]
      evaluationFrequency: 'PT5M'
      windowSize: 'PT5M'
      criteria: {
        allOf: [
          {
            query: 'FunctionAppLogs | where Message startswith "published " and Message contains_cs "${event.type} "'
            timeAggregation: 'Count'
            operator: 'GreaterThan'
            threshold: 0
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: false
      actions: {
        actionGroups: empty(actionGroupId) ? [] : [actionGroupId]
      }
    }
  }
]

output workspaceResourceId string = workspace.id
output workspaceCustomerId string = workspace.properties.customerId
output appInsightsConnectionString string = appInsights.properties.ConnectionString
