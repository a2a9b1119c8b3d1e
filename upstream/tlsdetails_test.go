package upstream

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

func TestUnmarshalTLSDetails(t *testing.T) {
	input := `ssl_profiles {
		profile a:1 {
			tls_min_version tls1.2
			tls_max_version tls1.2
			tls_ciphers ECDHE-ECDSA-AES256-GCM-SHA384 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305
			tls_curves x25519 p256 secp384r1
			tls_renegotiation once
		}
	}`
	var tr Transport
	if err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(tr.Profiles)
	want := `[{"servers":["a:1"],"min_version":"tls1.2","max_version":"tls1.2",` +
		`"ciphers":["ECDHE-ECDSA-AES256-GCM-SHA384","TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256","ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"],` +
		`"curves":["x25519","p256","secp384r1"],"renegotiation":"once"}]`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}

	for _, tc := range []struct{ name, sub, want string }{
		{"old max version", "tls_max_version tls1.1", "invalid tls_max_version 'tls1.1'"},
		{"max version twice", "tls_max_version tls1.2\n tls_max_version tls1.3", "'tls_max_version' given twice"},
		{"no ciphers", "tls_ciphers", "wrong argument count"},
		{"unknown cipher", "tls_ciphers ECDHE-ECDSA-AES256-GCM-SHA384 HIGH", `unknown cipher suite "HIGH"`},
		{"insecure OpenSSL cipher", "tls_ciphers AES128-SHA", `cipher suite "AES128-SHA" is insecure`},
		{"insecure IANA cipher", "tls_ciphers TLS_RSA_WITH_AES_128_GCM_SHA256", `cipher suite "TLS_RSA_WITH_AES_128_GCM_SHA256" is insecure`},
		{"TLS 1.3 cipher", "tls_ciphers TLS_AES_128_GCM_SHA256", `"TLS_AES_128_GCM_SHA256" is a TLS 1.3 suite`},
		{"unknown curve", "tls_curves x25519 brainpool", `unknown curve "brainpool"`},
		{"no curves", "tls_curves", "wrong argument count"},
		{"bad renegotiation", "tls_renegotiation always", "invalid tls_renegotiation 'always': want never, once or freely"},
		{"renegotiation without level", "tls_renegotiation", "wrong argument count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tr Transport
			err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser("ssl_profiles {\n profile a:1 {\n " + tc.sub + "\n }\n}"))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Testfile:") {
				t.Fatalf("error %v, want it to contain %q and the line", err, tc.want)
			}
		})
	}
}

func TestCipherSuiteNames(t *testing.T) {
	// Every OpenSSL name maps to a suite Go knows, under its own IANA name.
	known := map[uint16]string{}
	for _, cs := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		known[cs.ID] = cs.Name
	}
	for name, id := range openSSLCiphers {
		if known[id] == "" {
			t.Errorf("%s: suite %#04x unknown to Go", name, id)
		}
	}
	ids, err := cipherSuiteIDs([]string{"ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}; !slices.Equal(ids, want) {
		t.Fatalf("ids %v, want %v (one entry per suite, in order)", ids, want)
	}
}

// tlsDetailsConfig is the built TLS client config of the profile of addr.
func tlsDetailsConfig(t *testing.T, tr *Transport, addr string) *tls.Config {
	t.Helper()
	p := tr.profiles.Load().match(addr)
	if p == nil {
		t.Fatalf("no profile for %s", addr)
	}
	return p.defaultRT.TLSClientConfig
}

