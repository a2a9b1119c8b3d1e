package revocation

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// dpServer serves, at /<name>.crl, the file <dir>/<name>.crl, and counts
// the requests.
type dpServer struct {
	*httptest.Server
	dir  string
	hits atomic.Int32
}

func newDPServer(t *testing.T, dir string) *dpServer {
	s := &dpServer{dir: dir}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		http.ServeFile(w, r, filepath.Join(dir, filepath.Base(r.URL.Path)))
	}))
	t.Cleanup(s.Close)
	return s
}

// dpFixture is a CA whose certificates name a CRL distribution point on a
// local server.
type dpFixture struct {
	dir       string
	srv       *dpServer
	ca        *demopki.Cert
	good, bad *demopki.Cert
	crl       string // the file the distribution point serves
}

func newDPFixture(t *testing.T) *dpFixture {
	f := &dpFixture{dir: t.TempDir()}
	f.srv = newDPServer(t, f.dir)
	f.crl = filepath.Join(f.dir, "ca.crl")
	dp := []string{"ldap://ldap.example/cn=CA?certificateRevocationList", f.srv.URL + "/ca.crl"}
	f.ca = demopki.Must(demopki.NewCA("DP CA"))
	f.good = demopki.Must(f.ca.Issue(demopki.Options{CommonName: "good", CRLDistributionPoints: dp}))
	f.bad = demopki.Must(f.ca.Issue(demopki.Options{CommonName: "bad", CRLDistributionPoints: dp}))
	return f
}

func newDPChecker(t *testing.T, cfg Config) *Checker {
	t.Helper()
	cfg.CRLFromCertificates = true
	c, err := New(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A CRL from the certificate's distribution point revokes; it is fetched
// once and kept.
func TestDPRevoked(t *testing.T) {
	f := newDPFixture(t)
	next := time.Now().Add(time.Hour)
	writeCRL(t, f.crl, f.ca, 1, time.Now().Add(-time.Minute), next, f.bad)
	c := newDPChecker(t, Config{Mode: "strict"})
	now := time.Now()
	for i := 0; i < 3; i++ {
		if reason, until := c.Check(chain(f.bad, f.ca), now); reason != Revoked || until.Sub(next).Abs() > time.Second {
			t.Fatalf("revoked: %q until %v", reason, until)
		}
		if reason, _ := c.Check(chain(f.good, f.ca), now); reason != "" {
			t.Fatalf("good: %q", reason)
		}
	}
	if n := f.srv.hits.Load(); n != 1 {
		t.Fatalf("the distribution point was asked %d times, want 1", n)
	}
}

// A certificate with no http(s) distribution point has no CRL this way.
func TestDPNone(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("DP CA"))
	ldapOnly := demopki.Must(ca.Issue(demopki.Options{CommonName: "ldap", CRLDistributionPoints: []string{"ldap://ldap.example/cn=CA"}}))
	none := demopki.Must(ca.Issue(demopki.Options{CommonName: "none"}))
	for _, cert := range []*demopki.Cert{ldapOnly, none} {
		if reason, _ := newDPChecker(t, Config{Mode: "strict"}).Check(chain(cert, ca), time.Now()); reason != Unknown {
			t.Errorf("%s, strict: %q", cert.Cert.Subject.CommonName, reason)
		}
		if reason, _ := newDPChecker(t, Config{}).Check(chain(cert, ca), time.Now()); reason != "" {
			t.Errorf("%s, ignore_ca_error: %q", cert.Cert.Subject.CommonName, reason)
		}
	}
}

// A distribution point that cannot be read: the status is unknown, and it
// is not asked again before unknown_cache has passed.
func TestDPServerDown(t *testing.T) {
	for _, tc := range []struct {
		mode, want string
	}{{"strict", Unknown}, {"ignore_ca_error", ""}} {
		f := newDPFixture(t) // no CRL file: the server answers 404
		c := newDPChecker(t, Config{Mode: tc.mode, UnknownCache: caddy.Duration(time.Minute)})
		now := time.Now()
		for i := 0; i < 3; i++ {
			reason, until := c.Check(chain(f.good, f.ca), now)
			if reason != tc.want {
				t.Fatalf("%s: %q, want %q", tc.mode, reason, tc.want)
			}
			if until.IsZero() || until.After(now.Add(time.Minute)) {
				t.Fatalf("%s: an unknown status holds until %v", tc.mode, until)
			}
		}
		if n := f.srv.hits.Load(); n != 1 {
			t.Fatalf("%s: asked %d times, want 1", tc.mode, n)
		}
		// After unknown_cache, it is asked again, and now it answers.
		writeCRL(t, f.crl, f.ca, 1, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), f.good)
		gen := c.Generation()
		if reason, _ := c.Check(chain(f.good, f.ca), now.Add(2*time.Minute)); reason != Revoked {
			t.Fatalf("%s: after the server came back: %q", tc.mode, reason)
		}
		if c.Generation() == gen {
			t.Fatalf("%s: generation did not change with a new CRL", tc.mode)
		}
	}
}

