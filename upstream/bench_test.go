package upstream

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

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
	// Interleaved: each iteration sends one request through each transport
	// to the same backend, timing them apart, so that both see the same
	// machine; reports each one's time and their ratio.
	b.Run("interleaved", func(b *testing.B) {
		ctx := func(addr string) context.Context {
			repl := caddy.NewReplacer()
			host, port, _ := net.SplitHostPort(addr)
			c := context.WithValue(context.Background(), caddy.ReplacerCtxKey, repl)
			c = context.WithValue(c, caddyhttp.VarsCtxKey, map[string]any{})
			return context.WithValue(c, caddy.CtxKey("reverse_proxy.dial_info"), reverseproxy.DialInfo{Network: "tcp", Address: addr, Host: host, Port: port})
		}(f.backendA.Addr)
		one := func(tr http.RoundTripper) time.Duration {
			start := time.Now()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+f.backendA.Addr+"/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return time.Since(start)
		}
		var tPlain, tProfiled time.Duration
		for i := 0; i < b.N; i++ {
			if i%2 == 0 { // alternate which goes first
				tPlain += one(plain)
				tProfiled += one(profiled)
			} else {
				tProfiled += one(profiled)
				tPlain += one(plain)
			}
		}
		b.ReportMetric(float64(tPlain.Nanoseconds())/float64(b.N), "http-ns/req")
		b.ReportMetric(float64(tProfiled.Nanoseconds())/float64(b.N), "ssl_profiles-ns/req")
		b.ReportMetric(float64(tProfiled)/float64(tPlain), "ratio")
	})
}
