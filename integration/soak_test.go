//go:build soak

package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// The log messages the soak counts (see upstream/file.go,
// revocation/revocation.go and internal/safe).
const (
	msgProfilesRejected = "profiles file rejected; the last good profiles stay in force"
	msgProfilesReloaded = "profiles file reloaded"
	msgCRLReadError     = "reading CRL; the last one read stays"
	msgDecodePanic      = "recovered a panic while decoding"
	msgBackgroundPanic  = "recovered a panic in a background task; its last good state stays"
)

// soakHugeSize is over every bound of the files swapped: profiles files and
// CRLs (16 MiB), keystores (4 MiB).
const soakHugeSize = 17 << 20

// soakHugeJKS is a JKS that claims huge lengths: one private key entry with
// a 1-byte key and 2^32-1 certificates in its chain.
var soakHugeJKS = []byte{
	0xFE, 0xED, 0xFE, 0xED, // magic
	0, 0, 0, 2, // version
	0, 0, 0, 1, // entries
	0, 0, 0, 1, // tag: private key
	0, 1, 'a', // alias
	0, 0, 0, 0, 0, 0, 0, 0, // timestamp
	0, 0, 0, 1, 'k', // key
	0xFF, 0xFF, 0xFF, 0xFF, // chain length
}

// soakHostile is one way of spoiling a file: make writes it at tmp (a path
// beside the target, renamed over it afterwards).
type soakHostile struct {
	name string
	make func(s *soakRun, tmp string, good []byte) error
}

var soakHostiles = []soakHostile{
	{"garbage bytes", func(s *soakRun, tmp string, _ []byte) error {
		b := make([]byte, 1+s.rng.IntN(4096))
		for i := range b {
			b[i] = byte(s.rng.UintN(256))
		}
		return os.WriteFile(tmp, b, 0o600)
	}},
	{"truncated copy", func(s *soakRun, tmp string, good []byte) error {
		// At most half: a PEM file loses its END line, JSON and DER their end.
		return os.WriteFile(tmp, good[:1+s.rng.IntN(len(good)/2)], 0o600)
	}},
	{"FIFO", func(_ *soakRun, tmp string, _ []byte) error {
		return syscall.Mkfifo(tmp, 0o600) // nobody ever writes to it
	}},
	{"huge file", func(s *soakRun, tmp string, _ []byte) error {
		return os.Link(s.huge, tmp)
	}},
	{"directory", func(_ *soakRun, tmp string, _ []byte) error {
		if err := os.Mkdir(tmp, 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(tmp, "inside"), []byte("a file in a directory"), 0o600)
	}},
	{"bad-iv.p12", func(s *soakRun, tmp string, _ []byte) error {
		return os.WriteFile(tmp, s.badIV, 0o600)
	}},
	{"JKS claiming huge lengths", func(_ *soakRun, tmp string, _ []byte) error {
		return os.WriteFile(tmp, soakHugeJKS, 0o600)
	}},
}

// soakTarget is a file the gateway re-reads, and its good content.
type soakTarget struct {
	name, path string
	good       []byte
	// vary: each restore appends a different run of spaces to good (same
	// meaning). The watcher compares the profiles file with the one last
	// tried: after an unreadable one (FIFO, directory, huge) the very same
	// good bytes are no change, and would log no reload to wait for.
	vary     bool
	restores int
}

// soakRun is the state of one soak.
type soakRun struct {
	t     *testing.T
	c     *caddyProc
	rng   *rand.Rand
	huge  string // a file of soakHugeSize bytes, hard-linked into place
	badIV []byte

	current atomic.Value // string: what is spoiled now, for failure reports

	ok, failed             atomic.Int64
	revokedOK, revokedFail atomic.Int64
	mu                     sync.Mutex
	failures               []string // the first few failures
}

