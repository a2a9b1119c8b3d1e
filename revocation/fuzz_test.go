package revocation

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// FuzzParseCRL checks that no CRL file or answer of a CRL URL makes the
// parser panic, and that a CRL it accepts parses again from its DER to the
// same CRL. The seeds run with every `go test`.
func FuzzParseCRL(f *testing.F) {
	ca := demopki.Must(demopki.NewCA("Fuzz CA"))
	leaf := demopki.Must(ca.Issue(demopki.Options{CommonName: "leaf"}))
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(7), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: leaf.Cert.SerialNumber, RevocationTime: now}},
	}, ca.Cert, ca.Key)
	if err != nil {
		f.Fatal(err)
	}
	pemCRL := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	for _, seed := range [][]byte{
		der,
		pemCRL,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		der[:len(der)/2],
		pemCRL[:len(pemCRL)-30],
		append(append([]byte{}, der...), 0),
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		crl, err := parseCRL(data)
		if err != nil {
			return
		}
		again, err := parseCRL(crl.Raw)
		if err != nil {
			t.Fatalf("an accepted CRL does not parse again from its DER: %v", err)
		}
		if string(again.Raw) != string(crl.Raw) || len(again.RevokedCertificateEntries) != len(crl.RevokedCertificateEntries) {
			t.Fatal("an accepted CRL parses again differently")
		}
	})
}

// FuzzParseOCSP checks that no OCSP response makes the parser panic, and
// that one it accepts is about the certificate asked about, with a known
// status. The seeds run with every `go test`.
func FuzzParseOCSP(f *testing.F) {
	ca := demopki.Must(demopki.NewCA("Fuzz OCSP CA"))
	cert := demopki.Must(ca.Issue(demopki.Options{CommonName: "leaf"}))
	other := demopki.Must(ca.Issue(demopki.Options{CommonName: "other"}))
	now := time.Now()
	for _, status := range []int{ocsp.Good, ocsp.Revoked, ocsp.Unknown} {
		f.Add(ocspResponse(f, ca, cert, status, now.Add(time.Hour)))
	}
	f.Add(ocspResponse(f, ca, cert, ocsp.Good, time.Time{}))
	f.Add(ocspResponse(f, ca, other, ocsp.Good, now.Add(time.Hour)))
	good := ocspResponse(f, ca, cert, ocsp.Good, now.Add(time.Hour))
	f.Add(good[:len(good)/2])
	f.Add(ocsp.InternalErrorErrorResponse)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		answer, err := parseOCSP(body, cert.Cert, ca.Cert, now)
		if err != nil {
			return
		}
		if answer.SerialNumber == nil || answer.SerialNumber.Cmp(cert.Cert.SerialNumber) != 0 {
			t.Fatalf("accepted an answer about serial %v", answer.SerialNumber)
		}
		switch answer.Status {
		case ocsp.Good, ocsp.Revoked, ocsp.Unknown:
		default:
			t.Fatalf("status %d", answer.Status)
		}
		if !answer.NextUpdate.IsZero() && !answer.NextUpdate.After(now) {
			t.Fatal("accepted a stale answer")
		}
	})
}
