package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// tlsSite is a site that only requests client certificates and leaves the
// decision to client_cert_auth, per route.
func tlsSite(e *env, port int, upstream string) string {
	return fmt.Sprintf(`{
	admin {admin}
	auto_https off
	metrics
	log {
		level DEBUG
	}
}

https://localhost:%[1]d {
	tls %[2]s %[3]s {
		client_auth {
			mode request
		}
	}
	log {
		output stderr
		format json
	}
	client_cert_auth /a/* {
		trust_pool file %[4]s
		client partner %[5]s tier gold
		forward
	}
	client_cert_auth /b/* {
		trust_pool file %[6]s
	}
	client_cert_auth /open/* {
		mode optional
		trust_pool file %[4]s
	}
	reverse_proxy %[7]s {
		header_up X-Caller {http.auth.user.id}
		header_up X-Tier {http.auth.user.tier}
		header_up X-Source {http.auth.user.source}
		header_up X-Fingerprint {http.auth.user.fingerprint}
	}
}
`, port, e.path("server"), e.path("server-key"), e.path("root"), e.path("partner"), e.path("other"), upstream)
}

func TestTLSPathCaddyfile(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	c := startCaddy(t, e, tlsSite(e, port, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	checkTLSSite(t, e, c, port)
}

// TestTLSPathAdminLoad loads the same site as JSON through the admin API's
// /load into a Caddy that started with nothing, and expects the same.
func TestTLSPathAdminLoad(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	c := startCaddy(t, e, `{"admin":{"listen":"{admin}"}}`, "json")

	cfgFile := t.TempDir() + "/Caddyfile"
	site := strings.ReplaceAll(tlsSite(e, port, be.addr), "{admin}", c.admin)
	writeFile(t, cfgFile, site)
	out, err := exec.Command(caddyBin, "adapt", "--config", cfgFile).Output()
	if err != nil {
		t.Fatalf("caddy adapt: %v", err)
	}
	if !bytes.Contains(out, []byte(`"handler":"client_cert_auth"`)) {
		t.Fatalf("adapted JSON has no client_cert_auth handler: %s", out)
	}
	if status, body := loadConfig(t, c, string(out), "application/json"); status != http.StatusOK {
		t.Fatalf("/load answered %d %s", status, body)
	}
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port), c.exited, c.Logs)
	checkTLSSite(t, e, c, port)
}

