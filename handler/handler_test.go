package handler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/caddy-mtls/caddy-mtls/certcheck"
	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/metrics"
)

// pki is the test PKI shared by the handler tests.
type pki struct {
	dir                     string
	root, other, mid        *demopki.Cert
	valid, viaMid, expired  *demopki.Cert
	notYet, serverOnly      *demopki.Cert
	wrongCA, selfSigned     *demopki.Cert
	pinned, pinnedServerEKU *demopki.Cert
	rootPath, otherPath     string
	pinnedPath, pinnedSEKU  string
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	must := func(c *demopki.Cert, err error) *demopki.Cert {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	p := &pki{dir: t.TempDir()}
	now := time.Now()
	p.root = must(demopki.NewCA("Test Root"))
	p.other = must(demopki.NewCA("Other Root"))
	p.mid = must(p.root.Issue(demopki.Options{CommonName: "Test Intermediate", IsCA: true}))
	p.valid = must(p.root.Issue(demopki.Options{CommonName: "alice", DNSNames: []string{"alice.example"}, URIs: []string{"spiffe://example/alice"}, Emails: []string{"alice@example.com"}}))
	p.viaMid = must(p.mid.Issue(demopki.Options{CommonName: "bob"}))
	p.expired = must(p.root.Issue(demopki.Options{CommonName: "old", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)}))
	p.notYet = must(p.root.Issue(demopki.Options{CommonName: "future", NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)}))
	p.serverOnly = must(p.root.Issue(demopki.Options{CommonName: "server", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
	p.wrongCA = must(p.other.Issue(demopki.Options{CommonName: "mallory"}))
	p.selfSigned = must(demopki.SelfSigned(demopki.Options{CommonName: "eve"}))
	p.pinned = must(demopki.SelfSigned(demopki.Options{CommonName: "partner"}))
	p.pinnedServerEKU = must(demopki.SelfSigned(demopki.Options{CommonName: "partner2", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
	var err error
	write := func(c *demopki.Cert, name string) string {
		t.Helper()
		path, _, werr := c.WriteFiles(p.dir, name)
		if werr != nil {
			t.Fatal(werr)
		}
		return path
	}
	p.rootPath = write(p.root, "root")
	p.otherPath = write(p.other, "other")
	p.pinnedPath = write(p.pinned, "pinned")
	p.pinnedSEKU = write(p.pinnedServerEKU, "pinned-server-eku")
	_ = err
	return p
}

// provision builds a handler from its JSON as Caddy would.
func provision(t testing.TB, config string) *Handler {
	t.Helper()
	h, err := tryProvision(config)
	if err != nil {
		t.Fatalf("provisioning %s: %v", config, err)
	}
	return h
}

func tryProvision(config string) (*Handler, error) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	return tryProvisionIn(ctx, config)
}

// tryProvisionIn builds a handler from its JSON with ctx.
func tryProvisionIn(ctx caddy.Context, config string) (*Handler, error) {
	h := new(Handler)
	if err := json.Unmarshal([]byte(config), h); err != nil {
		return nil, err
	}
	if err := h.Provision(ctx); err != nil {
		return nil, err
	}
	return h, h.Validate()
}

// result is what a request through the handler came to.
type result struct {
	status   int // 0 when the next handler was reached
	upstream http.Header
	vars     map[string]string
	err      error
}

type reqOpts struct {
	certs   []*demopki.Cert // TLS peer chain, leaf first
	remote  string
	trusted bool // the server's trusted_proxies matched
	header  http.Header
}

func serve(h *Handler, o reqOpts) result {
	return serveRequest(h, newRequest(o), o)
}

// newRequest makes the request o describes.
func newRequest(o reqOpts) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "https://api.example/v1", nil)
	if o.remote != "" {
		r.RemoteAddr = o.remote
	}
	if len(o.certs) > 0 {
		r.TLS = &tls.ConnectionState{}
		for _, c := range o.certs {
			r.TLS.PeerCertificates = append(r.TLS.PeerCertificates, c.Cert)
		}
	}
	for k, vs := range o.header {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	return r
}

// serveRequest sends r through the handler, as from the server's trusted
// proxies if o.trusted.
func serveRequest(h *Handler, r *http.Request, o reqOpts) result {
	return serveRequestNext(h, r, o, nil)
}

// serveRequestNext is serveRequest with a look at the request the next
// handler gets.
func serveRequestNext(h *Handler, r *http.Request, o reqOpts, look func(*http.Request)) result {
	repl := caddy.NewReplacer()
	w := httptest.NewRecorder()
	r = caddyhttp.PrepareRequest(r, repl, w, nil)
	caddyhttp.SetVar(r.Context(), caddyhttp.TrustedProxyVarKey, o.trusted)
	var res result
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if look != nil {
			look(r)
		}
		res.upstream = r.Header.Clone()
		res.vars = map[string]string{}
		for _, name := range placeholderNames {
			if v, ok := repl.GetString("http.auth.user." + name); ok {
				res.vars[name] = v
			}
		}
		return nil
	})
	if err := h.ServeHTTP(w, r, next); err != nil {
		res.err = err
		var he caddyhttp.HandlerError
		if errors.As(err, &he) {
			res.status = he.StatusCode
		} else {
			res.status = -1
		}
	}
	return res
}

func (p *pki) trustConfig() string {
	return `{"trust_pool":{"provider":"file","pem_files":["` + p.rootPath + `"]},
		"clients":[{"alias":"partner","tier":"gold","certificate_file":"` + p.pinnedPath + `"},
		           {"alias":"partner2","certificate_file":"` + p.pinnedSEKU + `"}]}`
}

func TestTrustDecision(t *testing.T) {
	p := newPKI(t)
	h := provision(t, p.trustConfig())
	tests := []struct {
		name   string
		chain  []*demopki.Cert
		status int
		reason certcheck.Reason
		id     string
	}{
		{"valid", []*demopki.Cert{p.valid}, 0, certcheck.OK, "alice"},
		{"valid through intermediate", []*demopki.Cert{p.viaMid, p.mid}, 0, certcheck.OK, "bob"},
		{"intermediate not sent", []*demopki.Cert{p.viaMid}, 403, certcheck.Untrusted, ""},
		{"expired", []*demopki.Cert{p.expired}, 403, certcheck.Expired, ""},
		{"not yet valid", []*demopki.Cert{p.notYet}, 403, certcheck.NotYetValid, ""},
		{"wrong EKU", []*demopki.Cert{p.serverOnly}, 403, certcheck.EKU, ""},
		{"wrong CA", []*demopki.Cert{p.wrongCA}, 403, certcheck.Untrusted, ""},
		{"self-signed, not pinned", []*demopki.Cert{p.selfSigned}, 403, certcheck.Untrusted, ""},
		{"root itself", []*demopki.Cert{p.root}, 403, certcheck.CACertificate, ""},
		{"pinned", []*demopki.Cert{p.pinned}, 0, certcheck.OK, "partner"},
		{"pinned with server-only EKU", []*demopki.Cert{p.pinnedServerEKU}, 403, certcheck.EKU, ""},
		{"no certificate", nil, 401, certcheck.NoCert, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for round := 0; round < 2; round++ { // the second round hits the cache
				res := serve(h, reqOpts{certs: tc.chain})
				if res.status != tc.status {
					t.Fatalf("round %d: status %d (%v), want %d", round, res.status, res.err, tc.status)
				}
				if tc.reason != certcheck.OK && !strings.HasSuffix(res.err.Error(), ": "+tc.reason.String()) {
					t.Fatalf("round %d: error %q, want reason %s", round, res.err, tc.reason)
				}
				if tc.id != "" && res.vars["id"] != tc.id {
					t.Fatalf("round %d: user id %q, want %q", round, res.vars["id"], tc.id)
				}
			}
		})
	}
}

