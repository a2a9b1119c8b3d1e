package mtlscmd

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"strings"
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

// TestUploadKeepsKeyLocal: an upload to an admin endpoint that is neither
// loopback nor a unix socket is refused before the key file is read or
// anything is sent (the admin API is plain HTTP), unless
// --send-key-in-clear; loopback and unix socket addresses pass the check.
func TestUploadKeepsKeyLocal(t *testing.T) {
	for addr, local := range map[string]bool{
		"localhost:2019":              true,
		"LOCALHOST:2019":              true,
		"127.0.0.1:2019":              true,
		"127.8.9.1:2019":              true,
		"[::1]:2019":                  true,
		"unix//run/caddy/admin.sock":  true,
		"192.0.2.10:2019":             false,
		"[2001:db8::1]:2019":          false,
		"admin.example.internal:2019": false,
		"0.0.0.0:2019":                true,
		"[::]:2019":                   true,
		":2019":                       true,
		"[::ffff:127.0.0.1]:2019":     true,
		"localhost.:2019":             false,
		"10.0.0.1:2019":               false,
	} {
		err := (&adminClient{addr: addr}).keepsKeyLocal()
		if (err == nil) != local {
			t.Errorf("%s: %v", addr, err)
		}
	}
	// Through the command: refused with a usage error, the key file (which
	// does not exist) never read.
	dir := t.TempDir()
	c := demopki.Must(demopki.SelfSigned(demopki.Options{CommonName: "upload"}))
	certPath, _, err := c.WriteFiles(dir, "gw")
	if err != nil {
		t.Fatal(err)
	}
	cmd := keyPairsCommand()
	cmd.SetArgs([]string{"upload", "gw", certPath, dir + "/no-such-key.pem", "--address", "192.0.2.10:2019"})
	var stderr strings.Builder
	cmd.SetOut(io.Discard)
	cmd.SetErr(&stderr)
	err = cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "exiting with status 2") || !strings.Contains(stderr.String(), "in clear") || strings.Contains(stderr.String(), "no-such-key") {
		t.Fatalf("upload to 192.0.2.10: %v, %q", err, stderr.String())
	}
}
