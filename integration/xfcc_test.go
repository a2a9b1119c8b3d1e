package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// envoyXFCC is the element Envoy writes for leaf, sent with chain, set to
// write cert, chain, subject, uri and dns, by the proxy whose URI SAN is by.
func envoyXFCC(by string, leaf *demopki.Cert, chain ...*demopki.Cert) string {
	inter := make([][]byte, len(chain))
	for i, c := range chain {
		inter[i] = c.Cert.Raw
	}
	uris := make([]string, len(leaf.Cert.URIs))
	for i, u := range leaf.Cert.URIs {
		uris[i] = u.String()
	}
	e := testpeer.Envoy{By: by, Cert: true, Chain: len(chain) > 0, Subject: true, URI: true, DNS: true}
	return e.Element(leaf.Cert.Raw, inter, leaf.Cert.Subject.String(), uris, leaf.Cert.DNSNames)
}

// TestXFCC: certificate headers as Envoy, Traefik and Java load balancers
// send them, from an allowed address, to routes that forward the accepted
// caller to the backend as Envoy's x-forwarded-client-cert.
func TestXFCC(t *testing.T) {
	e := newEnv(t)
	mid := demopki.Must(e.root.Issue(demopki.Options{CommonName: "Integration Intermediate", IsCA: true}))
	carol := demopki.Must(mid.Issue(demopki.Options{
		CommonName: "carol", Organization: "Payments, Inc.",
		DNSNames: []string{"carol.example", "api.carol.example"},
		URIs:     []string{"spiffe://cluster.local/ns/pay/sa/carol"},
	}))
	edge := demopki.Must(e.other.Issue(demopki.Options{CommonName: "edge-envoy", URIs: []string{"spiffe://cluster.local/ns/edge/sa/envoy"}}))

	be := startBackend(t)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	auth := func(field, format string) string {
		return fmt.Sprintf(`client_cert_auth {
			trust_pool file %s
			header %s {
				format %s
				from 127.0.0.1/32
			}
			forward X-Forwarded-Client-Cert xfcc
		}`, e.path("root"), field, format)
	}
	startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
}
http://:%[1]d {
	bind 127.0.0.1
	handle /envoy/* {
		%[2]s
		reverse_proxy %[5]s {
			header_up X-Caller {http.auth.user.id}
		}
	}
	handle /traefik/* {
		%[3]s
		reverse_proxy %[5]s {
			header_up X-Caller {http.auth.user.id}
		}
	}
	handle /java/* {
		%[4]s
		reverse_proxy %[5]s {
			header_up X-Caller {http.auth.user.id}
		}
	}
}
`, port, auth("X-Forwarded-Client-Cert", "xfcc"), auth("X-Forwarded-Tls-Client-Cert", "base64_der"), auth("X-SSL-Client-Cert", "auto"), be.addr), "caddyfile", addr)

	// checkForwarded: the backend sees carol, and one well-formed XFCC
	// element naming her (the incoming header never reaches it as sent).
	checkForwarded := func(t *testing.T, res response) {
		t.Helper()
		if res.status != 200 || res.upstream.Get("X-Caller") != "carol" {
			t.Fatalf("status %d, caller %q: %s", res.status, res.upstream.Get("X-Caller"), res.body)
		}
		got := res.upstream.Values("X-Forwarded-Client-Cert")
		if len(got) != 1 {
			t.Fatalf("backend got %d X-Forwarded-Client-Cert fields: %q", len(got), got)
		}
		ders, found, err := certcodec.Decode(got[0], certcodec.Auto)
		if err != nil || found != certcodec.XFCC || len(ders) != 1 || !bytes.Equal(ders[0], carol.Cert.Raw) {
			t.Fatalf("forwarded XFCC %q: found %v, %d certificates, %v", got[0], found, len(ders), err)
		}
		sum := sha256.Sum256(carol.Cert.Raw)
		want := []string{
			"Hash=" + hex.EncodeToString(sum[:]) + `;Cert="-----BEGIN%20CERTIFICATE-----%0A`,
			`-----END%20CERTIFICATE-----%0A";Subject="CN=carol,O=Payments\\, Inc."`,
			";URI=spiffe://cluster.local/ns/pay/sa/carol;DNS=carol.example;DNS=api.carol.example",
		}
		for _, w := range want {
			if !strings.Contains(got[0], w) {
				t.Fatalf("forwarded XFCC %q lacks %q", got[0], w)
			}
		}
		// One element: no ',' outside the quoted values.
		unquoted, inQuote := "", false
		for i := 0; i < len(got[0]); i++ {
			switch c := got[0][i]; {
			case inQuote && c == '\\':
				i++
			case c == '"':
				inQuote = !inQuote
			case !inQuote:
				unquoted += string(c)
			}
		}
		if inQuote || strings.Contains(unquoted, ",") {
			t.Fatalf("forwarded XFCC is not one well-formed element: %q", got[0])
		}
	}

	t.Run("envoy, one element, the caller's", func(t *testing.T) {
		// As Envoy's forward_client_cert_details SANITIZE_SET writes it for
		// carol, whose chain is only in its Chain key.
		xfcc := envoyXFCC("spiffe://cluster.local/ns/gw/sa/envoy", carol, mid)
		checkForwarded(t, doFrom(t, "127.0.0.1", "http://"+addr+"/envoy/x", http.Header{"X-Forwarded-Client-Cert": {xfcc}}))

		// Several elements (APPEND_FORWARD): the caller is the last.
		two := envoyXFCC("spiffe://cluster.local/ns/edge/sa/envoy", edge) + "," + xfcc
		checkForwarded(t, doFrom(t, "127.0.0.1", "http://"+addr+"/envoy/x", http.Header{"X-Forwarded-Client-Cert": {two}}))

		// A certificate the trusted CA signed with a DNS SAN holding ','
		// and carol's Cert: Envoy writes it unquoted, which makes a last
		// element of carol's. Refused (its first part is not its Cert's),
		// alone (SANITIZE_SET) and after a proxy's (APPEND_FORWARD).
		sum := sha256.Sum256(carol.Cert.Raw)
		tail := ",Hash=" + hex.EncodeToString(sum[:]) + ";" + xfcc[strings.Index(xfcc, `Cert="`):]
		mallory := demopki.Must(mid.Issue(demopki.Options{CommonName: "mallory", DNSNames: []string{"mallory.example" + tail}}))
		forged := envoyXFCC("spiffe://cluster.local/ns/gw/sa/envoy", mallory, mid)
		// A last DNS SAN `"\` ends the value inside a quote; with the
		// client's own `Cert="<carol>"` before it (APPEND_FORWARD), carol's
		// would be the only element left if the quote went unnoticed.
		mallory2 := demopki.Must(mid.Issue(demopki.Options{CommonName: "mallory", DNSNames: []string{"mallory.example", `"\`}}))
		clientSent := xfcc[strings.Index(xfcc, `Cert="`):]
		for _, v := range []string{forged, envoyXFCC("spiffe://cluster.local/ns/edge/sa/envoy", edge) + "," + forged,
			clientSent + "," + envoyXFCC("spiffe://cluster.local/ns/gw/sa/envoy", mallory2)} {
			if res := doFrom(t, "127.0.0.1", "http://"+addr+"/envoy/x", http.Header{"X-Forwarded-Client-Cert": {v}}); res.status != 400 {
				t.Fatalf("forged last element: %d, caller %q", res.status, res.upstream.Get("X-Caller"))
			}
		}
		// The caller's element without Cert: undecodable.
		if res := doFrom(t, "127.0.0.1", "http://"+addr+"/envoy/x", http.Header{"X-Forwarded-Client-Cert": {"By=spiffe://b;Hash=00;URI=spiffe://c"}}); res.status != 400 {
			t.Fatalf("caller element without Cert: %d", res.status)
		}
		// Not from an allowed address: not believed.
		if res := doFrom(t, "127.0.0.3", "http://"+addr+"/envoy/x", http.Header{"X-Forwarded-Client-Cert": {xfcc}}); res.status != 401 {
			t.Fatalf("xfcc from 127.0.0.3: %d", res.status)
		}
	})

	t.Run("traefik comma chain", func(t *testing.T) {
		// Traefik's passTLSClientCert pem: base64 DER, leaf first, ','.
		value := certcodec.Encode(carol.Cert.Raw, certcodec.Base64DER) + "," + certcodec.Encode(mid.Cert.Raw, certcodec.Base64DER)
		checkForwarded(t, doFrom(t, "127.0.0.1", "http://"+addr+"/traefik/x", http.Header{"X-Forwarded-Tls-Client-Cert": {value}}))
		// The leaf alone does not chain without its intermediate.
		if res := doFrom(t, "127.0.0.1", "http://"+addr+"/traefik/x", http.Header{"X-Forwarded-Tls-Client-Cert": {certcodec.Encode(carol.Cert.Raw, certcodec.Base64DER)}}); res.status != 403 {
			t.Fatalf("leaf without its intermediate: %d", res.status)
		}
	})

	t.Run("form-encoded pem", func(t *testing.T) {
		// java.net.URLEncoder: a space is '+', '+' is %2B.
		var b bytes.Buffer
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: carol.Cert.Raw})
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: mid.Cert.Raw})
		value := testpeer.JavaURLEncode(b.String())
		if !strings.HasPrefix(value, "-----BEGIN+CERTIFICATE-----%0A") {
			t.Fatalf("not as Java encodes it: %.40s", value)
		}
		checkForwarded(t, doFrom(t, "127.0.0.1", "http://"+addr+"/java/x", http.Header{"X-Ssl-Client-Cert": {value}}))
	})
}
