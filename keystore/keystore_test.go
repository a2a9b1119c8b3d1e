package keystore

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

func TestJKS(t *testing.T) {
	dir := t.TempDir()
	ca := demopki.Must(demopki.NewCA("JKS CA"))
	alice := demopki.Must(ca.Issue(demopki.Options{CommonName: "alice"}))
	bob := demopki.Must(ca.Issue(demopki.Options{CommonName: "bob"}))
	path := filepath.Join(dir, "clients.jks")
	err := demopki.WriteJKS(path, "storepass", "keypass",
		demopki.JKSEntry{Alias: "alice", Cert: alice, Key: true},
		demopki.JKSEntry{Alias: "Bob", Cert: bob, Key: true},
		demopki.JKSEntry{Alias: "ca", Cert: ca})
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
	if err := demopki.WriteJKS(same, "secret", "secret", demopki.JKSEntry{Alias: "alice", Cert: alice, Key: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(same, JKS, "secret", ""); err != nil {
		t.Fatal(err)
	}
}

func TestPKCS12(t *testing.T) {
	dir := t.TempDir()
	ca := demopki.Must(demopki.NewCA("P12 CA"))
	mid := demopki.Must(ca.Issue(demopki.Options{CommonName: "P12 Intermediate", IsCA: true}))
	gw := demopki.Must(mid.Issue(demopki.Options{CommonName: "gateway"}))
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
	if err := demopki.WriteTrustP12(trust, "t", ca, mid); err != nil {
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
	ca := demopki.Must(demopki.NewCA("OpenSSL CA"))
	gw := demopki.Must(ca.Issue(demopki.Options{CommonName: "gateway"}))
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

// TestJKSCorrupt: a JKS whose lengths or counts claim more than the file
// holds is refused with a reason before anything is allocated for it (the
// JKS reader would ask for gigabytes, and the Go runtime ends the process
// when it cannot have them), and so is every truncation of a good one.
func TestJKSCorrupt(t *testing.T) {
	dir := t.TempDir()
	ca := demopki.Must(demopki.NewCA("JKS CA"))
	alice := demopki.Must(ca.Issue(demopki.Options{CommonName: "alice"}))
	keyJKS := jksBytes(t, "storepass", demopki.JKSEntry{Alias: "alice", Cert: alice, Key: true})
	trustJKS := jksBytes(t, "storepass", demopki.JKSEntry{Alias: "ca", Cert: ca})

	// The offsets of the fields in a one-entry version 2 keystore.
	be := binary.BigEndian
	const entryAt = 12 // magic, version, number of entries
	aliasEnd := func(data []byte) int { return entryAt + 4 + 2 + int(be.Uint16(data[entryAt+4:])) }
	keyLenAt := aliasEnd(keyJKS) + 8 // after the creation time
	chainLenAt := keyLenAt + 4 + int(be.Uint32(keyJKS[keyLenAt:]))
	certLenAt := chainLenAt + 4 + 2 + int(be.Uint16(keyJKS[chainLenAt+4:])) // after the type "X509"
	trustedLenAt := aliasEnd(trustJKS) + 8 + 2 + int(be.Uint16(trustJKS[aliasEnd(trustJKS)+8:]))

	huge := func(data []byte, at int) []byte {
		data = bytes.Clone(data)
		be.PutUint32(data[at:], 0xFFFFFFFF)
		return data
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"entries", huge(keyJKS, 8), "entry 2"},
		{"key length", huge(keyJKS, keyLenAt), "the private key of entry 1"},
		{"chain length", huge(keyJKS, chainLenAt), "certificate 2 of entry 1"},
		{"certificate length", huge(keyJKS, certLenAt), "certificate 1 of entry 1"},
		{"trusted certificate length", huge(trustJKS, trustedLenAt), "the certificate of entry 1"},
		{"unknown tag", huge(keyJKS, entryAt), "unknown tag"},
		{"no whole digest", keyJKS[:len(keyJKS)-1], "19 bytes after the entries"},
		{"version", huge(keyJKS, 4), "unknown JKS version 4294967295"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".jks")
		if err := os.WriteFile(path, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path, Auto, "storepass", "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
	// A changed byte inside an entry: the digest no longer matches, which
	// the reader cannot tell from a wrong password.
	changed := bytes.Clone(keyJKS)
	changed[certLenAt+4+10] ^= 0xFF
	if _, err := loadJKS(changed, "storepass", "storepass"); !errors.Is(err, ErrPassword) {
		t.Fatalf("a changed certificate byte: %v, want ErrPassword", err)
	}
	// Bytes after the digest are ignored, as Java's reader does.
	if _, err := loadJKS(append(bytes.Clone(keyJKS), 0), "storepass", "storepass"); err != nil {
		t.Fatalf("a byte after the digest: %v", err)
	}
	for _, data := range [][]byte{keyJKS, trustJKS} {
		for n := 0; n < len(data); n++ {
			if _, err := loadJKS(data[:n], "storepass", "storepass"); err == nil {
				t.Fatalf("the first %d of %d bytes loaded", n, len(data))
			}
		}
	}

	big := filepath.Join(dir, "big.jks")
	if err := os.WriteFile(big, append(bytes.Clone(keyJKS), make([]byte, MaxFileSize)...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big, JKS, "storepass", ""); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a file over MaxFileSize: %v", err)
	}
}

// jksBytes returns the bytes of a JKS of entries written with password
// (the store's and the keys'), a layout the check accepts.
func jksBytes(t testing.TB, password string, entries ...demopki.JKSEntry) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.jks")
	if err := demopki.WriteJKS(path, password, password, entries...); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkJKSLayout(data); err != nil {
		t.Fatalf("a good keystore refused: %v", err)
	}
	return data
}

// TestJKSDigest: jksDigest is the JKS reader's digest, a non-ASCII password
// too: it matches the digest that ends a keystore written with the password,
// and not with another.
func TestJKSDigest(t *testing.T) {
	alice := demopki.Must(demopki.Must(demopki.NewCA("JKS CA")).Issue(demopki.Options{CommonName: "alice"}))
	for _, password := range []string{"storepass", "pässwörd"} {
		data := jksBytes(t, password, demopki.JKSEntry{Alias: "alice", Cert: alice, Key: true})
		at, _ := checkJKSLayout(data)
		if !bytes.Equal(jksDigest(data[:at], password), data[at:]) || bytes.Equal(jksDigest(data[:at], password+"x"), data[at:]) {
			t.Fatalf("password %q: the digest is not the reader's", password)
		}
		if _, err := loadJKS(data, password, password); err != nil {
			t.Fatalf("password %q: %v", password, err)
		}
		if _, err := loadJKS(data, password+"x", password); !errors.Is(err, ErrPassword) {
			t.Fatalf("password %q, another given: %v", password, err)
		}
	}
}

// FuzzLoadJKS: every input returns, with a keystore or an error, having
// allocated a small multiple of its size at most (the second seed asked for
// 160 GB before the layout check, which ended the whole process). The last
// seed is keytool's: an Ed25519 key pair and a trusted certificate entry.
func FuzzLoadJKS(f *testing.F) {
	ca := demopki.Must(demopki.NewCA("JKS CA"))
	alice := demopki.Must(ca.Issue(demopki.Options{CommonName: "alice"}))
	f.Add(jksBytes(f, "storepass", demopki.JKSEntry{Alias: "alice", Cert: alice, Key: true}, demopki.JKSEntry{Alias: "ca", Cert: ca}))
	f.Add([]byte{0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'k', 0xFF, 0xFF, 0xFF, 0xFF})
	// A private key of 100 MB claimed: fresh memory, which the system gives.
	f.Add([]byte{0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 0, 0x06, 0, 0, 0})
	edJKS := filepath.Join(f.TempDir(), "ed.jks")
	keytool := keytoolIn(f, edJKS, "JKS")
	keytool("-genkeypair", "-alias", "ed", "-keyalg", "Ed25519", "-dname", "CN=gateway ed25519", "-validity", "30")
	keytool("-importcert", "-alias", "backend-ca", "-file", backendCA(f, filepath.Dir(edJKS)))
	edData, err := os.ReadFile(edJKS)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(edData)
	f.Fuzz(func(t *testing.T, data []byte) {
		// Allocations of fresh memory need not fail where the system
		// overcommits: count what was asked for instead.
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _ = loadJKS(data, "storepass", "storepass")
		runtime.ReadMemStats(&after)
		if asked, most := after.TotalAlloc-before.TotalAlloc, uint64(16*len(data)+1<<20); asked > most {
			t.Fatalf("%d bytes of input made %d bytes of allocations (at most %d)", len(data), asked, most)
		}
	})
}

// TestPKCS12Iterations: a PKCS#12 file whose MAC asks for more key
// derivation than MaxIterations is refused before any is done, with the
// count in the error, whether the MAC is the classic one or PBMAC1.
func TestPKCS12Iterations(t *testing.T) {
	dir := t.TempDir()
	gw := demopki.Must(demopki.Must(demopki.NewCA("P12 CA")).Issue(demopki.Options{CommonName: "gateway"}))
	path := filepath.Join(dir, "gw.p12")
	if err := gw.WriteP12(path, "p12pass"); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pfx pfxPDU
	if _, err := asn1.Unmarshal(good, &pfx); err != nil || pfx.MacData.Iterations != 2048 {
		t.Fatalf("the layout read does not find go-pkcs12's 2048 MAC iterations: %d, %v", pfx.MacData.Iterations, err)
	}
	with := func(p pfxPDU) []byte {
		data, err := asn1.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	if !bytes.Equal(with(pfx), good) {
		t.Fatal("the layout read does not marshal back to the file")
	}
	atMost := pfx
	atMost.MacData.Iterations = MaxIterations
	if err := checkPKCS12Work(with(atMost), ""); err != nil {
		t.Fatalf("MaxIterations refused: %v", err)
	}
	classic := pfx
	classic.MacData.Iterations = 1 << 40
	hmacSHA256 := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}, Parameters: asn1.NullRawValue}
	// marshal returns v's DER, for an algorithm's parameters.
	marshal := func(v any) asn1.RawValue {
		t.Helper()
		der, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return asn1.RawValue{FullBytes: der}
	}
	pbkdf2 := func(iterations, keyLength int) pkix.AlgorithmIdentifier {
		params := pbkdf2Params{Salt: asn1.RawValue{Tag: asn1.TagOctetString, Bytes: []byte("saltsalt")}, Iterations: iterations, KeyLength: keyLength, Prf: hmacSHA256}
		return pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: marshal(params)}
	}
	withPBMAC1 := func(kdf pkix.AlgorithmIdentifier) pfxPDU {
		p := pfx
		p.MacData.Mac.Algorithm = pkix.AlgorithmIdentifier{Algorithm: oidPBMAC1, Parameters: marshal(pbmac1Params{Kdf: kdf, MacAlg: hmacSHA256})}
		return p
	}
	pbmac1 := withPBMAC1(pbkdf2(1<<40, 32))
	longKey := withPBMAC1(pbkdf2(1, 1<<40)) // a key of 2^40 bytes in one iteration

	// The certificates' encrypted contents (PBES2) asking for 2^40, the MAC
	// as it was: reached before the password is checked when there is no MAC.
	var safe []byte
	var contents []contentInfo
	if _, err := asn1.Unmarshal(pfx.AuthSafe.Content.Bytes, &safe); err != nil {
		t.Fatal(err)
	}
	if _, err := asn1.Unmarshal(safe, &contents); err != nil || len(contents) != 2 || !contents[0].ContentType.Equal(oidEncryptedData) {
		t.Fatalf("go-pkcs12's layout: %d contents, %v", len(contents), err)
	}
	var ed encryptedData
	if _, err := asn1.Unmarshal(contents[0].Content.Bytes, &ed); err != nil {
		t.Fatal(err)
	}
	ed.EncryptedContentInfo.ContentEncryptionAlgorithm = pkix.AlgorithmIdentifier{Algorithm: oidPBES2,
		Parameters: marshal(pbes2Params{Kdf: pbkdf2(1<<40, 32), EncryptionScheme: hmacSHA256})}
	edDER, err := asn1.Marshal(ed)
	if err != nil {
		t.Fatal(err)
	}
	contents[0].Content = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: edDER}
	if safe, err = asn1.Marshal(contents); err != nil {
		t.Fatal(err)
	}
	safeDER, err := asn1.Marshal(safe)
	if err != nil {
		t.Fatal(err)
	}
	encrypted := pfx
	encrypted.AuthSafe.Content = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: safeDER}
	encrypted.MacData = pfxMacData{}

	for name, tc := range map[string]struct {
		data     []byte
		password string // without a MAC, go-pkcs12 decrypts only with the empty password
	}{
		"classic MAC":                      {with(classic), "p12pass"},
		"PBMAC1":                           {with(pbmac1), "p12pass"},
		"PBMAC1 key length":                {with(longKey), "p12pass"},
		"encrypted contents without a MAC": {with(encrypted), ""},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".p12")
		if err := os.WriteFile(p, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p, PKCS12, tc.password, "")
		if err == nil || !strings.Contains(err.Error(), "1099511627776") || !errors.Is(err, errTooMuchDerivation) {
			t.Errorf("%s of 2^40: %v", name, err)
		}
	}
}

