package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// gatewayEnv is the PKI of the gateway-to-backend tests.
type gatewayEnv struct {
	*env
	caA, caB, caN *demopki.Cert // the client CAs the backends require
	a, b          *testpeer.Backend
	nginxPort     int
	nginxCA       *demopki.Cert
}

func newGatewayEnv(t *testing.T) *gatewayEnv {
	g := &gatewayEnv{env: newEnv(t)}
	g.caA = demopki.Must(demopki.NewCA("backend A clients"))
	g.caB = demopki.Must(demopki.NewCA("backend B clients"))
	g.caN = demopki.Must(demopki.NewCA("nginx clients"))
	g.a = testpeer.StartBackend(t, "a", g.caA)
	g.b = testpeer.StartBackend(t, "b", g.caB)
	g.nginxCA = demopki.Must(demopki.NewCA("nginx server CA"))
	nginxServer := demopki.Must(g.nginxCA.Issue(demopki.Options{CommonName: "localhost", DNSNames: []string{"localhost"}}))
	for name, c := range map[string]*demopki.Cert{
		"gw-a":  demopki.Must(g.caA.Issue(demopki.Options{CommonName: "gateway-for-a"})),
		"gw-a2": demopki.Must(g.caA.Issue(demopki.Options{CommonName: "gateway-for-a-v2"})),
		"gw-n":  demopki.Must(g.caN.Issue(demopki.Options{CommonName: "gateway-for-nginx"})),
		"srv-a": g.a.ServerCA,
		"srv-b": g.b.ServerCA,
		"srv-n": g.nginxCA,
		"nginx": nginxServer,
		"ca-n":  g.caN,
	} {
		cert, key, err := c.WriteFiles(g.dir, name)
		if err != nil {
			t.Fatal(err)
		}
		g.files[name], g.files[name+"-key"] = cert, key
	}
	// Backend B's identities, one per caller alias, in a JKS (Apigee's
	// KeyStore with a KeyAlias per request).
	g.files["callers.jks"] = filepath.Join(g.dir, "callers.jks")
	err := demopki.WriteJKS(g.files["callers.jks"], "changeit", "changeit",
		demopki.JKSEntry{Alias: "alice", Cert: demopki.Must(g.caB.Issue(demopki.Options{CommonName: "alice-at-b"})), Key: true},
		demopki.JKSEntry{Alias: "partner", Cert: demopki.Must(g.caB.Issue(demopki.Options{CommonName: "partner-at-b"})), Key: true})
	if err != nil {
		t.Fatal(err)
	}

	g.nginxPort = freePort(t)
	nginxAddr := fmt.Sprintf("127.0.0.1:%d", g.nginxPort)
	startNginx(t, fmt.Sprintf(`
	server {
		listen %s ssl;
		server_name localhost;
		ssl_certificate %s;
		ssl_certificate_key %s;
		ssl_client_certificate %s;
		ssl_verify_client on;
		location / {
			return 200 "nginx $ssl_client_s_dn";
		}
	}
`, nginxAddr, g.path("nginx"), g.path("nginx-key"), g.path("ca-n")), nginxAddr)
	return g
}

