# caddy-mtls: build, demo, test.
SHELL := /bin/bash
CADDY := $(CURDIR)/caddy

.PHONY: all build demo test lint bench fuzz clean

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
# tests against the Caddy built above and real peers (curl, nginx).
test: lint build
	CADDY_BIN=$(CADDY) go test -race -count=1 ./...

bench:
	go test -run '^$$' -bench . -benchmem ./handler ./certcodec

fuzz:
	go test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./certcodec

clean:
	rm -f $(CADDY)
