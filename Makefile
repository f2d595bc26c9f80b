# keygate: `make run` starts it on the embedded store; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
BIN := bin/keygate

.PHONY: run test test-unit bench lint build clean

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/keygate

run: build
	./$(BIN) serve

# Every test, race detector on, including the integration tests on a real
# redis-server (they fail, with an install hint, when it is missing).
test:
	@command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install -y redis-server (or run .ci/run)"; exit 1; }
	$(GO) vet ./...
	$(GO) test -race -count=1 -v ./... 2>&1 | tee test.log | grep -E '^(--- |ok |FAIL|panic:|\s+--- (FAIL|SKIP))' || true
	@! grep -q -- '--- SKIP' test.log || { echo "skipped tests:"; grep -- '--- SKIP' test.log; exit 1; }
	@! grep -qE '^(FAIL|--- FAIL|panic:)' test.log
	@echo "$$(grep -c -- '--- PASS' test.log) passed, $$(grep -c -- '--- FAIL' test.log || true) failed"

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin test.log
