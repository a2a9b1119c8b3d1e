package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-mtls/caddy-mtls/internal/bounded"
	"github.com/caddy-mtls/caddy-mtls/keystore"
	"github.com/caddy-mtls/caddy-mtls/revocation"
)

// Profile is the SSL profile of the upstreams whose dial address matches one
// of its server patterns. Whatever it does not set, it inherits from the
// transport's own (base) settings.
type Profile struct {
	// The dial addresses this profile is for: `host:port`, `*.domain:port`
	// (any subdomain, on that port), or `host` (any port). Required.
	Servers []string `json:"servers"`

	// The certificate authorities that verify the upstream's certificate:
	// one of Caddy's `tls.ca_pool.source` modules. Default: the base
	// transport's trust pool, else the system's.
	TrustPoolRaw json.RawMessage `json:"trust_pool,omitempty" caddy:"namespace=tls.ca_pool.source inline_key=provider"`

	// PEM file of the client certificate (with its chain) that the gateway
	// presents. Default: none.
	ClientCertificateFile string `json:"client_certificate_file,omitempty"`

	// PEM file of the key of `client_certificate_file`. Default: none.
	ClientKeyFile string `json:"client_key_file,omitempty"`

	// A keystore holding the client key pair(s). Default: none.
	ClientKeystore *Keystore `json:"client_keystore,omitempty"`

	// A key pair stored through the admin API (admin.api.mtls), by name,
	// kept up to date from the storage at the transport's
	// `keypair_refresh`. With placeholders (`{http.auth.user.alias}`), the
	// key pair each request names, with a connection pool of its own; a
	// name that is no stored key pair fails the request with 502, and
	// health checks present none. Default: none.
	ClientKeyPair string `json:"client_keypair,omitempty"`

	// The server name sent (SNI) and verified. Default: the upstream's host.
	ServerName string `json:"server_name,omitempty"`

	// The lowest TLS version: `tls1.2` or `tls1.3`. Default: `tls1.2`.
	MinVersion string `json:"min_version,omitempty"`

	// The highest TLS version: `tls1.2` or `tls1.3`; not below
	// `min_version`. Default: `tls1.3`.
	MaxVersion string `json:"max_version,omitempty"`

	// The TLS 1.2 cipher suites offered, in order of preference: IANA names
	// as Caddy gives them (`TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`) or
	// OpenSSL names as nginx's `proxy_ssl_ciphers` takes them
	// (`ECDHE-ECDSA-AES128-GCM-SHA256`, several may be joined by `:`).
	// Insecure suites are refused; TLS 1.3 suites cannot be chosen (Go
	// offers all three). Default: Go's secure suites.
	Ciphers []string `json:"ciphers,omitempty"`

	// The key exchange groups offered: `x25519`, `secp256r1` (`p256`),
	// `secp384r1` (`p384`), `secp521r1` (`p521`), `x25519mlkem768`.
	// Default: the base transport's `curves`, else Go's defaults.
	Curves []string `json:"curves,omitempty"`

	// Whether the upstream may ask for a renegotiation:
	//
	// level | meaning
	// ------|--------
	// `never` | refused
	// `once` | once per connection
	// `freely` | as often as it asks
	//
	// Default: the base transport's `renegotiation`, else `never`.
	Renegotiation string `json:"renegotiation,omitempty"`

	// Checking the upstream's certificate chain against its issuers' CRLs;
	// a revoked backend fails that handshake. Default: none.
	Revocation *revocation.Config `json:"revocation,omitempty"`

	// Whether the upstream's certificate must name the host dialed (or
	// `server_name`). When false, its chain is still verified against the
	// trust pool, with its validity window and serverAuth usage, and so is
	// its revocation: only the name match is skipped (WSO2's
	// `HostnameVerifier=AllowAll`, Choreo's `verifyHostName=false`), for
	// backends reached by an address their certificate does not name, or
	// whose certificate names them only in its common name.
	// Default: the transport's `verify_hostname`, else `true`.
	VerifyHostname *bool `json:"verify_hostname,omitempty"`

	// Skip verifying the upstream's certificate. Insecure: for tests only.
	// Default: `false`.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`

	// trustPool is a trust pool given as certificates (WSO2's TrustStore),
	// read from trustFile, declared of type trustDeclared and read as
	// trustReadAs.
	trustPool                  []*x509.Certificate
	trustFile                  string
	trustDeclared, trustReadAs keystore.Type
}

