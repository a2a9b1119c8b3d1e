// Package keystore loads Java KeyStores (JKS) and PKCS#12 files, as WSO2,
// Apigee and other Java-based gateways keep their key pairs and trust
// stores, into Go's TLS types.
package keystore

import (
	"bytes"
	"crypto"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	jks "github.com/pavlo-v-chernykh/keystore-go/v4"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/caddy-mtls/caddy-mtls/internal/bounded"
	"github.com/caddy-mtls/caddy-mtls/internal/safe"
)

// Type is a keystore file format.
type Type string

// The formats.
const (
	JKS    Type = "jks"
	PKCS12 Type = "pkcs12"
)

// Auto is the type of a keystore whose format Load tells from its content.
const Auto Type = ""

// ParseType returns the type named s ("jks", "pkcs12", "p12", "pfx", case
// insensitive), or, when s is empty, the type the file name's extension
// says, or Auto for .keystore and .truststore files, which Java writes as
// JKS or (since Java 9) PKCS#12.
func ParseType(s, path string) (Type, error) {
	if s == "" {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".jks":
			return JKS, nil
		case ".p12", ".pfx":
			return PKCS12, nil
		case ".keystore", ".truststore", ".ks", ".ts":
			return Auto, nil
		}
		return "", fmt.Errorf("cannot tell the keystore type of %s from its name: give the type (jks or pkcs12)", filepath.Base(path))
	}
	switch strings.ToLower(s) {
	case "jks":
		return JKS, nil
	case "pkcs12", "p12", "pfx":
		return PKCS12, nil
	}
	return "", fmt.Errorf("unknown keystore type %q (want jks or pkcs12)", s)
}

// KeyPair is a private key entry of a keystore.
type KeyPair struct {
	Alias       string
	Certificate tls.Certificate // leaf first, then its chain; Leaf is set
}

// Contents is what a keystore holds.
type Contents struct {
	// KeyPairs, sorted by alias.
	KeyPairs []KeyPair
	// Trusted certificates (JKS trusted certificate entries, PKCS#12
	// certificates without a key).
	Trusted []*x509.Certificate
	// Type is the format the file was read as: the one its content shows
	// (JKS or PKCS12), whatever type it was declared as.
	Type Type
}

// KeyPair returns the key pair with the alias (JKS aliases are compared case
// insensitively, as Java does).
func (s *Contents) KeyPair(alias string) (KeyPair, bool) {
	for _, kp := range s.KeyPairs {
		if kp.Alias == alias || strings.EqualFold(kp.Alias, alias) {
			return kp, true
		}
	}
	return KeyPair{}, false
}

// ErrPassword is wrapped by errors that come from a wrong password (or a
// corrupt file: the formats cannot tell them apart).
var ErrPassword = errors.New("wrong password or corrupt keystore")

// MaxFileSize is the largest keystore file Load reads. A trust store of
// every CA in a browser's root program is a few hundred KiB.
const MaxFileSize = 4 << 20

// Load reads a keystore file. keyPassword decrypts the private keys of a JKS
// and defaults to password. A JKS or PKCS#12 file is read as what its
// content is, whichever of the two typ declares (as Java 9+ does); the
// returned Contents' Type says which.
func Load(path string, typ Type, password, keyPassword string) (*Contents, error) {
	data, err := bounded.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, err
	}
	return decode(filepath.Base(path), data, typ, password, keyPassword)
}

// decode reads a keystore's bytes; name is for errors.
func decode(name string, data []byte, typ Type, password, keyPassword string) (*Contents, error) {
	if keyPassword == "" {
		keyPassword = password
	}
	// As Java 9+ reads them (keystore.type.compat), a JKS declared PKCS12
	// and a PKCS#12 file declared JKS are read as what their content is.
	if detected := sniff(data); detected != Auto {
		typ = detected
	} else if typ == Auto {
		typ = PKCS12
	}
	// The readers are third-party code fed a file anyone with write access
	// to its folder can replace: a panic in one must not end the process.
	st, err := safe.Decode("keystore "+name, func() (*Contents, error) {
		switch typ {
		case JKS:
			return loadJKS(data, password, keyPassword)
		case PKCS12:
			return loadPKCS12(data, password)
		}
		return nil, fmt.Errorf("unknown keystore type %q", typ)
	})
	if st != nil {
		st.Type = typ
	}
	return st, err
}

// sniff tells a keystore's format from its first bytes: JKS by its magic
// number FEEDFEED, PKCS#12 by the ASN.1 SEQUENCE (0x30) it starts with;
// Auto when neither.
func sniff(data []byte) Type {
	switch {
	case bytes.HasPrefix(data, []byte{0xFE, 0xED, 0xFE, 0xED}):
		return JKS
	case len(data) > 0 && data[0] == 0x30:
		return PKCS12
	}
	return Auto
}

