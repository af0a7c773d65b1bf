#!/usr/bin/env bash
# Runs ingest, dispatcher and reaper on the AWS backend. Used by
# `make run-aws`.
#
# Without AWS_ENDPOINT_URL it points everything at a local moto_server on
# port MOTO_PORT (default 5000), so no AWS account is needed: it starts one
# there, or reuses the one moto.sh started there earlier, with what it holds
# (and says which); moto keeps running when Decap stops. The resources come
# from aws-resources/create-world.sh (idempotent), named by DECAP_PREFIX
# (default decap). run-local.sh makes reads public on a loopback
# DECAP_ADDR, as for `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  port=${MOTO_PORT:-5000}
  eval "$(scripts/moto.sh start "$port")"
  echo "run-aws: Decap's AWS is the moto_server at $AWS_ENDPOINT_URL; it keeps running when Decap stops (stop it with: scripts/moto.sh stop $port; MOTO_PORT=<port> picks another)"
else
  echo "run-aws: Decap's AWS is AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
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
