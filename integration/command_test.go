package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

func caddyCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(caddyBin, args...).CombinedOutput()
	return string(out), err
}

func TestMTLSCommand(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()

	out, err := caddyCmd(t, "mtls", "keygen", "--out", dir, "--name", "gw", "--cn", "gateway.example", "--org", "Example", "--key-type", "p384", "--days", "30")
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	out, err = caddyCmd(t, "mtls", "inspect", filepath.Join(dir, "gw.pem"))
	if err != nil || !strings.Contains(out, "subject:      CN=gateway.example,O=Example") || !strings.Contains(out, "key type:     p384") {
		t.Fatalf("inspect of the new key pair: %v\n%s", err, out)
	}
	if out, err := caddyCmd(t, "mtls", "keygen", "--out", dir, "--name", "../x"); err == nil {
		t.Fatalf("keygen with a bad name succeeded:\n%s", out)
	}

	// Every header format, told apart, with the verdict against a CA.
	for _, f := range []certcodec.Format{certcodec.RFC9440, certcodec.URLPEM, certcodec.PEM, certcodec.Base64DER} {
		out, err := caddyCmd(t, "mtls", "inspect", "--ca", e.path("root"), "--header", certcodec.Encode(e.alice.Cert.Raw, f))
		if err != nil || !strings.Contains(out, "source:       header, "+f.String()) || !strings.Contains(out, "verifies:     yes") || !strings.Contains(out, fingerprintHex(e.alice)) {
			t.Fatalf("inspect %v header: %v\n%s", f, err, out)
		}
	}
	// A caller under an intermediate, sent in the chain header.
	mid := demopki.Must(e.root.Issue(demopki.Options{CommonName: "Integration Intermediate", IsCA: true}))
	carol := demopki.Must(mid.Issue(demopki.Options{CommonName: "carol"}))
	leaf := certcodec.Encode(carol.Cert.Raw, certcodec.RFC9440)
	out, err = caddyCmd(t, "mtls", "inspect", "--ca", e.path("root"), "--header", leaf, "--chain", certcodec.Encode(mid.Cert.Raw, certcodec.RFC9440))
	if err != nil || !strings.Contains(out, "chain:        1 more certificate(s)") || !strings.Contains(out, "verifies:     yes") {
		t.Fatalf("inspect with a chain header: %v\n%s", err, out)
	}
	out, err = caddyCmd(t, "mtls", "inspect", "--ca", e.path("root"), "--header", leaf)
	if err == nil || !strings.Contains(out, "verifies:     no (untrusted)") {
		t.Fatalf("inspect without the chain header: %v\n%s", err, out)
	}
	if out, err := caddyCmd(t, "mtls", "inspect", "--header", leaf, "--chain", ":x:, :not base64!:"); err == nil || !strings.Contains(out, "chain: chain item 1") {
		t.Fatalf("inspect with a broken chain header: %v\n%s", err, out)
	}
	if out, err := caddyCmd(t, "mtls", "inspect", "--chain", leaf, e.path("alice")); err == nil || !strings.Contains(out, "--chain goes with --header") {
		t.Fatalf("inspect --chain without --header: %v\n%s", err, out)
	}
	out, err = caddyCmd(t, "mtls", "inspect", "--ca", e.path("root"), e.path("mallory"))
	if err == nil || !strings.Contains(out, "verifies:     no (untrusted)") {
		t.Fatalf("inspect of an untrusted certificate: %v\n%s", err, out)
	}
	out, err = caddyCmd(t, "mtls", "inspect", "--ca", e.path("root"), e.path("expired"))
	if err == nil || !strings.Contains(out, "verifies:     no (expired)") {
		t.Fatalf("inspect of an expired certificate: %v\n%s", err, out)
	}
	if out, err := caddyCmd(t, "mtls", "inspect", "--header", ":not base64!:"); err == nil || !strings.Contains(out, "malformed") {
		t.Fatalf("inspect of a broken header: %v\n%s", err, out)
	}

	// The demo PKI.
	demo := t.TempDir()
	if out, err := caddyCmd(t, "mtls", "keygen", "--demo", "--out", demo); err != nil {
		t.Fatalf("keygen --demo: %v\n%s", err, out)
	}
	out, err = caddyCmd(t, "mtls", "inspect", "--ca", filepath.Join(demo, "clients-ca.pem"), filepath.Join(demo, "alice.pem"))
	if err != nil || !strings.Contains(out, "verifies:     yes") {
		t.Fatalf("demo alice: %v\n%s", err, out)
	}
}