func loadJKS(data []byte, password, keyPassword string) (*Contents, error) {
	// The JKS reader allocates whatever a length or count in the file says
	// before reading it: a corrupt one would ask for gigabytes, and the Go
	// runtime ends the whole process when it cannot have them.
	digestAt, err := checkJKSLayout(data)
	if err != nil {
		return nil, fmt.Errorf("reading JKS: %w", err)
	}
	ks := jks.New()
	if err := ks.Load(bytes.NewReader(data), []byte(password)); err != nil {
		// The reader has no error of its own for a digest that does not
		// match (a wrong password, or a changed byte): compare it here.
		if !bytes.Equal(jksDigest(data[:digestAt], password), data[digestAt:digestAt+sha1.Size]) {
			return nil, fmt.Errorf("%w: %v", ErrPassword, err)
		}
		return nil, fmt.Errorf("reading JKS: %w", err)
	}
	st := new(Contents)
	for _, alias := range ks.Aliases() {
		switch {
		case ks.IsPrivateKeyEntry(alias):
			entry, err := ks.GetPrivateKeyEntry(alias, []byte(keyPassword))
			if err != nil {
				return nil, fmt.Errorf("key entry %q: %w: %v", alias, ErrPassword, err)
			}
			key, err := x509.ParsePKCS8PrivateKey(entry.PrivateKey)
			if err != nil {
				return nil, fmt.Errorf("key entry %q: parsing private key: %w", alias, err)
			}
			chain := make([][]byte, len(entry.CertificateChain))
			for i, c := range entry.CertificateChain {
				chain[i] = c.Content
			}
			kp, err := newKeyPair(alias, key, chain)
			if err != nil {
				return nil, err
			}
			st.KeyPairs = append(st.KeyPairs, kp)
		case ks.IsTrustedCertificateEntry(alias):
			entry, err := ks.GetTrustedCertificateEntry(alias)
			if err != nil {
				return nil, fmt.Errorf("trusted entry %q: %w", alias, err)
			}
			cert, err := x509.ParseCertificate(entry.Certificate.Content)
			if err != nil {
				return nil, fmt.Errorf("trusted entry %q: %w", alias, err)
			}
			st.Trusted = append(st.Trusted, cert)
		}
	}
	sortKeyPairs(st)
	return st, nil
}

// checkJKSLayout walks the layout of a JKS (magic, version, entries, the
// digest at the end) and reports an error unless every length and count in it
// is matched by bytes actually there, so that what reading it allocates is
// bounded by the file's size (about ten times it at worst: a chain of
// 4-byte certificates gets a 40-byte slot each). It checks nothing else:
// the JKS reader does. It returns where the digest starts; bytes after the
// digest are ignored, as Java does.
func checkJKSLayout(data []byte) (digestAt int, err error) {
	rest := data
	corrupt := func(what string) error {
		return fmt.Errorf("corrupt keystore: %s at byte %d does not fit in the file's %d bytes", what, len(data)-len(rest), len(data))
	}
	take := func(n uint64) bool {
		if n > uint64(len(rest)) {
			return false
		}
		rest = rest[n:]
		return true
	}
	u16 := func() (uint64, bool) {
		if len(rest) < 2 {
			return 0, false
		}
		v := binary.BigEndian.Uint16(rest)
		rest = rest[2:]
		return uint64(v), true
	}
	u32 := func() (uint64, bool) {
		if len(rest) < 4 {
			return 0, false
		}
		v := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		return uint64(v), true
	}
	// a 2-byte length and that many bytes (an alias, a certificate type)
	str := func() bool { n, ok := u16(); return ok && take(n) }
	// a certificate: its type (version 2), a 4-byte length, its bytes
	cert := func(version uint64) bool {
		if version == 2 && !str() {
			return false
		}
		n, ok := u32()
		return ok && take(n)
	}

	magic, ok := u32()
	if !ok || magic != 0xFEEDFEED {
		return 0, errors.New("not a JKS (no FEEDFEED magic number)")
	}
	version, ok := u32()
	if !ok {
		return 0, corrupt("the version")
	}
	if version != 1 && version != 2 {
		return 0, fmt.Errorf("unknown JKS version %d", version)
	}
	entries, ok := u32()
	if !ok {
		return 0, corrupt("the number of entries")
	}
	for i := uint64(0); i < entries; i++ {
		tag, ok := u32()
		if !ok || !str() || !take(8) { // tag, alias, creation time
			return 0, corrupt(fmt.Sprintf("entry %d", i+1))
		}
		switch tag {
		case 1: // a private key and its certificate chain
			keyLen, ok := u32()
			if !ok || !take(keyLen) {
				return 0, corrupt(fmt.Sprintf("the private key of entry %d", i+1))
			}
			certs, ok := u32()
			if !ok {
				return 0, corrupt(fmt.Sprintf("the chain of entry %d", i+1))
			}
			for j := uint64(0); j < certs; j++ {
				if !cert(version) {
					return 0, corrupt(fmt.Sprintf("certificate %d of entry %d", j+1, i+1))
				}
			}
		case 2: // a trusted certificate
			if !cert(version) {
				return 0, corrupt(fmt.Sprintf("the certificate of entry %d", i+1))
			}
		default:
			return 0, fmt.Errorf("corrupt keystore: entry %d has the unknown tag %d", i+1, tag)
		}
	}
	if len(rest) < sha1.Size {
		return 0, fmt.Errorf("corrupt keystore: %d bytes after the entries where the %d-byte digest should be", len(rest), sha1.Size)
	}
	return len(data) - len(rest), nil
}

