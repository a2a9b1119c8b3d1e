// Package handler implements client_cert_auth, an HTTP handler that
// authenticates API callers by their X.509 client certificate, taken from the
// TLS connection or, behind a TLS-terminating proxy that is allowed to say
// so, from a request header.
package handler

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-mtls/caddy-mtls/certcheck"
	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/events"
	"github.com/caddy-mtls/caddy-mtls/internal/bounded"
	"github.com/caddy-mtls/caddy-mtls/internal/safe"
	"github.com/caddy-mtls/caddy-mtls/metrics"
	"github.com/caddy-mtls/caddy-mtls/revocation"
	"github.com/caddy-mtls/caddy-mtls/store"
	"github.com/caddy-mtls/caddy-mtls/trustpool"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler authenticates requests by client certificate, per route.
//
// A certificate is accepted when its chain verifies to the trust pool (with
// the clientAuth extended key usage, inside its validity window) or when it is
// exactly one of the pinned clients. The handler verifies by itself, so the
// site's TLS settings only need to request a certificate (client_auth mode
// `request`); per-route trust never depends on them.
//
// Which certificate counts: when the header fallback is configured, the
// request comes from an allowed source and carries the header, the header's
// certificate; otherwise the TLS peer certificate. A header from any other
// source is never believed.
//
// Answers: 401 when no certificate was presented (mode `require`), 403 when
// one was presented and not accepted, 400 when an allowed source sent a header
// that cannot be decoded. Errors go through Caddy's error handling, so
// `handle_errors` can shape them.
//
// On success it sets the placeholders `{http.auth.user.id}` (the alias of a
// pinned client, else the subject's common name), `{http.auth.user.alias}`,
// `.tier`, `.subject`, `.issuer`, `.serial`, `.fingerprint` (SHA-256 hex of
// the DER), `.not_after` (RFC 3339), `.source` (`tls` or `header`),
// `.san_dns`, `.san_uri` and `.san_email` (comma-separated).
type Handler struct {
	// Whether a certificate is required. Default: `require`.
	//
	// Mode | Meaning
	// -----|--------
	// `require` | requests without an accepted certificate are refused
	// `optional` | requests without a certificate pass unauthenticated; a presented certificate that is not accepted is still refused
	Mode string `json:"mode,omitempty"`

	// The certificate authorities that client certificates must chain to: one
	// of Caddy's `tls.ca_pool.source` modules (file, inline, pki_root,
	// storage, http, ...). Default: none (only pinned clients are accepted).
	TrustPoolRaw json.RawMessage `json:"trust_pool,omitempty" caddy:"namespace=tls.ca_pool.source inline_key=provider"`

	// Leaf certificates accepted as they are, each with an alias and an
	// optional tier. Default: none.
	Clients []Client `json:"clients,omitempty"`

	// Checking certificates issued under the trust pool against their
	// issuers' CRLs. Default: none.
	Revocation *revocation.Config `json:"revocation,omitempty"`

	// Also trust the clients stored through the admin API, with their alias
	// and tier. Default: off.
	ClientsFromStorage *StorageClients `json:"clients_from_storage,omitempty"`

	// Reading the certificate from a request header set by a TLS-terminating
	// proxy in front. Default: off (only the TLS connection counts).
	Header *Header `json:"header,omitempty"`

	// Passing the accepted certificate to the next handlers (and so upstream)
	// in a header. Default: off.
	Forward *Forward `json:"forward,omitempty"`

	// The most verification verdicts kept in the cache. Default: `10000`.
	CacheSize int `json:"cache_size,omitempty"`

	// How long before a certificate of this handler (trust pool CA, pinned
	// or stored client) ends a warning is logged, at provision and daily,
	// and the event mtls_certificate_expiring emitted. Default: `720h`.
	ExpiryWarning caddy.Duration `json:"expiry_warning,omitempty"`

	// The handler's name in its metrics: the `handler` label of
	// `caddy_mtls_requests_total` and of the verification cache's metrics,
	// beside `server`, the HTTP server's name. Handlers given one name in
	// one server add up. Default: `client_cert_auth` for the first handler
	// of a server without a name, then `client_cert_auth_2`,
	// `client_cert_auth_3`, ... in the order of the server's routes (a
	// warning is logged then: name them).
	Name string `json:"name,omitempty"`

	optional        bool
	checker         certcheck.Checker   // the trust pool and revocation
	trustCAs        []*x509.Certificate // the trust pool's, where its source lists them
	pinned          map[[sha256.Size]byte]*Client
	headerField     string
	chainField      string
	headerFormat    certcodec.Format
	from            []netip.Prefix
	fromTrusted     bool            // from names the server's trusted_proxies
	proxyRoots      *x509.CertPool  // from_client_certificate
	trustCAKeys     map[string]bool // caKey of the trust pool's CAs, with proxyRoots
	proxies         *certcheck.Cache[[]byte]
	forwardField    string
	forwardFmt      certcodec.Format
	strip           []string
	cache           *certcheck.Cache[*verdict]
	clients         *clientsReader       // with clients_from_storage; set once, at provision
	clientsKey      string               // its key in clientsReaders ("": h's own)
	clientsReleased bool                 // Cleanup ended the use of clients
	pinnedExpiry    map[string]time.Time // alias -> not after
	events          *events.Emitter
	revocation      *revocation.Checker
	server          string           // the HTTP server's name, for metrics
	name            string           // Name, or the default given
	counters        *requestCounters // made once, at provision
	logger          *zap.Logger
}

