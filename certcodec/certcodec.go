// Package certcodec decodes and encodes X.509 certificates as they travel in
// HTTP header fields set by TLS-terminating proxies: RFC 9440 byte sequences,
// URL-encoded PEM (nginx's $ssl_client_escaped_cert, AWS ALB; '+' for a space,
// as java.net.URLEncoder writes it, too), PEM with its newlines folded into
// spaces or tabs, bare base64 DER (one, or a comma-separated chain as Traefik
// sends it, URL-escaped as Traefik before v2.9.2 sent it; in a chain field
// also several certificates' DER back to back, as HAProxy's ssl_c_chain_der),
// and Envoy's x-forwarded-client-cert (XFCC).
//
// Every value is treated as hostile: sizes and counts are bounded, and
// anything that is not exactly one of the formats is an error with a reason.
// Decode and DecodeChain return DER bytes; ParseHeader also parses them,
// for a caller that found no cached verdict by the raw value.
//
// ParsePEM reads the PEM texts operators give (certificate files, the admin
// API's fields) by the rules the caller asks for.
package certcodec

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Format is a way of carrying a certificate in a header field.
type Format uint8

// The formats. Auto is for decoding only: it tells the others apart.
const (
	Auto      Format = iota // detect any of the others
	RFC9440                 // ":<base64 DER>:" (RFC 9440 / RFC 8941 byte sequence)
	URLPEM                  // URL-encoded PEM
	PEM                     // PEM, newlines possibly folded into spaces or tabs
	Base64DER               // bare base64 of the DER bytes (%2B, %2F, %3D allowed); a chain comma-separated, leaf first
	XFCC                    // Envoy's x-forwarded-client-cert: its last element's Cert and Chain
)

var formatNames = [...]string{"auto", "rfc9440", "url_pem", "pem", "base64_der", "xfcc"}

// String returns the format's configuration name.
func (f Format) String() string {
	if int(f) < len(formatNames) {
		return formatNames[f]
	}
	return fmt.Sprintf("format(%d)", uint8(f))
}

// ParseFormat returns the format with the configuration name s.
func ParseFormat(s string) (Format, error) {
	for i, name := range formatNames {
		if s == name {
			return Format(i), nil
		}
	}
	return 0, fmt.Errorf("unknown certificate format %q (want one of %s)", s, strings.Join(formatNames[:], ", "))
}

// Limits on what a header may carry.
const (
	// MaxValueLen is the longest header value that is decoded.
	MaxValueLen = 32 << 10
	// MaxCerts is the most certificates one value (leaf plus chain) may carry.
	MaxCerts = 10
)

// Errors that decoding wraps, so callers can tell them apart with errors.Is.
var (
	ErrEmpty     = errors.New("empty value")
	ErrTooLarge  = fmt.Errorf("value longer than %d bytes", MaxValueLen)
	ErrTooMany   = fmt.Errorf("more than %d certificates", MaxCerts)
	ErrMalformed = errors.New("malformed value")
)

const (
	pemBegin = "-----BEGIN "
	pemEnd   = "-----END "
	pemDash  = "-----"
)

// Detect tells which format a header value is in. It does not validate the
// value: decoding does.
func Detect(value string) Format {
	v := trimOWS(value)
	switch {
	case strings.HasPrefix(v, ":"):
		return RFC9440
	case strings.HasPrefix(v, "%"), strings.HasPrefix(v, "-----BEGIN%"), strings.HasPrefix(v, "-----BEGIN+"):
		// '%' is no base64 character, and plain PEM has none either; nor
		// has plain PEM a '+' in its armour (form encoding's space).
		return URLPEM
	case strings.HasPrefix(v, pemBegin):
		return PEM
	case isXFCC(v):
		// "<key>=": base64 has '=' only at its end.
		return XFCC
	default:
		// Also base64 URL-escaped (Traefik before v2.9.2): a certificate's
		// DER starts with 0x30, its base64 with 'M', never with '%'.
		return Base64DER
	}
}