// TestPKCS12FromKeytool: a PKCS#12 keystore of several key pairs, as Java's
// keytool writes one (the default keystore type since Java 9): every key
// pair under its alias, with its chain.
func TestPKCS12FromKeytool(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.p12")
	keytool := func(args ...string) {
		t.Helper()
		cmd := exec.Command("keytool", append(args, "-keystore", path, "-storetype", "PKCS12", "-storepass", "storepass", "-noprompt")...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("keytool %s: %v: %s", args[0], err, b)
		}
	}
	keytool("-genkeypair", "-alias", "partner-a", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=gateway for a", "-validity", "30")
	keytool("-genkeypair", "-alias", "partner-b", "-keyalg", "RSA", "-keysize", "2048", "-dname", "CN=gateway for b", "-validity", "30")
	// b's certificate issued by a's key: a chain of two.
	csr, signed := filepath.Join(dir, "b.csr"), filepath.Join(dir, "b.pem")
	keytool("-certreq", "-alias", "partner-b", "-file", csr)
	keytool("-gencert", "-alias", "partner-a", "-infile", csr, "-outfile", signed, "-rfc", "-validity", "30")
	keytool("-importcert", "-alias", "partner-b", "-file", signed)

	st, err := Load(path, Auto, "storepass", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.KeyPairs) != 2 {
		t.Fatalf("%d key pairs, want 2", len(st.KeyPairs))
	}
	a, okA := st.KeyPair("partner-a")
	b, okB := st.KeyPair("Partner-B")
	if !okA || !okB || a.Certificate.Leaf.Subject.CommonName != "gateway for a" || b.Certificate.Leaf.Subject.CommonName != "gateway for b" {
		t.Fatalf("aliases: %v %v", okA, okB)
	}
	if len(a.Certificate.Certificate) != 1 || len(b.Certificate.Certificate) != 2 || !bytes.Equal(b.Certificate.Certificate[1], a.Certificate.Leaf.Raw) {
		t.Fatalf("chains: a %d, b %d certificates", len(a.Certificate.Certificate), len(b.Certificate.Certificate))
	}
	if err := CheckKeyMatches(b.Certificate.Leaf, b.Certificate.PrivateKey); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, PKCS12, "wrong", ""); !errors.Is(err, ErrPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	// keytool writes the keys in plain contents, where they are counted
	// without the password.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := plainKeyBags(data); n != 2 {
		t.Fatalf("%d key bags counted, want 2", n)
	}
}