// Client is a pinned client certificate.
type Client struct {
	// The name the client is known by; it becomes `{http.auth.user.id}` and
	// `{http.auth.user.alias}`. Required. An alias given again with another
	// certificate (a client rotating it) accepts both, with the first
	// one's tier.
	Alias string `json:"alias"`

	// A free-form class of the client, such as a throttling tier; it becomes
	// `{http.auth.user.tier}`. Default: empty.
	Tier string `json:"tier,omitempty"`

	// Path of a PEM file whose first certificate is the client's. Exactly
	// one of `certificate_file` and `certificate` is required.
	CertificateFile string `json:"certificate_file,omitempty"`

	// The client's certificate as PEM text, instead of a file. Exactly one
	// of `certificate_file` and `certificate` is required.
	Certificate string `json:"certificate,omitempty"`

	// The client's certificate, then the certificates after it in its PEM
	// (its chain), which tell its issuer for revocation checks whatever the
	// client sends.
	cert  *x509.Certificate
	chain []*x509.Certificate
}

// Header configures the header fallback, for TLS terminated in front.
type Header struct {
	// The header field that carries the client certificate. Default:
	// `Client-Cert`.
	Field string `json:"field,omitempty"`

	// How the certificate is encoded. Default: `auto`.
	//
	// Format | Encoding
	// -------|---------
	// `auto` | any of the below, told apart by their look
	// `rfc9440` | RFC 9440 byte sequence, `:<base64 DER>:`
	// `url_pem` | URL-encoded PEM (nginx `$ssl_client_escaped_cert`, AWS ALB)
	// `pem` | PEM, newlines possibly replaced by spaces or tabs
	// `base64_der` | bare base64 of the DER bytes; Traefik's `leaf,inter` chain too
	// `xfcc` | Envoy's `X-Forwarded-Client-Cert`: the caller is the last element; with several (`APPEND_FORWARD`), each must match its own `Cert`
	Format string `json:"format,omitempty"`

	// A header field carrying the intermediate certificates (RFC 9440
	// `Client-Cert-Chain` list, or concatenated PEM). Default: none read.
	ChainField string `json:"chain,omitempty"`

	// Who may set the header: client IP ranges (CIDR) or addresses,
	// `private_ranges` (Caddy's shorthand for the private and loopback
	// ranges), or `trusted_proxies` (the server's `trusted_proxies`, named
	// explicitly: it is never inherited). Required unless
	// `from_client_certificate` is given; with both, a proxy must meet
	// both. Default: none.
	From []string `json:"from,omitempty"`

	// The header is believed only on connections whose TLS client
	// certificate (the load balancer's own, as nginx's
	// `proxy_ssl_certificate` presents it) chains to this trust pool, one
	// of Caddy's `tls.ca_pool.source` modules, whatever the connection's
	// address. The site's TLS must request client certificates. Default:
	// none.
	FromClientCertificateRaw json.RawMessage `json:"from_client_certificate,omitempty" caddy:"namespace=tls.ca_pool.source inline_key=provider"`
}

// FromTrustedProxies is the `from` value that names the server's
// `trusted_proxies`.
const FromTrustedProxies = "trusted_proxies"

// Forward configures passing the accepted certificate on.
type Forward struct {
	// The header field to set. Default: `Client-Cert`.
	Field string `json:"field,omitempty"`

	// The encoding: `rfc9440`, `url_pem`, `pem`, `base64_der` or `xfcc` (an
	// Envoy-style element, for Istio backends). Default:
	// `rfc9440`.
	Format string `json:"format,omitempty"`
}

