package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// startNginx runs nginx (Debian's package) in the foreground with the given
// http-block body, and stops it when the test ends.
func startNginx(t *testing.T, httpBody string, ready string) {
	t.Helper()
	bin, err := testpeer.NginxBin()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := testpeer.NginxConfig(dir, 1, httpBody)
	confPath := filepath.Join(dir, "nginx.conf")
	writeFile(t, confPath, conf)
	cmd := exec.Command(bin, "-p", dir, "-c", confPath)
	out, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	logs := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return string(b)
	}
	waitListening(t, ready, runProcess(t, "nginx", cmd, logs), logs)
}

// TestNginxInFront: nginx terminates mTLS (requesting but not verifying the
// certificate, so that Caddy decides) and forwards the certificate in a
// header, connecting to Caddy from 127.0.0.2, the only trusted proxy.
func TestNginxInFront(t *testing.T) {
	e := newEnv(t)
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
	log {
		output stderr
		format json
	}
	client_cert_auth /pem/* {
		trust_pool file %[2]s
		header X-SSL-Client-Cert-Raw {
			format pem
			from trusted_proxies
		}
	}
	client_cert_auth {
		trust_pool file %[2]s
		header X-SSL-Client-Cert {
			format auto
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

	startNginx(t, fmt.Sprintf(`
	server {
		listen %[1]s ssl;
		server_name localhost;
		ssl_certificate %[2]s;
		ssl_certificate_key %[3]s;
		ssl_verify_client optional_no_ca;
		location / {
			proxy_pass http://%[4]s;
			proxy_bind 127.0.0.2;
			proxy_set_header Host $host;
			proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
			proxy_set_header X-SSL-Client-Cert-Raw $ssl_client_cert;
		}
	}
`, lbAddr, e.path("server"), e.path("server-key"), caddyAddr), lbAddr)

	lb := fmt.Sprintf("https://localhost:%d", lbPort)
	curlAs := func(name, url string, extra ...string) response {
		args := []string{"--cacert", e.path("serverca")}
		if name != "" {
			args = append(args, "--cert", e.path(name), "--key", e.path(name+"-key"))
		}
		return curl(t, append(append(args, extra...), url)...)
	}

	t.Run("through nginx", func(t *testing.T) {
		res := curlAs("alice", lb+"/api")
		if res.status != 200 || res.upstream.Get("X-Caller") != "alice" || res.upstream.Get("X-Source") != "header" {
			t.Fatalf("alice through nginx: %d caller %q source %q", res.status, res.upstream.Get("X-Caller"), res.upstream.Get("X-Source"))
		}
		if got := res.upstream.Get("Client-Cert"); got != certcodec.Encode(e.alice.Cert.Raw, certcodec.RFC9440) {
			t.Fatalf("upstream Client-Cert %q", got)
		}
		if res.upstream.Get("X-Ssl-Client-Cert") != "" {
			t.Fatal("the load balancer's header reached the upstream")
		}
		if res := curlAs("mallory", lb+"/api"); res.status != 403 {
			t.Fatalf("mallory through nginx: %d", res.status)
		}
		if res := curlAs("", lb+"/api"); res.status != 401 {
			t.Fatalf("no certificate through nginx: %d", res.status)
		}
		// nginx's tab-folded $ssl_client_cert, read as pem.
		if res := curlAs("alice", lb+"/pem/x"); res.status != 200 || res.upstream.Get("X-Caller") != "alice" {
			t.Fatalf("alice through nginx, pem header: %d %s", res.status, res.body)
		}
	})

	t.Run("spoofed header sent directly", func(t *testing.T) {
		spoof := certcodec.Encode(e.alice.Cert.Raw, certcodec.URLPEM)
		// curl from 127.0.0.1: not a trusted proxy.
		res := curl(t, "-H", "X-SSL-Client-Cert: "+spoof, fmt.Sprintf("http://%s/api", caddyAddr))
		if res.status != 401 {
			t.Fatalf("spoofed header from 127.0.0.1: %d", res.status)
		}
		// Go client from 127.0.0.3: not trusted either.
		if res := doFrom(t, "127.0.0.3", "http://"+caddyAddr+"/api", http.Header{"X-Ssl-Client-Cert": {spoof}}); res.status != 401 {
			t.Fatalf("spoofed header from 127.0.0.3: %d", res.status)
		}
		// From the trusted proxy's address the same header is believed:
		// it is the source address that decides.
		res = doFrom(t, "127.0.0.2", "http://"+caddyAddr+"/api", http.Header{"X-Ssl-Client-Cert": {spoof}})
		if res.status != 200 || res.upstream.Get("X-Caller") != "alice" {
			t.Fatalf("header from 127.0.0.2: %d", res.status)
		}
	})
}

// doFrom makes a plain HTTP request from the local address ip.
func doFrom(t *testing.T, ip, url string, header http.Header) response {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	client := &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
			DisableKeepAlives: true,
		},
		Timeout: 15 * time.Second,
	}
	return do(t, client, url, header)
}

// TestNginxInFrontClientCertificate: nginx terminates the callers' mTLS and
// connects to Caddy over TLS presenting its own client certificate
// (proxy_ssl_certificate), issued by a CA only load balancers get. Caddy
// believes the header only on such connections (from_client_certificate),
// whatever their address: a caller connecting directly from the same
// address, with or without a certificate of its own, cannot name anyone.
func TestNginxInFrontClientCertificate(t *testing.T) {
	e := newEnv(t)
	lbCA := demopki.Must(demopki.NewCA("Load Balancer CA"))
	lb := demopki.Must(lbCA.Issue(demopki.Options{CommonName: "nginx-lb"}))
	lbCAPath, _, err := lbCA.WriteFiles(e.dir, "lb-ca")
	if err != nil {
		t.Fatal(err)
	}
	lbCert, lbKey, err := lb.WriteFiles(e.dir, "lb")
	if err != nil {
		t.Fatal(err)
	}
	be := startBackend(t)
	caddyPort, lbPort := freePort(t), freePort(t)
	caddyAddr := fmt.Sprintf("localhost:%d", caddyPort)
	lbAddr := fmt.Sprintf("127.0.0.1:%d", lbPort)

	startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
}
https://localhost:%[1]d {
	tls %[2]s %[3]s {
		client_auth {
			mode request
		}
	}
	client_cert_auth {
		trust_pool file %[4]s
		header X-SSL-Client-Cert {
			from_client_certificate file %[5]s
		}
	}
	reverse_proxy %[6]s {
		header_up X-Caller {http.auth.user.id}
		header_up X-Source {http.auth.user.source}
	}
}
`, caddyPort, e.path("server"), e.path("server-key"), e.path("root"), lbCAPath, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", caddyPort))

	startNginx(t, fmt.Sprintf(`
	server {
		listen %[1]s ssl;
		server_name localhost;
		ssl_certificate %[2]s;
		ssl_certificate_key %[3]s;
		ssl_verify_client optional_no_ca;
		location / {
			proxy_pass https://%[4]s;
			proxy_ssl_server_name on;
			proxy_ssl_name localhost;
			proxy_ssl_certificate %[5]s;
			proxy_ssl_certificate_key %[6]s;
			proxy_ssl_trusted_certificate %[7]s;
			proxy_ssl_verify on;
			proxy_set_header Host localhost:%[8]d;
			proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
		}
	}
`, lbAddr, e.path("server"), e.path("server-key"), caddyAddr, lbCert, lbKey, e.path("serverca"), caddyPort), lbAddr)

	curlAs := func(name, url string, extra ...string) response {
		args := []string{"--cacert", e.path("serverca")}
		if name != "" {
			args = append(args, "--cert", e.path(name), "--key", e.path(name+"-key"))
		}
		return curl(t, append(append(args, extra...), url)...)
	}
	if res := curlAs("alice", fmt.Sprintf("https://localhost:%d/api", lbPort)); res.status != 200 || res.upstream.Get("X-Caller") != "alice" || res.upstream.Get("X-Source") != "header" {
		t.Fatalf("alice through nginx: %d caller %q source %q", res.status, res.upstream.Get("X-Caller"), res.upstream.Get("X-Source"))
	}
	if res := curlAs("mallory", fmt.Sprintf("https://localhost:%d/api", lbPort)); res.status != 403 {
		t.Fatalf("mallory through nginx: %d", res.status)
	}
	spoof := "X-SSL-Client-Cert: " + certcodec.Encode(e.alice.Cert.Raw, certcodec.URLPEM)
	direct := "https://" + caddyAddr + "/api"
	// Straight to Caddy from the load balancer's own address, without a
	// certificate: the header is not believed.
	if res := curlAs("", direct, "-H", spoof); res.status != 401 || res.upstream != nil {
		t.Fatalf("spoofed header without a certificate: %d", res.status)
	}
	// With a caller's certificate of another CA: that certificate is the
	// caller, and it is not trusted.
	if res := curlAs("mallory", direct, "-H", spoof); res.status != 403 || res.upstream != nil {
		t.Fatalf("spoofed header with mallory's certificate: %d", res.status)
	}
	// Even a trusted caller's own certificate does not make the header
	// believed: the caller is who the TLS connection says.
	if res := curlAs("partner", direct, "-H", spoof); res.status != 403 {
		t.Fatalf("spoofed header with an unknown self-signed certificate: %d", res.status)
	}
}