// TestPKCS12DuplicateAliases: two key pairs whose aliases differ only in
// case are refused (the lookup by alias is case insensitive, so one name
// would give out the other's identity), as is a key without the
// certificate of its localKeyId.
func TestPKCS12DuplicateAliases(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("P12 CA"))
	block := func(c *demopki.Cert, name, id string) []*pem.Block {
		der, err := x509.MarshalECPrivateKey(c.Key.(*ecdsa.PrivateKey)) // as ToPEM gives EC keys
		if err != nil {
			t.Fatal(err)
		}
		h := map[string]string{"friendlyName": name, "localKeyId": id}
		return []*pem.Block{{Type: "PRIVATE KEY", Headers: h, Bytes: der}, {Type: "CERTIFICATE", Headers: h, Bytes: c.Cert.Raw}}
	}
	a := demopki.Must(ca.Issue(demopki.Options{CommonName: "a"}))
	b := demopki.Must(ca.Issue(demopki.Options{CommonName: "b"}))
	if st, err := keyPairsOfBlocks(append(block(a, "partner-a", "01"), block(b, "partner-b", "02")...), nil); err != nil || len(st.KeyPairs) != 2 {
		t.Fatalf("two key pairs: %v", err)
	}
	if _, err := keyPairsOfBlocks(append(block(a, "partner-a", "01"), block(b, "Partner-A", "02")...), nil); err == nil || !strings.Contains(err.Error(), "two key entries") {
		t.Fatalf("aliases differing in case: %v", err)
	}
	if _, err := keyPairsOfBlocks(append(block(a, "partner-a", "01"), block(b, "partner-b", "02")[:1]...), nil); err == nil || !strings.Contains(err.Error(), "no certificate of its localKeyId") {
		t.Fatalf("a key without its certificate: %v", err)
	}
}

