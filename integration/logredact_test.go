package integration

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestLogRedact: a private key that a careless caller or proxy sends inside a
// certificate header must not reach the logs through this plugin, with the
// global log at DEBUG (as the README's troubleshooting advises) and an access
// log in the site. Cases: refused as bad_header (allowed source, the key in
// the configured field), refused as untrusted_source (a spoof: loopback is
// not in `from`), refused as no_cert, refused as untrusted and accepted (the
// key in Client-Cert, a field the handler also strips, next to no, an
// untrusted or a good certificate in the configured field).
//
// Caddy itself logs the request headers as they were before any handler ran
// (Server.ServeHTTP logs a clone, with a deep copy of the header, taken
// before the route runs) in http.log.error.<logger> (DEBUG, for the 4xx
// handler errors of refusals) and in http.log.access.<logger> (INFO, every
// request): no handler can redact them; only a log filter can, which
// TestLogRedactFilter checks. Here those lines are reported, not failed;
// the key anywhere else (the handler's own lines) fails the test.
func TestLogRedact(t *testing.T) { runLogRedact(t, false) }

// TestLogRedactFilter is TestLogRedact with the `format filter` of the
// README on the default logger and the site's access logs: then no line at
// all may hold the key.
func TestLogRedactFilter(t *testing.T) { runLogRedact(t, true) }

// redactSnippet is the README's filter: the handler's certificate fields
// (configured field and chain, forward field, RFC 9440's Client-Cert and
// Client-Cert-Chain) are logged as REDACTED.
const redactSnippet = `(redact_cert_headers) {
	format filter {
		wrap json
		fields {
			request>headers>X-Client-Cert replace REDACTED
			request>headers>X-Client-Cert-Chain replace REDACTED
			request>headers>Client-Cert replace REDACTED
			request>headers>Client-Cert-Chain replace REDACTED
		}
	}
}
`

func runLogRedact(t *testing.T, filter bool) {
	e := newEnv(t)
	be := startBackend(t)
	allowedPort, spoofPort := freePort(t), freePort(t)
	dir := t.TempDir()
	errorLog := filepath.Join(dir, "caddy.log")
	accessAllowed := filepath.Join(dir, "access-allowed.log")
	accessSpoof := filepath.Join(dir, "access-spoof.log")

	format := "format json"
	snippet := ""
	if filter {
		format = "import redact_cert_headers"
		snippet = redactSnippet
	}
	startCaddy(t, e, fmt.Sprintf(`%[7]s{
	admin {admin}
	auto_https off
	log {
		level DEBUG
		output file %[3]s
		%[6]s
	}
}
http://:%[1]d {
	bind 127.0.0.1
	log {
		output file %[4]s
		%[6]s
	}
	client_cert_auth {
		trust_pool file %[8]s
		header X-Client-Cert {
			from 127.0.0.1/32
		}
	}
	reverse_proxy %[9]s
}
http://:%[2]d {
	bind 127.0.0.1
	log {
		output file %[5]s
		%[6]s
	}
	client_cert_auth {
		trust_pool file %[8]s
		header X-Client-Cert {
			from 10.9.9.9/32
		}
	}
	reverse_proxy %[9]s
}
`, allowedPort, spoofPort, errorLog, accessAllowed, accessSpoof, format, snippet, e.path("root"), be.addr),
		"caddyfile", fmt.Sprintf("127.0.0.1:%d", allowedPort), fmt.Sprintf("127.0.0.1:%d", spoofPort))

	// The secret: a marker in the body of a PEM private key, and the key's
	// own first base64 line. Header values cannot hold newlines: spaces
	// stand for them, as format pem allows.
	var raw [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		t.Fatal(err)
	}
	marker := "leakcanary" + hex.EncodeToString(raw[:])
	keyPEM := string(e.alice.KeyPEM())
	keyLines := strings.Split(strings.TrimSpace(keyPEM), "\n")
	secrets := []string{marker, keyLines[1]}
	keyWithMarker := keyLines[0] + "\n" + marker + "\n" + strings.Join(keyLines[1:], "\n")
	oneLine := func(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ") }
	bundle := oneLine(string(e.alice.CertPEM()) + keyWithMarker) // certificate and key, as careless tools send
	aliceCert := oneLine(string(e.alice.CertPEM()))
	malloryCert := oneLine(string(e.mallory.CertPEM()))

	allowed := fmt.Sprintf("http://127.0.0.1:%d/", allowedPort)
	spoof := fmt.Sprintf("http://127.0.0.1:%d/", spoofPort)
	cases := []struct {
		name   string
		url    string
		header http.Header
		status int
	}{
		{"bad_header", allowed, http.Header{"X-Client-Cert": {bundle}}, http.StatusBadRequest},
		{"untrusted_source", spoof, http.Header{"X-Client-Cert": {bundle}}, http.StatusUnauthorized},
		{"no_cert", allowed, http.Header{"Client-Cert": {bundle}}, http.StatusUnauthorized},
		{"untrusted", allowed, http.Header{"X-Client-Cert": {malloryCert}, "Client-Cert": {bundle}}, http.StatusForbidden},
		{"accepted", allowed, http.Header{"X-Client-Cert": {aliceCert}, "Client-Cert": {bundle}}, http.StatusOK},
	}
	client := &http.Client{}
	refused, perSite := 0, map[string]int{}
	for _, c := range cases {
		res := do(t, client, c.url, c.header)
		if res.status != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.name, res.status, c.status, res.body)
		}
		if c.status != http.StatusOK {
			refused++
		}
		perSite[c.url]++
		for k, vs := range res.upstream {
			for _, v := range vs {
				for _, s := range secrets {
					if strings.Contains(v, s) {
						t.Errorf("%s: the upstream got the key in %s", c.name, k)
					}
				}
			}
		}
	}

	// The logs must have been written (else the test would pass for
	// nothing): a handled request per request, a handler error per refusal.
	eventually(t, "log lines", func() error {
		if n := countMsg(errorLog, "client certificate refused: "); n != refused {
			return fmt.Errorf("%s: %d handler error lines, want %d", errorLog, n, refused)
		}
		for path, want := range map[string]int{accessAllowed: perSite[allowed], accessSpoof: perSite[spoof]} {
			if n := countMsg(path, "handled request"); n != want {
				return fmt.Errorf("%s: %d access lines, want %d", path, n, want)
			}
		}
		return nil
	})

	for _, path := range []string{errorLog, accessAllowed, accessSpoof} {
		for _, l := range findLeaks(t, path, secrets) {
			if !filter && l.caddyRequestHeaders() {
				t.Logf("%s: %s (Caddy's log of the request as received: needs the README's log filter)", filepath.Base(path), l)
				continue
			}
			t.Errorf("%s: %s", filepath.Base(path), l)
		}
	}
	if filter {
		// The filter replaced the fields, so they were there to replace.
		for _, path := range []string{errorLog, accessAllowed, accessSpoof} {
			data, _ := os.ReadFile(path)
			if !strings.Contains(string(data), `"X-Client-Cert":"REDACTED"`) {
				t.Errorf("%s has no redacted X-Client-Cert:\n%s", filepath.Base(path), data)
			}
		}
	}
}

