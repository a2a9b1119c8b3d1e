// Package revocation checks certificates against certificate revocation
// lists (CRLs), loaded from files or URLs and re-read at an interval, or
// fetched from the distribution points the certificates name and kept
// until their nextUpdate, each CRL's signature checked against the
// certificate of its issuer, and asks OCSP responders about certificates
// whose issuer has no CRL here. A CRL older than the one in force never
// replaces it.
package revocation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/bounded"
	"github.com/caddy-mtls/caddy-mtls/internal/periodic"
	"github.com/caddy-mtls/caddy-mtls/internal/safe"
	"github.com/caddy-mtls/caddy-mtls/metrics"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Config is a revocation policy.
type Config struct {
	// What a certificate whose revocation status cannot be told (no
	// current CRL of its issuer, one whose signature does not verify, or no
	// OCSP answer) gets. Default: `ignore_ca_error`.
	//
	// Mode | Meaning
	// -----|--------
	// `skip` | no revocation checks
	// `ignore_ca_error` | revoked certificates are refused; an unknown status passes, logged
	// `strict` | revoked certificates and unknown statuses are refused
	Mode string `json:"mode,omitempty"`

	// CRL files (PEM or DER) or http(s) URLs. When several hold CRLs of one
	// issuer, the newest whose signature verifies decides; if it is past
	// its nextUpdate the status is unknown, an older one does not stand in.
	// Default: none.
	CRLs []string `json:"crl,omitempty"`

	// Ask OCSP responders about certificates whose issuer has no CRL here.
	// Concurrent lookups of one certificate make one query. Answers are
	// kept until their nextUpdate (an hour if they give none), unknown
	// statuses for UnknownCache. Default: `false`.
	OCSP bool `json:"ocsp,omitempty"`

	// The OCSP responder to ask. Default: the certificate's own (AIA).
	OCSPResponder string `json:"ocsp_responder,omitempty"`

	// How long an OCSP query may take. Default: `2s`.
	OCSPTimeout caddy.Duration `json:"ocsp_timeout,omitempty"`

	// How often the CRLs are read again. A CRL that cannot be read keeps
	// the last one read until its nextUpdate; one older than the one in
	// force (a lower CRL number, or with the same number an earlier
	// thisUpdate) is refused. Default: `1h`.
	Reload caddy.Duration `json:"reload,omitempty"`

	// Check only the leaf certificate, not the intermediates. Default:
	// `false`.
	LeafOnly bool `json:"leaf_only,omitempty"`

	// How long an unknown OCSP status (the responder failed, timed out or
	// answered "unknown") is remembered before the responder is asked again,
	// and how long a verdict made with it may be reused. Keep it short: in
	// `strict` mode it is how long one failure of the responder refuses a
	// good certificate. Default: `5s`.
	UnknownCache caddy.Duration `json:"unknown_cache,omitempty"`

	// Also check each certificate against the CRL of its first http or
	// https CRL distribution point (other schemes are ignored), for
	// issuers that no configured `crl` covers: first, when its issuer has
	// a configured CRL whose signature verifies, that one decides. The CRL
	// must be signed by the issuer of the chain; it is read on first use
	// (within CRLTimeout; concurrent first uses make one read) and kept
	// until its nextUpdate, read again in the background at the reload
	// interval or, if sooner, before its nextUpdate, and never replaced by
	// an older one. One that cannot be had is an unknown status, asked for
	// again after UnknownCache. Default: `false`.
	CRLFromCertificates bool `json:"crl_from_certificates,omitempty"`

	// How long reading a distribution point's CRL may take. Default: `2s`.
	CRLTimeout caddy.Duration `json:"crl_timeout,omitempty"`

	// The largest CRL read from a distribution point, in bytes. Default:
	// `10485760` (10 MiB).
	CRLMaxSize int64 `json:"crl_max_size,omitempty"`

	// How many distribution points' CRLs are kept; when more are needed,
	// the least recently used goes (and is read again when it is needed).
	// Default: `1000`.
	CRLCacheSize int `json:"crl_cache_size,omitempty"`
}

// Reasons a check fails.
const (
	// Revoked: the certificate is on its issuer's CRL, or its OCSP
	// responder says it is revoked.
	Revoked = "revoked"
	// Unknown (mode `strict` only): the status cannot be told. There is no
	// current, verified CRL of the issuer, or OCSP gave no answer (the
	// responder failed, timed out or answered "unknown"). client_cert_auth
	// reports it as `revocation_unknown`.
	Unknown = "unknown"
)