// mustMarshal returns v's DER.
func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	der, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// explicit0 is der as an [0] EXPLICIT value.
func explicit0(der []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: der}
}

// gatewayP12 returns a PKCS#12 file of one key pair, password "p12pass", as
// go-pkcs12 writes it.
func gatewayP12(t testing.TB) []byte {
	t.Helper()
	gw := demopki.Must(demopki.Must(demopki.NewCA("P12 CA")).Issue(demopki.Options{CommonName: "gateway"}))
	path := filepath.Join(t.TempDir(), "gw.p12")
	if err := gw.WriteP12(path, "p12pass"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestPKCS12SeveralKeysUnreadable: a PKCS#12 file of two keys that the
// reader of several key pairs cannot read either (here: all its bags in one
// plain SafeContents, where go-pkcs12's ToPEM wants two) is refused with
// that reader's reason, not as a trust store.
func TestPKCS12SeveralKeysUnreadable(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("P12 CA"))
	marshal := func(v any) []byte { return mustMarshal(t, v) }
	explicit := explicit0
	oidKeyBag := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 1}
	oidCertBag := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
	oidX509Cert := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}
	var bags []safeBag
	for _, cn := range []string{"a", "b"} {
		c := demopki.Must(ca.Issue(demopki.Options{CommonName: cn}))
		key, err := x509.MarshalPKCS8PrivateKey(c.Key)
		if err != nil {
			t.Fatal(err)
		}
		cert := marshal(struct {
			ID   asn1.ObjectIdentifier
			Data []byte `asn1:"tag:0,explicit"`
		}{oidX509Cert, c.Cert.Raw})
		bags = append(bags, safeBag{ID: oidCertBag, Value: explicit(cert)}, safeBag{ID: oidKeyBag, Value: explicit(key)})
	}
	contents := []contentInfo{{ContentType: oidData, Content: explicit(marshal(marshal(bags)))}}
	// No MAC: go-pkcs12 reads such a file with the empty password.
	pfx := struct {
		Version  int
		AuthSafe contentInfo
	}{3, contentInfo{ContentType: oidData, Content: explicit(marshal(marshal(contents)))}}
	data := marshal(pfx)
	if n := plainKeyBags(data); n != 2 {
		t.Fatalf("%d key bags counted, want 2", n)
	}
	path := filepath.Join(t.TempDir(), "two-keys.p12")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, PKCS12, "", "")
	if err == nil || !strings.Contains(err.Error(), "of several key pairs") || !strings.Contains(err.Error(), "authenticated safe") || strings.Contains(err.Error(), "trust store") {
		t.Fatalf("two keys in one SafeContents: %v", err)
	}
}

