package integration

import (
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// haproxyBin returns the haproxy binary: the one on PATH, else Debian's
// /usr/sbin/haproxy (not on a non-root user's PATH).
func haproxyBin(t *testing.T) string {
	t.Helper()
	if bin, err := exec.LookPath("haproxy"); err == nil {
		return bin
	}
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy"
	}
	t.Fatal("haproxy is not installed (apt-get install -y haproxy; .ci/run does)")
	return ""
}

// startHAProxy checks config with `haproxy -c`, then runs it in the
// foreground (-db) until the test ends, and waits until ready accepts
// connections.
func startHAProxy(t *testing.T, config, ready string) {
	t.Helper()
	bin := haproxyBin(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	writeFile(t, cfg, config)
	if out, err := exec.Command(bin, "-c", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, config)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logs, logs
	waitListening(t, ready, runProcess(t, "haproxy", cmd, logs.String), logs.String)
}

// TestHAProxyInFront: HAProxy (Debian's package) terminates the callers'
// TLS, requesting a certificate and leaving the verdict to Caddy (verify
// optional, every verification error ignored), and passes the certificate
// as its documentation shows, `http-request set-header X-SSL-Client-Cert
// %[ssl_c_der,base64]`, the chain the client sent after its leaf as
// `%[ssl_c_chain_der,base64]`, and nothing else: no line to mend either
// value. It connects to Caddy from 127.0.0.2, the only trusted proxy. The
// value HAProxy writes is read both as `base64_der` and as `auto`.
//
// The chain value is what HAProxy writes in each case: empty when the client
// sent no intermediates (alice: no chain, her leaf decides), one
// certificate's DER (carol), and two certificates' DER back to back (dave,
// two intermediates deep).
func TestHAProxyInFront(t *testing.T) {
	e := newEnv(t)
	// carol is issued by an intermediate under the trusted root and sends
	// it (carol.pem is her chain): only the chain header lets Caddy build
	// her chain to the root.
	inter := demopki.Must(e.root.Issue(demopki.Options{CommonName: "Integration Intermediate", IsCA: true}))
	carol := demopki.Must(inter.Issue(demopki.Options{CommonName: "carol"}))
	carolCert, carolKey, err := carol.WriteFiles(e.dir, "carol")
	if err != nil {
		t.Fatal(err)
	}
	// dave is two intermediates below the root and sends both (dave.pem):
	// HAProxy concatenates their DER into one base64 value.
	inter2 := demopki.Must(inter.Issue(demopki.Options{CommonName: "Integration Intermediate 2", IsCA: true}))
	dave := demopki.Must(inter2.Issue(demopki.Options{CommonName: "dave"}))
	daveCert, daveKey, err := dave.WriteFiles(e.dir, "dave")
	if err != nil {
		t.Fatal(err)
	}
	// HAProxy's crt: the server certificate with its key, in one file.
	bundle := filepath.Join(e.dir, "haproxy-server.pem")
	writeFile(t, bundle, string(e.server.ChainPEM())+string(e.server.KeyPEM()))

	be := startBackend(t)
	caddyPort, lbPort := freePort(t), freePort(t)
	caddyAddr := fmt.Sprintf("127.0.0.1:%d", caddyPort)
	lbAddr := fmt.Sprintf("127.0.0.1:%d", lbPort)

	startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
	servers {
		trusted_proxies static 127.0.0.2/32
	}
}
http://:%[1]d {
	bind 127.0.0.1
	client_cert_auth /auto/* {
		trust_pool file %[2]s
		header X-SSL-Client-Cert {
			format auto
			chain X-SSL-Client-Chain
			from trusted_proxies
		}
		forward
	}
	client_cert_auth /named/* {
		trust_pool file %[2]s
		header X-SSL-Client-Cert {
			format base64_der
			chain X-SSL-Client-Chain
			from trusted_proxies
		}
		forward
	}
	reverse_proxy %[3]s {
		header_up X-Caller {http.auth.user.id}
		header_up X-Source {http.auth.user.source}
	}
}
`, caddyPort, e.path("root"), be.addr), "caddyfile", caddyAddr)

	startHAProxy(t, fmt.Sprintf(`global
	maxconn 64

defaults
	mode http
	timeout connect 5s
	timeout client 15s
	timeout server 15s

frontend mtls
	bind %[1]s ssl crt %[2]s verify optional ca-file %[3]s ca-ignore-err all crt-ignore-err all
	http-request set-header X-SSL-Client-Cert %%[ssl_c_der,base64]
	http-request set-header X-SSL-Client-Chain %%[ssl_c_chain_der,base64]
	default_backend gateway

backend gateway
	server caddy %[4]s source 127.0.0.2
`, lbAddr, bundle, e.path("root"), caddyAddr), lbAddr)

	lb := fmt.Sprintf("https://localhost:%d", lbPort)
	curlAs := func(cert, key, path string, extra ...string) response {
		args := []string{"--cacert", e.path("serverca")}
		if cert != "" {
			args = append(args, "--cert", cert, "--key", key)
		}
		return curl(t, append(append(args, extra...), lb+path)...)
	}
	for _, path := range []string{"/auto/api", "/named/api"} {
		t.Run(path, func(t *testing.T) {
			res := curlAs(e.path("alice"), e.path("alice-key"), path)
			if res.status != 200 || res.upstream.Get("X-Caller") != "alice" || res.upstream.Get("X-Source") != "header" {
				t.Fatalf("alice through HAProxy: %d caller %q source %q %s", res.status, res.upstream.Get("X-Caller"), res.upstream.Get("X-Source"), res.body)
			}
			if got := res.upstream.Get("Client-Cert"); got != certcodec.Encode(e.alice.Cert.Raw, certcodec.RFC9440) {
				t.Fatalf("upstream Client-Cert %q", got)
			}
			if res.upstream.Get("X-Ssl-Client-Cert") != "" || res.upstream.Get("X-Ssl-Client-Chain") != "" {
				t.Fatal("the load balancer's headers reached the upstream")
			}
			// The intermediate arrives in the chain header, and only that
			// builds carol's chain.
			if res := curlAs(carolCert, carolKey, path); res.status != 200 || res.upstream.Get("X-Caller") != "carol" {
				t.Fatalf("carol (intermediate in the chain header) through HAProxy: %d %s", res.status, res.body)
			}
			// Two intermediates, concatenated in one chain value, read in
			// order.
			if res := curlAs(daveCert, daveKey, path); res.status != 200 || res.upstream.Get("X-Caller") != "dave" {
				t.Fatalf("dave (two intermediates in the chain header) through HAProxy: %d %s", res.status, res.body)
			}
			if res := curlAs(e.path("mallory"), e.path("mallory-key"), path); res.status != 403 {
				t.Fatalf("mallory through HAProxy: %d", res.status)
			}
			if res := curlAs("", "", path); res.status != 401 {
				t.Fatalf("no certificate through HAProxy: %d", res.status)
			}
			// set-header overwrites what a client sends itself.
			spoof := "X-SSL-Client-Cert: " + base64.StdEncoding.EncodeToString(e.alice.Cert.Raw)
			if res := curlAs("", "", path, "-H", spoof); res.status != 401 {
				t.Fatalf("a client's own X-SSL-Client-Cert through HAProxy: %d", res.status)
			}
			if res := curlAs(e.path("mallory"), e.path("mallory-key"), path, "-H", spoof); res.status != 403 {
				t.Fatalf("mallory with alice's header through HAProxy: %d", res.status)
			}
		})
	}

	// The same value sent straight to Caddy from an address that is not a
	// trusted proxy is not believed.
	spoof := base64.StdEncoding.EncodeToString(e.alice.Cert.Raw)
	if res := curl(t, "-H", "X-SSL-Client-Cert: "+spoof, "http://"+caddyAddr+"/auto/api"); res.status != 401 {
		t.Fatalf("spoofed header from 127.0.0.1: %d", res.status)
	}
}