// Decode decodes a header value that carries one client certificate. PEM and
// URL-encoded PEM may carry further certificates after the leaf (AWS ALB sends
// the whole chain so), base64 DER a comma-separated chain, leaf first
// (Traefik's X-Forwarded-Tls-Client-Cert; an item that holds '%' is base64
// URL-escaped, as Traefik before v2.9.2 wrote it: see unescapeBase64), and
// XFCC its caller's chain in its element's Chain key; they are returned after
// the leaf. An RFC 9440 value holds exactly one certificate: a list is an
// error. The format found is returned too (f itself unless f is Auto).
func Decode(value string, f Format) (ders [][]byte, found Format, err error) {
	v, err := checkValue(value)
	if err != nil {
		return nil, f, err
	}
	if f == Auto {
		f = Detect(v)
	}
	switch f {
	case RFC9440:
		der, err := decodeByteSequence(v)
		if err != nil {
			return nil, f, err
		}
		return [][]byte{der}, f, nil
	case Base64DER:
		ders, err = decodeList(v, Base64DER, false)
		return ders, f, err
	case URLPEM:
		ders, err = decodeURLPEM(v)
		return ders, f, err
	case PEM:
		ders, err = decodePEM(v, 0)
		return ders, f, err
	case XFCC:
		ders, err = decodeXFCC(v)
		return ders, f, err
	}
	return nil, f, fmt.Errorf("unknown certificate format %d", f)
}

// DecodeChain decodes a header value that carries the certificates of a chain
// (leaf excluded): an RFC 9440 list of byte sequences, concatenated PEM blocks,
// or comma-separated base64 DER (URL-escaped or not, as Decode reads it). A
// base64 DER item may hold several certificates' DER back to back, as
// HAProxy's %[ssl_c_chain_der,base64] does: they are returned one by one, in
// order, at most MaxCerts in all. Auto detects the format from the first
// item. XFCC has no chain field (its chain is in its Chain key): an error.
func DecodeChain(value string, f Format) ([][]byte, error) {
	v, err := checkValue(value)
	if err != nil {
		return nil, err
	}
	if f == Auto {
		f = Detect(v)
	}
	switch f {
	case URLPEM, PEM:
		ders, _, err := Decode(v, f)
		return ders, err
	case RFC9440, Base64DER:
		return decodeList(v, f, true)
	case XFCC:
		return nil, fmt.Errorf("%w: xfcc carries the chain in its Chain key, not in a chain field", ErrMalformed)
	}
	return nil, fmt.Errorf("unknown certificate format %d", f)
}

// decodeList decodes a comma-separated list of RFC 9440 byte sequences or
// of base64 DER, at most MaxCerts certificates. In a chain (chain set), a
// base64 DER item may hold several certificates back to back (see
// appendDERs); an RFC 9440 byte sequence is one certificate (RFC 9440,
// section 2.2), and so is an item of a certificate field. Errors name the
// item at fault by number (a list of one only if it is a chain).
func decodeList(v string, f Format, chain bool) ([][]byte, error) {
	label := "item"
	if chain {
		label = "chain item"
	}
	var ders [][]byte
	n := 0
	for item := range strings.SplitSeq(v, ",") {
		if len(ders) == MaxCerts {
			return nil, ErrTooMany
		}
		n++
		item = trimOWS(item)
		var der []byte
		var err error
		if f == RFC9440 {
			der, err = decodeByteSequence(item)
		} else {
			der, err = decodeBase64DER(item)
		}
		if err != nil {
			if !chain && !strings.Contains(v, ",") {
				return nil, err
			}
			return nil, fmt.Errorf("%s %d: %w", label, n, err)
		}
		if chain && f == Base64DER {
			if ders, err = appendDERs(ders, der); err != nil {
				return nil, err
			}
			continue
		}
		ders = append(ders, der)
	}
	return ders, nil
}