// TestPKCS12TotalIterations: each key derivation within MaxIterations is
// not enough: a file of many shrouded keys, each asking for MaxIterations,
// would hold a config load for as many seconds. Their sum over the places
// checked before the password is bounded too (maxTotalIterations).
func TestPKCS12TotalIterations(t *testing.T) {
	good := gatewayP12(t)
	marshal := func(v any) []byte { return mustMarshal(t, v) }
	// keys returns the file with its shrouded key bag n times, each asking
	// for MaxIterations, after one asking for a negative count (which must
	// not lower the sum).
	keys := func(n int) []byte {
		var pfx pfxPDU
		if _, err := asn1.Unmarshal(good, &pfx); err != nil {
			t.Fatal(err)
		}
		contents := pfx.contents()
		if len(contents) != 2 {
			t.Fatalf("go-pkcs12's layout: %d contents", len(contents))
		}
		bags := contents[1].plainBags()
		if len(bags) != 1 || !bags[0].ID.Equal(oidShroudedKeyBag) {
			t.Fatalf("go-pkcs12's layout: %d bags", len(bags))
		}
		var key encryptedPrivateKeyInfo
		if _, err := asn1.Unmarshal(bags[0].Value.Bytes, &key); err != nil {
			t.Fatal(err)
		}
		kdf := pbkdf2Params{Salt: asn1.RawValue{Tag: asn1.TagOctetString, Bytes: []byte("saltsalt")}, Iterations: MaxIterations, KeyLength: 32,
			Prf: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}, Parameters: asn1.NullRawValue}}
		aes := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}, // AES-256-CBC
			Parameters: asn1.RawValue{FullBytes: marshal(make([]byte, 16))}}
		key.Algorithm = pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: marshal(pbes2Params{
			Kdf: pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: marshal(kdf)}}, EncryptionScheme: aes})}}
		bag := bags[0]
		bag.Value = explicit0(marshal(key))
		many := make([]safeBag, n+1)
		for i := range many {
			many[i] = bag
		}
		kdf.Iterations = -1 << 40
		key.Algorithm.Parameters = asn1.RawValue{FullBytes: marshal(pbes2Params{
			Kdf: pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: marshal(kdf)}}, EncryptionScheme: aes})}
		many[0].Value = explicit0(marshal(key))
		contents[1].Content = explicit0(marshal(marshal(many)))
		pfx.AuthSafe.Content = explicit0(marshal(marshal(contents)))
		return marshal(pfx)
	}
	within := maxTotalIterations/MaxIterations - 1 // and the MAC's 2048
	if err := checkPKCS12Work(keys(within), ""); err != nil {
		t.Fatalf("%d keys of MaxIterations: %v", within, err)
	}
	err := checkPKCS12Work(keys(within+1), "")
	if !errors.Is(err, errTooMuchDerivation) || !strings.Contains(err.Error(), "in all") {
		t.Fatalf("%d keys of MaxIterations: %v", within+1, err)
	}
}

