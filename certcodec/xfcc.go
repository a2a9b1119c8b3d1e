package certcodec

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
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
// URI and DNS (one pair per SAN, unquoted). The caller is the last
// element's: the one the proxy nearest to us appended.

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
// key), then its chain (its Chain key, without the leaf). The last element
// is the caller's: the one the proxy nearest to us appended. A value of
// several elements (Envoy's APPEND_FORWARD) is read only when every element
// is what a proxy writes for its own Cert (see checkXFCCElement): Envoy
// writes URI= and DNS= SANs unquoted, so a certificate whose SAN holds
// `,Cert="<someone else's PEM>"` splits the element Envoy writes for it in
// two, the last of its holder's choosing, and the first no longer matches
// its certificate.
func decodeXFCC(v string) ([][]byte, error) {
	elems, err := splitXFCC(v)
	if err != nil {
		return nil, err
	}
	var caller xfccElement
	for i, s := range elems {
		e, err := parseXFCCElement(s)
		if err != nil {
			return nil, fmt.Errorf("xfcc element %d of %d: %w", i+1, len(elems), err)
		}
		if len(elems) > 1 {
			if err := checkXFCCElement(&e); err != nil {
				return nil, fmt.Errorf("%w: xfcc element %d of %d: %v", ErrMalformed, i+1, len(elems), err)
			}
		}
		caller = e
	}
	if !caller.haveCert {
		return nil, fmt.Errorf("%w: the caller's xfcc element has no Cert", ErrMalformed)
	}
	ders, err := decodeXFCCCert(caller.cert)
	if err != nil {
		return nil, err
	}
	// Envoy always writes Hash, before the SANs: one that is not the Cert's
	// tells a Cert a SAN supplied (an Envoy set to write none).
	if err := checkXFCCHash(&caller, ders[0]); err != nil {
		return nil, fmt.Errorf("%w: xfcc element: %v", ErrMalformed, err)
	}
	if !caller.haveChain {
		return ders, nil
	}
	more, err := decodeURLPEM(caller.chain)
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

// decodeXFCCCert decodes a Cert value: one certificate, URL-encoded PEM.
func decodeXFCCCert(cert string) ([][]byte, error) {
	ders, err := decodeURLPEM(cert)
	if err != nil {
		return nil, fmt.Errorf("xfcc Cert: %w", err)
	}
	if len(ders) != 1 {
		return nil, fmt.Errorf("%w: xfcc Cert holds %d certificates, want 1", ErrMalformed, len(ders))
	}
	return ders, nil
}

// xfccElement is what one element says: its Cert, Chain and Hash values,
// and its URI and DNS values in order.
type xfccElement struct {
	cert, chain, hash             string
	haveCert, haveChain, haveHash bool
	uris, dns                     []string
}

// parseXFCCElement reads the pairs of one element. Cert, Chain and Hash
// may appear once each; other keys are passed over.
func parseXFCCElement(elem string) (xfccElement, error) {
	var e xfccElement
	for rest := elem; ; {
		key, val, r, more, err := nextXFCCPair(rest)
		if err != nil {
			return e, err
		}
		rest = r
		var have *bool
		switch {
		case strings.EqualFold(key, "Cert"):
			e.cert, have = val, &e.haveCert
		case strings.EqualFold(key, "Chain"):
			e.chain, have = val, &e.haveChain
		case strings.EqualFold(key, "Hash"):
			e.hash, have = val, &e.haveHash
		case strings.EqualFold(key, "URI"):
			e.uris = append(e.uris, val)
		case strings.EqualFold(key, "DNS"):
			e.dns = append(e.dns, val)
		}
		if have != nil {
			if *have {
				return e, fmt.Errorf("%w: %s twice", ErrMalformed, key)
			}
			*have = true
		}
		if !more {
			return e, nil
		}
	}
}

// checkXFCCElement checks that e is what a proxy writes for the certificate
// in its Cert: it has a Cert; its Hash, if any, is the certificate's
// SHA-256; its URI pairs, if any, are exactly the certificate's URI SANs in
// order, or only the first (Envoy before 1.23), or one empty pair for none;
// its DNS pairs, if any, exactly its DNS SANs in order; and the certificate
// parses. Values are compared with the SANs as signed, byte for byte, as
// Envoy writes them: a SAN cut short at a ',' fails the comparison.
func checkXFCCElement(e *xfccElement) error {
	if !e.haveCert {
		return errors.New("no Cert (with several elements, each must carry its certificate)")
	}
	ders, err := decodeXFCCCert(e.cert)
	if err != nil {
		return err
	}
	if err := checkXFCCHash(e, ders[0]); err != nil {
		return err
	}
	uris, dns, err := rawSANs(ders[0])
	if err != nil {
		return err
	}
	switch {
	case len(e.uris) == 0, slices.Equal(e.uris, uris):
	case len(uris) == 0 && len(e.uris) == 1 && e.uris[0] == "":
	case len(uris) > 0 && len(e.uris) == 1 && e.uris[0] == uris[0]:
	default:
		return errors.New("its URI values are not its Cert's URI SANs (a SAN holding ',' or ';'?)")
	}
	if len(e.dns) > 0 && !slices.Equal(e.dns, dns) {
		return errors.New("its DNS values are not its Cert's DNS SANs (a SAN holding ',' or ';'?)")
	}
	return nil
}

// checkXFCCHash checks that e's Hash, if it has one, is the SHA-256 of der,
// its Cert.
func checkXFCCHash(e *xfccElement, der []byte) error {
	if !e.haveHash {
		return nil
	}
	sum := sha256.Sum256(der)
	if !strings.EqualFold(e.hash, hex.EncodeToString(sum[:])) {
		return errors.New("its Hash is not its Cert's")
	}
	return nil
}

// oidSubjectAltName is the subjectAltName extension's.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// rawSANs returns the URI and DNS SANs of the certificate der as signed
// (see sanStrings).
func rawSANs(der []byte) (uris, dns []string, err error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("its Cert: %v", err)
	}
	uris, dns, ok := sanStrings(c)
	if !ok {
		return nil, nil, errors.New("its Cert: malformed subjectAltName")
	}
	return uris, dns, nil
}

