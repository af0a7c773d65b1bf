#!/usr/bin/env bash
# Builds decap-ci/slow: prints one line a second for 30 seconds, or for N
# seconds when the ref ends in /N (build the branch seconds/5 for five
# seconds, seconds/200 to see its 120 s timeout), so that cancelling,
# timeouts and log following can be tried. A build's environment is fixed
# (see the README, "What a build sees"): the ref is how a request says more.
set -euo pipefail

seconds=30
if [[ ${BRANCH_TO_BUILD:-} =~ /([0-9]{1,5})$ ]]; then
  seconds=$((10#${BASH_REMATCH[1]}))
fi
echo "slow build of ${BRANCH_TO_BUILD:-unknown}: ${seconds} seconds"
for ((i = 1; i <= seconds; i++)); do
  echo "working... ${i}/${seconds}"
  sleep 1
done
echo "done"