// Defaults.
const (
	DefaultField      = "Client-Cert"
	DefaultChainField = "Client-Cert-Chain"
	DefaultCacheSize  = 10000
)

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.client_cert_auth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the trust pool and pinned clients and prepares the header
// settings.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if err := metrics.Register(ctx); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	h.events = events.NewEmitter(ctx)
	for _, step := range []func(caddy.Context) error{
		h.provisionOptions,
		h.provisionTrust,
		h.provisionPinned,
		h.provisionRevocation,
		h.provisionStoredClients,
		h.provisionHeader,
		h.provisionForward,
		h.provisionCache,
		h.provisionMetrics,
		h.provisionExpiryWarnings,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// provisionOptions checks the plain options first, before anything is
// loaded or started.
func (h *Handler) provisionOptions(caddy.Context) error {
	switch h.Mode {
	case "", "require":
	case "optional":
		h.optional = true
	default:
		return fmt.Errorf("mode %q: want require or optional", h.Mode)
	}
	if h.ExpiryWarning < 0 {
		return fmt.Errorf("expiry_warning %s: must not be negative", time.Duration(h.ExpiryWarning))
	}
	if h.CacheSize < 0 {
		return fmt.Errorf("cache_size %d: must not be negative", h.CacheSize)
	}
	return nil
}

// provisionTrust loads the trust pool, and shows its CAs' expiry.
func (h *Handler) provisionTrust(ctx caddy.Context) error {
	if h.TrustPoolRaw == nil {
		return nil
	}
	ca, err := trustpool.Load(ctx, h, "TrustPoolRaw")
	if err != nil {
		return err
	}
	h.checker.Roots = ca.CertPool()
	if lister, ok := ca.(caddytls.CertificateProvider); ok {
		h.trustCAs = lister.Certificates()
		trust := map[string]time.Time{}
		for _, c := range h.trustCAs {
			trust[certcodec.Name(c)] = c.NotAfter
		}
		metrics.SetExpiry(h, metrics.KindTrust, trust)
	}
	return nil
}

// provisionPinned loads the pinned clients, each certificate once. An alias
// may be given again with another certificate (a client rotating its
// certificate): both are accepted as the client, with the first one's tier.
func (h *Handler) provisionPinned(caddy.Context) error {
	h.pinned = make(map[[sha256.Size]byte]*Client, len(h.Clients))
	h.pinnedExpiry = make(map[string]time.Time, len(h.Clients))
	first := make(map[string]*Client, len(h.Clients))
	for i := range h.Clients {
		c := &h.Clients[i]
		if c.Alias == "" {
			return fmt.Errorf("client %d: alias is required", i+1)
		}
		if f := first[c.Alias]; f != nil {
			if c.Tier != "" && c.Tier != f.Tier {
				return fmt.Errorf("client %q: tier %q differs from the alias's first, %q", c.Alias, c.Tier, f.Tier)
			}
			c.Tier = f.Tier
		} else {
			first[c.Alias] = c
		}
		certs, err := c.load()
		if err != nil {
			return fmt.Errorf("client %q: %w", c.Alias, err)
		}
		cert := certs[0]
		c.cert, c.chain = cert, certs[1:]
		fp := sha256.Sum256(cert.Raw)
		if other, dup := h.pinned[fp]; dup {
			return fmt.Errorf("client %q: same certificate as client %q", c.Alias, other.Alias)
		}
		h.pinned[fp] = c
		if cert.NotAfter.After(h.pinnedExpiry[c.Alias]) {
			h.pinnedExpiry[c.Alias] = cert.NotAfter
		}
	}
	metrics.SetExpiry(h, metrics.KindClient, h.pinnedExpiry)
	return nil
}

// provisionRevocation loads the CRLs and starts re-reading them.
func (h *Handler) provisionRevocation(ctx caddy.Context) error {
	if h.Revocation == nil {
		return nil
	}
	var err error
	if h.revocation, err = revocation.New(ctx, *h.Revocation, h.logger); err != nil {
		return err
	}
	if h.revocation != nil {
		h.checker.Revocation = h.revocation
		go h.revocation.Watch(ctx)
	}
	return nil
}

// provisionStoredClients starts using the clients stored through the admin
// API.
func (h *Handler) provisionStoredClients(ctx caddy.Context) error {
	sc := h.ClientsFromStorage
	if sc == nil {
		return nil
	}
	interval := time.Duration(sc.Refresh)
	if interval < 0 {
		return fmt.Errorf("clients_from_storage refresh %s: must be positive", interval)
	}
	if interval == 0 {
		interval = DefaultStorageRefresh
	}
	groups, err := store.CheckGroups(sc.Groups)
	if err != nil {
		return fmt.Errorf("clients_from_storage: %w", err)
	}
	sc.Groups = groups
	if err := h.useStoredClients(ctx, ctx.Storage(), interval); err != nil {
		return fmt.Errorf("clients_from_storage: %w", err)
	}
	return nil
}

// provisionHeader reads the header fallback: its fields, format and who may
// set it. The certificate fields are removed from every request, header
// fallback or not.
func (h *Handler) provisionHeader(ctx caddy.Context) error {
	h.strip = []string{DefaultField, DefaultChainField}
	hc := h.Header
	if hc == nil {
		return nil
	}
	var err error
	if h.headerField, err = fieldName(hc.Field, DefaultField); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if hc.ChainField != "" {
		if h.chainField, err = fieldName(hc.ChainField, DefaultChainField); err != nil {
			return fmt.Errorf("header chain: %w", err)
		}
	}
	h.headerFormat = certcodec.Auto
	if hc.Format != "" {
		if h.headerFormat, err = certcodec.ParseFormat(hc.Format); err != nil {
			return fmt.Errorf("header: %w", err)
		}
	}
	if h.headerFormat == certcodec.XFCC && h.chainField != "" {
		return errors.New("header: format xfcc carries the chain in its Chain= key: drop chain")
	}
	if err := h.provisionHeaderSources(ctx, hc); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	h.addStrip(h.headerField)
	h.addStrip(h.chainField)
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	for _, f := range []string{h.headerField, h.chainField} {
		if err := expectedField(srv, f); err != nil {
			return fmt.Errorf("header: %w", err)
		}
	}
	return nil
}

// expectedField returns an error when Caddy's server srv drops the request
// header field f before any handler sees it: a name with '_' or '.' that
// the server does not list in expected_underscore_headers or
// expected_dot_headers (exactly, or by a prefix ending with '*'). Every
// request would then be judged as having no certificate. Without a server
// (a handler provisioned on its own), nothing is checked.
func expectedField(srv *caddyhttp.Server, f string) error {
	if srv == nil || f == "" {
		return nil
	}
	listed := func(entries []string, globs bool) bool {
		for _, e := range entries {
			prefix, glob := strings.CutSuffix(e, "*")
			if strings.EqualFold(e, f) || globs && glob && len(f) >= len(prefix) && strings.EqualFold(f[:len(prefix)], prefix) {
				return true
			}
		}
		return false
	}
	hasUnderscore, hasDot := strings.Contains(f, "_"), strings.Contains(f, ".")
	switch {
	case hasUnderscore && hasDot && !listed(srv.ExpectedUnderscoreHeaders, false) && !listed(srv.ExpectedDotHeaders, false):
		return fmt.Errorf("field %q has '_' and '.': Caddy drops it from every request unless the server lists it exactly in expected_underscore_headers or expected_dot_headers", f)
	case hasUnderscore && !hasDot && !listed(srv.ExpectedUnderscoreHeaders, true):
		return fmt.Errorf("field %q has '_': Caddy drops it from every request unless the server lists it in expected_underscore_headers (global option: servers { expected_underscore_headers %s })", f, f)
	case hasDot && !hasUnderscore && !listed(srv.ExpectedDotHeaders, true):
		return fmt.Errorf("field %q has '.': Caddy drops it from every request unless the server lists it in expected_dot_headers (global option: servers { expected_dot_headers %s })", f, f)
	}
	return nil
}

// provisionForward reads how the accepted certificate is passed on.
func (h *Handler) provisionForward(caddy.Context) error {
	fc := h.Forward
	if fc == nil {
		return nil
	}
	var err error
	if h.forwardField, err = fieldName(fc.Field, DefaultField); err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	h.forwardFmt = certcodec.RFC9440
	if fc.Format != "" {
		if h.forwardFmt, err = certcodec.ParseFormat(fc.Format); err != nil {
			return fmt.Errorf("forward: %w", err)
		}
		if h.forwardFmt == certcodec.Auto {
			return fmt.Errorf("forward: format auto is for reading; name one")
		}
	}
	h.addStrip(h.forwardField)
	return nil
}

// provisionCache makes the verdict cache.
func (h *Handler) provisionCache(caddy.Context) error {
	size := h.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	h.cache = certcheck.NewCache[*verdict](size)
	return nil
}

// provisionExpiryWarnings warns about the handler's certificates that end
// soon, now and daily.
func (h *Handler) provisionExpiryWarnings(ctx caddy.Context) error {
	window := time.Duration(h.ExpiryWarning)
	if window == 0 {
		window = events.DefaultExpiryWarning
	}
	events.WatchExpiring(ctx, h, window, h.logger, h.events)
	return nil
}

// Cleanup ends the handler's use of the stored clients' reader and forgets
// the certificates it showed the expiry of and its verification cache.
func (h *Handler) Cleanup() error {
	h.releaseStoredClients()
	metrics.ForgetExpiry(h)
	metrics.ForgetVerifyCache(h)
	return nil
}

// Validate checks that the configuration can accept anything at all.
func (h *Handler) Validate() error {
	if h.checker.Roots == nil && len(h.pinned) == 0 && h.ClientsFromStorage == nil {
		return errors.New("no trust_pool, no client and no clients_from_storage: no certificate could be accepted")
	}
	return nil
}

func (h *Handler) addStrip(field string) {
	if field != "" && !containsString(h.strip, field) {
		h.strip = append(h.strip, field)
	}
}

// maxCertificateFile bounds a pinned client's certificate file.
const maxCertificateFile = 1 << 20

// load reads and parses the client's certificate, then its chain if the
// PEM holds one (other blocks, such as a key kept in the same file, are
// passed over).
func (c *Client) load() ([]*x509.Certificate, error) {
	switch {
	case c.CertificateFile != "" && c.Certificate != "":
		return nil, errors.New("certificate_file and certificate are exclusive")
	case c.CertificateFile != "":
		data, err := bounded.ReadFile(c.CertificateFile, maxCertificateFile)
		if err != nil {
			return nil, fmt.Errorf("reading certificate file %s: %w", c.CertificateFile, err)
		}
		certs, err := safe.Decode("certificate file "+c.CertificateFile, func() ([]*x509.Certificate, error) { return certcodec.ParsePEM(data, certcodec.PEMAll) })
		if err != nil {
			return nil, fmt.Errorf("certificate file %s: %w", c.CertificateFile, err)
		}
		return certs, nil
	case c.Certificate != "":
		return safe.Decode("certificate", func() ([]*x509.Certificate, error) {
			return certcodec.ParsePEM([]byte(c.Certificate), certcodec.PEMAll)
		})
	}
	return nil, errors.New("no certificate given")
}

// ParseRange parses a CIDR range, or a single IP address as a range of one.
func ParseRange(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR range: %w", s, err)
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR range: %w", s, err)
	}
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

func fieldName(name, def string) (string, error) {
	if name == "" {
		return def, nil
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return "", fmt.Errorf("%q is not a valid header field name", name)
		}
	}
	return textproto.CanonicalMIMEHeaderKey(name), nil
}

func isTokenChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ServeHTTP authenticates the request and passes it on, or refuses it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	now := time.Now()
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	var (
		v       *verdict
		source  = certcheck.SourceTLS
		spoofed bool
	)
	if h.headerField != "" && h.allowedSource(r, vars) {
		// The request comes through a proxy in front: only the header can
		// name the caller. The proxy's own TLS certificate is not the
		// caller's, and an empty or absent header means no certificate
		// (proxies that always set the field send it empty so).
		source = certcheck.SourceHeader
		if values := r.Header[h.headerField]; !isBlank(values) {
			var err error
			if v, err = h.fromHeader(r, values, now); err != nil {
				h.stripHeaders(r)
				return h.refuse(r, http.StatusBadRequest, certcheck.BadHeader, source, nil, err)
			}
		}
	} else if h.headerField != "" && !isBlank(r.Header[h.headerField]) {
		spoofed = true
	}
	h.stripHeaders(r)
	if source == certcheck.SourceTLS && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		v = h.fromTLS(r.TLS.PeerCertificates, now)
	}

	if spoofed {
		if c := h.logger.Check(zapcore.DebugLevel, "certificate header from a source not allowed to set it: removed"); c != nil {
			c.Write(zap.String("client_ip", clientIP(r)), zap.String("remote_addr", r.RemoteAddr), zap.String("field", h.headerField))
		}
	}
	if v == nil {
		if h.optional {
			setIdentity(r, vars, anonymous)
			return next.ServeHTTP(w, r)
		}
		reason := certcheck.NoCert
		if spoofed {
			reason = certcheck.UntrustedSource
		}
		return h.refuse(r, http.StatusUnauthorized, reason, source, nil, nil)
	}
	if !v.accepted {
		return h.refuse(r, http.StatusForbidden, v.reason, source, v, nil)
	}

	h.counters.accept(source)
	setIdentity(r, vars, v.identity)
	if h.forwardField != "" {
		r.Header[h.forwardField] = []string{v.forward}
	}
	return next.ServeHTTP(w, r)
}

