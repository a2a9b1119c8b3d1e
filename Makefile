# caddy-mtls: build, demo, test.
SHELL := /bin/bash
CADDY := $(CURDIR)/caddy
# The tests' Caddy also has the Redis storage module, for the cluster test
# (keep in step with integration/harness_test.go).
TEST_CADDY := $(CURDIR)/caddy-test
TEST_MODULES := github.com/pberkel/caddy-storage-redis@v1.8.0

.PHONY: all build demo test lint bench bench-cluster fuzz soak clean

all: build

# Caddy with this checkout's modules, built with xcaddy (pinned in go.mod).
build:
	scripts/build-caddy.sh $(CADDY)

# A throwaway PKI, the example gateway, and curl calls accepted and refused.
demo: build
	examples/demo.sh $(CADDY)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	go vet ./...

# The whole suite: unit tests, fuzz seeds, adapt fixtures, and end-to-end
# tests against a Caddy built from this checkout and real peers (curl, nginx,
# openssl, redis-server).
test: lint
	scripts/build-caddy.sh $(TEST_CADDY) $(TEST_MODULES)
	CADDY_BIN=$(TEST_CADDY) go test -race -count=1 -timeout 20m ./...

# Go benchmarks, then the side-by-side load comparison, then the cluster at
# scale (see BENCHMARKS.md).
bench: build
	go test -run '^$$' -bench . -benchmem ./handler ./certcodec ./upstream
	cd bench && go run ./compare -caddy $(CADDY)
	$(MAKE) bench-cluster

# Stored clients at scale: gateways sharing a redis-server holding 100,000
# clients (bench/cluster; issue 19's targets). Needs redis-server.
bench-cluster:
	scripts/build-caddy.sh $(TEST_CADDY) $(TEST_MODULES)
	cd bench && go run ./cluster -caddy $(TEST_CADDY)

# A soak, not part of `test`: 5 minutes (SOAK_DURATION=30s for a short run)
# of good callers through a gateway whose CRL, profiles file, keystore and
# trust PEM are again and again replaced by hostile files and put back
# (integration/soak_test.go, build tag soak).
soak:
	scripts/build-caddy.sh $(TEST_CADDY) $(TEST_MODULES)
	CADDY_BIN=$(TEST_CADDY) go test -tags soak -run TestSoak -count=1 -timeout 15m -v ./integration

fuzz:
	go test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./certcodec
	go test -run '^$$' -fuzz FuzzLoadJKS -fuzztime 30s ./keystore
	go test -run '^$$' -fuzz FuzzLoadPKCS12 -fuzztime 30s ./keystore
	go test -run '^$$' -fuzz FuzzParseProfilesFile -fuzztime 30s ./upstream
	go test -run '^$$' -fuzz FuzzParsePEM -fuzztime 30s ./certcodec
	go test -run '^$$' -fuzz FuzzParseCRL -fuzztime 30s ./revocation
	go test -run '^$$' -fuzz FuzzParseOCSP -fuzztime 30s ./revocation

clean:
	rm -f $(CADDY) $(TEST_CADDY)
