#!/usr/bin/env bash
# Builds the local Kubernetes control plane the integration test runs against:
# etcd, kube-apiserver, kube-scheduler and kwok, from the Go module proxy
# (tools/kube-controlplane pins the versions). The binaries are cached outside
# the clone, so CI and later runs on a kept machine reuse them:
#
#   scripts/kube-controlplane.sh dir     print the cache directory
#   scripts/kube-controlplane.sh build   build what is missing (cold: 11-25 min on 2 cores), print the directory
#   scripts/kube-controlplane.sh check   exit 0 when all four binaries are there
#
# DECAP_KUBE_BIN overrides the directory.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSION=v1.37.2
DIR=${DECAP_KUBE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/decap/kube-controlplane-$KUBE_VERSION}
BINARIES=(etcd kube-apiserver kube-scheduler kwok)

complete() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$DIR/$b" ]] || return 1; done
  # A binary from an interrupted build is never left in place (see build), so
  # four executables mean a finished build of these sources.
  [[ "$(cat "$DIR/.sources" 2>/dev/null)" == "$(sources_sum)" ]]
}

sources_sum() { cat tools/kube-controlplane/go.mod tools/kube-controlplane/go.sum | sha256sum | cut -d' ' -f1; }

build() {
  if complete; then echo "$DIR"; return; fi
  mkdir -p "$DIR"
  BUILD_TMP=$(mktemp -d "$DIR/.build.XXXXXX")
  trap 'rm -rf "$BUILD_TMP"' EXIT
  local tmp=$BUILD_TMP
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  echo "building the Kubernetes control plane $KUBE_VERSION into $DIR (cold: 11-25 minutes on 2 cores)..." >&2
  local start=$SECONDS
  (cd tools/kube-controlplane && GOWORK=off GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler go.etcd.io/etcd/server/v3 sigs.k8s.io/kwok/cmd/kwok)
  # go build names the etcd server binary after its package path's last element.
  [[ -x "$tmp/v3" ]] && mv "$tmp/v3" "$tmp/etcd"
  [[ -x "$tmp/server" ]] && mv "$tmp/server" "$tmp/etcd"
  local b
  for b in "${BINARIES[@]}"; do
    [[ -x "$tmp/$b" ]] || { echo "kube-controlplane: $b was not built (got: $(ls "$tmp"))" >&2; exit 1; }
    mv -f "$tmp/$b" "$DIR/$b"
  done
  sources_sum > "$DIR/.sources"
  echo "built in $((SECONDS - start)) s" >&2
  echo "$DIR"
}

case "${1:-}" in
  dir) echo "$DIR" ;;
  build) build ;;
  check) complete ;;
  *) echo "usage: $0 dir|build|check" >&2; exit 2 ;;
esac
