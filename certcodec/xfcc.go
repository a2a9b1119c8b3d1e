package certcodec

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// Envoy's x-forwarded-client-cert (XFCC), as its documentation
// (configuration/http/http_conn_man/headers) and its HTTP connection manager
// (ConnectionManagerUtility::mutateXfccRequestHeader) define and write it:
//
//	xfcc    = element *( "," element )     ; one per proxy; a proxy appends its own
//	element = pair *( ";" pair )
//	pair    = key "=" ( value / quoted )   ; keys case-insensitive
//	quoted  = DQUOTE *( qchar / "\" CHAR ) DQUOTE   ; needed when , ; = appear
//
// Keys: By, Hash, Cert (URL-encoded PEM of the client certificate), Chain
// (URL-encoded PEM of its chain, leaf included), Subject (always quoted),
// URI and DNS (one pair per SAN). The caller is the last element's: the one
// the proxy nearest to us appended.

// xfccKeys are the keys Envoy writes; a value that starts with one of them
// followed by '=' is XFCC to Detect.
var xfccKeys = [...]string{"By", "Hash", "Cert", "Chain", "Subject", "URI", "DNS"}

// isXFCC reports whether v starts with an XFCC key and '='.
func isXFCC(v string) bool {
	eq := strings.IndexByte(v, '=')
	if eq <= 0 {
		return false
	}
	for _, k := range xfccKeys {
		if strings.EqualFold(v[:eq], k) {
			return true
		}
	}
	return false
}

// decodeXFCC returns the certificate of the value's last element (its Cert
// key), then its chain (its Chain key, without the leaf).
func decodeXFCC(v string) ([][]byte, error) {
	elem, err := onlyXFCCElement(v)
	if err != nil {
		return nil, err
	}
	var cert, chain string
	var haveCert, haveChain bool
	for rest := elem; ; {
		var key, val string
		var more bool
		key, val, rest, more, err = nextXFCCPair(rest)
		if err != nil {
			return nil, err
		}
		switch {
		case strings.EqualFold(key, "Cert"):
			if haveCert {
				return nil, fmt.Errorf("%w: xfcc element has Cert twice", ErrMalformed)
			}
			cert, haveCert = val, true
		case strings.EqualFold(key, "Chain"):
			if haveChain {
				return nil, fmt.Errorf("%w: xfcc element has Chain twice", ErrMalformed)
			}
			chain, haveChain = val, true
		}
		if !more {
			break
		}
	}
	if !haveCert {
		return nil, fmt.Errorf("%w: the caller's xfcc element has no Cert", ErrMalformed)
	}
	ders, err := decodeURLPEM(cert)
	if err != nil {
		return nil, fmt.Errorf("xfcc Cert: %w", err)
	}
	if len(ders) != 1 {
		return nil, fmt.Errorf("%w: xfcc Cert holds %d certificates, want 1", ErrMalformed, len(ders))
	}
	if !haveChain {
		return ders, nil
	}
	more, err := decodeURLPEM(chain)
	if err != nil {
		return nil, fmt.Errorf("xfcc Chain: %w", err)
	}
	if bytes.Equal(more[0], ders[0]) {
		more = more[1:] // Envoy's Chain starts with the leaf
	}
	if 1+len(more) > MaxCerts {
		return nil, ErrTooMany
	}
	return append(ders, more...), nil
}

// onlyXFCCElement returns the one element of v. A value of several
// elements is refused: Envoy writes URI= and DNS= SANs unquoted, so a
// certificate whose SAN holds `,Cert="<someone else's PEM>"` would make a
// last element of its own choosing; with forward_client_cert_details
// SANITIZE_SET (one element, the caller's) there is nothing to choose.
// Every quote must be closed.
func onlyXFCCElement(v string) (string, error) {
	inQuote := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inQuote && c == '\\':
			i++ // a quoted pair: the next byte is literal
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == ',':
			return "", fmt.Errorf("%w: xfcc value of more than one element (set the proxy to sanitize and set the header: one element, the caller's)", ErrMalformed)
		}
	}
	if inQuote {
		return "", fmt.Errorf("%w: xfcc value has an unterminated quote", ErrMalformed)
	}
	elem := trimOWS(v)
	if elem == "" {
		return "", fmt.Errorf("%w: empty xfcc element", ErrMalformed)
	}
	return elem, nil
}

