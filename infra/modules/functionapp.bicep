// The orchestrator: Flex Consumption, Python 3.13, user-assigned identity only, the App Service and
// Functions security baselines by default, Easy Auth (Entra ID) in front of every HTTP route.
param name string
param location string
param tags object
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerUrl string
param workspaceId string
param appInsightsConnectionString string
param authClientId string

@description('The settings the app reads (rotation/settings.py SETTING_NAMES minus LOCAL_ONLY_SETTINGS).')
param appSettings object

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

// What the platform reads: identity-based host storage and Entra-authenticated telemetry. Flex Consumption
// takes the runtime and version from functionAppConfig, not FUNCTIONS_WORKER_RUNTIME / _EXTENSION_VERSION.
var platformSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  // checkov:skip=CKV_AZURE_225: availability, not security: Flex Consumption zone redundancy is region-dependent; the rotation state is durable in storage and a run resumes after an outage
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  // checkov:skip=CKV_AZURE_222: the API is called by operators, responders and consumers from their own networks; every HTTP route requires an Entra token (Easy Auth, Return401) and an app role; Event Grid must reach the trigger webhook
  // checkov:skip=CKV_AZURE_17: callers authenticate with Entra tokens validated by Easy Auth; Event Grid deliveries present no client certificate, so required certificates would stop near-expiry events
  // checkov:skip=CKV_AZURE_212: availability, not security: a timer/Durable app with no always-ready instances scales from zero on demand; in-flight rotations resume from storage
  // checkov:skip=CKV_AZURE_213: Flex Consumption does not support the App Service health check (siteConfig.healthCheckPath); health is watched through Application Insights and the RotationFailed alert
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    functionsRuntimeAdminIsolationEnabled: true
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      remoteDebuggingEnabled: false
      http20Enabled: true
      cors: {
        allowedOrigins: []
        supportCredentials: false
      }
      appSettings: [
        for setting in items(union(appSettings, platformSettings)): {
          name: setting.key
          value: setting.value
        }
      ]
    }
  }
}

resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// Easy Auth: the platform validates the Entra token and forwards X-MS-CLIENT-PRINCIPAL with the app
// roles (KeyRotation.Reader/Operator/Emergency/Approver/Consumer) the app authorizes on.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'authsettingsV2'
  // checkov:skip=CKV_AZURE_13: this IS App Service Authentication (V2): platform.enabled true, requireAuthentication true, Return401; the check only reads the V1 authsettings 'properties.enabled'
  // checkov:skip=CKV_AZURE_63: applies to the web config, not to this authsettingsV2 resource; IIS HTTP logs do not exist on Flex Consumption (Linux); function logs go to the workspace (diagnostic setting below) and App Insights
  // checkov:skip=CKV_AZURE_65: applies to the web config, not to this authsettingsV2 resource; detailed IIS error pages are Windows App Service only (and would disclose more, not less)
  // checkov:skip=CKV_AZURE_66: applies to the web config, not to this authsettingsV2 resource; failed request tracing is Windows App Service only
  properties: {
    // checkov:skip=CKV_AZURE_80: applies to the web config, not to this authsettingsV2 resource; the app is Python 3.13 (no dotnet framework)
    // checkov:skip=CKV_AZURE_88: applies to the web config, not to this authsettingsV2 resource; the app keeps no files: state is in Durable storage (identity-based), content in the Flex deployment container
    // checkov:skip=CKV_AZURE_222: applies to the web config, not to this authsettingsV2 resource; public access of the site: see the skip on the site
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      // Event Grid delivers to the Event Grid trigger's webhook with the extension's system key, not an
      // Entra token; the Functions host authorizes that path by the key. Nothing else is excluded.
      excludedPaths: [
        '/runtime/webhooks/EventGrid'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${authClientId}'
            authClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
    httpSettings: {
      requireHttps: true
    }
  }
}

resource functionLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'keyrotation-function-logs'
  scope: site
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

output name string = site.name
output uri string = 'https://${site.properties.defaultHostName}'
