package certcodec

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// errParse stands, in the tables, for an error that names a certificate that
// does not parse.
var errParse = errors.New("a certificate that does not parse")

func TestParsePEM(t *testing.T) {
	leaf, inter := testChain(t)
	L, I := testpeer.PEM(leaf), testpeer.PEM(inter)
	K := string(demopki.Must(demopki.NewCA("key holder")).KeyPEM())
	B := testpeer.PEM([]byte("not a certificate"))
	// Each option's result: how many certificates (leaf first, then inter),
	// or the error.
	tests := []struct {
		name                   string
		data                   string
		first, one, all, chain any
	}{
		{"one certificate", L, 1, 1, 1, 1},
		{"a chain", L + I, 1, ErrPEMMoreThanOne, 2, 2},
		{"key, then certificate", K + L, 1, ErrNoPEMCertificate, 1, ErrPEMNotOnlyCerts},
		{"certificate, then key", L + K, 1, ErrPEMMoreThanOne, 1, ErrPEMNotOnlyCerts},
		{"key only", K, ErrNoPEMCertificate, ErrNoPEMCertificate, ErrNoPEMCertificate, ErrPEMNotOnlyCerts},
		{"text before, white space after", "subject=CN=x\n" + L + "\n\t \n", 1, 1, 1, 1},
		{"text after", L + "junk\n", 1, ErrPEMMoreThanOne, 1, ErrPEMTrailingData},
		{"text between blocks", L + "junk\n" + I, 1, ErrPEMMoreThanOne, 2, 2},
		{"not PEM", "not a certificate", ErrNoPEMCertificate, ErrNoPEMCertificate, ErrNoPEMCertificate, ErrPEMTrailingData},
		{"DER", string(leaf), ErrNoPEMCertificate, ErrNoPEMCertificate, ErrNoPEMCertificate, ErrPEMTrailingData},
		{"empty", "", ErrNoPEMCertificate, ErrNoPEMCertificate, ErrNoPEMCertificate, ErrNoPEMCertificate},
		{"a block that does not parse", B, errParse, errParse, errParse, errParse},
		{"a second block that does not parse", L + B, 1, ErrPEMMoreThanOne, errParse, errParse},
	}
	for _, tc := range tests {
		for want, result := range map[PEMWant]any{PEMFirst: tc.first, PEMOne: tc.one, PEMAll: tc.all, PEMChain: tc.chain} {
			certs, err := ParsePEM([]byte(tc.data), want)
			switch result := result.(type) {
			case int:
				if err != nil || len(certs) != result {
					t.Fatalf("%s, want %d: %d certificates, %v; want %d", tc.name, want, len(certs), err, result)
				}
				for i, der := range [][]byte{leaf, inter}[:result] {
					if !bytes.Equal(certs[i].Raw, der) {
						t.Fatalf("%s, want %d: certificate %d is not the one given", tc.name, want, i+1)
					}
				}
			case error:
				if result == errParse {
					if err == nil || !strings.HasPrefix(err.Error(), "parsing certificate") {
						t.Fatalf("%s, want %d: error %v, want a parse error", tc.name, want, err)
					}
				} else if !errors.Is(err, result) {
					t.Fatalf("%s, want %d: error %v, want %v", tc.name, want, err, result)
				}
			}
		}
	}

	// The texts the store's InputErrors and the README show.
	if _, err := ParsePEM([]byte(L+K), PEMChain); err == nil || err.Error() != `a "PRIVATE KEY" PEM block where only certificates may be` {
		t.Fatalf("key in a chain: %v", err)
	}
	if _, err := ParsePEM([]byte(L+B), PEMAll); err == nil || !strings.HasPrefix(err.Error(), "parsing certificate 2: ") {
		t.Fatalf("second certificate does not parse: %v", err)
	}
	if _, err := ParsePEM([]byte(L), PEMChain+1); err == nil {
		t.Fatal("an unknown PEMWant accepted")
	}
}

