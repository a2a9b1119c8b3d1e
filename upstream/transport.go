// Package upstream implements ssl_profiles, a reverse_proxy transport that
// applies a per-upstream SSL profile (trust, client key pair, SNI, TLS
// versions) to each gateway-to-backend connection, with the client key pair
// chosen per request where configured.
package upstream

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/events"
	"github.com/caddy-mtls/caddy-mtls/internal/bounded"
	"github.com/caddy-mtls/caddy-mtls/internal/periodic"
	"github.com/caddy-mtls/caddy-mtls/metrics"
	"github.com/caddy-mtls/caddy-mtls/store"
	"github.com/caddy-mtls/caddy-mtls/trustpool"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is Caddy's `http` transport with per-upstream SSL profiles.
//
// Every option of the `http` transport is accepted and is the base of every
// profile. A request's profile is chosen by its upstream's dial address
// (never by the Host header): an exact `host:port` first, then the longest
// wildcard, then the host on any port; no match uses the base settings.
//
// A pooled connection keeps the client identity it was made with, so each
// (profile, identity) pair has its own connection pool; requests of two
// identities never share a connection.
type Transport struct {
	reverseproxy.HTTPTransport

	// The SSL profiles. Default: none.
	Profiles []*Profile `json:"profiles,omitempty"`

	// Whether upstreams' certificates must name the host dialed (or the
	// server name): the default of every profile, and the setting of
	// upstreams without one (WSO2's transport-wide `HostnameVerifier`).
	// When false, the chain is still verified against the trust pool, with
	// its validity window and serverAuth usage; only the name match is
	// skipped. Default: `true`.
	VerifyHostname *bool `json:"verify_hostname,omitempty"`

	// A file of more profiles: JSON (`{"profiles": [...]}`, each element a
	// profile as in `profiles`) or WSO2 API Manager's
	// `multi_ssl_profiles.xml` (a file starting with `<`). Default: none.
	ProfilesFile string `json:"profiles_file,omitempty"`

	// The directory relative paths in the profiles file resolve against
	// (WSO2 `Location`s; keystore, PEM and CRL files of a JSON file): for
	// WSO2's file, the WSO2 home (`APIM_HOME`), where
	// `repository/resources/security/` is. Placeholders such as
	// `{env.APIM_HOME}` are replaced. Default: the profiles file's folder.
	ProfilesBaseDir string `json:"profiles_base_dir,omitempty"`

	// How often the profiles file is checked for changes. A broken new
	// version is logged and the last good profiles stay. Default: `1m`.
	ProfilesReload caddy.Duration `json:"profiles_reload,omitempty"`

	// How long before a certificate of a profile (trust pool CA, client key
	// pair, backend certificate last seen) ends a warning is logged, at
	// provision and daily, and the event mtls_certificate_expiring emitted.
	// Default: `720h`.
	ExpiryWarning caddy.Duration `json:"expiry_warning,omitempty"`

	// How often the key pairs of `client_keypair` profiles are read again
	// from the storage. Default: `30s`.
	KeyPairRefresh caddy.Duration `json:"keypair_refresh,omitempty"`

	// The most connection pools (one per profile and client identity
	// chosen per request) kept open; the least recently used one is closed
	// beyond that. Default: `100`.
	MaxPools int `json:"max_pools,omitempty"`

	ctx        caddy.Context
	logger     *zap.Logger
	baseJSON   []byte                      // the base http transport's config, to build more transports from
	inherited  *tls.Config                 // the base transport's TLS client config, nil without TLS
	configured []*profile                  // built from Profiles
	profiles   *atomic.Pointer[profileSet] // swapped when the profiles file changes
	pools      *poolCache
	file       *profilesFile
	keyPairs   *keyPairsUse
}

// DefaultMaxPools is the default bound on per-identity connection pools.
const DefaultMaxPools = 100

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.ssl_profiles",
		New: func() caddy.Module { return new(Transport) },
	}
}

