// Package integration runs end-to-end tests against a Caddy built from this
// checkout (scripts/build-caddy.sh, once per run; CADDY_BIN names a binary
// already built) and real peers: Go's TLS client, curl, nginx.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

var caddyBin string

// testModules are built into the test binary besides this project's: the
// Redis storage of the cluster test. Keep in step with the Makefile.
var testModules = []string{"github.com/pberkel/caddy-storage-redis@v1.8.0"}

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	caddyBin = os.Getenv("CADDY_BIN")
	if caddyBin == "" {
		dir, err := os.MkdirTemp("", "caddy-mtls-bin")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		caddyBin = filepath.Join(dir, "caddy")
		cmd := exec.Command("../scripts/build-caddy.sh", append([]string{caddyBin}, testModules...)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("building caddy: %w", err)
		}
	} else if abs, err := filepath.Abs(caddyBin); err == nil {
		caddyBin = abs
	}
	if _, err := os.Stat(caddyBin); err != nil {
		return 0, fmt.Errorf("caddy binary: %w", err)
	}
	return m.Run(), nil
}

// env is the PKI and files one test works with.
type env struct {
	t   *testing.T
	dir string

	root, other, serverCA *demopki.Cert
	server                *demopki.Cert
	alice, bob, mallory   *demopki.Cert // alice and bob chain to root, mallory to other
	expired, partner      *demopki.Cert // partner is self-signed, pinned
	files                 map[string]string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), files: map[string]string{}}
	must := func(c *demopki.Cert, err error) *demopki.Cert {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	e.root = must(demopki.NewCA("Integration Root"))
	e.other = must(demopki.NewCA("Other Root"))
	e.serverCA = must(demopki.NewCA("Server CA"))
	e.server = must(e.serverCA.Issue(demopki.Options{CommonName: "localhost", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}))
	e.alice = must(e.root.Issue(demopki.Options{CommonName: "alice"}))
	e.bob = must(e.other.Issue(demopki.Options{CommonName: "bob"}))
	e.mallory = must(e.other.Issue(demopki.Options{CommonName: "mallory"}))
	e.expired = must(e.root.Issue(demopki.Options{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	e.partner = must(demopki.SelfSigned(demopki.Options{CommonName: "partner-app"}))
	for name, c := range map[string]*demopki.Cert{
		"root": e.root, "other": e.other, "serverca": e.serverCA, "server": e.server,
		"alice": e.alice, "bob": e.bob, "mallory": e.mallory, "expired": e.expired, "partner": e.partner,
	} {
		cert, key, err := c.WriteFiles(e.dir, name)
		if err != nil {
			t.Fatal(err)
		}
		e.files[name] = cert
		e.files[name+"-key"] = key
	}
	return e
}

// path returns the file of a PKI item ("root", "alice-key", ...).
func (e *env) path(name string) string {
	p, ok := e.files[name]
	if !ok {
		e.t.Fatalf("no PKI file %q", name)
	}
	return p
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := testpeer.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// caddyProc is a running Caddy.
type caddyProc struct {
	admin  string // host:port of the admin endpoint
	pid    int
	exited <-chan struct{}
	mu     sync.Mutex
	logs   bytes.Buffer
}

// Logs returns what Caddy has logged so far.
func (c *caddyProc) Logs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logs.String()
}

// syncBuffer is a bytes.Buffer safe to write from a process's output
// copier while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type lockedWriter struct{ c *caddyProc }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	return w.c.logs.Write(p)
}

// startCaddy runs `caddy run` with config (adapter "caddyfile" or "json") and
// waits until every address in ready accepts connections. {admin} in config
// is replaced by the admin address.
func startCaddy(t *testing.T, e *env, config, adapter string, ready ...string) *caddyProc {
	t.Helper()
	c := &caddyProc{admin: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	config = strings.ReplaceAll(config, "{admin}", c.admin)
	name := "Caddyfile"
	if adapter == "json" {
		name = "caddy.json"
	}
	cfgPath := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	args := []string{"run", "--config", cfgPath}
	if adapter != "json" {
		args = append(args, "--adapter", adapter)
	}
	cmd := exec.Command(caddyBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
	cmd.Stdout, cmd.Stderr = lockedWriter{c}, lockedWriter{c}
	c.exited = runProcess(t, "caddy", cmd, c.Logs)
	c.pid = cmd.Process.Pid
	for _, addr := range append([]string{c.admin}, ready...) {
		waitListening(t, addr, c.exited, c.Logs)
	}
	return c
}

// runProcess starts cmd, stops it (interrupt, then kill) when the test ends,
// and shows its logs if the test failed. The channel closes when it exits.
func runProcess(t *testing.T, name string, cmd *exec.Cmd, logs func() string) <-chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, logs())
		}
	})
	return done
}

