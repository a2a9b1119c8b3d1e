#!/usr/bin/env bash
# The demo: a gateway built from this checkout, a throwaway PKI, and curl
# calls that are accepted and refused. Stops everything it started.
# Usage: examples/demo.sh <caddy binary>
set -euo pipefail

caddy=$(realpath "${1:?usage: demo.sh <caddy binary>}")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pid=""
cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

export DEMO_DIR=$work/pki
export DEMO_ADMIN_PORT=${DEMO_ADMIN_PORT:-12019}
export DEMO_GATEWAY_PORT=${DEMO_GATEWAY_PORT:-18443}
export DEMO_GATEWAY_HTTP_PORT=${DEMO_GATEWAY_HTTP_PORT:-18080}
export DEMO_LB_PORT=${DEMO_LB_PORT:-18444}
export DEMO_BACKEND_PORT=${DEMO_BACKEND_PORT:-19080}

echo "== Making a demo PKI in $DEMO_DIR (caddy mtls keygen --demo)"
"$caddy" mtls keygen --demo --out "$DEMO_DIR"

echo "== Starting Caddy with examples/Caddyfile"
HOME=$work XDG_DATA_HOME=$work XDG_CONFIG_HOME=$work \
	"$caddy" run --config "$here/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
pid=$!
for port in $DEMO_ADMIN_PORT $DEMO_GATEWAY_PORT $DEMO_GATEWAY_HTTP_PORT $DEMO_LB_PORT $DEMO_BACKEND_PORT; do
	for _ in $(seq 100); do
		if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then break; fi
		if ! kill -0 "$pid" 2>/dev/null; then cat "$work/caddy.log"; echo "Caddy exited" >&2; exit 1; fi
		sleep 0.1
	done
done

failed=0
call() { # call <expected status> <expected body or -> <description> <curl args...>
	local want=$1 want_body=$2 what=$3; shift 3
	local got body
	body=$(curl --silent --show-error --max-time 10 --cacert "$DEMO_DIR/server-ca.pem" \
		--write-out '\n%{http_code}' "$@") || true
	got=${body##*$'\n'}
	body=${body%$'\n'*}
	verdict="ok  "
	if [ "$got" != "$want" ] || { [ "$want_body" != - ] && [ "$body" != "$want_body" ]; }; then
		verdict="FAIL"
		failed=1
	fi
	printf '%s %-58s -> %s %s\n' "$verdict" "$what" "$got" "$body"
}
gw=https://localhost:$DEMO_GATEWAY_PORT/api
cert() { echo --cert "$DEMO_DIR/$1.pem" --key "$DEMO_DIR/$1-key.pem"; }

echo "== Calls"
# shellcheck disable=SC2046
call 200 "backend: caller=alice tier= source=tls" \
	"alice (certificate from the trusted CA)" $(cert alice) "$gw"
# shellcheck disable=SC2046
call 200 "backend: caller=partner tier=gold source=tls" \
	"partner-app (pinned self-signed certificate)" $(cert partner) "$gw"
call 401 "" "no certificate" "$gw"
# shellcheck disable=SC2046
call 403 "" "mallory (certificate from an untrusted CA)" $(cert mallory) "$gw"
# shellcheck disable=SC2046
call 200 "backend: caller=alice tier= source=header" \
	"alice through the load balancer (certificate in a header)" $(cert alice) "https://localhost:$DEMO_LB_PORT/api"
call 401 "" "a forged certificate header sent straight to the gateway" \
	-H "X-SSL-Client-Cert: :$(sed '1d;$d' "$DEMO_DIR/alice.pem" | tr -d '\n'):" "http://127.0.0.1:$DEMO_GATEWAY_HTTP_PORT/api"

echo "== Why the refused calls were refused (Caddy's log)"
grep '"client certificate refused"' "$work/caddy.log" | sed -e 's/.*"reason":"\([a-z_]*\)".*"remote_addr":"\([^"]*\)".*/  reason=\1 from=\2/' || true

echo "== alice's certificate, as the gateway sees it (caddy mtls inspect)"
"$caddy" mtls inspect --ca "$DEMO_DIR/clients-ca.pem" "$DEMO_DIR/alice.pem" | sed 's/^/  /'

if [ "$failed" != 0 ]; then
	echo "The demo did not go as expected; Caddy's log:" >&2
	cat "$work/caddy.log" >&2
	exit 1
fi
echo "== Demo done: every call answered as expected."