// Provision builds the base transport and every profile's TLS settings and
// default connection pool, and starts watching the profiles file.
func (t *Transport) Provision(ctx caddy.Context) error {
	t.ctx = ctx
	t.logger = ctx.Logger()
	if err := metrics.Register(ctx); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	if len(t.NetworkProxyRaw) > 0 || t.ForwardProxyURL != "" {
		return errors.New("network_proxy is not supported by ssl_profiles")
	}
	for _, v := range t.Versions {
		if v == "3" || v == "h2c" {
			return fmt.Errorf("HTTP version %s is not supported by ssl_profiles", v)
		}
	}
	if t.MaxPools < 0 {
		return fmt.Errorf("max_pools %d: must not be negative", t.MaxPools)
	}
	if t.MaxPools == 0 {
		t.MaxPools = DefaultMaxPools
	}

	// An SSL profiles transport speaks TLS (but on except_ports), so health
	// checks and the Host header of upstreams follow the https rules even
	// when no base TLS option is given.
	if t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}

	// Keep the base config as it is before provisioning: loading modules
	// consumes their raw config, and every profile's transport is built
	// from it anew.
	var err error
	if t.baseJSON, err = json.Marshal(t.HTTPTransport); err != nil {
		return fmt.Errorf("encoding base transport: %w", err)
	}
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return err
	}
	if t.TLS != nil {
		t.inherited = t.Transport.TLSClientConfig
	}
	if !t.verifyHostname() {
		skipNameCheck(t.Transport.TLSClientConfig)
	}
	t.pools = newPoolCache(t.MaxPools)
	t.keyPairs = new(keyPairsUse)
	t.profiles = new(atomic.Pointer[profileSet])

	set := newProfileSet()
	for i, p := range t.Profiles {
		built, err := t.buildProfile(p, func(p *Profile) (caddytls.CA, error) {
			return trustpool.Load(ctx, p, "TrustPoolRaw")
		})
		if err != nil {
			return fmt.Errorf("profile %d (%s): %w", i+1, profileName(p), err)
		}
		if err := set.add(built, p.Servers); err != nil {
			return fmt.Errorf("profile %d (%s): %w", i+1, profileName(p), err)
		}
		t.configured = append(t.configured, built)
	}

	t.profiles.Store(set)
	t.trackExpiry(set)
	if t.ProfilesBaseDir != "" && t.ProfilesFile == "" {
		return errors.New("profiles_base_dir is set without profiles_file")
	}
	if t.ProfilesFile != "" {
		// {env.*} and the other placeholders known at load.
		path, err := caddy.NewReplacer().ReplaceOrErr(t.ProfilesFile, true, true)
		if err != nil {
			return fmt.Errorf("profiles_file %s: %w", t.ProfilesFile, err)
		}
		baseDir, err := profilesBaseDir(path, t.ProfilesBaseDir)
		if err != nil {
			return err
		}
		t.file = &profilesFile{path: path, baseDir: baseDir}
		data, err := bounded.ReadFile(path, maxProfilesFile)
		if err != nil {
			return fmt.Errorf("profiles_file %s: %w", path, err)
		}
		t.file.mu.Lock()
		_, err = t.file.attempt(t, data)
		t.file.mu.Unlock()
		if err != nil {
			return fmt.Errorf("profiles_file %s: %w", path, err)
		}
		interval := time.Duration(t.ProfilesReload)
		if interval == 0 {
			interval = time.Minute
		}
		// Re-read until the config is unloaded or the transport cleaned up.
		var watchCtx context.Context
		watchCtx, t.file.cancel = context.WithCancel(t.ctx)
		go periodic.Every(watchCtx, "profiles_file", t.logger, interval, t.reload)
	}
	window := time.Duration(t.ExpiryWarning)
	if window <= 0 {
		window = events.DefaultExpiryWarning
	}
	events.WatchExpiring(ctx, t, window, t.logger, events.NewEmitter(ctx))
	return nil
}

// trackExpiry shows the expiry of the trust pools and client key pairs of
// the profiles in set.
func (t *Transport) trackExpiry(set *profileSet) {
	trust, keyPairs := map[string]time.Time{}, map[string]time.Time{}
	for _, p := range set.all {
		for _, c := range p.trust {
			trust[p.name+" "+certcodec.Name(c)] = c.NotAfter
		}
		certs := p.defaultCerts
		if p.keyPairs != nil {
			certs = allCerts(p.keyPairs)
		}
		if p.keyPair != nil {
			certs = []tls.Certificate{*p.keyPair.current.Load()}
		}
		for _, c := range certs {
			if c.Leaf != nil {
				keyPairs[p.name+" "+certcodec.Name(c.Leaf)] = c.Leaf.NotAfter
			}
		}
	}
	metrics.SetExpiry(t, metrics.KindTrust, trust)
	metrics.SetExpiry(t, metrics.KindKeyPair, keyPairs)
}

// verifyHostname returns the transport's verify_hostname: true unless set
// false.
func (t *Transport) verifyHostname() bool {
	return t.VerifyHostname == nil || *t.VerifyHostname
}

func profileName(p *Profile) string {
	if len(p.Servers) == 0 {
		return "no servers"
	}
	return p.Servers[0]
}

