#!/usr/bin/env bash
# Runs a command against a moto_server of its own:
#
#   scripts/with-moto.sh go test ./...
#
# Starts moto (scripts/moto.sh) on port 5000, or on the next free port when
# 5000 is taken, runs the command with AWS_ENDPOINT_URL, test credentials and
# region us-east-1 exported, stops moto when the command ends (or is
# interrupted), and exits with the command's status. Fails loudly when
# moto_server is not installed. It never reuses or stops a server it did not
# start.
set -euo pipefail
if (($# == 0)); then
  echo "usage: scripts/with-moto.sh CMD [ARG...]" >&2
  exit 2
fi
moto=$(cd "$(dirname "$0")" && pwd)/moto.sh

port=""
# shellcheck disable=SC2317 # called by the EXIT trap
stop_moto() {
  if [ -n "$port" ]; then "$moto" stop "$port" || true; fi
}
trap stop_moto EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

exports=""
for candidate in ${MOTO_PORT:-5000} $(seq 5001 5099); do
  # Skip ports something listens on without the cost of a start attempt.
  if (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then continue; fi
  port=$candidate
  rc=0
  exports=$("$moto" start --fresh "$candidate") || rc=$?
  if ((rc == 0)); then break; fi
  port="" # not ours: never stop it
  if ((rc != 3)); then exit "$rc"; fi # e.g. moto_server missing: moto.sh said why
done
if [ -z "$port" ]; then
  echo "with-moto.sh: no free port in ${MOTO_PORT:-5000} and 5001-5099" >&2
  exit 1
fi
eval "$exports"

rc=0
"$@" || rc=$?
exit "$rc"