// TestTLSDetailsBuilt: a profile's versions, suites, curves and
// renegotiation are in its TLS config; a profile without them inherits the
// base transport's curves and renegotiation.
func TestTLSDetailsBuilt(t *testing.T) {
	tr := mustTransport(t, `{"tls":{"curves":["secp384r1"],"renegotiation":"freely"},"profiles":[
		{"servers":["own:443"],"min_version":"tls1.2","max_version":"tls1.2",
		 "ciphers":["ECDHE-ECDSA-AES256-GCM-SHA384","TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"],
		 "curves":["p256","x25519"],"renegotiation":"once"},
		{"servers":["inherits:443"]}]}`)
	own := tlsDetailsConfig(t, tr, "own:443")
	if own.MinVersion != tls.VersionTLS12 || own.MaxVersion != tls.VersionTLS12 {
		t.Errorf("versions %x..%x", own.MinVersion, own.MaxVersion)
	}
	if want := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}; !slices.Equal(own.CipherSuites, want) {
		t.Errorf("ciphers %v, want %v", own.CipherSuites, want)
	}
	if want := []tls.CurveID{tls.CurveP256, tls.X25519}; !slices.Equal(own.CurvePreferences, want) {
		t.Errorf("curves %v, want %v", own.CurvePreferences, want)
	}
	if own.Renegotiation != tls.RenegotiateOnceAsClient {
		t.Errorf("renegotiation %v", own.Renegotiation)
	}
	inh := tlsDetailsConfig(t, tr, "inherits:443")
	if inh.MaxVersion != 0 || inh.CipherSuites != nil {
		t.Errorf("inheriting profile: max %x, ciphers %v: want Go's defaults", inh.MaxVersion, inh.CipherSuites)
	}
	if want := []tls.CurveID{tls.CurveP384}; !slices.Equal(inh.CurvePreferences, want) {
		t.Errorf("inherited curves %v, want %v", inh.CurvePreferences, want)
	}
	if inh.Renegotiation != tls.RenegotiateFreelyAsClient {
		t.Errorf("inherited renegotiation %v", inh.Renegotiation)
	}
}

func TestTLSDetailsErrors(t *testing.T) {
	for _, tc := range []struct{ name, profile, want string }{
		{"min above max", `"min_version":"tls1.3","max_version":"tls1.2"`, "min_version TLS 1.3 is above max_version TLS 1.2"},
		{"bad max", `"max_version":"tls1.1"`, `max_version "tls1.1": want tls1.2 or tls1.3`},
		{"unknown cipher", `"ciphers":["ECDHE-ECDSA-AES256-GCM-SHA384","NOPE"]`, `unknown cipher suite "NOPE"`},
		{"insecure cipher", `"ciphers":["ECDHE-RSA-DES-CBC3-SHA"]`, `cipher suite "ECDHE-RSA-DES-CBC3-SHA" is insecure`},
		{"ciphers with TLS 1.3 only", `"min_version":"tls1.3","ciphers":["ECDHE-ECDSA-AES256-GCM-SHA384"]`, "min_version is tls1.3"},
		{"unknown curve", `"curves":["secp256k1"]`, `unknown curve "secp256k1"`},
		{"hybrid curve only with TLS 1.2", `"max_version":"tls1.2","curves":["x25519mlkem768"]`, "x25519mlkem768 is TLS 1.3 only"},
		{"bad renegotiation", `"renegotiation":"sometimes"`, `renegotiation "sometimes": want never, once or freely`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := provisionTransport(t, `{"tls":{},"profiles":[{"servers":["a:443"],`+tc.profile+`}]}`)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "profile 1 (a:443)") {
				t.Fatalf("error %v, want it to name the profile and contain %q", err, tc.want)
			}
		})
	}
}

