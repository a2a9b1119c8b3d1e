package revocation

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/metrics"
)

type fixture struct {
	dir               string
	ca, mid, fakeCA   *demopki.Cert
	good, bad, viaMid *demopki.Cert
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{dir: t.TempDir()}
	f.ca = demopki.Must(demopki.NewCA("Revoking CA"))
	f.fakeCA = demopki.Must(demopki.NewCA("Revoking CA")) // same name, another key
	f.mid = demopki.Must(f.ca.Issue(demopki.Options{CommonName: "Revoking Intermediate", IsCA: true}))
	f.good = demopki.Must(f.ca.Issue(demopki.Options{CommonName: "good"}))
	f.bad = demopki.Must(f.ca.Issue(demopki.Options{CommonName: "bad"}))
	f.viaMid = demopki.Must(f.mid.Issue(demopki.Options{CommonName: "via-mid"}))
	return f
}

func chain(certs ...*demopki.Cert) []*x509.Certificate {
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
	c, err := New(context.Background(), Config{CRLs: []string{crl}}, zap.NewNop())
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
		c, err := New(context.Background(), Config{Mode: tc.mode, CRLs: []string{tc.crl}}, zap.NewNop())
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
	whole, err := New(context.Background(), Config{CRLs: []string{rootCRL, midCRL}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := whole.Check(chain(f.viaMid, f.mid, f.ca), time.Now()); reason != Revoked {
		t.Fatalf("whole chain: %q", reason)
	}
	leaf, err := New(context.Background(), Config{CRLs: []string{rootCRL, midCRL}, LeafOnly: true}, zap.NewNop())
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
	c, err := New(context.Background(), Config{CRLs: []string{srv.URL + "/ca.crl"}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := c.Check(chain(f.bad, f.ca), time.Now()); reason != Revoked {
		t.Fatalf("from URL: %q", reason)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	defer down.Close()
	if _, err := New(context.Background(), Config{CRLs: []string{down.URL}}, zap.NewNop()); err == nil {
		t.Fatal("a CRL URL answering 404 was accepted")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{{Mode: "maybe", CRLs: []string{"x"}}, {}, {CRLs: []string{"/nonexistent.crl"}}} {
		if _, err := New(context.Background(), cfg, zap.NewNop()); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	if c, err := New(context.Background(), Config{Mode: "skip"}, zap.NewNop()); c != nil || err != nil {
		t.Fatalf("skip: %v %v", c, err)
	}
}

// writeCRL writes, as PEM, a CRL signed by ca with the given number and
// dates that revokes the given certificates.
func writeCRL(t *testing.T, path string, ca *demopki.Cert, number int64, thisUpdate, nextUpdate time.Time, revoked ...*demopki.Cert) {
	t.Helper()
	writeCRLAs(t, path, ca.Cert, ca.Key, number, thisUpdate, nextUpdate, revoked...)
}

// writeCRLAs is writeCRL with the issuer's name and key identifier taken
// from issuer and the signature made with key, which may not be issuer's.
func writeCRLAs(t *testing.T, path string, issuer *x509.Certificate, key crypto.Signer, number int64, thisUpdate, nextUpdate time.Time, revoked ...*demopki.Cert) {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: thisUpdate, NextUpdate: nextUpdate}
	for _, r := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: r.Cert.SerialNumber, RevocationTime: thisUpdate,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// counter returns the value of the project's counter name with the given
// labels (0 if it has no such series). Counters are process-wide: compare
// values before and after.
func counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := metrics.Register(ctx); err != nil {
		t.Fatal(err)
	}
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// An attacker on the path to a CRL URL serves an older CRL, validly signed,
// from before a certificate was revoked: it must not replace the newer one.
func TestOlderCRLRefused(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(f.dir, "ca.crl")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, path)
	}))
	defer srv.Close()
	src := srv.URL + "/ca.crl"
	now := time.Now()
	writeCRL(t, path, f.ca, 5, now.Add(-time.Minute), now.Add(time.Hour), f.bad)
	core, logs := observer.New(zap.WarnLevel)
	c, err := New(context.Background(), Config{Mode: "strict", CRLs: []string{src}}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Revoked {
		t.Fatalf("before: %q", reason)
	}
	older := map[string]string{"crl": src, "result": "older"}
	for _, tc := range []struct {
		name       string
		number     int64
		thisUpdate time.Time
	}{
		{"lower number, later thisUpdate", 4, now},
		{"same number, earlier thisUpdate", 5, now.Add(-time.Hour)},
	} {
		writeCRL(t, path, f.ca, tc.number, tc.thisUpdate, tc.thisUpdate.Add(2*time.Hour)) // revokes nothing
		gen, before := c.Generation(), counter(t, "caddy_mtls_crl_updates_total", older)
		logs.TakeAll()
		c.Reload(context.Background())
		if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Revoked {
			t.Errorf("%s: the older CRL un-revoked a certificate (%q)", tc.name, reason)
		}
		if c.Generation() != gen {
			t.Errorf("%s: generation changed", tc.name)
		}
		if got := counter(t, "caddy_mtls_crl_updates_total", older) - before; got != 1 {
			t.Errorf("%s: older CRLs counted %v times", tc.name, got)
		}
		logged := false
		for _, e := range logs.All() {
			if fields := e.ContextMap(); fields["crl"] == src && fields["number"] != nil && fields["number_in_force"] != nil {
				logged = true
			}
		}
		if !logged {
			t.Errorf("%s: refusal not logged with the source and both numbers: %v", tc.name, logs.All())
		}
	}
	// A newer one (same number, later thisUpdate) is taken.
	writeCRL(t, path, f.ca, 5, now, now.Add(time.Hour))
	ok := map[string]string{"crl": src, "result": "ok"}
	before := counter(t, "caddy_mtls_crl_updates_total", ok)
	c.Reload(context.Background())
	if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != "" {
		t.Errorf("the newer CRL was not taken: %q", reason)
	}
	if got := counter(t, "caddy_mtls_crl_updates_total", ok) - before; got != 1 {
		t.Errorf("good reads counted %v times", got)
	}
}

// Two sources of one issuer's CRLs: the newer CRL decides, whichever source
// comes first, and a stale newest CRL is not replaced by an older current
// one.
func TestNewestCRLOfIssuerDecides(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	newer, older := filepath.Join(f.dir, "newer.crl"), filepath.Join(f.dir, "older.crl")
	writeCRL(t, newer, f.ca, 7, now.Add(-time.Minute), now.Add(time.Hour), f.bad)
	writeCRL(t, older, f.ca, 3, now.Add(-2*time.Hour), now.Add(2*time.Hour))
	for i := 0; i < 20; i++ {
		srcs := []string{newer, older}
		if i%2 == 1 {
			srcs = []string{older, newer}
		}
		c, err := New(context.Background(), Config{Mode: "strict", CRLs: srcs}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Revoked {
			t.Fatalf("sources %v: the older CRL decided (%q)", srcs, reason)
		}
	}
	// The newer CRL is past its nextUpdate: the status is unknown, not the
	// older CRL's answer.
	writeCRL(t, newer, f.ca, 7, now.Add(-3*time.Hour), now.Add(-time.Minute), f.bad)
	c, err := New(context.Background(), Config{Mode: "strict", CRLs: []string{older, newer}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Unknown {
		t.Fatalf("stale newest CRL: %q, want %q", reason, Unknown)
	}
}

// A forged CRL with a high number (under the issuer's name and key
// identifier), once it is known not to verify, does not keep the issuer's
// real CRLs out.
func TestForgedCRLDoesNotBlockUpdates(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	path := filepath.Join(f.dir, "ca.crl")
	writeCRL(t, path, f.ca, 2, now.Add(-time.Minute), now.Add(time.Hour), f.bad)
	c, err := New(context.Background(), Config{Mode: "strict", CRLs: []string{path}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	writeCRLAs(t, path, f.ca.Cert, f.fakeCA.Key, 100, now, now.Add(time.Hour))
	c.Reload(context.Background())
	if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Unknown {
		t.Fatalf("forged CRL in force: %q, want %q", reason, Unknown)
	}
	writeCRL(t, path, f.ca, 3, now, now.Add(time.Hour), f.bad)
	c.Reload(context.Background())
	if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Revoked {
		t.Fatalf("the real CRL after a forged one: %q", reason)
	}
}

// Unloading the config cancels the first read of a CRL URL that hangs.
func TestNewCancelled(t *testing.T) {
	got := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-got
		cancel()
	}()
	_, err := New(ctx, Config{CRLs: []string{srv.URL}}, zap.NewNop())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want it to wrap context.Canceled", err)
	}
}

// TestForgedCRLRefusedAtReload: a forged CRL (the issuer's name and key
// identifier, another key, a higher number) read from a source whose CRL
// verified with a known issuer is refused at reload, counted and logged:
// the verified CRL stays in force. Before, the forgery displaced it, and in
// ignore_ca_error mode the revoked caller was let in.
func TestForgedCRLRefusedAtReload(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	path := filepath.Join(f.dir, "ca.crl")
	writeCRL(t, path, f.ca, 2, now.Add(-time.Minute), now.Add(time.Hour), f.bad)
	for _, mode := range []string{"ignore_ca_error", "strict"} {
		writeCRL(t, path, f.ca, 2, now.Add(-time.Minute), now.Add(time.Hour), f.bad)
		core, logs := observer.New(zap.WarnLevel)
		c, err := New(context.Background(), Config{Mode: mode, CRLs: []string{path}}, zap.New(core))
		if err != nil {
			t.Fatal(err)
		}
		if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Revoked {
			t.Fatalf("%s: before: %q", mode, reason)
		}
		rejected := map[string]string{"crl": path, "result": "error"}
		before := counter(t, "caddy_mtls_crl_updates_total", rejected)
		writeCRLAs(t, path, f.ca.Cert, f.fakeCA.Key, 100, now, now.Add(time.Hour))
		gen := c.Generation()
		c.Reload(context.Background())
		if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Revoked {
			t.Fatalf("%s: a forged CRL displaced the verified one: %q", mode, reason)
		}
		if c.Generation() != gen {
			t.Errorf("%s: generation changed", mode)
		}
		if got := counter(t, "caddy_mtls_crl_updates_total", rejected) - before; got != 1 {
			t.Errorf("%s: forged CRL counted %v times as an error", mode, got)
		}
		if len(logs.FilterMessageSnippet("does not verify").All()) == 0 {
			t.Errorf("%s: not logged: %v", mode, logs.All())
		}
		// Nor one under another issuer's name (or the same name encoded
		// otherwise): it would leave the issuer without a CRL in force.
		other := demopki.Must(demopki.NewCA("Some Other CA"))
		writeCRL(t, path, other, 200, now, now.Add(time.Hour))
		c.Reload(context.Background())
		if reason, _ := c.Check(chain(f.bad, f.ca), now); reason != Revoked {
			t.Fatalf("%s: a CRL of another issuer displaced the verified one: %q", mode, reason)
		}
		// The real issuer's next CRL is taken.
		writeCRL(t, path, f.ca, 3, now, now.Add(time.Hour), f.good)
		c.Reload(context.Background())
		if reason, _ := c.Check(chain(f.good, f.ca), now); reason != Revoked {
			t.Fatalf("%s: the real CRL after a forged one: %q", mode, reason)
		}
	}
}
