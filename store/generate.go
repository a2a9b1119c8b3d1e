package store

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// GenerateRequest describes a self-signed key pair to make: its subject
// (common name required, the others optional), its subject alternative
// names, its validity and its key type.
type GenerateRequest struct {
	CommonName         string   `json:"common_name"`
	Organization       string   `json:"organization,omitempty"`
	OrganizationalUnit string   `json:"organizational_unit,omitempty"`
	Country            string   `json:"country,omitempty"` // two letters, ISO 3166
	Province           string   `json:"province,omitempty"`
	Locality           string   `json:"locality,omitempty"`
	DNSNames           []string `json:"dns_names,omitempty"`
	IPAddresses        []string `json:"ip_addresses,omitempty"`
	URIs               []string `json:"uris,omitempty"`
	Emails             []string `json:"emails,omitempty"`
	ValidityDays       int      `json:"validity_days,omitempty"` // default 365, at most 3650
	KeyType            string   `json:"key_type,omitempty"`      // p256 (default), p384, rsa2048, rsa3072, rsa4096
}

// Empty reports whether no field of the request is given.
func (r *GenerateRequest) Empty() bool {
	return r.CommonName == "" && r.Organization == "" && r.OrganizationalUnit == "" && r.Country == "" &&
		r.Province == "" && r.Locality == "" && len(r.DNSNames) == 0 && len(r.IPAddresses) == 0 &&
		len(r.URIs) == 0 && len(r.Emails) == 0 && r.ValidityDays == 0 && r.KeyType == ""
}

// maxSANs bounds each list of subject alternative names of a request.
const maxSANs = 100

// subjectAndSANs checks the request's subject fields and subject
// alternative names and sets them in tmpl.
func (r *GenerateRequest) subjectAndSANs(tmpl *x509.Certificate) error {
	if r.CommonName == "" || len(r.CommonName) > 64 || !printable(r.CommonName) {
		return inputErrorf("common_name is required: 1 to 64 characters")
	}
	tmpl.Subject = pkix.Name{CommonName: r.CommonName}
	for _, f := range []struct {
		name, value string
		max         int
		into        *[]string
	}{
		{"organization", r.Organization, 64, &tmpl.Subject.Organization},
		{"organizational_unit", r.OrganizationalUnit, 64, &tmpl.Subject.OrganizationalUnit},
		{"province", r.Province, 128, &tmpl.Subject.Province},
		{"locality", r.Locality, 128, &tmpl.Subject.Locality},
	} {
		if f.value == "" {
			continue
		}
		if len(f.value) > f.max || !printable(f.value) {
			return inputErrorf("%s: at most %d characters, no control characters", f.name, f.max)
		}
		*f.into = []string{f.value}
	}
	if r.Country != "" {
		if len(r.Country) != 2 || !isLetter(r.Country[0]) || !isLetter(r.Country[1]) {
			return inputErrorf("country %.20q: want a two-letter ISO 3166 code, such as US", r.Country)
		}
		tmpl.Subject.Country = []string{strings.ToUpper(r.Country)}
	}
	for _, l := range []struct {
		name string
		n    int
	}{{"dns_names", len(r.DNSNames)}, {"ip_addresses", len(r.IPAddresses)}, {"uris", len(r.URIs)}, {"emails", len(r.Emails)}} {
		if l.n > maxSANs {
			return inputErrorf("%s: at most %d", l.name, maxSANs)
		}
	}
	for _, d := range r.DNSNames {
		if !validDNSName(d) {
			return inputErrorf("dns_names: %.270q is not a DNS name", d)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, d)
	}
	for _, s := range r.IPAddresses {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return inputErrorf("ip_addresses: %.64q is not an IP address", s)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	for _, s := range r.URIs {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" || len(s) > 2048 || !printable(s) || (u.Host == "" && u.Opaque == "") {
			return inputErrorf("uris: %.270q is not an absolute URI (such as spiffe://example.org/gateway)", s)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	for _, s := range r.Emails {
		a, err := mail.ParseAddress(s)
		if err != nil || a.Address != s || a.Name != "" || len(s) > 254 {
			return inputErrorf("emails: %.270q is not an email address (give it alone, as name@example.org)", s)
		}
		tmpl.EmailAddresses = append(tmpl.EmailAddresses, s)
	}
	return nil
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// printable reports whether s is UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// validDNSName reports whether s is a DNS name (letters, digits, '-' and
// '_' in labels of 1 to 63), optionally with a leading "*." wildcard.
func validDNSName(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isLetter(c) && !('0' <= c && c <= '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// Generate makes a self-signed client key pair (PEM certificate and PKCS#8
// key) as the request describes. The certificate is for client
// authentication (extended key usage clientAuth, key usage
// digitalSignature, and keyEncipherment for RSA) and not a CA's
// (basic constraints CA:FALSE).
func Generate(req GenerateRequest) (certPEM, keyPEM string, err error) {
	tmpl := &x509.Certificate{
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, // and IsCA false: CA:FALSE
	}
	if err := req.subjectAndSANs(tmpl); err != nil {
		return "", "", err
	}
	days := req.ValidityDays
	switch {
	case days == 0:
		days = 365
	case days < 1 || days > 3650:
		return "", "", inputErrorf("validity_days %d: want 1 to 3650", days)
	}
	var key crypto.Signer
	switch req.KeyType {
	case "", "p256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa2048", "rsa3072", "rsa4096":
		bits := map[string]int{"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}[req.KeyType]
		key, err = rsa.GenerateKey(rand.Reader, bits)
	default:
		return "", "", inputErrorf("unknown key_type %q: want p256, p384, rsa2048, rsa3072 or rsa4096", req.KeyType)
	}
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-5 * time.Minute)
	tmpl.NotAfter = now.Add(time.Duration(days) * 24 * time.Hour)
	if _, ok := key.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})), nil
}

// GenerateKeyPair makes a self-signed key pair and stores it as name (see
// PutKeyPair for replace).
func (s *Store) GenerateKeyPair(ctx context.Context, name string, req GenerateRequest, replace bool) (KeyPairInfo, error) {
	if err := CheckName(name); err != nil {
		return KeyPairInfo{}, err
	}
	certPEM, keyPEM, err := Generate(req)
	if err != nil {
		return KeyPairInfo{}, err
	}
	return s.PutKeyPair(ctx, name, certPEM, keyPEM, replace)
}

// KeyTypeOf names a certificate's key type as the API does.
func KeyTypeOf(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "p256"
		case elliptic.P384():
			return "p384"
		case elliptic.P521():
			return "p521"
		}
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	}
	return strings.ToLower(c.PublicKeyAlgorithm.String())
}
