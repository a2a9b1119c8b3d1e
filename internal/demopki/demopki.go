// Package demopki makes throwaway certificate authorities and certificates
// for the demo (caddy mtls keygen --demo), tests and benchmarks. Nothing it
// makes is fit for production.
package demopki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Cert is a certificate with its private key and the certificate that issued
// it (nil for a self-signed one).
type Cert struct {
	Cert   *x509.Certificate
	Key    crypto.Signer
	Issuer *Cert
}

// Options describe a certificate to make. Zero values take sensible defaults:
// valid from an hour ago for a day, client-auth EKU for a leaf.
type Options struct {
	CommonName   string
	Organization string
	NotBefore    time.Time
	NotAfter     time.Time
	// ExtKeyUsage defaults to client and server auth for a leaf. Set NoEKU to
	// make a leaf with no EKU extension at all.
	ExtKeyUsage []x509.ExtKeyUsage
	NoEKU       bool
	// KeyUsage replaces the default key usage (certificate signing for a
	// CA, digital signature for a leaf) when not zero.
	KeyUsage    x509.KeyUsage
	IsCA        bool
	DNSNames    []string
	IPAddresses []net.IP
	URIs        []string
	// RawURIs are URI SANs written byte for byte, after DNSNames, where
	// Go's url package would escape or refuse them: what a careless or
	// hostile CA may sign. With RawURIs set, URIs and Emails are not used.
	RawURIs []string
	Emails  []string
	// RSABits makes the certificate's key RSA of that size; the default
	// is ECDSA P-256.
	RSABits int
	// Key, if set, is the certificate's key instead of a new one (a
	// cross-signed CA shares its other certificate's).
	Key crypto.Signer
	// OCSPServer is the certificate's OCSP responder (AIA).
	OCSPServer []string
	// CRLDistributionPoints are the URLs of the certificate's CRL
	// distribution points.
	CRLDistributionPoints []string
}

// NewCA makes a self-signed root CA.
func NewCA(cn string) (*Cert, error) {
	return newCert(Options{CommonName: cn, IsCA: true}, nil)
}

// SelfSigned makes a self-signed leaf certificate.
func SelfSigned(opts Options) (*Cert, error) {
	return newCert(opts, nil)
}

// Issue makes a certificate signed by c.
func (c *Cert) Issue(opts Options) (*Cert, error) {
	return newCert(opts, c)
}

func newCert(opts Options, issuer *Cert) (*Cert, error) {
	key, err := opts.Key, error(nil)
	switch {
	case key != nil:
	case opts.RSABits > 0:
		key, err = rsa.GenerateKey(rand.Reader, opts.RSABits)
	default:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName},
		NotBefore:             opts.NotBefore,
		NotAfter:              opts.NotAfter,
		DNSNames:              opts.DNSNames,
		IPAddresses:           opts.IPAddresses,
		EmailAddresses:        opts.Emails,
		OCSPServer:            opts.OCSPServer,
		CRLDistributionPoints: opts.CRLDistributionPoints,
	}
	if opts.Organization != "" {
		tmpl.Subject.Organization = []string{opts.Organization}
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(24 * time.Hour)
	}
	for _, u := range opts.URIs {
		parsed, err := url.Parse(u)
		if err != nil {
			return nil, err
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	if opts.RawURIs != nil {
		ext, err := SANExtension(opts.DNSNames, opts.RawURIs)
		if err != nil {
			return nil, err
		}
		tmpl.DNSNames, tmpl.URIs, tmpl.EmailAddresses = nil, nil, nil
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
	}
	if opts.IsCA {
		tmpl.IsCA = true
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		switch {
		case opts.NoEKU:
		case len(opts.ExtKeyUsage) > 0:
			tmpl.ExtKeyUsage = opts.ExtKeyUsage
		default:
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
		}
	}
	if opts.KeyUsage != 0 {
		tmpl.KeyUsage = opts.KeyUsage
	}
	parent, signer := tmpl, crypto.Signer(key)
	if issuer != nil {
		parent, signer = issuer.Cert, issuer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Cert{Cert: cert, Key: key, Issuer: issuer}, nil
}

// SANExtension is a subjectAltName extension of dNSName [2] and
// uniformResourceIdentifier [6] names, in that order, each byte for byte as
// given, whether Go's parser would take it or not.
func SANExtension(dns, uris []string) (pkix.Extension, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, d := range dns {
			b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(d)) })
		}
		for _, u := range uris {
			b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
		}
	})
	der, err := b.Bytes()
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: der}, nil
}

// CertPEM returns the certificate as PEM.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// ChainPEM returns the certificate followed by its issuers, roots excluded.
func (c *Cert) ChainPEM() []byte {
	out := c.CertPEM()
	for i := c.Issuer; i != nil && i.Issuer != nil; i = i.Issuer {
		out = append(out, i.CertPEM()...)
	}
	return out
}

// KeyPEM returns the private key as PKCS#8 PEM.
func (c *Cert) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic(err) // an ECDSA or RSA key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// TLSCertificate returns the certificate and its key, with intermediates, for
// a tls.Config.
func (c *Cert) TLSCertificate() tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for i := c.Issuer; i != nil && i.Issuer != nil; i = i.Issuer {
		tc.Certificate = append(tc.Certificate, i.Cert.Raw)
	}
	return tc
}

// Pool returns a pool holding the given certificates.
func Pool(certs ...*Cert) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.Cert)
	}
	return p
}

// WriteFiles writes name.pem (the certificate chain) and name-key.pem into
// dir and returns their paths.
func (c *Cert) WriteFiles(dir, name string) (certPath, keyPath string, err error) {
	certPath = filepath.Join(dir, name+".pem")
	keyPath = filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certPath, c.ChainPEM(), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyPath, c.KeyPEM(), 0o600); err != nil {
		return "", "", err
	}
	if err := os.Chmod(keyPath, 0o600); err != nil { // WriteFile keeps an old file's mode
		return "", "", err
	}
	return certPath, keyPath, nil
}

// Must returns c, and panics on err: for tests and benchmarks, where any
// error here is a broken test.
func Must(c *Cert, err error) *Cert {
	if err != nil {
		panic(err)
	}
	return c
}

// WriteCRL writes, as PEM, a CRL signed by c that revokes the given
// certificates and is current until nextUpdate.
func (c *Cert) WriteCRL(path string, nextUpdate time.Time, revoked ...*Cert) error {
	thisUpdate := time.Now().Add(-time.Minute)
	if !nextUpdate.After(thisUpdate) { // a stale CRL, for tests
		thisUpdate = nextUpdate.Add(-time.Hour)
	}
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(time.Now().UnixNano()),
		ThisUpdate: thisUpdate,
		NextUpdate: nextUpdate,
	}
	for _, r := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: r.Cert.SerialNumber, RevocationTime: time.Now().Add(-time.Minute),
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, c.Cert, c.Key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644)
}
