# Decap — run `make help` for the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/bin

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build the services and the build entrypoint into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/ingest ./cmd/dispatcher ./cmd/reaper
	$(GO) build -o $(BIN)/decap-entrypoint ./build-container/entrypoint

.PHONY: run
run: build ## start ingest, dispatcher and reaper on the embedded default (no AWS, no Kubernetes)
	@BIN=$(BIN) scripts/run-local.sh

.PHONY: test
test: ## vet and run every test (the end-to-end ones included)
	$(GO) vet ./...
	$(GO) test -count=1 ./...

.PHONY: test-race
test-race: ## the tests under the race detector (slower)
	$(GO) test -count=1 -race ./...

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: clean
clean: ## remove bin/ (the data directory .decap/ is kept)
	rm -rf $(BIN)