// TestProfilesEndToEnd: one gateway, three mTLS backends (two Go servers
// and nginx with ssl_verify_client on), each reached with its own profile's
// trust and identity; backend B with the caller's own identity, picked by
// the alias client_cert_auth gave it.
func TestProfilesEndToEnd(t *testing.T) {
	g := newGatewayEnv(t)
	port := freePort(t)
	profilesFile := filepath.Join(g.dir, "profiles.json")
	writeFile(t, profilesFile, fmt.Sprintf(`{"profiles":[{"servers":["localhost:%d"],
		"trust_pool":{"provider":"file","pem_files":["%s"]},
		"client_certificate_file":"%s","client_key_file":"%s"}]}`,
		g.a.Port, g.path("srv-a"), g.path("gw-a"), g.path("gw-a-key")))
	cfg := fmt.Sprintf(`{
	admin {admin}
	auto_https off
	metrics
}
(profiles) {
	transport ssl_profiles {
		profile localhost:%[2]d {
			tls_trust_pool file %[3]s
			tls_client_keystore %[4]s password {env.TEST_CALLERS_PASS} alias {http.auth.user.alias} default_alias partner
		}
		profile localhost:%[5]d {
			tls_trust_pool file %[6]s
			tls_client_auth %[7]s %[8]s
			tls_min_version tls1.2
		}
		profile 127.0.0.1:%[9]d {
			tls_trust_pool file %[10]s
			tls_server_name localhost
			tls_client_auth %[7]s %[8]s
		}
		profiles_file %[11]s reload 200ms
	}
}
https://localhost:%[1]d {
	tls %[12]s %[13]s {
		client_auth {
			mode request
		}
	}
	client_cert_auth {
		client alice %[14]s
		client partner %[15]s tier gold
		client carol %[17]s
	}
	handle /a/* {
		reverse_proxy https://localhost:%[16]d {
			import profiles
		}
	}
	handle /b/* {
		reverse_proxy https://localhost:%[2]d {
			import profiles
			health_uri /health
			health_interval 100ms
		}
	}
	handle /n/* {
		reverse_proxy https://localhost:%[5]d {
			import profiles
		}
	}
	handle /wrong-trust/* {
		reverse_proxy https://127.0.0.1:%[9]d {
			import profiles
		}
	}
}
`, port, g.b.Port, g.path("srv-b"), g.files["callers.jks"],
		g.nginxPort, g.path("srv-n"), g.path("gw-n"), g.path("gw-n-key"),
		g.a.Port, g.path("srv-b"), profilesFile,
		g.path("server"), g.path("server-key"), g.path("alice"), g.path("partner"), g.a.Port, g.path("mallory"))
	t.Setenv("TEST_CALLERS_PASS", "changeit")
	c := startCaddy(t, g.env, cfg, "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("https://localhost:%d", port)

	get := func(caller *demopki.Cert, path string) (int, string) {
		t.Helper()
		res := doRaw(t, g.goClient(caller), base+path)
		return res.status, res.body
	}

	t.Run("each backend its profile", func(t *testing.T) {
		for _, tc := range []struct {
			caller *demopki.Cert
			path   string
			want   string
		}{
			{g.alice, "/a/x", "a gateway-for-a"},  // profile from the profiles file
			{g.alice, "/b/x", "b alice-at-b"},     // the caller's own identity
			{g.partner, "/b/x", "b partner-at-b"}, // the other caller's
			{g.alice, "/n/x", "nginx CN=gateway-for-nginx"},
		} {
			status, body := get(tc.caller, tc.path)
			if status != 200 || body != tc.want {
				t.Fatalf("%s as %s: %d %q, want %q", tc.path, tc.caller.Cert.Subject.CommonName, status, body, tc.want)
			}
		}
		// Backend A's certificate is not in the trust pool of the profile
		// for its second address: refused.
		if status, _ := get(g.alice, "/wrong-trust/x"); status != 502 {
			t.Fatalf("untrusted backend: %d, want 502", status)
		}
		if n := metricValue(t, c, fmt.Sprintf(`caddy_mtls_upstream_handshakes_total{identity="default",profile="127.0.0.1:%d",result="error"}`, g.a.Port)); n < 1 {
			t.Fatalf("failed handshakes counted: %v", n)
		}
		if n := metricValue(t, c, fmt.Sprintf(`caddy_mtls_upstream_handshakes_total{identity="default",profile="localhost:%d",result="ok"}`, g.nginxPort)); n < 1 {
			t.Fatalf("handshakes with nginx counted: %v", n)
		}
		if left := metricValue(t, c, fmt.Sprintf(`caddy_mtls_certificate_expiry_seconds{kind="backend",name="localhost:%d"}`, g.nginxPort)); left < 20*3600 {
			t.Fatalf("expiry of nginx's certificate: %v", left)
		}
		eventually(t, "log line for the untrusted backend", func() error {
			if !strings.Contains(c.Logs(), "certificate signed by unknown authority") {
				return fmt.Errorf("no log line says why the backend was refused")
			}
			return nil
		})
	})

	t.Run("HTTP/2 and health checks through the profile", func(t *testing.T) {
		res := doRaw(t, g.goClient(g.alice), base+"/b/x")
		if proto := res.header.Get("X-Backend-Proto"); proto != "HTTP/2.0" {
			t.Fatalf("backend B was reached over %q, want HTTP/2.0", proto)
		}
		// Health checks carry no caller: they use the profile's default
		// identity (default_alias).
		eventually(t, "a health check reached backend B", func() error {
			if cn := g.b.HealthCN(); cn != "partner-at-b" {
				return fmt.Errorf("health check client %q", cn)
			}
			return nil
		})
		if lines := logLines(c, "HTTP request failed"); len(lines) > 0 {
			t.Fatalf("health checks failed: %v", lines[0])
		}
	})

	t.Run("concurrent callers keep their identities", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan string, 100)
		for i := 0; i < 100; i++ {
			caller, want := g.alice, "b alice-at-b"
			if i%2 == 1 {
				caller, want = g.partner, "b partner-at-b"
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				res := doRawE(g.goClientKeepAlive(caller), base+"/b/x")
				if res.err != nil || res.status != 200 || res.body != want {
					errs <- fmt.Sprintf("%s: %d %q %v", want, res.status, res.body, res.err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatal(e)
		}
	})

	t.Run("profiles file changes under load", func(t *testing.T) {
		var ok, failed atomic.Int64
		var sawV2 atomic.Bool
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := g.goClientKeepAlive(g.alice)
				for {
					select {
					case <-stop:
						return
					default:
					}
					res := doRawE(client, base+"/a/x")
					switch {
					case res.err != nil || res.status != 200:
						failed.Add(1)
					case res.body == "a gateway-for-a-v2":
						sawV2.Store(true)
						ok.Add(1)
					default:
						ok.Add(1)
					}
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		// A broken file first: the last good profiles keep serving.
		writeFile(t, profilesFile, `{"profiles":[{"servers":["localhost:1"],"trust_pool":`)
		eventually(t, "broken profiles file logged and counted", func() error {
			if len(logLines(c, "profiles file rejected; the last good profiles stay in force")) == 0 {
				return fmt.Errorf("no log line yet")
			}
			// Each reverse_proxy of the config has its transport, watching
			// the file: each counts it.
			if n := metricValue(t, c, `caddy_mtls_profiles_file_rejections_total{file="`+profilesFile+`"}`); n < 1 {
				return fmt.Errorf("counted %v times", n)
			}
			return nil
		})
		// Then a good one with a new identity for backend A.
		tmp := profilesFile + ".tmp"
		writeFile(t, tmp, fmt.Sprintf(`{"profiles":[{"servers":["localhost:%d"],
			"trust_pool":{"provider":"file","pem_files":["%s"]},
			"client_certificate_file":"%s","client_key_file":"%s"}]}`,
			g.a.Port, g.path("srv-a"), g.path("gw-a2"), g.path("gw-a2-key")))
		if err := os.Rename(tmp, profilesFile); err != nil {
			t.Fatal(err)
		}
		eventually(t, "new identity in use", func() error {
			if !sawV2.Load() {
				return fmt.Errorf("backend A has not seen the new identity")
			}
			return nil
		})
		close(stop)
		wg.Wait()
		if failed.Load() != 0 {
			t.Fatalf("%d of %d requests failed during the swaps", failed.Load(), failed.Load()+ok.Load())
		}
		if ok.Load() < 50 {
			t.Fatalf("only %d requests ran", ok.Load())
		}
	})

	t.Run("unknown alias", func(t *testing.T) {
		// carol is accepted by client_cert_auth, but the keystore has no
		// key pair for her: 502 with the reason in the log, never another
		// identity.
		if status, body := get(g.mallory, "/b/x"); status != 502 {
			t.Fatalf("caller without a key pair: %d %q", status, body)
		}
		eventually(t, "log line for the unknown alias", func() error {
			if !strings.Contains(c.Logs(), `no client key pair \"carol\" in the keystore`) {
				return fmt.Errorf("no log line names the missing key pair")
			}
			return nil
		})
	})
}

// rawResponse is a response read as text.
type rawResponse struct {
	status int
	header http.Header
	body   string
	err    error
}

func doRawE(client *http.Client, url string) rawResponse {
	resp, err := client.Get(url)
	if err != nil {
		return rawResponse{err: err}
	}
	defer resp.Body.Close()
	return readRaw(resp)
}

// readRaw reads resp's status, header and body (at most 1 MiB).
func readRaw(resp *http.Response) rawResponse {
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: string(body), err: err}
}

func doRaw(t *testing.T, client *http.Client, url string) rawResponse {
	t.Helper()
	res := doRawE(client, url)
	if res.err != nil {
		t.Fatalf("GET %s: %v", url, res.err)
	}
	return res
}

// goClientKeepAlive is goClient with connection reuse.
func (e *env) goClientKeepAlive(cert *demopki.Cert) *http.Client {
	c := e.goClient(cert)
	c.Transport.(*http.Transport).DisableKeepAlives = false
	return c
}
