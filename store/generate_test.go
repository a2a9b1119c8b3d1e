package store

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// TestGenerateSubjectAndSANs: the subject fields and subject alternative
// names of the request are in the certificate, which is for client
// authentication and not a CA's.
func TestGenerateSubjectAndSANs(t *testing.T) {
	certPEM, _, err := Generate(GenerateRequest{
		CommonName: "gateway", Organization: "Acme", OrganizationalUnit: "Payments", Country: "lk",
		Province: "Western", Locality: "Colombo",
		DNSNames: []string{"gw.example.org", "*.gw.example.org"}, IPAddresses: []string{"192.0.2.7", "2001:db8::1"},
		URIs: []string{"spiffe://example.org/gateway"}, Emails: []string{"ops@example.org"}, ValidityDays: 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(certPEM))
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Subject.String(), "CN=gateway,OU=Payments,O=Acme,L=Colombo,ST=Western,C=LK"; got != want {
		t.Errorf("subject %s, want %s", got, want)
	}
	if got := strings.Join(c.DNSNames, " "); got != "gw.example.org *.gw.example.org" {
		t.Errorf("DNS names %s", got)
	}
	if len(c.IPAddresses) != 2 || c.IPAddresses[0].String() != "192.0.2.7" || c.IPAddresses[1].String() != "2001:db8::1" {
		t.Errorf("IP addresses %v", c.IPAddresses)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org/gateway" {
		t.Errorf("URIs %v", c.URIs)
	}
	if len(c.EmailAddresses) != 1 || c.EmailAddresses[0] != "ops@example.org" {
		t.Errorf("emails %v", c.EmailAddresses)
	}
	if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("extended key usages %v, want clientAuth alone", c.ExtKeyUsage)
	}
	if !c.BasicConstraintsValid || c.IsCA {
		t.Errorf("basic constraints valid %v, CA %v: want CA:FALSE", c.BasicConstraintsValid, c.IsCA)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %v, want digitalSignature", c.KeyUsage)
	}
	if d := c.NotAfter.Sub(c.NotBefore).Hours() / 24; d < 30 || d > 30.01 {
		t.Errorf("validity %.2f days", d)
	}

	// The common name alone: no other subject field, no SAN.
	certPEM, _, err = Generate(GenerateRequest{CommonName: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	block, _ = pem.Decode([]byte(certPEM))
	c, _ = x509.ParseCertificate(block.Bytes)
	if c.Subject.String() != "CN=plain" || len(c.DNSNames)+len(c.IPAddresses)+len(c.URIs)+len(c.EmailAddresses) != 0 || c.IsCA {
		t.Errorf("plain: subject %s, SANs %v %v %v %v", c.Subject, c.DNSNames, c.IPAddresses, c.URIs, c.EmailAddresses)
	}
}

func TestGenerateBadInput(t *testing.T) {
	for name, req := range map[string]GenerateRequest{
		"country of three letters":  {CommonName: "x", Country: "LKA"},
		"country of digits":         {CommonName: "x", Country: "12"},
		"organization too long":     {CommonName: "x", Organization: strings.Repeat("o", 65)},
		"unit with newline":         {CommonName: "x", OrganizationalUnit: "a\nb"},
		"province too long":         {CommonName: "x", Province: strings.Repeat("p", 129)},
		"locality with NUL":         {CommonName: "x", Locality: "a\x00"},
		"common name with newline":  {CommonName: "a\nb"},
		"bad IP":                    {CommonName: "x", IPAddresses: []string{"192.0.2.300"}},
		"IP with zone":              {CommonName: "x", IPAddresses: []string{"fe80::1%eth0"}},
		"relative URI":              {CommonName: "x", URIs: []string{"/gateway"}},
		"URI that does not parse":   {CommonName: "x", URIs: []string{"http://a b/"}},
		"bad DNS name":              {CommonName: "x", DNSNames: []string{"a..b"}},
		"DNS name with space":       {CommonName: "x", DNSNames: []string{"a b.example"}},
		"bad email":                 {CommonName: "x", Emails: []string{"not-an-email"}},
		"email with name":           {CommonName: "x", Emails: []string{"Ops <ops@example.org>"}},
		"too many DNS names":        {CommonName: "x", DNSNames: make([]string, maxSANs+1)},
		"negative validity":         {CommonName: "x", ValidityDays: -1},
		"validity over 3650 days":   {CommonName: "x", ValidityDays: 3651},
		"unknown key type":          {CommonName: "x", KeyType: "ed448"},
		"no common name but others": {Organization: "Acme"},
	} {
		var input *InputError
		if _, _, err := Generate(req); !errors.As(err, &input) {
			t.Errorf("%s: %v, want an InputError", name, err)
		}
	}
	for _, days := range []int{1, 3650} {
		if _, _, err := Generate(GenerateRequest{CommonName: "x", ValidityDays: days}); err != nil {
			t.Errorf("%d days: %v", days, err)
		}
	}
}

// TestPutKeyPairDER: an uploaded certificate may be base64 of DER (no
// -----BEGIN line); it is stored as PEM. Text that is neither is refused.
func TestPutKeyPairDER(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("DER CA"))
	c := demopki.Must(ca.Issue(demopki.Options{CommonName: "der-client"}))
	b64 := base64.StdEncoding.EncodeToString(c.Cert.Raw)
	// Wrapped in lines, as base64 tools write it.
	var wrapped strings.Builder
	for i := 0; i < len(b64); i += 64 {
		wrapped.WriteString(b64[i:min(i+64, len(b64))] + "\r\n")
	}
	info, err := s.PutKeyPair(ctx, "der", wrapped.String(), string(c.KeyPEM()), false)
	if err != nil {
		t.Fatal(err)
	}
	if info.Subject != "CN=der-client" {
		t.Fatalf("info %+v", info)
	}
	kp, err := s.KeyPair(ctx, "der")
	if err != nil {
		t.Fatal(err)
	}
	if kp.Certificate != string(c.CertPEM()) {
		t.Fatalf("stored certificate\n%s\nwant\n%s", kp.Certificate, c.CertPEM())
	}
	for name, cert := range map[string]string{
		"not base64":          "this is not a certificate!",
		"base64 of no DER":    base64.StdEncoding.EncodeToString([]byte("hello")),
		"base64 of a DER key": base64.StdEncoding.EncodeToString(c.Cert.RawSubjectPublicKeyInfo),
	} {
		var input *InputError
		if _, err := s.PutKeyPair(ctx, "bad", cert, string(c.KeyPEM()), false); !errors.As(err, &input) {
			t.Errorf("%s: %v, want an InputError", name, err)
		}
	}
}