// countMsg counts the JSON log entries of a file whose msg starts with
// prefix.
func countMsg(path, prefix string) int {
	n := 0
	for _, entry := range readLogEntries(path) {
		if msg, _ := entry["msg"].(string); strings.HasPrefix(msg, prefix) {
			n++
		}
	}
	return n
}

func readLogEntries(path string) []map[string]any {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var entry map[string]any
		if json.Unmarshal(sc.Bytes(), &entry) == nil {
			out = append(out, entry)
		}
	}
	return out
}

// leak is a log line holding one of the secrets.
type leak struct {
	line               int
	logger, level, msg any
	status             any
	paths              []string // where in the entry, as filter paths
}

func (l leak) String() string {
	if l.paths == nil {
		return fmt.Sprintf("line %d (not JSON) holds the key", l.line)
	}
	return fmt.Sprintf("line %d: logger %v, level %v, msg %q, status %v: key in %s",
		l.line, l.logger, l.level, l.msg, l.status, strings.Join(l.paths, ", "))
}

// caddyRequestHeaders reports whether the key is only in the request headers
// that Caddy's error or access log shows.
func (l leak) caddyRequestHeaders() bool {
	logger, _ := l.logger.(string)
	if !strings.HasPrefix(logger, "http.log.error") && !strings.HasPrefix(logger, "http.log.access") || l.paths == nil {
		return false
	}
	for _, p := range l.paths {
		if !strings.HasPrefix(p, "request>headers>") {
			return false
		}
	}
	return true
}

// findLeaks returns the log lines of a file that hold one of the secrets.
func findLeaks(t *testing.T, path string, secrets []string) []leak {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var leaks []leak
	for i, line := range strings.Split(string(data), "\n") {
		hit := false
		for _, s := range secrets {
			hit = hit || strings.Contains(line, s)
		}
		if !hit {
			continue
		}
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			leaks = append(leaks, leak{line: i + 1})
			continue
		}
		l := leak{line: i + 1, logger: entry["logger"], level: entry["level"], msg: entry["msg"], status: entry["status"], paths: []string{}}
		walkJSON("", entry, func(p, v string) {
			for _, s := range secrets {
				if strings.Contains(v, s) {
					l.paths = append(l.paths, p)
					return
				}
			}
		})
		sort.Strings(l.paths)
		leaks = append(leaks, l)
	}
	return leaks
}

func walkJSON(path string, v any, visit func(path, value string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, vv := range x {
			walkJSON(path+">"+k, vv, visit)
		}
	case []any:
		for _, vv := range x {
			walkJSON(path, vv, visit)
		}
	case string:
		visit(strings.TrimPrefix(path, ">"), x)
	}
}
