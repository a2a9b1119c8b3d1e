package keystore

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/testpki"
)

func TestJKS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.Must(testpki.NewCA("JKS CA"))
	alice := testpki.Must(ca.Issue(testpki.Options{CommonName: "alice"}))
	bob := testpki.Must(ca.Issue(testpki.Options{CommonName: "bob"}))
	path := filepath.Join(dir, "clients.jks")
	err := testpki.WriteJKS(path, "storepass", "keypass",
		testpki.JKSEntry{Alias: "alice", Cert: alice, Key: true},
		testpki.JKSEntry{Alias: "Bob", Cert: bob, Key: true},
		testpki.JKSEntry{Alias: "ca", Cert: ca})
	if err != nil {
		t.Fatal(err)
	}
	st, err := Load(path, JKS, "storepass", "keypass")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.KeyPairs) != 2 || len(st.Trusted) != 1 || st.Trusted[0].Subject.CommonName != "JKS CA" {
		t.Fatalf("%d key pairs, %d trusted", len(st.KeyPairs), len(st.Trusted))
	}
	kp, ok := st.KeyPair("BOB") // Java aliases are case insensitive
	if !ok || kp.Certificate.Leaf.Subject.CommonName != "bob" {
		t.Fatalf("alias lookup: %v %v", ok, kp.Alias)
	}
	if _, ok := st.KeyPair("carol"); ok {
		t.Fatal("unknown alias found")
	}
	if _, err := Load(path, JKS, "wrong", "keypass"); !errors.Is(err, ErrPassword) {
		t.Fatalf("wrong store password: %v", err)
	}
	if _, err := Load(path, JKS, "storepass", "wrong"); !errors.Is(err, ErrPassword) {
		t.Fatalf("wrong key password: %v", err)
	}
	// A .keystore file is told apart by its content.
	typ, err := ParseType("", "java.keystore")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := Load(path, typ, "storepass", "keypass"); err != nil || len(st.KeyPairs) != 2 {
		t.Fatalf("JKS as auto: %v", err)
	}

	// The key password defaults to the store password.
	same := filepath.Join(dir, "same.jks")
	if err := testpki.WriteJKS(same, "secret", "secret", testpki.JKSEntry{Alias: "alice", Cert: alice, Key: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(same, JKS, "secret", ""); err != nil {
		t.Fatal(err)
	}
}

func TestPKCS12(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.Must(testpki.NewCA("P12 CA"))
	mid := testpki.Must(ca.Issue(testpki.Options{CommonName: "P12 Intermediate", IsCA: true}))
	gw := testpki.Must(mid.Issue(testpki.Options{CommonName: "gateway"}))
	path := filepath.Join(dir, "gw.p12")
	if err := gw.WriteP12(path, "p12pass"); err != nil {
		t.Fatal(err)
	}
	st, err := Load(path, PKCS12, "p12pass", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.KeyPairs) != 1 || len(st.KeyPairs[0].Certificate.Certificate) != 2 {
		t.Fatalf("key pairs %d", len(st.KeyPairs))
	}
	if _, err := Load(path, PKCS12, "nope", ""); !errors.Is(err, ErrPassword) {
		t.Fatalf("wrong password: %v", err)
	}

	trust := filepath.Join(dir, "trust.p12")
	if err := testpki.WriteTrustP12(trust, "t", ca, mid); err != nil {
		t.Fatal(err)
	}
	st, err = Load(trust, PKCS12, "t", "")
	if err != nil || len(st.Trusted) != 2 || len(st.KeyPairs) != 0 {
		t.Fatalf("trust store: %v", err)
	}
	if st, err := Load(path, Auto, "p12pass", ""); err != nil || len(st.KeyPairs) != 1 {
		t.Fatalf("PKCS#12 as auto: %v", err)
	}
}

// TestPKCS12FromOpenSSL reads a file made by `openssl pkcs12 -export`, with
// its friendly name as the alias.
func TestPKCS12FromOpenSSL(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.Must(testpki.NewCA("OpenSSL CA"))
	gw := testpki.Must(ca.Issue(testpki.Options{CommonName: "gateway"}))
	certPath, keyPath, err := gw.WriteFiles(dir, "gw")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "gw.p12")
	cmd := exec.Command("openssl", "pkcs12", "-export", "-in", certPath, "-inkey", keyPath,
		"-name", "partner-a", "-out", out, "-passout", "pass:opensslpass")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v: %s", err, b)
	}
	st, err := Load(out, PKCS12, "opensslpass", "")
	if err != nil {
		t.Fatal(err)
	}
	if kp, ok := st.KeyPair("partner-a"); !ok || kp.Certificate.Leaf.Subject.CommonName != "gateway" {
		t.Fatalf("alias from friendly name: %+v", st.KeyPairs)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.jks")
	if err := os.WriteFile(garbage, []byte("not a keystore"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(garbage, JKS, "x", ""); err == nil {
		t.Fatal("garbage JKS loaded")
	}
	if _, err := Load(garbage, PKCS12, "x", ""); err == nil {
		t.Fatal("garbage PKCS#12 loaded")
	}
	if _, err := Load(filepath.Join(dir, "missing.p12"), PKCS12, "x", ""); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	for _, tc := range []struct{ typ, path string }{{"", "a.txt"}, {"der", "a.jks"}} {
		if _, err := ParseType(tc.typ, tc.path); err == nil {
			t.Fatalf("ParseType(%q, %q) succeeded", tc.typ, tc.path)
		}
	}
	for _, tc := range []struct {
		typ, path string
		want      Type
	}{{"", "a.p12", PKCS12}, {"", "b.PFX", PKCS12}, {"", "c.jks", JKS}, {"PKCS12", "x", PKCS12}, {"jks", "x.p12", JKS}, {"", "d.keystore", Auto}} {
		got, err := ParseType(tc.typ, tc.path)
		if err != nil || got != tc.want {
			t.Fatalf("ParseType(%q, %q) = %q, %v; want %q", tc.typ, tc.path, got, err, tc.want)
		}
	}
}