// isBlank reports whether a header field is absent or one empty value.
func isBlank(values []string) bool {
	return len(values) == 0 || len(values) == 1 && strings.Trim(values[0], " \t") == ""
}

// allowedSource reports whether the request (with its vars) comes from a
// client allowed to set the certificate header: from an address `from`
// names, if it names any, and with a TLS client certificate that chains to
// `from_client_certificate`, if that is set.
func (h *Handler) allowedSource(r *http.Request, vars map[string]any) bool {
	if h.fromTrusted || len(h.from) > 0 {
		if !h.fromAllowedAddress(r, vars) {
			return false
		}
	}
	return h.proxyRoots == nil || h.proxyPresented(r)
}

func (h *Handler) fromAllowedAddress(r *http.Request, vars map[string]any) bool {
	if h.fromTrusted {
		if trusted, _ := vars[caddyhttp.TrustedProxyVarKey].(bool); trusted {
			return true
		}
	}
	if len(h.from) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range h.from {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// stripHeaders removes every certificate header field this handler knows
// of, so that only forward can set one again; and the request trailers of
// those names, so that none reaches the next handlers or the upstream.
func (h *Handler) stripHeaders(r *http.Request) {
	for _, f := range h.strip {
		delete(r.Header, f)
	}
	if r.Trailer == nil {
		return
	}
	// The client declared trailers: net/http fills them in when the body
	// is read to its end, and the reverse proxy sends on what is there
	// then. Remove the names now, and again at the end of the body.
	for _, f := range h.strip {
		delete(r.Trailer, f)
	}
	if r.Body != nil && r.Body != http.NoBody {
		if _, done := r.Body.(*trailerStripper); !done {
			r.Body = &trailerStripper{ReadCloser: r.Body, trailer: r.Trailer, names: h.strip}
		}
	}
}

// trailerStripper removes the certificate fields from the request's
// trailers once the body has been read to its end.
type trailerStripper struct {
	io.ReadCloser
	trailer http.Header
	names   []string
}

func (b *trailerStripper) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		for _, f := range b.names {
			delete(b.trailer, f)
		}
	}
	return n, err
}

