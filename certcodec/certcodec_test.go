package certcodec

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

func testChain(t testing.TB) (leaf, inter []byte) {
	t.Helper()
	root, err := demopki.NewCA("codec root")
	if err != nil {
		t.Fatal(err)
	}
	mid, err := root.Issue(demopki.Options{CommonName: "codec intermediate", IsCA: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := mid.Issue(demopki.Options{CommonName: "codec client"})
	if err != nil {
		t.Fatal(err)
	}
	return c.Cert.Raw, mid.Cert.Raw
}

func TestDecodeFormats(t *testing.T) {
	leaf, inter := testChain(t)
	b64 := base64.StdEncoding.EncodeToString(leaf)
	pemLeaf := testpeer.PEM(leaf)
	tests := []struct {
		name  string
		value string
		want  Format
		n     int
	}{
		{"rfc9440", ":" + b64 + ":", RFC9440, 1},
		{"rfc9440 unpadded", ":" + strings.TrimRight(b64, "=") + ":", RFC9440, 1},
		{"rfc9440 with OWS", " \t:" + b64 + ": ", RFC9440, 1},
		{"nginx escaped cert", url.PathEscape(pemLeaf), URLPEM, 1},
		{"url pem query-escaped with %2B", strings.ReplaceAll(url.QueryEscape(pemLeaf), "+", "%20"), URLPEM, 1},
		{"alb style, + and = and / kept", strings.NewReplacer("\n", "%0A", " ", "%20").Replace(pemLeaf), URLPEM, 1},
		{"fully percent-encoded", percentAll(pemLeaf), URLPEM, 1},
		{"url pem with chain", url.PathEscape(testpeer.PEM(leaf, inter)), URLPEM, 2},
		{"pem with newlines", pemLeaf, PEM, 1},
		{"pem with spaces", strings.ReplaceAll(strings.TrimSpace(pemLeaf), "\n", " "), PEM, 1},
		{"pem with tabs (nginx $ssl_client_cert)", strings.ReplaceAll(strings.TrimSpace(pemLeaf), "\n", "\n\t"), PEM, 1},
		{"pem joined without separators", "-----BEGIN CERTIFICATE-----" + b64 + "-----END CERTIFICATE-----", PEM, 1},
		{"pem of base64-wrapped pem (Choreo)", "-----BEGIN CERTIFICATE-----" + base64.StdEncoding.EncodeToString([]byte(pemLeaf)) + "-----END CERTIFICATE-----", PEM, 1},
		{"base64 der", b64, Base64DER, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Detect(tc.value); got != tc.want {
				t.Fatalf("Detect = %v, want %v", got, tc.want)
			}
			for _, f := range []Format{Auto, tc.want} {
				ders, found, err := Decode(tc.value, f)
				if err != nil {
					t.Fatalf("Decode(%v): %v", f, err)
				}
				if found != tc.want {
					t.Fatalf("Decode(%v) found %v, want %v", f, found, tc.want)
				}
				if len(ders) != tc.n || !bytes.Equal(ders[0], leaf) {
					t.Fatalf("Decode(%v) gave %d certificates, first equal to leaf: %v", f, len(ders), len(ders) > 0 && bytes.Equal(ders[0], leaf))
				}
				if tc.n == 2 && !bytes.Equal(ders[1], inter) {
					t.Fatal("second certificate is not the intermediate")
				}
			}
		})
	}
}

func percentAll(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		sb.WriteString("%" + strings.ToUpper(hexByte(s[i])))
	}
	return sb.String()
}

func hexByte(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}

