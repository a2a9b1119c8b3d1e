// Package revocation checks certificates against certificate revocation
// lists (CRLs), loaded from files or URLs and re-read at an interval, each
// CRL's signature checked against the certificate of its issuer.
package revocation

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/bounded"
	"github.com/caddy-mtls/caddy-mtls/internal/periodic"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// Config is a revocation policy.
type Config struct {
	// What a certificate whose revocation status cannot be told (no
	// current CRL of its issuer, or one whose signature does not verify)
	// gets. Default: `ignore_ca_error`.
	//
	// Mode | Meaning
	// -----|--------
	// `skip` | no revocation checks
	// `ignore_ca_error` | revoked certificates are refused; an unknown status passes, logged
	// `strict` | revoked certificates and unknown statuses are refused
	Mode string `json:"mode,omitempty"`

	// CRL files (PEM or DER) or http(s) URLs. Default: none.
	CRLs []string `json:"crl,omitempty"`

	// Ask OCSP responders about certificates whose issuer has no CRL here.
	// Default: `false`.
	OCSP bool `json:"ocsp,omitempty"`

	// The OCSP responder to ask. Default: the certificate's own (AIA).
	OCSPResponder string `json:"ocsp_responder,omitempty"`

	// How long an OCSP query may take. Default: `2s`.
	OCSPTimeout caddy.Duration `json:"ocsp_timeout,omitempty"`

	// How often the CRLs are read again. A CRL that cannot be read keeps
	// the last one read until its nextUpdate. Default: `1h`.
	Reload caddy.Duration `json:"reload,omitempty"`

	// Check only the leaf certificate, not the intermediates. Default:
	// `false`.
	LeafOnly bool `json:"leaf_only,omitempty"`
}

// Reasons a check fails.
const (
	Revoked = "revoked" // the certificate is on its issuer's CRL
	Unknown = "unknown" // no current, verified CRL of its issuer
)

// maxCRL bounds a CRL's size.
const maxCRL = 16 << 20

// Checker checks chains against the configured CRLs.
type Checker struct {
	cfg    Config
	strict bool
	logger *zap.Logger
	client *http.Client

	crls      atomic.Pointer[crlSet]
	gen       atomic.Uint64
	ocspCache ocspCache

	verified sync.Map // crlSigKey -> bool: whether a CRL's signature verifies with an issuer
	warned   sync.Map // string -> struct{}: issues already logged
}

type crlSet struct {
	bySource map[string]*x509.RevocationList
	byIssuer map[string][]*x509.RevocationList // by RawIssuer
}

type crlSigKey struct {
	crl    *x509.RevocationList
	issuer [sha256.Size]byte
}

