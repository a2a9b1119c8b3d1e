package integration

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
)

// The Caddyfile examples of the README and examples/ are run as written (test
// files, ports and recording backends in place of theirs) and probed without a
// client certificate, with and without a forged certificate header, on paths
// that Caddy's matchers and a backend may read differently. No such request
// may reach a backend for a protected path; one that reaches a backend for a
// public path must carry no certificate header and no identity placeholder
// left as literal text.

// docExample is a documented Caddyfile made runnable.
type docExample struct {
	name     string
	config   string                    // {admin} stands for the admin address
	sites    []exampleSite             // the listeners to probe
	backends map[string]*probeRecorder // by the upstream address the example names
	roots    *x509.CertPool            // trusts the example's server certificate
	// trusted is issued by the CA the example trusts, pinned is the pinned
	// client, untrusted is issued by another CA.
	trusted, pinned, untrusted tls.Certificate
	// headerField and headerFormat are what client_cert_auth's header
	// subdirective reads (Client-Cert, rfc9440 when it has none).
	headerField  string
	headerFormat certcodec.Format
	// protected are the first path segments the example means to protect
	// (those of its path matchers; "api", the demo's, where it has none).
	protected []string
}

type exampleSite struct {
	https bool
	port  int
}

func (s exampleSite) String() string {
	if s.https {
		return fmt.Sprintf("https://localhost:%d", s.port)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", s.port)
}

// probeRecorder is a plain HTTP backend that answers with the request URI
// and headers it got (as JSON) and remembers them by the X-Probe-Id header.
type probeRecorder struct {
	name string // the upstream address the example names
	addr string
	mu   sync.Mutex
	seen map[string]seenRequest
}

type seenRequest struct {
	URI    string      `json:"uri"`
	Header http.Header `json:"header"`
}

func startProbeRecorder(t *testing.T, name string) *probeRecorder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &probeRecorder{name: name, addr: l.Addr().String(), seen: map[string]seenRequest{}}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := seenRequest{URI: r.RequestURI, Header: r.Header.Clone()}
			b.mu.Lock()
			b.seen[r.Header.Get("X-Probe-Id")] = s
			b.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(s)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

// received returns what a backend got for probe id, and which backend.
func (ex *docExample) received(id string) (*probeRecorder, seenRequest, bool) {
	for _, b := range ex.backends {
		b.mu.Lock()
		s, ok := b.seen[id]
		b.mu.Unlock()
		if ok {
			return b, s, true
		}
	}
	return nil, seenRequest{}, false
}

// probeRequest sends a GET for target exactly as written (no client library
// cleans it) and returns the status; err is set when the connection or the
// TLS handshake fails.
func probeRequest(site exampleSite, roots *x509.CertPool, target string, header [][2]string, cert *tls.Certificate) (int, error) {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", site.port), 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if site.https {
		cfg := &tls.Config{ServerName: "localhost", RootCAs: roots}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return 0, err
		}
		conn = tc
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "GET %s HTTP/1.1\r\nHost: localhost:%d\r\nConnection: close\r\n", target, site.port)
	for _, h := range header {
		fmt.Fprintf(&sb, "%s: %s\r\n", h[0], h[1])
	}
	sb.WriteString("\r\n")
	if _, err := conn.Write([]byte(sb.String())); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// exampleProbe is a request target; protected ones must never reach a
// backend without a certificate.
type exampleProbe struct {
	target    string
	protected bool
}

