package certcodec

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// The README's table of who sends what, checked against each proxy's own
// output: every value below is built the way that proxy builds it (the
// source of each is named by its case), and must decode, with `auto` and
// with the format the README names, to the certificate (and chain) it was
// made from. The integration tests run the real nginx (TestNginxInFront)
// and HAProxy (TestHAProxyInFront) in front of Caddy.

// opensslPEM is a certificate as OpenSSL's PEM_write_bio_X509 (and Go's
// pem.Encode) writes it: 64-column base64 lines, a newline after each line.
// This is the text nginx, HAProxy, Envoy, F5's X509::whole and AWS start
// from.
func opensslPEM(ders ...[]byte) string {
	var sb strings.Builder
	for _, der := range ders {
		_ = pem.Encode(&sb, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	return sb.String()
}

// nginxEscape is ngx_escape_uri(..., NGX_ESCAPE_URI_COMPONENT), what
// $ssl_client_escaped_cert applies to the PEM: everything but ALPHA, DIGIT,
// "-", ".", "_" and "~" is %XX (upper-case hex).
func nginxEscape(s string) string {
	return escapeExcept(s, "-._~")
}

// albEscape is AWS ALB's encoding of X-Amzn-Mtls-Clientcert(-Leaf):
// "URL-encoded PEM format ..., with +=/ as safe characters", that is
// Python's urllib.parse.quote(pem, safe="+=/"): unreserved characters and
// '+', '=', '/' are left as they are, a space is %20, a newline %0A.
func albEscape(s string) string {
	return escapeExcept(s, "-._~+=/")
}

// escapeExcept percent-encodes every byte of s but ASCII letters, digits
// and the bytes of keep.
func escapeExcept(s, keep string) string {
	const hexd = "0123456789ABCDEF"
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte(keep, c) >= 0 {
			sb.WriteByte(c)
			continue
		}
		sb.WriteByte('%')
		sb.WriteByte(hexd[c>>4])
		sb.WriteByte(hexd[c&15])
	}
	return sb.String()
}

// nginxFolded is nginx's deprecated $ssl_client_cert
// (ngx_ssl_get_certificate): the PEM without its last newline, a tab after
// every other newline, so that the header continues on folded lines.
func nginxFolded(pemText string) string {
	return strings.ReplaceAll(strings.TrimSuffix(pemText, "\n"), "\n", "\n\t")
}

// unfold is what an HTTP/1.1 server hands on of a folded header value: Go's
// net/textproto joins continuation lines with one space.
func unfold(v string) string {
	return strings.ReplaceAll(v, "\n\t", " ")
}

// traefikSanitize is Traefik's passTLSClientCert sanitize (v2.9.2 and
// later, v3): the PEM without its armour and newlines, that is the bare
// base64 of the DER. Before v2.9.2 (traefik/traefik commit 2c550c28,
// "Remove raw cert escape in PassTLSClientCert middleware") it was then
// url.QueryEscape'd.
func traefikSanitize(der []byte) string {
	return strings.NewReplacer("-----BEGIN CERTIFICATE-----", "", "-----END CERTIFICATE-----", "", "\n", "").Replace(opensslPEM(der))
}

// proxyChain returns a leaf issued by an intermediate issued by another
// intermediate: the DER of the leaf and of both intermediates, issuer last.
func proxyChain(t *testing.T) (leaf []byte, inters [][]byte) {
	t.Helper()
	root := demopki.Must(demopki.NewCA("proxies root"))
	mid1 := demopki.Must(root.Issue(demopki.Options{CommonName: "proxies intermediate 1", IsCA: true}))
	mid2 := demopki.Must(mid1.Issue(demopki.Options{CommonName: "proxies intermediate 2", IsCA: true}))
	c := demopki.Must(mid2.Issue(demopki.Options{CommonName: "proxies client"}))
	return c.Cert.Raw, [][]byte{mid2.Cert.Raw, mid1.Cert.Raw}
}

// escapingChain is proxyChain's, made again until the leaf's base64 holds
// '+', '/' and '=', which tell the escapings apart.
func escapingChain(t *testing.T) (leaf []byte, inters [][]byte) {
	t.Helper()
	for i := 0; ; i++ {
		leaf, inters = proxyChain(t)
		b := base64.StdEncoding.EncodeToString(leaf)
		if strings.Contains(b, "+") && strings.Contains(b, "/") && strings.HasSuffix(b, "=") {
			return leaf, inters
		}
		if i == 200 {
			t.Fatal("no certificate with '+', '/' and '=' in its base64 in 200 tries")
		}
	}
}

func TestProxyHeaderValues(t *testing.T) {
	leaf, inters := escapingChain(t)
	b64 := base64.StdEncoding.EncodeToString
	chain := append([][]byte{leaf}, inters...)

	tests := []struct {
		name   string
		value  string
		format Format
		want   [][]byte // leaf first
	}{
		// nginx, ngx_http_ssl_module: "$ssl_client_escaped_cert returns the
		// client certificate in the PEM format (urlencoded)".
		{"nginx $ssl_client_escaped_cert", nginxEscape(opensslPEM(leaf)), URLPEM, chain[:1]},
		// "$ssl_client_cert ... with each line except the first prepended
		// with the tab character" (deprecated), as sent and as unfolded.
		{"nginx $ssl_client_cert, folded", nginxFolded(opensslPEM(leaf)), PEM, chain[:1]},
		{"nginx $ssl_client_cert, unfolded", unfold(nginxFolded(opensslPEM(leaf))), PEM, chain[:1]},

		// Envoy, x-forwarded-client-cert with forward_client_cert_details
		// SANITIZE_SET and set_current_client_cert_details {cert, chain,
		// subject, uri, dns}: Cert and Chain URL-encoded PEM (\n, space, +,
		// / and = escaped), Chain the leaf and what the client sent.
		{"Envoy XFCC", testpeer.Envoy{By: "spiffe://gateway.example/ns/default/sa/envoy", Cert: true, Chain: true, Subject: true, URI: true, DNS: true}.Element(leaf, inters, "CN=proxies client", []string{"spiffe://caller.example/app"}, []string{"caller.example"}), XFCC, chain},

		// Traefik passTLSClientCert {pem: true} → X-Forwarded-Tls-Client-Cert:
		// each certificate's sanitized PEM, joined by ','.
		{"Traefik v2.9.2+ / v3 X-Forwarded-Tls-Client-Cert", strings.Join([]string{traefikSanitize(leaf), traefikSanitize(inters[0]), traefikSanitize(inters[1])}, ","), Base64DER, chain},
		// Before v2.9.2 each sanitized PEM was url.QueryEscape'd too.
		{"Traefik before v2.9.2 X-Forwarded-Tls-Client-Cert (escaped)", strings.Join([]string{url.QueryEscape(traefikSanitize(leaf)), url.QueryEscape(traefikSanitize(inters[0])), url.QueryEscape(traefikSanitize(inters[1]))}, ","), Base64DER, chain},

		// HAProxy, `http-request set-header X-SSL-Client-Cert
		// %[ssl_c_der,base64]`: the base64 converter of the DER, one line.
		{"HAProxy %[ssl_c_der,base64]", b64(leaf), Base64DER, chain[:1]},

		// AWS ALB: X-Amzn-Mtls-Clientcert-Leaf (verify mode) the leaf,
		// X-Amzn-Mtls-Clientcert (passthrough) the whole chain the client
		// sent, "URL-encoded PEM format ..., with +=/ as safe characters".
		{"AWS ALB X-Amzn-Mtls-Clientcert-Leaf", albEscape(opensslPEM(leaf)), URLPEM, chain[:1]},
		{"AWS ALB X-Amzn-Mtls-Clientcert (passthrough, chain)", albEscape(opensslPEM(chain...)), URLPEM, chain},

		// F5 BIG-IP iRules: `HTTP::header insert X-Client-Cert [b64encode
		// [SSL::cert 0]]` (SSL::cert returns the DER), or the PEM of
		// [X509::whole [SSL::cert 0]] with its newlines mapped away
		// ([string map {"\n" " "} ...] or {"\n" ""}), as a header cannot
		// hold them.
		{"F5 [b64encode [SSL::cert 0]]", b64(leaf), Base64DER, chain[:1]},
		{"F5 X509::whole, newlines to spaces", strings.ReplaceAll(opensslPEM(leaf), "\n", " "), PEM, chain[:1]},
		{"F5 X509::whole, newlines removed", strings.ReplaceAll(opensslPEM(leaf), "\n", ""), PEM, chain[:1]},

		// Kong header-cert-auth reads certificate_header_format
		// base64_encoded (base64 of the DER) or url_encoded (URL-encoded
		// PEM, as nginx, on which Kong runs, writes it); its
		// tls-metadata-headers plugin sends the URL-encoded client
		// certificate the same way (X-Client-Cert).
		{"Kong base64_encoded", b64(leaf), Base64DER, chain[:1]},
		{"Kong url_encoded / tls-metadata-headers", nginxEscape(opensslPEM(leaf)), URLPEM, chain[:1]},

		// WSO2 Choreo Connect [enforcer.security.mutualSSL]
		// certificateHeader: with clientCertificateEncode = false the value
		// is "-----BEGIN CERTIFICATE-----" <base64> "-----END
		// CERTIFICATE-----" on one line, the base64 of the DER or (its
		// documentation's example) of the whole PEM text; the enforcer
		// (MtlsUtils.getCertContent) strips the armour and base64-decodes
		// the rest. With clientCertificateEncode = true it URL-decodes
		// first (java.net.URLDecoder): a value java.net.URLEncoder made.
		{"Choreo Connect, base64 DER in armour", "-----BEGIN CERTIFICATE-----" + b64(leaf) + "-----END CERTIFICATE-----", PEM, chain[:1]},
		{"Choreo Connect, documented example (PEM-wrapped PEM)", "-----BEGIN CERTIFICATE-----" + b64([]byte(opensslPEM(leaf))) + "-----END CERTIFICATE-----", PEM, chain[:1]},
		{"Choreo Connect, clientCertificateEncode (URLEncoder)", testpeer.JavaURLEncode(opensslPEM(leaf)), URLPEM, chain[:1]},

		// RFC 9440 Client-Cert, as Caddy's own forward writes it.
		{"RFC 9440 Client-Cert", ":" + b64(leaf) + ":", RFC9440, chain[:1]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Detect(tc.value); got != tc.format {
				t.Fatalf("Detect = %v, want %v", got, tc.format)
			}
			for _, f := range []Format{Auto, tc.format} {
				ders, found, err := Decode(tc.value, f)
				if err != nil {
					t.Fatalf("Decode(%v): %v", f, err)
				}
				if found != tc.format {
					t.Fatalf("Decode(%v) found %v, want %v", f, found, tc.format)
				}
				if len(ders) != len(tc.want) {
					t.Fatalf("Decode(%v): %d certificates, want %d", f, len(ders), len(tc.want))
				}
				for i := range ders {
					if !bytes.Equal(ders[i], tc.want[i]) {
						t.Fatalf("Decode(%v): certificate %d is not the one the value was made from", f, i+1)
					}
				}
			}
		})
	}
}

