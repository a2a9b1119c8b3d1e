package certcodec

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// FuzzDecode checks that no header value makes the decoder panic, return
// more than MaxCerts certificates, or succeed with nothing; and that what it
// decodes re-encodes to the same bytes (as RFC 9440 and as XFCC). Seeds
// cover every format, Envoy's XFCC, Traefik's comma chain (plain and
// URL-escaped, as before v2.9.2), HAProxy's concatenated chain DER and
// form-encoded ('+' for space) PEM. The value is decoded as a chain too,
// with the same bounds. The seed corpus (testdata/fuzz and the values
// below) runs with every `go test`.
func FuzzDecode(f *testing.F) {
	leaf, inter := testChain(f)
	b64 := base64.StdEncoding.EncodeToString(leaf)
	pemLeaf := testpeer.PEM(leaf)
	for _, seed := range []string{
		":" + b64 + ":",
		b64,
		pemLeaf,
		strings.ReplaceAll(pemLeaf, "\n", " "),
		url.PathEscape(testpeer.PEM(leaf, inter)),
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
		testpeer.JavaURLEncode(pemLeaf),
		strings.NewReplacer(" ", "+", "\n", "%0A").Replace(pemLeaf),
		"-----BEGIN+PRIVATE+KEY-----%0AAAAA%0A-----END+PRIVATE+KEY-----",
		// Envoy's x-forwarded-client-cert: two elements, the caller last.
		testpeer.Envoy{By: "spiffe://a/b", Cert: true, Subject: true, URI: true}.Element(inter, nil, "CN=front, O=Edge", []string{"spiffe://c/d"}, nil) + "," +
			testpeer.Envoy{By: "spiffe://a/b", Cert: true, Chain: true, Subject: true, URI: true, DNS: true}.Element(leaf, [][]byte{inter}, "CN=codec client", []string{"spiffe://e/f"}, []string{"x.example", "y.example"}),
		// Two and three elements that each match their Cert, as Caddy
		// forwards them; then one whose DNS value is cut at a ','.
		Encode(inter, XFCC) + "," + Encode(leaf, XFCC),
		Encode(leaf, XFCC) + ", " + Encode(inter, XFCC) + "," + Encode(leaf, XFCC),
		Encode(inter, XFCC) + ";DNS=x," + Encode(leaf, XFCC),
		// A value that ends in '\' inside a quote (a last SAN `"\`).
		Encode(leaf, XFCC) + `,x="\`,
		`By=spiffe://a;Subject="CN=\"q\";,=";Cert=` + url.PathEscape(pemLeaf),
		`Hash=00;URI="unterminated`,
		"By=a,",
		// Traefik before v2.9.2: each item's base64 url.QueryEscape'd, in
		// upper- and lower-case hex, and escapes it must refuse.
		url.QueryEscape(b64) + "," + url.QueryEscape(base64.StdEncoding.EncodeToString(inter)),
		strings.NewReplacer("%2B", "%2b", "%2F", "%2f", "%3D", "%3d").Replace(url.QueryEscape(b64)),
		"MIIB%2B%2F%3D",
		"MIIB%41AAA",
		"MIIB+%2BAA",
		"MIIB%2",
		"MIIB%%2B",
		// HAProxy %[ssl_c_chain_der,base64]: DER back to back, whole, cut,
		// with junk after, and more than MaxCerts.
		base64.StdEncoding.EncodeToString(append(append([]byte{}, inter...), leaf...)),
		base64.StdEncoding.EncodeToString(append(append([]byte{}, inter...), leaf[:len(leaf)/2]...)),
		base64.StdEncoding.EncodeToString(append(append([]byte{}, inter...), "junk"...)),
		base64.StdEncoding.EncodeToString(bytes.Repeat(inter, MaxCerts+1)),
		base64.StdEncoding.EncodeToString([]byte{0x30, 0x00, 0x30, 0x81, 0x01, 0x00, 0x30, 0x03}),
		url.QueryEscape(base64.StdEncoding.EncodeToString(append(append([]byte{}, inter...), leaf...))),
		// HAProxy's chain field when the client sent no intermediates.
		" ",
	} {
		f.Add(seed, uint8(Auto))
	}
	f.Add(base64.StdEncoding.EncodeToString(append(append([]byte{}, inter...), leaf...)), uint8(Base64DER))
	f.Add(url.QueryEscape(b64), uint8(Base64DER))
	f.Fuzz(func(t *testing.T, value string, format uint8) {
		fm := Format(format % uint8(len(formatNames)))
		chain, chainErr := DecodeChain(value, fm)
		if chainErr == nil {
			if len(chain) == 0 || len(chain) > MaxCerts {
				t.Fatalf("decoded a chain of %d certificates", len(chain))
			}
			for _, der := range chain {
				if len(der) == 0 {
					t.Fatal("empty certificate in a chain")
				}
			}
		}
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
		if found == XFCC {
			// The caller is the last element: read alone, it says the same.
			// And the elements are those the grammar makes, whole.
			commas, closed := xfccCommas(value)
			if elems, err := splitXFCC(value); err != nil || !closed || len(elems) != commas+1 {
				t.Fatalf("decoded, but splits into %d elements (%v), the grammar into %d (quotes closed: %v)", len(elems), err, commas+1, closed)
			} else if alone, _, err := Decode(elems[len(elems)-1], XFCC); err != nil || len(alone) != len(ders) || !bytes.Equal(alone[0], ders[0]) {
				t.Fatalf("the last element alone decodes otherwise: %v", err)
			}
		}
		if chainErr != nil && found == RFC9440 {
			t.Fatalf("a single byte sequence must also be a valid chain list: %v", chainErr)
		}
		if found == Base64DER {
			// A chain splits the field's items, never reads them otherwise:
			// joined, its certificates are the field's.
			if chainErr != nil {
				if !errors.Is(chainErr, ErrTooMany) {
					t.Fatalf("base64_der value read as a field but not as a chain: %v", chainErr)
				}
			} else if !bytes.Equal(bytes.Join(chain, nil), bytes.Join(ders, nil)) {
				t.Fatal("base64_der value read differently as a field and as a chain")
			}
		}
	})
}