// TestTLSDetailsHandshake: a backend that speaks TLS 1.3 and every suite
// is reached with exactly the profile's version and suite.
func TestTLSDetailsHandshake(t *testing.T) {
	dir := t.TempDir()
	ca := demopki.Must(demopki.NewCA("tls details CA"))
	srvCert := demopki.Must(ca.Issue(demopki.Options{CommonName: "localhost", DNSNames: []string{"localhost"}}))
	caFile, _, err := ca.WriteFiles(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", tls.VersionName(r.TLS.Version), tls.CipherSuiteName(r.TLS.CipherSuite))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert.TLSCertificate()}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := net.JoinHostPort("localhost", strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port))

	tr := mustTransport(t, `{"tls":{},"profiles":[{"servers":["`+addr+`"],
		"trust_pool":{"provider":"file","pem_files":["`+caFile+`"]},
		"max_version":"tls1.2","ciphers":["ECDHE-ECDSA-AES256-GCM-SHA384"],"curves":["p384"]}]}`)
	got, err := proxy(tr, addr, nil)
	if want := "TLS 1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"; err != nil || got != want {
		t.Fatalf("got %q %v, want %q", got, err, want)
	}
}

// TestEnvPlaceholders: the files, names and aliases of a profile take
// {env.*} placeholders, replaced at load; per-request ones stay.
func TestEnvPlaceholders(t *testing.T) {
	f := newFixture(t)
	t.Setenv("GW_DIR", f.dir)
	t.Setenv("P12_PASS", "p12pass")
	t.Setenv("JKS_PASS", "storepass")
	t.Setenv("B_ALIAS", "bob")
	rel := func(name string) string { return "{env.GW_DIR}/" + filepath.Base(f.files[name]) }
	tr := mustTransport(t, `{"tls":{},"profiles":[
		{"servers":["`+f.backendA.Addr+`"],
		 "trust_pool":{"provider":"file","pem_files":["`+rel("serverCA-a")+`"]},
		 "client_certificate_file":"`+rel("gwA")+`","client_key_file":"`+rel("gwA-key")+`"},
		{"servers":["`+f.backendB.Addr+`"],
		 "trust_pool":{"provider":"file","pem_files":["`+rel("serverCA-b")+`"]},
		 "client_keystore":{"file":"`+rel("clients.jks")+`","password":"{env.JKS_PASS}","alias":"{env.B_ALIAS}"}}]}`)
	if got, err := proxy(tr, f.backendA.Addr, nil); err != nil || got != "a gateway-for-a" {
		t.Fatalf("A: %q %v", got, err)
	}
	// The alias is the variable's value, fixed at load: not per request.
	if got, err := proxy(tr, f.backendB.Addr, map[string]string{"http.auth.user.alias": "alice"}); err != nil || got != "b bob-at-b" {
		t.Fatalf("B: %q %v", got, err)
	}
	if p := tr.profiles.Load().match(f.backendB.Addr); p.aliasTemplate != "" {
		t.Fatalf("alias template %q, want none", p.aliasTemplate)
	}

	// An env placeholder beside a per-request one: the first at load, the
	// second per request.
	t.Setenv("ALIAS_PREFIX", "al")
	tr = mustTransport(t, `{"tls":{},"profiles":[{"servers":["`+f.backendB.Addr+`"],
		 "trust_pool":{"provider":"file","pem_files":["`+rel("serverCA-b")+`"]},
		 "client_keystore":{"file":"`+rel("clients.jks")+`","password":"storepass","alias":"{env.ALIAS_PREFIX}{http.vars.who}","default_alias":"{env.B_ALIAS}"}}]}`)
	if p := tr.profiles.Load().match(f.backendB.Addr); p.aliasTemplate != "al{http.vars.who}" {
		t.Fatalf("alias template %q", p.aliasTemplate)
	}

	// The profiles file's path, and the paths in it.
	writeFile(t, filepath.Join(f.dir, "profiles.json"), `{"profiles":[{"servers":["`+f.backendB.Addr+`"],
		"trust_pool":{"provider":"file","pem_files":["`+rel("serverCA-b")+`"]},
		"client_keystore":{"file":"`+rel("gwB.p12")+`","password":"{env.P12_PASS}"}}]}`)
	tr = mustTransport(t, `{"tls":{},"profiles_file":"{env.GW_DIR}/profiles.json","profiles_reload":3600000000000}`)
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
		t.Fatalf("from the file: %q %v", got, err)
	}
	deps := tr.file.deps
	if !slices.Contains(deps, f.files["gwB.p12"]) || !slices.Contains(deps, f.files["serverCA-b"]) {
		t.Fatalf("watched files %v: want the resolved paths", deps)
	}

	// An unset variable is an error naming it, not an empty path.
	for _, cfg := range []string{
		`{"tls":{},"profiles":[{"servers":["a:1"],"client_keystore":{"file":"{env.NO_SUCH_VAR_X}/k.p12"}}]}`,
		`{"tls":{},"profiles":[{"servers":["a:1"],"trust_pool":{"provider":"file","pem_files":["/etc/{env.NO_SUCH_VAR_X}/ca.pem"]}}]}`,
		`{"tls":{},"profiles":[{"servers":["a:1"],"client_keypair":"{env.NO_SUCH_VAR_X}"}]}`,
		`{"tls":{},"profiles_file":"{env.NO_SUCH_VAR_X}"}`,
	} {
		if _, err := provisionTransport(t, cfg); err == nil || !strings.Contains(err.Error(), "{env.NO_SUCH_VAR_X}") {
			t.Errorf("%s: error %v, want it to name the variable", cfg, err)
		}
	}
	if _, ok := os.LookupEnv("NO_SUCH_VAR_X"); ok {
		t.Fatal("NO_SUCH_VAR_X is set")
	}
}
