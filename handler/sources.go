package handler

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/certcheck"
	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/trustpool"
)

// Who may set the certificate header: an address `from` names and/or a
// TLS client certificate that chains to `from_client_certificate`.

// wideRangeBits are the prefix lengths shorter than which a `from` range
// is warned about: more addresses than a load balancer tier has.
const (
	wideRangeBits4 = 24
	wideRangeBits6 = 64
)

// proxyVerdictTTL bounds how long a proxy certificate's verdict is reused.
const proxyVerdictTTL = 10 * time.Minute

// provisionHeaderSources reads `from` and `from_client_certificate`.
func (h *Handler) provisionHeaderSources(ctx caddy.Context, hc *Header) error {
	if len(hc.From) == 0 && hc.FromClientCertificateRaw == nil {
		return errors.New("say who may set the header: from <ranges> (the load balancers' addresses), " +
			"from trusted_proxies (the server's trusted_proxies), or from_client_certificate <trust pool>")
	}
	for _, s := range hc.From {
		switch s {
		case FromTrustedProxies:
			h.fromTrusted = true
			h.logger.Warn("client_cert_auth believes the certificate header from the server's trusted_proxies: " +
				"whoever those ranges let in can name any caller; list the load balancers in from, or use from_client_certificate")
			continue
		case "private_ranges":
			for _, cidr := range caddyhttp.PrivateRangesCIDR() {
				p, err := ParseRange(cidr)
				if err != nil {
					return fmt.Errorf("from private_ranges: %w", err)
				}
				h.from = append(h.from, p)
			}
			h.warnWideFrom(s, "every host of the private networks and every local user and container")
			continue
		}
		p, err := ParseRange(s)
		if err != nil {
			return fmt.Errorf("from: %w", err)
		}
		h.from = append(h.from, p)
		switch {
		case p.Addr().IsLoopback():
			h.warnWideFrom(s, "every local user and process, which can all connect from loopback addresses")
		case p.Addr().Is4() && p.Bits() < wideRangeBits4, p.Addr().Is6() && !p.Addr().Is4In6() && p.Bits() < wideRangeBits6:
			h.warnWideFrom(s, fmt.Sprintf("%s addresses", wideCount(p)))
		}
	}
	if hc.FromClientCertificateRaw != nil {
		ca, err := trustpool.Load(ctx, hc, "FromClientCertificateRaw")
		if err != nil {
			return fmt.Errorf("from_client_certificate: %w", err)
		}
		h.proxyRoots = ca.CertPool()
		h.proxies = certcheck.NewCache[[]byte](256)
		h.trustCAKeys = make(map[string]bool, len(h.trustCAs))
		for _, c := range h.trustCAs {
			h.trustCAKeys[caKey(c)] = true
		}
		if err := h.checkProxiesApart(ca); err != nil {
			return err
		}
	}
	return nil
}

// checkProxiesApart refuses a from_client_certificate pool that callers'
// certificates chain to as well: a trust_pool CA (or a pinned client) that
// verifies to it makes every caller it accepts an allowed proxy, which
// could set the header and name any other caller (and at run time such a
// certificate is never taken for a proxy's: see callersCertificate, so the
// load balancers' own would not work either). A proxies' CA that verifies
// to trust_pool (an intermediate under the callers' root) is fine if it
// issues only load balancers' certificates: a warning. A pool whose source
// does not list its certificates (`system`) cannot be checked.
func (h *Handler) checkProxiesApart(proxyCA caddytls.CA) error {
	now := time.Now()
	verifies := func(c *x509.Certificate, inter []*x509.Certificate, roots *x509.CertPool) bool {
		pool := x509.NewCertPool()
		for _, i := range inter {
			pool.AddCert(i)
		}
		_, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err == nil
	}
	for _, c := range h.trustCAs {
		if verifies(c, nil, h.proxyRoots) {
			return fmt.Errorf("from_client_certificate: trust_pool's CA %s chains to it too, so every caller it accepts could set the header "+
				"and name any other caller: give the load balancers a CA of their own, or leave from_client_certificate out and list "+
				"the load balancers in from", certcodec.Name(c))
		}
	}
	for _, c := range h.Clients {
		if verifies(c.cert, c.chain, h.proxyRoots) {
			return fmt.Errorf("from_client_certificate: pinned client %q (%s) chains to it: a caller's certificate must not be a load balancer's",
				c.Alias, certcodec.Name(c.cert))
		}
	}
	if lister, ok := proxyCA.(caddytls.CertificateProvider); ok && h.checker.Roots != nil {
		for _, c := range lister.Certificates() {
			if verifies(c, nil, h.checker.Roots) {
				h.logger.Warn("client_cert_auth: the from_client_certificate CA is under a trust_pool CA: any certificate it issues is also "+
					"a caller's; make sure it issues only load balancers' certificates", zap.String("ca", certcodec.Name(c)))
			}
		}
	}
	return nil
}

