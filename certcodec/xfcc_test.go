package certcodec

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

func TestDecodeXFCC(t *testing.T) {
	leaf, inter := testChain(t)
	envoy := testpeer.Envoy{By: "spiffe://cluster.local/ns/gw/sa/caddy", Cert: true, Chain: true, Subject: true, URI: true, DNS: true}
	caller := envoy.Element(leaf, [][]byte{inter}, "CN=codec client", []string{"spiffe://cluster.local/ns/app/sa/client"}, []string{"client.example", "www.client.example"})
	envoy.Chain = false
	callerNoChain := envoy.Element(leaf, nil, "CN=codec client", []string{"spiffe://cluster.local/ns/app/sa/client"}, nil)
	tests := []struct {
		name  string
		value string
		n     int // certificates: the leaf, then its chain without it
	}{
		{"envoy, cert and chain", caller, 2},
		{"envoy, cert only", callerNoChain, 1},
		{"keys in any case", strings.NewReplacer("By=", "by=", "Hash=", "HASH=", "Cert=", "cert=", "Chain=", "CHAIN=").Replace(caller), 2},
		{"quoted values with , ; = and an escaped quote", `Subject="CN=a\"b, O=x;y=z";URI="spiffe://x/y?a=b;c,d";` + callerNoChain, 1},
		{"unquoted cert", strings.Replace(callerNoChain, `Cert="`+testpeer.EnvoyURLEncode(testpeer.PEM(leaf))+`"`, "Cert="+testpeer.EnvoyURLEncode(testpeer.PEM(leaf)), 1), 1},
		{"cert percent-encoded in full", "Hash=" + hashOf(leaf) + ";Cert=" + percentAll(testpeer.PEM(leaf)), 1},
		{"hash in capitals", "Hash=" + strings.ToUpper(hashOf(leaf)) + ";Cert=" + testpeer.EnvoyURLEncode(testpeer.PEM(leaf)), 1},
		{"chain not starting with the leaf", `Cert="` + url.PathEscape(testpeer.PEM(leaf)) + `";Chain="` + url.PathEscape(testpeer.PEM(inter)) + `"`, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Detect(tc.value); got != XFCC {
				t.Fatalf("Detect = %v, want xfcc", got)
			}
			for _, f := range []Format{Auto, XFCC} {
				ders, found, err := Decode(tc.value, f)
				if err != nil {
					t.Fatalf("Decode(%v): %v", f, err)
				}
				if found != XFCC {
					t.Fatalf("Decode(%v) found %v", f, found)
				}
				if len(ders) != tc.n || !bytes.Equal(ders[0], leaf) {
					t.Fatalf("Decode(%v): %d certificates, first the leaf: %v", f, len(ders), len(ders) > 0 && bytes.Equal(ders[0], leaf))
				}
				if tc.n == 2 && !bytes.Equal(ders[1], inter) {
					t.Fatal("second certificate is not the intermediate")
				}
			}
			certs, _, err := ParseHeader(tc.value, nil, XFCC, HeaderFields{Cert: "X-Forwarded-Client-Cert"})
			if err != nil || len(certs) != tc.n || !bytes.Equal(certs[0].Raw, leaf) {
				t.Fatalf("ParseHeader: %d certificates, %v", len(certs), err)
			}
		})
	}
}

