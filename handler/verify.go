package handler

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddy-mtls/caddy-mtls/certcheck"
	"github.com/caddy-mtls/caddy-mtls/certcodec"
)

// maxValueKey is the longest header value kept as a cache key as it is.
const maxValueKey = 4096

// verdictTTL bounds how long a verdict is reused even when the certificates
// stay valid for longer.
const verdictTTL = 10 * time.Minute

// verdict is the outcome of verifying one certificate chain, kept in the
// cache with everything a request needs so that a cache hit costs little.
type verdict struct {
	accepted    bool
	reason      certcheck.Reason // why not accepted
	gen         uint64           // the generation of stored clients and CRLs it was made with
	expires     time.Time
	fingerprint string
	subject     string
	forward     string // the leaf encoded for the forward header
	inter       []byte // the intermediates it was made with, when its key is the leaf's DER

	// identity holds the {http.auth.user.*} values of an accepted chain.
	identity *identity
}

// fromTLS returns the verdict on a TLS peer certificate chain. An accepted
// chain of at most maxValueKey bytes is kept under its leaf's DER as it is,
// so that a returning caller costs no hashing (its intermediates are
// compared with the ones the verdict was made with). Any other chain, and
// every refused one, is kept under the SHA-256 of the whole chain, its first
// byte zeroed, which no DER certificate (a SEQUENCE, 0x30) starts with: what
// anyone may present costs the cache 32 bytes of key, not the chain.
func (h *Handler) fromTLS(certs []*x509.Certificate, now time.Time) *verdict {
	gen := h.generation()
	n := 0
	for _, c := range certs {
		n += len(c.Raw)
	}
	byLeaf := n <= maxValueKey
	if byLeaf {
		if v, ok := h.cache.GetBytes(certcheck.SourceTLS, certs[0].Raw, now, gen); ok && v.sentWith(certs[1:]) {
			return v
		}
	}
	hash := chainKey(certs)
	if v, ok := h.cache.GetBytes(certcheck.SourceTLS, hash[:], now, gen); ok {
		return v
	}

	v := h.evaluate(certs[0], certs[1:], sha256.Sum256(certs[0].Raw), certcheck.SourceTLS, now)
	if !v.accepted || !byLeaf {
		h.cache.Put(certcheck.SourceTLS, string(hash[:]), v, v.expires, v.gen)
		return v
	}
	for _, c := range certs[1:] {
		v.inter = append(v.inter, c.Raw...)
	}
	h.cache.Put(certcheck.SourceTLS, string(certs[0].Raw), v, v.expires, v.gen)
	return v
}

// chainKey is the cache key of a chain kept by its hash: the SHA-256 of
// its certificates' DER (self-delimiting, so the concatenation is
// unambiguous), its first byte zeroed, which no DER certificate (a
// SEQUENCE, 0x30) starts with, so it never meets a leaf's key.
func chainKey(certs []*x509.Certificate) [sha256.Size]byte {
	d := sha256.New()
	for _, c := range certs {
		d.Write(c.Raw)
	}
	var hash [sha256.Size]byte
	d.Sum(hash[:0])
	hash[0] = 0
	return hash
}

// sentWith reports whether inter are the intermediates the verdict was made
// with.
func (v *verdict) sentWith(inter []*x509.Certificate) bool {
	return sameIntermediates(v.inter, inter)
}

// fromHeader returns the verdict on the certificate in the header (and the
// chain header). The header values themselves are the cache key, so a
// returning caller's header is not decoded again. An error means the header
// cannot be decoded.
func (h *Handler) fromHeader(r *http.Request, values []string, now time.Time) (*verdict, error) {
	if len(values) > 1 {
		return nil, fmt.Errorf("%d %s fields: one certificate expected", len(values), h.headerField)
	}
	key := values[0]
	var chain []string
	if h.chainField != "" {
		chain = r.Header[h.chainField]
		if len(chain) > 0 {
			// Header values hold no newline, so the joined key is unambiguous.
			key = key + "\n" + strings.Join(chain, "\n")
		}
	}
	// An accepted value is kept under itself, so that a returning caller
	// costs no hashing; a long value, and every refused one, under its
	// hash, its first byte 1, which header values (no control characters)
	// do not start with: what anyone may send costs the cache 32 bytes of
	// key, not the value.
	gen := h.generation()
	if len(key) <= maxValueKey {
		if v, ok := h.cache.Get(certcheck.SourceHeader, key, now, gen); ok {
			return v, nil
		}
	}
	sum := sha256.Sum256([]byte(key))
	sum[0] = 1
	hashed := string(sum[:])
	if v, ok := h.cache.Get(certcheck.SourceHeader, hashed, now, gen); ok {
		return v, nil
	}

	certs, _, err := certcodec.ParseHeader(values[0], chain, h.headerFormat, certcodec.HeaderFields{Cert: h.headerField, Chain: h.chainField})
	if err != nil {
		return nil, err
	}
	v := h.evaluate(certs[0], certs[1:], sha256.Sum256(certs[0].Raw), certcheck.SourceHeader, now)
	if !v.accepted || len(key) > maxValueKey {
		key = hashed
	}
	h.cache.Put(certcheck.SourceHeader, key, v, v.expires, v.gen)
	return v, nil
}