// TestProxyChainHeaders: the chain fields proxies write, read with `chain`.
func TestProxyChainHeaders(t *testing.T) {
	leaf, inters := proxyChain(t)
	b64 := base64.StdEncoding.EncodeToString
	fields := HeaderFields{Cert: "X-SSL-Client-Cert", Chain: "X-SSL-Client-Chain"}
	same := func(certs []*x509.Certificate, ders ...[]byte) bool {
		if len(certs) != len(ders) {
			return false
		}
		for i := range certs {
			if !bytes.Equal(certs[i].Raw, ders[i]) {
				return false
			}
		}
		return true
	}

	// HAProxy `%[ssl_c_chain_der,base64]` is the base64 of the DER of the
	// certificates the client sent after its leaf, concatenated.
	for _, f := range []Format{Auto, Base64DER} {
		// None sent: HAProxy sets the field to an empty value, which is no
		// chain (the leaf field still decides).
		certs, _, err := ParseHeader(b64(leaf), []string{""}, f, fields)
		if err != nil || !same(certs, leaf) {
			t.Fatalf("HAProxy empty chain, %v: %d certificates, %v", f, len(certs), err)
		}
		// One: the base64 DER of that certificate.
		certs, _, err = ParseHeader(b64(leaf), []string{b64(inters[0])}, f, fields)
		if err != nil || !same(certs, leaf, inters[0]) {
			t.Fatalf("HAProxy chain of one, %v: %d certificates, %v", f, len(certs), err)
		}
		// Two: one base64 item holding both certificates, read in order.
		concat := b64(append(append([]byte{}, inters[0]...), inters[1]...))
		certs, _, err = ParseHeader(b64(leaf), []string{concat}, f, fields)
		if err != nil || !same(certs, leaf, inters[0], inters[1]) {
			t.Fatalf("HAProxy chain of two, %v: %d certificates, %v", f, len(certs), err)
		}
	}
	// An empty leaf field is still no certificate, whatever the chain.
	if _, _, err := ParseHeader("", []string{b64(inters[0])}, Auto, fields); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty leaf field with a chain: %v", err)
	}

	// RFC 9440 Client-Cert-Chain: a list of byte sequences.
	list := ":" + b64(inters[0]) + ":, :" + b64(inters[1]) + ":"
	certs, _, err := ParseHeader(":"+b64(leaf)+":", []string{list}, Auto, fields)
	if err != nil || !same(certs, leaf, inters[0], inters[1]) {
		t.Fatalf("RFC 9440 chain: %d certificates, %v", len(certs), err)
	}
}

