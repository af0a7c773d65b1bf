#!/usr/bin/env bash
# Runs ingest, dispatcher and reaper on the AWS backend. Without
# AWS_ENDPOINT_URL it starts a local moto_server (port 5000) and points
# everything at it, so no AWS account is needed; the resources come from
# aws-resources/create-world.sh (idempotent). Used by `make run-aws`.
# run-local.sh makes reads public on a loopback DECAP_ADDR, as for `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  eval "$(scripts/moto.sh start "${MOTO_PORT:-5000}")"
  echo "run-aws: using the local moto_server at $AWS_ENDPOINT_URL (stop it with: scripts/moto.sh stop)"
fi
export DECAP_BACKEND=aws DECAP_PREFIX=${DECAP_PREFIX:-decap}
# Local state (the catalog's cache, running builds) apart from make run's,
# in .decap-aws/; the generated secrets in .decap/ as for make run, where
# send-webhook.sh, decapctl and the README's commands look for them.
if [ -z "${DECAP_DATA_DIR:-}" ]; then
  export DECAP_DATA_DIR=$PWD/.decap-aws DECAP_SECRETS_DIR=${DECAP_SECRETS_DIR:-$PWD/.decap}
fi
aws-resources/create-world.sh
exec scripts/run-local.sh