// waitListening waits until addr accepts connections, failing the test if
// the process exits first or 20 seconds pass.
func waitListening(t *testing.T, addr string, exited <-chan struct{}, logs func() string) {
	t.Helper()
	if err := testpeer.WaitListening(addr, 20*time.Second, exited); err != nil {
		t.Fatalf("%v:\n%s", err, logs())
	}
}

// backend is a plain HTTP upstream that answers with the request headers it
// got, as JSON.
type backend struct {
	addr string
}

func startBackend(t *testing.T) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(r.Header)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &backend{addr: l.Addr().String()}
}

// response is what a client got.
type response struct {
	status   int
	upstream http.Header // the headers the backend saw, for 200s
	body     string
}

// goClient makes an HTTPS client that trusts the server CA and presents
// cert (nil for none).
func (e *env) goClient(cert *demopki.Cert) *http.Client {
	cfg := &tls.Config{RootCAs: x509.NewCertPool()}
	cfg.RootCAs.AddCert(e.serverCA.Cert)
	if cert != nil {
		tc := cert.TLSCertificate()
		cfg.Certificates = []tls.Certificate{tc}
	}
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true},
		Timeout:   15 * time.Second,
	}
}

func do(t *testing.T, client *http.Client, url string, header http.Header) response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return parseResponse(t, resp.StatusCode, body)
}

func parseResponse(t *testing.T, status int, body []byte) response {
	t.Helper()
	res := response{status: status, body: string(body)}
	if status == http.StatusOK {
		if err := json.Unmarshal(body, &res.upstream); err != nil {
			t.Fatalf("backend answer %q: %v", body, err)
		}
	}
	return res
}

// curl runs curl with args, and returns the status and what the backend saw.
func curl(t *testing.T, args ...string) response {
	t.Helper()
	out := filepath.Join(t.TempDir(), "body")
	full := append([]string{"--silent", "--show-error", "--max-time", "15", "--output", out, "--write-out", "%{http_code}"}, args...)
	cmd := exec.Command("curl", full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	code, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %v: %v: %s", args, err, stderr.String())
	}
	var status int
	if _, err := fmt.Sscanf(string(code), "%d", &status); err != nil {
		t.Fatalf("curl status %q: %v", code, err)
	}
	body, _ := os.ReadFile(out)
	return parseResponse(t, status, body)
}

// logLines returns Caddy's JSON log entries whose message is msg.
func logLines(c *caddyProc, msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(c.Logs()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var entry map[string]any
		if json.Unmarshal(sc.Bytes(), &entry) == nil && entry["msg"] == msg {
			out = append(out, entry)
		}
	}
	return out
}

// eventually retries check until it returns nil or 10 seconds pass.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fingerprintHex(c *demopki.Cert) string { return certcodec.Fingerprint(c.Cert.Raw) }

// loadConfig posts a config to the admin API's /load.
func loadConfig(t *testing.T, c *caddyProc, config, contentType string) (int, []byte) {
	t.Helper()
	resp, err := http.Post("http://"+c.admin+"/load", contentType, strings.NewReader(config))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// metricValue returns the value of a series (name with its labels, as the
// exposition format writes them) from the admin endpoint's /metrics; 0 when
// it is not there yet.
func metricValue(t *testing.T, c *caddyProc, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + c.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscanf(rest, "%g", &v); err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return v
		}
	}
	return 0
}