// trickyTargets are /<seg> and a path below it, and the ways of writing them
// that a backend may normalise to these (";" parameters, dot segments, "%2e",
// trailing dots, "\", case, doubled slashes, escaped letters), whether or not
// Caddy's path matchers read them the same way.
func trickyTargets(seg string) []string {
	up := strings.ToUpper(seg)
	title := up[:1] + seg[1:]
	esc := fmt.Sprintf("%%%02x", seg[0]) + seg[1:]
	allEscaped := ""
	for i := 0; i < len(seg); i++ {
		allEscaped += fmt.Sprintf("%%%02X", seg[i])
	}
	s := "/" + seg
	return []string{
		s, s + "/", s + "/x", s + "?x=1",
		s + "%2e/x", s + "%2E/x", s + "./x", s + "%20/x", s + "%2e",
		s + ";x/y", s + ";/x", s + ";", s + "/..;/" + seg + "/x", "/x/..;" + s + "/x",
		s + `\x`, s + `\`, `\` + seg + `\x`, s + "%5cx", s + "%2fx",
		"/" + up + "/x", "/" + title, "/" + up,
		"/" + s + "/x", "/./" + seg + "/x", s + "/./x",
		s + "/.." + s + "/x", "/x/.." + s + "/x", "/x/%2e%2e" + s + "/x", "/x/%2E%2E/" + seg + "/x",
		"/" + esc + "/x", "/" + esc, "/" + allEscaped + "/x",
	}
}

func exampleProbes(protected []string) []exampleProbe {
	var out []exampleProbe
	for _, seg := range protected {
		for _, target := range trickyTargets(seg) {
			out = append(out, exampleProbe{target, true})
		}
	}
	for _, target := range []string{"/", "/other", "/other/x"} {
		out = append(out, exampleProbe{target, false})
	}
	return out
}

// certificateHeaders are header fields that name a caller.
var certificateHeaders = []string{"Client-Cert", "Client-Cert-Chain", "X-SSL-Client-Cert", "X-Client-Cert", "Ssl-Client-Cert"}

// leaks lists the headers of a backend request that name a certificate or
// hold an identity placeholder as literal text.
func (ex *docExample) leaks(h http.Header) []string {
	var out []string
	for name, vals := range h {
		cert := strings.EqualFold(name, ex.headerField)
		for _, f := range certificateHeaders {
			cert = cert || strings.EqualFold(name, f)
		}
		if cert {
			out = append(out, name)
		}
		for _, v := range vals {
			if strings.Contains(v, "{http.auth.user.") {
				out = append(out, fmt.Sprintf("%s=%q", name, v))
			}
		}
	}
	sort.Strings(out)
	return out
}

// checkExample runs the example's Caddy and probes it.
func checkExample(t *testing.T, e *env, ex *docExample) {
	t.Helper()
	var ready []string
	for _, s := range ex.sites {
		ready = append(ready, fmt.Sprintf("127.0.0.1:%d", s.port))
	}
	startCaddy(t, e, ex.config, "caddyfile", ready...)

	type variant struct {
		name   string
		header [][2]string
	}
	rfc9440 := func(c tls.Certificate) string { return certcodec.Encode(c.Certificate[0], certcodec.RFC9440) }
	spoof := func(c tls.Certificate) [][2]string {
		h := [][2]string{{ex.headerField, certcodec.Encode(c.Certificate[0], ex.headerFormat)}}
		if !strings.EqualFold(ex.headerField, "Client-Cert") {
			h = append(h, [2]string{"Client-Cert", rfc9440(c)})
		}
		return h
	}
	variants := []variant{
		{"none", nil},
		{"forged (trusted CA)", spoof(ex.trusted)},
		{"forged (pinned)", spoof(ex.pinned)},
		{"forged (other CA)", spoof(ex.untrusted)},
	}

	id := 0
	failures, probes := 0, exampleProbes(ex.protected)
	for _, site := range ex.sites {
		for _, p := range probes {
			var through, what []string
			for _, v := range variants {
				id++
				pid := strconv.Itoa(id)
				status, err := probeRequest(site, ex.roots, p.target, append([][2]string{{"X-Probe-Id", pid}}, v.header...), nil)
				b, seen, ok := ex.received(pid)
				leaks := ex.leaks(seen.Header)
				switch {
				case !ok && (err != nil || status >= 400 && status < 500):
					continue // refused (or the handshake was)
				case !ok:
					what = append(what, fmt.Sprintf("%s: answered %d without a backend", v.name, status))
				case p.protected || len(leaks) > 0:
					what = append(what, fmt.Sprintf("%s: %d from %s, which got %q with %s", v.name, status, b.name, seen.URI, strings.Join(leaks, " ")))
				default:
					continue // public, and clean
				}
				through = append(through, v.name)
			}
			if len(through) > 0 {
				failures++
				kind := "public path, leaked"
				if p.protected {
					kind = "protected path, reached the backend unauthenticated"
				}
				t.Errorf("%s GET %s (%s; certificate header: %s)\n\t%s", site, p.target, kind, strings.Join(through, ", "), what[len(what)-1])
			}
		}
	}
	if failures > 0 {
		t.Logf("%s: %d of %d request targets got through (protected: /%s and what it may be written as)", ex.name, failures, len(ex.sites)*len(probes), strings.Join(ex.protected, ", /"))
	}

	// The example does let callers with a certificate through: the probes
	// above are refused for what they are, not for a broken configuration.
	// And a caller it refuses on a path (a tier rule, say) does not reach
	// that path's backend by writing the path another way.
	type caller struct {
		who  string
		cert tls.Certificate
	}
	accepted := 0
	for _, site := range ex.sites {
		if !site.https {
			continue
		}
		for _, seg := range ex.protected {
			target := "/" + seg + "/x"
			reached := map[*probeRecorder]bool{}
			var refused []caller
			for _, c := range []caller{{"trusted", ex.trusted}, {"pinned", ex.pinned}} {
				id++
				pid := strconv.Itoa(id)
				status, err := probeRequest(site, ex.roots, target, [][2]string{{"X-Probe-Id", pid}}, &c.cert)
				b, seen, ok := ex.received(pid)
				if !ok {
					t.Logf("%s GET %s with the %s certificate: %d %v", site, target, c.who, status, err)
					refused = append(refused, c)
					continue
				}
				t.Logf("%s GET %s with the %s certificate: %d from %s, X-Caller %q", site, target, c.who, status, b.name, seen.Header.Get("X-Caller"))
				accepted++
				reached[b] = true
				if err != nil || status != http.StatusOK {
					t.Errorf("%s GET %s with the %s certificate: reached %s, answered %d %v", site, target, c.who, b.name, status, err)
				}
				for name, vals := range seen.Header {
					for _, v := range vals {
						if strings.Contains(v, "{http.auth.user.") {
							t.Errorf("%s GET %s with the %s certificate: backend got %s=%q", site, target, c.who, name, v)
						}
					}
				}
			}
			for _, c := range refused {
				for _, tricky := range trickyTargets(seg) {
					id++
					pid := strconv.Itoa(id)
					status, _ := probeRequest(site, ex.roots, tricky, [][2]string{{"X-Probe-Id", pid}}, &c.cert)
					if b, seen, ok := ex.received(pid); ok && reached[b] {
						t.Errorf("%s GET %s with the %s certificate, refused on %s: %d from %s, which got %q", site, tricky, c.who, target, status, b.name, seen.URI)
					}
				}
			}
		}
	}
	if accepted == 0 {
		t.Errorf("%s: no request with the trusted or the pinned certificate reached a backend", ex.name)
	}
}

// siteLine is a top-level site block's opening line.
var siteLine = regexp.MustCompile(`^([^\s{(#][^{]*?)\s*\{\s*$`)

func directive(name string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(name) + `(\s|$)`)
}

// readmeExamples returns the README's Caddyfile blocks that authenticate and
// proxy, each named by the heading above it.
func readmeExamples(t *testing.T) map[string]string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	heading := regexp.MustCompile(`(?m)^#+ .*$`)
	for _, m := range regexp.MustCompile("(?s)```caddyfile\n(.*?)```").FindAllSubmatchIndex(readme, -1) {
		block := string(readme[m[2]:m[3]])
		if !directive("client_cert_auth").MatchString(block) || !directive("reverse_proxy").MatchString(block) {
			continue
		}
		name := "README"
		if hs := heading.FindAllIndex(readme[:m[0]], -1); len(hs) > 0 {
			h := hs[len(hs)-1]
			name = "README " + string(readme[h[0]:h[1]])
		}
		for out[name] != "" {
			name += "'"
		}
		out[name] = block
	}
	if len(out) == 0 {
		t.Fatal("README has no Caddyfile example with client_cert_auth and reverse_proxy")
	}
	return out
}

// runnableReadme turns a README example into a runnable one: its site
// addresses become local ports, its files this test's PKI, its upstreams
// recording backends, and its global options get the test's admin address.
func runnableReadme(t *testing.T, e *env, name, text string) *docExample {
	t.Helper()
	ex := &docExample{
		name: name, backends: map[string]*probeRecorder{},
		roots:   x509.NewCertPool(),
		trusted: e.alice.TLSCertificate(), pinned: e.partner.TLSCertificate(), untrusted: e.mallory.TLSCertificate(),
	}
	ex.roots.AddCert(e.serverCA.Cert)

	var (
		tlsFiles   = regexp.MustCompile(`^(\s*tls\s+)(\S+)(\s+)(\S+)(.*)$`)
		trustFile  = regexp.MustCompile(`^(\s*trust_pool\s+file\s+)(\S+)(.*)$`)
		clientFile = regexp.MustCompile(`^(\s*client\s+\S+\s+)(\S+)(.*)$`)
		proxy      = regexp.MustCompile(`^(\s*reverse_proxy)((?:\s+[^\s{]+)*)(\s*\{?\s*)$`)
		global     = []string{"\tadmin {admin}", "\tauto_https off"}
	)
	var lines []string
	depth, hasGlobal := 0, false
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case depth == 0 && trimmed == "{":
			hasGlobal = true
			lines = append(append(lines, line), global...)
			depth++
			continue
		case depth == 0 && siteLine.MatchString(line):
			var addrs []string
			for _, a := range strings.Split(siteLine.FindStringSubmatch(line)[1], ",") {
				site := exampleSite{https: !strings.HasPrefix(strings.TrimSpace(a), "http://"), port: freePort(t)}
				ex.sites = append(ex.sites, site)
				addrs = append(addrs, site.String())
			}
			line = strings.Join(addrs, ", ") + " {"
		case tlsFiles.MatchString(line) && strings.Contains(line, "/"):
			m := tlsFiles.FindStringSubmatch(line)
			line = m[1] + e.path("server") + m[3] + e.path("server-key") + m[5]
		case trustFile.MatchString(line):
			m := trustFile.FindStringSubmatch(line)
			line = m[1] + e.path("root") + m[3]
		case clientFile.MatchString(line):
			m := clientFile.FindStringSubmatch(line)
			line = m[1] + e.path("partner") + m[3]
		case proxy.MatchString(line):
			m := proxy.FindStringSubmatch(line)
			var toks []string
			for _, tok := range strings.Fields(m[2]) {
				if !strings.HasPrefix(tok, "@") && !strings.HasPrefix(tok, "/") && tok != "*" {
					b := ex.backends[tok]
					if b == nil {
						b = startProbeRecorder(t, tok)
						ex.backends[tok] = b
					}
					tok = b.addr
				}
				toks = append(toks, tok)
			}
			line = m[1] + " " + strings.Join(toks, " ") + m[3]
		}
		if strings.HasSuffix(trimmed, "{") {
			depth++
		} else if trimmed == "}" {
			depth--
		}
		lines = append(lines, line)
	}
	ex.config = strings.Join(lines, "\n")
	if !hasGlobal {
		ex.config = "{\n" + strings.Join(global, "\n") + "\n}\n\n" + ex.config
	}
	if len(ex.sites) == 0 || len(ex.backends) == 0 {
		t.Fatalf("%s: found no site or no upstream to replace:\n%s", name, text)
	}
	for _, f := range regexp.MustCompile(`\S+\.(pem|crt|key|p12|jks)\b`).FindAllString(ex.config, -1) {
		if !strings.HasPrefix(f, e.dir) {
			t.Fatalf("%s: the test does not know what to put in place of %s", name, f)
		}
	}
	ex.readConfig(t)
	return ex
}

// readConfig reads the header field and format the example's
// client_cert_auth takes a certificate from, and the paths it protects.
func (ex *docExample) readConfig(t *testing.T) {
	t.Helper()
	seen := map[string]bool{}
	matcher := regexp.MustCompile(`(?m)^\s*(?:client_cert_auth|handle|handle_path|route|@\S+\s+path|path)\s+(.*)$`)
	segment := regexp.MustCompile(`^/([A-Za-z0-9_.-]+)`)
	for _, m := range matcher.FindAllStringSubmatch(ex.config, -1) {
		for _, tok := range strings.Fields(m[1]) {
			if s := segment.FindStringSubmatch(tok); s != nil && !seen[strings.ToLower(s[1])] {
				seen[strings.ToLower(s[1])] = true
				ex.protected = append(ex.protected, strings.ToLower(s[1]))
			}
		}
	}
	if len(ex.protected) == 0 {
		ex.protected = []string{"api"}
	}
	ex.headerField, ex.headerFormat = "Client-Cert", certcodec.RFC9440
	m := regexp.MustCompile(`(?m)^\s*header(?:\s+([A-Za-z0-9-]+))?\s*(\{[^}]*\})?\s*$`).FindStringSubmatch(ex.config)
	if m == nil {
		return
	}
	if m[1] != "" {
		ex.headerField = m[1]
	}
	if f := regexp.MustCompile(`format\s+(\S+)`).FindStringSubmatch(m[2]); f != nil {
		format, err := certcodec.ParseFormat(f[1])
		if err != nil {
			t.Fatal(err)
		}
		if format != certcodec.Auto {
			ex.headerFormat = format
		}
	}
}

func TestReadmeExamplesRefuseUnauthenticated(t *testing.T) {
	examples := readmeExamples(t)
	names := make([]string, 0, len(examples))
	for name := range examples {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(strings.TrimLeft(strings.TrimPrefix(name, "README "), "# "), func(t *testing.T) {
			e := newEnv(t)
			checkExample(t, e, runnableReadme(t, e, name, examples[name]))
		})
	}
}

// TestDemoRefusesUnauthenticated runs examples/Caddyfile as examples/demo.sh
// does: its placeholders filled, with the PKI of `caddy mtls keygen --demo`.
// Its own backend site is left out; the recording backend takes its port.
func TestDemoRefusesUnauthenticated(t *testing.T) {
	e := newEnv(t)
	text, err := os.ReadFile("../examples/Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "pki")
	if out, err := exec.Command(caddyBin, "mtls", "keygen", "--demo", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("caddy mtls keygen --demo: %v\n%s", err, out)
	}

	backendSite := regexp.MustCompile(`(?ms)^\S*\{\$DEMO_BACKEND_PORT\}\s*\{\n.*?^\}\n?`)
	config := string(text)
	if !backendSite.MatchString(config) {
		t.Fatal("examples/Caddyfile has no backend site on {$DEMO_BACKEND_PORT} for the recording backend to stand in for")
	}
	config = backendSite.ReplaceAllString(config, "")
	config = strings.ReplaceAll(config, "127.0.0.1:{$DEMO_ADMIN_PORT}", "{admin}")

	ex := &docExample{name: "examples/Caddyfile", backends: map[string]*probeRecorder{}, roots: x509.NewCertPool()}
	rec := startProbeRecorder(t, "the demo's backend")
	_, backendPort, _ := net.SplitHostPort(rec.addr)
	ex.backends["127.0.0.1:{$DEMO_BACKEND_PORT}"] = rec
	vars := map[string]string{"DEMO_DIR": dir, "DEMO_BACKEND_PORT": backendPort}
	for _, name := range []string{"DEMO_GATEWAY_PORT", "DEMO_GATEWAY_HTTP_PORT", "DEMO_LB_PORT"} {
		vars[name] = strconv.Itoa(freePort(t))
	}
	config = regexp.MustCompile(`\{\$([A-Z_]+)\}`).ReplaceAllStringFunc(config, func(s string) string {
		v, ok := vars[s[2:len(s)-1]]
		if !ok {
			t.Fatalf("examples/Caddyfile: no value for %s (examples/demo.sh sets it?)", s)
		}
		return v
	})
	ex.config = config

	for _, line := range strings.Split(config, "\n") {
		m := siteLine.FindStringSubmatch(line)
		if m == nil || strings.HasPrefix(line, "\t") {
			continue
		}
		for _, a := range strings.Split(m[1], ",") {
			a = strings.TrimSpace(a)
			port, err := strconv.Atoi(a[strings.LastIndex(a, ":")+1:])
			if err != nil {
				t.Fatalf("examples/Caddyfile: site address %q has no port", a)
			}
			ex.sites = append(ex.sites, exampleSite{https: !strings.HasPrefix(a, "http://"), port: port})
		}
	}
	if len(ex.sites) == 0 {
		t.Fatal("examples/Caddyfile: no site found")
	}

	load := func(name string) tls.Certificate {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ex.trusted, ex.pinned, ex.untrusted = load("alice"), load("partner"), load("mallory")
	serverCA, err := os.ReadFile(filepath.Join(dir, "server-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ex.roots.AppendCertsFromPEM(serverCA)
	ex.readConfig(t)
	checkExample(t, e, ex)
}