// TestPKCS12KeyInsideEncryptedContents: a shrouded key bag inside the
// encrypted contents, readable with the configured password, asking for
// 2^40 iterations, is refused before any reader derives its key (found in
// review: the check before the password did not look there, and go-pkcs12
// derived without bound).
func TestPKCS12KeyInsideEncryptedContents(t *testing.T) {
	marshal := func(v any) []byte { return mustMarshal(t, v) }
	hmacSHA256 := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}, Parameters: asn1.NullRawValue}
	iv := make([]byte, 16)
	pbes2 := func(iterations int) pkix.AlgorithmIdentifier {
		kdf := pbkdf2Params{Salt: asn1.RawValue{Tag: asn1.TagOctetString, Bytes: []byte("saltsalt")}, Iterations: iterations, Prf: hmacSHA256}
		return pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: marshal(pbes2Params{
			Kdf:              pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: marshal(kdf)}},
			EncryptionScheme: pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: marshal(iv)}}})}}
	}
	// The inner bags, PBES2-encrypted with "pw" (2048 iterations).
	hostile := encryptedPrivateKeyInfo{Algorithm: pbes2(1 << 40), EncryptedData: make([]byte, 16)}
	inner := marshal([]safeBag{{ID: oidShroudedKeyBag, Value: explicit0(marshal(hostile))}})
	key, err := pbkdf2.Key(sha256.New, "pw", []byte("saltsalt"), 2048, 32)
	if err != nil {
		t.Fatal(err)
	}
	pad := 16 - len(inner)%16
	plain := append(inner, bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	ciphertext := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ciphertext, plain)
	var ed encryptedData
	ed.EncryptedContentInfo.ContentType = oidData
	ed.EncryptedContentInfo.ContentEncryptionAlgorithm = pbes2(2048)
	ed.EncryptedContentInfo.EncryptedContent = ciphertext
	authSafe := marshal([]contentInfo{{ContentType: oidEncryptedData, Content: explicit0(marshal(ed))}})
	// A MAC of one iteration, with "pw".
	mac := hmac.New(sha1.New, pkcs12KDF(sha1.New, 3, newP12Password("pw").bmp, []byte("macsalt"), 1, 20))
	mac.Write(authSafe)
	data := marshal(pfxPDU{Version: 3, AuthSafe: contentInfo{ContentType: oidData, Content: explicit0(marshal(authSafe))},
		MacData: pfxMacData{Mac: digestInfo{Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidSHA1, Parameters: asn1.NullRawValue}, Digest: mac.Sum(nil)},
			MacSalt: []byte("macsalt"), Iterations: 1}})
	if err := checkPKCS12Work(data, "pw"); !errors.Is(err, errTooMuchDerivation) || !strings.Contains(err.Error(), "1099511627776") {
		t.Fatalf("check with the password: %v", err)
	}
	path := filepath.Join(t.TempDir(), "nested.p12")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, PKCS12, "pw", ""); !errors.Is(err, errTooMuchDerivation) {
		t.Fatalf("Load: %v", err)
	}
}