// buildProfile makes a Profile ready, with its default connection pool.
func (t *Transport) buildProfile(p *Profile, loadCA func(*Profile) (caddytls.CA, error)) (*profile, error) {
	built, err := p.build(t.ctx, baseSettings{tls: t.inherited, verifyHostname: t.verifyHostname(), logger: t.logger, keyPairs: t.storedKeyPairs}, loadCA)
	if err != nil {
		return nil, err
	}
	if built.base.InsecureSkipVerify {
		t.logger.Warn("TLS verification of upstreams is OFF for this profile: anyone on the path can impersonate them", zap.Strings("servers", p.Servers))
	}
	if built.defaultRT, err = t.newRoundTripper(built, defaultIdentity, built.defaultCerts); err != nil {
		return nil, err
	}
	return built, nil
}

// merge returns a set of the configured profiles and those of fileSet.
func (t *Transport) merge(fileSet []*profile) (*profileSet, error) {
	set := newProfileSet()
	for _, p := range t.configured {
		if err := set.add(p, p.patterns); err != nil {
			return nil, err
		}
	}
	for _, p := range fileSet {
		if err := set.add(p, p.patterns); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// newRoundTripper builds an *http.Transport for profile p presenting certs,
// from the base config, so it has every base setting (timeouts, keep-alive,
// HTTP versions, dialing) and its own connection pool.
func (t *Transport) newRoundTripper(p *profile, identity string, certs []tls.Certificate) (*http.Transport, error) {
	var ht reverseproxy.HTTPTransport
	if err := json.Unmarshal(t.baseJSON, &ht); err != nil {
		return nil, fmt.Errorf("decoding base transport: %w", err)
	}
	// Only the settings that need no module loading are kept from the base
	// TLS config; trust, identity and versions are the profile's own.
	tlsCfg := &reverseproxy.TLSConfig{ServerName: p.base.ServerName}
	if base := ht.TLS; base != nil {
		tlsCfg.HandshakeTimeout = base.HandshakeTimeout
		tlsCfg.Renegotiation = base.Renegotiation
		tlsCfg.Curves = base.Curves
		if tlsCfg.ServerName == "" {
			tlsCfg.ServerName = base.ServerName
		}
	}
	ht.TLS = tlsCfg
	if len(ht.Versions) == 0 {
		ht.Versions = []string{"1.1", "2"}
	}
	rt, err := ht.NewTransport(t.ctx)
	if err != nil {
		return nil, err
	}
	cfg := rt.TLSClientConfig
	if cfg == nil {
		cfg = new(tls.Config)
	}
	cfg.RootCAs = p.base.RootCAs
	cfg.Certificates = certs
	switch {
	case p.keyPair != nil:
		cfg.Certificates = nil
		cfg.GetClientCertificate = p.keyPair.getClientCertificate
	case p.inheritedGetCert != nil:
		cfg.GetClientCertificate = p.inheritedGetCert
	}
	cfg.InsecureSkipVerify = p.base.InsecureSkipVerify //nolint:gosec // the user's choice, warned about
	if p.base.MinVersion != 0 {
		cfg.MinVersion = p.base.MinVersion
	}
	// The profile's own, else the base's (newProfile).
	cfg.MaxVersion = p.base.MaxVersion
	cfg.CipherSuites = p.base.CipherSuites
	cfg.CurvePreferences = p.base.CurvePreferences
	cfg.Renegotiation = p.base.Renegotiation
	// Without the name check, crypto/tls verifies nothing and the chain is
	// verified here, before the revocation check, which needs it.
	chainOnly := !p.verifyHostname && !cfg.InsecureSkipVerify
	if chainOnly {
		cfg.InsecureSkipVerify = true
	}
	// Count the handshakes that succeed here; failed ones surface as
	// round trip errors (see RoundTrip).
	name, checker, roots := p.name, p.revocation, cfg.RootCAs
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if chainOnly {
			var err error
			if cs.VerifiedChains, err = verifyChain(cs, roots); err != nil {
				return err
			}
		}
		if checker != nil && len(cs.VerifiedChains) > 0 {
			if reason, _ := checker.Check(cs.VerifiedChains[0], time.Now()); reason != "" {
				metrics.Handshake(name, identity, false)
				return fmt.Errorf("backend certificate refused: %s (revocation status %s)", certcodec.Name(cs.PeerCertificates[0]), reason)
			}
		}
		metrics.Handshake(name, identity, true)
		if len(cs.PeerCertificates) > 0 {
			metrics.SetOneExpiry(t, metrics.KindBackend, name, cs.PeerCertificates[0].NotAfter)
		}
		return nil
	}
	rt.TLSClientConfig = cfg
	return rt, nil
}

// RoundTrip sends req through the connection pool of its upstream's
// profile and client identity.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var p *profile
	if di, ok := reverseproxy.GetDialInfo(req.Context()); ok {
		p = t.profiles.Load().match(di.Address)
	}
	if p == nil {
		return t.HTTPTransport.RoundTrip(req)
	}
	rt, identity, err := t.roundTripperFor(p, req)
	if err != nil {
		// The request's own identity is wrong, not the upstream: answer
		// 502 here rather than fail the round trip, which would count
		// against the upstream's health and could be retried elsewhere.
		if c := t.logger.Check(zapcore.ErrorLevel, "no client identity for the request"); c != nil {
			c.Write(zap.String("profile", p.name), zap.Error(err))
		}
		return badGateway(req), nil
	}
	t.SetScheme(req)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		if isHandshakeError(err) {
			metrics.Handshake(p.name, identity, false)
		}
		return nil, profileError{profile: p.name, err: err}
	}
	return resp, nil
}

