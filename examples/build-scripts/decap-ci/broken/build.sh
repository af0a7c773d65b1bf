#!/usr/bin/env bash
# Never runs: decap-ci/broken has an invalid project.json.
set -euo pipefail
echo "unreachable"
