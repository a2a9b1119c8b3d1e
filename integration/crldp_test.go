package integration

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// TestCRLDistributionPoint: with crl_from_certificates, the CRL named in
// the callers' certificates is fetched from its distribution point; a
// revoked caller is refused, and a CRL changed on the server is in force
// within one refresh.
func TestCRLDistributionPoint(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	crl := filepath.Join(e.dir, "root.crl")
	var hits atomic.Int32
	dp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.ServeFile(w, r, crl)
	}))
	t.Cleanup(dp.Close)
	opts := func(cn string) demopki.Options {
		return demopki.Options{CommonName: cn, CRLDistributionPoints: []string{dp.URL + "/root.crl"}}
	}
	good := demopki.Must(e.root.Issue(opts("dp-good")))
	revoked := demopki.Must(e.root.Issue(opts("dp-revoked")))
	if err := e.root.WriteCRL(crl, time.Now().Add(time.Hour), revoked); err != nil {
		t.Fatal(err)
	}
	c := startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
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
	client_cert_auth {
		trust_pool file %[4]s
		revocation {
			crl_from_certificates
			mode strict
			crl_timeout 2s
			crl_max_size 1MiB
			crl_cache_size 10
			reload 500ms
		}
	}
	reverse_proxy %[5]s
}
`, port, e.path("server"), e.path("server-key"), e.path("root"), be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("https://localhost:%d/", port)
	if res := do(t, e.goClient(good), base, nil); res.status != 200 {
		t.Fatalf("good caller: %d %s", res.status, res.body)
	}
	if res := do(t, e.goClient(revoked), base, nil); res.status != 403 {
		t.Fatalf("revoked caller: %d", res.status)
	}
	if hits.Load() == 0 {
		t.Fatal("the distribution point was never asked")
	}
	eventually(t, "refusal logged as revoked", func() error {
		for _, l := range logLines(c, "client certificate refused") {
			if l["reason"] == "revoked" && l["fingerprint"] == fingerprintHex(revoked) {
				return nil
			}
		}
		return fmt.Errorf("no log line with reason revoked")
	})

	// The good caller is revoked on the server: refused after the next
	// refresh (reload 500ms).
	if err := e.root.WriteCRL(crl, time.Now().Add(time.Hour), revoked, good); err != nil {
		t.Fatal(err)
	}
	eventually(t, "good caller refused after the CRL changed", func() error {
		if res := doRawE(e.goClient(good), base); res.err != nil || res.status != 403 {
			return fmt.Errorf("status %d %v", res.status, res.err)
		}
		return nil
	})
	eventually(t, "the good caller's refusal logged as revoked", func() error {
		for _, l := range logLines(c, "client certificate refused") {
			if l["reason"] == "revoked" && l["fingerprint"] == fingerprintHex(good) {
				return nil
			}
		}
		return fmt.Errorf("no log line with reason revoked")
	})
}

// dpCRLServer is a CRL distribution point whose CRL is replaced in memory
// (never half-written), and which can be made to hang: a hung request is
// answered only when the test ends, or abandoned when the reader gives up.
type dpCRLServer struct {
	*httptest.Server
	crl     atomic.Pointer[[]byte]
	hang    atomic.Bool
	release chan struct{}
	hits    sync.Map               // path -> *atomic.Int32
	newest  atomic.Pointer[[]byte] // the CRL last set; served counts it
	served  atomic.Int32           // answers that carried newest
	rootReq atomic.Pointer[hungRequest]
}

// hungRequest is one hanging request for the CRL in force: done closes
// when its reader gives up.
type hungRequest struct{ done chan struct{} }

func (h *hungRequest) pending() bool {
	select {
	case <-h.done:
		return false
	default:
		return true
	}
}

func newDPCRLServer(t *testing.T) *dpCRLServer {
	s := &dpCRLServer{release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := s.hits.LoadOrStore(r.URL.Path, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		if s.hang.Load() {
			h := &hungRequest{done: make(chan struct{})}
			if r.URL.Path == "/root.crl" {
				s.rootReq.Store(h)
			}
			select {
			case <-s.release:
			case <-r.Context().Done():
			}
			close(h.done)
			return
		}
		if r.URL.Path != "/root.crl" {
			http.NotFound(w, r)
			return
		}
		crl := s.crl.Load()
		if crl == s.newest.Load() {
			s.served.Add(1)
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		_, _ = w.Write(*crl)
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(s.release) }) // before Close, which waits for handlers
	return s
}

func (s *dpCRLServer) hitsOf(path string) int32 {
	if n, ok := s.hits.Load(path); ok {
		return n.(*atomic.Int32).Load()
	}
	return 0
}

// setCRL makes the distribution point serve a CRL of ca, valid for an
// hour, revoking revoked.
func (s *dpCRLServer) setCRL(t *testing.T, ca *demopki.Cert, revoked ...*demopki.Cert) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "root.crl")
	if err := ca.WriteCRL(path, time.Now().Add(time.Hour), revoked...); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s.newest.Store(&data)
	s.served.Store(0)
	s.crl.Store(&data)
}

// loadOutcome is one request of the load: who made it, what it got, and
// what the test knew when it was sent.
type loadOutcome struct {
	who    string
	status int
	err    error
	// when it was sent: the CRL revoking the victim was on the server, and
	// Caddy had logged that it was in force; the victim had been refused.
	afterSwap, afterReload, afterRefusal bool
}

// TestCRLDPReplacedUnderLoad: callers keep calling, several at once, while
// the CRL at their certificates' distribution point is replaced by one that
// revokes one of them. With crl_from_certificates the CRL is read again at
// the reload interval (1s here; sooner before its nextUpdate, an hour away):
// the refresh that reads the new CRL puts it in force, and every request of
// the revoked caller sent after Caddy logged it ("CRL reloaded") is refused,
// and none is let in again; no request of the others fails, before, during
// or after. Then the distribution point hangs: refreshes give up after
// crl_timeout and keep the CRL in force, a caller never seen before is
// answered from it while a refresh is still hanging, and callers whose
// certificates name another, hanging distribution point (a first read, on
// the request path) are answered (strict: 403 revocation_unknown) though it
// never answers, after one read for all of them, with the timeout in the
// log, while everyone else's requests go on.
func TestCRLDPReplacedUnderLoad(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	dp := newDPCRLServer(t)
	issue := func(cn, path string) *demopki.Cert {
		return demopki.Must(e.root.Issue(demopki.Options{CommonName: cn, CRLDistributionPoints: []string{dp.URL + path}}))
	}
	good1, good2, victim := issue("dp-load-good-1", "/root.crl"), issue("dp-load-good-2", "/root.crl"), issue("dp-load-victim", "/root.crl")
	dp.setCRL(t, e.root) // revokes nobody
	c := startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
	log {
		level DEBUG
		exclude http.log.error
	}
}
https://localhost:%[1]d {
	tls %[2]s %[3]s {
		client_auth {
			mode request
		}
	}
	client_cert_auth {
		trust_pool file %[4]s
		revocation {
			crl_from_certificates
			mode strict
			reload 1s
			crl_timeout 2s
			unknown_cache 1m
		}
	}
	reverse_proxy %[5]s
}
`, port, e.path("server"), e.path("server-key"), e.path("root"), be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("https://localhost:%d/", port)
	rootURL := dp.URL + "/root.crl"
	logged := func(msg string, match func(map[string]any) bool) int {
		n := 0
		for _, l := range logLines(c, msg) {
			if match(l) {
				n++
			}
		}
		return n
	}
	reloads := func() int {
		return logged("CRL reloaded", func(l map[string]any) bool { return l["crl"] == rootURL })
	}

	// The load: for each caller, one client that keeps its connection and
	// one that makes a new TLS connection for every request.
	var (
		swapped, reloadSeen, victimRefused atomic.Bool
		slowPending                        atomic.Bool
		duringSlow                         atomic.Int32 // others' requests answered while the slow first read hung
		mu                                 sync.Mutex
		outcomes                           []loadOutcome
		wg                                 sync.WaitGroup
	)
	stop := make(chan struct{})
	count := func(who string, pred func(loadOutcome) bool) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, o := range outcomes {
			if o.who == who && pred(o) {
				n++
			}
		}
		return n
	}
	for _, caller := range []struct {
		name string
		cert *demopki.Cert
	}{{"good1", good1}, {"good2", good2}, {"victim", victim}} {
		for _, client := range []*http.Client{e.goClientKeepAlive(caller.cert), e.goClient(caller.cert)} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					o := loadOutcome{who: caller.name, afterSwap: swapped.Load(), afterReload: reloadSeen.Load(), afterRefusal: victimRefused.Load()}
					res := doRawE(client, base)
					o.status, o.err = res.status, res.err
					if caller.name == "victim" && res.status == http.StatusForbidden {
						victimRefused.Store(true)
					}
					if caller.name != "victim" && res.err == nil && res.status == http.StatusOK && slowPending.Load() {
						duringSlow.Add(1)
					}
					mu.Lock()
					outcomes = append(outcomes, o)
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	// 1. Under load, the unchanged CRL is read again (no "CRL reloaded":
	// nothing changed) and everyone gets in.
	eventually(t, "the distribution point read again under load", func() error {
		if n := dp.hitsOf("/root.crl"); n < 3 {
			return fmt.Errorf("%d reads", n)
		}
		if count("victim", func(o loadOutcome) bool { return o.status == 200 }) < 5 {
			return fmt.Errorf("the victim got in fewer than 5 times")
		}
		return nil
	})
	if n := reloads(); n != 0 {
		t.Fatalf("%d \"CRL reloaded\" lines for an unchanged CRL", n)
	}

	// 2. The CRL on the server now revokes the victim.
	dp.setCRL(t, e.root, victim)
	swapped.Store(true)
	eventually(t, "the new CRL in force (\"CRL reloaded\")", func() error {
		if reloads() == 0 {
			return fmt.Errorf("not logged; the new CRL was served %d times", dp.served.Load())
		}
		return nil
	})
	reloadSeen.Store(true)
	eventually(t, "requests of every caller after the new CRL is in force", func() error {
		for _, who := range []string{"good1", "good2", "victim"} {
			if n := count(who, func(o loadOutcome) bool { return o.afterReload }); n < 5 {
				return fmt.Errorf("%s: %d", who, n)
			}
		}
		return nil
	})

	// 3. The distribution point hangs. Refreshes give up after crl_timeout
	// and keep the CRL in force.
	dp.hang.Store(true)
	eventually(t, "a refresh that timed out, logged", func() error {
		if logged("reading CRL; the last one read stays", func(l map[string]any) bool {
			err, _ := l["error"].(string)
			return l["crl"] == rootURL && strings.Contains(err, "context deadline exceeded")
		}) == 0 {
			return fmt.Errorf("no log line")
		}
		return nil
	})
	// A caller never seen before (no verdict cached) is answered from the
	// CRL in force while a refresh of that CRL still hangs. (If a request
	// ends after the hanging read gave up, it proves nothing: another one.)
	spanned := false
	for i := 0; i < 5 && !spanned; i++ {
		var hung *hungRequest
		eventually(t, "a refresh hanging", func() error {
			if hung = dp.rootReq.Load(); hung == nil || !hung.pending() {
				return fmt.Errorf("none now")
			}
			return nil
		})
		fresh := issue(fmt.Sprintf("dp-load-fresh-%d", i), "/root.crl")
		if res := doRawE(e.goClient(fresh), base); res.err != nil || res.status != 200 {
			t.Fatalf("a new caller while the refresh hangs: %d %v", res.status, res.err)
		}
		spanned = hung.pending()
	}
	if !spanned {
		t.Fatal("in 5 tries, no new caller was answered while the refresh of its CRL was hanging")
	}

	// 4. Callers whose certificates name a distribution point never read
	// before, which hangs: the first read is on the request path, one for
	// all of them, bounded by crl_timeout. In strict mode they are refused
	// as revocation_unknown, while the distribution point still has not
	// answered.
	newcomers := []*demopki.Cert{issue("dp-load-new-1", "/slow.crl"), issue("dp-load-new-2", "/slow.crl"), issue("dp-load-new-3", "/slow.crl")}
	before := duringSlow.Load()
	slowPending.Store(true)
	results := make([]rawResponse, len(newcomers))
	var nwg sync.WaitGroup
	for i, nc := range newcomers {
		nwg.Add(1)
		go func() {
			defer nwg.Done()
			results[i] = doRawE(e.goClient(nc), base)
		}()
	}
	nwg.Wait()
	slowPending.Store(false)
	for i, res := range results {
		if res.err != nil || res.status != http.StatusForbidden {
			t.Fatalf("newcomer %d, its distribution point hanging: %d %v", i+1, res.status, res.err)
		}
	}
	if n := dp.hitsOf("/slow.crl"); n != 1 {
		t.Fatalf("the hanging distribution point was asked %d times, want once for all", n)
	}
	if duringSlow.Load() == before {
		t.Fatal("no other caller's request was answered while the first read hung")
	}
	eventually(t, "the first read's timeout logged", func() error {
		if logged("revocation status unknown: reading the CRL of a distribution point", func(l map[string]any) bool {
			err, _ := l["error"].(string)
			return l["crl"] == dp.URL+"/slow.crl" && strings.Contains(err, "context deadline exceeded")
		}) == 0 {
			return fmt.Errorf("no log line")
		}
		return nil
	})
	for _, nc := range newcomers {
		if logged("client certificate refused", func(l map[string]any) bool {
			return l["reason"] == "revocation_unknown" && l["fingerprint"] == fingerprintHex(nc)
		}) == 0 {
			t.Fatalf("no revocation_unknown refusal logged for %s", nc.Cert.Subject.CommonName)
		}
	}
	stopLoad()

	// What the load saw.
	mu.Lock()
	defer mu.Unlock()
	var victimAfter, goods int
	for _, o := range outcomes {
		switch {
		case o.err != nil:
			t.Errorf("%s: request failed: %v", o.who, o.err)
		case o.who != "victim":
			goods++
			if o.status != http.StatusOK {
				t.Errorf("%s: %d (swapped %v, in force %v)", o.who, o.status, o.afterSwap, o.afterReload)
			}
		case !o.afterSwap && o.status != http.StatusOK:
			t.Errorf("victim refused (%d) before its revocation", o.status)
		case o.afterReload && o.status != http.StatusForbidden:
			t.Errorf("victim got %d after the CRL revoking it was in force", o.status)
		case o.afterRefusal && o.status != http.StatusForbidden:
			t.Errorf("victim let in again (%d) after a refusal", o.status)
		}
		if o.who == "victim" && o.afterReload {
			victimAfter++
		}
	}
	if victimAfter == 0 || goods == 0 {
		t.Fatalf("too little load: %d victim requests after the reload, %d of the others", victimAfter, goods)
	}
	if n := reloads(); n != 1 {
		t.Errorf("%d \"CRL reloaded\" lines, want one: the CRL changed once", n)
	}
	if logged("client certificate refused", func(l map[string]any) bool {
		return l["reason"] == "revoked" && l["fingerprint"] == fingerprintHex(victim)
	}) == 0 {
		t.Error("the victim's refusals not logged as revoked")
	}
	for _, g := range []*demopki.Cert{good1, good2} {
		if n := logged("client certificate refused", func(l map[string]any) bool { return l["fingerprint"] == fingerprintHex(g) }); n != 0 {
			t.Errorf("%s refused %d times", g.Cert.Subject.CommonName, n)
		}
	}
	t.Logf("%d requests of the others, %d of the victim after the new CRL was in force; the CRL point read %d times", goods, victimAfter, dp.hitsOf("/root.crl"))
}