func (h *Handler) warnWideFrom(from, who string) {
	h.logger.Warn("client_cert_auth believes the certificate header from a wide range: anyone there can name any caller; "+
		"list only the load balancers, or add from_client_certificate",
		zap.String("from", from), zap.String("covers", who))
}

// wideCount says roughly how many addresses a prefix holds.
func wideCount(p netip.Prefix) string {
	host := p.Addr().BitLen() - p.Bits()
	if host >= 63 {
		return fmt.Sprintf("2^%d", host)
	}
	return fmt.Sprintf("%d", uint64(1)<<host)
}

// proxyPresented reports whether the request's connection presented a TLS
// client certificate that verifies to from_client_certificate for client
// authentication. An accepted chain is kept under its leaf's DER with the
// intermediates it was made with; any other chain, and a refused one, is
// verified again or kept under the SHA-256 of the whole chain, so that one
// chain's verdict never decides another's (a load balancer that once left
// out its intermediate is not refused when it sends it).
func (h *Handler) proxyPresented(r *http.Request) bool {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return false
	}
	certs := r.TLS.PeerCertificates
	now := time.Now()
	if inter, ok := h.proxies.GetBytes(certcheck.SourceTLS, certs[0].Raw, now, 0); ok && sameIntermediates(inter, certs[1:]) {
		return true
	}
	hash := chainKey(certs)
	if _, ok := h.proxies.GetBytes(certcheck.SourceHeader, hash[:], now, 0); ok {
		return false // refused, and kept as refused
	}
	chains, reason := certcheck.Verify(certs[0], certs[1:], h.proxyRoots, now)
	expires := now.Add(proxyVerdictTTL)
	for _, chain := range chains {
		for _, c := range chain {
			if c.NotAfter.Before(expires) {
				expires = c.NotAfter
			}
		}
	}
	if reason == certcheck.OK && h.revocation != nil {
		// A load balancer's revoked key is refused like a caller's.
		r, until := h.revocation.Check(chains[0], now)
		if r != "" {
			reason = certcheck.Revoked
		}
		if !until.IsZero() && until.After(now) && until.Before(expires) {
			expires = until
		}
	}
	if reason == certcheck.OK {
		if why := h.callersCertificate(certs[0], chains); why != "" {
			h.logger.Warn("a caller's certificate chains to from_client_certificate: not taken for a proxy's, header not believed; "+
				"give the load balancers a CA of their own", zap.String("remote_addr", r.RemoteAddr), zap.String("why", why),
				zap.String("subject", capString(certs[0].Subject.String(), maxLoggedSubject)))
			h.proxies.Put(certcheck.SourceHeader, string(hash[:]), nil, expires, 0)
			return false
		}
	}
	if reason != certcheck.OK {
		if c := h.logger.Check(zap.DebugLevel, "proxy's client certificate does not verify to from_client_certificate: header not believed"); c != nil {
			c.Write(zap.String("remote_addr", r.RemoteAddr), zap.Stringer("reason", reason), zap.String("subject", capString(certs[0].Subject.String(), maxLoggedSubject)))
		}
		h.proxies.Put(certcheck.SourceHeader, string(hash[:]), nil, expires, 0)
		return false
	}
	inter := []byte{}
	for _, c := range certs[1:] {
		inter = append(inter, c.Raw...)
	}
	h.proxies.Put(certcheck.SourceTLS, string(certs[0].Raw), inter, expires, 0)
	return true
}

// callersCertificate says why leaf, which verified to from_client_certificate
// by chains, is a caller's and so never a proxy's: a pinned or stored
// client, or issued under a trust_pool CA that the chain passes through (a
// copy of it cross-signed by the proxies' root has its subject and key).
// It returns "" for a proxy's. A stored client added later than the
// proxy's verdict (kept at most proxyVerdictTTL) is seen once it expires.
func (h *Handler) callersCertificate(leaf *x509.Certificate, chains [][]*x509.Certificate) string {
	fp := sha256.Sum256(leaf.Raw)
	if h.pinned[fp] != nil {
		return "a pinned client"
	}
	if h.storedClient(fp) != nil {
		return "a stored client"
	}
	for _, chain := range chains {
		for _, c := range chain[1:] {
			if h.trustCAKeys[caKey(c)] {
				return "issued under trust_pool's CA " + certcodec.Name(c)
			}
		}
	}
	return ""
}

// caKey identifies a CA by its subject and public key, as chains are built:
// its copies (cross-signed, renewed) share it.
func caKey(c *x509.Certificate) string {
	return string(c.RawSubject) + string(c.RawSubjectPublicKeyInfo)
}

// sameIntermediates reports whether certs are, in order, the DER
// concatenation inter (DER is self-delimiting, so the concatenation tells
// them apart).
func sameIntermediates(inter []byte, certs []*x509.Certificate) bool {
	for _, c := range certs {
		if len(inter) < len(c.Raw) || string(inter[:len(c.Raw)]) != string(c.Raw) {
			return false
		}
		inter = inter[len(c.Raw):]
	}
	return len(inter) == 0
}
