package integration

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// The README's section "From WSO2 API Manager, Choreo and Apigee" is run as
// written: each of its Caddyfile blocks is adapted, then made runnable (test
// files, ports and backends in place of its own) and sent requests to, and
// its `caddy mtls` lines are run against a running Caddy.

const migrationHeading = "## From WSO2 API Manager, Choreo and Apigee"

// migrationBlocks returns the fenced blocks of lang in the subsection of
// the README's migration section whose heading starts with sub ("" for
// the whole section).
func migrationBlocks(t *testing.T, sub, lang string) []string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "\n"+migrationHeading+"\n")
	if start < 0 {
		t.Fatalf("README has no section %q", migrationHeading)
	}
	text = text[start+1:]
	if end := strings.Index(text[len(migrationHeading):], "\n## "); end >= 0 {
		text = text[:len(migrationHeading)+end+1]
	}
	if sub != "" {
		i := strings.Index(text, "\n### "+sub)
		if i < 0 {
			t.Fatalf("README migration section has no subsection %q", sub)
		}
		text = text[i+1:]
		if end := strings.Index(text[4:], "\n### "); end >= 0 {
			text = text[:4+end+1]
		}
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)```"+regexp.QuoteMeta(lang)+"\n(.*?)```").FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

// migrationBlock returns the only block of lang in the subsection.
func migrationBlock(t *testing.T, sub, lang string) string {
	t.Helper()
	blocks := migrationBlocks(t, sub, lang)
	if len(blocks) != 1 {
		t.Fatalf("README %q has %d %s blocks, want 1", sub, len(blocks), lang)
	}
	return blocks[0]
}

// replaceAll replaces each old string of pairs with its new one, failing
// when the README text no longer holds one of them.
func replaceAll(t *testing.T, text string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("README example no longer holds %q:\n%s", pairs[i], text)
		}
		text = strings.ReplaceAll(text, pairs[i], pairs[i+1])
	}
	if m := regexp.MustCompile(`/(etc|opt)/\S+`).FindString(text); m != "" {
		t.Fatalf("README example names %s, which the test does not replace:\n%s", m, text)
	}
	return text
}

