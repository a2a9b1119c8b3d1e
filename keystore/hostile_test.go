package keystore

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/safe"
)

// badIVPKCS12 builds a PKCS#12 file without a MAC whose encrypted contents
// name AES-256-CBC with an 8-byte IV: go-pkcs12 v0.6.0 panicked on it
// (cipher.NewCBCDecrypter: IV length must equal block size), which ended
// `caddy validate` and a running Caddy at its next profiles_file reload.
func badIVPKCS12(t testing.TB) []byte {
	t.Helper()
	marshal := func(v any) []byte {
		der, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	hmacSHA256 := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}, Parameters: asn1.NullRawValue}
	kdf := pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: marshal(pbkdf2Params{
		Salt: asn1.RawValue{Tag: asn1.TagOctetString, Bytes: []byte("salt")}, Iterations: 1, Prf: hmacSHA256,
	})}}
	aes256CBC := asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	iv := marshal([]byte("8bytesIV"))
	enc := pkix.AlgorithmIdentifier{Algorithm: aes256CBC, Parameters: asn1.RawValue{FullBytes: iv}}
	var ed encryptedData
	ed.EncryptedContentInfo.ContentType = oidData
	ed.EncryptedContentInfo.ContentEncryptionAlgorithm = pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: marshal(pbes2Params{Kdf: kdf, EncryptionScheme: enc})}}
	ed.EncryptedContentInfo.EncryptedContent = make([]byte, 16)
	contents := []contentInfo{{ContentType: oidEncryptedData, Content: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: marshal(ed)}}}
	safe := marshal(marshal(contents))
	pfx := struct {
		Version  int
		AuthSafe contentInfo
	}{3, contentInfo{ContentType: oidData, Content: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: safe}}}
	return marshal(pfx)
}

func TestPKCS12BadIV(t *testing.T) {
	data := badIVPKCS12(t)
	kept, err := os.ReadFile(filepath.Join("testdata", "bad-iv.p12"))
	if err != nil {
		t.Fatal(err)
	}
	if string(kept) != string(data) {
		t.Fatalf("testdata/bad-iv.p12 is not the file badIVPKCS12 builds (%d bytes, want %d)", len(kept), len(data))
	}
	for _, typ := range []Type{PKCS12, Auto} {
		path := filepath.Join(t.TempDir(), "bad.p12")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path, typ, "", ""); err == nil {
			t.Fatalf("type %q: loaded a PKCS#12 whose IV is 8 bytes", typ)
		}
	}
}

// FuzzLoadPKCS12: no input makes the PKCS#12 reader panic (a panic would be
// recovered in production, but is a bug all the same) or derive keys
// longer than the checks allow. Seeds: a good file, the bad IV one, and
// what keytool and OpenSSL write beyond go-pkcs12's readers: an Ed25519
// key pair with a trusted certificate entry, and the older encryptions
// (RC2, 3DES) with one.
func FuzzLoadPKCS12(f *testing.F) {
	good := gatewayP12(f)
	f.Add(good, "p12pass")
	f.Add(good, "")
	f.Add(badIVPKCS12(f), "")
	for _, seed := range pkcs12Seeds(f) {
		f.Add(seed, "storepass")
	}
	iterationLimit = 10_000
	defer func() { iterationLimit = MaxIterations }()
	f.Fuzz(func(t *testing.T, data []byte, password string) {
		if _, err := decode("fuzz.p12", data, PKCS12, password, ""); errors.Is(err, safe.ErrPanic) {
			t.Fatal(err)
		}
	})
}

// pkcs12Seeds returns PKCS#12 files, password "storepass", in the
// iteration counts the fuzz test allows: a keytool key store of an Ed25519
// key pair and a trusted certificate entry (PBES2), an OpenSSL -legacy one
// of an RSA key pair into which keytool imported a trusted certificate
// (RC2-40, 3DES, a SHA-1 MAC), an OpenSSL one of an Ed25519 key.
func pkcs12Seeds(t testing.TB) [][]byte {
	dir := t.TempDir()
	ed := filepath.Join(dir, "ed.p12")
	keytool := keytoolIn(t, ed, "PKCS12", "-Dkeystore.pkcs12.certPbeIterationCount=1000", "-Dkeystore.pkcs12.keyPbeIterationCount=1000", "-Dkeystore.pkcs12.macIterationCount=1000")
	keytool("-genkeypair", "-alias", "ed", "-keyalg", "Ed25519", "-dname", "CN=gateway ed25519", "-validity", "30")
	caFile := backendCA(t, dir)
	keytool("-importcert", "-alias", "backend-ca", "-file", caFile)
	key, cert, legacy, osEd := filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem"), filepath.Join(dir, "legacy.p12"), filepath.Join(dir, "os-ed.p12")
	tool(t, "openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", key, "-subj", "/CN=gateway for r", "-days", "30", "-out", cert)
	tool(t, "openssl", "pkcs12", "-export", "-legacy", "-in", cert, "-inkey", key, "-name", "partner-r", "-out", legacy, "-passout", "pass:storepass")
	keytoolIn(t, legacy, "PKCS12")("-importcert", "-alias", "backend-ca", "-file", caFile)
	tool(t, "openssl", "genpkey", "-algorithm", "ed25519", "-out", key)
	tool(t, "openssl", "req", "-x509", "-new", "-key", key, "-subj", "/CN=gateway ed25519", "-days", "30", "-out", cert)
	tool(t, "openssl", "pkcs12", "-export", "-in", cert, "-inkey", key, "-name", "partner-ed", "-out", osEd, "-passout", "pass:storepass", "-iter", "1000")
	var seeds [][]byte
	for _, p := range []string{ed, legacy, osEd} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, data)
	}
	return seeds
}
