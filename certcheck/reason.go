// Package certcheck judges client certificates by the rules of
// client_cert_auth: which are accepted, and why the others are not. The
// handler, `caddy mtls inspect`, the admin API and the metrics all take the
// rules and the reasons from here.
package certcheck

// Reason is why a certificate (or a request's lack of one) is refused; the
// zero Reason, OK, means accepted.
type Reason uint8

// The reasons, as logs, metrics and `caddy mtls inspect` name them.
const (
	OK                Reason = iota // accepted
	NoCert                          // no certificate presented
	Untrusted                       // no chain to the trust pool, and not pinned
	Expired                         // past its notAfter (or a certificate of its chain is)
	NotYetValid                     // before its notBefore
	CACertificate                   // a CA certificate presented as a client's, under the trust pool
	EKU                             // an extended key usage without clientAuth
	KeyUsage                        // a key usage that cannot sign a TLS handshake, or signs certificates
	Revoked                         // on its issuer's CRL, or revoked by OCSP
	RevocationUnknown               // revocation status cannot be told, in strict mode
	BadHeader                       // an allowed proxy sent a header that cannot be decoded
	UntrustedSource                 // a certificate header from a source not allowed to set it
	NumReasons                      // how many Reason values there are, OK included
)

var reasonNames = [NumReasons]string{
	OK:                "",
	NoCert:            "no_cert",
	Untrusted:         "untrusted",
	Expired:           "expired",
	NotYetValid:       "not_yet_valid",
	CACertificate:     "ca_certificate",
	EKU:               "eku",
	KeyUsage:          "key_usage",
	Revoked:           "revoked",
	RevocationUnknown: "revocation_unknown",
	BadHeader:         "bad_header",
	UntrustedSource:   "untrusted_source",
}

// String returns the reason's name ("" for OK).
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown_reason"
}

// Reasons returns every refusal reason, in a fixed order.
func Reasons() []Reason {
	out := make([]Reason, 0, NumReasons-1)
	for r := OK + 1; r < NumReasons; r++ {
		out = append(out, r)
	}
	return out
}

// Source is where a request's certificate came from.
type Source uint8

// The sources.
const (
	SourceTLS    Source = iota // the TLS connection
	SourceHeader               // a header set by an allowed proxy
	NumSources                 // how many Source values there are
)

// String returns "tls" or "header".
func (s Source) String() string {
	if s == SourceHeader {
		return "header"
	}
	return "tls"
}

// Sources returns both sources.
func Sources() []Source { return []Source{SourceTLS, SourceHeader} }
