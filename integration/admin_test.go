package integration

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// adminCall makes a request to Caddy's admin endpoint.
func adminCall(t *testing.T, c *caddyProc, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, "http://"+c.admin+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// gatewaySite trusts only the clients stored through the admin API.
// storage is a global storage option, e.g. "file_system /path".
func gatewaySite(e *env, port int, storage, upstream string) string {
	return fmt.Sprintf(`{
	admin {admin}
	auto_https off
	storage %[5]s
}
https://localhost:%[1]d {
	tls %[2]s %[3]s {
		client_auth {
			mode request
		}
	}
	client_cert_auth {
		clients_from_storage refresh 200ms
	}
	reverse_proxy %[4]s {
		header_up X-Caller {http.auth.user.id}
		header_up X-Tier {http.auth.user.tier}
	}
}
`, port, e.path("server"), e.path("server-key"), upstream, storage)
}

func TestAdminAPI(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	storageDir := filepath.Join(e.dir, "storage")
	c := startCaddy(t, e, gatewaySite(e, port, "file_system "+storageDir, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))

	// Clients.
	status, body := adminCall(t, c, http.MethodPut, "/mtls/clients/alice", map[string]string{"certificate": string(e.alice.CertPEM()), "tier": "gold"})
	if status != 200 {
		t.Fatalf("PUT client: %d %s", status, body)
	}
	var info map[string]any
	if err := json.Unmarshal(body, &info); err != nil || info["alias"] != "alice" || info["tier"] != "gold" || info["fingerprint"] != fingerprintHex(e.alice) || info["subject"] != "CN=alice" {
		t.Fatalf("PUT client answer: %s", body)
	}
	status, body = adminCall(t, c, http.MethodGet, "/mtls/clients", nil)
	var list []map[string]any
	if status != 200 || json.Unmarshal(body, &list) != nil || len(list) != 1 || list[0]["alias"] != "alice" || list[0]["not_after"] == nil || list[0]["issuer"] != "CN=Integration Root" {
		t.Fatalf("GET clients: %d %s", status, body)
	}
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		reason       string
	}{
		{http.MethodPut, "/mtls/clients/alice", map[string]string{"certificate": "garbage"}, 400, "no PEM CERTIFICATE block"},
		{http.MethodPut, "/mtls/clients/a..b", map[string]string{"certificate": string(e.bob.CertPEM())}, 400, "invalid name"},
		{http.MethodPut, "/mtls/clients/a%2Fb", map[string]string{"certificate": string(e.bob.CertPEM())}, 400, "invalid name"},
		{http.MethodPut, "/mtls/clients/bob", `{"certificate": 1}`, 400, "decoding JSON body"},
		{http.MethodPut, "/mtls/clients/bob", `{"cert": "x"}`, 400, "unknown field"},
		{http.MethodPut, "/mtls/clients/bob", strings.Repeat("x", 300<<10), 413, "larger than"},
		{http.MethodDelete, "/mtls/clients/nobody", nil, 404, "not found"},
		{http.MethodPost, "/mtls/clients/bob", nil, 405, "not allowed"},
		{http.MethodGet, "/mtls/nothing", nil, 404, "no such resource"},
		{http.MethodPost, "/mtls/keypairs/gw", map[string]any{"common_name": "gw", "key_type": "dsa"}, 400, "unknown key_type"},
		{http.MethodPost, "/mtls/keypairs/gw", map[string]any{"certificate": string(e.alice.CertPEM()), "private_key": string(e.bob.KeyPEM())}, 400, "does not match"},
		{http.MethodPost, "/mtls/keypairs/gw", map[string]any{"certificate": string(e.alice.CertPEM()), "private_key": string(e.alice.KeyPEM()), "common_name": "x"}, 400, "not both"},
		{http.MethodGet, "/mtls/keypairs/nothing/certificate", nil, 404, "not found"},
		{http.MethodPut, "/mtls/clients/alice-again", map[string]string{"certificate": string(e.alice.CertPEM())}, 409, `stored already, as client \"alice\"`},
		{http.MethodPut, "/mtls/clients/bob", `{"certificate": "x"} trailing`, 400, "data after the JSON value"},
		{http.MethodPost, "/mtls/keypairs/leaky", map[string]any{"certificate": string(e.alice.CertPEM()) + string(e.alice.KeyPEM()), "private_key": string(e.alice.KeyPEM())}, 400, "only certificates may be"},
	} {
		status, body := adminCall(t, c, tc.method, tc.path, tc.body)
		if status != tc.status || !strings.Contains(string(body), tc.reason) {
			t.Fatalf("%s %s: %d %s, want %d with %q", tc.method, tc.path, status, body, tc.status, tc.reason)
		}
	}

	// Key pairs: generate, upload, list, download, delete.
	status, body = adminCall(t, c, http.MethodPost, "/mtls/keypairs/gw-rsa", map[string]any{"common_name": "gateway", "organization": "Example", "validity_days": 90, "key_type": "rsa2048"})
	if status != 200 || !strings.Contains(string(body), `"key_type":"rsa2048"`) {
		t.Fatalf("generate: %d %s", status, body)
	}
	status, body = adminCall(t, c, http.MethodPost, "/mtls/keypairs/gw", map[string]any{"common_name": "gateway"})
	if status != 200 || !strings.Contains(string(body), `"key_type":"p256"`) {
		t.Fatalf("generate default: %d %s", status, body)
	}
	status, body = adminCall(t, c, http.MethodPost, "/mtls/keypairs/uploaded", map[string]any{"certificate": string(e.alice.CertPEM()), "private_key": string(e.alice.KeyPEM())})
	if status != 200 || !strings.Contains(string(body), fingerprintHex(e.alice)) {
		t.Fatalf("upload: %d %s", status, body)
	}
	if status, body := adminCall(t, c, http.MethodPost, "/mtls/keypairs/gw", map[string]any{"common_name": "again"}); status != 409 || !strings.Contains(string(body), "replace=true") {
		t.Fatalf("generate over an existing key pair: %d %s", status, body)
	}
	if status, body := adminCall(t, c, http.MethodPost, "/mtls/keypairs/gw?replace=true", map[string]any{"common_name": "gateway"}); status != 200 {
		t.Fatalf("replace: %d %s", status, body)
	}
	status, body = adminCall(t, c, http.MethodGet, "/mtls/keypairs", nil)
	if status != 200 || strings.Count(string(body), `"name"`) != 3 || strings.Contains(string(body), "PRIVATE") {
		t.Fatalf("list key pairs: %d %s", status, body)
	}
	status, body = adminCall(t, c, http.MethodGet, "/mtls/keypairs/gw/certificate", nil)
	if status != 200 || !strings.HasPrefix(string(body), "-----BEGIN CERTIFICATE-----") || strings.Contains(string(body), "PRIVATE") {
		t.Fatalf("download: %d %s", status, body)
	}
	if cert, err := parseCertPEM(body); err != nil || cert.Subject.CommonName != "gateway" {
		t.Fatalf("downloaded certificate: %v", err)
	}
	if status, body := adminCall(t, c, http.MethodDelete, "/mtls/keypairs/gw", nil); status != 204 {
		t.Fatalf("delete key pair: %d %s", status, body)
	}
	if status, _ := adminCall(t, c, http.MethodGet, "/mtls/keypairs/gw/certificate", nil); status != 404 {
		t.Fatalf("deleted key pair still there: %d", status)
	}

	// The stored client is trusted by client_cert_auth, with its tier.
	base := fmt.Sprintf("https://localhost:%d", port)
	eventually(t, "stored client accepted", func() error {
		res := doRawE(e.goClient(e.alice), base+"/")
		if res.err != nil || res.status != 200 {
			return fmt.Errorf("status %d %v", res.status, res.err)
		}
		return nil
	})
	res := do(t, e.goClient(e.alice), base+"/", nil)
	if res.upstream.Get("X-Caller") != "alice" || res.upstream.Get("X-Tier") != "gold" {
		t.Fatalf("stored client's placeholders: %q %q", res.upstream.Get("X-Caller"), res.upstream.Get("X-Tier"))
	}
	if res := do(t, e.goClient(e.bob), base+"/", nil); res.status != 403 {
		t.Fatalf("unstored caller: %d", res.status)
	}

	// A storage that fails writes: 500 with the reason, and what was
	// stored keeps serving.
	if err := os.RemoveAll(filepath.Join(storageDir, "caddy_mtls", "keypairs")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(storageDir, "caddy_mtls", "keypairs"), "not a folder")
	status, body = adminCall(t, c, http.MethodPost, "/mtls/keypairs/gw2", map[string]any{"common_name": "gateway"})
	if status != 500 || !strings.Contains(string(body), "not a directory") {
		t.Fatalf("write to a broken storage: %d %s", status, body)
	}
	if res := do(t, e.goClient(e.alice), base+"/", nil); res.status != 200 {
		t.Fatalf("after the failed write, alice: %d", res.status)
	}
}

