package revocation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/safe"
	"github.com/caddy-mtls/caddy-mtls/metrics"
	"go.uber.org/zap"
	"golang.org/x/crypto/ocsp"
)

// DefaultOCSPTimeout bounds one OCSP query.
const DefaultOCSPTimeout = 2 * time.Second

// DefaultUnknownCache is how long an unknown OCSP status is remembered.
const DefaultUnknownCache = 5 * time.Second

// ocspNoNextUpdate is how long an answer without a nextUpdate is kept.
const ocspNoNextUpdate = time.Hour

// maxOCSPResponse bounds an OCSP response's size.
const maxOCSPResponse = 1 << 20

// maxOCSPCache bounds how many OCSP answers are kept.
const maxOCSPCache = 10000

// ocspAnswer is a cached OCSP status.
type ocspAnswer struct {
	status int // ocsp.Good, ocsp.Revoked, or ocsp.Unknown (also when there was no answer)
	until  time.Time
}

type ocspKey struct {
	issuer [sha256.Size]byte
	serial string
}

// ocspCache keeps OCSP answers until their nextUpdate, unknown statuses
// for UnknownCache.
type ocspCache struct {
	mu sync.Mutex
	m  map[ocspKey]ocspAnswer
}

func (oc *ocspCache) get(key ocspKey, now time.Time) (ocspAnswer, bool) {
	oc.mu.Lock()
	a, ok := oc.m[key]
	oc.mu.Unlock()
	return a, ok && now.Before(a.until)
}

func (oc *ocspCache) put(key ocspKey, a ocspAnswer) {
	oc.mu.Lock()
	if len(oc.m) >= maxOCSPCache {
		oc.m = map[ocspKey]ocspAnswer{}
	}
	oc.m[key] = a
	oc.mu.Unlock()
}

// checkOCSP checks one certificate by OCSP; see Check.
func (c *Checker) checkOCSP(cert, issuer *x509.Certificate, now time.Time) (reason string, until time.Time) {
	a := c.ocspStatus(cert, issuer, now)
	switch {
	case a.status == ocsp.Good:
		return "", a.until
	case a.status == ocsp.Revoked:
		return Revoked, a.until
	case c.strict:
		return Unknown, a.until
	}
	return "", a.until
}

// ocspStatus returns cert's OCSP status: from the cache, else from one
// query that everyone asking about cert meanwhile waits for.
func (c *Checker) ocspStatus(cert, issuer *x509.Certificate, now time.Time) ocspAnswer {
	key := ocspKey{issuer: sha256.Sum256(issuer.Raw), serial: cert.SerialNumber.String()}
	if a, ok := c.ocspCache.get(key, now); ok {
		return a
	}
	v, _, _ := c.ocspFlights.Do(string(key.issuer[:])+key.serial, func() (any, error) {
		if a, ok := c.ocspCache.get(key, now); ok { // a query that just ended
			return a, nil
		}
		a := c.queryOCSP(cert, issuer, now)
		c.ocspCache.put(key, a)
		return a, nil
	})
	return v.(ocspAnswer)
}

// queryOCSP asks cert's responder and returns its answer, to be kept until
// its nextUpdate, or an unknown status to be kept for UnknownCache. It logs
// and counts what it got.
func (c *Checker) queryOCSP(cert, issuer *x509.Certificate, now time.Time) ocspAnswer {
	unknownCache := time.Duration(c.cfg.UnknownCache)
	if unknownCache <= 0 {
		unknownCache = DefaultUnknownCache
	}
	unknown := ocspAnswer{status: ocsp.Unknown, until: now.Add(unknownCache)}
	resp, err := c.askOCSP(cert, issuer, now)
	if err != nil {
		metrics.OCSPAnswer(metrics.OCSPError)
		c.logger.Warn("revocation status unknown: OCSP", zap.String("subject", cert.Subject.String()),
			zap.Duration("retry_in", unknownCache), zap.Error(err))
		return unknown
	}
	until := resp.NextUpdate
	if until.IsZero() {
		until = now.Add(ocspNoNextUpdate)
	}
	switch resp.Status {
	case ocsp.Good:
		metrics.OCSPAnswer(metrics.OCSPGood)
		return ocspAnswer{status: ocsp.Good, until: until}
	case ocsp.Revoked:
		metrics.OCSPAnswer(metrics.OCSPRevoked)
		return ocspAnswer{status: ocsp.Revoked, until: until}
	}
	metrics.OCSPAnswer(metrics.OCSPUnknown)
	c.logger.Warn("revocation status unknown: the OCSP responder does not know the certificate",
		zap.String("subject", cert.Subject.String()), zap.Duration("retry_in", unknownCache))
	if until.Before(unknown.until) {
		unknown.until = until
	}
	return unknown
}

// askOCSP sends one OCSP query about cert to its issuer's responder (the
// configured one, else the certificate's AIA) and returns the checked
// response. The query ends with the config, or after OCSPTimeout.
func (c *Checker) askOCSP(cert, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	responder := c.cfg.OCSPResponder
	if responder == "" {
		if len(cert.OCSPServer) == 0 {
			return nil, errors.New("the certificate names no OCSP responder")
		}
		responder = cert.OCSPServer[0]
	}
	req, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(c.cfg.OCSPTimeout)
	if timeout <= 0 {
		timeout = DefaultOCSPTimeout
	}
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, responder, bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	httpReq.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := c.client.Do(httpReq)
	if err != nil {
		return nil, fmt.Errorf("OCSP responder %s: %w", responder, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("OCSP responder %s: HTTP %d", responder, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponse+1))
	if err != nil {
		return nil, fmt.Errorf("OCSP responder %s: %w", responder, err)
	}
	if len(body) > maxOCSPResponse {
		return nil, fmt.Errorf("OCSP responder %s: response larger than %d bytes", responder, maxOCSPResponse)
	}
	answer, err := safe.Decode("OCSP response", func() (*ocsp.Response, error) { return parseOCSP(body, cert, issuer, now) })
	if err != nil {
		return nil, fmt.Errorf("OCSP responder %s: %w", responder, err)
	}
	return answer, nil
}

// parseOCSP parses an OCSP response about cert and checks it: signed by
// issuer or a responder it delegated to, not from the future, not past its
// nextUpdate.
func parseOCSP(body []byte, cert, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	answer, err := ocsp.ParseResponseForCert(body, cert, issuer)
	if err != nil {
		return nil, err
	}
	if answer.ThisUpdate.After(now.Add(5 * time.Minute)) {
		return nil, fmt.Errorf("response from the future (%s)", answer.ThisUpdate)
	}
	if !answer.NextUpdate.IsZero() && !answer.NextUpdate.After(now) {
		return nil, fmt.Errorf("stale response (nextUpdate %s)", answer.NextUpdate)
	}
	return answer, nil
}
