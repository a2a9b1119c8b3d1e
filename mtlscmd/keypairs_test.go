package mtlscmd

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// TestDERFiles: a DER certificate or key file is sent PEM-encoded; a PEM
// one as it is; anything else is refused.
func TestDERFiles(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("CLI CA"))
	c := demopki.Must(ca.Issue(demopki.Options{CommonName: "cli"}))
	for in, want := range map[string]string{string(c.Cert.Raw): string(c.CertPEM()), string(c.CertPEM()): string(c.CertPEM())} {
		if got, err := certificateAsPEM(in); err != nil || got != want {
			t.Errorf("certificate: %q, %v", got, err)
		}
	}
	if _, err := certificateAsPEM("garbage"); err == nil {
		t.Error("garbage certificate accepted")
	}
	pkcs8 := must(x509.MarshalPKCS8PrivateKey(c.Key))
	sec1 := must(x509.MarshalECPrivateKey(c.Key.(*ecdsa.PrivateKey)))
	for der, typ := range map[string]string{string(pkcs8): "PRIVATE KEY", string(sec1): "EC PRIVATE KEY"} {
		got, err := keyAsPEM(der)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := pem.Decode([]byte(got)); b == nil || b.Type != typ || string(b.Bytes) != der {
			t.Errorf("key as %s: %q", typ, got)
		}
	}
	if got, err := keyAsPEM(string(c.KeyPEM())); err != nil || got != string(c.KeyPEM()) {
		t.Errorf("PEM key: %q, %v", got, err)
	}
	if _, err := keyAsPEM(string(c.Cert.Raw)); err == nil {
		t.Error("a certificate accepted as a key")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestSubjectFlags: the flags fill the request; --state is --province.
func TestSubjectFlags(t *testing.T) {
	cmd := keygenCommand()
	if err := cmd.ParseFlags([]string{"--org", "Acme", "--ou", "Pay", "--country", "LK", "--state", "Western", "--locality", "Colombo",
		"--dns", "a.example", "--dns", "b.example", "--ip", "192.0.2.1", "--uri", "spiffe://x/y", "--email", "o@example.org"}); err != nil {
		t.Fatal(err)
	}
	var req store.GenerateRequest
	if err := subjectFromFlags(cmd, &req); err != nil {
		t.Fatal(err)
	}
	if req.Organization != "Acme" || req.OrganizationalUnit != "Pay" || req.Country != "LK" || req.Province != "Western" || req.Locality != "Colombo" ||
		len(req.DNSNames) != 2 || req.IPAddresses[0] != "192.0.2.1" || req.URIs[0] != "spiffe://x/y" || req.Emails[0] != "o@example.org" {
		t.Fatalf("request %+v", req)
	}
	cmd = keygenCommand()
	if err := cmd.ParseFlags([]string{"--province", "A", "--state", "B"}); err != nil {
		t.Fatal(err)
	}
	if err := subjectFromFlags(cmd, &req); err == nil {
		t.Fatal("--province and --state that differ accepted")
	}
}