// isHandshakeError reports whether err comes from a failed TLS handshake:
// one of crypto/tls's error types, or a TLS alert it sent or received,
// which it gives as a *net.OpError of the operation "local error" or
// "remote error" (the alert's own type is not exported).
func isHandshakeError(err error) bool {
	var (
		verify *tls.CertificateVerificationError
		alert  tls.AlertError
		record tls.RecordHeaderError
		ech    *tls.ECHRejectionError
		op     *net.OpError
	)
	return errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &record) || errors.As(err, &ech) ||
		errors.As(err, &op) && (op.Op == "local error" || op.Op == "remote error")
}

// skipNameCheck makes cfg, a TLS client config that verifies the server's
// certificate, verify its chain only, not its name: crypto/tls's own
// verification is turned off and done in VerifyConnection by verifyChain,
// before what VerifyConnection did. A cfg that verifies nothing stays so.
func skipNameCheck(cfg *tls.Config) {
	if cfg == nil || cfg.InsecureSkipVerify {
		return
	}
	cfg.InsecureSkipVerify = true //nolint:gosec // the chain is verified in VerifyConnection
	roots, next := cfg.RootCAs, cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		var err error
		if cs.VerifiedChains, err = verifyChain(cs, roots); err != nil {
			return err
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
}

// verifyChain verifies the server's certificate as crypto/tls does but for
// its name: its chain to roots (nil: the system's), through the other
// certificates it sent, its validity now and its serverAuth usage. The
// error is crypto/tls's, so it is told as a handshake error.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) ([][]*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, &tls.CertificateVerificationError{Err: errors.New("the server sent no certificate")}
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   time.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	chains, err := cs.PeerCertificates[0].Verify(opts)
	if err != nil {
		return nil, &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return chains, nil
}

// badGateway is the 502 answer to a request that cannot be sent.
func badGateway(req *http.Request) *http.Response {
	body := http.StatusText(http.StatusBadGateway)
	return &http.Response{
		Status:        "502 Bad Gateway",
		StatusCode:    http.StatusBadGateway,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// profileError names the profile of a failed round trip. It keeps what
// reverse_proxy looks at: the wrapped error for errors.Is and errors.As
// (dial errors, cancellation), and net.Error's Timeout (504).
type profileError struct {
	profile string
	err     error
}

func (e profileError) Error() string {
	return "ssl_profiles: profile " + e.profile + ": " + e.err.Error()
}
func (e profileError) Unwrap() error { return e.err }

func (e profileError) Timeout() bool {
	var ne net.Error
	return errors.As(e.err, &ne) && ne.Timeout()
}

func (e profileError) Temporary() bool { return false }

// roundTripperFor returns the connection pool for req's client identity
// in profile p, and the identity's name (an alias, or "default").
func (t *Transport) roundTripperFor(p *profile, req *http.Request) (*http.Transport, string, error) {
	if (p.aliasTemplate == "" && p.keyPairTemplate == "") || isHealthCheck(req) {
		return p.defaultRT, defaultIdentity, nil
	}
	repl, _ := req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	template := p.aliasTemplate + p.keyPairTemplate // one of them is set
	alias := ""
	if repl != nil {
		alias = repl.ReplaceKnown(template, "")
	}
	if alias == "" {
		return nil, "", fmt.Errorf("client identity %s is empty for this request", template)
	}
	if p.keyPairTemplate != "" {
		return t.storedKeyPairRoundTripper(p, alias)
	}
	kp, ok := p.keyPairs.KeyPair(alias)
	if !ok {
		return nil, "", fmt.Errorf("no client key pair %.64q in the keystore", alias)
	}
	rt, err := t.pools.get(poolKey{p: p, alias: kp.Alias}, func() (*http.Transport, error) {
		return t.newRoundTripper(p, kp.Alias, []tls.Certificate{kp.Certificate})
	})
	return rt, kp.Alias, err
}

// storedKeyPairRoundTripper returns the connection pool of profile p for
// the stored key pair name, chosen by this request.
func (t *Transport) storedKeyPairRoundTripper(p *profile, name string) (*http.Transport, string, error) {
	if store.CheckName(name) != nil {
		return nil, "", fmt.Errorf("client key pair name %.64q is not a key pair name", name)
	}
	cert := p.keyPairReader.get(name)
	if cert == nil {
		return nil, "", fmt.Errorf("no stored client key pair %q", name)
	}
	rt, err := t.pools.get(poolKey{p: p, alias: name, storedKeyPair: true, leaf: string(cert.Certificate[0])}, func() (*http.Transport, error) {
		return t.newRoundTripper(p, name, []tls.Certificate{*cert})
	})
	return rt, name, err
}

// defaultIdentity names a profile's default client identity in metrics.
const defaultIdentity = "default"

// isHealthCheck reports whether req is one of reverse_proxy's active health
// checks: they carry no request variables.
func isHealthCheck(req *http.Request) bool {
	return req.Context().Value(caddyhttp.VarsCtxKey) == nil
}

// Cleanup closes every connection pool.
func (t *Transport) Cleanup() error {
	if t.file != nil {
		t.file.stop()
	}
	if t.profiles == nil {
		return t.HTTPTransport.Cleanup()
	}
	if set := t.profiles.Load(); set != nil {
		for _, p := range set.all {
			p.retire()
		}
	}
	if t.pools != nil {
		t.pools.closeAll()
	}
	t.releaseKeyPairs()
	metrics.ForgetExpiry(t)
	return t.HTTPTransport.Cleanup()
}

// poolKey names a connection pool of an identity chosen per request: a
// keystore's alias, or a stored key pair's name and its certificate (a key
// pair replaced gets a pool of its own).
type poolKey struct {
	p             *profile
	alias         string
	storedKeyPair bool
	leaf          string // DER of a stored key pair's certificate
}

// poolCache keeps the per-request identities' connection pools, closing the
// least recently used beyond its bound.
type poolCache struct {
	mu  sync.Mutex
	max int
	m   map[poolKey]*list.Element
	lru list.List // of *poolEntry, most recent first
}

type poolEntry struct {
	key poolKey
	rt  *http.Transport
}

func newPoolCache(max int) *poolCache {
	return &poolCache{max: max, m: make(map[poolKey]*list.Element)}
}

func (c *poolCache) get(key poolKey, build func() (*http.Transport, error)) (*http.Transport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*poolEntry).rt, nil
	}
	rt, err := build()
	if err != nil {
		return nil, err
	}
	c.m[key] = c.lru.PushFront(&poolEntry{key: key, rt: rt})
	for c.lru.Len() > c.max {
		c.removeLocked(c.lru.Back())
	}
	return rt, nil
}

// removeIf closes and forgets the pools whose key matches.
func (c *poolCache) removeIf(match func(poolKey) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, e := range c.m {
		if match(key) {
			c.removeLocked(e)
		}
	}
}

func (c *poolCache) removeLocked(e *list.Element) {
	pe := c.lru.Remove(e).(*poolEntry)
	delete(c.m, pe.key)
	pe.rt.CloseIdleConnections()
}

// drop closes the pools of profiles not in keep.
func (c *poolCache) drop(keep func(*profile) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; {
		next := e.Next()
		if !keep(e.Value.(*poolEntry).key.p) {
			c.removeLocked(e)
		}
		e = next
	}
}

func (c *poolCache) closeAll() {
	c.drop(func(*profile) bool { return false })
}

// len returns how many pools are open.
func (c *poolCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Interface guards
var (
	_ caddy.Provisioner                                = (*Transport)(nil)
	_ caddy.CleanerUpper                               = (*Transport)(nil)
	_ http.RoundTripper                                = (*Transport)(nil)
	_ reverseproxy.TLSTransport                        = (*Transport)(nil)
	_ reverseproxy.HealthCheckSchemeOverriderTransport = (*Transport)(nil)
	_ reverseproxy.RequestHeaderOpsTransport           = (*Transport)(nil)
	_ caddyfile.Unmarshaler                            = (*Transport)(nil)
)