// TestSoak: for SOAK_DURATION (default 5m), good callers call through a
// gateway whose CRL (client_cert_auth) and profiles file, keystore and trust
// PEM (ssl_profiles), all re-read every second, are again and again replaced
// by hostile files (garbage, truncated copies, a FIFO, a huge file, a
// directory, a PKCS#12 that made go-pkcs12 panic, a JKS claiming huge
// lengths) and put back. Each spoiled file must be refused in the log, each
// good one read again; no good call may fail, a revoked caller stays
// refused, and Caddy never exits. Run with `make soak`.
func TestSoak(t *testing.T) {
	duration := 5 * time.Minute
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_DURATION: %v", err)
		}
		duration = d
	}
	// SOAK_SETTLE (off by default): afterwards, wait up to this long (more
	// than the upstream idle timeout, 2m by default) for the gateway's
	// goroutines and open files to come back to their numbers before the
	// soak.
	var settle time.Duration
	if v := os.Getenv("SOAK_SETTLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_SETTLE: %v", err)
		}
		settle = d
	}
	e := newEnv(t)
	live := filepath.Join(e.dir, "live")
	if err := os.Mkdir(live, 0o700); err != nil {
		t.Fatal(err)
	}

	// The backend requires a client certificate from clientCA; the gateway's
	// is in a keystore whose format the loader tells from its content.
	clientCA := demopki.Must(demopki.NewCA("soak backend clients"))
	be := testpeer.StartBackend(t, "soak", clientCA)
	gw := demopki.Must(clientCA.Issue(demopki.Options{CommonName: "gateway-soak"}))
	keystorePath := filepath.Join(live, "gateway.keystore")
	if err := gw.WriteP12(keystorePath, "soakpass"); err != nil {
		t.Fatal(err)
	}
	trustPath := filepath.Join(live, "backend-ca.pem")
	writeFile(t, trustPath, string(be.ServerCA.CertPEM()))
	profilesPath := filepath.Join(live, "profiles.json")
	writeFile(t, profilesPath, fmt.Sprintf(`{"profiles":[{"servers":["localhost:%d"],"trust_pool":{"provider":"file","pem_files":[%q]},"client_keystore":{"file":%q,"password":"soakpass"}}]}`,
		be.Port, trustPath, keystorePath))
	revoked := demopki.Must(e.root.Issue(demopki.Options{CommonName: "revoked-soak"}))
	crlPath := filepath.Join(live, "root.crl")
	if err := e.root.WriteCRL(crlPath, time.Now().Add(24*time.Hour), revoked); err != nil {
		t.Fatal(err)
	}

	s := &soakRun{t: t, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	var err error
	if s.badIV, err = os.ReadFile(filepath.Join("..", "keystore", "testdata", "bad-iv.p12")); err != nil {
		t.Fatal(err)
	}
	s.huge = filepath.Join(live, "huge.bin")
	writeFile(t, s.huge, strings.Repeat("soak: a file over every size bound\n", soakHugeSize/35+1))
	s.current.Store("nothing")
	target := func(name, path string) *soakTarget {
		good, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return &soakTarget{name: name, path: path, good: good}
	}
	profilesTarget := target("profiles file", profilesPath)
	profilesTarget.vary = true
	profileTargets := []*soakTarget{
		profilesTarget,
		target("keystore", keystorePath),
		target("trust PEM", trustPath),
	}
	crl := target("CRL", crlPath)

	port := freePort(t)
	s.c = startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
	metrics
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
			mode strict
			crl %[5]s
			reload 1s
		}
	}
	reverse_proxy https://localhost:%[6]d {
		transport ssl_profiles {
			profiles_file %[7]s reload 1s
		}
	}
}
`, port, e.path("server"), e.path("server-key"), e.path("root"), crlPath, be.Port, profilesPath),
		"caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	url := fmt.Sprintf("https://localhost:%d/soak", port)
	const want = "soak gateway-soak" // the backend's name and the client CN it saw
	if res := doRaw(t, e.goClient(e.alice), url); res.status != 200 || res.body != want {
		t.Fatalf("before the soak: %d %q, want 200 %q", res.status, res.body, want)
	}
	if res := doRaw(t, e.goClient(revoked), url); res.status != 403 {
		t.Fatalf("revoked caller before the soak: %d, want 403", res.status)
	}
	baseGoroutines, _ := goroutineCount(s.c)
	baseFDs := openFDs(t, s.c.pid)

	// The load: 4 callers (2 reusing connections, 2 with a new TLS
	// connection per request) and a revoked caller now and then, until
	// the swaps end or maxRequests were made.
	const maxRequests = 5_000_000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := e.goClient(e.alice)
			client.Transport.(*http.Transport).DisableKeepAlives = w%2 == 1
			defer client.CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if s.ok.Load()+s.failed.Load() >= maxRequests {
					return
				}
				res := doRawE(client, url)
				if res.err != nil || res.status != 200 || res.body != want {
					s.failed.Add(1)
					s.fail(fmt.Sprintf("caller %d: %d %q %v", w, res.status, res.body, res.err))
				} else {
					s.ok.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			res := doRawE(e.goClient(revoked), url)
			if res.err != nil || res.status != 403 {
				s.revokedFail.Add(1)
				s.fail(fmt.Sprintf("revoked caller: %d %q %v (want 403)", res.status, res.body, res.err))
			} else {
				s.revokedOK.Add(1)
			}
		}
	}()
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(stop); wg.Wait() }) }
	defer stopLoad()

	// The swaps: each step spoils one of the profiles file, the keystore
	// and the trust PEM (in turn) and the CRL at the same time, waits until
	// the gateway has refused both, puts the good files back and waits
	// until it has read them again. Steps cycle through every pair of
	// file and hostile kind (7 kinds, 3 files: 21 steps).
	t.Logf("soak for %v: gateway on :%d, backend on :%d, files in %s", duration, port, be.Port, live)
	start := time.Now()
	deadline := start.Add(duration)
	nextReport := start.Add(30 * time.Second)
	var profileSwaps, crlSwaps int
	var stepErr error
	for k := 0; time.Now().Before(deadline); k++ {
		pt, kind := profileTargets[k%len(profileTargets)], soakHostiles[k%len(soakHostiles)]
		crlKind := soakHostiles[(k+3)%len(soakHostiles)]
		if stepErr = s.step(pt, kind, crl, crlKind); stepErr != nil {
			break
		}
		profileSwaps++
		crlSwaps++
		if err := s.alive(); err != nil {
			stepErr = err
			break
		}
		if now := time.Now(); now.After(nextReport) {
			nextReport = now.Add(30 * time.Second)
			t.Logf("%v: %d requests ok, %d failed, %d swaps", now.Sub(start).Round(time.Second), s.ok.Load(), s.failed.Load(), profileSwaps+crlSwaps)
		}
		time.Sleep(200 * time.Millisecond) // the good files serve a moment
	}
	stopLoad()
	elapsed := time.Since(start)

	// The numbers, then the verdicts.
	rejected := len(logLines(s.c, msgProfilesRejected))
	reloaded := len(logLines(s.c, msgProfilesReloaded))
	crlErrors := len(logLines(s.c, msgCRLReadError))
	decodePanics := len(logLines(s.c, msgDecodePanic))
	backgroundPanics := logLines(s.c, msgBackgroundPanic)
	goroutinesNow, _ := goroutineCount(s.c)
	t.Logf("soak ran %v", elapsed.Round(time.Second))
	t.Logf("requests: %d ok, %d failed (good callers); revoked caller: %d refused with 403, %d otherwise",
		s.ok.Load(), s.failed.Load(), s.revokedOK.Load(), s.revokedFail.Load())
	t.Logf("swaps: %d (profiles file/keystore/trust PEM %d, CRL %d), each followed by the good file put back",
		profileSwaps+crlSwaps, profileSwaps, crlSwaps)
	t.Logf("log: %d %q, %d %q, %d %q, %d %q, %d %q",
		rejected, msgProfilesRejected, reloaded, msgProfilesReloaded, crlErrors, msgCRLReadError,
		decodePanics, msgDecodePanic, len(backgroundPanics), msgBackgroundPanic)
	for _, msg := range []string{msgProfilesRejected, msgCRLReadError} {
		t.Logf("reasons of %q:\n%s", msg, soakReasons(s.c, msg, live))
	}
	t.Logf("gateway: goroutines %d at the start, %d at the end; open files %d at the start, %d at the end (connections of retired profiles close at their idle timeout)",
		baseGoroutines, goroutinesNow, baseFDs, openFDs(t, s.c.pid))
	if settle > 0 {
		settled := time.Now()
		err := s.waitFor(settle, "goroutines and open files back to their numbers before the soak", func() (bool, error) {
			g, err := goroutineCount(s.c)
			if err != nil {
				return false, err
			}
			fds := openFDs(t, s.c.pid)
			// A little slack: the admin request itself.
			return g <= baseGoroutines+4 && fds <= baseFDs+2, fmt.Errorf("goroutines %d, open files %d", g, fds)
		})
		if err != nil {
			t.Errorf("after the soak: %v", err)
		} else {
			t.Logf("goroutines and open files back to their numbers before the soak after %v", time.Since(settled).Round(time.Second))
		}
	}

	if stepErr != nil {
		t.Errorf("swaps stopped: %v", stepErr)
	}
	if err := s.alive(); err != nil {
		t.Errorf("after the soak: %v", err)
	}
	if n := s.failed.Load() + s.revokedFail.Load(); n != 0 {
		s.mu.Lock()
		t.Errorf("%d good requests and %d revoked-caller requests failed; the first ones:\n%s",
			s.failed.Load(), s.revokedFail.Load(), strings.Join(s.failures, "\n"))
		s.mu.Unlock()
	}
	if s.ok.Load() < 100 {
		t.Errorf("only %d good requests ran", s.ok.Load())
	}
	if profileSwaps == 0 || rejected < profileSwaps {
		t.Errorf("%d profiles file rejections logged for %d spoiled files", rejected, profileSwaps)
	}
	if crlSwaps == 0 || crlErrors < crlSwaps {
		t.Errorf("%d CRL read errors logged for %d spoiled CRLs", crlErrors, crlSwaps)
	}
	if len(backgroundPanics) > 0 {
		t.Errorf("a background task panicked: %v", backgroundPanics[0])
	}
	if logs := s.c.Logs(); strings.Contains(logs, "\npanic: ") || strings.Contains(logs, "fatal error: ") {
		t.Errorf("the Go runtime reported a panic or fatal error in Caddy's output")
	}
}

// step spoils pt with kind and the CRL with crlKind, waits for both to be
// refused, puts both back and waits for both to be read again.
func (s *soakRun) step(pt *soakTarget, kind soakHostile, crl *soakTarget, crlKind soakHostile) error {
	const wait = 15 * time.Second // a reload is due every second
	crlOK := fmt.Sprintf(`caddy_mtls_crl_updates_total{crl=%q,result="ok"}`, crl.path)
	rejected0, crlErrors0 := len(logLines(s.c, msgProfilesRejected)), len(logLines(s.c, msgCRLReadError))
	s.current.Store(fmt.Sprintf("%s as the %s, %s as the CRL", kind.name, pt.name, crlKind.name))
	if err := s.put(pt, kind); err != nil {
		return err
	}
	if err := s.put(crl, crlKind); err != nil {
		return err
	}
	if err := s.waitFor(wait, fmt.Sprintf("a %q line after a %s as the %s", msgProfilesRejected, kind.name, pt.name), func() (bool, error) {
		return len(logLines(s.c, msgProfilesRejected)) > rejected0, nil
	}); err != nil {
		return err
	}
	if err := s.waitFor(wait, fmt.Sprintf("a %q line after a %s as the CRL", msgCRLReadError, crlKind.name), func() (bool, error) {
		return len(logLines(s.c, msgCRLReadError)) > crlErrors0, nil
	}); err != nil {
		return err
	}

	reloaded0 := len(logLines(s.c, msgProfilesReloaded))
	crlOK0, err := metricValueE(s.c, crlOK)
	if err != nil {
		return err
	}
	s.current.Store(fmt.Sprintf("putting back the %s (was a %s) and the CRL (was a %s)", pt.name, kind.name, crlKind.name))
	if err := s.restore(pt); err != nil {
		return err
	}
	if err := s.restore(crl); err != nil {
		return err
	}
	if err := s.waitFor(wait, fmt.Sprintf("a %q line after the good %s was put back (it was a %s)", msgProfilesReloaded, pt.name, kind.name), func() (bool, error) {
		return len(logLines(s.c, msgProfilesReloaded)) > reloaded0, nil
	}); err != nil {
		return err
	}
	if err := s.waitFor(wait, fmt.Sprintf("the good CRL read again (it was a %s)", crlKind.name), func() (bool, error) {
		n, err := metricValueE(s.c, crlOK)
		return n > crlOK0, err
	}); err != nil {
		return err
	}
	s.current.Store("nothing")
	return nil
}

// put replaces the target with a hostile file, by a rename beside it.
func (s *soakRun) put(tg *soakTarget, kind soakHostile) error {
	tmp := tg.path + ".soak-tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := kind.make(s, tmp, tg.good); err != nil {
		return fmt.Errorf("making a %s for the %s: %w", kind.name, tg.name, err)
	}
	return s.swapIn(tmp, tg.path)
}

// restore puts the target's good content back, by a rename beside it.
func (s *soakRun) restore(tg *soakTarget) error {
	tmp := tg.path + ".soak-tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	good := tg.good
	if tg.vary {
		tg.restores++
		good = append(append(bytes.Clone(good), '\n'), bytes.Repeat([]byte(" "), tg.restores)...)
	}
	if err := os.WriteFile(tmp, good, 0o600); err != nil {
		return err
	}
	return s.swapIn(tmp, tg.path)
}

// swapIn renames tmp to path. A rename cannot put a directory over a file
// or anything over a directory: then path is removed first, and is missing
// for a moment.
func (s *soakRun) swapIn(tmp, path string) error {
	ti, err := os.Lstat(tmp)
	if err != nil {
		return err
	}
	if pi, err := os.Lstat(path); err == nil && (pi.IsDir() || ti.IsDir()) {
		if err := os.RemoveAll(path); err != nil {
			return err
		}
	}
	return os.Rename(tmp, path)
}

// waitFor polls cond until it holds; it fails after timeout, or at once
// when Caddy has exited.
func (s *soakRun) waitFor(timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-s.c.exited:
			return fmt.Errorf("waiting for %s: Caddy exited", what)
		default:
		}
		ok, err := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s within %v (a hung or dead watcher?); last error: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// alive fails unless the Caddy process is running and its admin endpoint
// answers.
func (s *soakRun) alive() error {
	select {
	case <-s.c.exited:
		return errors.New("the Caddy process exited")
	default:
	}
	if err := syscall.Kill(s.c.pid, 0); err != nil {
		return fmt.Errorf("the Caddy process (pid %d): %w", s.c.pid, err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + s.c.admin + "/config/")
	if err != nil {
		return fmt.Errorf("admin endpoint: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin endpoint: GET /config/: %d", resp.StatusCode)
	}
	return nil
}

// soakReasons lists the distinct "error" fields of the log lines with
// message msg, each with its count, dir shortened to <dir>.
func soakReasons(c *caddyProc, msg, dir string) string {
	counts := map[string]int{}
	for _, l := range logLines(c, msg) {
		reason, _ := l["error"].(string)
		counts[strings.ReplaceAll(reason, dir, "<dir>")]++
	}
	reasons := make([]string, 0, len(counts))
	for r := range counts {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	var b strings.Builder
	for _, r := range reasons {
		fmt.Fprintf(&b, "  %4d  %s\n", counts[r], r)
	}
	return b.String()
}

// fail records a failed request with what was spoiled at the time.
func (s *soakRun) fail(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) < 20 {
		s.failures = append(s.failures, fmt.Sprintf("%s: %s (spoiled then: %v)", time.Now().Format("15:04:05.000"), what, s.current.Load()))
	}
}

// metricValueE is metricValue without a testing.T, for use while other
// goroutines run: the value of a series, 0 when it is not there yet.
func metricValueE(c *caddyProc, series string) (float64, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + c.admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(body, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(series+" ")); ok {
			var v float64
			if _, err := fmt.Sscanf(string(rest), "%g", &v); err != nil {
				return 0, fmt.Errorf("metric line %q: %w", line, err)
			}
			return v, nil
		}
	}
	return 0, nil
}
