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

	"go.uber.org/zap"
	"golang.org/x/crypto/ocsp"
)

// DefaultOCSPTimeout bounds one OCSP query.
const DefaultOCSPTimeout = 2 * time.Second

// maxOCSPResponse bounds an OCSP response's size.
const maxOCSPResponse = 1 << 20

// maxOCSPCache bounds how many OCSP answers are kept.
const maxOCSPCache = 10000

// ocspAnswer is a cached OCSP status.
type ocspAnswer struct {
	status int // ocsp.Good, ocsp.Revoked, ocsp.Unknown
	until  time.Time
}

type ocspKey struct {
	issuer [sha256.Size]byte
	serial string
}

// ocspCache keeps OCSP answers until their nextUpdate.
type ocspCache struct {
	mu sync.Mutex
	m  map[ocspKey]ocspAnswer
}

// ocspStatus returns cert's OCSP status from its issuer's responder (the
// configured one, else the certificate's AIA), and until when it holds. An
// error means the status cannot be told.
func (c *Checker) ocspStatus(cert, issuer *x509.Certificate, now time.Time) (int, time.Time, error) {
	key := ocspKey{issuer: sha256.Sum256(issuer.Raw), serial: cert.SerialNumber.String()}
	c.ocspCache.mu.Lock()
	if a, ok := c.ocspCache.m[key]; ok && now.Before(a.until) {
		c.ocspCache.mu.Unlock()
		return a.status, a.until, nil
	}
	c.ocspCache.mu.Unlock()

	responder := c.cfg.OCSPResponder
	if responder == "" {
		if len(cert.OCSPServer) == 0 {
			return 0, time.Time{}, errors.New("the certificate names no OCSP responder")
		}
		responder = cert.OCSPServer[0]
	}
	req, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		return 0, time.Time{}, err
	}
	timeout := time.Duration(c.cfg.OCSPTimeout)
	if timeout <= 0 {
		timeout = DefaultOCSPTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, responder, bytes.NewReader(req))
	if err != nil {
		return 0, time.Time{}, err
	}
	httpReq.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := c.client.Do(httpReq)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("OCSP responder %s: %w", responder, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, time.Time{}, fmt.Errorf("OCSP responder %s: HTTP %d", responder, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponse+1))
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("OCSP responder %s: %w", responder, err)
	}
	if len(body) > maxOCSPResponse {
		return 0, time.Time{}, fmt.Errorf("OCSP responder %s: response larger than %d bytes", responder, maxOCSPResponse)
	}
	// Checks the signature: by the issuer, or a responder it delegated to.
	answer, err := ocsp.ParseResponseForCert(body, cert, issuer)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("OCSP responder %s: %w", responder, err)
	}
	if answer.ThisUpdate.After(now.Add(5 * time.Minute)) {
		return 0, time.Time{}, fmt.Errorf("OCSP responder %s: response from the future (%s)", responder, answer.ThisUpdate)
	}
	until := answer.NextUpdate
	if until.IsZero() {
		until = now.Add(time.Hour) // no nextUpdate: ask again in an hour
	}
	if !until.After(now) {
		return 0, time.Time{}, fmt.Errorf("OCSP responder %s: stale response (nextUpdate %s)", responder, answer.NextUpdate)
	}
	c.ocspCache.mu.Lock()
	if len(c.ocspCache.m) >= maxOCSPCache {
		c.ocspCache.m = map[ocspKey]ocspAnswer{}
	}
	c.ocspCache.m[key] = ocspAnswer{status: answer.Status, until: until}
	c.ocspCache.mu.Unlock()
	if answer.Status == ocsp.Unknown {
		return answer.Status, until, errors.New("the OCSP responder does not know the certificate")
	}
	return answer.Status, until, nil
}

// checkOCSP checks one certificate by OCSP; see Check.
func (c *Checker) checkOCSP(cert, issuer *x509.Certificate, now time.Time) (reason string, until time.Time) {
	status, until, err := c.ocspStatus(cert, issuer, now)
	switch {
	case err != nil:
		c.logger.Warn("revocation status unknown: OCSP", zap.String("subject", cert.Subject.String()), zap.Error(err))
		if c.strict {
			return Unknown, time.Time{}
		}
		return "", time.Time{}
	case status == ocsp.Revoked:
		return Revoked, until
	}
	return "", until
}
