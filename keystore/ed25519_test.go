package keystore

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// tool runs a command (keytool, openssl) and fails the test when it fails.
func tool(t testing.TB, name string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed (Debian: default-jre-headless for keytool, openssl)", name)
	}
	if b, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, b)
	}
}

// keytoolIn returns a function that runs keytool on the keystore at path
// of storeType with the password "storepass"; javaOpts go to the JVM (such
// as -Dkeystore.pkcs12.legacy).
func keytoolIn(t testing.TB, path, storeType string, javaOpts ...string) func(args ...string) {
	return func(args ...string) {
		t.Helper()
		var opts []string
		for _, o := range javaOpts {
			opts = append(opts, "-J"+o)
		}
		tool(t, "keytool", append(append(opts, args...), "-keystore", path, "-storetype", storeType,
			"-storepass", "storepass", "-keypass", "storepass", "-noprompt")...)
	}
}

// backendCA writes a CA certificate (PEM) into dir for `keytool
// -importcert`, returning its path.
func backendCA(t testing.TB, dir string) string {
	t.Helper()
	caFile, _, err := demopki.Must(demopki.NewCA("backend CA")).WriteFiles(dir, "backend-ca")
	if err != nil {
		t.Fatal(err)
	}
	return caFile
}

// mixedKeytoolStore makes a keystore of storeType (JKS or PKCS12) with
// keytool: the key pairs "ed" (Ed25519), "ec" (P-256) and "rsa" (RSA 2048)
// and the trusted certificate entry "backend-ca".
func mixedKeytoolStore(t testing.TB, storeType string, javaOpts ...string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "mixed."+storeType)
	keytool := keytoolIn(t, path, storeType, javaOpts...)
	keytool("-genkeypair", "-alias", "ed", "-keyalg", "Ed25519", "-dname", "CN=gateway ed25519", "-validity", "30")
	keytool("-genkeypair", "-alias", "ec", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=gateway ec", "-validity", "30")
	keytool("-genkeypair", "-alias", "rsa", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=gateway rsa", "-validity", "30")
	keytool("-importcert", "-alias", "backend-ca", "-file", backendCA(t, dir))
	return path
}

// wantKeyPair fails unless st holds alias's key pair, its certificate of
// cn and its key of the type of want, the key the certificate's, and its
// chain only its certificate.
func wantKeyPair(t *testing.T, st *Contents, alias, cn string, want any) KeyPair {
	t.Helper()
	kp, ok := st.KeyPair(alias)
	if !ok {
		t.Fatalf("no key pair %q among %v", alias, aliases(st))
	}
	if kp.Certificate.Leaf.Subject.CommonName != cn {
		t.Fatalf("%s: certificate of %q, want %q", alias, kp.Certificate.Leaf.Subject.CommonName, cn)
	}
	var typeOK bool
	switch want.(type) {
	case ed25519.PrivateKey:
		_, typeOK = kp.Certificate.PrivateKey.(ed25519.PrivateKey)
	case *ecdsa.PrivateKey:
		_, typeOK = kp.Certificate.PrivateKey.(*ecdsa.PrivateKey)
	case *rsa.PrivateKey:
		_, typeOK = kp.Certificate.PrivateKey.(*rsa.PrivateKey)
	}
	if !typeOK {
		t.Fatalf("%s: key %T, want %T", alias, kp.Certificate.PrivateKey, want)
	}
	if err := CheckKeyMatches(kp.Certificate.Leaf, kp.Certificate.PrivateKey); err != nil {
		t.Fatalf("%s: %v", alias, err)
	}
	if len(kp.Certificate.Certificate) != 1 {
		t.Fatalf("%s: a chain of %d certificates, want the self-signed one alone", alias, len(kp.Certificate.Certificate))
	}
	return kp
}

// wantTrustedCA fails unless st's trusted certificates are the backend CA
// alone.
func wantTrustedCA(t *testing.T, st *Contents) {
	t.Helper()
	if len(st.Trusted) != 1 || st.Trusted[0].Subject.CommonName != "backend CA" {
		var names []string
		for _, c := range st.Trusted {
			names = append(names, c.Subject.CommonName)
		}
		t.Fatalf("trusted %v, want [backend CA]", names)
	}
}

// handshake makes a TLS connection of version between a Go client that
// presents kp and a Go server that requires a client certificate chaining
// to kp's (self-signed) one, and fails unless the server saw kp's.
func handshake(t *testing.T, kp KeyPair, version uint16) {
	t.Helper()
	server := demopki.Must(demopki.Must(demopki.NewCA("server CA")).Issue(demopki.Options{CommonName: "backend", DNSNames: []string{"backend"}}))
	clients := x509.NewCertPool()
	clients.AddCert(kp.Certificate.Leaf)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clients,
		MinVersion:   version,
		MaxVersion:   version,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			seen <- err
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			seen <- err
			return
		}
		peers := tc.ConnectionState().PeerCertificates
		if len(peers) == 0 || !bytes.Equal(peers[0].Raw, kp.Certificate.Leaf.Raw) {
			seen <- errors.New("the server saw another client certificate")
			return
		}
		_, err = tc.Write([]byte("ok"))
		seen <- err
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{
		Certificates: []tls.Certificate{kp.Certificate},
		RootCAs:      demopki.Pool(server.Issuer),
		ServerName:   "backend",
		MinVersion:   version,
		MaxVersion:   version,
	})
	if err != nil {
		t.Fatalf("%s: dial: %v (server: %v)", tls.VersionName(version), err, <-seen)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2)
	// TLS 1.3: the server's verdict on the client's certificate comes after
	// the client's handshake.
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("%s: %v (server: %v)", tls.VersionName(version), err, <-seen)
	}
	if err := <-seen; err != nil {
		t.Fatalf("%s: server: %v", tls.VersionName(version), err)
	}
}

