package certcodec

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

// FuzzDecode checks that no header value makes the decoder panic, return
// more than MaxCerts certificates, or succeed with nothing; and that what it
// decodes re-encodes to the same bytes (as RFC 9440 and as XFCC). Seeds
// cover every format, Envoy's XFCC, Traefik's comma chain and form-encoded
// ('+' for space) PEM. The seed corpus (testdata/fuzz and
// the values below) runs with every `go test`.
func FuzzDecode(f *testing.F) {
	leaf, inter := testChain(f)
	b64 := base64.StdEncoding.EncodeToString(leaf)
	pemLeaf := pemText(leaf)
	for _, seed := range []string{
		":" + b64 + ":",
		b64,
		pemLeaf,
		strings.ReplaceAll(pemLeaf, "\n", " "),
		url.PathEscape(pemText(leaf, inter)),
		":" + b64 + ":, :" + b64 + ":",
		":" + b64[:10],
		"-----BEGIN CERTIFICATE-----" + base64.StdEncoding.EncodeToString([]byte(pemLeaf)) + "-----END CERTIFICATE-----",
		"%2D%2D%2D%2D%2DBEGIN",
		"",
		// Traefik's comma-separated chain, leaf first.
		b64 + "," + base64.StdEncoding.EncodeToString(inter),
		b64 + ",",
		// URL-encoded PEM with '+' for spaces (java.net.URLEncoder), and
		// with '+' only in the armour.
		javaURLEncode(pemLeaf),
		strings.NewReplacer(" ", "+", "\n", "%0A").Replace(pemLeaf),
		"-----BEGIN+PRIVATE+KEY-----%0AAAAA%0A-----END+PRIVATE+KEY-----",
		// Envoy's x-forwarded-client-cert: two elements, the caller last.
		envoyElement("spiffe://a/b", inter, nil, "CN=front, O=Edge", "spiffe://c/d") + "," +
			envoyElement("spiffe://a/b", leaf, [][]byte{inter}, "CN=codec client", "spiffe://e/f", "x.example", "y.example"),
		`By=spiffe://a;Subject="CN=\"q\";,=";Cert=` + url.PathEscape(pemLeaf),
		`Hash=00;URI="unterminated`,
		"By=a,",
	} {
		f.Add(seed, uint8(Auto))
	}
	f.Fuzz(func(t *testing.T, value string, format uint8) {
		fm := Format(format % uint8(len(formatNames)))
		ders, found, err := Decode(value, fm)
		if err != nil {
			return
		}
		if len(ders) == 0 || len(ders) > MaxCerts {
			t.Fatalf("decoded %d certificates", len(ders))
		}
		if fm != Auto && found != fm {
			t.Fatalf("asked for %v, found %v", fm, found)
		}
		for _, der := range ders {
			if len(der) == 0 {
				t.Fatal("empty certificate")
			}
			again, _, err := Decode(Encode(der, RFC9440), RFC9440)
			if err != nil || !bytes.Equal(again[0], der) {
				t.Fatalf("re-encoding failed: %v", err)
			}
			xfcc := Encode(der, XFCC)
			again, found, err := Decode(xfcc, Auto)
			if err != nil || found != XFCC || len(again) != 1 || !bytes.Equal(again[0], der) {
				t.Fatalf("xfcc re-encoding %.80q: found %v, %v", xfcc, found, err)
			}
		}
		if _, err := DecodeChain(value, fm); err != nil && found == RFC9440 {
			t.Fatalf("a single byte sequence must also be a valid chain list: %v", err)
		}
	})
}

// FuzzParsePEM checks that no PEM text (a pinned client's file, an admin API
// field) makes ParsePEM panic or succeed with nothing, and that the options
// agree: what a strict one accepts, the lenient one accepts alike.
func FuzzParsePEM(f *testing.F) {
	leaf, inter := testChain(f)
	f.Add([]byte(pemText(leaf)))
	f.Add([]byte(pemText(leaf, inter)))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("junk\n" + pemText(leaf) + "junk"))
	f.Add([]byte("not a certificate"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got := map[PEMWant][]*x509.Certificate{}
		for _, want := range []PEMWant{PEMFirst, PEMOne, PEMAll, PEMChain} {
			certs, err := ParsePEM(data, want)
			if err != nil {
				continue
			}
			if len(certs) == 0 || (want == PEMFirst || want == PEMOne) && len(certs) != 1 {
				t.Fatalf("%d: %d certificates", want, len(certs))
			}
			for _, c := range certs {
				if c == nil {
					t.Fatalf("%d: nil certificate without an error", want)
				}
			}
			got[want] = certs
		}
		// What a strict option accepts, a lenient one accepts alike.
		for _, p := range []struct{ strict, lenient PEMWant }{{PEMOne, PEMFirst}, {PEMOne, PEMAll}, {PEMChain, PEMAll}, {PEMAll, PEMFirst}} {
			s, ok := got[p.strict]
			if !ok {
				continue
			}
			if p.lenient == PEMFirst {
				s = s[:1]
			}
			l := got[p.lenient]
			if len(l) != len(s) {
				t.Fatalf("%d accepted %d certificates, %d %d", p.strict, len(s), p.lenient, len(l))
			}
			for i := range s {
				if !bytes.Equal(s[i].Raw, l[i].Raw) {
					t.Fatalf("%d and %d disagree on certificate %d", p.strict, p.lenient, i+1)
				}
			}
		}
	})
}