// nextXFCCPair reads the key=value pair at the start of s (one element),
// unquoting a quoted value. more reports whether a ';' and another pair
// follow, in rest.
func nextXFCCPair(s string) (key, val, rest string, more bool, err error) {
	s = trimOWS(s)
	eq := strings.IndexByte(s, '=')
	if eq < 0 {
		return "", "", "", false, fmt.Errorf("%w: xfcc pair without '='", ErrMalformed)
	}
	key = trimOWS(s[:eq])
	if !isToken(key) {
		return "", "", "", false, fmt.Errorf("%w: xfcc key %.40q", ErrMalformed, key)
	}
	s = s[eq+1:]
	if strings.HasPrefix(s, `"`) {
		var sb strings.Builder
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			sb.WriteByte(s[i])
		}
		if i == len(s) {
			return "", "", "", false, fmt.Errorf("%w: xfcc value has an unterminated quote", ErrMalformed)
		}
		val, s = sb.String(), trimOWS(s[i+1:])
		if s != "" && s[0] != ';' {
			return "", "", "", false, fmt.Errorf("%w: data after a quoted xfcc value", ErrMalformed)
		}
	} else {
		end := strings.IndexByte(s, ';')
		if end < 0 {
			end = len(s)
		}
		val, s = trimOWS(s[:end]), s[end:]
		if strings.IndexByte(val, '"') >= 0 {
			return "", "", "", false, fmt.Errorf("%w: quote inside an unquoted xfcc value", ErrMalformed)
		}
	}
	if s == "" {
		return key, val, "", false, nil
	}
	return key, val, s[1:], true, nil
}

// isToken reports whether s is a non-empty run of letters, digits, '-' and
// '_' (every XFCC key is one).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// encodeXFCC writes one XFCC element for the certificate der (c, if not nil,
// is it parsed), as Envoy and Istio write the caller's: Hash, Cert (quoted,
// URL-encoded PEM ending in a newline, byte for byte Envoy's), then, from c,
// Subject (always quoted), a URI pair per URI SAN and a DNS pair per DNS SAN,
// quoted where they hold what needs it. No By: that names the proxy's own
// URI SAN, which Caddy's server certificate need not have.
func encodeXFCC(der []byte, c *x509.Certificate) string {
	sum := sha256.Sum256(der)
	cert := escapeAll(pemBlock(der, '\n', true))
	var sb strings.Builder
	sb.Grow(len(cert) + 256)
	sb.WriteString("Hash=")
	sb.WriteString(hex.EncodeToString(sum[:]))
	sb.WriteString(`;Cert="`)
	sb.WriteString(cert)
	sb.WriteByte('"')
	if c == nil {
		return sb.String()
	}
	sb.WriteString(";Subject=")
	writeXFCCValue(&sb, c.Subject.String(), true)
	for _, u := range c.URIs {
		sb.WriteString(";URI=")
		writeXFCCValue(&sb, u.String(), false)
	}
	for _, d := range c.DNSNames {
		sb.WriteString(";DNS=")
		writeXFCCValue(&sb, d, false)
	}
	return sb.String()
}

// writeXFCCValue writes v, quoted when quote is set or v holds a character
// that needs it (',', ';', '=', '"', '\', white space), with '"' and '\'
// escaped. Control characters, which no header value may hold, are written
// as %XX.
func writeXFCCValue(sb *strings.Builder, v string, quote bool) {
	quote = quote || v == "" || strings.ContainsAny(v, ",;=\"\\ \t")
	if quote {
		sb.WriteByte('"')
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c < 0x20 || c == 0x7f:
			const hexd = "0123456789ABCDEF"
			sb.WriteByte('%')
			sb.WriteByte(hexd[c>>4])
			sb.WriteByte(hexd[c&15])
		case c == '"' || c == '\\':
			sb.WriteByte('\\')
			sb.WriteByte(c)
		default:
			sb.WriteByte(c)
		}
	}
	if quote {
		sb.WriteByte('"')
	}
}