// A distribution point that hangs delays a check by crl_timeout at most,
// and concurrent checks make one request.
func TestDPServerHangs(t *testing.T) {
	f := newDPFixture(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		<-r.Context().Done()
	}))
	defer srv.Close()
	cert := demopki.Must(f.ca.Issue(demopki.Options{CommonName: "hanging", CRLDistributionPoints: []string{srv.URL + "/ca.crl"}}))
	c := newDPChecker(t, Config{Mode: "strict", CRLTimeout: caddy.Duration(200 * time.Millisecond), UnknownCache: caddy.Duration(time.Hour)})
	reasons := make([]string, 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for i := range reasons {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reasons[i], _ = c.Check(chain(cert, f.ca), time.Now())
			}()
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("checks hang with the distribution point")
	}
	for i, r := range reasons {
		if r != Unknown {
			t.Errorf("check %d: %q", i, r)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("the distribution point was asked %d times, want 1", n)
	}
}

// The CRL changes on the server: the next refresh puts it in force, with a
// new generation; until then the cached one serves.
func TestDPRefresh(t *testing.T) {
	f := newDPFixture(t)
	now := time.Now()
	writeCRL(t, f.crl, f.ca, 1, now.Add(-time.Minute), now.Add(time.Hour), f.bad)
	c := newDPChecker(t, Config{Mode: "strict"})
	if reason, _ := c.Check(chain(f.good, f.ca), now); reason != "" {
		t.Fatalf("good: %q", reason)
	}
	writeCRL(t, f.crl, f.ca, 2, now, now.Add(time.Hour), f.bad, f.good)
	if reason, _ := c.Check(chain(f.good, f.ca), now); reason != "" {
		t.Fatalf("good before the refresh: %q", reason)
	}
	gen := c.Generation()
	c.refreshDP(context.Background(), time.Now(), false) // not due yet
	if reason, _ := c.Check(chain(f.good, f.ca), now); reason != "" || c.Generation() != gen {
		t.Fatalf("refreshed before it was due: %q", reason)
	}
	c.refreshDP(context.Background(), time.Now().Add(time.Hour), false) // due
	if reason, _ := c.Check(chain(f.good, f.ca), now); reason != Revoked {
		t.Fatalf("good after the refresh: %q", reason)
	}
	if c.Generation() == gen {
		t.Fatal("generation did not change")
	}
	// reload refreshes too; a server now down keeps the CRL in force.
	if err := os.Remove(f.crl); err != nil {
		t.Fatal(err)
	}
	c.Reload(context.Background())
	if reason, _ := c.Check(chain(f.good, f.ca), now); reason != Revoked {
		t.Fatalf("after a failed refresh: %q", reason)
	}
	// Past its nextUpdate, the status is unknown.
	if reason, _ := c.Check(chain(f.good, f.ca), now.Add(2*time.Hour)); reason != Unknown {
		t.Fatalf("stale CRL: %q", reason)
	}
}

// Watch refreshes a CRL before its nextUpdate, and stops with its context.
func TestDPWatch(t *testing.T) {
	f := newDPFixture(t)
	now := time.Now()
	writeCRL(t, f.crl, f.ca, 1, now.Add(-time.Minute), now.Add(2*time.Second))
	c := newDPChecker(t, Config{Mode: "strict"})
	if reason, _ := c.Check(chain(f.good, f.ca), now); reason != "" {
		t.Fatalf("good: %q", reason)
	}
	writeCRL(t, f.crl, f.ca, 2, now, now.Add(time.Hour), f.good)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c.Watch(ctx)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if reason, _ := c.Check(chain(f.good, f.ca), time.Now()); reason == Revoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the CRL was not refreshed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Watch did not stop with its context")
	}
}

// When a refresh is due: at the reload interval, or before the CRL's
// nextUpdate if that is sooner, but not in a busy loop.
func TestDPDue(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name       string
		nextUpdate time.Time
		reload     time.Duration
		wantMin    time.Duration
		wantMax    time.Duration
	}{
		{"reload sooner", now.Add(24 * time.Hour), time.Hour, time.Hour, time.Hour},
		{"nextUpdate sooner", now.Add(10 * time.Minute), time.Hour, 8 * time.Minute, 10*time.Minute - time.Second},
		{"no nextUpdate", time.Time{}, time.Hour, time.Hour, time.Hour},
		{"nearly stale", now.Add(10 * time.Millisecond), time.Hour, dpMinRefresh, dpMinRefresh},
		{"stale", now.Add(-time.Minute), time.Hour, dpMinRefresh, dpMinRefresh},
	} {
		got := dpDue(now, &x509.RevocationList{NextUpdate: tc.nextUpdate}, tc.reload).Sub(now)
		if got < tc.wantMin || got > tc.wantMax {
			t.Errorf("%s: due in %v, want %v to %v", tc.name, got, tc.wantMin, tc.wantMax)
		}
	}
}