func checkTLSSite(t *testing.T, e *env, c *caddyProc, port int) {
	base := fmt.Sprintf("https://localhost:%d", port)
	rfc9440 := func(cert *demopki.Cert) string { return certcodec.Encode(cert.Cert.Raw, certcodec.RFC9440) }
	spoof := http.Header{"Client-Cert": {rfc9440(e.partner)}, "Client-Cert-Chain": {rfc9440(e.root)}}

	t.Run("go client", func(t *testing.T) {
		cases := []struct {
			path   string
			cert   *demopki.Cert
			status int
			caller string
		}{
			{"/a/x", e.alice, 200, "alice"},
			{"/a/x", e.partner, 200, "partner"},
			{"/a/x", nil, 401, ""},
			{"/a/x", e.mallory, 403, ""},
			{"/a/x", e.expired, 403, ""},
			{"/b/x", e.bob, 200, "bob"},
			{"/b/x", e.alice, 403, ""}, // per route: /b trusts only the other root
			{"/a/x", e.bob, 403, ""},
			{"/open/x", nil, 200, ""},
			{"/open/x", e.alice, 200, "alice"},
			{"/open/x", e.mallory, 403, ""},
			{"/other", nil, 200, "{http.auth.user.id}"}, // no client_cert_auth here: the placeholder is unknown
		}
		for _, tc := range cases {
			res := do(t, e.goClient(tc.cert), base+tc.path, nil)
			name := "none"
			if tc.cert != nil {
				name = tc.cert.Cert.Subject.CommonName
			}
			if res.status != tc.status {
				t.Fatalf("%s with %s: status %d, want %d (%s)", tc.path, name, res.status, tc.status, res.body)
			}
			if tc.status == 200 && res.upstream.Get("X-Caller") != tc.caller {
				t.Fatalf("%s with %s: upstream saw caller %q, want %q", tc.path, name, res.upstream.Get("X-Caller"), tc.caller)
			}
			if tc.status != 200 && res.body != "" {
				t.Fatalf("%s with %s: error body %q names internals", tc.path, name, res.body)
			}
		}
		res := do(t, e.goClient(e.partner), base+"/a/x", nil)
		if res.upstream.Get("X-Tier") != "gold" || res.upstream.Get("X-Source") != "tls" {
			t.Fatalf("pinned partner: tier %q source %q", res.upstream.Get("X-Tier"), res.upstream.Get("X-Source"))
		}
	})

	t.Run("forward and spoofing", func(t *testing.T) {
		// /a forwards: the upstream sees the caller's own certificate, not
		// the spoofed one, and no spoofed chain.
		res := do(t, e.goClient(e.alice), base+"/a/x", spoof)
		if res.status != 200 || res.upstream.Get("Client-Cert") != rfc9440(e.alice) || res.upstream.Get("Client-Cert-Chain") != "" {
			t.Fatalf("/a: status %d, Client-Cert %q, chain %q", res.status, res.upstream.Get("Client-Cert"), res.upstream.Get("Client-Cert-Chain"))
		}
		// /b does not forward: the upstream sees no Client-Cert at all.
		res = do(t, e.goClient(e.bob), base+"/b/x", spoof)
		if res.status != 200 || res.upstream.Get("Client-Cert") != "" || res.upstream.Get("Client-Cert-Chain") != "" {
			t.Fatalf("/b: status %d, upstream saw Client-Cert %q", res.status, res.upstream.Get("Client-Cert"))
		}
		// No header fallback configured: a header without a TLS certificate
		// is no certificate.
		if res := do(t, e.goClient(nil), base+"/a/x", spoof); res.status != 401 {
			t.Fatalf("header without header fallback: status %d", res.status)
		}
	})

	t.Run("curl", func(t *testing.T) {
		args := []string{"--cacert", e.path("serverca")}
		with := func(name string) []string {
			return append(args, "--cert", e.path(name), "--key", e.path(name+"-key"))
		}
		if res := curl(t, append(with("alice"), base+"/a/x")...); res.status != 200 || res.upstream.Get("X-Caller") != "alice" {
			t.Fatalf("curl alice: %d %q", res.status, res.upstream.Get("X-Caller"))
		}
		if res := curl(t, append(args, base+"/a/x")...); res.status != 401 {
			t.Fatalf("curl without certificate: %d", res.status)
		}
		if res := curl(t, append(with("mallory"), base+"/a/x")...); res.status != 403 {
			t.Fatalf("curl mallory: %d", res.status)
		}
		if res := curl(t, append(with("bob"), base+"/b/x")...); res.status != 200 || res.upstream.Get("X-Caller") != "bob" {
			t.Fatalf("curl bob: %d", res.status)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		// The site's unnamed handlers are numbered in route order, which
		// Caddyfile sorts longest path first: /open/*, /a/*, /b/*.
		series := map[string]string{
			"accepted":  `caddy_mtls_requests_total{handler="client_cert_auth_2",reason="",result="accepted",server="srv0",source="tls"}`,
			"untrusted": `caddy_mtls_requests_total{handler="client_cert_auth_2",reason="untrusted",result="rejected",server="srv0",source="tls"}`,
			"no_cert":   `caddy_mtls_requests_total{handler="client_cert_auth_2",reason="no_cert",result="rejected",server="srv0",source="tls"}`,
		}
		// Its verification cache: a verdict for each request with a
		// certificate, mallory's second from the cache.
		series["hits"] = `caddy_mtls_verify_cache_hits_total{handler="client_cert_auth_2",server="srv0"}`
		series["misses"] = `caddy_mtls_verify_cache_misses_total{handler="client_cert_auth_2",server="srv0"}`
		before := map[string]float64{}
		for k, name := range series {
			before[k] = metricValue(t, c, name)
		}
		do(t, e.goClient(e.alice), base+"/a/x", nil)
		do(t, e.goClient(e.mallory), base+"/a/x", nil)
		do(t, e.goClient(e.mallory), base+"/a/x", nil)
		do(t, e.goClient(nil), base+"/a/x", nil)
		hits, misses := metricValue(t, c, series["hits"])-before["hits"], metricValue(t, c, series["misses"])-before["misses"]
		if hits+misses != 3 || hits < 1 {
			t.Fatalf("verification cache: %v hits and %v misses, want 3 verdicts, mallory's second a hit", hits, misses)
		}
		for k, want := range map[string]float64{"accepted": 1, "untrusted": 2, "no_cert": 1} {
			if got := metricValue(t, c, series[k]) - before[k]; got != want {
				t.Fatalf("%s moved by %v, want %v", series[k], got, want)
			}
		}
		// The test certificates end in about a day.
		for _, name := range []string{`{kind="client",name="partner"}`, `{kind="trust",name="Integration Root"}`} {
			left := metricValue(t, c, "caddy_mtls_certificate_expiry_seconds"+name)
			if left < 20*3600 || left > 25*3600 {
				t.Fatalf("expiry of %s: %v seconds", name, left)
			}
		}
	})

	t.Run("expiry warnings", func(t *testing.T) {
		found := false
		for _, l := range logLines(c, "certificate expires soon") {
			if l["kind"] == "client" && l["name"] == "partner" {
				found = true
			}
		}
		if !found {
			t.Fatal("no warning for the pinned client that ends within 30 days")
		}
	})

	t.Run("logs", func(t *testing.T) {
		mallory := fingerprintHex(e.mallory)
		eventually(t, "refusal log line for mallory", func() error {
			for _, l := range logLines(c, "client certificate refused") {
				if l["reason"] == "untrusted" && l["fingerprint"] == mallory && l["subject"] == "CN=mallory" {
					return nil
				}
			}
			return fmt.Errorf("no refusal line with reason untrusted and fingerprint %s", mallory)
		})
		eventually(t, "access log with user_id", func() error {
			for _, l := range logLines(c, "handled request") {
				if l["user_id"] == "alice" {
					return nil
				}
			}
			return fmt.Errorf("no access log entry with user_id alice")
		})
		for _, secret := range []string{"PRIVATE KEY", string(e.alice.KeyPEM()[30:60])} {
			if strings.Contains(c.Logs(), secret) {
				t.Fatalf("logs contain key material %q", secret)
			}
		}
	})
}

// TestRequireAndVerify: with the site itself verifying (require_and_verify,
// trusting both roots), each route still accepts only its own callers.
func TestRequireAndVerify(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	cfg := fmt.Sprintf(`{
	admin {admin}
	auto_https off
}
https://localhost:%[1]d {
	tls %[2]s %[3]s {
		client_auth {
			mode require_and_verify
			trust_pool file %[4]s %[5]s
		}
	}
	client_cert_auth /a/* {
		trust_pool file %[4]s
	}
	client_cert_auth /b/* {
		trust_pool file %[5]s
	}
	reverse_proxy %[6]s {
		header_up X-Caller {http.auth.user.id}
	}
	handle_errors 401 403 {
		respond `+"`"+`{"error":"{err.status_code}"}`+"`"+`
	}
}
`, port, e.path("server"), e.path("server-key"), e.path("root"), e.path("other"), be.addr)
	startCaddy(t, e, cfg, "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("https://localhost:%d", port)
	for _, tc := range []struct {
		path   string
		cert   *demopki.Cert
		status int
	}{
		{"/a/", e.alice, 200}, {"/a/", e.bob, 403}, {"/b/", e.bob, 200}, {"/b/", e.alice, 403},
	} {
		if res := do(t, e.goClient(tc.cert), base+tc.path, nil); res.status != tc.status {
			t.Fatalf("%s %s: %d, want %d", tc.path, tc.cert.Cert.Subject.CommonName, res.status, tc.status)
		}
	}
	// handle_errors shapes the refusal.
	if res := do(t, e.goClient(e.alice), base+"/b/", nil); res.status != 403 || res.body != `{"error":"403"}` {
		t.Fatalf("handle_errors: %d %q", res.status, res.body)
	}
	// The site refuses the handshake without a certificate.
	if _, err := e.goClient(nil).Get(base + "/a/"); err == nil {
		t.Fatal("handshake without a certificate succeeded under require_and_verify")
	}
}