// evaluate decides whether leaf (with the intermediates the client sent) is
// accepted: pinned exactly, or verified to the trust pool for client auth;
// revocation checked wherever the issuer is known.
func (h *Handler) evaluate(leaf *x509.Certificate, intermediates []*x509.Certificate, fp [sha256.Size]byte, source certcheck.Source, now time.Time) *verdict {
	v := &verdict{
		gen:         h.generation(),
		fingerprint: hex.EncodeToString(fp[:]), // certcodec.Fingerprint, from the hash made by the caller
		subject:     capString(leaf.Subject.String(), maxLoggedSubject),
		expires:     now.Add(verdictTTL),
	}
	// The verdict may change when any certificate involved starts or stops
	// being valid: it is kept no longer than that.
	v.endBy(leaf, now)
	for _, c := range intermediates {
		v.endBy(c, now)
	}

	client := h.pinned[fp]
	if client == nil {
		client = h.storedClient(fp)
	}
	if client != nil && len(client.chain) > 0 {
		// The pinned file's own chain tells the issuer, whether or not
		// the client sends it (a revoked client would leave it out).
		intermediates = append(slices.Clip(intermediates), client.chain...)
	}
	res := h.checker.Check(leaf, intermediates, client != nil, now)
	v.reason = res.Reason
	for _, chain := range res.Chains {
		for _, c := range chain {
			v.endBy(c, now)
		}
	}
	if !res.Until.IsZero() && res.Until.After(now) && res.Until.Before(v.expires) {
		v.expires = res.Until
	}
	v.accepted = v.reason == certcheck.OK
	if !v.accepted {
		return v
	}

	if h.forwardField != "" {
		v.forward = certcodec.EncodeCertificate(leaf, h.forwardFmt)
	}
	var alias, tier string
	if client != nil {
		alias, tier = client.Alias, client.Tier
	}
	id := alias
	if id == "" {
		id = leaf.Subject.CommonName
	}
	subject := leaf.Subject.String()
	if id == "" {
		id = subject
	}
	uris := make([]string, len(leaf.URIs))
	for i, u := range leaf.URIs {
		uris[i] = u.String()
	}
	v.identity = &identity{
		phID:          id,
		phAlias:       alias,
		phTier:        tier,
		phSubject:     subject,
		phIssuer:      leaf.Issuer.String(),
		phSerial:      leaf.SerialNumber.String(),
		phFingerprint: v.fingerprint,
		phNotAfter:    leaf.NotAfter.UTC().Format(time.RFC3339),
		phSource:      source.String(),
		phSANDNS:      strings.Join(leaf.DNSNames, ","),
		phSANURI:      strings.Join(uris, ","),
		phSANEmail:    strings.Join(leaf.EmailAddresses, ","),
	}
	return v
}

// endBy shortens the verdict's life to the next moment c starts or stops
// being valid, if that is sooner.
func (v *verdict) endBy(c *x509.Certificate, now time.Time) {
	for _, t := range []time.Time{c.NotBefore, c.NotAfter} {
		if t.After(now) && t.Before(v.expires) {
			v.expires = t
		}
	}
}

// maxLoggedSubject bounds the subject kept in a verdict for the log: a
// refused certificate's subject is anyone's to choose.
const maxLoggedSubject = 256

// capString returns s cut to at most n bytes, marked when cut.
func capString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "...(cut)"
}