// Keystore is a PKCS#12 or JKS file of client key pairs.
type Keystore struct {
	// Path of the keystore file (at most 4 MiB). Required.
	File string `json:"file"`

	// `pkcs12` or `jks`. Default: from the file's extension (.p12, .pfx,
	// .jks).
	Type string `json:"type,omitempty"`

	// The keystore's password; placeholders such as `{env.KS_PASS}` are
	// replaced at load. Default: empty.
	Password string `json:"password,omitempty"`

	// The password of the private keys of a JKS. Default: the password.
	KeyPassword string `json:"key_password,omitempty"`

	// Which key pair to present: an alias, or a placeholder such as
	// `{http.auth.user.alias}` resolved per request. Default: the server's
	// acceptable CAs choose among all the keystore's key pairs.
	Alias string `json:"alias,omitempty"`

	// With a placeholder `alias`: the key pair that active health checks,
	// which have no caller, present. Default: the server's acceptable CAs
	// choose among all the keystore's key pairs.
	DefaultAlias string `json:"default_alias,omitempty"`
}

// profile is a Profile made ready to use.
type profile struct {
	name     string // its first server pattern, for logs
	patterns []string
	base     *tls.Config
	keyPairs *keystore.Contents
	// aliasTemplate holds placeholders when the identity is chosen per
	// request; the default identity serves otherwise and for health checks.
	aliasTemplate string
	defaultCerts  []tls.Certificate
	// inheritedGetCert is the base's automated client certificate
	// (client_certificate_automate), for a profile without an identity of
	// its own.
	inheritedGetCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// revocation checks the backend's chain, when configured; its CRL
	// watcher stops when the profile retires.
	revocation *revocation.Checker
	stop       context.CancelFunc
	// trust holds the certificates of its own trust pool, when known.
	trust []*x509.Certificate
	// keyPair, when set, is the stored key pair the profile presents; the
	// current version is swapped in when it changes in the storage.
	keyPair *storedKeyPair
	// keyPairTemplate holds placeholders when the stored key pair is chosen
	// per request, from keyPairReader.
	keyPairTemplate string
	keyPairReader   *keyPairsReader
	// defaultRT is the round tripper of the default identity.
	defaultRT *http.Transport
	// verifyHostname is false when only the backend's chain is verified,
	// not its name.
	verifyHostname bool
}

// baseSettings is what the profiles of a transport inherit from it.
type baseSettings struct {
	tls            *tls.Config // the base transport's TLS client config, nil without TLS
	verifyHostname bool        // the transport's verify_hostname
	logger         *zap.Logger
	keyPairs       func() (*keyPairsReader, error) // the config's stored key pairs
}

