package certcodec

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
)

// Fingerprint returns the SHA-256 of DER bytes, lower-case hex, as logs,
// placeholders, metrics and the admin API show certificates.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// Name names a certificate in metrics and logs: its subject's common name,
// else its whole subject.
func Name(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}
