#!/bin/sh
# azd postdeploy: the first time the code is deployed, provision again with appCodeDeployed=true so the
# Key Vault SecretNearExpiry subscription is created (Event Grid checks the function exists).
set -eu

if [ "${KEYROTATION_APP_DEPLOYED:-false}" != "true" ]; then
  azd env set KEYROTATION_APP_DEPLOYED true
  azd provision --no-prompt
fi
