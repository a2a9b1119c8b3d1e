package certcodec

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// envoyConfig is Envoy's set_current_client_cert_details, and whether it
// writes only the first URI SAN (before 1.23).
type envoyConfig struct{ cert, chain, subject, uri, dns, firstURI bool }

// envoyElementFor is the element Envoy writes for the certificate der whose
// SANs are uris and dns as signed: By, Hash, then what cfg sets, in
// Envoy's order (Cert, Chain, Subject, URI, DNS), SANs unquoted.
func envoyElementFor(der []byte, uris, dns []string, cfg envoyConfig) string {
	parts := []string{"By=spiffe://cluster.local/ns/gw/sa/envoy", "Hash=" + hashOf(der)}
	if cfg.cert {
		parts = append(parts, `Cert="`+envoyURLEncode(pemText(der))+`"`)
	}
	if cfg.chain {
		parts = append(parts, `Chain="`+envoyURLEncode(pemText(der))+`"`)
	}
	if cfg.subject {
		parts = append(parts, `Subject="CN=mallory"`)
	}
	if cfg.uri {
		switch {
		case len(uris) == 0:
			parts = append(parts, "URI=")
		case cfg.firstURI:
			parts = append(parts, "URI="+uris[0])
		default:
			for _, u := range uris {
				parts = append(parts, "URI="+u)
			}
		}
	}
	if cfg.dns {
		for _, d := range dns {
			parts = append(parts, "DNS="+d)
		}
	}
	return strings.Join(parts, ";")
}

// TestXFCCRandomSANs searches for a forged caller: certificates a trusted
// CA signed with SANs made of the characters and pieces that matter to the
// grammar (',' ';' '"' '\' '=' spaces, keys, and alice's Cert, Hash and
// whole elements), each written as Envoy writes it with random settings,
// alone (SANITIZE_SET) or after what a client sent (APPEND_FORWARD). Decode
// must never return a certificate other than the holder's, with Envoy
// writing Cert (without it, every Cert is text a holder chose: see the
// README). The seed is logged; a failure names the value.
func TestXFCCRandomSANs(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := mrand.New(mrand.NewPCG(seed, seed>>1))
	root := demopki.Must(demopki.NewCA("search root"))
	alice := demopki.Must(root.Issue(demopki.Options{CommonName: "alice", DNSNames: []string{"alice.example"}, URIs: []string{"spiffe://a/alice"}}))
	aliceCert := `Cert="` + envoyURLEncode(pemText(alice.Cert.Raw)) + `"`
	aliceElems := []string{aliceCert, "Hash=" + hashOf(alice.Cert.Raw) + ";" + aliceCert,
		envoyElementFor(alice.Cert.Raw, []string{"spiffe://a/alice"}, []string{"alice.example"}, envoyConfig{cert: true, subject: true, uri: true, dns: true}),
		EncodeCertificate(alice.Cert, XFCC)}
	pieces := []string{"a", "x.example", ",", ";", `"`, `\`, `\"`, `"\`, `""`, " ", "\t", "=", "URI=", "DNS=", "Cert=", "Hash=",
		"Chain=", "Subject=", `="`, `\,`, ",URI=", ";DNS=", "spiffe://a/alice", "alice.example"}
	for _, e := range aliceElems {
		pieces = append(pieces, ","+e, ";"+e, `",`+e, `\",`+e, ", "+e)
	}
	pick := func(s []string) string { return s[rnd.IntN(len(s))] }
	san := func() string {
		var sb strings.Builder
		for n := rnd.IntN(5); n >= 0; n-- {
			sb.WriteString(pick(pieces))
		}
		return sb.String()
	}
	prefixes := append([]string{"", `Foo="`, `Foo="\`, `"`, `\`, aliceCert + `;Foo="`, aliceCert + ";URI=", aliceCert + `;Subject="`}, aliceElems...)
	serial := big.NewInt(1)
	values, accepted := 0, 0
	for range 150 {
		var uris, dns []string
		for n := rnd.IntN(3); n > 0; n-- {
			uris = append(uris, san())
		}
		for n := rnd.IntN(3); n > 0; n-- {
			dns = append(dns, san())
		}
		ext, err := demopki.SANExtension(dns, uris)
		if err != nil {
			t.Fatal(err)
		}
		serial.Add(serial, big.NewInt(1))
		tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "mallory"}, ExtraExtensions: []pkix.Extension{ext},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		mallory, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, root.Key.Public(), root.Key)
		if err != nil {
			t.Fatal(err)
		}
		for range 4 {
			cfg := envoyConfig{cert: true, chain: rnd.IntN(3) == 0, subject: rnd.IntN(2) == 0, uri: rnd.IntN(4) != 0, dns: rnd.IntN(4) != 0, firstURI: rnd.IntN(3) == 0}
			el := envoyElementFor(mallory, uris, dns, cfg)
			for _, p := range append(prefixes, pick(pieces)+pick(pieces)) {
				v := el
				if p != "" {
					v = p + "," + el // Envoy's APPEND_FORWARD
				}
				values++
				for _, f := range []Format{XFCC, Auto} {
					ders, _, err := Decode(v, f)
					if err != nil {
						continue
					}
					accepted++
					if !bytes.Equal(ders[0], mallory) {
						t.Fatalf("seed %d: %v read a certificate not the holder's (alice's: %v) from %q", seed, f, bytes.Equal(ders[0], alice.Cert.Raw), v)
					}
				}
			}
		}
	}
	if accepted == 0 {
		t.Fatalf("none of %d values accepted: the search tried nothing that passes", values)
	}
	t.Logf("%d values, %d decodes accepted, all the holder's", values, accepted)
}
