#!/usr/bin/env bash
# Builds Caddy with this checkout's modules, using xcaddy pinned in go.mod.
# Usage: scripts/build-caddy.sh <output binary>
set -euo pipefail

out=${1:?usage: build-caddy.sh <output binary>}
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

export GOPROXY="file://$shim,$(go env GOPROXY)"
export GONOSUMDB="github.com/caddy-mtls${GONOSUMDB:+,$GONOSUMDB}"
export CGO_ENABLED=${CGO_ENABLED:-0}

case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"
go tool xcaddy build "$caddy_version" --output "$out" --with "github.com/caddy-mtls/caddy-mtls=$here"