// TestTraefikBeforeV292: Traefik before v2.9.2 url.QueryEscape'd each
// certificate's base64 ('+' %2B, '/' %2F, '=' %3D). `base64_der` (and
// `auto`, which finds base64_der) reads it, as the field and as a chain.
func TestTraefikBeforeV292(t *testing.T) {
	leaf, inters := escapingChain(t)
	value := url.QueryEscape(traefikSanitize(leaf)) + "," + url.QueryEscape(traefikSanitize(inters[0]))
	for _, want := range []string{"%2B", "%2F", "%3D"} {
		if !strings.Contains(value, want) {
			t.Fatalf("the escaped value has no %s", want)
		}
	}
	if got := Detect(value); got != Base64DER {
		t.Fatalf("Detect = %v, want base64_der", got)
	}
	for _, f := range []Format{Auto, Base64DER} {
		ders, found, err := Decode(value, f)
		if err != nil || found != Base64DER || len(ders) != 2 || !bytes.Equal(ders[0], leaf) || !bytes.Equal(ders[1], inters[0]) {
			t.Fatalf("Decode(%v): %d certificates, found %v, %v", f, len(ders), found, err)
		}
		// Lower-case hex is percent-encoding too.
		lower := strings.NewReplacer("%2B", "%2b", "%2F", "%2f", "%3D", "%3d").Replace(value)
		if ders, _, err := Decode(lower, f); err != nil || len(ders) != 2 || !bytes.Equal(ders[0], leaf) {
			t.Fatalf("Decode(%v), lower-case escapes: %d certificates, %v", f, len(ders), err)
		}
		// In the chain field, and with HAProxy's concatenation.
		escaped := url.QueryEscape(base64.StdEncoding.EncodeToString(append(append([]byte{}, inters[0]...), inters[1]...)))
		chain, err := DecodeChain(escaped, f)
		if err != nil || len(chain) != 2 || !bytes.Equal(chain[0], inters[0]) || !bytes.Equal(chain[1], inters[1]) {
			t.Fatalf("DecodeChain(%v): %d certificates, %v", f, len(chain), err)
		}
	}
	// Only base64's three escaped characters, only when all are escaped,
	// only in base64_der: anything else is refused, never read.
	b := base64.StdEncoding.EncodeToString(leaf)
	esc := url.QueryEscape(b)
	for name, v := range map[string]string{
		"a letter escaped":            "%4D" + esc[1:],
		"a space":                     esc[:8] + "%20" + esc[8:],
		"a newline":                   esc[:8] + "%0A" + esc[8:],
		"a NUL":                       esc[:8] + "%00" + esc[8:],
		"a comma escaped":             esc + "%2C" + esc,
		"a bad escape":                esc[:8] + "%ZZ" + esc[8:],
		"a truncated escape":          esc + "%3",
		"a lone percent":              esc[:8] + "%" + esc[8:],
		"a double escape":             strings.Replace(esc, "%2B", "%252B", 1),
		"a literal '+' beside %XX":    strings.Replace(esc, "%2B", "+", 1),
		"a literal '/' beside %XX":    strings.Replace(esc, "%2F", "/", 1),
		"a literal '=' beside %XX":    strings.Replace(esc, "%3D", "=", 1),
		"escaped base64url alphabet":  strings.NewReplacer("%2B", "-", "%2F", "_").Replace(esc),
		"rfc9440 with escapes":        ":" + esc + ":",
		"form-encoded, '+' for space": strings.Replace(esc, "%2F", "+", 1),
	} {
		for _, f := range []Format{Auto, Base64DER} {
			if ders, found, err := Decode(v, f); err == nil {
				t.Errorf("%s, %v: read %d certificates as %v", name, f, len(ders), found)
			} else if found == Base64DER && !errors.Is(err, ErrMalformed) {
				t.Errorf("%s, %v: %v, want ErrMalformed", name, f, err)
			}
			if _, err := DecodeChain(v, f); err == nil {
				t.Errorf("%s, %v: read as a chain", name, f)
			}
		}
	}
}
