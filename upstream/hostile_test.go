package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// within fails the test if fn has not returned after a minute: what it
// guards used to block for good.
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not return: it hangs", what)
	}
}

// replaceWith puts a hostile thing where path is: a FIFO (which nobody will
// write to) or the given bytes.
func replaceWith(t *testing.T, path string, content []byte) {
	t.Helper()
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if content == nil {
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestProfilesFileHostileFiles: a profiles file, keystore or PEM file
// replaced under a running transport by a FIFO, garbage or the PKCS#12 that
// made go-pkcs12 v0.6.0 panic neither hangs nor ends the watcher: each is
// refused, the last good profiles serve, and a good file later still takes
// effect.
func TestProfilesFileHostileFiles(t *testing.T) {
	badIV, err := os.ReadFile(filepath.Join("..", "keystore", "testdata", "bad-iv.p12"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	path := filepath.Join(f.dir, "profiles.json")
	goodJSON := f.profilesJSON(f.backendB.Addr, f.files["serverCA-b"])
	writeFile(t, path, goodJSON)
	tr := mustTransport(t, `{"tls":{},"profiles_file":"`+path+`","profiles_reload":3600000000000}`)
	keystoreBytes, err := os.ReadFile(f.files["gwB.p12"])
	if err != nil {
		t.Fatal(err)
	}
	poolBytes, err := os.ReadFile(f.files["serverCA-b"])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, file string
		content    []byte
		restore    []byte
	}{
		{"profiles file as a FIFO", path, nil, []byte(goodJSON)},
		{"keystore as a FIFO", f.files["gwB.p12"], nil, keystoreBytes},
		{"keystore with a bad AES IV", f.files["gwB.p12"], badIV, keystoreBytes},
		{"keystore of garbage", f.files["gwB.p12"], []byte("\x30\x82\xff\xff garbage"), keystoreBytes},
		{"trust pool PEM as a FIFO", f.files["serverCA-b"], nil, poolBytes},
	} {
		replaceWith(t, c.file, c.content)
		within(t, "reload with a "+c.name, tr.reload)
		if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
			t.Fatalf("after a %s: %q %v", c.name, got, err)
		}
		replaceWith(t, c.file, c.restore)
	}
	// The watcher is not stuck: a good new file (B's profile trusting A's
	// server CA) takes effect.
	writeFile(t, path, f.profilesJSON(f.backendB.Addr, f.files["serverCA-a"]))
	within(t, "reload of a good file", tr.reload)
	if _, err := proxy(tr, f.backendB.Addr, nil); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("the good file after the hostile ones did not take effect: %v", err)
	}
}

// TestProvisionRefusesFIFOs: a config naming a FIFO as its profiles file,
// client certificate, key or trust pool file fails to load with the reason,
// rather than waiting for a writer.
func TestProvisionRefusesFIFOs(t *testing.T) {
	f := newFixture(t)
	fifo, fifoP12 := filepath.Join(f.dir, "fifo.pem"), filepath.Join(f.dir, "fifo.p12")
	replaceWith(t, fifo, nil)
	replaceWith(t, fifoP12, nil)
	for name, cfg := range map[string]string{
		"profiles file":   `{"profiles_file":"` + fifo + `"}`,
		"certificate":     strings.Replace(f.config(""), f.files["gwA"], fifo, 1),
		"key":             strings.Replace(f.config(""), f.files["gwA-key"], fifo, 1),
		"trust pool file": strings.Replace(f.config(""), f.files["serverCA-a"], fifo, 1),
		"keystore":        strings.Replace(f.config(""), f.files["gwB.p12"], fifoP12, 1),
	} {
		within(t, "provisioning with a FIFO as the "+name, func() {
			_, err := provisionTransport(t, cfg)
			if err == nil || !strings.Contains(err.Error(), "named pipe") {
				t.Errorf("a FIFO as the %s: %v", name, err)
			}
		})
	}
}

// TestProfilesFileUnreadableAgain: a profiles file that turns unreadable, is
// put back as it was, and turns unreadable again is reported both times
// (the second time used to be taken for the first and not logged).
func TestProfilesFileUnreadableAgain(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(f.dir, "profiles.json")
	good := f.profilesJSON(f.backendB.Addr, f.files["serverCA-b"])
	writeFile(t, path, good)
	tr := mustTransport(t, `{"tls":{},"profiles_file":"`+path+`","profiles_reload":3600000000000}`)
	for round := range 2 {
		replaceWith(t, path, nil)
		within(t, "reload of a FIFO", tr.reload)
		if tr.file.lastErr == "" {
			t.Fatalf("round %d: the unreadable file was not reported", round)
		}
		replaceWith(t, path, []byte(good))
		within(t, "reload of the same good file", tr.reload)
		if tr.file.lastErr != "" {
			t.Fatalf("round %d: the error outlived the file's return: %s", round, tr.file.lastErr)
		}
	}
}
