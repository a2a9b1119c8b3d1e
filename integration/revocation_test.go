package integration

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// TestCRLRevocation: a caller on the CA's CRL is refused; a CRL changed at
// runtime is in force within the reload interval.
func TestCRLRevocation(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	revoked := demopki.Must(e.root.Issue(demopki.Options{CommonName: "revoked-caller"}))
	crl := filepath.Join(e.dir, "root.crl")
	if err := e.root.WriteCRL(crl, time.Now().Add(time.Hour), revoked); err != nil {
		t.Fatal(err)
	}
	c := startCaddy(t, e, fmt.Sprintf(`{
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
	client_cert_auth {
		trust_pool file %[4]s
		revocation {
			mode strict
			crl %[5]s
			reload 200ms
		}
	}
	reverse_proxy %[6]s
}
`, port, e.path("server"), e.path("server-key"), e.path("root"), crl, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("https://localhost:%d/", port)
	if res := do(t, e.goClient(revoked), base, nil); res.status != 403 {
		t.Fatalf("revoked caller: %d", res.status)
	}
	if res := do(t, e.goClient(e.alice), base, nil); res.status != 200 {
		t.Fatalf("alice: %d", res.status)
	}
	eventually(t, "refusal logged as revoked", func() error {
		for _, l := range logLines(c, "client certificate refused") {
			if l["reason"] == "revoked" && l["fingerprint"] == fingerprintHex(revoked) {
				return nil
			}
		}
		return fmt.Errorf("no log line with reason revoked")
	})
	if n := metricValue(t, c, `caddy_mtls_requests_total{handler="client_cert_auth",reason="revoked",result="rejected",server="srv0",source="tls"}`); n != 1 {
		t.Fatalf("revoked requests counted: %v", n)
	}
	// The CRL in force shows its nextUpdate, an hour after it was written.
	if next := metricValue(t, c, `caddy_mtls_crl_next_update_timestamp_seconds{crl="`+crl+`"}`); next < float64(time.Now().Unix()) || next > float64(time.Now().Add(time.Hour).Unix()) {
		t.Fatalf("nextUpdate of the CRL in force: %v", next)
	}

	// With the events app in the config, a refusal is an event
	// (mtls_request_rejected), which the debug log shows.
	if status, body := adminCall(t, c, http.MethodPut, "/config/apps/events", map[string]any{}); status != 200 {
		t.Fatalf("adding the events app: %d %s", status, body)
	}
	eventually(t, "rejection event", func() error {
		doRawE(e.goClient(revoked), base)
		for _, l := range logLines(c, "event") {
			data, _ := l["data"].(map[string]any)
			if l["name"] == "mtls_request_rejected" && data["reason"] == "revoked" && data["fingerprint"] == fingerprintHex(revoked) {
				if l["origin"] != "http.handlers.client_cert_auth" {
					return fmt.Errorf("event origin %v, want http.handlers.client_cert_auth", l["origin"])
				}
				return nil
			}
		}
		return fmt.Errorf("no mtls_request_rejected event")
	})

	// The reload that added the events app re-provisioned the handler: its
	// expiring trust pool CA (the test's, ending in a day) is an event too.
	eventually(t, "expiry event", func() error {
		for _, l := range logLines(c, "event") {
			data, _ := l["data"].(map[string]any)
			if l["name"] == "mtls_certificate_expiring" && data["kind"] == "trust" && data["name"] == "Integration Root" {
				if l["origin"] != "http.handlers.client_cert_auth" {
					return fmt.Errorf("event origin %v, want http.handlers.client_cert_auth", l["origin"])
				}
				return nil
			}
		}
		return fmt.Errorf("no mtls_certificate_expiring event")
	})

	// Alice is revoked at runtime.
	if err := e.root.WriteCRL(crl, time.Now().Add(time.Hour), revoked, e.alice); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice refused after the CRL changed", func() error {
		if res := doRawE(e.goClient(e.alice), base); res.err != nil || res.status != 403 {
			return fmt.Errorf("status %d %v", res.status, res.err)
		}
		return nil
	})
}

// TestEventOrigin: events of a client_cert_auth handler name it as their
// origin, also inside a handle block with handlers after it (Caddy's
// module context there is shared with the next handler's).
func TestEventOrigin(t *testing.T) {
	e := newEnv(t)
	port := freePort(t)
	c := startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
	log {
		level DEBUG
	}
}
http://:%[1]d {
	bind 127.0.0.1
	handle /api/* {
		route {
			client_cert_auth {
				trust_pool file %[2]s
			}
			reverse_proxy 127.0.0.1:9 {
				lb_policy first
				health_uri /health
			}
		}
	}
	handle {
		header X-Other other
		respond "other"
	}
}
`, port, e.path("root")), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	if status, body := adminCall(t, c, http.MethodPut, "/config/apps/events", map[string]any{}); status != 200 {
		t.Fatalf("adding the events app: %d %s", status, body)
	}
	eventually(t, "rejection event", func() error {
		if res := doRawE(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/api/x", port)); res.status != http.StatusUnauthorized {
			return fmt.Errorf("status %d %v", res.status, res.err)
		}
		for _, l := range logLines(c, "event") {
			if l["name"] == "mtls_request_rejected" {
				if l["origin"] != "http.handlers.client_cert_auth" {
					return fmt.Errorf("event origin %v, want http.handlers.client_cert_auth", l["origin"])
				}
				return nil
			}
		}
		return fmt.Errorf("no mtls_request_rejected event")
	})
}
