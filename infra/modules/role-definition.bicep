// The custom role the app holds on each target function app: only the Microsoft.Web actions the
// activities call — the key actions (activities/function_keys.py ARM_ACTIONS) and reading the app or slot
// for its host names, the only places the probe may send a new key (activities/site_hosts.py
// ARM_ACTIONS); tests/unit/infra/test_infra.py keeps the list equal to the two tables.
// The definition is the one thing at subscription scope; it grants nothing until assigned per target.
targetScope = 'subscription'

param environmentName string

@description('Where the role may be assigned: the target apps.')
param assignableScopes array

var keyActions = [
  'Microsoft.Web/sites/host/listkeys/action'
  'Microsoft.Web/sites/functions/listkeys/action'
  'Microsoft.Web/sites/host/functionKeys/write'
  'Microsoft.Web/sites/host/masterKey/write'
  'Microsoft.Web/sites/functions/keys/write'
  'Microsoft.Web/sites/host/functionKeys/delete'
  'Microsoft.Web/sites/functions/keys/delete'
  'Microsoft.Web/sites/slots/host/listkeys/action'
  'Microsoft.Web/sites/slots/functions/listkeys/action'
  'Microsoft.Web/sites/slots/host/functionKeys/write'
  'Microsoft.Web/sites/slots/host/masterKey/write'
  'Microsoft.Web/sites/slots/functions/keys/write'
  'Microsoft.Web/sites/slots/host/functionKeys/delete'
  'Microsoft.Web/sites/slots/functions/keys/delete'
  'Microsoft.Web/sites/read'
  'Microsoft.Web/sites/slots/read'
]

resource role 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'keyrotation-function-keys')
  properties: {
    roleName: 'Key Rotation Function Keys Operator (${environmentName})'
    description: 'List, create, renew and delete Azure Functions host and function keys; read the app for its host names. Nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: keyActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

output id string = role.id
