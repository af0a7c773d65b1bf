#!/usr/bin/env bash
# Builds decap-ci/failing: writes to stdout and stderr, then fails with 3, so
# the failed status and the exit code can be seen end to end.
set -euo pipefail

echo "compiling ${PROJECT_KEY:-decap-ci/failing} at ${BRANCH_TO_BUILD:-unknown}"
echo "testing..."
echo "--- FAIL: TestAnswer: got 41, want 42" >&2
echo "build failed" >&2
exit 3