// TestKeytoolEd25519: keystores of both types that keytool (Java 15+)
// writes with an Ed25519, an EC and an RSA key pair and a trusted
// certificate entry load each alias with its key type, the certificate
// its key's, the trusted certificate apart; the Ed25519 key pair makes a
// TLS 1.2 and a TLS 1.3 handshake as a client certificate.
func TestKeytoolEd25519(t *testing.T) {
	t.Parallel()
	for _, storeType := range []string{"JKS", "PKCS12"} {
		t.Run(storeType, func(t *testing.T) {
			t.Parallel()
			path := mixedKeytoolStore(t, storeType)
			st, err := Load(path, Auto, "storepass", "")
			if err != nil {
				t.Fatal(err)
			}
			if got := aliases(st); len(got) != 3 {
				t.Fatalf("key pairs %v, want ec, ed, rsa", got)
			}
			ed := wantKeyPair(t, st, "ed", "gateway ed25519", ed25519.PrivateKey(nil))
			wantKeyPair(t, st, "ec", "gateway ec", (*ecdsa.PrivateKey)(nil))
			wantKeyPair(t, st, "rsa", "gateway rsa", (*rsa.PrivateKey)(nil))
			wantTrustedCA(t, st)
			for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				handshake(t, ed, v)
			}
			if _, err := Load(path, Auto, "wrongpass", ""); !errors.Is(err, ErrPassword) {
				t.Fatalf("wrong password: %v", err)
			}
		})
	}
}