func TestDecodeMalformed(t *testing.T) {
	leaf, _ := testChain(t)
	b64 := base64.StdEncoding.EncodeToString(leaf)
	pemLeaf := testpeer.PEM(leaf)
	tests := []struct {
		name   string
		value  string
		format Format
		want   error
	}{
		{"empty", "", Auto, ErrEmpty},
		{"only spaces", "  \t ", Auto, ErrEmpty},
		{"64 KiB of garbage", strings.Repeat("garbage!", 8192), Auto, ErrTooLarge},
		{"truncated base64", b64[:len(b64)-3], Base64DER, ErrMalformed},
		{"truncated rfc9440", ":" + b64[:len(b64)-3] + ":", RFC9440, ErrMalformed},
		{"missing closing colon", ":" + b64, Auto, ErrMalformed},
		{"missing opening colon", b64 + ":", RFC9440, ErrMalformed},
		{"empty byte sequence", "::", Auto, ErrMalformed},
		{"doubled colons", "::" + b64 + "::", Auto, ErrMalformed},
		{"two leaf values in rfc9440", ":" + b64 + ":, :" + b64 + ":", Auto, ErrMalformed},
		{"rfc9440 with parameters", ":" + b64 + ":;a=1", Auto, ErrMalformed},
		{"bad padding", ":" + b64 + "==:", Auto, ErrMalformed},
		{"base64url alphabet", strings.NewReplacer("+", "-", "/", "_").Replace(b64) + "-_", Base64DER, ErrMalformed},
		{"pem without end", strings.Split(pemLeaf, "-----END")[0], Auto, ErrMalformed},
		{"pem private key", "-----BEGIN PRIVATE KEY----- MIIB -----END PRIVATE KEY-----", Auto, ErrMalformed},
		{"pem other type", "-----BEGIN X509 CRL----- MIIB -----END X509 CRL-----", Auto, ErrMalformed},
		{"pem trailing junk", pemLeaf + "junk", Auto, ErrMalformed},
		{"pem leading junk", "junk" + pemLeaf, PEM, ErrMalformed},
		{"pem bad base64", "-----BEGIN CERTIFICATE----- MII*B -----END CERTIFICATE-----", Auto, ErrMalformed},
		{"url pem bad escape", "-----BEGIN%20CERTIFICATE-----%ZZ", Auto, ErrMalformed},
		{"too many pem blocks", strings.Repeat(pemLeaf, MaxCerts+1), Auto, ErrTooMany},
		{"nested pem twice", "-----BEGIN CERTIFICATE-----" + base64.StdEncoding.EncodeToString([]byte("-----BEGIN CERTIFICATE-----"+base64.StdEncoding.EncodeToString([]byte(pemLeaf))+"-----END CERTIFICATE-----")) + "-----END CERTIFICATE-----", Auto, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ders, _, err := Decode(tc.value, tc.format)
			if err == nil {
				// Some truncations still decode as base64; they must then
				// not be the certificate (the caller's parse rejects them).
				if tc.want == ErrMalformed && len(ders) == 1 && !bytes.Equal(ders[0], leaf) && strings.HasPrefix(tc.name, "truncated") {
					return
				}
				t.Fatalf("Decode succeeded with %d certificates, want %v", len(ders), tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecodeChain(t *testing.T) {
	leaf, inter := testChain(t)
	list := Encode(inter, RFC9440) + ", " + Encode(leaf, RFC9440)
	ders, err := DecodeChain(list, Auto)
	if err != nil || len(ders) != 2 || !bytes.Equal(ders[0], inter) || !bytes.Equal(ders[1], leaf) {
		t.Fatalf("rfc9440 list: %d certs, err %v", len(ders), err)
	}
	ders, err = DecodeChain(base64.StdEncoding.EncodeToString(inter)+","+base64.StdEncoding.EncodeToString(leaf), Base64DER)
	if err != nil || len(ders) != 2 {
		t.Fatalf("base64 list: %d certs, err %v", len(ders), err)
	}
	ders, err = DecodeChain(url.PathEscape(testpeer.PEM(inter, leaf)), Auto)
	if err != nil || len(ders) != 2 {
		t.Fatalf("pem chain: %d certs, err %v", len(ders), err)
	}
	// HAProxy's %[ssl_c_chain_der,base64]: the DER concatenated, in order,
	// at most MaxCerts in all.
	two := base64.StdEncoding.EncodeToString(append(append([]byte{}, inter...), leaf...))
	for _, f := range []Format{Auto, Base64DER} {
		ders, err = DecodeChain(two, f)
		if err != nil || len(ders) != 2 || !bytes.Equal(ders[0], inter) || !bytes.Equal(ders[1], leaf) {
			t.Fatalf("concatenated DER, %v: %d certs, err %v", f, len(ders), err)
		}
		if ders, err = DecodeChain(base64.StdEncoding.EncodeToString(bytes.Repeat(inter, MaxCerts)), f); err != nil || len(ders) != MaxCerts {
			t.Fatalf("MaxCerts concatenated, %v: %d certs, err %v", f, len(ders), err)
		}
		if _, err := DecodeChain(base64.StdEncoding.EncodeToString(bytes.Repeat(inter, MaxCerts+1)), f); !errors.Is(err, ErrTooMany) {
			t.Fatalf("MaxCerts+1 concatenated, %v: %v", f, err)
		}
		if _, err := DecodeChain(two+","+base64.StdEncoding.EncodeToString(bytes.Repeat(inter, MaxCerts-1)), f); !errors.Is(err, ErrTooMany) {
			t.Fatalf("MaxCerts+1 concatenated across items, %v: %v", f, err)
		}
	}
	if _, err := DecodeChain(list+", :%%:", Auto); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad list item: %v", err)
	}
	if _, err := DecodeChain(strings.Repeat(Encode(inter, RFC9440)+",", MaxCerts)+Encode(inter, RFC9440), Auto); !errors.Is(err, ErrTooMany) {
		t.Fatalf("long list: %v", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	leaf, _ := testChain(t)
	for _, f := range []Format{RFC9440, URLPEM, PEM, Base64DER, XFCC} {
		enc := Encode(leaf, f)
		if strings.ContainsAny(enc, "\r\n") {
			t.Fatalf("%v: encoding has a line break, invalid in a header", f)
		}
		if f == URLPEM && strings.ContainsAny(enc, "+=/: ") {
			t.Fatalf("url_pem encoding leaves reserved characters: %.80s", enc)
		}
		ders, found, err := Decode(enc, Auto)
		if err != nil || found != f || len(ders) != 1 || !bytes.Equal(ders[0], leaf) {
			t.Fatalf("%v: round trip found %v, err %v", f, found, err)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, name := range []string{"auto", "rfc9440", "url_pem", "pem", "base64_der", "xfcc"} {
		f, err := ParseFormat(name)
		if err != nil || f.String() != name {
			t.Fatalf("%s: %v %v", name, f, err)
		}
	}
	if _, err := ParseFormat("der"); err == nil {
		t.Fatal("unknown format accepted")
	}
}
