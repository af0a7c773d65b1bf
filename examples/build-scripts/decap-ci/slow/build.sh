#!/usr/bin/env bash
# Builds decap-ci/slow: prints one line a second for SLOW_SECONDS seconds
# (default 30), so cancelling, timeouts and log following can be tried.
set -euo pipefail

seconds="${SLOW_SECONDS:-30}"
case "${seconds}" in
  '' | *[!0-9]*)
    echo "SLOW_SECONDS must be a whole number of seconds, got '${seconds}'" >&2
    exit 2
    ;;
esac
echo "slow build of ${BRANCH_TO_BUILD:-unknown}: ${seconds} seconds"
for ((i = 1; i <= seconds; i++)); do
  echo "working... ${i}/${seconds}"
  sleep 1
done
echo "done"