// maxCRL bounds a CRL's size.
const maxCRL = 16 << 20

// Checker checks chains against the configured CRLs and OCSP responders.
type Checker struct {
	ctx    context.Context // the config's: done when it is unloaded
	cfg    Config
	strict bool
	logger *zap.Logger
	client *http.Client

	crls        atomic.Pointer[crlSet]
	gen         atomic.Uint64
	ocspCache   ocspCache
	ocspFlights singleflight.Group // one OCSP query per certificate at a time

	verified sync.Map  // crlSigKey -> bool: whether a CRL's signature verifies with an issuer
	issuers  issuerSet // issuers a CRL in force verified with
	warned   sync.Map  // string -> struct{}: issues already logged

	dp        dpCache            // CRLs of distribution points, with CRLFromCertificates
	dpFlights singleflight.Group // one read of a distribution point's CRL at a time
}

type crlSet struct {
	bySource map[string]*x509.RevocationList
	byIssuer map[string][]*x509.RevocationList // by RawIssuer
}

type crlSigKey struct {
	crl    *x509.RevocationList
	issuer [sha256.Size]byte
}

// New loads the CRLs of cfg. It returns nil for mode `skip`. ctx is the
// config's: when it is done, CRL reads and OCSP queries in progress stop.
func New(ctx context.Context, cfg Config, logger *zap.Logger) (*Checker, error) {
	switch cfg.Mode {
	case "skip":
		return nil, nil
	case "", "ignore_ca_error", "strict":
	default:
		return nil, fmt.Errorf("revocation mode %q: want skip, ignore_ca_error or strict", cfg.Mode)
	}
	if len(cfg.CRLs) == 0 && !cfg.OCSP && !cfg.CRLFromCertificates {
		return nil, errors.New("revocation: neither crl, ocsp nor crl_from_certificates given")
	}
	if cfg.CRLTimeout < 0 || cfg.CRLMaxSize < 0 || cfg.CRLCacheSize < 0 {
		return nil, errors.New("revocation: crl_timeout, crl_max_size and crl_cache_size cannot be negative")
	}
	c := &Checker{ctx: ctx, cfg: cfg, strict: cfg.Mode == "strict", logger: logger, client: &http.Client{Timeout: 10 * time.Second}}
	c.ocspCache.m = map[ocspKey]ocspAnswer{}
	c.dp = dpCache{m: map[dpKey]*dpEntry{}, max: cfg.CRLCacheSize, wake: make(chan struct{}, 1)}
	if c.dp.max == 0 {
		c.dp.max = DefaultCRLCacheSize
	}
	set := &crlSet{bySource: map[string]*x509.RevocationList{}}
	for _, src := range cfg.CRLs {
		crl, err := c.fetch(ctx, src)
		if err != nil {
			metrics.CRLUpdate(sourceName(src), metrics.CRLError)
			return nil, fmt.Errorf("revocation: crl %s: %w", sourceName(src), err)
		}
		metrics.CRLUpdate(sourceName(src), metrics.CRLOK)
		set.bySource[src] = crl
	}
	set.index()
	c.crls.Store(set)
	return c, nil
}

func (s *crlSet) index() {
	s.byIssuer = map[string][]*x509.RevocationList{}
	for _, crl := range s.bySource {
		s.byIssuer[string(crl.RawIssuer)] = append(s.byIssuer[string(crl.RawIssuer)], crl)
	}
}

// Strict reports whether an unknown revocation status refuses (mode
// `strict`).
func (c *Checker) Strict() bool { return c != nil && c.strict }

// Generation changes whenever the CRLs in force change: verdicts made with
// an older generation are not to be reused.
func (c *Checker) Generation() uint64 {
	if c == nil {
		return 0
	}
	return c.gen.Load()
}

// Watch re-reads the CRLs at the configured interval, and distribution
// points' CRLs also before their nextUpdate, until ctx is done. Meanwhile
// the metrics show the CRLs in force (their thisUpdate and nextUpdate).
func (c *Checker) Watch(ctx context.Context) {
	metrics.TrackCRLs(c, c.crlsInForce)
	defer metrics.ForgetCRLs(c)
	if c.cfg.CRLFromCertificates {
		go c.watchDP(ctx)
	}
	periodic.Every(ctx, "CRL reload", c.logger, c.reloadInterval(), func() { c.Reload(ctx) })
}

