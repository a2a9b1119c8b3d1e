package integration

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// TestVerifyHostnameOff: nginx serves a self-signed certificate that names
// it only in its common name (`openssl req -x509 -subj /CN=localhost`, as
// `keytool -genkeypair -dname CN=localhost` makes one), which Go refuses
// unless the name check is off. With `tls_verify_hostname off` (in the
// profile, at the transport for upstreams without a profile, or as
// verify_hostname in a profiles file) the gateway reaches it; its chain is
// still verified, so a profile that does not trust it answers 502 with the
// reason in the log.
func TestVerifyHostnameOff(t *testing.T) {
	e := newEnv(t)
	cnPEM, cnKey := filepath.Join(e.dir, "cn-only.pem"), filepath.Join(e.dir, "cn-only-key.pem")
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-subj", "/CN=localhost", "-days", "2", "-keyout", cnKey, "-out", cnPEM).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req: %v: %s", err, out)
	}
	if out, err := exec.Command("openssl", "x509", "-in", cnPEM, "-noout", "-ext", "subjectAltName").CombinedOutput(); err != nil || strings.Contains(string(out), "DNS:") {
		t.Fatalf("the backend's certificate has a SAN: %s %v", out, err)
	}
	other, _, err := demopki.Must(demopki.NewCA("not the backend's CA")).WriteFiles(e.dir, "not-backend-ca")
	if err != nil {
		t.Fatal(err)
	}

	nginxPort := freePort(t)
	nginxAddr := fmt.Sprintf("127.0.0.1:%d", nginxPort)
	startNginx(t, fmt.Sprintf(`
	server {
		listen %s ssl;
		server_name localhost;
		ssl_certificate %s;
		ssl_certificate_key %s;
		location / {
			return 200 "cn-only nginx";
		}
	}
`, nginxAddr, cnPEM, cnKey), nginxAddr)

	profilesFile := filepath.Join(e.dir, "profiles.json")
	writeFile(t, profilesFile, fmt.Sprintf(`{"profiles":[{"servers":["localhost:%d"],
		"trust_pool":{"provider":"file","pem_files":["%s"]},"verify_hostname":false}]}`, nginxPort, cnPEM))
	port := freePort(t)
	cfg := fmt.Sprintf(`{
	admin {admin}
	auto_https off
}
http://127.0.0.1:%[1]d {
	handle /off/* {
		reverse_proxy https://localhost:%[2]d {
			transport ssl_profiles {
				profile localhost:%[2]d {
					tls_trust_pool file %[3]s
					tls_verify_hostname off
				}
			}
		}
	}
	handle /on/* {
		reverse_proxy https://localhost:%[2]d {
			transport ssl_profiles {
				profile localhost:%[2]d {
					tls_trust_pool file %[3]s
				}
			}
		}
	}
	handle /untrusted/* {
		reverse_proxy https://localhost:%[2]d {
			transport ssl_profiles {
				profile localhost:%[2]d {
					tls_trust_pool file %[4]s
					tls_verify_hostname off
				}
			}
		}
	}
	handle /base-off/* {
		reverse_proxy https://localhost:%[2]d {
			transport ssl_profiles {
				tls_trust_pool file %[3]s
				tls_verify_hostname off
			}
		}
	}
	handle /file/* {
		reverse_proxy https://localhost:%[2]d {
			transport ssl_profiles {
				profiles_file %[5]s
			}
		}
	}
}
`, port, nginxPort, cnPEM, other, profilesFile)
	c := startCaddy(t, e, cfg, "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))

	client := &http.Client{Timeout: 15 * time.Second}
	for _, tc := range []struct {
		path   string
		status int
		body   string // in the answer
		log    string // in Caddy's log
	}{
		{"/off/", http.StatusOK, "cn-only nginx", ""},
		{"/base-off/", http.StatusOK, "cn-only nginx", ""},
		{"/file/", http.StatusOK, "cn-only nginx", ""},
		{"/on/", http.StatusBadGateway, "", "certificate relies on legacy Common Name field"},
		{"/untrusted/", http.StatusBadGateway, "", "certificate signed by unknown authority"},
	} {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, tc.path))
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.body) {
			t.Fatalf("GET %s: %d %q, want %d %q", tc.path, resp.StatusCode, body, tc.status, tc.body)
		}
		if tc.log != "" {
			eventually(t, "the reason of "+tc.path+" in the log", func() error {
				if !strings.Contains(c.Logs(), tc.log) {
					return fmt.Errorf("no %q in the log", tc.log)
				}
				return nil
			})
		}
	}
}
