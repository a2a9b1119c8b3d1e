package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestValidateErrors: broken configs fail `caddy validate` with the reason,
// and Caddyfile syntax errors with the line.
func TestValidateErrors(t *testing.T) {
	e := newEnv(t)
	garbage := filepath.Join(e.dir, "garbage.pem")
	writeFile(t, garbage, "this is not PEM\n")
	p12 := filepath.Join(e.dir, "gw.p12")
	if err := e.alice.WriteP12(p12, "right"); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(e.dir, "acme-fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	site := func(body string) string {
		return "{\n\tadmin off\n\tauto_https off\n}\nhttp://:8080 {\n\tclient_cert_auth {\n" + body + "\n\t}\n\trespond ok\n}\n"
	}
	cases := []struct {
		name, config, adapter string
		want                  []string
	}{
		{"unknown subdirective", site("\t\ttrust_pol file " + e.path("root")), "caddyfile",
			[]string{"unrecognized subdirective 'trust_pol'", "Caddyfile:7"}},
		{"repeated subdirective", site("\t\tmode require\n\t\tmode optional"), "caddyfile",
			[]string{"subdirective 'mode' given twice", "Caddyfile:8"}},
		{"header field Caddy drops", site("\t\ttrust_pool file " + e.path("root") + "\n\t\theader X_SSL_Client_Cert {\n\t\t\tfrom 10.0.0.1\n\t\t}"), "caddyfile",
			[]string{`field "X_ssl_client_cert" has '_'`, "expected_underscore_headers"}},
		{"from not a CIDR", site("\t\ttrust_pool file " + e.path("root") + "\n\t\theader {\n\t\t\tfrom 10.0.0.300/8\n\t\t}"), "caddyfile",
			[]string{"invalid from range '10.0.0.300/8'", "Caddyfile:9"}},
		{"missing trust file", site("\t\ttrust_pool file /nonexistent/ca.pem"), "caddyfile",
			[]string{"/nonexistent/ca.pem", "no such file"}},
		{"trust file without certificates", site("\t\ttrust_pool file " + garbage), "caddyfile",
			[]string{"trust pool has no certificates"}},
		{"undecodable client PEM", site("\t\tclient acme " + garbage), "caddyfile",
			[]string{`client "acme": certificate file `, `: no PEM CERTIFICATE block found`}},
		{"missing client file", site("\t\tclient acme /nonexistent/acme.pem"), "caddyfile",
			[]string{`client "acme": reading certificate`, "/nonexistent/acme.pem"}},
		{"nothing trusted", site("\t\tmode optional"), "caddyfile",
			[]string{"no trust_pool, no client and no clients_from_storage"}},
		{"header without from", site("\t\ttrust_pool file " + e.path("root") + "\n\t\theader X-SSL-Client-Cert"), "caddyfile",
			[]string{"header: say who may set it", "Caddyfile:8"}},
		{"json header without from", `{"apps":{"http":{"servers":{"s":{"listen":[":8080"],"routes":[{"handle":[{"handler":"client_cert_auth","trust_pool":{"provider":"file","pem_files":["` + e.path("root") + `"]},"header":{}}]}]}}}}}`, "json",
			[]string{"say who may set the header"}},
		{"pinned client certificate a FIFO", site("\t\tclient acme " + fifo), "caddyfile",
			[]string{`client "acme": reading certificate file`, "not a regular file: a named pipe (FIFO)"}},
		{"ssl_profiles wrong keystore password", "{\n\tadmin off\n}\nhttp://:8080 {\n\treverse_proxy https://b.internal:9444 {\n\t\ttransport ssl_profiles {\n\t\t\tprofile b.internal:9444 {\n\t\t\t\ttls_client_keystore " + p12 + " password nope\n\t\t\t}\n\t\t}\n\t}\n}\n", "caddyfile",
			[]string{"profile 1 (b.internal:9444)", "wrong password or corrupt keystore"}},
		{"ssl_profiles unknown subdirective", "{\n\tadmin off\n}\nhttp://:8080 {\n\treverse_proxy https://b.internal:9444 {\n\t\ttransport ssl_profiles {\n\t\t\tprofile b.internal:9444 {\n\t\t\t\ttls_trust file /x.pem\n\t\t\t}\n\t\t}\n\t}\n}\n", "caddyfile",
			[]string{"unrecognized profile subdirective 'tls_trust'", "Caddyfile:8"}},
		{"json bad mode", `{"apps":{"http":{"servers":{"s":{"listen":[":8080"],"routes":[{"handle":[{"handler":"client_cert_auth","mode":"sometimes","clients":[{"alias":"a","certificate_file":"` + e.path("partner") + `"}]}]}]}}}}}`, "json",
			[]string{`mode "sometimes": want require or optional`}},
		{"json unknown field", `{"apps":{"http":{"servers":{"s":{"listen":[":8080"],"routes":[{"handle":[{"handler":"client_cert_auth","trust":"x"}]}]}}}}}`, "json",
			[]string{`unknown field "trust"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := "Caddyfile"
			if tc.adapter == "json" {
				name = "caddy.json"
			}
			path := filepath.Join(t.TempDir(), name)
			writeFile(t, path, tc.config)
			args := []string{"validate", "--config", path}
			if tc.adapter != "json" {
				args = append(args, "--adapter", tc.adapter)
			}
			cmd := exec.Command(caddyBin, args...)
			cmd.Env = append(cmd.Environ(), "HOME="+t.TempDir())
			raw, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("caddy validate accepted the config:\n%s", raw)
			}
			// Caddy prints the error in a JSON log line: unescape its quotes.
			out := strings.ReplaceAll(string(raw), `\"`, `"`)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Fatalf("caddy validate output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestBadReloadKeepsServing: a new config with a broken certificate file is
// refused by the admin API with the reason, and the running one goes on.
func TestBadReloadKeepsServing(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	good := tlsSite(e, port, be.addr)
	c := startCaddy(t, e, good, "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))

	garbage := filepath.Join(e.dir, "garbage.pem")
	writeFile(t, garbage, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
	bad := strings.Replace(strings.ReplaceAll(good, "{admin}", c.admin), e.path("partner"), garbage, 1)
	status, body := loadConfig(t, c, bad, "text/caddyfile")
	if status != http.StatusBadRequest || !bytes.Contains(body, []byte(`client \"partner\": certificate file `)) || !bytes.Contains(body, []byte(`garbage.pem: parsing certificate`)) {
		t.Fatalf("/load of a broken config: %d %s", status, body)
	}
	base := fmt.Sprintf("https://localhost:%d", port)
	if res := do(t, e.goClient(e.partner), base+"/a/x", nil); res.status != 200 || res.upstream.Get("X-Caller") != "partner" {
		t.Fatalf("after the refused reload, partner: %d", res.status)
	}
	if res := do(t, e.goClient(e.mallory), base+"/a/x", nil); res.status != 403 {
		t.Fatalf("after the refused reload, mallory: %d", res.status)
	}
}

// TestValidateWarnsWideFrom: a header `from` that lets in more than the load
// balancers (the private ranges, loopback, a /8) loads, with a warning that
// says what it covers.
func TestValidateWarnsWideFrom(t *testing.T) {
	e := newEnv(t)
	for from, covers := range map[string]string{
		"private_ranges": "private networks",
		"10.0.0.0/8":     "16777216 addresses",
		"127.0.0.1":      "local user",
	} {
		path := filepath.Join(t.TempDir(), "Caddyfile")
		writeFile(t, path, "{\n\tadmin off\n\tauto_https off\n}\nhttp://:8080 {\n\tclient_cert_auth {\n\t\ttrust_pool file "+e.path("root")+
			"\n\t\theader {\n\t\t\tfrom "+from+"\n\t\t}\n\t}\n\trespond ok\n}\n")
		cmd := exec.Command(caddyBin, "validate", "--config", path, "--adapter", "caddyfile")
		cmd.Env = append(cmd.Environ(), "HOME="+t.TempDir())
		raw, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("from %s: caddy validate refused:\n%s", from, raw)
		}
		if out := string(raw); !strings.Contains(out, "believes the certificate header from a wide range") || !strings.Contains(out, covers) {
			t.Fatalf("from %s: no warning saying it covers %q:\n%s", from, covers, out)
		}
	}
}

// TestValidateExpectedUnderscoreField: a header field with '_' loads once
// the server expects it (Caddy drops it otherwise: TestValidateErrors).
func TestValidateExpectedUnderscoreField(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, path, "{\n\tadmin off\n\tauto_https off\n\tservers {\n\t\texpected_underscore_headers X_SSL_Client_Cert\n\t}\n}\nhttp://:8080 {\n\tclient_cert_auth {\n\t\ttrust_pool file "+e.path("root")+
		"\n\t\theader X_SSL_Client_Cert {\n\t\t\tfrom 10.0.0.1\n\t\t}\n\t}\n\trespond ok\n}\n")
	cmd := exec.Command(caddyBin, "validate", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(cmd.Environ(), "HOME="+t.TempDir())
	if raw, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate refused:\n%s", raw)
	}
}