// New loads the CRLs of cfg. It returns nil for mode `skip`.
func New(cfg Config, logger *zap.Logger) (*Checker, error) {
	switch cfg.Mode {
	case "skip":
		return nil, nil
	case "", "ignore_ca_error", "strict":
	default:
		return nil, fmt.Errorf("revocation mode %q: want skip, ignore_ca_error or strict", cfg.Mode)
	}
	if len(cfg.CRLs) == 0 && !cfg.OCSP {
		return nil, errors.New("revocation: neither crl nor ocsp given")
	}
	c := &Checker{cfg: cfg, strict: cfg.Mode == "strict", logger: logger, client: &http.Client{Timeout: 10 * time.Second}}
	c.ocspCache.m = map[ocspKey]ocspAnswer{}
	set := &crlSet{bySource: map[string]*x509.RevocationList{}}
	for _, src := range cfg.CRLs {
		crl, err := c.fetch(context.Background(), src)
		if err != nil {
			return nil, fmt.Errorf("revocation: crl %s: %w", src, err)
		}
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

// Generation changes whenever the CRLs in force change: verdicts made with
// an older generation are not to be reused.
func (c *Checker) Generation() uint64 {
	if c == nil {
		return 0
	}
	return c.gen.Load()
}

// Watch re-reads the CRLs at the configured interval until ctx is done.
func (c *Checker) Watch(ctx context.Context) {
	interval := time.Duration(c.cfg.Reload)
	if interval <= 0 {
		interval = time.Hour
	}
	periodic.Every(ctx, "CRL reload", c.logger, interval, func() { c.Reload(ctx) })
}

// Reload reads every CRL again; one that cannot be read keeps its last
// version.
func (c *Checker) Reload(ctx context.Context) {
	if len(c.cfg.CRLs) == 0 {
		return
	}
	old := c.crls.Load()
	next := &crlSet{bySource: map[string]*x509.RevocationList{}}
	changed := false
	for _, src := range c.cfg.CRLs {
		crl, err := c.fetch(ctx, src)
		if err != nil {
			c.logger.Error("reading CRL; the last one read stays", zap.String("crl", src), zap.Error(err))
			next.bySource[src] = old.bySource[src]
			continue
		}
		if prev := old.bySource[src]; prev == nil || string(prev.Raw) != string(crl.Raw) {
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

// fetch reads and parses one CRL from a file or an http(s) URL.
func (c *Checker) fetch(ctx context.Context, src string) (*x509.RevocationList, error) {
	var data []byte
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
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
		if data, err = io.ReadAll(io.LimitReader(resp.Body, maxCRL+1)); err != nil {
			return nil, err
		}
	} else {
		var err error
		if data, err = bounded.ReadFile(src, maxCRL); err != nil {
			return nil, err
		}
	}
	if len(data) > maxCRL {
		return nil, fmt.Errorf("larger than %d bytes", maxCRL)
	}
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block %q, want X509 CRL", block.Type)
		}
		data = block.Bytes
	}
	return x509.ParseRevocationList(data)
}

// Check checks a verified chain (leaf first, root last) at now. It returns
// "" when it passes, else Revoked or Unknown (Unknown only in strict mode),
// and the time until which the answer holds (the earliest nextUpdate of the
// CRLs used).
func (c *Checker) Check(chain []*x509.Certificate, now time.Time) (reason string, until time.Time) {
	set := c.crls.Load()
	n := len(chain) - 1 // the root is not checked
	if c.cfg.LeafOnly && n > 1 {
		n = 1
	}
	for i := 0; i < n; i++ {
		cert, issuer := chain[i], chain[i+1]
		crl := c.currentCRL(set, issuer, now)
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
		if until.IsZero() || crl.NextUpdate.Before(until) {
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

// currentCRL returns a CRL of issuer whose signature verifies and that is
// not past its nextUpdate, or nil.
func (c *Checker) currentCRL(set *crlSet, issuer *x509.Certificate, now time.Time) *x509.RevocationList {
	fp := sha256.Sum256(issuer.Raw)
	for _, crl := range set.byIssuer[string(issuer.RawSubject)] {
		key := crlSigKey{crl: crl, issuer: fp}
		ok, seen := c.verified.Load(key)
		if !seen {
			err := crl.CheckSignatureFrom(issuer)
			ok = err == nil
			c.verified.Store(key, ok)
			if err != nil {
				c.logger.Error("CRL signature does not verify with its issuer's certificate; the CRL is not used",
					zap.String("issuer", issuer.Subject.String()), zap.Error(err))
			}
		}
		if !ok.(bool) {
			continue
		}
		if !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate) {
			c.warnOnce("stale CRL of "+issuer.Subject.String(), zap.String("issuer", issuer.Subject.String()), zap.Time("next_update", crl.NextUpdate))
			continue
		}
		return crl
	}
	return nil
}

func (c *Checker) warnOnce(what string, fields ...zap.Field) {
	if _, dup := c.warned.LoadOrStore(what, struct{}{}); !dup {
		c.logger.Warn("revocation status unknown: "+what, fields...)
	}
}