// sanStrings returns a certificate's URI and DNS SANs as signed, byte for
// byte, in order, as Envoy writes them: Go's parser keeps URIs only as
// parsed URLs, whose String may differ (a scheme in upper case is written
// in lower case). ok is false if the extension does not read.
func sanStrings(c *x509.Certificate) (uris, dns []string, ok bool) {
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		in := cryptobyte.String(ext.Value)
		var names cryptobyte.String
		if !in.ReadASN1(&names, cbasn1.SEQUENCE) || !in.Empty() {
			return nil, nil, false
		}
		for !names.Empty() {
			var name cryptobyte.String
			var tag cbasn1.Tag
			if !names.ReadAnyASN1(&name, &tag) {
				return nil, nil, false
			}
			switch tag {
			case cbasn1.Tag(2).ContextSpecific():
				dns = append(dns, string(name))
			case cbasn1.Tag(6).ContextSpecific():
				uris = append(uris, string(name))
			}
		}
	}
	return uris, dns, true
}

// maxXFCCElements is the most elements a value may have: one per proxy.
const maxXFCCElements = MaxCerts

// splitXFCC returns the elements of v: its parts between ',' outside quoted
// values. Every quote must be closed, a '\\' in a quoted value must escape
// a byte, and no element may be empty.
func splitXFCC(v string) ([]string, error) {
	var elems []string
	inQuote, escaped, start := false, false, 0
	for i := 0; i <= len(v); i++ {
		if i < len(v) {
			c := v[i]
			switch {
			case escaped:
				escaped = false // a quoted pair: this byte is literal
				continue
			case inQuote && c == '\\':
				escaped = true
				continue
			case c == '"':
				inQuote = !inQuote
				continue
			case inQuote || c != ',':
				continue
			}
		}
		if inQuote {
			return nil, fmt.Errorf("%w: xfcc value has an unterminated quote", ErrMalformed)
		}
		elem := trimOWS(v[start:i])
		if elem == "" {
			return nil, fmt.Errorf("%w: empty xfcc element", ErrMalformed)
		}
		if len(elems) == maxXFCCElements {
			return nil, fmt.Errorf("%w: xfcc value of more than %d elements", ErrMalformed, maxXFCCElements)
		}
		elems = append(elems, elem)
		start = i + 1
	}
	return elems, nil
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
// Subject (always quoted), a URI pair per URI SAN and a DNS pair per DNS SAN
// as signed, quoted where they hold what needs it. No By: that names the proxy's own
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
	uris, dns, _ := sanStrings(c) // c parsed: its extension reads
	for _, u := range uris {
		sb.WriteString(";URI=")
		writeXFCCValue(&sb, u, false)
	}
	for _, d := range dns {
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