// runCaddy runs the caddy binary and returns its standard output.
func runCaddy(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(caddyBin, args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("caddy %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// runReadmeCommand runs one `caddy mtls ...` line of the README with its
// file arguments replaced (files maps the README's name to the test's) and
// the admin address of c.
func runReadmeCommand(t *testing.T, c *caddyProc, line string, files map[string]string) {
	t.Helper()
	if i := strings.Index(line, "#"); i >= 0 {
		line = line[:i]
	}
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "caddy" || fields[1] != "mtls" {
		t.Fatalf("README line %q is not a caddy mtls command", line)
	}
	args := fields[1:]
	for i, a := range args {
		if f, ok := files[a]; ok {
			args[i] = f
		}
	}
	runCaddy(t, append(args, "--address", c.admin)...)
}

// TestMigrationAdapt: every Caddyfile block of the section adapts, a
// `reverse_proxy` fragment inside a site; each has its end-to-end test
// below (the count keeps a new block from going untested).
func TestMigrationAdapt(t *testing.T) {
	blocks := migrationBlocks(t, "", "caddyfile")
	if len(blocks) != 4 {
		t.Fatalf("README migration section has %d Caddyfile blocks; this test runs 4 (WSO2, Choreo Connect, Choreo backend, Apigee): give a new one its test", len(blocks))
	}
	dir := t.TempDir()
	for i, b := range blocks {
		if strings.HasPrefix(strings.TrimSpace(b), "reverse_proxy") {
			b = "example.com {\n\tclient_cert_auth {\n\t\tclient alice /etc/caddy/alice.pem\n\t}\n\t" +
				strings.ReplaceAll(strings.TrimSpace(b), "\n", "\n\t") + "\n}\n"
		}
		path := filepath.Join(dir, fmt.Sprintf("Caddyfile%d", i))
		writeFile(t, path, b)
		out := runCaddy(t, "adapt", "--adapter", "caddyfile", "--config", path)
		var cfg map[string]any
		if err := json.Unmarshal([]byte(out), &cfg); err != nil {
			t.Fatalf("block %d: caddy adapt output: %v\n%s", i, err, out)
		}
	}
}

// TestMigrationWSO2: the WSO2 API Manager example, with a WSO2 home the
// test makes (a trust store made by keytool, a key store, the
// multi_ssl_profiles.xml naming the backend by IP address), reaches an mTLS
// backend whose certificate does not name that address; without
// `tls_verify_hostname off` (WSO2's HostnameVerifier=AllowAll) it does not.
func TestMigrationWSO2(t *testing.T) {
	keytool, err := exec.LookPath("keytool")
	if err != nil {
		t.Fatal("keytool is needed (Debian package default-jre-headless)")
	}
	e := newEnv(t)
	gwCA := demopki.Must(demopki.NewCA("backend's client CA"))
	backend := testpeer.StartBackend(t, "wso2", gwCA) // its certificate names localhost, not 127.0.0.1

	home := filepath.Join(e.dir, "wso2am")
	security := filepath.Join(home, "repository", "resources", "security")
	server := filepath.Join(home, "repository", "deployment", "server")
	for _, d := range []string{security, server} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	caPEM := filepath.Join(e.dir, "backend-ca.pem")
	writeFile(t, caPEM, string(backend.ServerCA.CertPEM()))
	if out, err := exec.Command(keytool, "-importcert", "-noprompt", "-alias", "backend", "-file", caPEM,
		"-keystore", filepath.Join(security, "client-truststore.jks"), "-storetype", "JKS", "-storepass", "wso2carbon").CombinedOutput(); err != nil {
		t.Fatalf("keytool: %v\n%s", err, out)
	}
	gateway := demopki.Must(gwCA.Issue(demopki.Options{CommonName: "apim-gateway"}))
	if err := demopki.WriteJKS(filepath.Join(security, "wso2carbon.jks"), "ks-secret", "ks-secret",
		demopki.JKSEntry{Alias: "wso2carbon", Cert: gateway, Key: true}); err != nil {
		t.Fatal(err)
	}
	backendAddr := fmt.Sprintf("127.0.0.1:%d", backend.Port)
	writeFile(t, filepath.Join(server, "multi_ssl_profiles.xml"), `<parameter name="customSSLProfiles">
<profile>
<servers>`+backendAddr+`</servers>
<TrustStore>
<Location>repository/resources/security/client-truststore.jks</Location>
<Type>JKS</Type>
<Password>wso2carbon</Password>
</TrustStore>
<KeyStore>
<Location>repository/resources/security/wso2carbon.jks</Location>
<Type>JKS</Type>
<Password>{env.WSO2_KS_PASS}</Password>
<KeyPassword>{env.WSO2_KS_PASS}</KeyPassword>
</KeyStore>
</profile>
</parameter>
`)
	t.Setenv("APIM_HOME", home)
	t.Setenv("WSO2_KS_PASS", "ks-secret")

	port := freePort(t)
	site := replaceAll(t, migrationBlock(t, "WSO2 API Manager", "caddyfile"),
		"api.example.com {", fmt.Sprintf("http://127.0.0.1:%d {", port),
		"10.100.5.130:9444", backendAddr)
	site = "{\n\tadmin {admin}\n}\n" + site
	c := startCaddy(t, e, site, "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if res := doRaw(t, http.DefaultClient, url); res.status != 200 || res.body != "wso2 apim-gateway" {
		t.Fatalf("through the WSO2 profile: %d %q", res.status, res.body)
	}

	strict := replaceAll(t, strings.ReplaceAll(site, "{admin}", c.admin), "\t\t\ttls_verify_hostname off\n", "")
	if status, body := loadConfig(t, c, strict, "text/caddyfile"); status != 200 {
		t.Fatalf("/load without tls_verify_hostname off: %d %s", status, body)
	}
	eventually(t, "the backend refused without tls_verify_hostname off", func() error {
		if res := doRawE(http.DefaultClient, url); res.status != http.StatusBadGateway {
			return fmt.Errorf("%d %q %v", res.status, res.body, res.err)
		}
		return nil
	})
}

// TestMigrationChoreoConnect: the Choreo Connect example is among the
// examples TestReadmeExamplesRefuseUnauthenticated probes; here a caller
// stored with the README's `caddy mtls clients add` line, for the API's
// group, is let in through the header as Choreo Connect's enforcer reads it
// (its documentation's PEM-wrapped PEM), with its alias and tier, and the
// backend gets the certificate in the forward field.
func TestMigrationChoreoConnect(t *testing.T) {
	block := migrationBlock(t, "Choreo Connect", "caddyfile")
	probed := false
	for _, ex := range readmeExamples(t) {
		probed = probed || ex == block
	}
	if !probed {
		t.Fatal("the Choreo Connect example is not among the README examples probed without a certificate")
	}

	e := newEnv(t)
	ex := runnableReadme(t, e, "Choreo Connect", block)
	// The load balancer is this test; the stored clients are read every second.
	ex.config = replaceAll(t, ex.config,
		"from 10.0.0.0/24", "from 127.0.0.1/32",
		"clients_from_storage {", "clients_from_storage refresh 1s {")
	c := startCaddy(t, e, ex.config, "caddyfile", fmt.Sprintf("127.0.0.1:%d", ex.sites[0].port))

	add := migrationBlock(t, "Choreo Connect", "sh")
	runReadmeCommand(t, c, strings.TrimSpace(add), map[string]string{"./acme.pem": e.path("bob")})

	pemText := string(e.bob.CertPEM())
	value := "-----BEGIN CERTIFICATE-----" + base64.StdEncoding.EncodeToString([]byte(pemText)) + "-----END CERTIFICATE-----"
	client := e.goClient(nil)
	url := ex.sites[0].String() + "/petstore/pets"
	eventually(t, "the stored caller let in through the header", func() error {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-WSO2-CLIENT-CERTIFICATE", value)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var seen seenRequest
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil {
			return err
		}
		if seen.Header.Get("X-Caller") != "acme" || seen.Header.Get("X-Tier") != "Gold" {
			t.Fatalf("backend got X-Caller %q, X-Tier %q", seen.Header.Get("X-Caller"), seen.Header.Get("X-Tier"))
		}
		if got := seen.Header.Get("X-Wso2-Client-Certificate"); !strings.HasPrefix(got, "-----BEGIN CERTIFICATE----- MII") || got == value {
			t.Fatalf("backend got the forward field %q", got)
		}
		return nil
	})
}

// TestMigrationChoreoBackend: the README's `caddy mtls keypairs` lines
// generate a key pair and download its certificate, which the backend
// trusts; the example's profile presents it, trusting the backend by its
// own certificate (Choreo's endpoint certificate). The uploaded key pair
// then replaces it.
func TestMigrationChoreoBackend(t *testing.T) {
	e := newEnv(t)
	storageDir := filepath.Join(e.dir, "storage")
	c := startCaddy(t, e, `{"admin":{"listen":"{admin}"},"storage":{"module":"file_system","root":"`+storageDir+`"}}`, "json")

	lines := strings.Split(strings.TrimSpace(migrationBlock(t, "Choreo: gateway-to-backend", "sh")), "\n")
	if len(lines) != 3 {
		t.Fatalf("README Choreo backend commands: %d lines, want generate, download, upload", len(lines))
	}
	downloaded := filepath.Join(e.dir, "orders-gw.pem")
	ownCA := demopki.Must(demopki.NewCA("own key pairs"))
	own := demopki.Must(ownCA.Issue(demopki.Options{CommonName: "own-gateway"}))
	ownCert, ownKey, err := own.WriteFiles(e.dir, "own")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"orders-gw.pem": downloaded, "./own.pem": ownCert, "./own-key.pem": ownKey}
	runReadmeCommand(t, c, lines[0], files)
	runReadmeCommand(t, c, lines[1], files)
	data, err := os.ReadFile(downloaded)
	if err != nil {
		t.Fatal(err)
	}
	generated, err := parseCertPEM(data)
	if err != nil {
		t.Fatalf("downloaded certificate: %v", err)
	}
	if generated.Subject.CommonName != "orders-gateway" {
		t.Fatalf("downloaded certificate of %q", generated.Subject.CommonName)
	}

	// The backend trusts the downloaded certificate (and the own CA).
	clients := x509.NewCertPool()
	clients.AddCert(generated)
	clients.AddCert(ownCA.Cert)
	serverCA := demopki.Must(demopki.NewCA("orders server CA"))
	srvCert := demopki.Must(serverCA.Issue(demopki.Options{CommonName: "orders.internal", DNSNames: []string{"orders.internal", "localhost"}}))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "orders %s", r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert.TLSCertificate()}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	backendPem := filepath.Join(e.dir, "orders-backend.pem")
	writeFile(t, backendPem, string(srvCert.CertPEM())) // the endpoint's own certificate, not its CA

	port := freePort(t)
	site := replaceAll(t, migrationBlock(t, "Choreo: gateway-to-backend", "caddyfile"),
		"api.example.com {", fmt.Sprintf("http://127.0.0.1:%d {", port),
		"orders.internal:9443", strings.Replace(srv.Listener.Addr().String(), "127.0.0.1", "localhost", 1),
		"/etc/caddy/orders-backend.pem", backendPem,
		"transport ssl_profiles {", "transport ssl_profiles {\n\t\t\tkeypair_refresh 200ms")
	site = fmt.Sprintf("{\n\tadmin %s\n\tstorage file_system %s\n}\n", c.admin, storageDir) + site
	if status, body := loadConfig(t, c, site, "text/caddyfile"); status != 200 {
		t.Fatalf("/load: %d %s", status, body)
	}
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port), c.exited, c.Logs)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if res := doRaw(t, http.DefaultClient, url); res.status != 200 || res.body != "orders orders-gateway" {
		t.Fatalf("with the generated key pair: %d %q", res.status, res.body)
	}

	runReadmeCommand(t, c, lines[2], files)
	eventually(t, "the uploaded key pair presented", func() error {
		if res := doRawE(http.DefaultClient, url); res.status != 200 || res.body != "orders own-gateway" {
			return fmt.Errorf("%d %q %v", res.status, res.body, res.err)
		}
		return nil
	})
}

