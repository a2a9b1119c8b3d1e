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
	"strings"
	"time"
)

// GenerateRequest describes a self-signed key pair to make.
type GenerateRequest struct {
	CommonName   string `json:"common_name"`
	Organization string `json:"organization,omitempty"`
	ValidityDays int    `json:"validity_days,omitempty"` // default 365
	KeyType      string `json:"key_type,omitempty"`      // p256 (default), p384, rsa2048, rsa3072, rsa4096
}

// Generate makes a self-signed client key pair (PEM certificate and PKCS#8
// key) as the request describes.
func Generate(req GenerateRequest) (certPEM, keyPEM string, err error) {
	if req.CommonName == "" || len(req.CommonName) > 64 || strings.ContainsAny(req.CommonName, "\x00\r\n") {
		return "", "", inputErrorf("common_name is required: 1 to 64 characters")
	}
	if len(req.Organization) > 64 {
		return "", "", inputErrorf("organization: at most 64 characters")
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
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.CommonName},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(time.Duration(days) * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if req.Organization != "" {
		tmpl.Subject.Organization = []string{req.Organization}
	}
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