func TestPlaceholders(t *testing.T) {
	p := newPKI(t)
	h := provision(t, p.trustConfig())
	res := serve(h, reqOpts{certs: []*demopki.Cert{p.valid}})
	if res.status != 0 {
		t.Fatal(res.err)
	}
	want := map[string]string{
		"id": "alice", "alias": "", "tier": "", "subject": "CN=alice", "issuer": "CN=Test Root",
		"serial": p.valid.Cert.SerialNumber.String(), "fingerprint": fingerprint(p.valid),
		"not_after": p.valid.Cert.NotAfter.UTC().Format(time.RFC3339), "source": "tls",
		"san_dns": "alice.example", "san_uri": "spiffe://example/alice", "san_email": "alice@example.com",
	}
	for k, v := range want {
		if res.vars[k] != v {
			t.Errorf("{http.auth.user.%s} = %q, want %q", k, res.vars[k], v)
		}
	}
	res = serve(h, reqOpts{certs: []*demopki.Cert{p.pinned}})
	if res.vars["alias"] != "partner" || res.vars["tier"] != "gold" || res.vars["id"] != "partner" {
		t.Fatalf("pinned placeholders: %v", res.vars)
	}
}

func fingerprint(c *demopki.Cert) string { return certcodec.Fingerprint(c.Cert.Raw) }

func TestOptionalMode(t *testing.T) {
	p := newPKI(t)
	cfg := strings.Replace(p.trustConfig(), "{", `{"mode":"optional",`, 1)
	h := provision(t, cfg)
	res := serve(h, reqOpts{})
	if res.status != 0 || len(res.vars) != len(placeholderNames) {
		t.Fatalf("no certificate in optional mode: status %d, placeholders %v", res.status, res.vars)
	}
	for name, v := range res.vars {
		if v != "" {
			t.Fatalf("no certificate in optional mode: {http.auth.user.%s} = %q", name, v)
		}
	}
	if res := serve(h, reqOpts{certs: []*demopki.Cert{p.wrongCA}}); res.status != 403 {
		t.Fatalf("bad certificate in optional mode: status %d", res.status)
	}
	if res := serve(h, reqOpts{certs: []*demopki.Cert{p.valid}}); res.status != 0 || res.vars["id"] != "alice" {
		t.Fatalf("good certificate in optional mode: status %d", res.status)
	}
}

func headerConfig(p *pki, header, forward string) string {
	cfg := strings.TrimSuffix(strings.TrimSpace(p.trustConfig()), "}")
	if header != "" {
		// The unit tests' requests come from the server's trusted proxies
		// (reqOpts.trusted) unless the header config names its own sources.
		if !strings.Contains(header, `"from`) {
			header = strings.Replace(header, "{", `{"from":["trusted_proxies"],`, 1)
			header = strings.Replace(header, ",}", "}", 1)
		}
		cfg += `, "header": ` + header
	}
	if forward != "" {
		cfg += `, "forward": ` + forward
	}
	return cfg + "}"
}

func TestHeaderPath(t *testing.T) {
	p := newPKI(t)
	h := provision(t, headerConfig(p, `{"chain":"Client-Cert-Chain"}`, `{}`))
	hdr := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Add(kv[i], kv[i+1])
		}
		return out
	}
	enc := func(c *demopki.Cert, f certcodec.Format) string { return certcodec.Encode(c.Cert.Raw, f) }
	proxyCert := []*demopki.Cert{p.pinned} // the proxy's own TLS identity

	for _, f := range []certcodec.Format{certcodec.RFC9440, certcodec.URLPEM, certcodec.PEM, certcodec.Base64DER} {
		res := serve(h, reqOpts{trusted: true, certs: proxyCert, header: hdr("Client-Cert", enc(p.valid, f))})
		if res.status != 0 || res.vars["id"] != "alice" || res.vars["source"] != "header" {
			t.Fatalf("%v from a trusted proxy: status %d (%v), vars %v", f, res.status, res.err, res.vars)
		}
		if got := res.upstream.Get("Client-Cert"); got != enc(p.valid, certcodec.RFC9440) {
			t.Fatalf("%v: forwarded %q", f, got)
		}
	}

	// The chain header supplies the intermediate.
	res := serve(h, reqOpts{trusted: true, header: hdr("Client-Cert", enc(p.viaMid, certcodec.RFC9440), "Client-Cert-Chain", enc(p.mid, certcodec.RFC9440))})
	if res.status != 0 || res.vars["id"] != "bob" {
		t.Fatalf("chain header: status %d (%v)", res.status, res.err)
	}
	if res.upstream.Get("Client-Cert-Chain") != "" {
		t.Fatal("chain header reached upstream")
	}

	// From an untrusted source, the header is not believed: the TLS
	// certificate counts, or none.
	res = serve(h, reqOpts{trusted: false, header: hdr("Client-Cert", enc(p.valid, certcodec.RFC9440))})
	if res.status != 401 || !strings.HasSuffix(res.err.Error(), certcheck.UntrustedSource.String()) {
		t.Fatalf("spoofed header without TLS certificate: status %d (%v)", res.status, res.err)
	}
	res = serve(h, reqOpts{trusted: false, certs: []*demopki.Cert{p.wrongCA}, header: hdr("Client-Cert", enc(p.valid, certcodec.RFC9440))})
	if res.status != 403 {
		t.Fatalf("spoofed header over an untrusted TLS certificate: status %d", res.status)
	}
	res = serve(h, reqOpts{trusted: false, certs: []*demopki.Cert{p.pinned}, header: hdr("Client-Cert", enc(p.valid, certcodec.RFC9440))})
	if res.status != 0 || res.vars["id"] != "partner" || res.vars["source"] != "tls" {
		t.Fatalf("spoofed header over a good TLS certificate: status %d, vars %v", res.status, res.vars)
	}
	if got := res.upstream.Get("Client-Cert"); got != enc(p.pinned, certcodec.RFC9440) {
		t.Fatalf("upstream got the spoofed header or none: %q", got)
	}

	// A trusted proxy's header is verified like any certificate.
	if res := serve(h, reqOpts{trusted: true, header: hdr("Client-Cert", enc(p.wrongCA, certcodec.RFC9440))}); res.status != 403 {
		t.Fatalf("untrusted certificate in header: status %d", res.status)
	}
	// Undecodable from a trusted proxy: 400.
	for name, bad := range map[string]http.Header{
		"garbage":         hdr("Client-Cert", strings.Repeat("x", 64<<10)),
		"two fields":      hdr("Client-Cert", enc(p.valid, certcodec.RFC9440), "Client-Cert", enc(p.valid, certcodec.RFC9440)),
		"not a cert":      hdr("Client-Cert", ":aGVsbG8=:"),
		"truncated":       hdr("Client-Cert", enc(p.valid, certcodec.RFC9440)[:100]+":"),
		"bad chain field": hdr("Client-Cert", enc(p.valid, certcodec.RFC9440), "Client-Cert-Chain", ":!!:"),
	} {
		if res := serve(h, reqOpts{trusted: true, header: bad}); res.status != 400 {
			t.Fatalf("%s: status %d (%v), want 400", name, res.status, res.err)
		}
	}
	// A trusted proxy without the header: its own TLS certificate is not
	// the caller's, so there is no certificate.
	if res := serve(h, reqOpts{trusted: true, certs: proxyCert}); res.status != 401 {
		t.Fatalf("trusted proxy without header: status %d, want 401", res.status)
	}
}

