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
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

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
	aliceCert := `Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM(alice.Cert.Raw)) + `"`
	aliceElems := []string{aliceCert, "Hash=" + hashOf(alice.Cert.Raw) + ";" + aliceCert,
		testpeer.Envoy{By: "spiffe://cluster.local/ns/gw/sa/envoy", Cert: true, Subject: true, URI: true, DNS: true}.Element(
			alice.Cert.Raw, nil, "CN=alice", []string{"spiffe://a/alice"}, []string{"alice.example"}),
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
			envoy := testpeer.Envoy{By: "spiffe://cluster.local/ns/gw/sa/envoy", Cert: true, Chain: rnd.IntN(3) == 0, Subject: rnd.IntN(2) == 0,
				URI: rnd.IntN(4) != 0, DNS: rnd.IntN(4) != 0, FirstURIOnly: rnd.IntN(3) == 0}
			el := envoy.Element(mallory, nil, "CN=mallory", uris, dns)
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
