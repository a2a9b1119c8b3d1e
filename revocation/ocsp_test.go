package revocation

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/crypto/ocsp"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// startOCSPResponder runs `openssl ocsp` as the CA's responder on loopback,
// answering from an index of the good and revoked certificates. It returns
// the responder's URL and a function that stops it.
func startOCSPResponder(t *testing.T, ca *demopki.Cert, port int, good, revoked []*demopki.Cert) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	caPath, keyPath, err := ca.WriteFiles(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	var index strings.Builder
	line := func(status string, c *demopki.Cert, revokedAt string) {
		fmt.Fprintf(&index, "%s\t%s\t%s\t%X\tunknown\t/CN=%s\n", status, c.Cert.NotAfter.UTC().Format("060102150405Z"), revokedAt, c.Cert.SerialNumber, c.Cert.Subject.CommonName)
	}
	for _, c := range good {
		line("V", c, "")
	}
	for _, c := range revoked {
		line("R", c, time.Now().Add(-time.Hour).UTC().Format("060102150405Z"))
	}
	indexPath := filepath.Join(dir, "index.txt")
	if err := os.WriteFile(indexPath, []byte(index.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("openssl", "ocsp", "-index", indexPath, "-port", fmt.Sprint(port), // openssl 3 cannot bind one address; the test talks to 127.0.0.1 only

		"-CA", caPath, "-rsigner", caPath, "-rkey", keyPath, "-ndays", "1")
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("openssl ocsp: %v (openssl is needed: apt-get install -y openssl)", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	// Wait for it to say it listens: a connection made only to probe it
	// would stall it (it serves one connection at a time, with no timeout).
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "waiting for OCSP client connections") {
				signalled = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("openssl ocsp did not start")
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port), stop
}

func TestOCSP(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("OCSP CA"))
	good := demopki.Must(ca.Issue(demopki.Options{CommonName: "good"}))
	revoked := demopki.Must(ca.Issue(demopki.Options{CommonName: "revoked"}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	// A certificate that names the responder itself (AIA).
	withAIA := demopki.Must(ca.Issue(demopki.Options{CommonName: "aia", OCSPServer: []string{fmt.Sprintf("http://127.0.0.1:%d", port)}}))
	url, stop := startOCSPResponder(t, ca, port, []*demopki.Cert{good, withAIA}, []*demopki.Cert{revoked})
	unknown := demopki.Must(ca.Issue(demopki.Options{CommonName: "not-in-index"}))

	strict, err := New(context.Background(), Config{Mode: "strict", OCSP: true, OCSPResponder: url}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if reason, until := strict.Check(chain(revoked, ca), now); reason != Revoked || until.Before(now) {
		t.Fatalf("revoked: %q until %v", reason, until)
	}
	if reason, _ := strict.Check(chain(good, ca), now); reason != "" {
		t.Fatalf("good: %q", reason)
	}
	if reason, _ := strict.Check(chain(unknown, ca), now); reason != Unknown {
		t.Fatalf("unknown to the responder, strict: %q", reason)
	}
	aia, err := New(context.Background(), Config{Mode: "strict", OCSP: true}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := aia.Check(chain(withAIA, ca), now); reason != "" {
		t.Fatalf("responder from the AIA: %q", reason)
	}
	if reason, _ := aia.Check(chain(good, ca), now); reason != Unknown {
		t.Fatalf("no AIA and no responder configured, strict: %q", reason)
	}

	// The responder stops: answers already had still hold (cached until
	// their nextUpdate); new questions are unknown, refused in strict mode
	// and let through in ignore_ca_error mode.
	soft, err := New(context.Background(), Config{OCSP: true, OCSPResponder: url, OCSPTimeout: 0}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if reason, _ := strict.Check(chain(revoked, ca), now); reason != Revoked {
		t.Fatalf("cached revoked answer: %q", reason)
	}
	if reason, _ := strict.Check(chain(withAIA, ca), now); reason != Unknown {
		t.Fatalf("responder down, strict: %q", reason)
	}
	if reason, _ := soft.Check(chain(revoked, ca), now); reason != "" {
		t.Fatalf("responder down, ignore_ca_error: %q", reason)
	}
}

// ocspResponse returns an OCSP response signed by ca giving cert's status,
// current until nextUpdate (none if zero).
func ocspResponse(t testing.TB, ca, cert *demopki.Cert, status int, nextUpdate time.Time) []byte {
	t.Helper()
	tmpl := ocsp.Response{Status: status, SerialNumber: cert.Cert.SerialNumber, ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: nextUpdate}
	if status == ocsp.Revoked {
		tmpl.RevokedAt = time.Now().Add(-time.Hour)
	}
	der, err := ocsp.CreateResponse(ca.Cert, ca.Cert, tmpl, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// One failure of the responder, or one "unknown" answer, refuses a good
// certificate in strict mode only for unknown_cache, and the refusal tells
// callers not to remember it longer.
func TestOCSPUnknownIsShortLived(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("OCSP CA"))
	good := demopki.Must(ca.Issue(demopki.Options{CommonName: "good"}))
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch hits.Add(1) {
		case 1:
			http.Error(w, "busy", http.StatusInternalServerError)
		case 2:
			w.Write(ocspResponse(t, ca, good, ocsp.Unknown, time.Time{}))
		default:
			w.Write(ocspResponse(t, ca, good, ocsp.Good, time.Now().Add(time.Hour)))
		}
	}))
	defer srv.Close()
	c, err := New(context.Background(), Config{Mode: "strict", OCSP: true, OCSPResponder: srv.URL}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	step := func(at time.Duration, want string, wantHits int32) {
		t.Helper()
		when := now.Add(at)
		reason, until := c.Check(chain(good, ca), when)
		if reason != want {
			t.Fatalf("at +%s: %q, want %q", at, reason, want)
		}
		if reason == Unknown && (until.IsZero() || until.After(when.Add(DefaultUnknownCache))) {
			t.Fatalf("at +%s: an unknown status holds until %v, more than %s", at, until, DefaultUnknownCache)
		}
		if n := hits.Load(); n != wantHits {
			t.Fatalf("at +%s: the responder was asked %d times, want %d", at, n, wantHits)
		}
	}
	step(0, Unknown, 1)             // HTTP 500
	step(time.Second, Unknown, 1)   // remembered, not asked again
	step(6*time.Second, Unknown, 2) // asked again: "unknown"
	step(12*time.Second, "", 3)     // asked again: good
	step(20*time.Second, "", 3)     // remembered until its nextUpdate
}

// unknown_cache sets how long an unknown status is remembered.
func TestOCSPUnknownCacheConfigured(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("OCSP CA"))
	good := demopki.Must(ca.Issue(demopki.Options{CommonName: "good"}))
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer srv.Close()
	c, err := New(context.Background(), Config{Mode: "strict", OCSP: true, OCSPResponder: srv.URL, UnknownCache: caddy.Duration(time.Minute)}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, at := range []time.Duration{0, 59 * time.Second, 61 * time.Second} {
		if reason, _ := c.Check(chain(good, ca), now.Add(at)); reason != Unknown {
			t.Fatalf("at +%s: %q", at, reason)
		}
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("the responder was asked %d times, want 2", n)
	}
}

// Concurrent first lookups of one certificate make one query, even when the
// responder hangs.
func TestOCSPConcurrentLookupsCoalesced(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("OCSP CA"))
	good := demopki.Must(ca.Issue(demopki.Options{CommonName: "good"}))
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body) // else the server does not see the client go
		<-r.Context().Done()        // hangs until the query times out
	}))
	defer srv.Close()
	c, err := New(context.Background(), Config{Mode: "strict", OCSP: true, OCSPResponder: srv.URL,
		OCSPTimeout: caddy.Duration(time.Second), UnknownCache: caddy.Duration(time.Hour)}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var wg sync.WaitGroup
	reasons := make([]string, 20)
	for i := range reasons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reasons[i], _ = c.Check(chain(good, ca), now)
		}()
	}
	wg.Wait()
	for i, r := range reasons {
		if r != Unknown {
			t.Errorf("lookup %d: %q", i, r)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("the responder was asked %d times, want 1", n)
	}
}

// Unloading the config cancels an OCSP query to a responder that hangs.
func TestOCSPCancelled(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("OCSP CA"))
	good := demopki.Must(ca.Issue(demopki.Options{CommonName: "good"}))
	got := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // else the server does not see the client go
		got <- struct{}{}
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := New(ctx, Config{Mode: "strict", OCSP: true, OCSPResponder: srv.URL, OCSPTimeout: caddy.Duration(time.Minute)}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-got
		cancel()
	}()
	_, err = c.askOCSP(good.Cert, ca.Cert, time.Now())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want it to wrap context.Canceled", err)
	}
}
