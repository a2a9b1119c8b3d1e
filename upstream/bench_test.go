package upstream

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// BenchmarkRoundTrip compares one keep-alive request through ssl_profiles
// (profile matched, per-request identity from the keystore) with Caddy's
// plain http transport configured for the same backend and identity, in
// the same run.
func BenchmarkRoundTrip(b *testing.B) {
	f := newFixture(b)
	plain := mustTransport(b, `{"tls":{"ca":{"provider":"file","pem_files":["`+f.files["serverCA-a"]+`"]},
		"client_certificate_file":"`+f.files["gwA"]+`","client_certificate_key_file":"`+f.files["gwA-key"]+`"}}`)
	profiled := mustTransport(b, f.config(""))
	perRequest := mustTransport(b, `{"tls":{},"profiles":[{"servers":["`+f.backendB.Addr+`"],
		"trust_pool":{"provider":"file","pem_files":["`+f.files["serverCA-b"]+`"]},
		"client_keystore":{"file":"`+f.files["clients.jks"]+`","password":"storepass","alias":"{http.auth.user.alias}"}}]}`)

	run := func(b *testing.B, tr http.RoundTripper, addr string) {
		repl := caddy.NewReplacer()
		repl.Set("http.auth.user.alias", "alice")
		host, port, _ := net.SplitHostPort(addr)
		ctx := context.WithValue(context.Background(), caddy.ReplacerCtxKey, repl)
		ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
		ctx = context.WithValue(ctx, caddy.CtxKey("reverse_proxy.dial_info"), reverseproxy.DialInfo{Network: "tcp", Address: addr, Host: host, Port: port})
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	for i := 0; i < 2; i++ { // twice each, alternating, so drift shows
		b.Run("http", func(b *testing.B) { run(b, plain, f.backendA.Addr) })
		b.Run("ssl_profiles", func(b *testing.B) { run(b, profiled, f.backendA.Addr) })
		b.Run("ssl_profiles_per_request_identity", func(b *testing.B) { run(b, perRequest, f.backendB.Addr) })
	}
}