// Reload reads every CRL again, those of distribution points too; one that
// cannot be read keeps its last version, and so does one whose new version
// is older (see olderCRL): an older CRL, validly signed, could un-revoke
// certificates.
func (c *Checker) Reload(ctx context.Context) {
	if c.cfg.CRLFromCertificates {
		c.refreshDP(ctx, time.Now(), true)
	}
	if len(c.cfg.CRLs) == 0 {
		return
	}
	old := c.crls.Load()
	next := &crlSet{bySource: map[string]*x509.RevocationList{}}
	changed := false
	for _, src := range c.cfg.CRLs {
		name, prev := sourceName(src), old.bySource[src]
		crl, err := c.fetch(ctx, src)
		if err != nil {
			metrics.CRLUpdate(name, metrics.CRLError)
			c.logger.Error("reading CRL; the last one read stays", zap.String("crl", name), zap.Error(err))
			next.bySource[src] = prev
			continue
		}
		if prev != nil && string(prev.Raw) != string(crl.Raw) && !c.mayReplace(prev, crl) {
			// A forgery under a known issuer's name must not displace the
			// CRL in force: until checked at use, it would leave the
			// issuer's certificates without a CRL.
			metrics.CRLUpdate(name, metrics.CRLError)
			c.logger.Error("CRL signature does not verify with its issuer's certificate; refused, the last one read stays",
				zap.String("crl", name), zap.String("issuer", crl.Issuer.String()), zap.String("number", crlNumber(crl)))
			next.bySource[src] = prev
			continue
		}
		if prev != nil && olderCRL(crl, prev) && !c.knownNotVerifying(prev) {
			metrics.CRLUpdate(name, metrics.CRLOlder)
			c.logger.Warn("CRL older than the one in force; refused, the one in force stays",
				zap.String("crl", name), zap.String("issuer", crl.Issuer.String()),
				zap.String("number", crlNumber(crl)), zap.Time("this_update", crl.ThisUpdate),
				zap.String("number_in_force", crlNumber(prev)), zap.Time("this_update_in_force", prev.ThisUpdate))
			next.bySource[src] = prev
			continue
		}
		metrics.CRLUpdate(name, metrics.CRLOK)
		if prev == nil || string(prev.Raw) != string(crl.Raw) {
			changed = true
		}
		next.bySource[src] = crl
	}
	if !changed {
		return
	}
	next.index()
	c.crls.Store(next)
	c.gen.Add(1)
	// Forget the signature checks of CRLs no longer in force.
	inForce := map[*x509.RevocationList]bool{}
	for _, crl := range next.bySource {
		inForce[crl] = true
	}
	c.verified.Range(func(k, _ any) bool {
		if !inForce[k.(crlSigKey).crl] {
			c.verified.Delete(k)
		}
		return true
	})
	c.logger.Info("CRLs reloaded", zap.Int("crls", len(next.bySource)))
}

// crlsInForce calls add with each CRL in force, configured or read from a
// distribution point, by source.
func (c *Checker) crlsInForce(add func(crl string, thisUpdate, nextUpdate time.Time)) {
	if set := c.crls.Load(); set != nil {
		for src, crl := range set.bySource {
			if crl != nil {
				add(sourceName(src), crl.ThisUpdate, crl.NextUpdate)
			}
		}
	}
	c.dp.each(func(e *dpEntry) {
		if st := e.state.Load(); st != nil && st.crl != nil {
			add(sourceName(e.key.url), st.crl.ThisUpdate, st.crl.NextUpdate)
		}
	})
}

// fetch reads and parses one CRL from a file or an http(s) URL.
func (c *Checker) fetch(ctx context.Context, src string) (*x509.RevocationList, error) {
	var data []byte
	var err error
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		data, err = c.get(ctx, src, maxCRL)
	} else {
		data, err = bounded.ReadFile(src, maxCRL)
	}
	if err != nil {
		return nil, err
	}
	return safe.Decode("CRL "+sourceName(src), func() (*x509.RevocationList, error) { return parseCRL(data) })
}

// get reads the body of an HTTP GET of url, at most max bytes.
func (c *Checker) get(ctx context.Context, url string, max int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return data, nil
}

// parseCRL parses a CRL, PEM or DER.
func parseCRL(data []byte) (*x509.RevocationList, error) {
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block %q, want X509 CRL", block.Type)
		}
		data = block.Bytes
	}
	return x509.ParseRevocationList(data)
}

