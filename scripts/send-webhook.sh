#!/usr/bin/env bash
# Sends a GitHub webhook payload to a running Decap, signed the way GitHub
# signs it (X-Hub-Signature-256: HMAC-SHA256 of the body with the secret).
#
#   scripts/send-webhook.sh PAYLOAD.json [EVENT]     EVENT defaults to push
#
# The secret comes from DECAP_GITHUB_WEBHOOK_SECRET, else from the file in
# DECAP_GITHUB_WEBHOOK_SECRET_FILE, else from .decap/github-webhook-secret
# (what `make run` generates). Each call uses a fresh delivery ID unless
# DELIVERY is set (set it to resend "the same" delivery).
set -euo pipefail
payload=${1:?usage: send-webhook.sh PAYLOAD.json [EVENT]}
event=${2:-push}
addr=${DECAP_ADDR:-127.0.0.1:8080}
secret=${DECAP_GITHUB_WEBHOOK_SECRET:-}
if [ -z "$secret" ]; then
  f=${DECAP_GITHUB_WEBHOOK_SECRET_FILE:-${DECAP_DATA_DIR:-.decap}/github-webhook-secret}
  secret=$(tr -d '\n' < "$f")
fi
delivery=${DELIVERY:-$(cat /proc/sys/kernel/random/uuid)}
sig=$(openssl dgst -sha256 -hmac "$secret" < "$payload" | sed 's/^.*= //')
curl -sS -X POST "http://$addr/hooks/github" \
  -H "Content-Type: application/json" \
  -H "X-GitHub-Event: $event" \
  -H "X-GitHub-Delivery: $delivery" \
  -H "X-Hub-Signature-256: sha256=$sig" \
  --data-binary "@$payload"
echo
