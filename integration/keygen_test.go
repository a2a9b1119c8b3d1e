package integration

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/store"
)

// TestKeygenFields: a key pair generated through the admin API with every
// subject field and subject alternative name, as Choreo's console asks for
// them, downloads as a certificate that openssl shows with them, CA:FALSE
// and for TLS client authentication; bad fields get 400.
func TestKeygenFields(t *testing.T) {
	e := newEnv(t)
	c := startCaddy(t, e, `{
	admin {admin}
	storage file_system `+filepath.Join(e.dir, "storage")+`
}
`, "caddyfile")
	status, body := adminCall(t, c, http.MethodPost, "/mtls/keypairs/choreo", map[string]any{
		"common_name": "choreo-gw", "organization": "Acme Corp", "organizational_unit": "Payments",
		"country": "LK", "province": "Western", "locality": "Colombo",
		"dns_names": []string{"gw.example.org"}, "ip_addresses": []string{"192.0.2.10", "2001:db8::10"},
		"uris": []string{"spiffe://example.org/gw"}, "emails": []string{"ops@example.org"},
		"validity_days": 730, "key_type": "rsa2048",
	})
	if status != http.StatusOK {
		t.Fatalf("generate: %d %s", status, body)
	}
	status, certPEM := adminCall(t, c, http.MethodGet, "/mtls/keypairs/choreo/certificate", nil)
	if status != http.StatusOK {
		t.Fatalf("download: %d %s", status, certPEM)
	}
	certFile := filepath.Join(t.TempDir(), "choreo.pem")
	writeFile(t, certFile, string(certPEM))
	out, err := exec.Command("openssl", "x509", "-in", certFile, "-noout", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl x509: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{
		"Subject: C = LK, ST = Western, L = Colombo, O = Acme Corp, OU = Payments, CN = choreo-gw",
		"DNS:gw.example.org", "IP Address:192.0.2.10", "IP Address:2001:DB8:0:0:0:0:0:10",
		"URI:spiffe://example.org/gw", "email:ops@example.org",
		"CA:FALSE", "TLS Web Client Authentication", "Digital Signature", "Public-Key: (2048 bit)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("openssl x509 -text lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "TLS Web Server Authentication") {
		t.Errorf("a server EKU:\n%s", text)
	}

	for _, bad := range []map[string]any{
		{"common_name": "x", "country": "Sri Lanka"},
		{"common_name": "x", "ip_addresses": []string{"192.0.2"}},
		{"common_name": "x", "uris": []string{"no scheme"}},
		{"common_name": "x", "validity_days": 10000},
	} {
		if status, body := adminCall(t, c, http.MethodPost, "/mtls/keypairs/bad", bad); status != http.StatusBadRequest {
			t.Errorf("%v: %d %s, want 400", bad, status, body)
		}
	}

	// The CLI takes the same as flags.
	r := wantCLI(t, 0, []string{"mtls", "keypairs", "generate", "cli", "--cn", "cli-gw", "--org", "Acme", "--ou", "Ops",
		"--country", "us", "--state", "CA", "--locality", "SF", "--dns", "a.example", "--dns", "b.example",
		"--ip", "10.1.2.3", "--uri", "urn:example:gw", "--email", "a@example.org", "--days", "10", "--json", "--address", c.admin})
	var info store.KeyPairInfo
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || info.Subject != "CN=cli-gw,OU=Ops,O=Acme,L=SF,ST=CA,C=US" {
		t.Fatalf("generate with flags: %v\n%s", err, r)
	}
	wantCLI(t, 1, []string{"mtls", "keypairs", "generate", "cli2", "--cn", "x", "--ip", "nope", "--address", c.admin}, "400", "ip_addresses")
}

// TestKeygenUploadDER: a certificate in DER, as a Windows tool saves a
// .crt, uploads with the CLI, and as base64 in the API's JSON; both are
// served back as PEM.
func TestKeygenUploadDER(t *testing.T) {
	e := newEnv(t)
	c := startCaddy(t, e, `{
	admin {admin}
	storage file_system `+filepath.Join(e.dir, "storage")+`
}
`, "caddyfile")
	der := filepath.Join(t.TempDir(), "alice.der")
	if err := os.WriteFile(der, e.alice.Cert.Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	r := wantCLI(t, 0, []string{"mtls", "keypairs", "upload", "der", der, e.path("alice-key"), "--json", "--address", c.admin})
	var info store.KeyPairInfo
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || info.Subject != "CN=alice" || info.Fingerprint != fingerprintHex(e.alice) {
		t.Fatalf("upload of a DER certificate: %v\n%s", err, r)
	}
	r = wantCLI(t, 0, []string{"mtls", "keypairs", "download", "der", "--address", c.admin})
	if r.stdout != string(e.alice.CertPEM()) {
		t.Fatalf("download: %s", r)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.crt")
	writeFile(t, garbage, "not a certificate")
	wantCLI(t, 2, []string{"mtls", "keypairs", "upload", "bad", garbage, e.path("alice-key"), "--address", c.admin}, "neither PEM")

	status, body := adminCall(t, c, http.MethodPost, "/mtls/keypairs/b64", map[string]string{
		"certificate": base64.StdEncoding.EncodeToString(e.bob.Cert.Raw), "private_key": string(e.bob.KeyPEM()),
	})
	if status != http.StatusOK {
		t.Fatalf("upload of base64 DER: %d %s", status, body)
	}
	if status, pem := adminCall(t, c, http.MethodGet, "/mtls/keypairs/b64/certificate", nil); status != http.StatusOK || string(pem) != string(e.bob.CertPEM()) {
		t.Fatalf("download: %d %s", status, pem)
	}
}
