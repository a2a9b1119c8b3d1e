package demopki

import (
	"crypto/x509"
	"os"
	"time"

	jks "github.com/pavlo-v-chernykh/keystore-go/v4"
	"software.sslmate.com/src/go-pkcs12"
)

// WriteP12 writes the certificate, its key and its chain as a PKCS#12 file.
func (c *Cert) WriteP12(path, password string) error {
	var cas []*x509.Certificate
	for i := c.Issuer; i != nil && i.Issuer != nil; i = i.Issuer {
		cas = append(cas, i.Cert)
	}
	data, err := pkcs12.Modern.Encode(c.Key, c.Cert, cas, password)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// WriteTrustP12 writes certificates as a PKCS#12 trust store.
func WriteTrustP12(path, password string, certs ...*Cert) error {
	var list []*x509.Certificate
	for _, c := range certs {
		list = append(list, c.Cert)
	}
	data, err := pkcs12.Modern.EncodeTrustStore(list, password)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// JKSEntry is an entry of a Java KeyStore to write: a key pair when Key is
// true, a trusted certificate otherwise.
type JKSEntry struct {
	Alias string
	Cert  *Cert
	Key   bool
}

// WriteJKS writes a Java KeyStore; key entries are protected by keyPassword.
func WriteJKS(path, password, keyPassword string, entries ...JKSEntry) error {
	ks := jks.New()
	for _, e := range entries {
		if !e.Key {
			err := ks.SetTrustedCertificateEntry(e.Alias, jks.TrustedCertificateEntry{
				CreationTime: time.Now(),
				Certificate:  jks.Certificate{Type: "X509", Content: e.Cert.Cert.Raw},
			})
			if err != nil {
				return err
			}
			continue
		}
		der, err := x509.MarshalPKCS8PrivateKey(e.Cert.Key)
		if err != nil {
			return err
		}
		chain := []jks.Certificate{{Type: "X509", Content: e.Cert.Cert.Raw}}
		for i := e.Cert.Issuer; i != nil && i.Issuer != nil; i = i.Issuer {
			chain = append(chain, jks.Certificate{Type: "X509", Content: i.Cert.Raw})
		}
		err = ks.SetPrivateKeyEntry(e.Alias, jks.PrivateKeyEntry{
			CreationTime:     time.Now(),
			PrivateKey:       der,
			CertificateChain: chain,
		}, []byte(keyPassword))
		if err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := ks.Store(f, []byte(password)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
