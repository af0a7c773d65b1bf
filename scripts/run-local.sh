#!/usr/bin/env bash
# Starts ingest, dispatcher and reaper on the embedded default, in the
# foreground; Ctrl-C stops all three. Used by `make run`, and by
# scripts/run-aws.sh (`make run-aws`) for the AWS backend.
#
# Generated secrets go to DECAP_SECRETS_DIR, by default the data directory
# (.decap/); run-aws.sh keeps them in .decap/ too, so that send-webhook.sh,
# decapctl and the README's commands find them whichever backend runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}

export DECAP_DATA_DIR=${DECAP_DATA_DIR:-$PWD/.decap}
secrets_dir=${DECAP_SECRETS_DIR:-$DECAP_DATA_DIR}
export DECAP_BUILD_SCRIPTS=${DECAP_BUILD_SCRIPTS:-$PWD/examples/build-scripts}
export DECAP_ADDR=${DECAP_ADDR:-127.0.0.1:8080}
export DECAP_ENTRYPOINT=${DECAP_ENTRYPOINT:-$BIN/decap-entrypoint}
export DECAP_LOG_FORMAT=${DECAP_LOG_FORMAT:-text}
# Reads (the UI, GET /api/v1/...) are public on a loopback address, which
# only this machine reaches (ingest's Host check keeps other sites' pages
# out); on any other address they need the token or a session.
case ${DECAP_ADDR%:*} in
127.* | localhost | '[::1]') export DECAP_READ_AUTH=${DECAP_READ_AUTH:-public} ;;
esac
# The data directory is the services' alone (they tighten it again at start:
# 0711 when builds run under users of their own, to reach run/).
(umask 077; mkdir -p "$DECAP_DATA_DIR" "$secrets_dir")

# Secrets: taken from the environment when set; otherwise generated once into
# the secrets directory (mode 0600) and passed by file, never printed.
for var in DECAP_GITHUB_WEBHOOK_SECRET DECAP_API_TOKEN; do
  file_var=${var}_FILE
  if [ -z "${!var:-}" ] && [ -z "${!file_var:-}" ]; then
    f="$secrets_dir/$(echo "${var#DECAP_}" | tr 'A-Z_' 'a-z-')"
    if [ ! -s "$f" ]; then
      (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f")
    fi
    export "$file_var=$f"
  fi
done

pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
# Ctrl-C (SIGINT to the terminal's whole process group) or a SIGTERM: stop
# the services and end well, with status 0 (make would report anything
# else as an error of its own).
stopped() {
  stop
  echo "run-local: Decap stopped; queued requests and history are kept." >&2
  exit 0
}
trap stopped INT TERM
trap stop EXIT

"$BIN/reaper" & pids+=($!)
"$BIN/dispatcher" & pids+=($!)
"$BIN/ingest" & pids+=($!)

# Wait until every service is ready. One that exits meanwhile said why on
# stderr (a bad setting): stop the others and fail with its status.
ready_urls=("http://$DECAP_ADDR/readyz"
  "http://${DECAP_DISPATCHER_ADDR:-127.0.0.1:8081}/readyz"
  "http://${DECAP_REAPER_ADDR:-127.0.0.1:8082}/readyz")
ready=false
for _ in $(seq 1 300); do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      rc=0
      wait "$p" || rc=$?
      echo "run-local: a Decap service stopped at start (status $rc; its error is above); stopping the others" >&2
      exit $((rc == 0 ? 1 : rc))
    fi
  done
  ready=true
  for u in "${ready_urls[@]}"; do
    if ! curl -fsS -m 2 "$u" >/dev/null 2>&1; then ready=false; break; fi
  done
  if $ready; then break; fi
  sleep 0.1
done

if [ "$(id -u)" = 0 ]; then
  builds="each under a uid of its own (${DECAP_BUILD_UIDS:-1900000000-1900000999})"
else
  builds="as $(id -un), NOT isolated from Decap's data (run as root for that; see README, \"What a build sees\")"
fi
# What another shell needs to set for send-webhook.sh, decapctl and the
# README's commands, when this run differs from their defaults (the
# address 127.0.0.1:8080, the secrets in .decap/).
setup=()
[ "$DECAP_ADDR" = 127.0.0.1:8080 ] || setup+=("DECAP_ADDR=$DECAP_ADDR" "DECAP_URL=http://$DECAP_ADDR")
[ "$secrets_dir" = "$PWD/.decap" ] || setup+=("DECAP_DATA_DIR=$secrets_dir")
if ((${#setup[@]} > 0)); then
  setup_hint="  In another shell, first: export ${setup[*]}
    (and read 127.0.0.1:8080 in the README as $DECAP_ADDR, .decap/ as $secrets_dir/)
"
else
  setup_hint=""
fi
if [ -n "${DECAP_GITHUB_WEBHOOK_SECRET_FILE:-}" ]; then
  secret_hint="the secret in $DECAP_GITHUB_WEBHOOK_SECRET_FILE"
else
  secret_hint='$DECAP_GITHUB_WEBHOOK_SECRET'
fi
if ! $ready; then
  # Running, but not ready after 30 s: a git build-scripts repository
  # that cannot be fetched yet, a backend that does not answer. The
  # services retry on their own; say what /readyz says instead of
  # claiming that Decap runs.
  echo >&2
  echo "run-local: Decap started but is NOT ready after 30 s; /readyz says:" >&2
  for u in "${ready_urls[@]}"; do echo "  $u: $(curl -sS -m 2 "$u" 2>&1)" >&2; done
  echo "run-local: the services go on retrying; Ctrl-C stops them." >&2
else
  cat <<MSG

  Decap is running on the ${DECAP_BACKEND:-embedded} backend.
    API and UI:       http://$DECAP_ADDR/   (try /api/v1/projects; reads: ${DECAP_READ_AUTH:-token})
    build scripts:    $DECAP_BUILD_SCRIPTS
    data directory:   $DECAP_DATA_DIR
    secrets:          $secrets_dir/api-token, github-webhook-secret (unless set in the environment)
    builds run:       $builds
${setup_hint}  From $PWD, send a signed push webhook (signed with $secret_hint):
    scripts/send-webhook.sh internal/ingest/testdata/github-webhooks/push-with-new-branch.json
  Then look at the build it answers with:
    curl http://$DECAP_ADDR/api/v1/builds/<id>
    curl http://$DECAP_ADDR/api/v1/builds/<id>/log
  Ctrl-C stops all three services; queued requests and history are kept.

MSG
fi
# Stop everything as soon as one service exits. A service exits with 0 only
# when told to stop (Ctrl-C reaches the services too, and one may be done
# before this script's trap runs); any other status is a failure.
set +e
wait -n "${pids[@]}"
rc=$?
if ((rc == 0)); then stopped; fi
echo "run-local: a Decap service failed (status $rc; its error is above); stopping the others" >&2
exit "$rc"
