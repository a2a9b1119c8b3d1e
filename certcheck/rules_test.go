package certcheck

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/revocation"
)

// TestPinnedRevocationNoDodge: a pinned client issued under an
// intermediate, revoked by the intermediate's CRL, cannot pass by leaving
// the intermediate out of what it sends (review finding: it was accepted,
// in strict mode too, when no chain could be built): strict mode refuses
// what it cannot tell, and once the intermediate is known (a CRL in force
// verified with it), it is the leaf's issuer in every mode. Self-signed
// pinned clients have no issuer to ask and pass.
func TestPinnedRevocationNoDodge(t *testing.T) {
	dir := t.TempDir()
	root := demopki.Must(demopki.NewCA("root"))
	mid := demopki.Must(root.Issue(demopki.Options{CommonName: "mid", IsCA: true}))
	leaf := demopki.Must(mid.Issue(demopki.Options{CommonName: "partner"}))
	self := demopki.Must(demopki.SelfSigned(demopki.Options{CommonName: "self"}))
	crl := filepath.Join(dir, "mid.crl")
	if err := mid.WriteCRL(crl, time.Now().Add(time.Hour), leaf); err != nil {
		t.Fatal(err)
	}
	rootPath, _, err := root.WriteFiles(dir, "root")
	if err != nil {
		t.Fatal(err)
	}
	pemData, err := os.ReadFile(rootPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"strict", "ignore_ca_error"} {
		rc, err := revocation.New(context.Background(), revocation.Config{Mode: mode, CRLs: []string{crl}}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		c := &Checker{Roots: poolOf(t, pemData), Revocation: rc}
		now := time.Now()
		// The intermediate never seen: the status cannot be told.
		want := OK
		if mode == "strict" {
			want = RevocationUnknown
		}
		if r := c.Check(leaf.Cert, nil, true, now).Reason; r != want {
			t.Fatalf("%s: intermediate never seen, left out: %v, want %v", mode, r, want)
		}
		if r := c.Check(leaf.Cert, []*x509.Certificate{mid.Cert}, true, now).Reason; r != Revoked {
			t.Fatalf("%s: with its intermediate: %v, want revoked", mode, r)
		}
		// Once seen (its CRL verified with it), the intermediate tells the
		// leaf's issuer whether or not the leaf is sent with it.
		if r := c.Check(leaf.Cert, nil, true, now).Reason; r != Revoked {
			t.Fatalf("%s: intermediate known, left out: %v, want revoked", mode, r)
		}
		if r := c.Check(self.Cert, nil, true, now).Reason; r != OK {
			t.Fatalf("%s: self-signed pinned: %v", mode, r)
		}
	}
}

func poolOf(t *testing.T, pemData []byte) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		t.Fatal("no certificates")
	}
	return pool
}
