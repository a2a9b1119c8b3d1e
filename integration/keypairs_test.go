package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// TestStoredKeyPairPerRequest: `tls_client_keypair {placeholder}` presents
// to an nginx backend (ssl_verify_client on), per request, the key pair
// stored through the admin API that the request names (Apigee's KeyStore reference): under concurrency no request ever
// presents another's identity; a name that is no stored key pair, or no
// key pair name at all, answers 502 without reaching the backend; a key
// pair replaced or deleted through the admin API is in force within
// keypair_refresh.
func TestStoredKeyPairPerRequest(t *testing.T) {
	e := newEnv(t)
	storageDir := filepath.Join(e.dir, "storage")
	issuer := demopki.Must(demopki.NewCA("per-request identities"))
	// The backend: nginx requiring a client certificate of issuer, telling
	// whose it saw, and logging every request it got.
	serverCAcert := demopki.Must(demopki.NewCA("backend server CA"))
	server := demopki.Must(serverCAcert.Issue(demopki.Options{CommonName: "localhost", DNSNames: []string{"localhost"}}))
	serverCert, serverKey, err := server.WriteFiles(e.dir, "nginx-backend")
	if err != nil {
		t.Fatal(err)
	}
	clientCA, _, err := issuer.WriteFiles(e.dir, "nginx-client-ca")
	if err != nil {
		t.Fatal(err)
	}
	serverCA := filepath.Join(e.dir, "backend-ca.pem")
	writeFile(t, serverCA, string(serverCAcert.CertPEM()))
	accessLog := filepath.Join(e.dir, "nginx-access.log")
	backendPort := freePort(t)
	startNginx(t, fmt.Sprintf(`
	server {
		listen 127.0.0.1:%d ssl;
		server_name localhost;
		ssl_certificate %s;
		ssl_certificate_key %s;
		ssl_client_certificate %s;
		ssl_verify_client on;
		access_log %s;
		location / {
			return 200 "b $ssl_client_s_dn";
		}
	}
`, backendPort, serverCert, serverKey, clientCA, accessLog), fmt.Sprintf("127.0.0.1:%d", backendPort))
	backendRequests := func() int {
		data, _ := os.ReadFile(accessLog)
		return strings.Count(string(data), "\n")
	}

	c := startCaddy(t, e, `{"admin":{"listen":"{admin}"},"storage":{"module":"file_system","root":"`+storageDir+`"}}`, "json")
	upload := func(name string, kp *demopki.Cert) {
		t.Helper()
		status, body := adminCall(t, c, http.MethodPost, "/mtls/keypairs/"+name+"?replace=true", map[string]string{"certificate": string(kp.CertPEM()), "private_key": string(kp.KeyPEM())})
		if status != 200 {
			t.Fatalf("upload %s: %d %s", name, status, body)
		}
	}
	const identities = 6
	for i := range identities {
		upload(fmt.Sprint("partner-", i), demopki.Must(issuer.Issue(demopki.Options{CommonName: fmt.Sprint("cn-partner-", i)})))
	}

	// The key pair's name comes from a request header here only to drive
	// several from the test; a gateway takes it from the verified caller
	// ({http.auth.user.alias}).
	port := freePort(t)
	site := fmt.Sprintf(`{
	admin %[1]s
	storage file_system %[2]s
}
http://:%[3]d {
	bind 127.0.0.1
	reverse_proxy https://localhost:%[4]d {
		transport ssl_profiles {
			keypair_refresh 200ms
			profile localhost:%[4]d {
				tls_trust_pool file %[5]s
				tls_client_keypair {http.request.header.X-Keypair}
			}
		}
	}
}
`, c.admin, storageDir, port, backendPort, serverCA)
	if status, body := loadConfig(t, c, site, "text/caddyfile"); status != 200 {
		t.Fatalf("/load: %d %s", status, body)
	}
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port), c.exited, c.Logs)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	get := func(name string) rawResponse {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if name != "" {
			req.Header.Set("X-Keypair", name)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return rawResponse{err: err}
		}
		defer resp.Body.Close()
		return readRaw(resp)
	}

	var wg sync.WaitGroup
	errs := make(chan error, identities*50)
	for i := range identities {
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					res := get(fmt.Sprint("partner-", i))
					if want := fmt.Sprint("b CN=cn-partner-", i); res.err != nil || res.status != 200 || res.body != want {
						errs <- fmt.Errorf("partner-%d: %d %q %v, want %q", i, res.status, res.body, res.err, want)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	before := backendRequests()
	for _, name := range []string{"nobody", "", "../partner-1", "partner-1/x", "{http.request.uri}"} {
		if res := get(name); res.status != http.StatusBadGateway {
			t.Errorf("key pair %q: %d %q", name, res.status, res.body)
		}
	}
	if got := backendRequests() - before; got != 0 {
		t.Errorf("requests without a known key pair reached the backend %d times", got)
	}

	// Replaced, then deleted, through the admin API.
	upload("partner-2", demopki.Must(issuer.Issue(demopki.Options{CommonName: "cn-partner-2-renewed"})))
	eventually(t, "the replaced key pair presented", func() error {
		if res := get("partner-2"); res.status != 200 || res.body != "b CN=cn-partner-2-renewed" {
			return fmt.Errorf("%d %q %v", res.status, res.body, res.err)
		}
		return nil
	})
	if status, body := adminCall(t, c, http.MethodDelete, "/mtls/keypairs/partner-3", nil); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	eventually(t, "the deleted key pair refused", func() error {
		if res := get("partner-3"); res.status != http.StatusBadGateway {
			return fmt.Errorf("%d %q %v", res.status, res.body, res.err)
		}
		return nil
	})
	if res := get("partner-1"); res.status != 200 || res.body != "b CN=cn-partner-1" {
		t.Fatalf("another key pair after the changes: %d %q", res.status, res.body)
	}
}