// TestAdminOversizeBody: a 5 MiB body to a route of admin.api.mtls, sent
// whole over a plain TCP connection before the answer is read (with its
// length given, and chunked), gets a 413 with the reason, not a connection
// reset; nothing is stored or deleted, and the same connection then answers
// the listing.
func TestAdminOversizeBody(t *testing.T) {
	e := newEnv(t)
	storageDir := filepath.Join(e.dir, "storage")
	c := startCaddy(t, e, `{"admin":{"listen":"{admin}"},"storage":{"module":"file_system","root":"`+storageDir+`"}}`, "json")
	if status, body := adminCall(t, c, http.MethodPut, "/mtls/clients/keep", map[string]string{"certificate": string(e.alice.CertPEM()), "tier": "gold"}); status != 200 {
		t.Fatalf("PUT client: %d %s", status, body)
	}
	if status, body := adminCall(t, c, http.MethodPost, "/mtls/keypairs/keep", map[string]string{"common_name": "keep"}); status != 200 {
		t.Fatalf("generate: %d %s", status, body)
	}

	big := `{"certificate": "` + strings.Repeat("A", 5<<20) + `", "tier": "gold"}`
	for _, tc := range []struct {
		method, path string
		list         string // the listing that must not change
	}{
		{http.MethodPut, "/mtls/clients/big", "/mtls/clients"},
		{http.MethodPut, "/mtls/clients/keep", "/mtls/clients"},
		{http.MethodDelete, "/mtls/clients/keep", "/mtls/clients"},
		{http.MethodPost, "/mtls/keypairs/big", "/mtls/keypairs"},
		{http.MethodPost, "/mtls/keypairs/keep?replace=true", "/mtls/keypairs"},
		{http.MethodDelete, "/mtls/keypairs/keep", "/mtls/keypairs"},
	} {
		for _, chunked := range []bool{false, true} {
			what := fmt.Sprintf("%s %s (chunked %v)", tc.method, tc.path, chunked)
			conn, err := net.DialTimeout("tcp", c.admin, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			rd := bufio.NewReader(conn)
			resp, err := rawRequest(conn, rd, c.admin, tc.method, tc.path, big, chunked)
			if err != nil {
				conn.Close()
				t.Fatalf("%s: %v", what, err)
			}
			if resp.status != http.StatusRequestEntityTooLarge || !strings.Contains(resp.body, "request body larger than 256 KiB") {
				conn.Close()
				t.Fatalf("%s: %d %s, want 413 with the reason", what, resp.status, resp.body)
			}
			// The connection stays usable, and nothing changed.
			resp, err = rawRequest(conn, rd, c.admin, http.MethodGet, tc.list, "", false)
			conn.Close()
			if err != nil {
				t.Fatalf("%s, then GET %s on the same connection: %v", what, tc.list, err)
			}
			if resp.status != 200 || strings.Count(resp.body, `"name"`)+strings.Count(resp.body, `"alias"`) != 1 ||
				!strings.Contains(resp.body, `"keep"`) || strings.Contains(resp.body, `"big"`) {
				t.Fatalf("%s, then GET %s: %d %s, want just \"keep\"", what, tc.list, resp.status, resp.body)
			}
		}
	}
	if status, body := adminCall(t, c, http.MethodGet, "/mtls/clients", nil); status != 200 || !strings.Contains(string(body), `"tier":"gold"`) || strings.Contains(string(body), `"big"`) {
		t.Fatalf("GET clients: %d %s", status, body)
	}
}

// rawRequest writes a request with body on conn, all of it before reading
// the answer (as simple clients do), then reads the answer from rd.
func rawRequest(conn net.Conn, rd *bufio.Reader, host, method, path, body string, chunked bool) (response, error) {
	var head strings.Builder
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n", method, path, host)
	switch {
	case chunked:
		head.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		body = fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	case body != "":
		fmt.Fprintf(&head, "Content-Length: %d\r\n\r\n", len(body))
	default:
		head.WriteString("\r\n")
	}
	if _, err := io.WriteString(conn, head.String()+body); err != nil {
		return response{}, fmt.Errorf("sending the request: %w", err)
	}
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		return response{}, fmt.Errorf("reading the answer: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("reading the answer's body: %w", err)
	}
	return response{status: resp.StatusCode, body: string(data)}, nil
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// TestClusterFileStorage: two Caddy processes sharing one storage folder. A
// client added through A's admin API is accepted by B within the refresh
// interval; removed, refused by both.
func TestClusterFileStorage(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	storageDir := filepath.Join(e.dir, "shared-storage")
	portA, portB := freePort(t), freePort(t)
	a := startCaddy(t, e, gatewaySite(e, portA, "file_system "+storageDir, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", portA))
	startCaddy(t, e, gatewaySite(e, portB, "file_system "+storageDir, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", portB))
	checkCluster(t, e, a, portA, portB)
}

// TestClusterRedisStorage: the same with Redis as the shared storage
// (Debian's redis-server, and github.com/pberkel/caddy-storage-redis built
// into the test binary).
func TestClusterRedisStorage(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	redisPort := freePort(t)
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not installed (apt-get install -y redis-server; .ci/run does): %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "--port", fmt.Sprint(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	var redisLog syncBuffer
	cmd.Stdout, cmd.Stderr = &redisLog, &redisLog
	exited := runProcess(t, "redis", cmd, redisLog.String)
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", redisPort), exited, redisLog.String)

	storage := fmt.Sprintf("redis {\n\t\taddress 127.0.0.1:%d\n\t\tkey_prefix caddy-mtls-test\n\t}", redisPort)
	portA, portB := freePort(t), freePort(t)
	a := startCaddy(t, e, gatewaySite(e, portA, storage, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", portA))
	startCaddy(t, e, gatewaySite(e, portB, storage, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", portB))
	checkCluster(t, e, a, portA, portB)
}

func checkCluster(t *testing.T, e *env, a *caddyProc, portA, portB int) {
	t.Helper()
	urls := []string{fmt.Sprintf("https://localhost:%d/", portA), fmt.Sprintf("https://localhost:%d/", portB)}
	for _, u := range urls {
		if res := do(t, e.goClient(e.bob), u, nil); res.status != 403 {
			t.Fatalf("%s before the client is added: %d", u, res.status)
		}
	}
	if status, body := adminCall(t, a, http.MethodPut, "/mtls/clients/bob", map[string]string{"certificate": string(e.bob.CertPEM()), "tier": "silver"}); status != 200 {
		t.Fatalf("PUT on A: %d %s", status, body)
	}
	for _, u := range urls {
		eventually(t, "bob accepted by "+u, func() error {
			res := doRawE(e.goClient(e.bob), u)
			if res.err != nil || res.status != 200 {
				return fmt.Errorf("status %d %v", res.status, res.err)
			}
			return nil
		})
	}
	if status, body := adminCall(t, a, http.MethodDelete, "/mtls/clients/bob", nil); status != 204 {
		t.Fatalf("DELETE on A: %d %s", status, body)
	}
	for _, u := range urls {
		eventually(t, "bob refused by "+u, func() error {
			res := doRawE(e.goClient(e.bob), u)
			if res.err != nil || res.status != 403 {
				return fmt.Errorf("status %d %v", res.status, res.err)
			}
			return nil
		})
	}
}

// TestStoredKeyPairProfile: a profile presents a key pair uploaded through
// the admin API, and the replaced one on new connections, without a reload.
func TestStoredKeyPairProfile(t *testing.T) {
	e := newEnv(t)
	storageDir := filepath.Join(e.dir, "storage")
	issuer := demopki.Must(demopki.NewCA("gateway identities"))
	v1 := demopki.Must(issuer.Issue(demopki.Options{CommonName: "gateway-v1"}))
	v2 := demopki.Must(issuer.Issue(demopki.Options{CommonName: "gateway-v2"}))
	backend := testpeer.StartBackend(t, "b", issuer)
	serverCA := filepath.Join(e.dir, "backend-ca.pem")
	writeFile(t, serverCA, string(backend.ServerCA.CertPEM()))

	c := startCaddy(t, e, `{"admin":{"listen":"{admin}"},"storage":{"module":"file_system","root":"`+storageDir+`"}}`, "json")
	upload := func(kp *demopki.Cert) {
		t.Helper()
		status, body := adminCall(t, c, http.MethodPost, "/mtls/keypairs/gw?replace=true", map[string]string{"certificate": string(kp.CertPEM()), "private_key": string(kp.KeyPEM())})
		if status != 200 {
			t.Fatalf("upload: %d %s", status, body)
		}
	}
	upload(v1)

	port := freePort(t)
	site := fmt.Sprintf(`{
	admin %[1]s
	storage file_system %[2]s
}
http://:%[3]d {
	bind 127.0.0.1
	reverse_proxy https://localhost:%[4]d {
		transport ssl_profiles {
			keepalive off
			keypair_refresh 200ms
			profile localhost:%[4]d {
				tls_trust_pool file %[5]s
				tls_client_keypair gw
			}
		}
	}
}
`, c.admin, storageDir, port, backend.Port, serverCA)
	if status, body := loadConfig(t, c, site, "text/caddyfile"); status != 200 {
		t.Fatalf("/load: %d %s", status, body)
	}
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port), c.exited, c.Logs)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if res := doRaw(t, http.DefaultClient, url); res.status != 200 || res.body != "b gateway-v1" {
		t.Fatalf("stored key pair: %d %q", res.status, res.body)
	}
	upload(v2)
	eventually(t, "the replaced key pair in use", func() error {
		res := doRawE(http.DefaultClient, url)
		if res.err != nil || res.status != 200 || res.body != "b gateway-v2" {
			return fmt.Errorf("%d %q %v", res.status, res.body, res.err)
		}
		return nil
	})
}