func TestHeaderFromRanges(t *testing.T) {
	p := newPKI(t)
	h := provision(t, headerConfig(p, `{"field":"X-SSL-Client-Cert","format":"url_pem","from":["10.1.0.0/16","192.0.2.7"]}`, ""))
	val := certcodec.Encode(p.valid.Cert.Raw, certcodec.URLPEM)
	for remote, want := range map[string]int{
		"10.1.2.3:5000":       0,
		"192.0.2.7:443":       0,
		"[::ffff:10.1.0.9]:1": 0,
		"192.0.2.8:443":       401,
		"10.2.0.1:5000":       401,
	} {
		// trusted_proxies says yes everywhere: from replaces it.
		res := serve(h, reqOpts{remote: remote, trusted: true, header: http.Header{"X-Ssl-Client-Cert": {val}}})
		if res.status != want {
			t.Fatalf("%s: status %d, want %d", remote, res.status, want)
		}
		if res.status == 0 && res.upstream.Get("X-Ssl-Client-Cert") != "" {
			t.Fatal("certificate header reached upstream without forward")
		}
	}
	// The format is fixed to url_pem: RFC 9440 is undecodable.
	res := serve(h, reqOpts{remote: "10.1.2.3:5000", header: http.Header{"X-Ssl-Client-Cert": {certcodec.Encode(p.valid.Cert.Raw, certcodec.RFC9440)}}})
	if res.status != 400 {
		t.Fatalf("wrong format: status %d", res.status)
	}
}

func TestSpoofedForwardFieldStripped(t *testing.T) {
	p := newPKI(t)
	for i, cfg := range []string{p.trustConfig(), headerConfig(p, "", `{"field":"X-Client-Cert","format":"pem"}`)} {
		h := provision(t, cfg)
		res := serve(h, reqOpts{certs: []*demopki.Cert{p.valid}, header: http.Header{
			"Client-Cert": {"spoofed"}, "Client-Cert-Chain": {"spoofed"}, "X-Client-Cert": {"spoofed"},
		}})
		if res.status != 0 {
			t.Fatal(res.err)
		}
		if res.upstream.Get("Client-Cert") != "" || res.upstream.Get("Client-Cert-Chain") != "" {
			t.Fatalf("spoofed RFC 9440 fields reached upstream: %v", res.upstream)
		}
		if got := res.upstream.Get("X-Client-Cert"); i == 1 && got == "spoofed" {
			t.Fatal("spoofed forward field reached upstream")
		}
	}
	h := provision(t, headerConfig(p, "", `{"field":"X-Client-Cert","format":"pem"}`))
	res := serve(h, reqOpts{certs: []*demopki.Cert{p.valid}, header: http.Header{"X-Client-Cert": {"spoofed"}}})
	if got := res.upstream.Get("X-Client-Cert"); got != certcodec.Encode(p.valid.Cert.Raw, certcodec.PEM) {
		t.Fatalf("forwarded %q", got)
	}
}

