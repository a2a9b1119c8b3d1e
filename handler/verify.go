package handler

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
)

// certSource is where the certificate of a request came from.
type certSource uint8

const (
	sourceTLS certSource = iota
	sourceHeader
)

func (s certSource) String() string {
	if s == sourceHeader {
		return "header"
	}
	return "tls"
}

// Reasons a request is refused, as they appear in logs and metrics.
const (
	reasonNoCert          = "no_cert"
	reasonUntrusted       = "untrusted"
	reasonExpired         = "expired"
	reasonNotYetValid     = "not_yet_valid"
	reasonBadUsage        = "bad_usage"
	reasonRevoked         = "revoked"
	reasonBadHeader       = "bad_header"
	reasonUntrustedSource = "untrusted_source"
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
	reason      string // why not accepted
	gen         uint64 // the generation of stored clients it was made with
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
		if v := h.cache.getBytes(sourceTLS, certs[0].Raw, now, gen); v != nil && v.sentWith(certs[1:]) {
			return v
		}
	}
	d := sha256.New()
	for _, c := range certs {
		d.Write(c.Raw) // DER is self-delimiting: the concatenation is unambiguous
	}
	var hash [sha256.Size]byte
	d.Sum(hash[:0])
	hash[0] = 0
	if v := h.cache.getBytes(sourceTLS, hash[:], now, gen); v != nil {
		return v
	}

	v := h.evaluate(certs[0], certs[1:], sha256.Sum256(certs[0].Raw), sourceTLS, now)
	if !v.accepted || !byLeaf {
		h.cache.put(sourceTLS, string(hash[:]), v)
		return v
	}
	for _, c := range certs[1:] {
		v.inter = append(v.inter, c.Raw...)
	}
	h.cache.put(sourceTLS, string(certs[0].Raw), v)
	return v
}

// sentWith reports whether inter are the intermediates the verdict was made
// with (DER is self-delimiting, so their concatenation tells them apart).
func (v *verdict) sentWith(inter []*x509.Certificate) bool {
	rest := v.inter
	for _, c := range inter {
		if !bytes.HasPrefix(rest, c.Raw) {
			return false
		}
		rest = rest[len(c.Raw):]
	}
	return len(rest) == 0
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
	if len(key) > maxValueKey {
		// Keep what one entry costs small: a long value is keyed by its
		// hash, its first byte 1, which header values (no control
		// characters) do not start with.
		sum := sha256.Sum256([]byte(key))
		sum[0] = 1
		key = string(sum[:])
	}
	if v := h.cache.get(sourceHeader, key, now, h.generation()); v != nil {
		return v, nil
	}

	ders, _, err := certcodec.Decode(values[0], h.headerFormat)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", h.headerField, err)
	}
	for _, cv := range chain {
		more, err := certcodec.DecodeChain(cv, h.headerFormat)
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", h.chainField, err)
		}
		if len(ders)+len(more) > certcodec.MaxCerts {
			return nil, fmt.Errorf("decoding %s: %w", h.chainField, certcodec.ErrTooMany)
		}
		ders = append(ders, more...)
	}
	certs := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("parsing certificate %d of %s: %w", i+1, h.headerField, err)
		}
	}
	v := h.evaluate(certs[0], certs[1:], sha256.Sum256(ders[0]), sourceHeader, now)
	h.cache.put(sourceHeader, key, v)
	return v, nil
}