// olderCRL reports whether crl was issued before prev by the same issuer
// (name and, when both give one, key identifier): a lower CRL number, or,
// when the numbers are equal or absent, an earlier thisUpdate. CRLs of
// different issuers are not compared.
func olderCRL(crl, prev *x509.RevocationList) bool {
	if !bytes.Equal(crl.RawIssuer, prev.RawIssuer) {
		return false
	}
	if len(crl.AuthorityKeyId) > 0 && len(prev.AuthorityKeyId) > 0 && !bytes.Equal(crl.AuthorityKeyId, prev.AuthorityKeyId) {
		return false
	}
	if crl.Number != nil && prev.Number != nil {
		if cmp := crl.Number.Cmp(prev.Number); cmp != 0 {
			return cmp < 0
		}
	}
	return crl.ThisUpdate.Before(prev.ThisUpdate)
}

// knownNotVerifying reports whether crl's signature has been checked with
// certificates of its issuer and verified with none: such a CRL (a forgery
// under the issuer's name) does not hold back the issuer's real ones.
func (c *Checker) knownNotVerifying(crl *x509.RevocationList) bool {
	checked, verifies := false, false
	c.verified.Range(func(k, v any) bool {
		if k.(crlSigKey).crl == crl {
			checked = true
			verifies = v.(bool)
		}
		return !verifies
	})
	return checked && !verifies
}

// maxIssuersPerName bounds the issuer certificates kept under one name.
const maxIssuersPerName = 8

// issuerSet holds certificates known to be CRL issuers, by subject.
type issuerSet struct {
	mu     sync.Mutex
	byName map[string][]*x509.Certificate
}

// learnIssuer remembers issuer, whose certificate verified a CRL in force,
// so that a new CRL under its name is checked when it is read.
func (c *Checker) learnIssuer(issuer *x509.Certificate) {
	s := &c.issuers
	s.mu.Lock()
	defer s.mu.Unlock()
	known := s.byName[string(issuer.RawSubject)]
	for _, k := range known {
		if bytes.Equal(k.Raw, issuer.Raw) {
			return
		}
	}
	if len(known) >= maxIssuersPerName {
		return
	}
	if s.byName == nil {
		s.byName = map[string][]*x509.Certificate{}
	}
	s.byName[string(issuer.RawSubject)] = append(known, issuer)
	// Verdicts made without knowing it (a pinned client that left it out)
	// are not to be reused.
	c.gen.Add(1)
}

// IssuerOf returns the certificate of cert's issuer, if the checker knows
// it (a CRL in force verified with it) and cert's signature verifies with
// it; else nil.
func (c *Checker) IssuerOf(cert *x509.Certificate) *x509.Certificate {
	if c == nil {
		return nil
	}
	c.issuers.mu.Lock()
	known := slices.Clone(c.issuers.byName[string(cert.RawIssuer)])
	c.issuers.mu.Unlock()
	for _, issuer := range known {
		if cert.CheckSignatureFrom(issuer) == nil {
			return issuer
		}
	}
	return nil
}

// mayReplace reports whether crl, newly read from a source, may replace
// prev, the source's CRL in force: when prev's issuer is known (a CRL in
// force verified with it), crl must be that issuer's and verify with it,
// or a forgery (under that name, or under any other, which would leave the
// issuer without a CRL) would displace the real one; else, crl must verify
// with its own issuer if that one is known.
func (c *Checker) mayReplace(prev, crl *x509.RevocationList) bool {
	if c.issuerKnown(prev.RawIssuer) && !bytes.Equal(crl.RawIssuer, prev.RawIssuer) {
		return false
	}
	return c.verifiesWithKnownIssuer(crl)
}

// issuerKnown reports whether a certificate named rawSubject is known to
// be a CRL issuer.
func (c *Checker) issuerKnown(rawSubject []byte) bool {
	c.issuers.mu.Lock()
	defer c.issuers.mu.Unlock()
	return len(c.issuers.byName[string(rawSubject)]) > 0
}

// verifiesWithKnownIssuer reports whether crl's signature verifies with a
// certificate known to be its issuer's (one that verified a CRL in
// force), or whether none is known yet (then it is checked at use).
func (c *Checker) verifiesWithKnownIssuer(crl *x509.RevocationList) bool {
	c.issuers.mu.Lock()
	known := slices.Clone(c.issuers.byName[string(crl.RawIssuer)])
	c.issuers.mu.Unlock()
	if len(known) == 0 {
		return true
	}
	for _, issuer := range known {
		if crl.CheckSignatureFrom(issuer) == nil {
			return true
		}
	}
	return false
}

