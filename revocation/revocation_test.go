package revocation

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/testpki"
)

type fixture struct {
	dir               string
	ca, mid, fakeCA   *testpki.Cert
	good, bad, viaMid *testpki.Cert
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{dir: t.TempDir()}
	f.ca = testpki.Must(testpki.NewCA("Revoking CA"))
	f.fakeCA = testpki.Must(testpki.NewCA("Revoking CA")) // same name, another key
	f.mid = testpki.Must(f.ca.Issue(testpki.Options{CommonName: "Revoking Intermediate", IsCA: true}))
	f.good = testpki.Must(f.ca.Issue(testpki.Options{CommonName: "good"}))
	f.bad = testpki.Must(f.ca.Issue(testpki.Options{CommonName: "bad"}))
	f.viaMid = testpki.Must(f.mid.Issue(testpki.Options{CommonName: "via-mid"}))
	return f
}

func chain(certs ...*testpki.Cert) []*x509.Certificate {
	out := make([]*x509.Certificate, len(certs))
	for i, c := range certs {
		out[i] = c.Cert
	}
	return out
}

func TestRevokedAndReload(t *testing.T) {
	f := newFixture(t)
	crl := filepath.Join(f.dir, "ca.crl")
	next := time.Now().Add(time.Hour)
	if err := f.ca.WriteCRL(crl, next, f.bad); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{CRLs: []string{crl}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if reason, until := c.Check(chain(f.bad, f.ca), now); reason != Revoked || until.Sub(next).Abs() > time.Second {
		t.Fatalf("revoked: %q until %v", reason, until)
	}
	if reason, _ := c.Check(chain(f.good, f.ca), now); reason != "" {
		t.Fatalf("good: %q", reason)
	}
	// A new CRL revoking good too: in force after a reload, with a new
	// generation.
	gen := c.Generation()
	if err := f.ca.WriteCRL(crl, next, f.bad, f.good); err != nil {
		t.Fatal(err)
	}
	c.Reload(context.Background())
	if c.Generation() == gen {
		t.Fatal("generation did not change")
	}
	if reason, _ := c.Check(chain(f.good, f.ca), now); reason != Revoked {
		t.Fatalf("good after the new CRL: %q", reason)
	}
	// An unreadable CRL keeps the last one.
	if err := os.WriteFile(crl, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Reload(context.Background())
	if reason, _ := c.Check(chain(f.good, f.ca), now); reason != Revoked {
		t.Fatalf("after a broken CRL: %q", reason)
	}
}

func TestUnknownStatus(t *testing.T) {
	f := newFixture(t)
	forged := filepath.Join(f.dir, "forged.crl")
	// Signed with another key under the CA's name: its signature does not
	// verify, so it is not used.
	if err := f.fakeCA.WriteCRL(forged, time.Now().Add(time.Hour), f.good); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(f.dir, "stale.crl")
	if err := f.mid.WriteCRL(stale, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode  string
		crl   string
		chain []*x509.Certificate
		want  string
	}{
		{"ignore_ca_error", forged, chain(f.good, f.ca), ""},
		{"strict", forged, chain(f.good, f.ca), Unknown},
		{"strict", stale, chain(f.viaMid, f.mid, f.ca), Unknown},
		{"ignore_ca_error", stale, chain(f.viaMid, f.mid, f.ca), ""},
	} {
		c, err := New(Config{Mode: tc.mode, CRLs: []string{tc.crl}}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		if reason, _ := c.Check(tc.chain, time.Now()); reason != tc.want {
			t.Errorf("%s with %s: %q, want %q", tc.mode, filepath.Base(tc.crl), reason, tc.want)
		}
	}
}

func TestLeafOnlyAndChain(t *testing.T) {
	f := newFixture(t)
	// The root's CRL revokes the intermediate; the intermediate's CRL is
	// clean.
	rootCRL, midCRL := filepath.Join(f.dir, "root.crl"), filepath.Join(f.dir, "mid.crl")
	if err := f.ca.WriteCRL(rootCRL, time.Now().Add(time.Hour), f.mid); err != nil {
		t.Fatal(err)
	}
	if err := f.mid.WriteCRL(midCRL, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	whole, err := New(Config{CRLs: []string{rootCRL, midCRL}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := whole.Check(chain(f.viaMid, f.mid, f.ca), time.Now()); reason != Revoked {
		t.Fatalf("whole chain: %q", reason)
	}
	leaf, err := New(Config{CRLs: []string{rootCRL, midCRL}, LeafOnly: true}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := leaf.Check(chain(f.viaMid, f.mid, f.ca), time.Now()); reason != "" {
		t.Fatalf("leaf only: %q", reason)
	}
}

func TestCRLFromURL(t *testing.T) {
	f := newFixture(t)
	crl := filepath.Join(f.dir, "ca.crl")
	if err := f.ca.WriteCRL(crl, time.Now().Add(time.Hour), f.bad); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, crl)
	}))
	defer srv.Close()
	c, err := New(Config{CRLs: []string{srv.URL + "/ca.crl"}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := c.Check(chain(f.bad, f.ca), time.Now()); reason != Revoked {
		t.Fatalf("from URL: %q", reason)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	defer down.Close()
	if _, err := New(Config{CRLs: []string{down.URL}}, zap.NewNop()); err == nil {
		t.Fatal("a CRL URL answering 404 was accepted")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{{Mode: "maybe", CRLs: []string{"x"}}, {}, {CRLs: []string{"/nonexistent.crl"}}} {
		if _, err := New(cfg, zap.NewNop()); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	if c, err := New(Config{Mode: "skip"}, zap.NewNop()); c != nil || err != nil {
		t.Fatalf("skip: %v %v", c, err)
	}
}
