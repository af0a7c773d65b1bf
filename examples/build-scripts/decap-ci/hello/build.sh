#!/usr/bin/env bash
# Builds decap-ci/hello: always succeeds and leaves a greeting as artifact.
set -euo pipefail

echo "hello from ${PROJECT_KEY:-decap-ci/hello} on ${BRANCH_TO_BUILD:-unknown} (build ${BUILD_ID:-unknown})"
echo "compiling... done"
echo "testing... ok"

artifacts="${BUILD_ARTIFACTS:-./build-artifacts}"
mkdir -p "${artifacts}"
echo "hello, ${BRANCH_TO_BUILD:-world}" > "${artifacts}/hello.txt"