// jksDigest is the digest that ends a JKS whose bytes before it are
// content, as the JKS reader computes it: SHA-1 of the password (each of
// its bytes as a UTF-16 code unit), the words "Mighty Aphrodite" and the
// content.
func jksDigest(content []byte, password string) []byte {
	h := sha1.New()
	for i := 0; i < len(password); i++ {
		h.Write([]byte{0, password[i]})
	}
	h.Write([]byte("Mighty Aphrodite"))
	h.Write(content)
	return h.Sum(nil)
}

// loadPKCS12 reads a PKCS#12 file: key pairs, each with its chain and its
// friendly name as its alias, and trusted certificates (Java's trusted
// certificate entries), or a trust store of certificates only.
// go-pkcs12's ToPEM reads most files; walkBags reads what it refuses
// (Java's trusted certificate entries, Ed25519 keys); DecodeChain and
// DecodeTrustStore read the rest (files without a MAC, one key pair, or
// certificates only).
func loadPKCS12(data []byte, password string) (*Contents, error) {
	if err := checkPKCS12Work(data, password); err != nil {
		return nil, err
	}
	var trusted []*x509.Certificate
	blocks, err := pkcs12.ToPEM(data, password)
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return nil, fmt.Errorf("%w: %v", ErrPassword, err)
	}
	if err != nil {
		var walkErr error
		if blocks, trusted, walkErr = walkBags(data, password); errors.Is(walkErr, ErrPassword) || errors.Is(walkErr, errTooMuchDerivation) {
			return nil, fmt.Errorf("reading PKCS#12: %w", walkErr)
		} else if walkErr != nil {
			return loadPKCS12Otherwise(data, password, err)
		}
	}
	if slices.ContainsFunc(blocks, isKeyBlock) {
		return keyPairsOfBlocks(blocks, trusted)
	}
	if len(trusted) > 0 && !slices.ContainsFunc(blocks, func(b *pem.Block) bool { return b.Type == "CERTIFICATE" }) {
		return &Contents{Trusted: trusted}, nil
	}
	// Certificates only, not all marked trusted: go-pkcs12's reader of
	// trust stores refuses them, with its reason.
	return loadPKCS12Otherwise(data, password, errors.New("pkcs12: private key missing"))
}

// loadPKCS12Otherwise reads a PKCS#12 file that neither ToPEM nor walkBags
// reads (toPEMErr is ToPEM's reason): one key pair (DecodeChain), or a
// trust store of certificates only.
func loadPKCS12Otherwise(data []byte, password string, toPEMErr error) (*Contents, error) {
	key, cert, cas, err := pkcs12.DecodeChain(data, password)
	if err == nil {
		chain := [][]byte{cert.Raw}
		for _, c := range cas {
			chain = append(chain, c.Raw)
		}
		kp, err := newKeyPair("", key, chain)
		if err != nil {
			return nil, err
		}
		return &Contents{KeyPairs: []KeyPair{kp}}, nil
	}
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return nil, fmt.Errorf("%w: %v", ErrPassword, err)
	}
	if plainKeyBags(data) > 1 {
		// Several keys, which neither reader of them could read (a bag or
		// attribute they do not know): ToPEM's reason is the one.
		return nil, fmt.Errorf("reading PKCS#12 of several key pairs: %v", toPEMErr)
	}
	certs, tsErr := pkcs12.DecodeTrustStore(data, password)
	if tsErr != nil {
		if errors.Is(tsErr, pkcs12.ErrIncorrectPassword) {
			return nil, fmt.Errorf("%w: %v", ErrPassword, tsErr)
		}
		return nil, fmt.Errorf("reading PKCS#12: %v (as a trust store: %v)", err, tsErr)
	}
	return &Contents{Trusted: certs}, nil
}

func isKeyBlock(b *pem.Block) bool { return b.Type == "PRIVATE KEY" }