func TestProvisionErrors(t *testing.T) {
	p := newPKI(t)
	garbage := filepath.Join(p.dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	keyOnly := filepath.Join(p.dir, "pinned-key.pem")
	tests := []struct{ name, config, want string }{
		{"nothing to trust", `{}`, "no trust_pool, no client"},
		{"bad mode", `{"mode":"maybe","clients":[{"alias":"a","certificate_file":"` + p.pinnedPath + `"}]}`, `mode "maybe"`},
		{"missing trust file", `{"trust_pool":{"provider":"file","pem_files":["/nonexistent/ca.pem"]}}`, "/nonexistent/ca.pem"},
		{"trust file without certificates", `{"trust_pool":{"provider":"file","pem_files":["` + garbage + `"]}}`, "trust pool has no certificates"},
		{"missing client file", `{"clients":[{"alias":"a","certificate_file":"/nonexistent/a.pem"}]}`, "/nonexistent/a.pem"},
		{"undecodable client PEM", `{"clients":[{"alias":"a","certificate_file":"` + garbage + `"}]}`, "no PEM CERTIFICATE block"},
		{"client key instead of cert", `{"clients":[{"alias":"a","certificate_file":"` + keyOnly + `"}]}`, "no PEM CERTIFICATE block"},
		{"client without alias", `{"clients":[{"certificate_file":"` + p.pinnedPath + `"}]}`, "alias is required"},
		{"repeated alias, other tier", `{"clients":[{"alias":"a","tier":"gold","certificate_file":"` + p.pinnedPath + `"},{"alias":"a","tier":"silver","certificate_file":"` + p.pinnedSEKU + `"}]}`, `tier "silver" differs from the alias's first, "gold"`},
		{"same certificate twice, one alias", `{"clients":[{"alias":"a","certificate_file":"` + p.pinnedPath + `"},{"alias":"a","certificate_file":"` + p.pinnedPath + `"}]}`, "same certificate as client"},
		{"bad stored clients group", `{"clients_from_storage":{"groups":["a/b"]}}`, "clients_from_storage: group: invalid name"},
		{"same certificate twice", `{"clients":[{"alias":"a","certificate_file":"` + p.pinnedPath + `"},{"alias":"b","certificate_file":"` + p.pinnedPath + `"}]}`, "same certificate as client"},
		{"bad from", `{"clients":[{"alias":"a","certificate_file":"` + p.pinnedPath + `"}],"header":{"from":["10.0.0.0/33"]}}`, "not a CIDR range"},
		{"bad header format", `{"clients":[{"alias":"a","certificate_file":"` + p.pinnedPath + `"}],"header":{"format":"der"}}`, "unknown certificate format"},
		{"bad header field", `{"clients":[{"alias":"a","certificate_file":"` + p.pinnedPath + `"}],"header":{"field":"Client Cert"}}`, "not a valid header field name"},
		{"forward auto", `{"clients":[{"alias":"a","certificate_file":"` + p.pinnedPath + `"}],"forward":{"format":"auto"}}`, "format auto is for reading"},
		{"negative cache", `{"cache_size":-1,"clients":[{"alias":"a","certificate_file":"` + p.pinnedPath + `"}]}`, "must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tryProvision(tc.config)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// Inline PEM works as well as a file.
	pemJSON, _ := json.Marshal(string(p.pinned.CertPEM()))
	h := provision(t, `{"clients":[{"alias":"inline","certificate":`+string(pemJSON)+`}]}`)
	if res := serve(h, reqOpts{certs: []*demopki.Cert{p.pinned}}); res.vars["id"] != "inline" {
		t.Fatalf("inline pinned client: %d %v", res.status, res.err)
	}
}

func TestVerdictNeverOutlivesCertificate(t *testing.T) {
	p := newPKI(t)
	short, err := p.root.Issue(demopki.Options{CommonName: "short", NotAfter: time.Now().Add(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	h := provision(t, p.trustConfig())
	now := time.Now()
	v := h.fromTLS([]*x509.Certificate{short.Cert}, now)
	if !v.accepted || v.expires.After(short.Cert.NotAfter) {
		t.Fatalf("accepted %v, cached until %v, certificate ends %v", v.accepted, v.expires, short.Cert.NotAfter)
	}
	// Past NotAfter the cached verdict is not used: the certificate is expired.
	v = h.fromTLS([]*x509.Certificate{short.Cert}, short.Cert.NotAfter.Add(time.Second))
	if v.accepted || v.reason != certcheck.Expired {
		t.Fatalf("after expiry: accepted %v, reason %s", v.accepted, v.reason)
	}
	// A not-yet-valid verdict ends when the certificate becomes valid.
	v = h.fromTLS([]*x509.Certificate{p.notYet.Cert}, now)
	if v.expires.After(p.notYet.Cert.NotBefore) {
		t.Fatalf("not-yet-valid verdict kept past NotBefore")
	}
	if v := h.fromTLS([]*x509.Certificate{p.notYet.Cert}, p.notYet.Cert.NotBefore.Add(time.Second)); !v.accepted {
		t.Fatalf("certificate refused once valid: %s", v.reason)
	}
}

func TestEmptyHeaderIsNoHeader(t *testing.T) {
	p := newPKI(t)
	h := provision(t, headerConfig(p, `{}`, ""))
	res := serve(h, reqOpts{trusted: true, header: http.Header{"Client-Cert": {""}}})
	if res.status != 401 || !strings.HasSuffix(res.err.Error(), certcheck.NoCert.String()) {
		t.Fatalf("empty header from a trusted proxy: status %d (%v), want 401 no_cert", res.status, res.err)
	}
	// Nor does the proxy's own TLS certificate stand in for the caller's.
	res = serve(h, reqOpts{trusted: true, certs: []*demopki.Cert{p.valid}, header: http.Header{"Client-Cert": {" "}}})
	if res.status != 401 {
		t.Fatalf("blank header over the proxy's TLS certificate: status %d, want 401", res.status)
	}
}

func TestLongHeaderValue(t *testing.T) {
	p := newPKI(t)
	h := provision(t, headerConfig(p, `{"format":"url_pem"}`, ""))
	// The leaf followed by its chain padded with the same intermediate: a
	// value over the length kept as a cache key as it is.
	pemText := string(p.viaMid.CertPEM())
	for i := 0; i < 6; i++ {
		pemText += string(p.mid.CertPEM())
	}
	value := urlEscape(pemText)
	if len(value) <= maxValueKey {
		t.Fatalf("test value is only %d bytes", len(value))
	}
	for round := 0; round < 2; round++ {
		res := serve(h, reqOpts{trusted: true, header: http.Header{"Client-Cert": {value}}})
		if res.status != 0 || res.vars["id"] != "bob" {
			t.Fatalf("round %d: status %d (%v)", round, res.status, res.err)
		}
	}
	h.cache.Keys(certcheck.SourceHeader, func(key string, _ *verdict) {
		if len(key) > maxValueKey {
			t.Fatalf("cache key of %d bytes", len(key))
		}
	})
}

// TestChainKey: a TLS verdict is keyed by the leaf, and serves only the
// chain it was made with; a chain too long to keep is keyed by its hash.
func TestChainKey(t *testing.T) {
	p := newPKI(t)
	h := provision(t, p.trustConfig())
	leaf, mid, other := p.viaMid.Cert, p.mid.Cert, p.wrongCA.Cert
	// mid with the last byte of its signature changed: it parses, and is
	// as long as mid, but it is not mid.
	raw := bytes.Clone(mid.Raw)
	raw[len(raw)-1] ^= 1
	tampered, err := x509.ParseCertificate(raw)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	steps := []struct {
		chain  []*x509.Certificate
		accept bool
	}{
		{[]*x509.Certificate{leaf}, false},            // the intermediate missing
		{[]*x509.Certificate{leaf, mid}, true},        // the same leaf, now verifiable
		{[]*x509.Certificate{leaf}, false},            // not the verdict with mid
		{[]*x509.Certificate{leaf, mid, other}, true}, // an extra certificate is ignored by Verify
		{[]*x509.Certificate{leaf, other}, false},     // not mid, though as long as the one before
		{[]*x509.Certificate{leaf, mid}, true},
		{[]*x509.Certificate{leaf, tampered}, false}, // as long as mid, not mid
	}
	for i, s := range steps {
		for round := 0; round < 2; round++ { // evaluated, then cached
			if v := h.fromTLS(s.chain, now); v.accepted != s.accept {
				t.Fatalf("step %d round %d: accepted %v (%s), want %v", i, round, v.accepted, v.reason, s.accept)
			}
		}
	}
	// Accepted under the leaf's DER; each refused chain under its hash.
	countKeys := func() (byLeaf, refused, acceptedByHash int) {
		h.cache.Keys(certcheck.SourceTLS, func(k string, v *verdict) {
			switch {
			case k == string(leaf.Raw) && v.accepted:
				byLeaf++
			case len(k) == sha256.Size && k[0] == 0 && !v.accepted:
				refused++
			case len(k) == sha256.Size && k[0] == 0:
				acceptedByHash++
			default:
				t.Fatalf("cache key of %d bytes, accepted %v", len(k), v.accepted)
			}
		})
		return
	}
	if byLeaf, refused, byHash := countKeys(); byLeaf != 1 || refused != 3 || byHash != 0 {
		t.Fatalf("keys: %d by leaf, %d refused by hash, %d accepted by hash; want 1, 3, 0", byLeaf, refused, byHash)
	}

	// A chain over maxValueKey is kept under its hash, accepted or not.
	long := []*x509.Certificate{leaf}
	for len(long) < 1+maxValueKey/len(mid.Raw)+1 {
		long = append(long, mid)
	}
	for round := 0; round < 2; round++ {
		if v := h.fromTLS(long, now); !v.accepted {
			t.Fatalf("long chain round %d: %s", round, v.reason)
		}
	}
	if _, _, byHash := countKeys(); byHash != 1 {
		t.Fatalf("long chain: %d accepted verdicts kept by hash, want 1", byHash)
	}
}

func urlEscape(s string) string {
	return strings.NewReplacer("\n", "%0A", " ", "%20").Replace(s)
}

func TestVerdictEndsWithTheRoot(t *testing.T) {
	root, err := demopki.NewCA("short-lived root")
	if err != nil {
		t.Fatal(err)
	}
	// A leaf that outlives its root.
	leaf, err := root.Issue(demopki.Options{CommonName: "leaf", NotAfter: time.Now().Add(48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rootPath, _, err := root.WriteFiles(dir, "root")
	if err != nil {
		t.Fatal(err)
	}
	h := provision(t, `{"trust_pool":{"provider":"file","pem_files":["`+rootPath+`"]}}`)
	// Pretend the evaluation happens 23h59m into the root's day of validity.
	now := root.Cert.NotAfter.Add(-time.Minute)
	v := h.fromTLS([]*x509.Certificate{leaf.Cert}, now)
	if !v.accepted {
		t.Fatalf("refused: %s", v.reason)
	}
	if v.expires.After(root.Cert.NotAfter) {
		t.Fatalf("verdict kept until %v, after the root ends at %v", v.expires, root.Cert.NotAfter)
	}
}

func TestKeyUsage(t *testing.T) {
	p := newPKI(t)
	h := provision(t, p.trustConfig())
	for name, ku := range map[string]x509.KeyUsage{
		"cert sign on a leaf":  x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		"no digital signature": x509.KeyUsageKeyEncipherment,
		"crl sign only":        x509.KeyUsageCRLSign,
	} {
		c := demopki.Must(p.root.Issue(demopki.Options{CommonName: name, KeyUsage: ku}))
		if res := serve(h, reqOpts{certs: []*demopki.Cert{c}}); res.status != 403 || !strings.HasSuffix(res.err.Error(), certcheck.KeyUsage.String()) {
			t.Fatalf("%s: status %d (%v)", name, res.status, res.err)
		}
	}
	ok := demopki.Must(p.root.Issue(demopki.Options{CommonName: "rsa-style", KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}))
	if res := serve(h, reqOpts{certs: []*demopki.Cert{ok}}); res.status != 0 {
		t.Fatalf("digital signature and key encipherment: status %d (%v)", res.status, res.err)
	}
}

func TestRefusedSubjectIsCapped(t *testing.T) {
	p := newPKI(t)
	h := provision(t, p.trustConfig())
	big := demopki.Must(demopki.SelfSigned(demopki.Options{CommonName: "x", Organization: strings.Repeat("O", 20000)}))
	v := h.fromTLS([]*x509.Certificate{big.Cert}, time.Now())
	if v.accepted || len(v.subject) > maxLoggedSubject+16 {
		t.Fatalf("accepted %v, subject kept %d bytes", v.accepted, len(v.subject))
	}
}

// TestStackedHandlers: a site-wide optional handler and a route's stricter
// one on the same request: the last handler's identity is the one the
// placeholders show.
func TestStackedHandlers(t *testing.T) {
	p := newPKI(t)
	site := provision(t, `{"mode":"optional","trust_pool":{"provider":"file","pem_files":["`+p.rootPath+`"]}}`)
	pemJSON, _ := json.Marshal(string(p.valid.CertPEM()))
	route := provision(t, `{"clients":[{"alias":"alice-pinned","tier":"gold","certificate":`+string(pemJSON)+`}]}`)

	// serve sends alice's request, after prepare, through handlers to one
	// that reads the placeholders, and returns what they showed.
	serve := func(prepare func(*http.Request, *caddy.Replacer), handlers ...*Handler) (id, tier string) {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, "https://api.example/v1", nil)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{p.valid.Cert}}
		repl := caddy.NewReplacer()
		w := httptest.NewRecorder()
		r = caddyhttp.PrepareRequest(r, repl, w, nil)
		if prepare != nil {
			prepare(r, repl)
		}
		var next caddyhttp.Handler = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			id, _ = repl.GetString("http.auth.user.id")
			tier, _ = repl.GetString("http.auth.user.tier")
			return nil
		})
		for i := len(handlers) - 1; i >= 0; i-- {
			h, inner := handlers[i], next
			next = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return h.ServeHTTP(w, r, inner) })
		}
		if err := next.ServeHTTP(w, r); err != nil {
			t.Fatal(err)
		}
		return id, tier
	}
	for _, tc := range []struct {
		name     string
		prepare  func(*http.Request, *caddy.Replacer)
		handlers []*Handler
	}{
		{"site-wide, then the route's", nil, []*Handler{site, route}},
		// A vars directive that took the handler's variable name first does
		// not keep the placeholders from being mapped.
		{"after a vars directive", func(r *http.Request, _ *caddy.Replacer) {
			caddyhttp.SetVar(r.Context(), identityVarKey, "set by a vars directive")
		}, []*Handler{route}},
		// An earlier authenticator's static values (basic_auth sets
		// http.auth.user.id and its metadata) would otherwise answer first.
		{"after basic_auth's values", func(_ *http.Request, repl *caddy.Replacer) {
			repl.Set("http.auth.user.id", "mallory")
			repl.Set("http.auth.user.tier", "platinum")
		}, []*Handler{route}},
	} {
		if id, tier := serve(tc.prepare, tc.handlers...); id != "alice-pinned" || tier != "gold" {
			t.Errorf("%s: id %q tier %q, want the route handler's alice-pinned/gold", tc.name, id, tier)
		}
	}
}

func TestRevocation(t *testing.T) {
	p := newPKI(t)
	revoked := demopki.Must(p.root.Issue(demopki.Options{CommonName: "revoked"}))
	crl := filepath.Join(p.dir, "root.crl")
	if err := p.root.WriteCRL(crl, time.Now().Add(time.Hour), revoked); err != nil {
		t.Fatal(err)
	}
	h := provision(t, `{"trust_pool":{"provider":"file","pem_files":["`+p.rootPath+`"]},"revocation":{"crl":["`+crl+`"]}}`)
	if res := serve(h, reqOpts{certs: []*demopki.Cert{revoked}}); res.status != 403 || !strings.HasSuffix(res.err.Error(), certcheck.Revoked.String()) {
		t.Fatalf("revoked: %d %v", res.status, res.err)
	}
	if res := serve(h, reqOpts{certs: []*demopki.Cert{p.valid}}); res.status != 0 {
		t.Fatalf("valid: %d %v", res.status, res.err)
	}
	// The CRL now revokes alice too: once re-read, her cached verdict is
	// not reused.
	if err := p.root.WriteCRL(crl, time.Now().Add(time.Hour), revoked, p.valid); err != nil {
		t.Fatal(err)
	}
	h.revocation.Reload(context.Background())
	if res := serve(h, reqOpts{certs: []*demopki.Cert{p.valid}}); res.status != 403 || !strings.HasSuffix(res.err.Error(), certcheck.Revoked.String()) {
		t.Fatalf("valid after the new CRL: %d %v", res.status, res.err)
	}
}

// TestPinnedRevocation: a pinned client whose certificate chains to the
// trust pool is checked against its issuer's CRL like any chained one (a
// revoked partner pinned as a client was accepted in strict mode), and a
// pinned certificate whose issuer is not known is not refused for that.
func TestPinnedRevocation(t *testing.T) {
	p := newPKI(t)
	revoked := demopki.Must(p.root.Issue(demopki.Options{CommonName: "revoked-partner"}))
	revokedPath, _, err := revoked.WriteFiles(p.dir, "revoked-partner")
	if err != nil {
		t.Fatal(err)
	}
	crl := filepath.Join(p.dir, "root.crl")
	if err := p.root.WriteCRL(crl, time.Now().Add(time.Hour), revoked); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"strict", "ignore_ca_error"} {
		h := provision(t, `{"trust_pool":{"provider":"file","pem_files":["`+p.rootPath+`"]},
			"clients":[{"alias":"revoked","certificate_file":"`+revokedPath+`"},{"alias":"partner","certificate_file":"`+p.pinnedPath+`"}],
			"revocation":{"mode":"`+mode+`","crl":["`+crl+`"]}}`)
		if res := serve(h, reqOpts{certs: []*demopki.Cert{revoked}}); res.status != 403 || !strings.HasSuffix(res.err.Error(), certcheck.Revoked.String()) {
			t.Fatalf("%s: revoked pinned client: %d %v", mode, res.status, res.err)
		}
		// The self-signed pinned partner has no known issuer: accepted.
		if res := serve(h, reqOpts{certs: []*demopki.Cert{p.pinned}}); res.status != 0 || res.vars["id"] != "partner" {
			t.Fatalf("%s: self-signed pinned client: %d %v", mode, res.status, res.err)
		}
	}
}

// TestPinnedSelfSignedCA: a self-signed certificate as `openssl req -x509`
// makes it (basicConstraints CA:TRUE, key usage for signing certificates)
// pinned as a client is accepted: it is matched byte for byte, so there is
// no chain for those to protect. The same certificate reaching the trust
// pool as a leaf is refused as a CA.
func TestPinnedSelfSignedCA(t *testing.T) {
	p := newPKI(t)
	ca := demopki.Must(demopki.NewCA("openssl-made"))
	path, _, err := ca.WriteFiles(p.dir, "openssl-made")
	if err != nil {
		t.Fatal(err)
	}
	h := provision(t, `{"clients":[{"alias":"tool","certificate_file":"`+path+`"}]}`)
	if res := serve(h, reqOpts{certs: []*demopki.Cert{ca}}); res.status != 0 || res.vars["id"] != "tool" {
		t.Fatalf("pinned CA:TRUE self-signed certificate: %d %v", res.status, res.err)
	}
	h = provision(t, `{"trust_pool":{"provider":"file","pem_files":["`+path+`"]}}`)
	if res := serve(h, reqOpts{certs: []*demopki.Cert{ca}}); res.status != 403 || !strings.HasSuffix(res.err.Error(), certcheck.CACertificate.String()) {
		t.Fatalf("the CA itself under the trust pool: %d %v", res.status, res.err)
	}
}

// TestPinnedChainFromFile: a pinned client issued under an intermediate,
// whose PEM file holds its chain (as most exports do), is checked against
// the intermediate's CRL whether or not it sends the intermediate, in
// ignore_ca_error mode too (review finding: leaving it out passed).
func TestPinnedChainFromFile(t *testing.T) {
	p := newPKI(t)
	revoked := demopki.Must(p.mid.Issue(demopki.Options{CommonName: "revoked-partner"}))
	path := filepath.Join(p.dir, "revoked-partner-chain.pem")
	if err := os.WriteFile(path, append(revoked.CertPEM(), p.mid.CertPEM()...), 0o600); err != nil {
		t.Fatal(err)
	}
	crl := filepath.Join(p.dir, "mid.crl")
	if err := p.mid.WriteCRL(crl, time.Now().Add(time.Hour), revoked); err != nil {
		t.Fatal(err)
	}
	h := provision(t, `{"trust_pool":{"provider":"file","pem_files":["`+p.rootPath+`"]},
		"clients":[{"alias":"revoked","certificate_file":"`+path+`"}],
		"revocation":{"mode":"ignore_ca_error","crl":["`+crl+`"]}}`)
	for _, chain := range [][]*demopki.Cert{{revoked}, {revoked, p.mid}} {
		if res := serve(h, reqOpts{certs: chain}); res.status != 403 || !strings.HasSuffix(res.err.Error(), certcheck.Revoked.String()) {
			t.Fatalf("revoked pinned client sending %d certificates: %d %v", len(chain), res.status, res.err)
		}
	}
}

// TestRefusedHeaderKeyedByHash: a refused header value is kept under its
// 32-byte hash, not as itself (review finding: up to 4 KiB a refused value),
// and is still served from the cache.
func TestRefusedHeaderKeyedByHash(t *testing.T) {
	p := newPKI(t)
	h := provision(t, headerConfig(p, `{}`, ""))
	value := certcodec.Encode(p.wrongCA.Cert.Raw, certcodec.RFC9440)
	for round := range 2 {
		if res := serve(h, reqOpts{trusted: true, header: http.Header{"Client-Cert": {value}}}); res.status != 403 {
			t.Fatalf("round %d: %d %v", round, res.status, res.err)
		}
	}
	n := 0
	h.cache.Keys(certcheck.SourceHeader, func(key string, v *verdict) {
		n++
		if v.accepted || len(key) != sha256.Size || key[0] != 1 {
			t.Fatalf("refused verdict kept under a key of %d bytes", len(key))
		}
	})
	if n != 1 {
		t.Fatalf("%d header verdicts kept, want 1", n)
	}
}

// requests returns the count of caddy_mtls_requests_total with these
// labels.
func requests(server, handler, result string, reason certcheck.Reason, source certcheck.Source) float64 {
	return testutil.ToFloat64(metrics.RequestCounter(server, handler, result, reason.String(), source.String()))
}

// TestMetricsLabels sends requests through handlers and checks that each
// counts them under its own name and its server's, and that its cache
// counts its hits and misses.
func TestMetricsLabels(t *testing.T) {
	p := newPKI(t)
	named := provision(t, strings.TrimSuffix(headerConfig(p, `{"from":["10.0.0.1"]}`, ``), "}")+`,"name":"metrics-labels"}`)
	if named.server != unknownServer || named.name != "metrics-labels" {
		t.Fatalf("server %q name %q, want %q and metrics-labels", named.server, named.name, unknownServer)
	}
	const srv = unknownServer
	type count struct {
		result string
		reason certcheck.Reason
		source certcheck.Source
	}
	counts := []count{
		{"accepted", certcheck.OK, certcheck.SourceTLS},
		{"accepted", certcheck.OK, certcheck.SourceHeader},
		{"rejected", certcheck.Untrusted, certcheck.SourceTLS},
		{"rejected", certcheck.NoCert, certcheck.SourceHeader},
		{"rejected", certcheck.BadHeader, certcheck.SourceHeader},
		{"rejected", certcheck.UntrustedSource, certcheck.SourceTLS},
	}
	before := map[count]float64{}
	for _, c := range counts {
		before[c] = requests(srv, "metrics-labels", c.result, c.reason, c.source)
	}
	hits, misses := cacheCounts(t, srv, "metrics-labels")

	proxy := "10.0.0.1:1234"
	alice := http.Header{"Client-Cert": {rfc9440(p.valid)}}
	for _, o := range []reqOpts{
		{certs: []*demopki.Cert{p.valid}},                                     // accepted, tls: a miss
		{certs: []*demopki.Cert{p.valid}},                                     // again: a hit
		{certs: []*demopki.Cert{p.wrongCA}},                                   // untrusted, tls: a miss
		{remote: proxy, header: alice},                                        // accepted, header: a miss
		{remote: proxy, header: alice},                                        // a hit
		{remote: proxy},                                                       // no certificate from the proxy
		{remote: proxy, header: http.Header{"Client-Cert": {":not base64:"}}}, // bad header: no verdict
		{remote: "192.0.2.9:1", header: alice},                                // not from the proxy: untrusted source
	} {
		serve(named, o)
	}
	want := map[count]float64{counts[0]: 2, counts[1]: 2, counts[2]: 1, counts[3]: 1, counts[4]: 1, counts[5]: 1}
	for c, n := range want {
		if got := requests(srv, "metrics-labels", c.result, c.reason, c.source) - before[c]; got != n {
			t.Errorf("%s %s %s: counted %v, want %v", c.result, c.reason, c.source, got, n)
		}
	}
	if h, m := cacheCounts(t, srv, "metrics-labels"); h-hits != 2 || m-misses != 3 {
		t.Errorf("cache: %v hits and %v misses, want 2 and 3", h-hits, m-misses)
	}

	// Another handler does not add up with it.
	other := provision(t, strings.TrimSuffix(p.trustConfig(), "}")+`,"name":"metrics-labels-other"}`)
	serve(other, reqOpts{certs: []*demopki.Cert{p.valid}})
	if got := requests(srv, "metrics-labels", "accepted", certcheck.OK, certcheck.SourceTLS) - before[counts[0]]; got != 2 {
		t.Errorf("the named handler's accepted moved to %v with the other's request", got)
	}
	if got := requests(srv, "metrics-labels-other", "accepted", certcheck.OK, certcheck.SourceTLS); got != 1 {
		t.Errorf("the other handler counted %v accepted, want 1", got)
	}
}

// cacheCounts returns the hits and misses counted for a handler's cache.
func cacheCounts(t *testing.T, server, handler string) (hits, misses float64) {
	t.Helper()
	h, m := metrics.VerifyCache(t, server, handler, func() int { return 0 }, 0)
	metrics.ForgetVerifyCache(t)
	return testutil.ToFloat64(h), testutil.ToFloat64(m)
}

// rfc9440 encodes c as an RFC 9440 Client-Cert value.
func rfc9440(c *demopki.Cert) string { return certcodec.Encode(c.Cert.Raw, certcodec.RFC9440) }

// TestDefaultNames checks the names of unnamed handlers: the first of a
// server is client_cert_auth, the next ones are numbered (a named one
// takes no number), and the numbers start again in the next config.
func TestDefaultNames(t *testing.T) {
	p := newPKI(t)
	provisionAll := func(configs ...string) []string {
		t.Helper()
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		ctx.Context = context.WithValue(ctx.Context, caddyhttp.ServerCtxKey, new(caddyhttp.Server))
		var names []string
		for _, config := range configs {
			h, err := tryProvisionIn(ctx, config)
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.name)
		}
		return names
	}
	unnamed := p.trustConfig()
	named := strings.TrimSuffix(unnamed, "}") + `,"name":"orders"}`
	want := []string{"client_cert_auth", "client_cert_auth_2", "orders", "client_cert_auth_3"}
	for range 2 { // a second config
		if got := provisionAll(unnamed, unnamed, named, unnamed); !slices.Equal(got, want) {
			t.Fatalf("names %q, want %q", got, want)
		}
	}
	// The numbers of an unloaded config are forgotten.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		unnamedHandlers.mu.Lock()
		n := len(unnamedHandlers.m)
		unnamedHandlers.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d servers' numbers kept after their config ended", n)
		}
	}
	// Outside a server, nothing to tell apart.
	for range 2 {
		if h := provision(t, unnamed); h.name != DefaultName || h.server != unknownServer {
			t.Fatalf("outside a server: name %q server %q", h.name, h.server)
		}
	}
}

