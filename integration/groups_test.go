package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// groupsSite has two routes that trust two groups of the clients stored
// through the admin API: /a/ those of group a, /b/ those of group b.
func groupsSite(e *env, port int, storage, upstream string) string {
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
	handle /a/* {
		client_cert_auth {
			clients_from_storage refresh 200ms {
				group a
			}
		}
		reverse_proxy %[4]s {
			header_up X-Caller {http.auth.user.id}
			header_up X-Tier {http.auth.user.tier}
		}
	}
	handle /b/* {
		client_cert_auth {
			clients_from_storage refresh 200ms {
				group b
			}
		}
		reverse_proxy %[4]s {
			header_up X-Caller {http.auth.user.id}
			header_up X-Tier {http.auth.user.tier}
		}
	}
}
`, port, e.path("server"), e.path("server-key"), upstream, storage)
}

// wantStatus waits until cert gets status at url (within the refresh
// interval of the stored clients), and, for 200, checks the caller's alias.
func wantStatus(t *testing.T, e *env, cert *demopki.Cert, url string, status int, caller string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s: %d at %s", cert.Cert.Subject.CommonName, status, url), func() error {
		res := doRawE(e.goClient(cert), url)
		if res.err != nil || res.status != status {
			return fmt.Errorf("status %d %v", res.status, res.err)
		}
		return nil
	})
	if status == 200 {
		if res := do(t, e.goClient(cert), url, nil); res.upstream.Get("X-Caller") != caller {
			t.Fatalf("%s at %s: caller %q, want %q", cert.Cert.Subject.CommonName, url, res.upstream.Get("X-Caller"), caller)
		}
	}
}

// TestGroups: two routes of one site trust two groups of one storage;
// each client is accepted only on the route of its group, and on both once
// it is in both; the listing filters by group.
func TestGroups(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	c := startCaddy(t, e, groupsSite(e, port, "file_system "+filepath.Join(e.dir, "storage"), be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	a, b := fmt.Sprintf("https://localhost:%d/a/", port), fmt.Sprintf("https://localhost:%d/b/", port)

	for alias, put := range map[string]map[string]any{
		"alice": {"certificate": string(e.alice.CertPEM()), "tier": "gold", "groups": []string{"a"}},
		"bob":   {"certificate": string(e.bob.CertPEM()), "groups": []string{"b"}},
	} {
		if status, body := adminCall(t, c, http.MethodPut, "/mtls/clients/"+alias, put); status != 200 {
			t.Fatalf("PUT %s: %d %s", alias, status, body)
		}
	}
	wantStatus(t, e, e.alice, a, 200, "alice")
	wantStatus(t, e, e.bob, b, 200, "bob")
	wantStatus(t, e, e.alice, b, 403, "")
	wantStatus(t, e, e.bob, a, 403, "")

	status, body := adminCall(t, c, http.MethodGet, "/mtls/clients?group=a", nil)
	var list []struct {
		Alias  string   `json:"alias"`
		Groups []string `json:"groups"`
	}
	if status != 200 || json.Unmarshal(body, &list) != nil || len(list) != 1 || list[0].Alias != "alice" || fmt.Sprint(list[0].Groups) != "[a]" {
		t.Fatalf("GET clients of group a: %d %s", status, body)
	}
	if status, body := adminCall(t, c, http.MethodPut, "/mtls/clients/carol", map[string]any{"certificate": string(e.mallory.CertPEM()), "groups": []string{"a/b"}}); status != 400 {
		t.Fatalf("PUT with a bad group: %d %s", status, body)
	}

	// bob joins a as well; alice leaves every group.
	if status, body := adminCall(t, c, http.MethodPut, "/mtls/clients/bob", map[string]any{"certificate": string(e.bob.CertPEM()), "groups": []string{"a", "b"}}); status != 200 {
		t.Fatalf("PUT bob in a and b: %d %s", status, body)
	}
	if status, body := adminCall(t, c, http.MethodPut, "/mtls/clients/alice", map[string]any{"certificate": string(e.alice.CertPEM())}); status != 200 {
		t.Fatalf("PUT alice in no group: %d %s", status, body)
	}
	wantStatus(t, e, e.bob, a, 200, "bob")
	wantStatus(t, e, e.bob, b, 200, "bob")
	wantStatus(t, e, e.alice, a, 403, "")
	wantStatus(t, e, e.alice, b, 403, "")
}

// TestRotation: a client given a second certificate is accepted with both,
// under its alias and tier; the old one removed is refused within the
// refresh interval, and the last one is not removed.
func TestRotation(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	c := startCaddy(t, e, groupsSite(e, port, "file_system "+filepath.Join(e.dir, "storage"), be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	a := fmt.Sprintf("https://localhost:%d/a/", port)
	renewed, err := e.root.Issue(demopki.Options{CommonName: "alice, renewed"})
	if err != nil {
		t.Fatal(err)
	}

	if status, body := adminCall(t, c, http.MethodPut, "/mtls/clients/svc", map[string]any{"certificate": string(e.alice.CertPEM()), "tier": "gold", "groups": []string{"a"}}); status != 200 {
		t.Fatalf("PUT svc: %d %s", status, body)
	}
	if status, body := adminCall(t, c, http.MethodPut, "/mtls/clients/bob", map[string]any{"certificate": string(e.bob.CertPEM())}); status != 200 {
		t.Fatalf("PUT bob: %d %s", status, body)
	}
	wantStatus(t, e, e.alice, a, 200, "svc")
	wantStatus(t, e, renewed, a, 403, "")

	certs := "/mtls/clients/svc/certificates"
	if status, body := adminCall(t, c, http.MethodPost, certs, map[string]string{"certificate": string(e.bob.CertPEM())}); status != 409 {
		t.Fatalf("POST bob's certificate to svc: %d %s", status, body)
	}
	status, body := adminCall(t, c, http.MethodPost, certs, map[string]string{"certificate": string(renewed.CertPEM())})
	var info struct {
		Fingerprint  string `json:"fingerprint"`
		Certificates []struct {
			Fingerprint string `json:"fingerprint"`
		} `json:"certificates"`
	}
	if status != 200 || json.Unmarshal(body, &info) != nil || len(info.Certificates) != 2 || info.Fingerprint != fingerprintHex(renewed) {
		t.Fatalf("POST renewed certificate: %d %s", status, body)
	}
	wantStatus(t, e, renewed, a, 200, "svc")
	wantStatus(t, e, e.alice, a, 200, "svc")
	if res := do(t, e.goClient(renewed), a, nil); res.upstream.Get("X-Tier") != "gold" {
		t.Fatalf("renewed certificate's tier: %q", res.upstream.Get("X-Tier"))
	}
	status, body = adminCall(t, c, http.MethodGet, "/mtls/clients?group=a", nil)
	var list []struct {
		Alias        string `json:"alias"`
		Fingerprint  string `json:"fingerprint"`
		Certificates []struct {
			Fingerprint string `json:"fingerprint"`
			NotAfter    string `json:"not_after"`
		} `json:"certificates"`
	}
	if status != 200 || json.Unmarshal(body, &list) != nil || len(list) != 1 || list[0].Alias != "svc" || len(list[0].Certificates) != 2 ||
		list[0].Fingerprint != fingerprintHex(renewed) || list[0].Certificates[0].Fingerprint != fingerprintHex(e.alice) || list[0].Certificates[0].NotAfter == "" {
		t.Fatalf("GET clients of group a: %d %s", status, body)
	}

	if status, body := adminCall(t, c, http.MethodDelete, certs+"/"+fingerprintHex(e.bob), nil); status != 404 {
		t.Fatalf("DELETE another client's fingerprint: %d %s", status, body)
	}
	if status, body := adminCall(t, c, http.MethodDelete, certs+"/"+fingerprintHex(e.alice), nil); status != 200 {
		t.Fatalf("DELETE the old certificate: %d %s", status, body)
	}
	wantStatus(t, e, e.alice, a, 403, "")
	wantStatus(t, e, renewed, a, 200, "svc")
	if status, body := adminCall(t, c, http.MethodDelete, certs+"/"+fingerprintHex(renewed), nil); status != 409 {
		t.Fatalf("DELETE the last certificate: %d %s", status, body)
	}
}

// TestGroupsTwoProcesses: two Caddy processes sharing one storage folder;
// a client put in group b through A's admin API is accepted on B's /b/
// route and refused on its /a/ route, and a certificate rotated on A is
// accepted by B.
func TestGroupsTwoProcesses(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	storage := "file_system " + filepath.Join(e.dir, "shared-storage")
	portA, portB := freePort(t), freePort(t)
	a := startCaddy(t, e, groupsSite(e, portA, storage, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", portA))
	startCaddy(t, e, groupsSite(e, portB, storage, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", portB))
	if status, body := adminCall(t, a, http.MethodPut, "/mtls/clients/bob", map[string]any{"certificate": string(e.bob.CertPEM()), "groups": []string{"b"}}); status != 200 {
		t.Fatalf("PUT on A: %d %s", status, body)
	}
	wantStatus(t, e, e.bob, fmt.Sprintf("https://localhost:%d/b/", portB), 200, "bob")
	wantStatus(t, e, e.bob, fmt.Sprintf("https://localhost:%d/a/", portB), 403, "")
	renewed, err := e.root.Issue(demopki.Options{CommonName: "bob, renewed"})
	if err != nil {
		t.Fatal(err)
	}
	if status, body := adminCall(t, a, http.MethodPost, "/mtls/clients/bob/certificates", map[string]string{"certificate": string(renewed.CertPEM())}); status != 200 {
		t.Fatalf("POST on A: %d %s", status, body)
	}
	wantStatus(t, e, renewed, fmt.Sprintf("https://localhost:%d/b/", portB), 200, "bob")
	wantStatus(t, e, e.bob, fmt.Sprintf("https://localhost:%d/b/", portB), 200, "bob")
}

// TestGroupsCLI: `caddy mtls clients add --group`, `list --group`, `rotate`
// and `remove-cert`, against a running Caddy whose routes trust the groups.
func TestGroupsCLI(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	c := startCaddy(t, e, groupsSite(e, port, "file_system "+filepath.Join(e.dir, "storage"), be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	clients := func(args ...string) []string {
		return append(append([]string{"mtls", "clients"}, args...), "--address", c.admin)
	}
	a, b := fmt.Sprintf("https://localhost:%d/a/", port), fmt.Sprintf("https://localhost:%d/b/", port)

	r := wantCLI(t, 0, clients("add", "bob", e.path("bob"), "--tier", "gold", "--group", "b", "--group", "a"))
	if cells := tableRow(t, r.stdout, "bob"); cells[5] != "a,b" || cells[6] != "1" {
		t.Fatalf("add's answer: %q\n%s", cells, r)
	}
	wantCLI(t, 0, clients("add", "alice", e.path("alice"), "--group", "a"))
	r = wantCLI(t, 0, clients("list", "--group", "b"))
	if strings.Contains(r.stdout, "alice") || !strings.Contains(r.stdout, "bob") {
		t.Fatalf("list --group b:\n%s", r)
	}
	wantStatus(t, e, e.bob, b, 200, "bob")
	wantStatus(t, e, e.alice, b, 403, "")
	wantStatus(t, e, e.alice, a, 200, "alice")

	renewed, err := e.root.Issue(demopki.Options{CommonName: "bob, renewed"})
	if err != nil {
		t.Fatal(err)
	}
	renewedPath, _, err := renewed.WriteFiles(e.dir, "bob-renewed")
	if err != nil {
		t.Fatal(err)
	}
	wantCLI(t, 1, clients("rotate", "bob", e.path("alice")), "409", `stored already, as client "alice"`)
	r = wantCLI(t, 0, clients("rotate", "bob", renewedPath))
	if cells := tableRow(t, r.stdout, "bob"); cells[2] != renewed.Cert.Subject.String() || cells[6] != "2" {
		t.Fatalf("rotate's answer: %q\n%s", cells, r)
	}
	wantStatus(t, e, renewed, b, 200, "bob")
	wantStatus(t, e, e.bob, b, 200, "bob")
	r = wantCLI(t, 0, clients("remove-cert", "bob", fingerprintHex(e.bob), "--json"))
	var info store.ClientInfo
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || len(info.Certificates) != 1 || info.Fingerprint != fingerprintHex(renewed) {
		t.Fatalf("remove-cert --json: %v\n%s", err, r)
	}
	wantStatus(t, e, e.bob, b, 403, "")
	wantStatus(t, e, renewed, a, 200, "bob")
	wantCLI(t, 1, clients("remove-cert", "bob", fingerprintHex(renewed)), "409", "last")
	wantCLI(t, 1, clients("remove-cert", "bob", fingerprintHex(e.bob)), "404")
	for _, args := range [][]string{
		clients("list", "--group", "a/b"),
		clients("add", "carol", e.path("mallory"), "--group", "../x"),
		clients("rotate", "bob"),
		clients("remove-cert", "bob"),
	} {
		wantCLI(t, 2, args, "Error: ")
	}
}