// evaluate decides whether leaf (with the intermediates the client sent) is
// accepted: pinned exactly, or verified to the trust pool for client auth.
func (h *Handler) evaluate(leaf *x509.Certificate, intermediates []*x509.Certificate, fp [sha256.Size]byte, source certSource, now time.Time) *verdict {
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
	switch {
	case client != nil:
		v.reason = checkLeaf(leaf, now)
	case h.roots == nil:
		v.reason = reasonUntrusted
	default:
		var chains [][]*x509.Certificate
		chains, v.reason = Verify(leaf, intermediates, h.roots, now)
		for _, chain := range chains {
			for _, c := range chain {
				v.endBy(c, now)
			}
		}
		if v.reason == "" && h.revocation != nil {
			reason, until := h.revocation.Check(chains[0], now)
			if reason != "" {
				// Revoked, or (strict mode) no current CRL to tell.
				v.reason = reasonRevoked
			}
			if !until.IsZero() && until.After(now) && until.Before(v.expires) {
				v.expires = until
			}
		}
	}
	v.accepted = v.reason == ""
	if !v.accepted {
		return v
	}

	if h.forwardField != "" {
		v.forward = certcodec.Encode(leaf.Raw, h.forwardFmt)
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
		id:          id,
		alias:       alias,
		tier:        tier,
		subject:     subject,
		issuer:      leaf.Issuer.String(),
		serial:      leaf.SerialNumber.String(),
		fingerprint: v.fingerprint,
		notAfter:    leaf.NotAfter.UTC().Format(time.RFC3339),
		source:      source.String(),
		sanDNS:      strings.Join(leaf.DNSNames, ","),
		sanURI:      strings.Join(uris, ","),
		sanEmail:    strings.Join(leaf.EmailAddresses, ","),
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

// Verify decides whether leaf, with the intermediates the client sent, is
// an acceptable client certificate issued under roots at time now: the
// rules of client_cert_auth for a certificate that is not pinned. It returns
// the verified chains, or the reason it is not acceptable (`expired`,
// `not_yet_valid`, `bad_usage`, `untrusted`).
func Verify(leaf *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool, now time.Time) ([][]*x509.Certificate, string) {
	if reason := checkLeaf(leaf, now); reason != "" {
		return nil, reason
	}
	opts := x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(intermediates) > 0 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range intermediates {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := leaf.Verify(opts)
	if err == nil {
		return chains, ""
	}
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		switch invalid.Reason {
		case x509.Expired:
			if now.Before(invalid.Cert.NotBefore) {
				return nil, reasonNotYetValid
			}
			return nil, reasonExpired
		case x509.IncompatibleUsage:
			return nil, reasonBadUsage
		}
	}
	return nil, reasonUntrusted
}

// checkLeaf applies the rules every accepted certificate meets, pinned or
// not: inside its validity window, not a CA, a key usage (if any) that signs
// TLS handshakes, and an extended key usage (if any) that allows client
// authentication. It returns the reason it fails, or "".
func checkLeaf(leaf *x509.Certificate, now time.Time) string {
	switch {
	case now.After(leaf.NotAfter):
		return reasonExpired
	case now.Before(leaf.NotBefore):
		return reasonNotYetValid
	case leaf.IsCA, !signsForTLS(leaf), !allowsClientAuth(leaf):
		return reasonBadUsage
	}
	return ""
}

// signsForTLS reports whether c's key usage, if it has one, lets it sign a
// TLS handshake and not certificates.
func signsForTLS(c *x509.Certificate) bool {
	if c.KeyUsage == 0 {
		return true
	}
	return c.KeyUsage&x509.KeyUsageDigitalSignature != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0
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

// allowsClientAuth reports whether a pinned certificate's extended key usage,
// if it has one, permits client authentication.
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

// verdictCache is a bounded map of verdicts, one map a certSource: TLS
// chains keyed as fromTLS says, header values by themselves. When full, it makes
// room by dropping the expired entries among a few arbitrary ones, else one
// of those, so a miss costs the same however large the cache is. A new
// config makes a new handler, and so a new, empty cache.
type verdictCache struct {
	mu  sync.RWMutex
	m   [2]map[string]*verdict
	max int
}

// evictionSample is how many entries a full cache looks at to make room.
const evictionSample = 8

func newVerdictCache(max int) *verdictCache {
	return &verdictCache{m: [2]map[string]*verdict{{}, {}}, max: max}
}

func (c *verdictCache) get(src certSource, key string, now time.Time, gen uint64) *verdict {
	c.mu.RLock()
	v := c.m[src][key]
	c.mu.RUnlock()
	return fresh(v, now, gen)
}

// getBytes is get without converting (and so copying) the key.
func (c *verdictCache) getBytes(src certSource, key []byte, now time.Time, gen uint64) *verdict {
	c.mu.RLock()
	v := c.m[src][string(key)]
	c.mu.RUnlock()
	return fresh(v, now, gen)
}

// fresh returns v if it may still be used: not expired, and made with the
// stored clients now in force.
func fresh(v *verdict, now time.Time, gen uint64) *verdict {
	if v == nil || !now.Before(v.expires) || v.gen != gen {
		return nil
	}
	return v
}

func (c *verdictCache) put(src certSource, key string, v *verdict) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.m[src]
	if _, ok := m[key]; !ok {
		if total := len(c.m[sourceTLS]) + len(c.m[sourceHeader]); total >= c.max {
			// Room comes from either map in proportion to its size, so
			// that a flood on one path cannot crowd out the other.
			victims := c.m[sourceTLS]
			if rand.IntN(total) >= len(victims) {
				victims = c.m[sourceHeader]
			}
			makeRoom(victims)
		}
	}
	m[key] = v
}

// makeRoom drops the expired entries among the first evictionSample of m
// (in Go's random map order), else the last of them.
func makeRoom(m map[string]*verdict) {
	now := time.Now()
	seen, dropped := 0, 0
	var victim string
	for k, old := range m {
		if !now.Before(old.expires) {
			delete(m, k)
			dropped++
		}
		victim = k
		if seen++; seen == evictionSample {
			break
		}
	}
	if dropped == 0 {
		delete(m, victim)
	}
}