// TestMetricsInCaddy runs the handlers in Caddy's HTTP server and checks
// that their requests are counted under the server's name and each
// handler's.
func TestMetricsInCaddy(t *testing.T) {
	p := newPKI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	handler := func(name string) string {
		h := `{"handler":"client_cert_auth","trust_pool":{"provider":"file","pem_files":["` + p.rootPath + `"]},"header":{"from":["127.0.0.1"]},"expiry_warning":1`
		if name != "" {
			h += `,"name":"` + name + `"`
		}
		return h + `}`
	}
	route := func(path, name string) string {
		return `{"match":[{"path":["` + path + `"]}],"handle":[` + handler(name) + `,{"handler":"static_response","body":"ok"}]}`
	}
	config := `{
		"admin": {"disabled": true},
		"storage": {"module": "file_system", "root": "` + t.TempDir() + `"},
		"logging": {"logs": {"default": {"level": "ERROR"}}},
		"apps": {"http": {"servers": {"metrics-api": {
			"listen": ["` + addr + `"],
			"automatic_https": {"disable": true},
			"routes": [` + route("/pay/*", "payments") + `,` + route("/a/*", "") + `,` + route("/b/*", "") + `]
		}}}}
	}`
	const srv = "metrics-api"
	before := map[string]float64{
		"payments": requests(srv, "payments", "accepted", certcheck.OK, certcheck.SourceHeader),
		"a":        requests(srv, DefaultName, "rejected", certcheck.NoCert, certcheck.SourceHeader),
		"b":        requests(srv, DefaultName+"_2", "rejected", certcheck.Untrusted, certcheck.SourceHeader),
	}
	hits, misses := cacheCounts(t, srv, "payments")
	if err := caddy.Load([]byte(config), true); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := caddy.Stop(); err != nil {
			t.Error(err)
		}
	}()
	get := func(path string, cert *demopki.Cert) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cert != nil {
			req.Header.Set("Client-Cert", rfc9440(cert))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path   string
		cert   *demopki.Cert
		status int
	}{
		{"/pay/x", p.valid, 200},
		{"/pay/x", p.valid, 200},
		{"/a/x", nil, 401},
		{"/b/x", p.wrongCA, 403},
	} {
		if got := get(tc.path, tc.cert); got != tc.status {
			t.Fatalf("%s: status %d, want %d", tc.path, got, tc.status)
		}
	}
	for k, got := range map[string]float64{
		"payments": requests(srv, "payments", "accepted", certcheck.OK, certcheck.SourceHeader),
		"a":        requests(srv, DefaultName, "rejected", certcheck.NoCert, certcheck.SourceHeader),
		"b":        requests(srv, DefaultName+"_2", "rejected", certcheck.Untrusted, certcheck.SourceHeader),
	} {
		want := 1.0
		if k == "payments" {
			want = 2
		}
		if got-before[k] != want {
			t.Errorf("%s: counted %v, want %v", k, got-before[k], want)
		}
	}
	if h, m := cacheCounts(t, srv, "payments"); h-hits != 1 || m-misses != 1 {
		t.Errorf("payments cache: %v hits and %v misses, want 1 and 1", h-hits, m-misses)
	}
}

