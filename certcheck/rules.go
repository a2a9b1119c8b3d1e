package certcheck

import (
	"bytes"
	"crypto/x509"
	"errors"
	"time"

	"github.com/caddy-mtls/caddy-mtls/revocation"
)

// Checker holds what certificates are judged against.
type Checker struct {
	// Roots are the trust pool client certificates chain to; nil: none
	// (only pinned certificates can be accepted).
	Roots *x509.CertPool
	// Revocation checks chains whose issuer is known; nil: none.
	Revocation *revocation.Checker
}

// Result is a judgement.
type Result struct {
	Reason Reason
	// Chains are the verified chains to Roots, if any: of a chained
	// certificate, or of a pinned one whose issuer is in the trust pool.
	Chains [][]*x509.Certificate
	// Until is the time until which the revocation answer holds, if one
	// was needed and it ends.
	Until time.Time
}

// Check judges leaf, sent with intermediates, at now. pinned says the leaf
// is, byte for byte, a pinned or stored client's certificate: then there is
// no chain to protect, and only its validity window and extended key usage
// can refuse it (a self-signed certificate made by `openssl req -x509` is a
// CA, and has no key usage a chain would need). Otherwise it must chain to
// Roots as a client certificate. Either way, where its issuer is known (a
// chain to Roots verifies), revocation is checked.
func (c *Checker) Check(leaf *x509.Certificate, intermediates []*x509.Certificate, pinned bool, now time.Time) Result {
	var res Result
	if pinned {
		if res.Reason = checkPinned(leaf, now); res.Reason != OK {
			return res
		}
		if c.Revocation != nil {
			// The issuer is known when the chain verifies, for any usage:
			// the usage rules are the pinned ones above.
			if c.Roots != nil {
				res.Chains, _ = verify(leaf, intermediates, c.Roots, now, x509.ExtKeyUsageAny)
			}
			// Else its issuer may be known to the revocation checker (a CRL
			// in force verified with it): a revoked client does not pass
			// by leaving its intermediate out.
			if len(res.Chains) == 0 && !selfSigned(leaf) {
				if issuer := c.Revocation.IssuerOf(leaf); issuer != nil {
					res.Chains = [][]*x509.Certificate{{leaf, issuer}}
				}
			}
			// A pinned certificate that some CA issued, whose chain cannot
			// be built from what was sent, the trust pool and the issuers
			// known, has a status that cannot be told: strict mode refuses
			// it.
			if len(res.Chains) == 0 && !selfSigned(leaf) && c.Revocation.Strict() {
				res.Reason = RevocationUnknown
				return res
			}
		}
	} else {
		if c.Roots == nil {
			res.Reason = Untrusted
			return res
		}
		if res.Chains, res.Reason = Verify(leaf, intermediates, c.Roots, now); res.Reason != OK {
			return res
		}
	}
	if c.Revocation != nil && len(res.Chains) > 0 {
		var r string
		r, res.Until = c.Revocation.Check(res.Chains[0], now)
		switch r {
		case "":
		case revocation.Revoked:
			res.Reason = Revoked
		default:
			res.Reason = RevocationUnknown
		}
	}
	return res
}

// selfSigned reports whether c is its own issuer: a pinned self-signed
// certificate has no CA to ask about it.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// Verify decides whether leaf, with the intermediates the client sent, is
// an acceptable client certificate issued under roots at time now: the
// rules for a certificate that is not pinned. It returns the verified
// chains, or the reason it is not acceptable.
func Verify(leaf *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool, now time.Time) ([][]*x509.Certificate, Reason) {
	if r := checkChained(leaf, now); r != OK {
		return nil, r
	}
	return verify(leaf, intermediates, roots, now, x509.ExtKeyUsageClientAuth)
}

func verify(leaf *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool, now time.Time, usage x509.ExtKeyUsage) ([][]*x509.Certificate, Reason) {
	opts := x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{usage},
	}
	if len(intermediates) > 0 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range intermediates {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := leaf.Verify(opts)
	if err == nil {
		return chains, OK
	}
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		switch invalid.Reason {
		case x509.Expired:
			if now.Before(invalid.Cert.NotBefore) {
				return nil, NotYetValid
			}
			return nil, Expired
		case x509.IncompatibleUsage:
			return nil, EKU
		}
	}
	return nil, Untrusted
}

// NeverAcceptable returns why cert, if pinned or stored as a client, could
// never be accepted: Expired (it has ended) or EKU (its extended key usage
// excludes client authentication); OK otherwise. A certificate not yet valid
// may become so, and is OK here.
func NeverAcceptable(cert *x509.Certificate, now time.Time) Reason {
	if now.After(cert.NotAfter) {
		return Expired
	}
	if !allowsClientAuth(cert) {
		return EKU
	}
	return OK
}

// checkValidity checks the validity window.
func checkValidity(c *x509.Certificate, now time.Time) Reason {
	switch {
	case now.After(c.NotAfter):
		return Expired
	case now.Before(c.NotBefore):
		return NotYetValid
	}
	return OK
}

// checkPinned applies the rules a pinned certificate meets: inside its
// validity window, and an extended key usage (if any) that allows client
// authentication.
func checkPinned(leaf *x509.Certificate, now time.Time) Reason {
	if r := checkValidity(leaf, now); r != OK {
		return r
	}
	if !allowsClientAuth(leaf) {
		return EKU
	}
	return OK
}

// checkChained applies the rules a leaf verified by its chain meets besides
// the chain: inside its validity window, not a CA, a key usage (if any)
// that signs TLS handshakes and not certificates, and an extended key usage
// (if any) that allows client authentication.
func checkChained(leaf *x509.Certificate, now time.Time) Reason {
	if r := checkValidity(leaf, now); r != OK {
		return r
	}
	switch {
	case leaf.IsCA:
		return CACertificate
	case !signsForTLS(leaf):
		return KeyUsage
	case !allowsClientAuth(leaf):
		return EKU
	}
	return OK
}

// signsForTLS reports whether c's key usage, if it has one, lets it sign a
// TLS handshake and not certificates.
func signsForTLS(c *x509.Certificate) bool {
	if c.KeyUsage == 0 {
		return true
	}
	return c.KeyUsage&x509.KeyUsageDigitalSignature != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0
}

// allowsClientAuth reports whether c's extended key usage, if it has one,
// permits client authentication.
func allowsClientAuth(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}
