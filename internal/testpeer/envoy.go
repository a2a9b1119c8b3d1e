package testpeer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"strings"
)

// Envoy is what an Envoy HTTP connection manager writes in
// x-forwarded-client-cert for a client certificate: its own URI SAN as By
// (none if empty), and the keys set_current_client_cert_details turns on.
// FirstURIOnly writes only the first URI SAN, as Envoy did before 1.23.
type Envoy struct {
	By                             string
	Cert, Chain, Subject, URI, DNS bool
	FirstURIOnly                   bool
}

// Element is the element Envoy writes (ConnectionManagerUtility::
// mutateXfccRequestHeader) for the client certificate der, sent with the
// intermediates chain, whose subject (as BoringSSL prints it) and URI and
// DNS SANs (as signed) are given: By, Hash (always), then Cert, Chain (the
// leaf first), Subject (quoted), a URI pair per URI SAN ("URI=" for none)
// and a DNS pair per DNS SAN, the SANs unquoted, joined by ';'.
func (e Envoy) Element(der []byte, chain [][]byte, subject string, uris, dns []string) string {
	var parts []string
	if e.By != "" {
		parts = append(parts, "By="+e.By)
	}
	sum := sha256.Sum256(der)
	parts = append(parts, "Hash="+hex.EncodeToString(sum[:]))
	if e.Cert {
		parts = append(parts, `Cert="`+EnvoyURLEncode(PEM(der))+`"`)
	}
	if e.Chain {
		parts = append(parts, `Chain="`+EnvoyURLEncode(PEM(append([][]byte{der}, chain...)...))+`"`)
	}
	if e.Subject {
		parts = append(parts, `Subject="`+subject+`"`)
	}
	if e.URI {
		switch {
		case len(uris) == 0:
			parts = append(parts, "URI=")
		case e.FirstURIOnly:
			parts = append(parts, "URI="+uris[0])
		default:
			for _, u := range uris {
				parts = append(parts, "URI="+u)
			}
		}
	}
	if e.DNS {
		for _, d := range dns {
			parts = append(parts, "DNS="+d)
		}
	}
	return strings.Join(parts, ";")
}

// PEM is the certificates ders as PEM text, 64 characters a line.
func PEM(ders ...[]byte) string {
	var sb strings.Builder
	for _, der := range ders {
		sb.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	return sb.String()
}

// EnvoyURLEncode URL-encodes PEM text as Envoy does for the Cert and Chain
// keys (ConnectionInfoImplBase::urlEncodedPemEncodedPeerCertificate): only
// '\n', ' ', '+', '/' and '='.
func EnvoyURLEncode(pemText string) string {
	return strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D").Replace(pemText)
}

// JavaURLEncode is java.net.URLEncoder.encode(s, UTF_8): letters, digits and
// ".-*_" as they are, a space as '+', every other byte %XX.
func JavaURLEncode(s string) string {
	const hexd = "0123456789ABCDEF"
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '.', c == '-', c == '*', c == '_':
			sb.WriteByte(c)
		case c == ' ':
			sb.WriteByte('+')
		default:
			sb.WriteByte('%')
			sb.WriteByte(hexd[c>>4])
			sb.WriteByte(hexd[c&15])
		}
	}
	return sb.String()
}
