package revocation

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/testpki"
)

// startOCSPResponder runs `openssl ocsp` as the CA's responder on loopback,
// answering from an index of the good and revoked certificates. It returns
// the responder's URL and a function that stops it.
func startOCSPResponder(t *testing.T, ca *testpki.Cert, port int, good, revoked []*testpki.Cert) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	caPath, keyPath, err := ca.WriteFiles(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	var index strings.Builder
	line := func(status string, c *testpki.Cert, revokedAt string) {
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
	ca := testpki.Must(testpki.NewCA("OCSP CA"))
	good := testpki.Must(ca.Issue(testpki.Options{CommonName: "good"}))
	revoked := testpki.Must(ca.Issue(testpki.Options{CommonName: "revoked"}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	// A certificate that names the responder itself (AIA).
	withAIA := testpki.Must(ca.Issue(testpki.Options{CommonName: "aia", OCSPServer: []string{fmt.Sprintf("http://127.0.0.1:%d", port)}}))
	url, stop := startOCSPResponder(t, ca, port, []*testpki.Cert{good, withAIA}, []*testpki.Cert{revoked})
	unknown := testpki.Must(ca.Issue(testpki.Options{CommonName: "not-in-index"}))

	strict, err := New(Config{Mode: "strict", OCSP: true, OCSPResponder: url}, zap.NewNop())
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
	aia, err := New(Config{Mode: "strict", OCSP: true}, zap.NewNop())
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
	soft, err := New(Config{OCSP: true, OCSPResponder: url, OCSPTimeout: 0}, zap.NewNop())
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
