# Decap — run `make help` for the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/bin

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets (coloured on a terminal)
	@if [ -t 1 ]; then on='\033[36m' off='\033[0m'; else on='' off=''; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %s%-18s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build the services, decapctl and the build entrypoint into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/ingest ./cmd/dispatcher ./cmd/reaper ./cmd/decapctl
	$(GO) build -o $(BIN)/decap-entrypoint ./build-container/entrypoint

.PHONY: build-embedded
build-embedded: ## build the services for the embedded default only (-tags decap_embedded: no AWS SDK, no client-go; half the memory) into bin/embedded/
	@mkdir -p $(BIN)/embedded
	$(GO) build -tags decap_embedded -o $(BIN)/embedded/ ./cmd/ingest ./cmd/dispatcher ./cmd/reaper
	$(GO) build -o $(BIN)/embedded/decap-entrypoint ./build-container/entrypoint

.PHONY: run
run: build build-embedded ## start ingest, dispatcher and reaper on the embedded default (no AWS, no Kubernetes), as built by build-embedded
	@BIN=$(BIN)/embedded scripts/run-local.sh

.PHONY: run-aws
run-aws: build ## the same three services on the AWS backend, against a local moto_server (port 5000, or MOTO_PORT) with resources from create-world.sh
	@BIN=$(BIN) scripts/run-aws.sh

.PHONY: test
test: ## vet and run every test: unit, contract suites (SQLite and, against a local moto_server, AWS), end-to-end
	$(GO) vet ./...
	scripts/with-moto.sh $(GO) test -count=1 -timeout 30m ./...

.PHONY: test-race
test-race: ## the tests under the race detector (slower)
	scripts/with-moto.sh $(GO) test -count=1 -timeout 45m -race ./...

.PHONY: test-reliability
test-reliability: RELIABILITY_SCALE ?= full
test-reliability: ## the reliability suite (docs/RELIABILITY.md): bursts, kills, an outage; RELIABILITY_SCALE=small|full, RELIABILITY_ARGS=-update-doc
	scripts/with-moto.sh $(GO) test -count=1 -timeout 25m -v ./reliability/ -run . -args -scale=$(RELIABILITY_SCALE) $(RELIABILITY_ARGS)

.PHONY: fuzz
fuzz: FUZZTIME ?= 15s
fuzz: FUZZMINIMIZETIME ?= 2s
fuzz: FUZZ ?= .
fuzz: ## run every fuzz target for FUZZTIME (15s) each, one after another; FUZZ=<regexp> picks targets (docs/FUZZING.md)
	@set -eo pipefail; \
	grep -r --exclude-dir=.git --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]*' . \
		| sed -E 's|^\./(.*)/[^/]+:func (.*)$$|\1 \2|' | sort | awk -v re='$(FUZZ)' '$$2 ~ re' \
		| while read -r pkg name; do \
			echo "== $$name (./$$pkg) for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./$$pkg || exit 1; \
		done

.PHONY: bench
bench: ## measure DESIGN.md's targets against same-run baselines (~10 min; its own moto) and write docs/BENCHMARKS.md; BENCH_ARGS='-scale quick' for a short run
	scripts/with-moto.sh $(GO) run ./bench -out docs/BENCHMARKS.md $(BENCH_ARGS)

.PHONY: kube-controlplane
kube-controlplane: ## build etcd, kube-apiserver, kube-scheduler and kwok for the Kubernetes tests (once: 11-25 min; cached, see scripts/kube-controlplane.sh)
	scripts/kube-controlplane.sh build

.PHONY: moto
moto: ## start moto_server on port 5000 (or MOTO_PORT) in the background: eval "$(make -s moto)"; stop with scripts/moto.sh stop
	@scripts/moto.sh start

.PHONY: aws-world
aws-world: ## create the AWS resources (DECAP_PREFIX, AWS_REGION, AWS_ENDPOINT_URL; see aws-resources/README.md)
	aws-resources/create-world.sh

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: clean
clean: ## remove bin/ (the data directory .decap/ is kept)
	rm -rf $(BIN)