// TestOpenSSLEd25519: `openssl pkcs12 -export` of an Ed25519 key, with
// OpenSSL 3's default encryption and with -legacy, loads under its
// friendly name and makes a TLS 1.2 and 1.3 handshake.
func TestOpenSSLEd25519(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "ed.key.pem"), filepath.Join(dir, "ed.pem")
	tool(t, "openssl", "genpkey", "-algorithm", "ed25519", "-out", key)
	tool(t, "openssl", "req", "-x509", "-new", "-key", key, "-subj", "/CN=gateway ed25519", "-days", "30", "-out", cert)
	for _, legacy := range []bool{false, true} {
		out := filepath.Join(dir, fmt.Sprintf("ed-legacy-%v.p12", legacy))
		args := []string{"pkcs12", "-export", "-in", cert, "-inkey", key, "-name", "partner-ed", "-out", out, "-passout", "pass:opensslpass"}
		if legacy {
			args = append(args, "-legacy")
		}
		tool(t, "openssl", args...)
		st, err := Load(out, PKCS12, "opensslpass", "")
		if err != nil {
			t.Fatalf("legacy %v: %v", legacy, err)
		}
		if len(st.KeyPairs) != 1 || len(st.Trusted) != 0 {
			t.Fatalf("legacy %v: key pairs %v, %d trusted", legacy, aliases(st), len(st.Trusted))
		}
		kp := wantKeyPair(t, st, "partner-ed", "gateway ed25519", ed25519.PrivateKey(nil))
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			handshake(t, kp, v)
		}
	}
}