// keyPairsOfBlocks makes the key pairs of a PKCS#12 file from its bags read
// as ToPEM's blocks (with their friendlyName and localKeyId headers), as
// Java's keytool writes a keystore of several entries: each key with the
// certificate of the same localKeyId (or, lacking one, of the same public
// key), its alias the key's friendly name (or its certificate's), and its
// chain from the file's other certificates. trusted are the file's trusted
// certificate entries.
func keyPairsOfBlocks(blocks []*pem.Block, trusted []*x509.Certificate) (st *Contents, err error) {
	var keys, certs []*pem.Block
	for _, b := range blocks {
		switch b.Type {
		case "PRIVATE KEY":
			keys = append(keys, b)
		case "CERTIFICATE":
			certs = append(certs, b)
		}
	}
	parsed := make([]*x509.Certificate, len(certs))
	for i, b := range certs {
		if parsed[i], err = x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("reading PKCS#12: certificate %d: %w", i+1, err)
		}
	}
	st = &Contents{Trusted: trusted}
	for i, b := range keys {
		name := b.Headers["friendlyName"]
		// ToPEM gives RSA keys as PKCS #1 and EC keys as SEC 1; walkBags
		// others as PKCS #8.
		var key any
		if key, err = x509.ParsePKCS1PrivateKey(b.Bytes); err != nil {
			if key, err = x509.ParseECPrivateKey(b.Bytes); err != nil {
				if key, err = x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
					return nil, fmt.Errorf("reading PKCS#12: key entry %q: parsing private key: %w", name, err)
				}
			}
		}
		leaf := -1
		if id := b.Headers["localKeyId"]; id != "" {
			leaf = slices.IndexFunc(certs, func(c *pem.Block) bool { return c.Headers["localKeyId"] == id })
		} else {
			leaf = slices.IndexFunc(parsed, func(c *x509.Certificate) bool { return CheckKeyMatches(c, key) == nil })
		}
		if leaf < 0 {
			return nil, fmt.Errorf("reading PKCS#12: key entry %q has no certificate of its localKeyId", name)
		}
		alias := name
		if alias == "" {
			alias = certs[leaf].Headers["friendlyName"]
		}
		if alias == "" && len(keys) > 1 {
			alias = fmt.Sprintf("key %d", i+1)
		}
		// Aliases are looked up case insensitively: two that differ only
		// so would let one name give out the other's identity.
		if _, dup := st.KeyPair(alias); dup {
			return nil, fmt.Errorf("reading PKCS#12: two key entries named %q", alias)
		}
		kp, err := newKeyPair(alias, key, chainOf(parsed[leaf], parsed))
		if err != nil {
			return nil, err
		}
		st.KeyPairs = append(st.KeyPairs, kp)
	}
	sortKeyPairs(st)
	return st, nil
}

// chainOf returns leaf's DER followed by its issuers' among certs (by name,
// and by a signature their key made), as far as they go (at most ten, and
// no certificate twice).
func chainOf(leaf *x509.Certificate, certs []*x509.Certificate) [][]byte {
	chain := [][]byte{leaf.Raw}
	for cur := leaf; len(chain) < 10 && !bytes.Equal(cur.RawIssuer, cur.RawSubject); {
		next := -1
		for i, c := range certs {
			if bytes.Equal(c.RawSubject, cur.RawIssuer) && c.CheckSignature(cur.SignatureAlgorithm, cur.RawTBSCertificate, cur.Signature) == nil &&
				!slices.ContainsFunc(chain, func(der []byte) bool { return bytes.Equal(der, c.Raw) }) {
				next = i
				break
			}
		}
		if next < 0 {
			break
		}
		cur = certs[next]
		chain = append(chain, cur.Raw)
	}
	return chain
}

func newKeyPair(alias string, key any, chain [][]byte) (KeyPair, error) {
	if len(chain) == 0 {
		return KeyPair{}, fmt.Errorf("key entry %q has no certificate", alias)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return KeyPair{}, fmt.Errorf("key entry %q: parsing certificate: %w", alias, err)
	}
	if err := CheckKeyMatches(leaf, key); err != nil {
		return KeyPair{}, fmt.Errorf("key entry %q: %w", alias, err)
	}
	return KeyPair{Alias: alias, Certificate: tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}}, nil
}

// CheckKeyMatches returns an error unless key is the private key of cert.
func CheckKeyMatches(cert *x509.Certificate, key any) error {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return fmt.Errorf("unsupported private key type %T", key)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("private key does not match the certificate")
	}
	return nil
}

func sortKeyPairs(st *Contents) {
	sort.Slice(st.KeyPairs, func(i, j int) bool { return st.KeyPairs[i].Alias < st.KeyPairs[j].Alias })
}