// TestMigrationApigee: the Apigee example, in a site whose client_cert_auth
// pins the callers, presents each caller's own key pair from one JKS (the
// KeyAlias of a variable), and refuses a caller with no entry.
func TestMigrationApigee(t *testing.T) {
	e := newEnv(t)
	clientCA := demopki.Must(demopki.NewCA("partner's client CA"))
	backend := testpeer.StartBackend(t, "partner", clientCA) // names partner.internal
	caPEM := filepath.Join(e.dir, "partner-ca.pem")
	writeFile(t, caPEM, string(backend.ServerCA.CertPEM()))
	jksPath := filepath.Join(e.dir, "callers.jks")
	if err := demopki.WriteJKS(jksPath, "jks-secret", "jks-secret",
		demopki.JKSEntry{Alias: "alice", Cert: demopki.Must(clientCA.Issue(demopki.Options{CommonName: "alice-at-partner"})), Key: true},
		demopki.JKSEntry{Alias: "partner", Cert: demopki.Must(clientCA.Issue(demopki.Options{CommonName: "partner-at-partner"})), Key: true}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CALLERS_JKS_PASS", "jks-secret")

	port := freePort(t)
	proxy := replaceAll(t, migrationBlock(t, "Apigee", "caddyfile"),
		"partner.internal:9443", fmt.Sprintf("localhost:%d", backend.Port),
		"/etc/caddy/partner-ca.pem", caPEM,
		"/etc/caddy/callers.jks", jksPath)
	site := fmt.Sprintf(`{
	admin {admin}
	auto_https off
}
https://localhost:%d {
	tls %s %s {
		client_auth {
			mode request
		}
	}
	client_cert_auth {
		client alice %s
		client partner %s
		client carol %s
	}
%s}
`, port, e.path("server"), e.path("server-key"), e.path("alice"), e.path("partner"), e.path("mallory"), proxy)
	startCaddy(t, e, site, "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	url := fmt.Sprintf("https://localhost:%d/", port)
	for _, tc := range []struct {
		caller *demopki.Cert
		status int
		body   string
	}{
		{e.alice, 200, "partner alice-at-partner"},
		{e.partner, 200, "partner partner-at-partner"},
		{e.mallory, http.StatusBadGateway, ""}, // pinned as carol: no entry in the keystore
	} {
		res := doRaw(t, e.goClient(tc.caller), url)
		if res.status != tc.status || tc.body != "" && res.body != tc.body {
			t.Errorf("as %s: %d %q, want %d %q", tc.caller.Cert.Subject.CommonName, res.status, res.body, tc.status, tc.body)
		}
	}
}
