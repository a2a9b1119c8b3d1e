package integration

import (
	"fmt"
	"net"
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

// openFDs counts the open file descriptors of a process.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// goroutines counts the goroutines of a Caddy through its admin endpoint.
func goroutines(t *testing.T, c *caddyProc) int {
	t.Helper()
	n, err := goroutineCount(c)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// goroutineCount reads the goroutine count from Caddy's pprof endpoint.
func goroutineCount(c *caddyProc) (int, error) {
	resp, err := http.Get("http://" + c.admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var n int
	if _, err := fmt.Fscanf(resp.Body, "goroutine profile: total %d", &n); err != nil {
		return 0, fmt.Errorf("goroutine profile: %w", err)
	}
	return n, nil
}

// TestResilience: config reloads through the admin API during a steady load
// fail no request; a stalled and a dropping backend fail their own
// requests within the timeouts, the other profile's are unaffected; the
// gateway's goroutines and file descriptors return to their baseline.
func TestResilience(t *testing.T) {
	e := newEnv(t)
	clientCA := demopki.Must(demopki.NewCA("backend clients"))
	good := testpeer.StartBackend(t, "good", clientCA)
	gw := demopki.Must(clientCA.Issue(demopki.Options{CommonName: "gateway"}))
	gwCert, gwKey, err := gw.WriteFiles(e.dir, "gw")
	if err != nil {
		t.Fatal(err)
	}
	goodCA := filepath.Join(e.dir, "good-ca.pem")
	writeFile(t, goodCA, string(good.ServerCA.CertPEM()))

	// A backend that accepts and never answers, one that hangs up at once.
	stall, drop := listenBlackhole(t, false), listenBlackhole(t, true)
	port := freePort(t)
	site := func(version int) string {
		return reloadGlobals + fmt.Sprintf(`http://:%[1]d {
	bind 127.0.0.1
	client_cert_auth {
		mode optional
		client partner %[2]s
	}
	handle /good/* {
		reverse_proxy https://localhost:%[3]d {
			header_up X-Config-Version %[8]d
			transport ssl_profiles {
				keepalive 2s
				response_header_timeout 1s
				dial_timeout 1s
				profile localhost:%[3]d {
					tls_trust_pool file %[4]s
					tls_client_auth %[5]s %[6]s
				}
				profile 127.0.0.1 {
					tls_trust_pool file %[4]s
					tls_server_name localhost
					tls_client_auth %[5]s %[6]s
				}
			}
		}
	}
	handle /stall/* {
		reverse_proxy https://127.0.0.1:%[7]d {
			transport ssl_profiles {
				tls_timeout 1s
				response_header_timeout 1s
				profile 127.0.0.1 {
					tls_trust_pool file %[4]s
					tls_server_name localhost
				}
			}
		}
	}
	handle /drop/* {
		reverse_proxy https://127.0.0.1:%[9]d {
			transport ssl_profiles {
				profile 127.0.0.1 {
					tls_trust_pool file %[4]s
					tls_server_name localhost
				}
			}
		}
	}
}
`, port, e.path("partner"), good.Port, goodCA, gwCert, gwKey, stall, version, drop)
	}
	c := startCaddy(t, e, site(0), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	first := &http.Client{Timeout: 10 * time.Second}
	if res := doRaw(t, first, base+"/good/"); res.status != 200 {
		t.Fatalf("before the load: %d %s", res.status, res.body)
	}
	first.CloseIdleConnections()
	// The baseline: once the idle connections of that request have timed
	// out (2s on both sides here).
	time.Sleep(3 * time.Second)
	baseGoroutines, baseFDs := goroutines(t, c), openFDs(t, c.pid)

	t.Run("reloads under load", func(t *testing.T) {
		ok, resets := reloadsUnderLoad(t, c, base+"/good/", "good gateway", site)
		t.Logf("%d requests, %d connections closed under a request and retried", ok, resets)
	})

	t.Run("the same reloads through vanilla Caddy", func(t *testing.T) {
		// The same load and reloads with Caddy's own http transport and no
		// module of this plugin, for comparison of the connections closed
		// under a request (see above).
		vport := freePort(t)
		vanilla := func(version int) string {
			return reloadGlobals + fmt.Sprintf(`http://:%[1]d {
	bind 127.0.0.1
	reverse_proxy https://localhost:%[2]d {
		header_up X-Config-Version %[6]d
		transport http {
			keepalive 2s
			tls_trust_pool file %[3]s
			tls_client_auth %[4]s %[5]s
		}
	}
}
`, vport, good.Port, goodCA, gwCert, gwKey, version)
		}
		vc := startCaddy(t, e, vanilla(0), "caddyfile", fmt.Sprintf("127.0.0.1:%d", vport))
		ok, resets := reloadsUnderLoad(t, vc, fmt.Sprintf("http://127.0.0.1:%d/", vport), "good gateway", vanilla)
		t.Logf("vanilla Caddy: %d requests, %d connections closed under a request and retried", ok, resets)
	})

	t.Run("stalled and dropping backends", func(t *testing.T) {
		var wg sync.WaitGroup
		results := map[string]rawResponse{}
		var mu sync.Mutex
		for _, path := range []string{"/stall/", "/drop/", "/good/"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}}
				defer client.CloseIdleConnections()
				res := doRawE(client, base+path)
				mu.Lock()
				results[path] = res
				mu.Unlock()
			}()
		}
		wg.Wait()
		if r := results["/stall/"]; r.err != nil || (r.status != 502 && r.status != 504) {
			t.Fatalf("stalled backend: %d %v", r.status, r.err)
		}
		if r := results["/drop/"]; r.err != nil || r.status != 502 {
			t.Fatalf("dropping backend: %d %v", r.status, r.err)
		}
		if r := results["/good/"]; r.err != nil || r.status != 200 {
			t.Fatalf("the good backend beside them: %d %v", r.status, r.err)
		}
	})

	t.Run("back to baseline", func(t *testing.T) {
		http.DefaultClient.CloseIdleConnections() // the admin calls
		eventually(t, "goroutines and file descriptors back to the baseline", func() error {
			g, fds := goroutines(t, c), openFDs(t, c.pid)
			// A little slack: the admin request itself.
			if g > baseGoroutines+4 || fds > baseFDs+2 {
				return fmt.Errorf("goroutines %d (baseline %d), file descriptors %d (baseline %d)", g, baseGoroutines, fds, baseFDs)
			}
			return nil
		})
	})
}

// reloadGlobals are the global options of the configs reloaded under load:
// the gateway closes clients' idle connections after 2s.
const reloadGlobals = `{
	admin {admin}
	auto_https off
	servers {
		timeouts {
			idle 2s
		}
	}
}
`

// reloadsUnderLoad loads config(1) to config(20) into c through the admin
// API while 4 keep-alive clients GET url, and fails the test unless every
// answer is 200 with body want. It returns how many requests were answered
// and how many met a connection closed under them and were retried.
func reloadsUnderLoad(t *testing.T, c *caddyProc, url, want string, config func(version int) string) (ok, resets int64) {
	t.Helper()
	var okN, failed, resetN atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res := doRawE(client, url)
				if res.err != nil {
					// A connection closed under the request as the listener
					// passes from the old server to the new (Caddy's own
					// reload, with or without this plugin): the request
					// never reached a handler. Clients and load balancers
					// retry such GETs; so does this one, once. Every answer
					// the gateway gives must be right.
					resetN.Add(1)
					res = doRawE(client, url)
				}
				if res.err != nil || res.status != 200 || res.body != want {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q %v", res.status, res.body, res.err))
				} else {
					okN.Add(1)
				}
			}
		}()
	}
	var once sync.Once
	stopLoad := func() { once.Do(func() { close(stop); wg.Wait() }) }
	defer stopLoad() // also when a reload fails the test
	for i := 1; i <= 20; i++ {
		cfg := strings.ReplaceAll(config(i), "{admin}", c.admin)
		if status, body := loadConfig(t, c, cfg, "text/caddyfile"); status != 200 {
			t.Errorf("reload %d: %d %s", i, status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopLoad()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during 20 reloads; first: %v", failed.Load(), failed.Load()+okN.Load(), firstErr.Load())
	}
	if okN.Load() < 100 {
		t.Fatalf("only %d requests ran", okN.Load())
	}
	return okN.Load(), resetN.Load()
}

// listenBlackhole listens on loopback; it returns the port. Connections are
// held open and never answered, or (drop) closed at once.
func listenBlackhole(t *testing.T, drop bool) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			if drop {
				conn.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().(*net.TCPAddr).Port
}