// refuse returns the error for Caddy's error handling, naming only the
// reason, and logs the details at debug level (like Caddy's own log of
// handler errors: a refused caller controls how often this happens).
func (h *Handler) refuse(r *http.Request, status int, reason certcheck.Reason, source certcheck.Source, v *verdict, cause error) error {
	h.counters.reject(reason, source)
	if h.events.Enabled(events.RequestRejected) {
		data := map[string]any{"reason": reason.String(), "source": source.String(), "client_ip": clientIP(r), "remote_addr": r.RemoteAddr,
			"server": h.server, "handler": h.name}
		if v != nil {
			data["fingerprint"] = v.fingerprint
		}
		h.events.Emit(events.RequestRejected, data)
	}
	if c := h.logger.Check(zapcore.DebugLevel, "client certificate refused"); c != nil {
		fields := []zap.Field{
			zap.Stringer("reason", reason),
			zap.Stringer("source", source),
			zap.String("client_ip", clientIP(r)),
			zap.String("remote_addr", r.RemoteAddr),
			zap.String("server", h.server),
			zap.String("handler", h.name),
		}
		if v != nil {
			fields = append(fields, zap.String("fingerprint", v.fingerprint), zap.String("subject", v.subject))
		}
		if cause != nil {
			fields = append(fields, zap.Error(cause))
		}
		c.Write(fields...)
	}
	return caddyhttp.Error(status, fmt.Errorf("client certificate refused: %s", reason))
}

// clientIP returns the client's address as Caddy's access log names it
// (client_ip: the one trusted proxies passed on, else the peer's); the
// peer's own address stays in remote_addr.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	return r.RemoteAddr
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
