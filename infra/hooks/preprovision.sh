#!/bin/sh
# azd preprovision: the shipped policy is present, its targets and consumers become the deployment's
# parameters, and the Entra app registration exists.
set -eu

policy="${ROTATION_POLICY_FILE:-config/rotation-policy.json}"
if [ ! -f "$policy" ]; then
  echo "missing $policy: copy config/rotation-policy.example.json there and edit it (docs/deploy.md)" >&2
  exit 1
fi
params=$(mktemp)
trap 'rm -f "$params"' EXIT
python3 infra/hooks/policy_params.py "$policy" > "$params"
while IFS='=' read -r key value; do
  azd env set "$key" "$value"
done < "$params"

if [ -z "${KEYROTATION_AUTH_CLIENT_ID:-}" ]; then
  sh infra/hooks/entra-app.sh
fi
