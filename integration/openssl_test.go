package integration

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// opensslSelfSigned makes a self-signed client certificate the way WSO2's
// mTLS guides and most users make one with OpenSSL 3: `openssl req -x509`,
// which writes basicConstraints CA:TRUE (and no EKU) by default.
func opensslSelfSigned(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
		"-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN="+name).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req -x509: %v\n%s", err, out)
	}
	text, err := exec.Command("openssl", "x509", "-in", cert, "-noout", "-text").CombinedOutput()
	if err != nil || !strings.Contains(string(text), "CA:TRUE") {
		t.Fatalf("this openssl did not make a CA:TRUE certificate (%v):\n%s", err, text)
	}
	return cert, key
}

// TestOpenSSLSelfSignedClients: certificates made by `openssl req -x509`
// (CA:TRUE) are accepted pinned in the Caddyfile and stored through the
// admin API; the same certificate under a trust pool as a leaf is refused
// as ca_certificate.
func TestOpenSSLSelfSignedClients(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	pinnedCert, pinnedKey := opensslSelfSigned(t, e.dir, "openssl-pinned")
	storedCert, storedKey := opensslSelfSigned(t, e.dir, "openssl-stored")
	port := freePort(t)
	c := startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
	storage file_system %[6]s
	log {
		level DEBUG
	}
}
https://localhost:%[1]d {
	tls %[2]s %[3]s {
		client_auth {
			mode request
		}
	}
	client_cert_auth /pinned/* {
		client acme %[4]s tier gold
		clients_from_storage refresh 200ms
	}
	client_cert_auth /chained/* {
		trust_pool file %[4]s
	}
	reverse_proxy %[5]s {
		header_up X-Caller {http.auth.user.id}
		header_up X-Tier {http.auth.user.tier}
	}
}
`, port, e.path("server"), e.path("server-key"), pinnedCert, be.addr, filepath.Join(e.dir, "storage")), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))

	stored, err := os.ReadFile(storedCert)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := adminCall(t, c, http.MethodPut, "/mtls/clients/partner", map[string]string{"certificate": string(stored), "tier": "silver"}); status != 200 {
		t.Fatalf("PUT an openssl-made self-signed client: %d %s", status, body)
	}
	base := fmt.Sprintf("https://localhost:%d", port)
	call := func(cert, key, path string) response {
		return curl(t, "--cacert", e.path("serverca"), "--cert", cert, "--key", key, base+path)
	}
	if res := call(pinnedCert, pinnedKey, "/pinned/x"); res.status != 200 || res.upstream.Get("X-Caller") != "acme" || res.upstream.Get("X-Tier") != "gold" {
		t.Fatalf("pinned openssl-made client: %d caller %q", res.status, res.upstream.Get("X-Caller"))
	}
	eventually(t, "the stored client in force", func() error {
		if res := call(storedCert, storedKey, "/pinned/x"); res.status != 200 || res.upstream.Get("X-Caller") != "partner" || res.upstream.Get("X-Tier") != "silver" {
			return fmt.Errorf("stored openssl-made client: %d caller %q", res.status, res.upstream.Get("X-Caller"))
		}
		return nil
	})
	if res := call(pinnedCert, pinnedKey, "/chained/x"); res.status != 403 {
		t.Fatalf("the CA:TRUE certificate as a leaf under a trust pool: %d", res.status)
	}
	if lines := logLines(c, "client certificate refused"); len(lines) == 0 || lines[len(lines)-1]["reason"] != "ca_certificate" {
		t.Fatalf("refusal reason: %v", lines)
	}
}