// appendDERs appends to ders the certificates of der, the DER of one or
// more certificates back to back (HAProxy's ssl_c_chain_der), split as
// x509.ParseCertificates splits them: each one DER SEQUENCE element. What
// does not read as one is appended as it is, for the parse to refuse as
// that certificate. More than MaxCerts in all is ErrTooMany, found before
// anything is parsed.
func appendDERs(ders [][]byte, der []byte) ([][]byte, error) {
	for s := cryptobyte.String(der); len(s) > 0; {
		if len(ders) == MaxCerts {
			return nil, ErrTooMany
		}
		rest := s
		var elem cryptobyte.String
		if !s.ReadASN1Element(&elem, cbasn1.SEQUENCE) {
			return append(ders, rest[:len(rest):len(rest)]), nil
		}
		ders = append(ders, elem[:len(elem):len(elem)])
	}
	return ders, nil
}

// decodeBase64DER decodes one base64_der item, URL-escaped if it holds '%'.
func decodeBase64DER(item string) ([]byte, error) {
	if strings.IndexByte(item, '%') >= 0 {
		var err error
		if item, err = unescapeBase64(item); err != nil {
			return nil, err
		}
	}
	return decodeBase64(item)
}

// unescapeBase64 undoes the URL-escaping of base64 that Traefik's
// passTLSClientCert applied before v2.9.2 (url.QueryEscape of each
// certificate's base64): '+', '/' and '=' are %2B, %2F and %3D (either case
// of hex). Nothing else is read: any other escape (a letter, a space, a
// comma), a malformed one, or one of the three left bare beside escapes
// (form encoding's '+' would be a space) is malformed.
func unescapeBase64(s string) (string, error) {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%':
			if len(s)-i < 3 {
				return "", fmt.Errorf("%w: truncated percent-escape at offset %d", ErrMalformed, i)
			}
			switch h := s[i+1 : i+3]; h {
			case "2B", "2b":
				b = append(b, '+')
			case "2F", "2f":
				b = append(b, '/')
			case "3D", "3d":
				b = append(b, '=')
			default:
				return "", fmt.Errorf("%w: percent-escape %q at offset %d in base64 (only %%2B, %%2F and %%3D are read)", ErrMalformed, "%"+h, i)
			}
			i += 2
		case '+', '/', '=':
			return "", fmt.Errorf("%w: unescaped %q at offset %d in URL-escaped base64", ErrMalformed, c, i)
		default:
			b = append(b, c) // decodeBase64 checks the alphabet
		}
	}
	return string(b), nil
}

// decodeURLPEM decodes URL-encoded PEM. Encoders differ on '+': nginx, Envoy
// and AWS write a space as %20 and may leave a base64 '+' as it is; form
// encoding (java.net.URLEncoder, url.QueryEscape) writes a space as '+' and
// '+' as %2B. A value that escapes '+' is form-encoded: its bare '+' are
// spaces. In any other, a bare '+' is base64's, except in the armour lines
// ("-----BEGIN+CERTIFICATE-----"), where base64 has no place and it can only
// be a space.
func decodeURLPEM(v string) ([][]byte, error) {
	var text string
	var err error
	if strings.IndexByte(v, '+') >= 0 && (strings.Contains(v, "%2B") || strings.Contains(v, "%2b")) {
		text, err = url.QueryUnescape(v)
	} else {
		text, err = url.PathUnescape(v)
		text = armourSpaces(text)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: url-encoding: %v", ErrMalformed, err)
	}
	return decodePEM(text, 0)
}