// TestCaddyfileName checks the name subdirective.
func TestCaddyfileName(t *testing.T) {
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("client_cert_auth {\n name payments\n}")); err != nil || h.Name != "payments" {
		t.Fatalf("name %q, error %v", h.Name, err)
	}
	for _, bad := range []string{
		"client_cert_auth {\n name\n}",
		"client_cert_auth {\n name a b\n}",
		"client_cert_auth {\n name a\n name b\n}",
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestUnderscoreField: a header field with '_' or '.' in its name, which
// Caddy drops from every request unless its server expects it, is an error
// (so caddy validate says so), unless the server lists it in
// expected_underscore_headers / expected_dot_headers (exactly or by a
// prefix ending with '*').
func TestUnderscoreField(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		field, chain string
		server       *caddyhttp.Server
		wantErr      string
	}{
		{field: "X_SSL_Client_Cert", server: &caddyhttp.Server{}, wantErr: "expected_underscore_headers"},
		{field: "X.Client.Cert", server: &caddyhttp.Server{}, wantErr: "expected_dot_headers"},
		{field: "X-Cert", chain: "X_Chain", server: &caddyhttp.Server{ExpectedUnderscoreHeaders: []string{"x_ssl_client_cert"}}, wantErr: "X_chain"},
		{field: "X_SSL_Client_Cert", server: &caddyhttp.Server{ExpectedUnderscoreHeaders: []string{"x_ssl_client_cert"}}},
		{field: "X_SSL_Client_Cert", chain: "X_SSL_Client_Chain", server: &caddyhttp.Server{ExpectedUnderscoreHeaders: []string{"X_SSL_*"}}},
		{field: "X.Client.Cert", server: &caddyhttp.Server{ExpectedDotHeaders: []string{"X.Client.Cert"}}},
		{field: "X-SSL-Client-Cert", server: &caddyhttp.Server{}},
	} {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		ctx.Context = context.WithValue(ctx.Context, caddyhttp.ServerCtxKey, tc.server)
		chain := ""
		if tc.chain != "" {
			chain = `,"chain":"` + tc.chain + `"`
		}
		_, err := tryProvisionIn(ctx, `{"trust_pool":{"provider":"file","pem_files":["`+p.rootPath+`"]},"header":{"field":"`+tc.field+`"`+chain+`,"from":["127.0.0.1"]}}`)
		cancel()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s %s: %v", tc.field, tc.chain, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s %s: %v, want an error naming %s", tc.field, tc.chain, err, tc.wantErr)
		}
	}
}
