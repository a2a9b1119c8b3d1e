package certcodec

import (
	"bytes"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

// FuzzDecode checks that no header value makes the decoder panic, return
// more than MaxCerts certificates, or succeed with nothing; and that what it
// decodes re-encodes to the same bytes. The seed corpus (testdata/fuzz and
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
		}
		if _, err := DecodeChain(value, fm); err != nil && found == RFC9440 {
			t.Fatalf("a single byte sequence must also be a valid chain list: %v", err)
		}
	})
}
