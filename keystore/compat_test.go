package keystore

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// keytoolStore makes a keystore of storeType (JKS or PKCS12) with keytool:
// two key pairs, "partner-a" (EC) and "partner-b" (RSA; with one, only
// the first), and the trusted certificate entry "backend-ca", as
// `keytool -importcert` adds to a key store. keytool (Java's, which
// .ci/run installs) must be there.
func keytoolStore(t *testing.T, storeType string, keyPairs int) string {
	t.Helper()
	if _, err := exec.LookPath("keytool"); err != nil {
		t.Fatal("keytool is not installed (Debian: default-jre-headless)")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway."+storeType)
	keytool := func(args ...string) {
		t.Helper()
		cmd := exec.Command("keytool", append(args, "-keystore", path, "-storetype", storeType, "-storepass", "storepass", "-keypass", "storepass", "-noprompt")...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("keytool %s: %v: %s", args[0], err, b)
		}
	}
	keytool("-genkeypair", "-alias", "partner-a", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=gateway for a", "-validity", "30")
	if keyPairs > 1 {
		keytool("-genkeypair", "-alias", "partner-b", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=gateway for b", "-validity", "30")
	}
	ca := demopki.Must(demopki.NewCA("backend CA"))
	caFile, _, err := ca.WriteFiles(dir, "backend-ca")
	if err != nil {
		t.Fatal(err)
	}
	keytool("-importcert", "-alias", "backend-ca", "-file", caFile)
	return path
}

// sameKeyPairs fails unless a and b hold the same key pairs under the same
// aliases.
func sameKeyPairs(t *testing.T, what string, a, b *Contents) {
	t.Helper()
	if len(a.KeyPairs) != len(b.KeyPairs) {
		t.Fatalf("%s: %d key pairs, want %d", what, len(b.KeyPairs), len(a.KeyPairs))
	}
	for i := range a.KeyPairs {
		x, y := a.KeyPairs[i], b.KeyPairs[i]
		if x.Alias != y.Alias || !bytes.Equal(x.Certificate.Leaf.Raw, y.Certificate.Leaf.Raw) {
			t.Fatalf("%s: key pair %d is %q, want %q", what, i+1, y.Alias, x.Alias)
		}
		if err := CheckKeyMatches(y.Certificate.Leaf, y.Certificate.PrivateKey); err != nil {
			t.Fatalf("%s: %s: %v", what, y.Alias, err)
		}
	}
}

// TestKeytoolKeyPairsAndTrustedCert: a keystore of several key pairs plus a
// trusted certificate entry, as keytool writes it in either format, loads:
// the key pairs under their aliases, the certificate as trusted.
func TestKeytoolKeyPairsAndTrustedCert(t *testing.T) {
	t.Parallel()
	for _, storeType := range []string{"JKS", "PKCS12"} {
		t.Run(storeType, func(t *testing.T) {
			t.Parallel()
			path := keytoolStore(t, storeType, 2)
			typ, _ := ParseType(storeType, path)
			st, err := Load(path, typ, "storepass", "")
			if err != nil {
				t.Fatal(err)
			}
			if len(st.KeyPairs) != 2 || st.KeyPairs[0].Alias != "partner-a" || st.KeyPairs[1].Alias != "partner-b" {
				t.Fatalf("key pairs %v", aliases(st))
			}
			if len(st.Trusted) != 1 || st.Trusted[0].Subject.CommonName != "backend CA" {
				t.Fatalf("%d trusted certificates", len(st.Trusted))
			}
			if st.Type != typ {
				t.Fatalf("read as %q, declared %q", st.Type, typ)
			}
		})
	}
}

// TestKeytoolKeyPairAndTrustedCert: a PKCS#12 key store of one key pair
// plus a trusted certificate entry loads the key pair under its alias, its
// chain its own certificate alone, and the certificate as trusted (go-pkcs12's
// reader of one key pair took the trusted certificate for the key pair's
// chain and dropped it as trusted).
func TestKeytoolKeyPairAndTrustedCert(t *testing.T) {
	t.Parallel()
	path := keytoolStore(t, "PKCS12", 1)
	st, err := Load(path, PKCS12, "storepass", "")
	if err != nil {
		t.Fatal(err)
	}
	kp, ok := st.KeyPair("partner-a")
	if len(st.KeyPairs) != 1 || !ok || kp.Certificate.Leaf.Subject.CommonName != "gateway for a" {
		t.Fatalf("key pairs %v", aliases(st))
	}
	if len(kp.Certificate.Certificate) != 1 {
		t.Fatalf("a chain of %d certificates, want 1", len(kp.Certificate.Certificate))
	}
	if len(st.Trusted) != 1 || st.Trusted[0].Subject.CommonName != "backend CA" {
		t.Fatalf("%d trusted certificates", len(st.Trusted))
	}
}

// TestTypeCompat: as Java 9+ reads keystores (keystore.type.compat), a
// PKCS#12 file declared JKS and a JKS declared PKCS12 load, told apart by
// their content, with the same key pairs as when declared right; Type says
// what the file was read as.
func TestTypeCompat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := demopki.Must(demopki.NewCA("compat CA"))
	alice := demopki.Must(ca.Issue(demopki.Options{CommonName: "alice"}))
	bob := demopki.Must(ca.Issue(demopki.Options{CommonName: "bob"}))
	demoJKS := filepath.Join(dir, "demo.jks")
	err := demopki.WriteJKS(demoJKS, "storepass", "storepass",
		demopki.JKSEntry{Alias: "alice", Cert: alice, Key: true},
		demopki.JKSEntry{Alias: "bob", Cert: bob, Key: true},
		demopki.JKSEntry{Alias: "ca", Cert: ca})
	if err != nil {
		t.Fatal(err)
	}
	demoP12 := filepath.Join(dir, "demo.p12")
	if err := alice.WriteP12(demoP12, "storepass"); err != nil {
		t.Fatal(err)
	}
	stores := []struct {
		name   string
		path   func(*testing.T) string
		actual Type
	}{
		{"demopki JKS", func(*testing.T) string { return demoJKS }, JKS},
		{"demopki PKCS12", func(*testing.T) string { return demoP12 }, PKCS12},
		{"keytool JKS", func(t *testing.T) string { return keytoolStore(t, "JKS", 2) }, JKS},
		{"keytool PKCS12", func(t *testing.T) string { return keytoolStore(t, "PKCS12", 2) }, PKCS12},
	}
	other := map[Type]Type{JKS: PKCS12, PKCS12: JKS}
	for _, tc := range stores {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := tc.path(t)
			right, err := Load(path, tc.actual, "storepass", "")
			if err != nil {
				t.Fatal(err)
			}
			if right.Type != tc.actual {
				t.Fatalf("declared right: read as %q", right.Type)
			}
			for _, declared := range []Type{other[tc.actual], Auto} {
				got, err := Load(path, declared, "storepass", "")
				if err != nil {
					t.Fatalf("declared %q: %v", declared, err)
				}
				if got.Type != tc.actual {
					t.Fatalf("declared %q: read as %q, want %q", declared, got.Type, tc.actual)
				}
				sameKeyPairs(t, "declared "+string(declared), right, got)
				if len(got.Trusted) != len(right.Trusted) {
					t.Fatalf("declared %q: %d trusted, want %d", declared, len(got.Trusted), len(right.Trusted))
				}
			}
			// A wrong password is still one, whatever the declared type.
			if _, err := Load(path, other[tc.actual], "wrong", ""); err == nil {
				t.Fatal("wrong password: loaded")
			}
		})
	}
}

func aliases(st *Contents) []string {
	var out []string
	for _, kp := range st.KeyPairs {
		out = append(out, kp.Alias)
	}
	return out
}
