#!/usr/bin/env bash
# Sends a GitHub webhook payload to a running Decap, signed the way GitHub
# signs it (X-Hub-Signature-256: HMAC-SHA256 of the body with the secret).
#
#   scripts/send-webhook.sh PAYLOAD.json [EVENT]     EVENT defaults to push
#
# It works from any directory. The secret comes from
# DECAP_GITHUB_WEBHOOK_SECRET, else from the file in
# DECAP_GITHUB_WEBHOOK_SECRET_FILE, else from github-webhook-secret in
# DECAP_DATA_DIR, else in the .decap/ of this script's checkout (what
# `make run` and `make run-aws` generate). Decap is at DECAP_ADDR
# (default 127.0.0.1:8080). Each call uses a fresh delivery ID unless
# DELIVERY is set (set it to resend "the same" delivery).
#
# Decap's answer goes to stdout. Exit status: 0 when Decap accepted the
# webhook (2xx), 1 when it refused it (the status and a hint on stderr),
# 2 for a usage or setup error, curl's own status when Decap could not be
# reached.
set -euo pipefail
die() { echo "send-webhook.sh: $*" >&2; exit 2; }
checkout=$(cd "$(dirname "$0")/.." && pwd)
(($# >= 1 && $# <= 2)) || die "usage: send-webhook.sh PAYLOAD.json [EVENT]"
payload=$1
event=${2:-push}
[ -f "$payload" ] && [ -r "$payload" ] || die "cannot read the payload $payload"
addr=${DECAP_ADDR:-127.0.0.1:8080}
secret=${DECAP_GITHUB_WEBHOOK_SECRET:-}
source="DECAP_GITHUB_WEBHOOK_SECRET"
if [ -z "$secret" ]; then
  f=${DECAP_GITHUB_WEBHOOK_SECRET_FILE:-${DECAP_DATA_DIR:-$checkout/.decap}/github-webhook-secret}
  [ -r "$f" ] || die "no webhook secret: $f cannot be read (make run writes it; or set DECAP_GITHUB_WEBHOOK_SECRET, DECAP_GITHUB_WEBHOOK_SECRET_FILE or DECAP_DATA_DIR)"
  secret=$(tr -d '\n' <"$f")
  source=$f
fi
delivery=${DELIVERY:-$(cat /proc/sys/kernel/random/uuid)}
sig=$(openssl dgst -sha256 -hmac "$secret" <"$payload" | sed 's/^.*= //')
answer=$(curl -sS -X POST "http://$addr/hooks/github" \
  -H "Content-Type: application/json" \
  -H "X-GitHub-Event: $event" \
  -H "X-GitHub-Delivery: $delivery" \
  -H "X-Hub-Signature-256: sha256=$sig" \
  --data-binary "@$payload" \
  -w '\n%{http_code}')
code=${answer##*$'\n'}
printf '%s\n' "${answer%$'\n'*}"
case $code in
2??) exit 0 ;;
401) echo "send-webhook.sh: 401: Decap refused the signature: the secret from $source is not the one it runs with (DECAP_GITHUB_WEBHOOK_SECRET)" >&2 ;;
*) echo "send-webhook.sh: Decap answered $code" >&2 ;;
esac
exit 1
