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
// in strict mode too, when no chain could be built). Self-signed pinned
// clients have no issuer to ask and pass.
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
		if r := c.Check(leaf.Cert, []*x509.Certificate{mid.Cert}, true, now).Reason; r != Revoked {
			t.Fatalf("%s: with its intermediate: %v, want revoked", mode, r)
		}
		want := OK
		if mode == "strict" {
			want = RevocationUnknown
		}
		if r := c.Check(leaf.Cert, nil, true, now).Reason; r != want {
			t.Fatalf("%s: intermediate left out: %v, want %v", mode, r, want)
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