// TestPKCS12LegacyWithTrustedCert: PKCS#12 keystores in the older
// encryptions (RC2-40 for the certificates, 3DES for the keys, a SHA-1
// MAC) holding a trusted certificate entry besides their key pairs load:
// each key pair under its alias with its own chain, the trusted
// certificate apart (before, go-pkcs12 refused the entry, or read it as
// part of the key pair's chain, leaving the alias and trust out).
func TestPKCS12LegacyWithTrustedCert(t *testing.T) {
	t.Parallel()
	const legacy = "-Dkeystore.pkcs12.legacy"
	// opensslLegacy writes `openssl pkcs12 -export -legacy` of an RSA key
	// pair named partner-r, into which keytool imports the backend CA
	// (keytool keeps the file's algorithms), with javaOpts.
	opensslLegacy := func(t *testing.T, javaOpts ...string) string {
		dir := t.TempDir()
		key, cert, out := filepath.Join(dir, "r.key.pem"), filepath.Join(dir, "r.pem"), filepath.Join(dir, "legacy.p12")
		tool(t, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-subj", "/CN=gateway for r", "-days", "30", "-out", cert)
		tool(t, "openssl", "pkcs12", "-export", "-legacy", "-in", cert, "-inkey", key, "-name", "partner-r", "-out", out, "-passout", "pass:storepass")
		keytoolIn(t, out, "PKCS12", javaOpts...)("-importcert", "-alias", "backend-ca", "-file", backendCA(t, dir))
		return out
	}
	// keytoolLegacy writes a keystore with keytool's legacy algorithms: EC
	// partner-a, RSA partner-b when two, and the backend CA.
	keytoolLegacy := func(t *testing.T, keyPairs int) string {
		dir := t.TempDir()
		path := filepath.Join(dir, "legacy.p12")
		keytool := keytoolIn(t, path, "PKCS12", legacy)
		keytool("-genkeypair", "-alias", "partner-a", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=gateway for a", "-validity", "30")
		if keyPairs > 1 {
			keytool("-genkeypair", "-alias", "partner-b", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=gateway for b", "-validity", "30")
		}
		keytool("-importcert", "-alias", "backend-ca", "-file", backendCA(t, dir))
		return path
	}
	for _, tc := range []struct {
		name  string
		path  func(*testing.T) string
		pairs map[string]string // alias: certificate's CN
	}{
		{"openssl -legacy, keytool -importcert", func(t *testing.T) string { return opensslLegacy(t) }, map[string]string{"partner-r": "gateway for r"}},
		{"openssl -legacy, keytool legacy -importcert", func(t *testing.T) string { return opensslLegacy(t, legacy) }, map[string]string{"partner-r": "gateway for r"}},
		{"keytool legacy, one key pair", func(t *testing.T) string { return keytoolLegacy(t, 1) }, map[string]string{"partner-a": "gateway for a"}},
		{"keytool legacy, two key pairs", func(t *testing.T) string { return keytoolLegacy(t, 2) }, map[string]string{"partner-a": "gateway for a", "partner-b": "gateway for b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := tc.path(t)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !usesLegacyEncryption(t, data) {
				t.Fatal("the keystore is not in the legacy encryptions: the test tests nothing")
			}
			st, err := Load(path, PKCS12, "storepass", "")
			if err != nil {
				t.Fatal(err)
			}
			if len(st.KeyPairs) != len(tc.pairs) {
				t.Fatalf("key pairs %v, want %d", aliases(st), len(tc.pairs))
			}
			for alias, cn := range tc.pairs {
				kp, ok := st.KeyPair(alias)
				if !ok {
					t.Fatalf("no key pair %q among %v", alias, aliases(st))
				}
				var want any = (*rsa.PrivateKey)(nil)
				if _, ec := kp.Certificate.Leaf.PublicKey.(*ecdsa.PublicKey); ec {
					want = (*ecdsa.PrivateKey)(nil)
				}
				wantKeyPair(t, st, alias, cn, want)
			}
			wantTrustedCA(t, st)
			if _, err := Load(path, PKCS12, "wrongpass", ""); !errors.Is(err, ErrPassword) {
				t.Fatalf("wrong password: %v", err)
			}
		})
	}
}

// usesLegacyEncryption reports whether a PKCS#12 file's encrypted contents
// and shrouded keys are in PKCS#12's own encryptions (RC2, 3DES) rather than
// PBES2.
func usesLegacyEncryption(t *testing.T, data []byte) bool {
	t.Helper()
	var pfx pfxPDU
	if _, err := asn1.Unmarshal(data, &pfx); err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, ci := range pfx.contents() {
		if ci.ContentType.Equal(oidEncryptedData) {
			var ed encryptedData
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
				t.Fatal(err)
			}
			if !ed.EncryptedContentInfo.ContentEncryptionAlgorithm.Algorithm.Equal(oidPBEWithSHAAnd40BitRC2CBC) {
				return false
			}
			seen = true
		}
		for _, bag := range ci.plainBags() {
			var key encryptedPrivateKeyInfo
			if bag.ID.Equal(oidShroudedKeyBag) {
				if _, err := asn1.Unmarshal(bag.Value.Bytes, &key); err != nil {
					t.Fatal(err)
				}
				if !key.Algorithm.Algorithm.Equal(oidPBEWithSHAAnd3KeyTripleDESCBC) {
					return false
				}
			}
		}
	}
	return seen
}

// TestRC2: the RC2 decryption gives the plain texts of RFC 2268's test
// vectors.
func TestRC2(t *testing.T) {
	for _, tc := range []struct {
		key, plain, cipher string
		bits               int
	}{
		{"0000000000000000", "0000000000000000", "ebb773f993278eff", 63},
		{"ffffffffffffffff", "ffffffffffffffff", "278b27e42e2f0d49", 64},
		{"3000000000000000", "1000000000000001", "30649edf9be7d2c2", 64},
		{"88", "0000000000000000", "61a8a244adacccf0", 64},
		{"88bca90e90875a", "0000000000000000", "6ccf4308974c267f", 64},
		{"88bca90e90875a7f0f79c384627bafb2", "0000000000000000", "1a807d272bbe5db1", 64},
		{"88bca90e90875a7f0f79c384627bafb2", "0000000000000000", "2269552ab0f85ca6", 128},
		{"88bca90e90875a7f0f79c384627bafb216f80a6f85920584c42fceb0be255daf1e", "0000000000000000", "5b78d3a43dfff1f1", 129},
	} {
		key, _ := hex.DecodeString(tc.key)
		ciphertext, _ := hex.DecodeString(tc.cipher)
		var plain [8]byte
		newRC2(key, tc.bits).Decrypt(plain[:], ciphertext)
		if got := hex.EncodeToString(plain[:]); got != tc.plain {
			t.Errorf("key %s, %d bits: %s, want %s", tc.key, tc.bits, got, tc.plain)
		}
	}
}
