# keygate: `make run` starts it on the embedded store; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
BIN := bin/keygate
IMAGE ?= ghcr.io/keygate/keygate
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: run setup test bench bench-scale fuzz test-faults lint build image clean

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/keygate

run: build
	./$(BIN) serve

# Every test, race detector on: unit tests on miniredis, integration tests on
# real redis-server processes (single, Cluster, Sentinel), real nginx and
# Caddy, Clerk's SDK, the console in a real Chromium (with axe-core), and the
# deployment files (deploy/, a module of its own so that its Kubernetes,
# compose and BuildKit libraries stay out of keygate's go.mod). setup installs
# what they need first (redis-server, redis-tools, nginx-light, caddy,
# chromium and Node.js with apt-get; the npm locks of interop/clerk and
# internal/browsertest); nothing is skipped.
MODULES := . deploy

test: setup
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done
	for m in $(MODULES); do (cd $$m && $(GO) test -race -count=1 -v ./...); done 2>&1 | tee test.log | grep -E '^(--- |ok |FAIL|panic:|\s+--- (FAIL|SKIP))' || true
	@! grep -q -- '--- SKIP' test.log || { echo "skipped tests:"; grep -- '--- SKIP' test.log; exit 1; }
	@! grep -qE '^(FAIL|--- FAIL|panic:)' test.log
	@echo "$$(grep -c -- '--- PASS' test.log) passed, $$(grep -c -- '--- FAIL' test.log || true) failed"

# Installs what the tests need when it is missing (Debian packages with
# apt-get, npm packages from their lock files), or says what to run.
setup:
	@bash .ci/setup

# Measures keygate against same-run baselines on loopback (on redis-server,
# redis-benchmark and nginx, which setup installs); prints the table and writes BENCHMARKS.md. About 2 minutes.
bench: setup
	$(GO) run ./internal/benchcmd -out BENCHMARKS.md

# Listing, memory, creates and a cold start of 20 verifiers at a million
# keys (SCALE_KEYS), on a redis-server of its own: builds the data set with
# pipelines, prints the table and writes its section of BENCHMARKS.md.
# About 5 minutes and 1.5 GB of memory on 2 cores.
SCALE_KEYS ?= 1000000
bench-scale: setup
	$(GO) run ./internal/benchcmd -scale -scale-keys $(SCALE_KEYS) -out BENCHMARKS.md

FUZZTIME ?= 20s
FUZZ_TARGETS := \
	./keystore:FuzzParseSecret ./keystore:FuzzSecretRoundTrip \
	./keystore/adminapi:FuzzAdminAPI ./keystore/adminapi:FuzzAdminAPIList \
	./keystore/adminapi:FuzzDecodeBody ./keystore/adminapi:FuzzListParams \
	./middleware:FuzzParseKeyLookup ./middleware:FuzzDefaultKeyLookup \
	./sidecar:FuzzForwardAuth ./internal/throttle:FuzzClientIP

# Each fuzz target for FUZZTIME (make test runs their seed corpora).
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || exit 1; \
	done

# The fault tests alone (also part of make test).
test-faults:
	$(GO) test -race -count=1 -v -run '^TestFault' ./sidecar/

# go vet, gofmt, staticcheck and deadcode, pinned in .ci/lint (go install
# fetches them from the module proxy).
lint:
	@bash .ci/lint

# Container image (deploy/Dockerfile). Where no Docker engine answers (CI,
# machines with only the docker client) it says so and succeeds.
image:
	@if ! command -v docker >/dev/null 2>&1; then \
		echo "make image: skipped: docker is not installed (see deploy/README.md)"; exit 0; \
	fi; \
	if ! docker info >/dev/null 2>&1; then \
		echo "make image: skipped: no Docker engine answers ('docker info' fails); run it where dockerd runs"; exit 0; \
	fi; \
	docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) -t $(IMAGE):dev . && \
	echo "make image: built $(IMAGE):$(VERSION) and $(IMAGE):dev"

clean:
	rm -rf bin test.log