func TestDecodeXFCCMalformed(t *testing.T) {
	leaf, inter := testChain(t)
	cert := `Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM(leaf)) + `"`
	key := string(demopki.Must(demopki.NewCA("key holder")).KeyPEM())
	tests := []struct {
		name  string
		value string
		want  error
		text  string // in the error, if not ""
	}{
		{"no cert", "By=spiffe://a;Hash=abcd;Subject=\"CN=x\";URI=spiffe://b", ErrMalformed, "no Cert"},
		{"caller without cert after one with", cert + ",By=spiffe://a;Hash=abcd", ErrMalformed, "no Cert"},
		{"chain without cert", `Chain="` + testpeer.EnvoyURLEncode(testpeer.PEM(leaf, inter)) + `"`, ErrMalformed, "no Cert"},
		{"trailing comma", cert + ",", ErrMalformed, ""},
		{"empty element", cert + ",,", ErrMalformed, ""},
		{"unterminated quote", `Subject="CN=x;` + cert, ErrMalformed, ""},
		{"unterminated quote in an earlier element", `Subject="CN=x,` + cert, ErrMalformed, ""},
		{"data after a closing quote", `Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM(leaf)) + `"x`, ErrMalformed, ""},
		{"pair without =", "Hash;" + cert, ErrMalformed, ""},
		{"empty key", "=x;" + cert, ErrMalformed, ""},
		{"cert twice", cert + ";" + cert, ErrMalformed, "twice"},
		{"hash not the cert's", "Hash=" + hashOf(inter) + ";" + cert, ErrMalformed, "Hash"},
		{"cert of two certificates", `Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM(leaf, inter)) + `"`, ErrMalformed, ""},
		{"cert a private key", `Cert="` + testpeer.EnvoyURLEncode(key) + `"`, ErrMalformed, "private key"},
		{"chain with a private key", cert + `;Chain="` + testpeer.EnvoyURLEncode(testpeer.PEM(leaf)+key) + `"`, ErrMalformed, "private key"},
		{"cert not pem", `Cert="` + base64.StdEncoding.EncodeToString(leaf) + `"`, ErrMalformed, ""},
		{"cert bad escape", `Cert="-----BEGIN%ZZ"`, ErrMalformed, ""},
		{"chain too long", cert + `;Chain="` + testpeer.EnvoyURLEncode(strings.Repeat(testpeer.PEM(inter), MaxCerts)) + `"`, ErrTooMany, ""},
		{"too large", cert + ";Subject=\"" + strings.Repeat("x", MaxValueLen) + "\"", ErrTooLarge, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Decode(tc.value, XFCC)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if tc.text != "" && !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("error %q does not say %q", err, tc.text)
			}
		})
	}
	// The chain field is not read in xfcc: the chain travels in Chain=.
	if _, err := DecodeChain(cert, XFCC); !errors.Is(err, ErrMalformed) {
		t.Fatalf("DecodeChain(xfcc): %v", err)
	}
}

func TestEncodeXFCC(t *testing.T) {
	root := demopki.Must(demopki.NewCA("xfcc root"))
	c := demopki.Must(root.Issue(demopki.Options{
		CommonName:   `client "one"`,
		Organization: "Acme, Inc.",
		DNSNames:     []string{"client.example", "www.client.example"},
		URIs:         []string{"spiffe://cluster.local/ns/app/sa/client", "https://id.example/a?b=c;d"},
	}))
	got := EncodeCertificate(c.Cert, XFCC)
	if strings.ContainsAny(got, "\r\n") {
		t.Fatal("a line break in a header value")
	}
	sum := sha256.Sum256(c.Cert.Raw)
	subject := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(c.Cert.Subject.String())
	want := "Hash=" + hex.EncodeToString(sum[:]) +
		`;Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM(c.Cert.Raw)) + `"` +
		`;Subject="` + subject + `"` +
		";URI=spiffe://cluster.local/ns/app/sa/client" +
		`;URI="https://id.example/a?b=c;d"` +
		";DNS=client.example;DNS=www.client.example"
	if got != want {
		t.Fatalf("EncodeCertificate(xfcc)\n got %s\nwant %s", got, want)
	}
	if Encode(c.Cert.Raw, XFCC) != got {
		t.Fatal("Encode and EncodeCertificate disagree")
	}
	ders, found, err := Decode(got, Auto)
	if err != nil || found != XFCC || len(ders) != 1 || !bytes.Equal(ders[0], c.Cert.Raw) {
		t.Fatalf("round trip: found %v, %d certificates, %v", found, len(ders), err)
	}
	// A leaf with no SANs: Hash, Cert and Subject only.
	plain := demopki.Must(root.Issue(demopki.Options{CommonName: "plain"}))
	if got := EncodeCertificate(plain.Cert, XFCC); strings.Contains(got, "URI=") || strings.Contains(got, "DNS=") || !strings.HasSuffix(got, `;Subject="CN=plain"`) {
		t.Fatalf("no SANs: %s", got)
	}
	// Bytes that are no certificate still encode (Hash and Cert), and
	// decode back to themselves.
	junk := []byte("not a certificate")
	enc := Encode(junk, XFCC)
	if ders, _, err := Decode(enc, XFCC); err != nil || !bytes.Equal(ders[0], junk) {
		t.Fatalf("junk round trip %q: %v", enc, err)
	}
}

