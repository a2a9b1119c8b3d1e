package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

func provisionTransport(t testing.TB, config string) (*Transport, error) {
	t.Helper()
	tr := new(Transport)
	if err := json.Unmarshal([]byte(config), tr); err != nil {
		return nil, err
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := tr.Provision(ctx); err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = tr.Cleanup() })
	return tr, nil
}

func mustTransport(t testing.TB, config string) *Transport {
	t.Helper()
	tr, err := provisionTransport(t, config)
	if err != nil {
		t.Fatalf("provisioning %s: %v", config, err)
	}
	return tr
}

// proxy sends a request to addr through tr as reverse_proxy would: with the
// upstream's dial info, and the request's vars and placeholders.
func proxy(tr *Transport, addr string, vars map[string]string) (string, error) {
	repl := caddy.NewReplacer()
	for k, v := range vars {
		repl.Set(k, v)
	}
	host, port, _ := net.SplitHostPort(addr)
	ctx := context.WithValue(context.Background(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	ctx = context.WithValue(ctx, caddy.CtxKey("reverse_proxy.dial_info"), reverseproxy.DialInfo{Network: "tcp", Address: addr, Host: host, Port: port})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "//"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	req.URL.Scheme = ""
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return string(body), err
}

type fixture struct {
	dir                string
	caA, caB           *demopki.Cert // client CAs the two backends require
	gwA, gwB           *demopki.Cert // the gateway's identities for each
	alice, bob         *demopki.Cert // per-caller identities under caB
	backendA, backendB *testpeer.Backend
	files              map[string]string
}

func newFixture(t testing.TB) *fixture {
	f := &fixture{dir: t.TempDir(), files: map[string]string{}}
	f.caA = demopki.Must(demopki.NewCA("client CA A"))
	f.caB = demopki.Must(demopki.NewCA("client CA B"))
	f.gwA = demopki.Must(f.caA.Issue(demopki.Options{CommonName: "gateway-for-a"}))
	f.gwB = demopki.Must(f.caB.Issue(demopki.Options{CommonName: "gateway-for-b"}))
	f.alice = demopki.Must(f.caB.Issue(demopki.Options{CommonName: "alice-at-b"}))
	f.bob = demopki.Must(f.caB.Issue(demopki.Options{CommonName: "bob-at-b"}))
	f.backendA = testpeer.StartBackend(t, "a", f.caA)
	f.backendB = testpeer.StartBackend(t, "b", f.caB)
	write := func(name string, c *demopki.Cert) {
		cert, key, err := c.WriteFiles(f.dir, name)
		if err != nil {
			t.Fatal(err)
		}
		f.files[name], f.files[name+"-key"] = cert, key
	}
	write("gwA", f.gwA)
	write("serverCA-a", f.backendA.ServerCA)
	write("serverCA-b", f.backendB.ServerCA)
	f.files["clients.jks"] = filepath.Join(f.dir, "clients.jks")
	err := demopki.WriteJKS(f.files["clients.jks"], "storepass", "storepass",
		demopki.JKSEntry{Alias: "alice", Cert: f.alice, Key: true},
		demopki.JKSEntry{Alias: "bob", Cert: f.bob, Key: true},
		demopki.JKSEntry{Alias: "gateway", Cert: f.gwB, Key: true})
	if err != nil {
		t.Fatal(err)
	}
	f.files["gwB.p12"] = filepath.Join(f.dir, "gwB.p12")
	if err := f.gwB.WriteP12(f.files["gwB.p12"], "p12pass"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) config(extra string) string {
	return `{"tls":{},"profiles":[
		{"servers":["` + f.backendA.Addr + `"],
		 "trust_pool":{"provider":"file","pem_files":["` + f.files["serverCA-a"] + `"]},
		 "client_certificate_file":"` + f.files["gwA"] + `","client_key_file":"` + f.files["gwA-key"] + `"},
		{"servers":["` + f.backendB.Addr + `"],
		 "trust_pool":{"provider":"file","pem_files":["` + f.files["serverCA-b"] + `"]},
		 "client_keystore":{"file":"` + f.files["gwB.p12"] + `","password":"p12pass"}}
	]` + extra + `}`
}

func TestEachUpstreamItsProfile(t *testing.T) {
	f := newFixture(t)
	tr := mustTransport(t, f.config(""))
	for addr, want := range map[string]string{f.backendA.Addr: "a gateway-for-a", f.backendB.Addr: "b gateway-for-b"} {
		got, err := proxy(tr, addr, nil)
		if err != nil || got != want {
			t.Fatalf("%s: %q %v, want %q", addr, got, err, want)
		}
	}
}

func TestUntrustedBackendRefused(t *testing.T) {
	f := newFixture(t)
	// Profile A trusts B's server CA only.
	cfg := strings.Replace(f.config(""), f.files["serverCA-a"], f.files["serverCA-b"], 1)
	tr := mustTransport(t, cfg)
	_, err := proxy(tr, f.backendA.Addr, nil)
	var unknown x509.UnknownAuthorityError
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") || !strings.Contains(err.Error(), "ssl_profiles: profile "+f.backendA.Addr) {
		t.Fatalf("backend with an untrusted certificate: %v (%T)", err, unknown)
	}
}

func TestNoProfileUsesBase(t *testing.T) {
	f := newFixture(t)
	// The base trusts A's server CA and presents gateway A; no profile for A.
	cfg := `{"tls":{"ca":{"provider":"file","pem_files":["` + f.files["serverCA-a"] + `"]},
		"client_certificate_file":"` + f.files["gwA"] + `","client_certificate_key_file":"` + f.files["gwA-key"] + `"},
		"profiles":[{"servers":["other.test:443"],"insecure_skip_verify":true}]}`
	tr := mustTransport(t, cfg)
	if got, err := proxy(tr, f.backendA.Addr, nil); err != nil || got != "a gateway-for-a" {
		t.Fatalf("base settings: %q %v", got, err)
	}
}

func TestProfileInheritsBaseTrust(t *testing.T) {
	f := newFixture(t)
	cfg := `{"tls":{"ca":{"provider":"file","pem_files":["` + f.files["serverCA-a"] + `"]}},
		"profiles":[{"servers":["` + f.backendA.Addr + `"],
		"client_certificate_file":"` + f.files["gwA"] + `","client_key_file":"` + f.files["gwA-key"] + `"}]}`
	tr := mustTransport(t, cfg)
	if got, err := proxy(tr, f.backendA.Addr, nil); err != nil || got != "a gateway-for-a" {
		t.Fatalf("inherited trust: %q %v", got, err)
	}
}

func TestPerRequestIdentity(t *testing.T) {
	f := newFixture(t)
	cfg := strings.Replace(f.config(`,"max_pools":4`), `{"file":"`+f.files["gwB.p12"]+`","password":"p12pass"}`,
		`{"file":"`+f.files["clients.jks"]+`","password":"{env.TEST_KS_PASS}","alias":"{http.auth.user.alias}"}`, 1)
	t.Setenv("TEST_KS_PASS", "storepass")
	tr := mustTransport(t, cfg)

	// Concurrent callers with different aliases each reach the backend
	// with their own certificate, never another's.
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		alias := []string{"alice", "bob", "gateway"}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := proxy(tr, f.backendB.Addr, map[string]string{"http.auth.user.alias": alias})
			want := map[string]string{"alice": "b alice-at-b", "bob": "b bob-at-b", "gateway": "b gateway-for-b"}[alias]
			if err != nil || got != want {
				errs <- fmt.Errorf("alias %s: got %q, %v", alias, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := tr.pools.len(); n != 3 {
		t.Fatalf("%d pools for 3 identities", n)
	}

	// An alias that names nothing fails, with no fallback identity.
	for _, alias := range []string{"carol", ""} {
		_, err := proxy(tr, f.backendB.Addr, map[string]string{"http.auth.user.alias": alias})
		if err == nil || err.Error() != "status 502: Bad Gateway" {
			t.Fatalf("alias %q: %v", alias, err)
		}
	}
	if _, err := proxy(tr, f.backendB.Addr, nil); err == nil {
		t.Fatal("no alias at all: the request went through")
	}
}

func TestPoolsBounded(t *testing.T) {
	f := newFixture(t)
	cfg := strings.Replace(f.config(`,"max_pools":2`), `{"file":"`+f.files["gwB.p12"]+`","password":"p12pass"}`,
		`{"file":"`+f.files["clients.jks"]+`","password":"storepass","alias":"{http.auth.user.alias}"}`, 1)
	tr := mustTransport(t, cfg)
	for _, alias := range []string{"alice", "bob", "gateway", "alice"} {
		if _, err := proxy(tr, f.backendB.Addr, map[string]string{"http.auth.user.alias": alias}); err != nil {
			t.Fatal(err)
		}
		if n := tr.pools.len(); n > 2 {
			t.Fatalf("%d pools, bound 2", n)
		}
	}
}

func TestProvisionErrors(t *testing.T) {
	f := newFixture(t)
	garbage := filepath.Join(f.dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	p12 := `{"file":"` + f.files["gwB.p12"] + `","password":"p12pass"}`
	for _, tc := range []struct{ name, from, to, want string }{
		{"wrong keystore password", p12, `{"file":"` + f.files["gwB.p12"] + `","password":"nope"}`, "wrong password"},
		{"unreadable keystore", p12, `{"file":"/nonexistent/ks.p12","password":"x"}`, "/nonexistent/ks.p12"},
		{"unknown static alias", p12, `{"file":"` + f.files["clients.jks"] + `","password":"storepass","alias":"carol"}`, `no key pair "carol"`},
		{"key not matching cert", `"client_key_file":"` + f.files["gwA-key"] + `"`, `"client_key_file":"` + strings.Replace(f.files["gwA-key"], "gwA", "serverCA-a", 1) + `"`, "private key does not match"},
		{"empty trust pool", f.files["serverCA-a"], garbage, "trust pool has no certificates"},
		{"duplicate server", `"servers":["` + f.backendB.Addr + `"]`, `"servers":["` + f.backendA.Addr + `"]`, "given twice"},
		{"malformed pattern", `"servers":["` + f.backendB.Addr + `"]`, `"servers":["a*.b:1"]`, "malformed"},
		{"bad min version", `"servers":["` + f.backendB.Addr + `"]`, `"servers":["` + f.backendB.Addr + `"],"min_version":"tls1.0"`, "min_version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.config("")
			if !strings.Contains(cfg, tc.from) {
				t.Fatalf("fixture lacks %q", tc.from)
			}
			_, err := provisionTransport(t, strings.Replace(cfg, tc.from, tc.to, 1))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "profile ") {
				t.Fatalf("error %v, want it to name the profile and contain %q", err, tc.want)
			}
		})
	}
}

// TestAlwaysTLS: without any base TLS option the transport still speaks
// TLS, so health checks use https and https upstreams get their Host.
func TestAlwaysTLS(t *testing.T) {
	f := newFixture(t)
	cfg := strings.Replace(f.config(""), `{"tls":{},`, `{`, 1)
	tr := mustTransport(t, cfg)
	if !tr.TLSEnabled() || tr.RequestHeaderOps() == nil {
		t.Fatalf("TLS enabled %v, header ops %v", tr.TLSEnabled(), tr.RequestHeaderOps())
	}
	u := &url.URL{Scheme: "http", Host: f.backendA.Addr}
	tr.OverrideHealthCheckScheme(u, strings.Split(f.backendA.Addr, ":")[1])
	if u.Scheme != "https" {
		t.Fatalf("health check scheme %s", u.Scheme)
	}
	if got, err := proxy(tr, f.backendA.Addr, nil); err != nil || got != "a gateway-for-a" {
		t.Fatalf("%q %v", got, err)
	}
}

func TestProfileErrorKeepsTimeout(t *testing.T) {
	var ne net.Error = profileError{profile: "p", err: &net.OpError{Op: "dial", Err: timeoutErr{}}}
	if !ne.Timeout() || !strings.HasPrefix(ne.Error(), "ssl_profiles: profile p: ") {
		t.Fatalf("timeout %v, error %q", ne.Timeout(), ne.Error())
	}
	var de reverseproxy.DialError
	if !errors.As(profileError{profile: "p", err: reverseproxy.NewDialError(errors.New("refused"))}, &de) {
		t.Fatal("dial error lost")
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestRevokedBackend: a backend whose certificate is on its CA's CRL fails
// the handshake; with a clean CRL it is reached.
func TestRevokedBackend(t *testing.T) {
	f := newFixture(t)
	crl := filepath.Join(f.dir, "backend-a.crl")
	for _, tc := range []struct {
		revoked []*demopki.Cert
		wantErr string
	}{
		{nil, ""},
		{[]*demopki.Cert{f.backendA.Server}, "backend certificate refused: localhost (revocation status revoked)"},
	} {
		if err := f.backendA.ServerCA.WriteCRL(crl, time.Now().Add(time.Hour), tc.revoked...); err != nil {
			t.Fatal(err)
		}
		cfg := strings.Replace(f.config(""), `"client_certificate_file":"`+f.files["gwA"]+`"`,
			`"revocation":{"mode":"strict","crl":["`+crl+`"]},"client_certificate_file":"`+f.files["gwA"]+`"`, 1)
		tr := mustTransport(t, cfg)
		got, err := proxy(tr, f.backendA.Addr, nil)
		switch {
		case tc.wantErr == "" && (err != nil || got != "a gateway-for-a"):
			t.Fatalf("clean CRL: %q %v", got, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Fatalf("revoked backend: %q %v", got, err)
		}
	}
}

// TestProfileInheritanceLimits: a profile follows the base's except_ports
// (plain HTTP there, as the http transport), but not the base's
// insecure_skip_verify: a profile verifies its backend unless it says
// otherwise itself.
func TestProfileInheritanceLimits(t *testing.T) {
	f := newFixture(t)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "plain")
	}))
	t.Cleanup(plain.Close)
	plainAddr := plain.Listener.Addr().String()
	_, plainPort, _ := net.SplitHostPort(plainAddr)
	cfg := `{"tls":{"insecure_skip_verify":true,"except_ports":["` + plainPort + `"]},
		"profiles":[
		{"servers":["` + plainAddr + `"],
		 "trust_pool":{"provider":"file","pem_files":["` + f.files["serverCA-a"] + `"]}},
		{"servers":["` + f.backendA.Addr + `"],
		 "client_certificate_file":"` + f.files["gwA"] + `","client_key_file":"` + f.files["gwA-key"] + `"}]}`
	tr := mustTransport(t, cfg)
	if got, err := proxy(tr, plainAddr, nil); err != nil || got != "plain" {
		t.Fatalf("except_ports: %q %v", got, err)
	}
	// Backend A's server CA is in no trust pool the profile has: the base's
	// insecure_skip_verify must not let it through.
	var unknown x509.UnknownAuthorityError
	if got, err := proxy(tr, f.backendA.Addr, nil); !errors.As(err, &unknown) {
		t.Fatalf("a profile under an insecure base: %q %v, want an unknown authority", got, err)
	}
}

// TestHandshakeErrors: the round trip errors of failed TLS handshakes are
// told from others by their types: a backend refusing the gateway's
// (missing) certificate with an alert during the handshake (TLS 1.2: in
// TLS 1.3 the refusal comes after the client's side of the handshake, as
// an alert or a broken pipe, whichever the client meets first); a backend
// whose certificate is not trusted; a backend that does not speak TLS. A
// refused connection is not one.
func TestHandshakeErrors(t *testing.T) {
	f := newFixture(t)
	// Backend A's server, client certificates required, TLS 1.2 at most.
	tls12 := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	tls12.TLS = &tls.Config{
		Certificates: []tls.Certificate{f.backendA.Server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    demopki.Pool(f.caA),
		MaxVersion:   tls.VersionTLS12,
	}
	tls12.StartTLS()
	t.Cleanup(tls12.Close)
	plain := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(plain.Close)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	localhost := func(addr string) string {
		_, port, _ := net.SplitHostPort(addr)
		return net.JoinHostPort("localhost", port)
	}

	cases := []struct {
		name, addr string
		want       bool
	}{
		{"no client certificate, TLS 1.2", localhost(tls12.Listener.Addr().String()), true},
		{"untrusted backend", f.backendB.Addr, true},
		{"plain HTTP backend", localhost(plain.Listener.Addr().String()), true},
		{"connection refused", closedAddr, false},
	}
	var profiles []string
	for _, tc := range cases {
		profiles = append(profiles, `{"servers":["`+tc.addr+`"],"trust_pool":{"provider":"file","pem_files":["`+f.files["serverCA-a"]+`"]}}`)
	}
	tr := mustTransport(t, `{"tls":{},"profiles":[`+strings.Join(profiles, ",")+`]}`)
	for _, tc := range cases {
		_, err := proxy(tr, tc.addr, nil)
		if err == nil || isHandshakeError(err) != tc.want {
			t.Errorf("%s: %v (%T): a handshake error %v, want %v", tc.name, err, errors.Unwrap(err), err != nil && isHandshakeError(err), tc.want)
		}
	}
}