func TestParseHeader(t *testing.T) {
	leaf, inter := testChain(t)
	fields := HeaderFields{Cert: "X-Client-Cert", Chain: "X-Client-Chain"}
	list := func(n int) string { // an RFC 9440 list of n intermediates
		return strings.TrimSuffix(strings.Repeat(Encode(inter, RFC9440)+", ", n), ", ")
	}
	junk := base64.StdEncoding.EncodeToString([]byte("not a certificate"))
	concat := func(n int) string { // base64 of n intermediates' DER, concatenated
		return base64.StdEncoding.EncodeToString(bytes.Repeat(inter, n))
	}
	tests := []struct {
		name  string
		value string
		chain []string
		n     int    // certificates, on success
		found Format // the format found, on success
		err   error  // the reason, on failure
		field string // the field named, on failure
		cert  int    // the certificate named, on a parse failure
	}{
		{"leaf", Encode(leaf, RFC9440), nil, 1, RFC9440, nil, "", 0},
		{"leaf and chain", Encode(leaf, Base64DER), []string{list(1)}, 2, Base64DER, nil, "", 0},
		{"pem with its chain, and a chain field", testpeer.PEM(leaf, inter), []string{list(1)}, 3, PEM, nil, "", 0},
		{"chain in several fields", Encode(leaf, URLPEM), []string{list(2), list(3)}, 6, URLPEM, nil, "", 0},
		{"MaxCerts in all", Encode(leaf, RFC9440), []string{list(MaxCerts - 1)}, MaxCerts, RFC9440, nil, "", 0},
		{"MaxCerts+1 in one chain field", Encode(leaf, RFC9440), []string{list(MaxCerts)}, 0, 0, ErrTooMany, fields.Chain, 0},
		{"MaxCerts+1 across chain fields", Encode(leaf, RFC9440), []string{list(5), list(5)}, 0, 0, ErrTooMany, fields.Chain, 0},
		{"MaxCerts+1 in the certificate field", strings.Repeat(testpeer.PEM(leaf), MaxCerts+1), nil, 0, 0, ErrTooMany, fields.Cert, 0},
		{"bad value", ":not base64!:", nil, 0, 0, ErrMalformed, fields.Cert, 0},
		{"empty value", " ", nil, 0, 0, ErrEmpty, fields.Cert, 0},
		{"bad chain item", Encode(leaf, RFC9440), []string{list(1) + ", :x:"}, 0, 0, ErrMalformed, fields.Chain, 0},
		// HAProxy's %[ssl_c_chain_der,base64] when the client sent no
		// intermediates: no chain.
		{"empty chain field", Encode(leaf, RFC9440), []string{""}, 1, RFC9440, nil, "", 0},
		{"blank chain field", Encode(leaf, Base64DER), []string{" \t"}, 1, Base64DER, nil, "", 0},
		{"empty and non-empty chain fields", Encode(leaf, RFC9440), []string{"", list(1), ""}, 2, RFC9440, nil, "", 0},
		{"empty chain field, empty value", "", []string{""}, 0, 0, ErrEmpty, fields.Cert, 0},
		{"chain field too long", Encode(leaf, RFC9440), []string{strings.Repeat(" ", MaxValueLen+1)}, 0, 0, ErrTooLarge, fields.Chain, 0},
		// HAProxy's %[ssl_c_chain_der,base64]: the intermediates' DER
		// concatenated, one base64 item.
		{"concatenated DER in a chain item", Encode(leaf, Base64DER), []string{concat(2)}, 3, Base64DER, nil, "", 0},
		{"concatenated DER, and a second item", Encode(leaf, Base64DER), []string{concat(2) + "," + concat(1)}, 4, Base64DER, nil, "", 0},
		{"concatenated DER, MaxCerts in all", Encode(leaf, Base64DER), []string{concat(MaxCerts - 1)}, MaxCerts, Base64DER, nil, "", 0},
		{"concatenated DER, MaxCerts+1", Encode(leaf, Base64DER), []string{concat(MaxCerts)}, 0, 0, ErrTooMany, fields.Chain, 0},
		{"concatenated DER, MaxCerts+1 across fields", Encode(leaf, Base64DER), []string{concat(5), concat(5)}, 0, 0, ErrTooMany, fields.Chain, 0},
		{"concatenated DER, then junk", Encode(leaf, Base64DER), []string{base64.StdEncoding.EncodeToString(append(append([]byte{}, inter...), "not a certificate"...))}, 0, 0, nil, fields.Cert, 3},
		{"concatenated DER, then a truncated certificate", Encode(leaf, Base64DER), []string{base64.StdEncoding.EncodeToString(append(append([]byte{}, inter...), inter[:len(inter)-1]...))}, 0, 0, nil, fields.Cert, 3},
		{"concatenated DER in a leaf field", base64.StdEncoding.EncodeToString(append(append([]byte{}, leaf...), inter...)), nil, 0, 0, nil, fields.Cert, 1},
		{"concatenated DER in an rfc9440 chain item", Encode(leaf, RFC9440), []string{":" + concat(2) + ":"}, 0, 0, nil, fields.Cert, 2},
		{"leaf does not parse", ":" + junk + ":", nil, 0, 0, nil, fields.Cert, 1},
		{"chain certificate does not parse", Encode(leaf, RFC9440), []string{list(1) + ", :" + junk + ":"}, 0, 0, nil, fields.Cert, 3},
	}
	for _, tc := range tests {
		certs, found, err := ParseHeader(tc.value, tc.chain, Auto, fields)
		if tc.field == "" {
			if err != nil || len(certs) != tc.n || found != tc.found || !bytes.Equal(certs[0].Raw, leaf) {
				t.Errorf("%s: %d certificates, found %v, %v; want %d, %v", tc.name, len(certs), found, err, tc.n, tc.found)
			}
			continue
		}
		var he *HeaderError
		if !errors.As(err, &he) || he.Field != tc.field || he.Cert != tc.cert || tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v in %s (certificate %d)", tc.name, err, tc.err, tc.field, tc.cert)
		}
	}

	// The handler's texts.
	if _, _, err := ParseHeader(":x:", nil, Auto, fields); err == nil || !strings.HasPrefix(err.Error(), "decoding X-Client-Cert: malformed value") {
		t.Fatalf("bad value: %v", err)
	}
	if _, _, err := ParseHeader(Encode(leaf, RFC9440), []string{":" + junk + ":"}, RFC9440, fields); err == nil || !strings.HasPrefix(err.Error(), "parsing certificate 2 of X-Client-Cert: ") {
		t.Fatalf("bad chain certificate: %v", err)
	}
}