// An older CRL served at the distribution point does not replace the one
// in force.
func TestDPOlderRefused(t *testing.T) {
	f := newDPFixture(t)
	now := time.Now()
	writeCRL(t, f.crl, f.ca, 5, now.Add(-time.Minute), now.Add(time.Hour), f.bad)
	c := newDPChecker(t, Config{Mode: "strict"})
	if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Revoked {
		t.Fatalf("before: %q", reason)
	}
	older := map[string]string{"crl": f.srv.URL + "/ca.crl", "result": "older"}
	before := counter(t, "caddy_mtls_crl_updates_total", older)
	writeCRL(t, f.crl, f.ca, 4, now, now.Add(2*time.Hour)) // revokes nothing
	gen := c.Generation()
	c.Reload(context.Background())
	if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Revoked {
		t.Fatalf("the older CRL un-revoked a certificate (%q)", reason)
	}
	if c.Generation() != gen {
		t.Fatal("generation changed")
	}
	if got := counter(t, "caddy_mtls_crl_updates_total", older) - before; got != 1 {
		t.Fatalf("older CRLs counted %v times", got)
	}
}

// A CRL not signed by the issuer of the chain, one of another issuer, and
// one larger than crl_max_size are not used.
func TestDPRefusedCRLs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(f *dpFixture)
		cfg   Config
	}{
		{"forged", func(f *dpFixture) {
			fake := demopki.Must(demopki.NewCA("DP CA"))
			writeCRLAs(t, f.crl, f.ca.Cert, fake.Key, 1, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
		}, Config{Mode: "strict"}},
		{"another issuer", func(f *dpFixture) {
			other := demopki.Must(demopki.NewCA("Other CA"))
			writeCRL(t, f.crl, other, 1, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
		}, Config{Mode: "strict"}},
		{"too large", func(f *dpFixture) {
			writeCRL(t, f.crl, f.ca, 1, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
		}, Config{Mode: "strict", CRLMaxSize: 64}},
		{"stale", func(f *dpFixture) {
			writeCRL(t, f.crl, f.ca, 1, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
		}, Config{Mode: "strict"}},
	} {
		f := newDPFixture(t)
		tc.write(f)
		c := newDPChecker(t, tc.cfg)
		if reason, _ := c.Check(chain(f.good, f.ca), time.Now()); reason != Unknown {
			t.Errorf("%s: %q, want %q", tc.name, reason, Unknown)
		}
	}
}

// At most crl_cache_size CRLs are kept; one evicted is fetched again.
func TestDPCacheBound(t *testing.T) {
	dir := t.TempDir()
	srv := newDPServer(t, dir)
	type issuer struct{ ca, leaf *demopki.Cert }
	var issuers []issuer
	for _, name := range []string{"a", "b", "c"} {
		ca := demopki.Must(demopki.NewCA("CA " + name))
		leaf := demopki.Must(ca.Issue(demopki.Options{CommonName: name, CRLDistributionPoints: []string{srv.URL + "/" + name + ".crl"}}))
		writeCRL(t, filepath.Join(dir, name+".crl"), ca, 1, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), leaf)
		issuers = append(issuers, issuer{ca, leaf})
	}
	c := newDPChecker(t, Config{Mode: "strict", CRLCacheSize: 2})
	for round := 0; round < 2; round++ {
		for _, is := range issuers {
			if reason, _ := c.Check(chain(is.leaf, is.ca), time.Now()); reason != Revoked {
				t.Fatalf("%s: %q", is.leaf.Cert.Subject.CommonName, reason)
			}
			if n := c.dp.len(); n > 2 {
				t.Fatalf("%d CRLs kept, want at most 2", n)
			}
		}
	}
	if n := srv.hits.Load(); n != 6 {
		t.Fatalf("asked %d times, want 6 (each CRL evicted before it is used again)", n)
	}
}

// Configured CRLs of an issuer come first: its distribution point is not
// asked.
func TestDPConfiguredFirst(t *testing.T) {
	f := newDPFixture(t)
	writeCRL(t, f.crl, f.ca, 1, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), f.bad)
	configured := filepath.Join(t.TempDir(), "configured.crl")
	writeCRL(t, configured, f.ca, 1, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	c := newDPChecker(t, Config{Mode: "strict", CRLs: []string{configured}})
	if reason, _ := c.Check(chain(f.bad, f.ca), time.Now()); reason != "" {
		t.Fatalf("the distribution point's CRL decided: %q", reason)
	}
	if n := f.srv.hits.Load(); n != 0 {
		t.Fatalf("the distribution point was asked %d times", n)
	}
}

func TestDPConfig(t *testing.T) {
	if c, err := New(context.Background(), Config{CRLFromCertificates: true}, zap.NewNop()); c == nil || err != nil {
		t.Fatalf("crl_from_certificates alone: %v", err)
	}
	for _, cfg := range []Config{
		{CRLFromCertificates: true, CRLMaxSize: -1},
		{CRLFromCertificates: true, CRLCacheSize: -1},
		{CRLFromCertificates: true, CRLTimeout: -1},
	} {
		if _, err := New(context.Background(), cfg, zap.NewNop()); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
