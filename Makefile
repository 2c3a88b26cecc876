# mcpmesh — the two commands a newcomer needs are `make demo` and `make test`.
GO      ?= go
BIN     := bin/mcpmesh
PKGS    := ./...

.PHONY: all build demo test lint cross fuzz-smoke bench bench-smoke clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/mcpmesh

# The whole story on embedded defaults: coordinator, nodes, traffic, revocation.
demo: build
	./$(BIN) demo

# Every test, with the race detector on the packages with concurrency, plus
# lint. Root-only suites run when root (CI is root) and never skip there.
test: lint cross
	$(GO) test -count=1 -timeout 15m $(PKGS)
	$(GO) test -count=1 -race -p 1 -timeout 15m ./coordinator/... ./node/... ./identity/... ./mcp/... ./tunnel/... ./test/e2e/
	$(MAKE) fuzz-smoke
	$(MAKE) bench-smoke

# Every benchmark of issue 7, written to BENCHMARKS.md (about 10 minutes;
# the data-plane part needs root).
bench: build
	scripts/bench.sh

# The same pipeline with tiny counts, so no benchmark can rot; it writes
# nothing to the tree.
bench-smoke:
	out=$$(mktemp) && BENCH_SMOKE=1 BENCH_OUT=$$out scripts/bench.sh && rm -f $$out

# Userspace mode must build for the laptops agents run on.
cross:
	GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./cmd/mcpmesh
	GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null ./cmd/mcpmesh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

# A few seconds of each fuzzer so they cannot rot; run longer by hand with
# go test -fuzz=NAME -fuzztime=5m ./PKG. The budgets are counts, not
# durations: go1.26's fuzz coordinator can fail a duration run at its
# deadline with "context deadline exceeded" and no crasher (go.dev/issue/75804).
fuzz-smoke:
	$(GO) test -run '^$$' -fuzz '^FuzzParseToken$$' -fuzztime 50000x ./identity/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSigned$$' -fuzztime 50000x ./coordinator/api/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 20000x ./mcp/policy/
	$(GO) test -run '^$$' -fuzz '^FuzzParseMessage$$' -fuzztime 30000x ./mcp/
	$(GO) test -run '^$$' -fuzz '^FuzzStrictParserMatchesReference$$' -fuzztime 30000x ./mcp/
	$(GO) test -run '^$$' -fuzz '^FuzzEncodeValueMatchesReference$$' -fuzztime 30000x ./mcp/
	$(GO) test -run '^$$' -fuzz '^FuzzUpstreamAnswer$$' -fuzztime 20000x ./mcp/
	$(GO) test -run '^$$' -fuzz '^FuzzFrontConnection$$' -fuzztime 20000x ./mcp/
	$(GO) test -run '^$$' -fuzz '^FuzzClassifyAnswer$$' -fuzztime 20000x ./platform/
	$(GO) test -run '^$$' -fuzz '^FuzzParseProcNetTCP$$' -fuzztime 20000x ./platform/

clean:
	rm -rf bin