// build makes a profile ready, in steps: what it inherits from the base
// transport, its trust, its client identity, its TLS settings and, last,
// the revocation checking it starts.
func (p *Profile) build(ctx caddy.Context, base baseSettings, loadModule func(*Profile) (caddytls.CA, error)) (*profile, error) {
	if len(p.Servers) == 0 {
		return nil, errors.New("no servers")
	}
	p, err := p.withEnv()
	if err != nil {
		return nil, err
	}
	out := newProfile(p.Servers, base)
	if err := p.applyTrust(out, loadModule); err != nil {
		return nil, err
	}
	if p.trustFile != "" {
		logTypeCompat(base.logger, p.trustFile, p.trustDeclared, p.trustReadAs)
	}
	if err := p.applyIdentity(out, base); err != nil {
		return nil, err
	}
	if err := p.applyTLSSettings(out); err != nil {
		return nil, err
	}
	if err := p.startRevocation(ctx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// withEnv returns a copy of the profile whose file paths (client
// certificate and key, keystore, trust pool PEM files), stored key pair
// name and aliases have the placeholders known at load replaced:
// `{env.*}`, `{file.*}`, `{system.*}`, so that one config serves several
// environments. Placeholders known only per request (`{http.*}`) stay, for
// `alias` to pick a key pair per request. One that is empty at load (an
// unset variable) is an error naming it. The passwords' placeholders are
// replaced when the keystore loads.
func (p *Profile) withEnv() (*Profile, error) {
	repl := caddy.NewReplacer()
	q := *p
	resolve := func(which string, s *string) error {
		v, err := repl.ReplaceOrErr(*s, true, false)
		if err != nil {
			return fmt.Errorf("%s: %w", which, err)
		}
		*s = v
		return nil
	}
	type field struct {
		which string
		s     *string
	}
	fields := []field{
		{"client_certificate_file", &q.ClientCertificateFile},
		{"client_key_file", &q.ClientKeyFile},
		{"client_keypair", &q.ClientKeyPair},
	}
	if p.ClientKeystore != nil {
		ks := *p.ClientKeystore
		q.ClientKeystore = &ks
		fields = append(fields, field{"client_keystore file", &ks.File},
			field{"client_keystore alias", &ks.Alias}, field{"client_keystore default_alias", &ks.DefaultAlias})
	}
	for _, f := range fields {
		if err := resolve(f.which, f.s); err != nil {
			return nil, err
		}
	}
	var err error
	if q.TrustPoolRaw, err = trustPoolWithEnv(p.TrustPoolRaw, resolve); err != nil {
		return nil, err
	}
	return &q, nil
}

// trustPoolWithEnv returns the trust pool's JSON with the placeholders of
// its `pem_files` (the `file` source's) replaced by resolve.
func trustPoolWithEnv(raw json.RawMessage, resolve func(string, *string) error) (json.RawMessage, error) {
	if !strings.Contains(string(raw), "{") {
		return raw, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields["pem_files"] == nil {
		return raw, nil // the module's loading says what is wrong with it
	}
	var files []string
	if err := json.Unmarshal(fields["pem_files"], &files); err != nil {
		return raw, nil
	}
	for i := range files {
		if err := resolve("trust_pool pem_files", &files[i]); err != nil {
			return nil, err
		}
	}
	fields["pem_files"], _ = json.Marshal(files)
	return json.Marshal(fields)
}

// newProfile starts the profile of the server patterns from what the base
// transport gives: its verify_hostname and, from its TLS client config, its
// trust pool, its versions, cipher suites, curves and renegotiation, and
// its client identity, static or automated.
func newProfile(servers []string, base baseSettings) *profile {
	out := &profile{name: servers[0], patterns: servers, base: new(tls.Config), verifyHostname: base.verifyHostname}
	if inherited := base.tls; inherited != nil {
		out.base.RootCAs = inherited.RootCAs
		out.base.MinVersion = inherited.MinVersion
		out.base.MaxVersion = inherited.MaxVersion
		out.base.CipherSuites = inherited.CipherSuites
		out.base.CurvePreferences = inherited.CurvePreferences
		out.base.Renegotiation = inherited.Renegotiation
		out.defaultCerts = inherited.Certificates
		out.inheritedGetCert = inherited.GetClientCertificate
	}
	return out
}

// applyTrust sets the profile's own trust pool, when it has one: a
// `tls.ca_pool.source` module (loaded by loadModule) or the certificates of
// a WSO2 TrustStore, not both.
func (p *Profile) applyTrust(out *profile, loadModule func(*Profile) (caddytls.CA, error)) error {
	switch {
	case p.TrustPoolRaw != nil && p.trustPool != nil:
		return errors.New("two trust pools")
	case p.TrustPoolRaw != nil:
		ca, err := loadModule(p)
		if err != nil {
			return err
		}
		out.base.RootCAs = ca.CertPool()
		if lister, ok := ca.(caddytls.CertificateProvider); ok {
			out.trust = lister.Certificates()
		}
	case p.trustPool != nil:
		if len(p.trustPool) == 0 {
			return errors.New("trust store has no certificates")
		}
		out.base.RootCAs = x509.NewCertPool()
		for _, c := range p.trustPool {
			out.base.RootCAs.AddCert(c)
		}
		out.trust = p.trustPool
	}
	return nil
}

// applyIdentity sets the client identity the profile presents, when it has
// one of its own: a stored key pair, a PEM certificate and key, or a
// keystore; at most one of them. A profile with its own identity no longer
// inherits the base's automated client certificate.
func (p *Profile) applyIdentity(out *profile, base baseSettings) error {
	identities := 0
	for _, set := range []bool{p.ClientKeystore != nil, p.ClientCertificateFile != "" || p.ClientKeyFile != "", p.ClientKeyPair != ""} {
		if set {
			identities++
		}
	}
	if identities > 0 {
		out.inheritedGetCert = nil
	}
	switch {
	case identities > 1:
		return errors.New("give one of client_keystore, client_certificate_file and client_keypair")
	case p.ClientKeyPair != "":
		out.defaultCerts = nil
		return presentStoredKeyPair(out, p.ClientKeyPair, base.keyPairs)
	case p.ClientCertificateFile != "" || p.ClientKeyFile != "":
		if p.ClientCertificateFile == "" || p.ClientKeyFile == "" {
			return errors.New("client certificate needs both the certificate and the key file")
		}
		cert, err := loadKeyPairFiles(p.ClientCertificateFile, p.ClientKeyFile)
		if err != nil {
			return fmt.Errorf("loading client key pair: %w", err)
		}
		out.defaultCerts = []tls.Certificate{cert}
	case p.ClientKeystore != nil:
		return p.ClientKeystore.applyTo(out, base.logger)
	}
	return nil
}

// applyTo loads the keystore (its passwords' placeholders replaced) and sets
// the identities the profile presents from it: with a placeholder alias,
// the key pair it names in each request, and for health checks
// default_alias's, else all of them; with a fixed alias, its key pair;
// without an alias, all of them, for the server's acceptable CAs to choose
// among.
func (ks *Keystore) applyTo(out *profile, logger *zap.Logger) error {
	repl := caddy.NewReplacer()
	typ, err := keystore.ParseType(ks.Type, ks.File)
	if err != nil {
		return err
	}
	st, err := keystore.Load(ks.File, typ, repl.ReplaceKnown(ks.Password, ""), repl.ReplaceKnown(ks.KeyPassword, ""))
	if err != nil {
		return fmt.Errorf("loading keystore %s: %w", filepath.Base(ks.File), err)
	}
	logTypeCompat(logger, ks.File, typ, st.Type)
	if len(st.KeyPairs) == 0 {
		return fmt.Errorf("keystore %s holds no key pair", filepath.Base(ks.File))
	}
	out.keyPairs = st
	// present makes alias's key pair the default identity; which, in
	// errors, names the option that gave alias.
	present := func(alias, which string) error {
		kp, ok := st.KeyPair(alias)
		if !ok {
			return fmt.Errorf("keystore %s has no key pair %q%s", filepath.Base(ks.File), alias, which)
		}
		out.defaultCerts = []tls.Certificate{kp.Certificate}
		return nil
	}
	switch {
	case isTemplate(ks.Alias):
		out.aliasTemplate = ks.Alias
		out.defaultCerts = allCerts(st)
		if ks.DefaultAlias != "" {
			return present(ks.DefaultAlias, " (default_alias)")
		}
	case ks.DefaultAlias != "":
		return errors.New("default_alias goes with a placeholder alias")
	case ks.Alias != "":
		return present(ks.Alias, "")
	default:
		out.defaultCerts = allCerts(st)
	}
	return nil
}

// applyTLSSettings sets the server name sent and verified, the TLS
// versions (tls1.2 or tls1.3), cipher suites, curves and renegotiation
// (each the inherited one when not given), whether the upstream's
// certificate is verified and whether its name is (the inherited setting
// when not given).
func (p *Profile) applyTLSSettings(out *profile) error {
	cfg := out.base
	cfg.ServerName = p.ServerName
	if p.VerifyHostname != nil {
		out.verifyHostname = *p.VerifyHostname
	}
	var err error
	if p.MinVersion != "" {
		if cfg.MinVersion, err = tlsVersion("min_version", p.MinVersion); err != nil {
			return err
		}
	}
	if p.MaxVersion != "" {
		if cfg.MaxVersion, err = tlsVersion("max_version", p.MaxVersion); err != nil {
			return err
		}
	}
	if cfg.MinVersion != 0 && cfg.MaxVersion != 0 && cfg.MinVersion > cfg.MaxVersion {
		return fmt.Errorf("min_version %s is above max_version %s", tls.VersionName(cfg.MinVersion), tls.VersionName(cfg.MaxVersion))
	}
	if len(p.Ciphers) > 0 {
		if cfg.CipherSuites, err = cipherSuiteIDs(p.Ciphers); err != nil {
			return err
		}
		if cfg.MinVersion == tls.VersionTLS13 {
			return errors.New("ciphers are TLS 1.2 suites, and min_version is tls1.3: Go chooses TLS 1.3's itself")
		}
	}
	if len(p.Curves) > 0 {
		if cfg.CurvePreferences, err = curveIDs(p.Curves); err != nil {
			return err
		}
	}
	if cfg.MaxVersion == tls.VersionTLS12 && slices.Equal(cfg.CurvePreferences, []tls.CurveID{tls.X25519MLKEM768}) {
		return errors.New("curves: x25519mlkem768 is TLS 1.3 only, and max_version is tls1.2")
	}
	if p.Renegotiation != "" {
		if cfg.Renegotiation, err = renegotiation(p.Renegotiation); err != nil {
			return err
		}
	}
	cfg.InsecureSkipVerify = p.InsecureSkipVerify
	return nil
}

// startRevocation makes the checker of the backend's chain, when the
// profile configures one, and starts its CRL watcher, which stops when the
// profile retires. It is the last step, so that a profile that fails an
// earlier one leaves no watcher running.
func (p *Profile) startRevocation(ctx caddy.Context, out *profile) error {
	if p.Revocation == nil {
		return nil
	}
	var err error
	if out.revocation, err = revocation.New(ctx, *p.Revocation, ctx.Logger()); err != nil {
		return err
	}
	if out.revocation != nil {
		watchCtx, cancel := context.WithCancel(ctx)
		out.stop = cancel
		go out.revocation.Watch(watchCtx)
	}
	return nil
}

// retire closes what the profile holds open: idle connections, watchers.
// Requests in flight finish.
func (p *profile) retire() {
	if p.defaultRT != nil {
		p.defaultRT.CloseIdleConnections()
	}
	if p.stop != nil {
		p.stop()
	}
}

// logTypeCompat says, at debug level, when a keystore was read as another
// type than the one declared (as Java 9+ reads a PKCS#12 file declared JKS,
// and a JKS declared PKCS12).
func logTypeCompat(logger *zap.Logger, file string, declared, readAs keystore.Type) {
	if logger == nil || declared == keystore.Auto || declared == readAs {
		return
	}
	if c := logger.Check(zapcore.DebugLevel, "keystore read as the type its content shows, not the declared one"); c != nil {
		c.Write(zap.String("file", file), zap.String("declared", string(declared)), zap.String("read_as", string(readAs)))
	}
}

func allCerts(st *keystore.Contents) []tls.Certificate {
	certs := make([]tls.Certificate, len(st.KeyPairs))
	for i, kp := range st.KeyPairs {
		certs[i] = kp.Certificate
	}
	return certs
}

// pattern is a parsed server pattern.
type pattern struct {
	host     string // lower case; for a wildcard, the suffix with its dot
	port     string // "" for any port
	wildcard bool
}

// parsePattern parses `host:port`, `*.domain:port`, `host` or `*.domain`.
func parsePattern(s string) (pattern, error) {
	if s == "" || strings.ContainsAny(s, " \t/") {
		return pattern{}, fmt.Errorf("server pattern %q: malformed", s)
	}
	var p pattern
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		n, perr := strconv.Atoi(port)
		if perr != nil || n < 1 || n > 65535 {
			return pattern{}, fmt.Errorf("server pattern %q: port %q is not a port number", s, port)
		}
		host, p.port = h, strconv.Itoa(n)
	} else if strings.Count(s, ":") == 1 || strings.HasPrefix(s, "[") {
		return pattern{}, fmt.Errorf("server pattern %q: %v", s, err)
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		p.wildcard = true
		host = "." + rest
		if rest == "" {
			return pattern{}, fmt.Errorf("server pattern %q: wildcard without a domain", s)
		}
	}
	if host == "" || strings.ContainsAny(host, "*[]") {
		return pattern{}, fmt.Errorf("server pattern %q: malformed host", s)
	}
	p.host = host
	return p, nil
}

// profileSet finds the profile of a dial address: exact host:port first,
// then the longest wildcard, then the host on any port. Every lookup is a
// map access (a wildcard one per dot of the host), so neither building a
// set of n patterns nor matching against it grows with more than n.
type profileSet struct {
	exact    map[string]*profile // "host:port"
	wildcard map[wildcardKey]*profile
	hostOnly map[string]*profile
	all      []*profile
}

// wildcardKey is a wildcard pattern: *.example.com:443 is {".example.com",
// "443"}; without a port, port is "".
type wildcardKey struct {
	suffix, port string
}

func newProfileSet() *profileSet {
	return &profileSet{exact: map[string]*profile{}, wildcard: map[wildcardKey]*profile{}, hostOnly: map[string]*profile{}}
}

// add adds p for patterns; a pattern already taken is an error.
func (s *profileSet) add(p *profile, patterns []string) error {
	for _, raw := range patterns {
		pat, err := parsePattern(raw)
		if err != nil {
			return err
		}
		var taken map[string]*profile
		var key string
		switch {
		case pat.wildcard:
			k := wildcardKey{suffix: pat.host, port: pat.port}
			if other, ok := s.wildcard[k]; ok {
				return fmt.Errorf("server pattern %q given twice (profiles %s and %s)", raw, other.name, p.name)
			}
			s.wildcard[k] = p
			continue
		case pat.port != "":
			taken, key = s.exact, net.JoinHostPort(pat.host, pat.port)
		default:
			taken, key = s.hostOnly, pat.host
		}
		if other, ok := taken[key]; ok {
			return fmt.Errorf("server pattern %q given twice (profiles %s and %s)", raw, other.name, p.name)
		}
		taken[key] = p
	}
	s.all = append(s.all, p)
	return nil
}

// match returns the profile for a dial address ("host:port"), or nil.
func (s *profileSet) match(address string) *profile {
	if p := s.exact[address]; p != nil {
		return p
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	// SRV upstreams dial fully qualified names, with the root's dot.
	if lower := strings.ToLower(strings.TrimSuffix(host, ".")); lower != host {
		host = lower
		if p := s.exact[net.JoinHostPort(host, port)]; p != nil {
			return p
		}
	}
	if len(s.wildcard) > 0 {
		// The longest suffix is the one after the first dot: try each dot
		// from the left, the pattern with the port before the one without.
		// A wildcard covers at least one more label, so not from index 0.
		for i := 1; i < len(host); i++ {
			if host[i] != '.' {
				continue
			}
			if p := s.wildcard[wildcardKey{host[i:], port}]; p != nil {
				return p
			}
			if p := s.wildcard[wildcardKey{host[i:], ""}]; p != nil {
				return p
			}
		}
	}
	return s.hostOnly[host]
}

// maxPEMFile bounds a client certificate or key file.
const maxPEMFile = 1 << 20

// loadKeyPairFiles reads a PEM certificate (chain) and key, each a
// bounded regular file.
func loadKeyPairFiles(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := bounded.ReadFile(certFile, maxPEMFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", certFile, err)
	}
	keyPEM, err := bounded.ReadFile(keyFile, maxPEMFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", keyFile, err)
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// isTemplate reports whether s holds placeholders to resolve per request.
func isTemplate(s string) bool { return strings.Contains(s, "{") }
