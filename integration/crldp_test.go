package integration

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// TestCRLDistributionPoint: with crl_from_certificates, the CRL named in
// the callers' certificates is fetched from its distribution point; a
// revoked caller is refused, and a CRL changed on the server is in force
// within one refresh.
func TestCRLDistributionPoint(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	crl := filepath.Join(e.dir, "root.crl")
	var hits atomic.Int32
	dp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.ServeFile(w, r, crl)
	}))
	t.Cleanup(dp.Close)
	opts := func(cn string) demopki.Options {
		return demopki.Options{CommonName: cn, CRLDistributionPoints: []string{dp.URL + "/root.crl"}}
	}
	good := demopki.Must(e.root.Issue(opts("dp-good")))
	revoked := demopki.Must(e.root.Issue(opts("dp-revoked")))
	if err := e.root.WriteCRL(crl, time.Now().Add(time.Hour), revoked); err != nil {
		t.Fatal(err)
	}
	c := startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
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
			crl_from_certificates
			mode strict
			crl_timeout 2s
			crl_max_size 1MiB
			crl_cache_size 10
			reload 500ms
		}
	}
	reverse_proxy %[5]s
}
`, port, e.path("server"), e.path("server-key"), e.path("root"), be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("https://localhost:%d/", port)
	if res := do(t, e.goClient(good), base, nil); res.status != 200 {
		t.Fatalf("good caller: %d %s", res.status, res.body)
	}
	if res := do(t, e.goClient(revoked), base, nil); res.status != 403 {
		t.Fatalf("revoked caller: %d", res.status)
	}
	if hits.Load() == 0 {
		t.Fatal("the distribution point was never asked")
	}
	eventually(t, "refusal logged as revoked", func() error {
		for _, l := range logLines(c, "client certificate refused") {
			if l["reason"] == "revoked" && l["fingerprint"] == fingerprintHex(revoked) {
				return nil
			}
		}
		return fmt.Errorf("no log line with reason revoked")
	})

	// The good caller is revoked on the server: refused after the next
	// refresh (reload 500ms).
	if err := e.root.WriteCRL(crl, time.Now().Add(time.Hour), revoked, good); err != nil {
		t.Fatal(err)
	}
	eventually(t, "good caller refused after the CRL changed", func() error {
		if res := doRawE(e.goClient(good), base); res.err != nil || res.status != 403 {
			return fmt.Errorf("status %d %v", res.status, res.err)
		}
		return nil
	})
	eventually(t, "the good caller's refusal logged as revoked", func() error {
		for _, l := range logLines(c, "client certificate refused") {
			if l["reason"] == "revoked" && l["fingerprint"] == fingerprintHex(good) {
				return nil
			}
		}
		return fmt.Errorf("no log line with reason revoked")
	})
}