func TestDecodeBase64Chain(t *testing.T) {
	leaf, inter := testChain(t)
	b64 := func(der []byte) string { return base64.StdEncoding.EncodeToString(der) }
	for _, v := range []string{
		b64(leaf) + "," + b64(inter),  // Traefik v3 X-Forwarded-Tls-Client-Cert
		b64(leaf) + ", " + b64(inter), // with OWS
	} {
		for _, f := range []Format{Auto, Base64DER} {
			ders, found, err := Decode(v, f)
			if err != nil || found != Base64DER || len(ders) != 2 || !bytes.Equal(ders[0], leaf) || !bytes.Equal(ders[1], inter) {
				t.Fatalf("Decode(%v) of a comma chain: found %v, %d certificates, %v", f, found, len(ders), err)
			}
		}
	}
	for name, tc := range map[string]struct {
		value string
		want  error
	}{
		"empty item":    {b64(leaf) + ",," + b64(inter), ErrMalformed},
		"trailing item": {b64(leaf) + ",", ErrMalformed},
		"bad item":      {b64(leaf) + ",MII*", ErrMalformed},
		"too many":      {strings.Repeat(b64(inter)+",", MaxCerts) + b64(inter), ErrTooMany},
	} {
		if _, _, err := Decode(tc.value, Base64DER); !errors.Is(err, tc.want) {
			t.Fatalf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// RFC 9440's Client-Cert still holds exactly one certificate.
	if _, _, err := Decode(":"+b64(leaf)+":, :"+b64(inter)+":", RFC9440); !errors.Is(err, ErrMalformed) {
		t.Fatalf("rfc9440 list as a leaf: %v", err)
	}
}

func TestDecodeURLPEMPlus(t *testing.T) {
	// A certificate whose base64 holds a '+' (which must stay one): almost
	// every one does; make new ones until one does.
	leaf, inter := testChain(t)
	for i := 0; !strings.Contains(testpeer.PEM(leaf), "+"); i++ {
		if i == 100 {
			t.Fatal("no certificate with a '+' in its base64 in 100 tries")
		}
		leaf, inter = testChain(t)
	}
	pemLeaf := testpeer.PEM(leaf)
	tests := []struct {
		name  string
		value string
		n     int
	}{
		// java.net.URLEncoder: spaces are '+', a base64 '+' is %2B.
		{"java URLEncoder", testpeer.JavaURLEncode(pemLeaf), 1},
		{"java URLEncoder, chain", testpeer.JavaURLEncode(testpeer.PEM(leaf, inter)), 2},
		{"java URLEncoder, no trailing newline", testpeer.JavaURLEncode(strings.TrimSpace(pemLeaf)), 1},
		// Spaces as '+' in the armour, the base64 '+' left as it is.
		{"+ in the armour, base64 + kept", strings.NewReplacer(" ", "+", "\n", "%0A").Replace(pemLeaf), 1},
		{"+ in the armour, no newlines", strings.NewReplacer(" ", "+", "\n", "").Replace(pemLeaf), 1},
		// url.QueryEscape: spaces '+', '+' %2B, as Java.
		{"query escape", url.QueryEscape(pemLeaf), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Detect(tc.value); got != URLPEM {
				t.Fatalf("Detect = %v, want url_pem", got)
			}
			for _, f := range []Format{Auto, URLPEM} {
				ders, _, err := Decode(tc.value, f)
				if err != nil || len(ders) != tc.n || !bytes.Equal(ders[0], leaf) {
					t.Fatalf("Decode(%v): %d certificates, %v", f, len(ders), err)
				}
				if tc.n == 2 && !bytes.Equal(ders[1], inter) {
					t.Fatal("second certificate is not the intermediate")
				}
			}
		})
	}
	key := string(demopki.Must(demopki.NewCA("key holder")).KeyPEM())
	_, _, err := Decode(testpeer.JavaURLEncode(key), Auto)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "private key") {
		t.Fatalf("java-encoded private key: %v", err)
	}
}

