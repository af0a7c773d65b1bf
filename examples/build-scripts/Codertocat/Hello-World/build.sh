#!/usr/bin/env bash
# Builds Codertocat/Hello-World: a pretend build that shows what a build script
# receives and leaves a small artifact behind.
set -euo pipefail

echo "== Decap build ${BUILD_ID:-unknown}"
echo "project:  ${PROJECT_KEY:-unknown}"
echo "branch:   ${BRANCH_TO_BUILD:-unknown}"
echo "commit:   ${COMMIT_SHA:-unknown}"
if [[ -n ${PULL_REQUEST_NUMBER:-} ]]; then
  # A pull request's build: its head is COMMIT_SHA, which the base
  # repository serves as PULL_REQUEST_REF (refs/pull/<N>/head), from a fork
  # too. A real build checks it out:
  #   git clone "$repo" src && cd src
  #   git fetch origin "$PULL_REQUEST_REF" && git checkout --detach "$COMMIT_SHA"
  # An untrusted one (PULL_REQUEST_TRUSTED=false: a fork's, approved or not)
  # gets no secrets.
  echo "pull request #${PULL_REQUEST_NUMBER}: ${PULL_REQUEST_HEAD_REPO:-a deleted fork}:${PULL_REQUEST_HEAD_REF} into ${PULL_REQUEST_BASE_REF}, from ${PULL_REQUEST_REF}, trusted: ${PULL_REQUEST_TRUSTED}"
fi
echo

echo "== compiling"
for unit in greeting.c main.c hello.c; do
  echo "  cc -c ${unit}"
done
echo "  ld -o hello-world *.o"

echo "== testing"
for t in TestGreeting TestMain; do
  echo "  --- PASS: ${t}"
done
echo "ok  hello-world  2 tests"

artifacts="${BUILD_ARTIFACTS:-./build-artifacts}"
mkdir -p "${artifacts}"
{
  echo "build_id=${BUILD_ID:-}"
  echo "project=${PROJECT_KEY:-}"
  echo "branch=${BRANCH_TO_BUILD:-}"
  echo "commit=${COMMIT_SHA:-}"
  echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "${artifacts}/build-info.txt"
echo "== wrote ${artifacts}/build-info.txt"
