# syntax=docker/dockerfile:1
#
# The Decap services image: ingest, dispatcher and reaper (and decapctl) in
# /usr/local/bin. Each Deployment in manifests/ picks its binary with
# `command`. Build from the repository root:
#
#   docker build -t ghcr.io/decap-ci/decap:dev .
#
# The final stage is Debian, not distroless, because the catalog runs `git`
# to fetch a build-scripts repository given by URL (internal/catalog/git.go).

FROM golang:1.26 AS builder
WORKDIR /src
# Module files first, so the download layer is cached across source edits.
COPY go.mod go.sum* ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ \
      ./cmd/ingest ./cmd/dispatcher ./cmd/reaper ./cmd/decapctl

FROM debian:bookworm-slim
# git and ca-certificates fetch https:// build-scripts repositories,
# openssh-client ssh:// and git@host:path ones; tini as PID 1 reaps the
# helpers (git-remote-https, ssh) a killed git leaves behind.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client tini \
 && rm -rf /var/lib/apt/lists/*
# A fixed non-root uid, the one the manifests' securityContext names
# (runAsUser: 65532), as in distroless's "nonroot".
RUN groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /var/lib/decap --shell /usr/sbin/nologin nonroot \
 && mkdir -p /var/lib/decap \
 && chown 65532:65532 /var/lib/decap
COPY --from=builder /out/ingest /out/dispatcher /out/reaper /out/decapctl /usr/local/bin/
USER 65532:65532
WORKDIR /var/lib/decap
ENV DECAP_DATA_DIR=/var/lib/decap
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/usr/local/bin/ingest"]