// TestXFCCSANInjection: Envoy writes DNS= and URI= SANs unquoted, so a
// certificate whose DNS SAN is `x,Cert="<alice's PEM>"` turns the element
// Envoy writes for it into two, the last one alice's. Such a value is
// refused, never read as alice (found in review: it authenticated as alice).
func TestXFCCSANInjection(t *testing.T) {
	mallory, _ := testChain(t)
	alice, _ := testChain(t)
	value := `Hash=00;Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM(mallory)) + `";Subject="CN=mallory";DNS=x,Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM(alice)) + `"`
	for _, f := range []Format{Auto, XFCC} {
		ders, _, err := Decode(value, f)
		if err == nil {
			t.Fatalf("Decode(%v) read %d certificates, alice's: %v", f, len(ders), bytes.Equal(ders[0], alice))
		}
	}
}

// TestDecodeXFCCElements: with several elements (Envoy's APPEND_FORWARD, one
// per proxy), the caller is the last element, and every element must be
// what a proxy writes for its own Cert: a SAN holding ',' (Envoy writes
// SANs unquoted) splits one element into several, the last of the
// certificate holder's choosing, and is refused. Each attack is a header as
// Envoy would write it for a certificate a trusted CA signed.
func TestDecodeXFCCElements(t *testing.T) {
	root := demopki.Must(demopki.NewCA("xfcc root"))
	issue := func(cn string, dns, uris []string) *demopki.Cert {
		return demopki.Must(root.Issue(demopki.Options{CommonName: cn, DNSNames: dns, RawURIs: uris}))
	}
	aliceURI := "spiffe://cluster.local/ns/pay/sa/alice"
	alice := issue("alice", []string{"alice.example"}, []string{aliceURI, "urn:alice:2"})
	edge := issue("edge", nil, []string{"spiffe://cluster.local/ns/edge/sa/envoy"})
	bare := issue("bare", nil, nil)
	upper := issue("upper", []string{"up.example"}, []string{"SPIFFE://cluster.local/ns/up/sa/Upper", "urn:x:y,z"})
	// envoyWrites is the element Envoy writes for c (SANs as signed) set to
	// write cert, subject, uri and dns; firstURI as before 1.23.
	envoyWrites := func(c *demopki.Cert, uris, dns []string, firstURI bool) string {
		e := testpeer.Envoy{By: "spiffe://cluster.local/ns/gw/sa/envoy", Cert: true, Subject: true, URI: true, DNS: true, FirstURIOnly: firstURI}
		return e.Element(c.Cert.Raw, nil, c.Cert.Subject.String(), uris, dns)
	}
	aliceXFCC := envoyWrites(alice, []string{aliceURI, "urn:alice:2"}, []string{"alice.example"}, false)
	edgeXFCC := envoyWrites(edge, []string{"spiffe://cluster.local/ns/edge/sa/envoy"}, nil, false)
	aliceCert := `Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM(alice.Cert.Raw)) + `"`

	t.Run("honest", func(t *testing.T) {
		for _, tc := range []struct {
			name, value string
			want        *demopki.Cert
		}{
			{"one element", aliceXFCC, alice},
			{"appended after a proxy's", edgeXFCC + "," + aliceXFCC, alice},
			{"last is the caller", aliceXFCC + "," + edgeXFCC, edge},
			{"three elements, OWS", edgeXFCC + " , " + envoyWrites(bare, nil, nil, false) + ", " + aliceXFCC, alice},
			{"first URI only (Envoy < 1.23)", edgeXFCC + "," + envoyWrites(alice, []string{aliceURI, "urn:alice:2"}, []string{"alice.example"}, true), alice},
			{"no URI, no DNS pairs", "Hash=" + hashOf(edge.Cert.Raw) + `;Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM(edge.Cert.Raw)) + `",` + aliceCert, alice},
			{"as Caddy forwards it", EncodeCertificate(edge.Cert, XFCC) + "," + EncodeCertificate(alice.Cert, XFCC), alice},
			// The URI as signed, not as Go's url package writes it back.
			{"as Caddy forwards it, URI scheme in capitals", EncodeCertificate(upper.Cert, XFCC) + "," + EncodeCertificate(alice.Cert, XFCC), alice},
		} {
			ders, found, err := Decode(tc.value, Auto)
			if err != nil || found != XFCC || !bytes.Equal(ders[0], tc.want.Cert.Raw) {
				t.Fatalf("%s: found %v, %v; the caller's: %v", tc.name, found, err, err == nil && bytes.Equal(ders[0], tc.want.Cert.Raw))
			}
		}
	})

	// forged reports the header Envoy writes for mallory (her SANs as
	// given), and checks it is refused, never read as alice.
	forged := func(t *testing.T, name string, dns, uris []string, firstURI bool) {
		t.Helper()
		mallory := issue("mallory", dns, uris)
		value := envoyWrites(mallory, uris, dns, firstURI)
		for _, prefix := range []string{"", edgeXFCC + ","} { // SANITIZE_SET, APPEND_FORWARD
			ders, _, err := Decode(prefix+value, XFCC)
			if err == nil {
				t.Fatalf("%s: accepted, as alice: %v", name, bytes.Equal(ders[0], alice.Cert.Raw))
			}
			// Refused for the SAN cut short, not for something incidental.
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "values are not its Cert's") {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}
	t.Run("forged", func(t *testing.T) {
		tail := `,Hash=` + hashOf(alice.Cert.Raw) + ";" + aliceCert + `;Subject="CN=alice"`
		forged(t, "DNS SAN", []string{"mallory.example" + tail}, nil, false)
		forged(t, "DNS SAN with alice's DNS after", []string{"mallory.example" + tail + ";DNS=alice.example"}, nil, false)
		forged(t, "URI SAN", nil, []string{"urn:m" + tail + ";URI=" + aliceURI + ";URI=urn:alice:2"}, false)
		forged(t, "URI SAN, first only", nil, []string{"urn:m" + tail}, true)
		// The part before the ',' repeated as a SAN of its own, before or
		// after: the element's URIs are no longer exactly the certificate's.
		forged(t, "URI prefix also a SAN, before", nil, []string{aliceURI, aliceURI + tail + ";URI=" + aliceURI}, false)
		forged(t, "URI prefix also a SAN, after", nil, []string{aliceURI + tail + ";URI=" + aliceURI + ";URI=urn:alice:2", aliceURI}, false)
		forged(t, "DNS prefix also a SAN", []string{"alice.example", "alice.example" + tail}, nil, false)
		forged(t, "nothing before the comma", []string{tail}, nil, false)
	})

	// A value ending in '\' inside an open quote: Envoy writes the last SAN
	// unquoted at the very end, so a last DNS (or URI) SAN `"\` ends the
	// header so. In APPEND_FORWARD, with the client's own `Cert="<alice>"`
	// before it, dropping that last element would leave alice's alone
	// (found in review: the splitter stepped past the end and did).
	t.Run("trailing backslash in a quote", func(t *testing.T) {
		if elems, err := splitXFCC(`a=b,c="\`); !errors.Is(err, ErrMalformed) {
			t.Fatalf("splitXFCC: %q, %v", elems, err)
		}
		for _, tc := range []struct {
			name      string
			uris, dns []string
			firstURI  bool
		}{
			{"last DNS SAN", []string{"spiffe://m/mallory"}, []string{"mallory.example", `"\`}, false},
			{"last URI SAN", []string{"urn:m", `"\`}, nil, false},
			{"only URI SAN, first only", []string{`"\`}, nil, true},
		} {
			mallory := demopki.Must(root.Issue(demopki.Options{CommonName: "mallory", DNSNames: tc.dns, RawURIs: tc.uris}))
			value := aliceCert + "," + envoyWrites(mallory, tc.uris, tc.dns, tc.firstURI)
			if !strings.HasSuffix(value, `"\`) {
				t.Fatalf("%s: not as Envoy ends it: %.30q", tc.name, value[len(value)-30:])
			}
			for _, v := range []string{value, envoyWrites(mallory, tc.uris, tc.dns, tc.firstURI)} {
				ders, _, err := Decode(v, XFCC)
				if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "unterminated quote") {
					t.Fatalf("%s: %v; as alice: %v", tc.name, err, err == nil && bytes.Equal(ders[0], alice.Cert.Raw))
				}
			}
		}
	})

	// Envoy without `cert` in set_current_client_cert_details writes no
	// Cert, so a SAN can supply one after Envoy's Hash, in a single
	// element (SANITIZE_SET): its Hash, always written, is the holder's.
	t.Run("Cert from a SAN, Envoy writing none", func(t *testing.T) {
		uri := "urn:m;" + aliceCert
		mallory := issue("mallory", nil, []string{uri})
		value := strings.Replace(envoyWrites(mallory, []string{uri}, nil, false), `Cert="`+testpeer.EnvoyURLEncode(testpeer.PEM(mallory.Cert.Raw))+`";`, "", 1)
		if strings.Count(value, "Cert=") != 1 || !strings.Contains(value, "Hash="+hashOf(mallory.Cert.Raw)) {
			t.Fatalf("not as Envoy writes it without cert: %.200s", value)
		}
		ders, _, err := Decode(value, XFCC)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "Hash") {
			t.Fatalf("%v; as alice: %v", err, err == nil && bytes.Equal(ders[0], alice.Cert.Raw))
		}
	})

	t.Run("refused", func(t *testing.T) {
		malloryCert := `Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM(bare.Cert.Raw)) + `"`
		for _, tc := range []struct{ name, value, text string }{
			{"an element without Cert", "By=spiffe://a;Hash=" + hashOf(edge.Cert.Raw) + ";URI=x," + aliceXFCC, "no Cert"},
			{"Hash not the Cert's", "Hash=" + hashOf(alice.Cert.Raw) + ";" + malloryCert + "," + aliceXFCC, "Hash"},
			{"Hash twice", "Hash=" + hashOf(bare.Cert.Raw) + ";Hash=" + hashOf(bare.Cert.Raw) + ";" + malloryCert + "," + aliceXFCC, "twice"},
			{"URI not the Cert's", malloryCert + ";URI=" + aliceURI + "," + aliceXFCC, "URI"},
			{"DNS not the Cert's", malloryCert + ";DNS=alice.example," + aliceXFCC, "DNS"},
			{"Cert no certificate", `Cert="` + testpeer.EnvoyURLEncode(testpeer.PEM([]byte("junk"))) + `",` + aliceXFCC, ""},
			{"too many elements", strings.Repeat(edgeXFCC+",", MaxCerts) + aliceXFCC, "elements"},
		} {
			_, _, err := Decode(tc.value, XFCC)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
	})
}

func hashOf(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