// xfccCommas counts the ',' of v outside quoted values, reading the XFCC
// grammar on its own: a quoted value runs from a '"' to the next '"' that
// no '\' escapes. closed is false when a quote is left open.
func xfccCommas(v string) (commas int, closed bool) {
	const outside, quoted, escaped = 0, 1, 2
	state := outside
	for i := 0; i < len(v); i++ {
		switch c := v[i]; state {
		case outside:
			if c == '"' {
				state = quoted
			} else if c == ',' {
				commas++
			}
		case quoted:
			if c == '\\' {
				state = escaped
			} else if c == '"' {
				state = outside
			}
		case escaped:
			state = quoted
		}
	}
	return commas, state == outside
}

// FuzzParsePEM checks that no PEM text (a pinned client's file, an admin API
// field) makes ParsePEM panic or succeed with nothing, and that the options
// agree: what a strict one accepts, the lenient one accepts alike.
func FuzzParsePEM(f *testing.F) {
	leaf, inter := testChain(f)
	f.Add([]byte(testpeer.PEM(leaf)))
	f.Add([]byte(testpeer.PEM(leaf, inter)))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("junk\n" + testpeer.PEM(leaf) + "junk"))
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

// FuzzParseHeader checks ParseHeader on a certificate field and one chain
// field: no panic, at most MaxCerts certificates, each parsed, the leaf the
// one Decode finds; an empty chain field (HAProxy's, when the client sent
// no intermediates) the same as none.
func FuzzParseHeader(f *testing.F) {
	leaf, inter := testChain(f)
	b64 := base64.StdEncoding.EncodeToString
	both := append(append([]byte{}, inter...), inter...)
	for _, seed := range [][2]string{
		{b64(leaf), ""},
		{b64(leaf), " "},
		{b64(leaf), b64(inter)},
		{b64(leaf), b64(both)},
		{b64(leaf), b64(both) + "," + b64(inter)},
		{b64(leaf), b64(bytes.Repeat(inter, MaxCerts))},
		{b64(leaf), b64(append(append([]byte{}, inter...), "junk"...))},
		{url.QueryEscape(b64(leaf)), url.QueryEscape(b64(both))},
		{":" + b64(leaf) + ":", ":" + b64(inter) + ":, :" + b64(inter) + ":"},
		{":" + b64(leaf) + ":", ":" + b64(both) + ":"},
		{"", ""},
	} {
		f.Add(seed[0], seed[1], uint8(Auto))
	}
	fields := HeaderFields{Cert: "C", Chain: "CC"}
	f.Fuzz(func(t *testing.T, value, chain string, format uint8) {
		fm := Format(format % uint8(len(formatNames)))
		certs, _, err := ParseHeader(value, []string{chain}, fm, fields)
		if err != nil {
			var he *HeaderError
			if !errors.As(err, &he) {
				t.Fatalf("error %v is no HeaderError", err)
			}
			return
		}
		if len(certs) == 0 || len(certs) > MaxCerts {
			t.Fatalf("parsed %d certificates", len(certs))
		}
		for _, c := range certs {
			if c == nil {
				t.Fatal("nil certificate without an error")
			}
		}
		ders, _, err := Decode(value, fm)
		if err != nil || !bytes.Equal(ders[0], certs[0].Raw) {
			t.Fatalf("ParseHeader's leaf is not Decode's: %v", err)
		}
		if trimOWS(chain) == "" {
			alone, _, err := ParseHeader(value, nil, fm, fields)
			if err != nil || len(alone) != len(certs) {
				t.Fatalf("an empty chain field is not the same as none: %d, %d certificates, %v", len(alone), len(certs), err)
			}
		}
	})
}