// crlNumber returns crl's number for the log.
func crlNumber(crl *x509.RevocationList) string {
	if crl.Number == nil {
		return "none"
	}
	return crl.Number.String()
}

// sourceName returns a CRL source as logs and metrics show it: a URL's
// password is masked.
func sourceName(src string) string {
	if u, err := url.Parse(src); err == nil && u.User != nil {
		return u.Redacted()
	}
	return src
}

// Check checks a verified chain (leaf first, root last) at now. It returns
// "" when it passes, else Revoked or Unknown (Unknown only in strict mode),
// and the time until which the answer holds: the earliest nextUpdate of the
// CRLs and OCSP answers used, and no later than now plus UnknownCache when
// an OCSP status or a distribution point's CRL was unknown (zero when
// nothing bounds it).
//
// A certificate is checked against its issuer's configured CRLs; if none
// of them verifies, against the CRL of its distribution point
// (CRLFromCertificates); if that cannot be had either, by OCSP.
func (c *Checker) Check(chain []*x509.Certificate, now time.Time) (reason string, until time.Time) {
	set := c.crls.Load()
	n := len(chain) - 1 // the root is not checked
	if c.cfg.LeafOnly && n > 1 {
		n = 1
	}
	for i := 0; i < n; i++ {
		cert, issuer := chain[i], chain[i+1]
		crl, covered := c.currentCRL(set, issuer, now)
		if !covered && c.cfg.CRLFromCertificates {
			var u time.Time
			crl, u, _ = c.checkDP(cert, issuer, now)
			if crl == nil && !u.IsZero() && (until.IsZero() || u.Before(until)) {
				until = u // when the distribution point is asked again
			}
		}
		if crl == nil && c.cfg.OCSP {
			r, u := c.checkOCSP(cert, issuer, now)
			if !u.IsZero() && (until.IsZero() || u.Before(until)) {
				until = u
			}
			if r != "" {
				return r, until
			}
			continue
		}
		if crl == nil {
			c.warnOnce("no current CRL of "+issuer.Subject.String(), zap.String("issuer", issuer.Subject.String()))
			if c.strict {
				return Unknown, until
			}
			continue
		}
		// A CRL without a nextUpdate bounds nothing: it must not undo an
		// earlier, shorter bound.
		if !crl.NextUpdate.IsZero() && (until.IsZero() || crl.NextUpdate.Before(until)) {
			until = crl.NextUpdate
		}
		for _, entry := range crl.RevokedCertificateEntries {
			if entry.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				return Revoked, until
			}
		}
	}
	return "", until
}

// currentCRL returns the newest CRL of issuer whose signature verifies, or
// nil if there is none or it is past its nextUpdate: an older CRL of the
// issuer (from another source) never stands in for a newer one. covered
// tells whether there is one, current or not.
func (c *Checker) currentCRL(set *crlSet, issuer *x509.Certificate, now time.Time) (crl *x509.RevocationList, covered bool) {
	fp := sha256.Sum256(issuer.Raw)
	var newest *x509.RevocationList
	for _, crl := range set.byIssuer[string(issuer.RawSubject)] {
		key := crlSigKey{crl: crl, issuer: fp}
		ok, seen := c.verified.Load(key)
		if !seen {
			err := crl.CheckSignatureFrom(issuer)
			ok = err == nil
			c.verified.Store(key, ok)
			if err == nil {
				c.learnIssuer(issuer)
			}
			if err != nil {
				c.logger.Error("CRL signature does not verify with its issuer's certificate; the CRL is not used",
					zap.String("issuer", issuer.Subject.String()), zap.Error(err))
			}
		}
		if ok.(bool) && (newest == nil || olderCRL(newest, crl)) {
			newest = crl
		}
	}
	if newest != nil && !newest.NextUpdate.IsZero() && now.After(newest.NextUpdate) {
		c.warnOnce("stale CRL of "+issuer.Subject.String(), zap.String("issuer", issuer.Subject.String()), zap.Time("next_update", newest.NextUpdate))
		return nil, true
	}
	return newest, newest != nil
}

func (c *Checker) warnOnce(what string, fields ...zap.Field) {
	if _, dup := c.warned.LoadOrStore(what, struct{}{}); !dup {
		c.logger.Warn("revocation status unknown: "+what, fields...)
	}
}