// armourSpaces turns the '+' of PEM armour lines ("-----BEGIN+PRIVATE+KEY-----")
// into the spaces they stand for, leaving every other '+' as it is.
func armourSpaces(s string) string {
	if !strings.Contains(s, "-----BEGIN+") && !strings.Contains(s, "-----END+") {
		return s
	}
	b := []byte(s)
	for i := 0; ; {
		j := strings.Index(s[i:], pemDash)
		if j < 0 {
			break
		}
		j += i + len(pemDash)
		if !strings.HasPrefix(s[j:], "BEGIN+") && !strings.HasPrefix(s[j:], "END+") {
			i = j
			continue
		}
		k := strings.Index(s[j:], pemDash)
		if k < 0 {
			break
		}
		for m := j; m < j+k; m++ {
			if b[m] == '+' {
				b[m] = ' '
			}
		}
		i = j + k + len(pemDash)
	}
	return string(b)
}

// Encode encodes DER certificate bytes for a header field in format f (Auto
// means RFC9440). For XFCC the bytes are parsed for the subject and SANs;
// a caller that holds the parsed certificate uses EncodeCertificate.
func Encode(der []byte, f Format) string {
	switch f {
	case Base64DER:
		return base64.StdEncoding.EncodeToString(der)
	case PEM:
		// Header values cannot hold newlines: PEM folds them into spaces,
		// URL-encoded PEM keeps them as %0A.
		return pemBlock(der, ' ', false)
	case URLPEM:
		return escapeAll(pemBlock(der, '\n', false))
	case XFCC:
		c, err := x509.ParseCertificate(der)
		if err != nil {
			c = nil // bytes that are no certificate: Hash and Cert only
		}
		return encodeXFCC(der, c)
	default:
		return ":" + base64.StdEncoding.EncodeToString(der) + ":"
	}
}

// EncodeCertificate encodes c for a header field in format f, as Encode does
// its DER bytes.
func EncodeCertificate(c *x509.Certificate, f Format) string {
	if f == XFCC {
		return encodeXFCC(c.Raw, c)
	}
	return Encode(c.Raw, f)
}

// pemBlock returns der as a PEM CERTIFICATE block whose lines are separated
// by sep, ending with sep if final.
func pemBlock(der []byte, sep byte, final bool) string {
	b64 := base64.StdEncoding.EncodeToString(der)
	var sb strings.Builder
	sb.Grow(len(b64) + len(b64)/64 + 64)
	sb.WriteString("-----BEGIN CERTIFICATE-----")
	for len(b64) > 0 {
		n := min(64, len(b64))
		sb.WriteByte(sep)
		sb.WriteString(b64[:n])
		b64 = b64[n:]
	}
	sb.WriteByte(sep)
	sb.WriteString("-----END CERTIFICATE-----")
	if final {
		sb.WriteByte(sep)
	}
	return sb.String()
}

// escapeAll percent-encodes every byte but RFC 3986's unreserved ones, as
// nginx's $ssl_client_escaped_cert does, so that no decoder (one that reads
// '+' as a space, say) can take the value for anything else.
func escapeAll(s string) string {
	const hex = "0123456789ABCDEF"
	var sb strings.Builder
	sb.Grow(len(s) * 3 / 2)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			sb.WriteByte(c)
			continue
		}
		sb.WriteByte('%')
		sb.WriteByte(hex[c>>4])
		sb.WriteByte(hex[c&15])
	}
	return sb.String()
}

func checkValue(value string) (string, error) {
	if len(value) > MaxValueLen {
		return "", ErrTooLarge
	}
	v := trimOWS(value)
	if v == "" {
		return "", ErrEmpty
	}
	return v, nil
}

// decodeByteSequence decodes one RFC 8941 byte sequence, ":" base64 ":".
// Parameters are not defined for RFC 9440's fields and are refused.
func decodeByteSequence(v string) ([]byte, error) {
	if len(v) < 2 || v[0] != ':' {
		return nil, fmt.Errorf("%w: byte sequence must start with ':'", ErrMalformed)
	}
	end := strings.IndexByte(v[1:], ':')
	if end < 0 {
		return nil, fmt.Errorf("%w: byte sequence has no closing ':'", ErrMalformed)
	}
	if 1+end+1 != len(v) {
		if strings.ContainsAny(v[1+end+1:], ",") {
			return nil, fmt.Errorf("%w: a list where one certificate is expected", ErrMalformed)
		}
		return nil, fmt.Errorf("%w: unexpected data after byte sequence", ErrMalformed)
	}
	return decodeBase64(v[1 : 1+end])
}

