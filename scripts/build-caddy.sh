#!/usr/bin/env bash
# Builds Caddy with this checkout's modules, using xcaddy pinned in go.mod.
# Usage: scripts/build-caddy.sh <output binary> [<module@version> ...]
# Further modules (e.g. a storage module for the tests) are built in too.
set -euo pipefail

out=${1:?usage: build-caddy.sh <output binary> [<module@version> ...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
caddy_version=$(cd "$here" && go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)

# Module proxy shims, all in this one place:
# - A proxy that answers 403 (not 404) for modules it does not know breaks
#   `go get` of this unpublished module. A file proxy in front that knows it,
#   with an empty version list, fixes that and is harmless with an ordinary
#   proxy. GONOSUMDB keeps the checksum database from being asked about it.
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
mkdir -p "$shim/github.com/caddy-mtls/caddy-mtls/@v"
: > "$shim/github.com/caddy-mtls/caddy-mtls/@v/list"
# - Some modules' .info is refused while their .mod and .zip are served, and
#   some are missing from the checksum database: github.com/pberkel/caddy-storage-redis
#   v1.8.0 (the Redis storage the cluster tests use) gets its .info here.
mkdir -p "$shim/github.com/pberkel/caddy-storage-redis/@v"
echo '{"Version":"v1.8.0","Time":"2026-01-01T00:00:00Z"}' > "$shim/github.com/pberkel/caddy-storage-redis/@v/v1.8.0.info"

export GOPROXY="file://$shim,$(go env GOPROXY)"
export GONOSUMDB="github.com/caddy-mtls,github.com/pberkel${GONOSUMDB:+,$GONOSUMDB}"
export CGO_ENABLED=${CGO_ENABLED:-0}

case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"
withs=(--with "github.com/caddy-mtls/caddy-mtls=$here")
for m in "$@"; do withs+=(--with "$m"); done
go tool xcaddy build "$caddy_version" --output "$out" "${withs[@]}"
