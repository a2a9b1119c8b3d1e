#!/usr/bin/env bash
# Does what the README tells a new user to do, in a fresh clone: the build line
# of "## Build" (with xcaddy, `go tool xcaddy` when none is installed; with the
# file-proxy shim of Troubleshooting if the module proxy answers 403), then the
# quick start: its openssl commands, its Caddyfile, `caddy run`, its curl calls.
# Usage: scripts/fresh-clone-check.sh [--worktree] [<repository>]
#   <repository>  what to clone (default: this checkout)
#   --worktree    also apply this checkout's uncommitted changes to the clone
# Uses ports 2019, 8443 and 9443, as the quick start does. Not part of make test
# (it builds Caddy); run it before a release.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
worktree=0
if [ "${1:-}" = --worktree ]; then worktree=1; shift; fi
src=${1:-$here}

tmp=$(mktemp -d)
caddy_pid=
cleanup() {
	if [ -n "$caddy_pid" ]; then kill "$caddy_pid" 2>/dev/null || true; wait "$caddy_pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "== clone $src"
git clone -q "$src" "$tmp/caddy-mtls"
if [ "$worktree" = 1 ]; then
	git -C "$here" diff HEAD --binary | git -C "$tmp/caddy-mtls" apply --allow-empty
	git -C "$here" ls-files -z --others --exclude-standard | (cd "$here" && xargs -0 -r cp --parents -t "$tmp/caddy-mtls")
fi
cd "$tmp/caddy-mtls"

# block <heading> <info string>: the fenced blocks of that README section.
block() {
	awk -v h="$1" -v info="$2" '
		$0 == h { in_section = 1; next }
		in_section && /^##+ / { exit }
		in_section && !in_block && $0 == "```" info { in_block = 1; next }
		in_block && /^```/ { in_block = 0; next }
		in_block { print }
	' "$tmp/caddy-mtls/README.md"
}

build_line=$(block "## Build" sh | grep -m1 '^xcaddy build ')
[ -n "$build_line" ] || { echo "README: no xcaddy build line under ## Build" >&2; exit 1; }
command -v xcaddy >/dev/null || xcaddy() { go tool xcaddy "$@"; }

echo "== $build_line"
if ! (eval "$build_line") > "$tmp/build.log" 2>&1; then
	if ! grep -q '403' "$tmp/build.log"; then cat "$tmp/build.log" >&2; exit 1; fi
	echo "== the module proxy answered 403: $(grep -m1 403 "$tmp/build.log")"
	echo "== again with the shim of README's Troubleshooting"
	shim_setup=$(block "### The module proxy answers 403 Forbidden" sh | grep -v '^xcaddy build ')
	if ! (eval "$shim_setup"; eval "$build_line") > "$tmp/build.log" 2>&1; then cat "$tmp/build.log" >&2; exit 1; fi
fi
./caddy version
caddy=$PWD/caddy

echo "== quick start"
mkdir "$tmp/quickstart"
cd "$tmp/quickstart"
bash -euc "$(block "### 1. Certificates" sh)" > openssl.log 2>&1 || { cat openssl.log >&2; exit 1; }
block "### 2. Caddyfile" "caddyfile quickstart" > Caddyfile
"$caddy" run > caddy.log 2>&1 &
caddy_pid=$!
for _ in $(seq 100); do
	if curl -s -o /dev/null --cacert server-ca.pem https://localhost:8443/ 2>/dev/null; then break; fi
	sleep 0.1
done

fail=0
while IFS= read -r line; do
	want=${line#*# }
	want=${want%%:*}
	got=$(bash -euc "${line%%#*}" 2>/dev/null || true)
	got=$(echo "$got" | sed 's/^ *//;s/ *$//')
	if [ "$got" = "$want" ]; then echo "ok   ${line%%#*}-> $got"; else echo "FAIL ${line%%#*}-> $got, README says $want"; fail=1; fi
done < <(block "### 3. Run it and call it" sh | grep '^curl ')

for reason in no_cert untrusted; do
	if grep -q "\"msg\":\"client certificate refused\",\"reason\":\"$reason\"" caddy.log; then
		echo "ok   refusal logged: $reason"
	else
		echo "FAIL no \"client certificate refused\" line with reason $reason in Caddy's log"; fail=1
	fi
done
if [ "$fail" != 0 ]; then echo "== Caddy's log:"; cat caddy.log; exit 1; fi
echo "== fresh clone: build and quick start as the README says: ok"