// decodeBase64 decodes standard base64, with or without '=' padding (RFC 8941
// asks parsers not to insist on it).
func decodeBase64(s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: no base64 data", ErrMalformed)
	}
	if trimmed := strings.TrimRight(s, "="); len(trimmed) != len(s) {
		if len(s)-len(trimmed) > 2 || len(s)%4 != 0 {
			return nil, fmt.Errorf("%w: invalid base64 padding", ErrMalformed)
		}
		s = trimmed
	}
	for i := 0; i < len(s); i++ {
		if !isBase64Char(s[i]) {
			return nil, fmt.Errorf("%w: invalid base64 character at offset %d", ErrMalformed, i)
		}
	}
	der, err := base64.RawStdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %v", ErrMalformed, err)
	}
	return der, nil
}

// decodePEM decodes one or more CERTIFICATE blocks whose line breaks may be
// newlines, spaces or tabs. depth counts the nesting of a block whose body is
// itself base64 of a PEM text, as some gateways send; one level is allowed.
func decodePEM(text string, depth int) ([][]byte, error) {
	var ders [][]byte
	rest := trimSpace(text)
	for rest != "" {
		if len(ders) == MaxCerts {
			return nil, ErrTooMany
		}
		if !strings.HasPrefix(rest, pemBegin) {
			return nil, fmt.Errorf("%w: expected %q", ErrMalformed, "-----BEGIN CERTIFICATE-----")
		}
		typEnd := strings.Index(rest[len(pemBegin):], pemDash)
		if typEnd < 0 {
			return nil, fmt.Errorf("%w: unterminated PEM header line", ErrMalformed)
		}
		typ := rest[len(pemBegin) : len(pemBegin)+typEnd]
		if typ != "CERTIFICATE" {
			if strings.Contains(typ, "PRIVATE KEY") {
				return nil, fmt.Errorf("%w: PEM block is a private key, not a certificate", ErrMalformed)
			}
			return nil, fmt.Errorf("%w: PEM block type %.40q, want CERTIFICATE", ErrMalformed, typ)
		}
		body := rest[len(pemBegin)+typEnd+len(pemDash):]
		endMarker := pemEnd + typ + pemDash
		bodyEnd := strings.Index(body, endMarker)
		if bodyEnd < 0 {
			return nil, fmt.Errorf("%w: PEM block has no END line", ErrMalformed)
		}
		rest = trimSpace(body[bodyEnd+len(endMarker):])
		b64 := removeSpace(body[:bodyEnd])
		der, err := decodeBase64(b64)
		if err != nil {
			return nil, fmt.Errorf("PEM body: %w", err)
		}
		if strings.HasPrefix(string(der), pemBegin) {
			if depth > 0 {
				return nil, fmt.Errorf("%w: PEM wrapped in base64 more than once", ErrMalformed)
			}
			inner, err := decodePEM(string(der), depth+1)
			if err != nil {
				return nil, fmt.Errorf("base64-wrapped PEM: %w", err)
			}
			if len(ders)+len(inner) > MaxCerts {
				return nil, ErrTooMany
			}
			ders = append(ders, inner...)
			continue
		}
		ders = append(ders, der)
	}
	if len(ders) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrMalformed)
	}
	return ders, nil
}

func isBase64Char(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/'
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func trimOWS(s string) string { return strings.Trim(s, " \t") }

func trimSpace(s string) string { return strings.Trim(s, " \t\r\n") }

func removeSpace(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if isSpace(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	b := make([]byte, 0, len(s)-n)
	for i := 0; i < len(s); i++ {
		if !isSpace(s[i]) {
			b = append(b, s[i])
		}
	}
	return string(b)
}
