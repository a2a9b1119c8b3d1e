package keystore

import (
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/pbkdf2"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"unicode/utf16"
)

// MaxIterations bounds each key derivation a PKCS#12 file may ask for.
// Tools write 2,000 to 10,000 (OpenSSL 2048, Java 10000, Windows 2000); a
// hostile file can ask for 2^63 and hold a config load for good.
const MaxIterations = 1_000_000

// iterationLimit is MaxIterations, lowered by the fuzz test so that a
// mutated count costs it milliseconds rather than a second.
var iterationLimit = MaxIterations

// maxTotalIterations bounds the key derivation of one file in all, over the
// places checkPKCS12Work checks: a key store of a hundred key pairs asks for
// a million as keytool writes it (10,000 each), OpenSSL for 200,000 (2,048);
// keytool's legacy settings (50,000 a key pair, before Java 11.0.12) reach
// the bound at about 78 key pairs.
const maxTotalIterations = 4 * MaxIterations

// maxKeyLength bounds the PBKDF2 key length a file may ask for, in bytes
// (AES-256 and HMAC-SHA-512 need 64 at most).
const maxKeyLength = 64

// The PFX layout (RFC 7292, with PBMAC1 from RFC 9579), as far as what is
// readable without the password.
type (
	pfxPDU struct {
		Version  int
		AuthSafe contentInfo
		MacData  pfxMacData `asn1:"optional"`
	}
	contentInfo struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
	}
	pfxMacData struct {
		Mac        digestInfo
		MacSalt    []byte
		Iterations int `asn1:"optional,default:1"`
	}
	digestInfo struct {
		Algorithm pkix.AlgorithmIdentifier
		Digest    []byte
	}
	pbmac1Params struct {
		Kdf    pkix.AlgorithmIdentifier
		MacAlg pkix.AlgorithmIdentifier
	}
	pbes2Params struct {
		Kdf              pkix.AlgorithmIdentifier
		EncryptionScheme pkix.AlgorithmIdentifier
	}
	pbkdf2Params struct {
		Salt       asn1.RawValue
		Iterations int
		KeyLength  int                      `asn1:"optional"`
		Prf        pkix.AlgorithmIdentifier `asn1:"optional"`
	}
	pbeParams struct {
		Salt       []byte
		Iterations int
	}
	encryptedData struct {
		Version              int
		EncryptedContentInfo struct {
			ContentType                asn1.ObjectIdentifier
			ContentEncryptionAlgorithm pkix.AlgorithmIdentifier
			EncryptedContent           []byte `asn1:"tag:0,optional"`
		}
	}
	safeBag struct {
		ID         asn1.ObjectIdentifier
		Value      asn1.RawValue   `asn1:"tag:0,explicit"`
		Attributes []asn1.RawValue `asn1:"set,optional"`
	}
	encryptedPrivateKeyInfo struct {
		Algorithm     pkix.AlgorithmIdentifier
		EncryptedData []byte
	}
)

var (
	oidPBMAC1            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}
	oidPBES2             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidPKCS12PBE         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1} // pbeWithSHAAnd..., one arc below
	oidData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEncryptedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidKeyBag            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 1}
	oidShroudedKeyBag    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	errTooMuchDerivation = fmt.Errorf("more key derivation than %d iterations of %d bytes", MaxIterations, maxKeyLength)
)

// checkPKCS12Work refuses a PKCS#12 file that asks for more key derivation
// than MaxIterations (of at most maxKeyLength bytes) in any one place, or
// than maxTotalIterations in all: its MAC, its encrypted contents, the
// shrouded key bags of its plain contents, and those inside its encrypted
// contents, which are read with password (as the readers will: the readers
// derive keys without these bounds). Contents the password does not
// decrypt are left to the readers, which refuse them alike. A file that
// does not parse this far is left to the PKCS#12 reader's own errors.
func checkPKCS12Work(data []byte, password string) error {
	var pfx pfxPDU
	if _, err := asn1.Unmarshal(data, &pfx); err != nil {
		return nil
	}
	total := 0
	add := func(n int, err error) error {
		if err != nil {
			return err
		}
		if total += max(n, 0); total > maxTotalIterations { // a negative count does no work
			return fmt.Errorf("PKCS#12 file asks for more than %d iterations of key derivation in all: refused (%w)", maxTotalIterations, errTooMuchDerivation)
		}
		return nil
	}
	if alg := pfx.MacData.Mac.Algorithm; alg.Algorithm.Equal(oidPBMAC1) {
		var params pbmac1Params
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &params); err == nil {
			if err := add(checkKDF("MAC", params.Kdf)); err != nil {
				return err
			}
		}
	} else if err := add(pfx.MacData.Iterations, checkCount("MAC", pfx.MacData.Iterations)); err != nil {
		return err
	}
	for i, ci := range pfx.contents() {
		bags := ci.plainBags()
		if ci.ContentType.Equal(oidEncryptedData) {
			var ed encryptedData
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
				continue
			}
			if err := add(checkAlgorithm(fmt.Sprintf("encrypted contents %d", i+1), ed.EncryptedContentInfo.ContentEncryptionAlgorithm)); err != nil {
				return err
			}
			bags = encryptedBags(&ed, password)
		}
		for j, bag := range bags {
			var key encryptedPrivateKeyInfo
			if !bag.ID.Equal(oidShroudedKeyBag) {
				continue
			}
			if _, err := asn1.Unmarshal(bag.Value.Bytes, &key); err == nil {
				if err := add(checkAlgorithm(fmt.Sprintf("key %d of contents %d", j+1, i+1), key.Algorithm)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// encryptedBags returns the safe bags of encrypted contents, decrypted with
// password (its key derivation already checked), or none if they do not
// decrypt and parse. The empty password is also tried as no bytes at all,
// as the readers try it.
func encryptedBags(ed *encryptedData, password string) []safeBag {
	pw := newP12Password(password)
	for {
		alg, ciphertext := ed.EncryptedContentInfo.ContentEncryptionAlgorithm, ed.EncryptedContentInfo.EncryptedContent
		if plain, err := decrypt(alg, ciphertext, pw); err == nil {
			var bags []safeBag
			if _, err := asn1.Unmarshal(plain, &bags); err == nil {
				return bags
			}
		}
		if password != "" || pw.bmp == nil {
			return nil
		}
		pw.bmp = nil
	}
}

// plainKeyBags counts the key bags (plain or shrouded) in the plain
// contents of a PKCS#12 file, which are readable without the password:
// where OpenSSL, Java's keytool, Windows and go-pkcs12 write the keys. Key
// bags inside encrypted contents are not counted.
func plainKeyBags(data []byte) int {
	var pfx pfxPDU
	if _, err := asn1.Unmarshal(data, &pfx); err != nil {
		return 0
	}
	n := 0
	for _, ci := range pfx.contents() {
		for _, bag := range ci.plainBags() {
			if bag.ID.Equal(oidKeyBag) || bag.ID.Equal(oidShroudedKeyBag) {
				n++
			}
		}
	}
	return n
}

// contents returns the contents of the file's authenticated safe, or none
// when it is not plain data (a public-key protected file) or does not
// parse.
func (pfx *pfxPDU) contents() []contentInfo {
	var contents []contentInfo
	if !pfx.AuthSafe.ContentType.Equal(oidData) || !unmarshalOctets(pfx.AuthSafe.Content.Bytes, &contents) {
		return nil
	}
	return contents
}

// plainBags returns the safe bags of plain contents, or none for encrypted
// contents or contents that do not parse.
func (ci *contentInfo) plainBags() []safeBag {
	var bags []safeBag
	if !ci.ContentType.Equal(oidData) || !unmarshalOctets(ci.Content.Bytes, &bags) {
		return nil
	}
	return bags
}

// unmarshalOctets reads der, an OCTET STRING, and what it holds into v; it
// reports whether both parse.
func unmarshalOctets(der []byte, v any) bool {
	var octets []byte
	if _, err := asn1.Unmarshal(der, &octets); err != nil {
		return false
	}
	_, err := asn1.Unmarshal(octets, v)
	return err == nil
}

// checkAlgorithm checks a password-based encryption's key derivation, and
// returns its iteration count (0 for one it does not know).
func checkAlgorithm(where string, alg pkix.AlgorithmIdentifier) (int, error) {
	switch {
	case alg.Algorithm.Equal(oidPBES2):
		var params pbes2Params
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &params); err == nil {
			return checkKDF(where, params.Kdf)
		}
	case len(alg.Algorithm) == len(oidPKCS12PBE)+1 && asn1.ObjectIdentifier(alg.Algorithm[:len(oidPKCS12PBE)]).Equal(oidPKCS12PBE):
		var params pbeParams
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &params); err == nil {
			return params.Iterations, checkCount(where, params.Iterations)
		}
	}
	return 0, nil
}

// checkKDF checks a PBKDF2 key derivation's count and key length, and
// returns its count.
func checkKDF(where string, kdf pkix.AlgorithmIdentifier) (int, error) {
	if !kdf.Algorithm.Equal(oidPBKDF2) {
		return 0, nil
	}
	var params pbkdf2Params
	if _, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &params); err != nil {
		return 0, nil
	}
	if params.KeyLength < 0 || params.KeyLength > maxKeyLength {
		return 0, fmt.Errorf("PKCS#12 %s asks for a derived key of %d bytes: refused (%w)", where, params.KeyLength, errTooMuchDerivation)
	}
	return params.Iterations, checkCount(where, params.Iterations)
}

// checkCount checks an iteration count.
func checkCount(where string, n int) error {
	if n > iterationLimit {
		return fmt.Errorf("PKCS#12 %s asks for %d iterations of key derivation: refused (%w)", where, n, errTooMuchDerivation)
	}
	return nil
}

// The bags a keytool key store holds beyond what the PKCS#12 reader knows.
var (
	oidCertBag         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
	oidX509Certificate = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}
	oidFriendlyName    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 20}
	oidLocalKeyID      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 21}
	// oidJavaTrusted marks a trusted certificate entry (keytool
	// -importcert into a key store); its value lists the usages trusted.
	oidJavaTrusted = asn1.ObjectIdentifier{2, 16, 840, 1, 113894, 746875, 1, 1}
	oidHMACSHA1    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA224  = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}
	oidHMACSHA256  = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384  = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512  = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC   = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC   = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC   = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

type (
	certBag struct {
		ID   asn1.ObjectIdentifier
		Data []byte `asn1:"tag:0,explicit"`
	}
	bagAttribute struct {
		ID    asn1.ObjectIdentifier
		Value asn1.RawValue `asn1:"set"`
	}
)

// walkBags reads the bags of a PKCS#12 file the way ToPEM does, but knowing
// what ToPEM refuses: Java's trusted certificate entries, Ed25519 keys,
// and any number of contents. It gives the key bags and the certificates
// of key pairs as ToPEM's blocks (RSA keys as PKCS #1, EC keys as SEC 1,
// other keys as PKCS #8; with friendlyName and localKeyId headers), and the
// trusted certificates apart. It checks the file's MAC with the password
// first (a file without one is refused: its content cannot be trusted),
// and decrypts PBES2 (AES-CBC with PBKDF2, what keytool writes since Java
// 11.0.12 and OpenSSL 3 by default) and the PKCS#12 encryptions of older
// tools (3DES, RC2), each key derivation within MaxIterations.
func walkBags(data []byte, password string) (blocks []*pem.Block, trusted []*x509.Certificate, err error) {
	var pfx pfxPDU
	if rest, err := asn1.Unmarshal(data, &pfx); err != nil {
		return nil, nil, err
	} else if len(rest) > 0 {
		return nil, nil, errors.New("data after the PFX")
	}
	if pfx.Version != 3 {
		return nil, nil, fmt.Errorf("PFX version %d", pfx.Version)
	}
	if len(pfx.MacData.Mac.Algorithm.Algorithm) == 0 {
		return nil, nil, errors.New("no MAC: the password cannot be checked")
	}
	var authSafe []byte
	if !pfx.AuthSafe.ContentType.Equal(oidData) {
		return nil, nil, errors.New("no readable contents")
	}
	if _, err := asn1.Unmarshal(pfx.AuthSafe.Content.Bytes, &authSafe); err != nil {
		return nil, nil, fmt.Errorf("authenticated safe: %w", err)
	}
	pw, err := verifyMAC(pfx.MacData, authSafe, password)
	if err != nil {
		return nil, nil, err
	}
	contents := pfx.contents()
	if contents == nil {
		return nil, nil, errors.New("no readable contents")
	}
	for i, ci := range contents {
		var bags []safeBag
		switch {
		case ci.ContentType.Equal(oidData):
			if bags = ci.plainBags(); bags == nil {
				return nil, nil, fmt.Errorf("contents %d do not parse", i+1)
			}
		case ci.ContentType.Equal(oidEncryptedData):
			var ed encryptedData
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
				return nil, nil, fmt.Errorf("contents %d: %w", i+1, err)
			}
			plain, err := decrypt(ed.EncryptedContentInfo.ContentEncryptionAlgorithm, ed.EncryptedContentInfo.EncryptedContent, pw)
			if err != nil {
				return nil, nil, fmt.Errorf("contents %d: %w", i+1, err)
			}
			if _, err := asn1.Unmarshal(plain, &bags); err != nil {
				return nil, nil, fmt.Errorf("contents %d: %w", i+1, err)
			}
		default:
			return nil, nil, fmt.Errorf("contents %d of type %v", i+1, ci.ContentType)
		}
		for j, bag := range bags {
			block, isTrusted, err := bagBlock(bag, pw)
			if err != nil {
				return nil, nil, fmt.Errorf("bag %d of contents %d: %w", j+1, i+1, err)
			}
			switch {
			case block == nil:
			case isTrusted:
				cert, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					return nil, nil, fmt.Errorf("bag %d of contents %d: %w", j+1, i+1, err)
				}
				trusted = append(trusted, cert)
			default:
				blocks = append(blocks, block)
			}
		}
	}
	return blocks, trusted, nil
}

// bagBlock turns a key or certificate bag into a block as ToPEM makes it;
// other bags (CRLs, secrets) give none. isTrusted says a certificate is a
// trusted certificate entry.
func bagBlock(bag safeBag, pw p12Password) (block *pem.Block, isTrusted bool, err error) {
	block = &pem.Block{Headers: map[string]string{}}
	for _, raw := range bag.Attributes {
		var attr bagAttribute
		if _, err := asn1.Unmarshal(raw.FullBytes, &attr); err != nil {
			return nil, false, fmt.Errorf("attribute: %w", err)
		}
		switch {
		case attr.ID.Equal(oidJavaTrusted):
			isTrusted = true
		case attr.ID.Equal(oidFriendlyName):
			var bmp asn1.RawValue
			if _, err := asn1.Unmarshal(attr.Value.Bytes, &bmp); err != nil || bmp.Tag != asn1.TagBMPString || len(bmp.Bytes)%2 != 0 {
				return nil, false, errors.New("friendlyName is not a BMPString")
			}
			units := make([]uint16, len(bmp.Bytes)/2)
			for k := range units {
				units[k] = uint16(bmp.Bytes[2*k])<<8 | uint16(bmp.Bytes[2*k+1])
			}
			block.Headers["friendlyName"] = string(utf16.Decode(units))
		case attr.ID.Equal(oidLocalKeyID):
			var id []byte
			if _, err := asn1.Unmarshal(attr.Value.Bytes, &id); err != nil {
				return nil, false, fmt.Errorf("localKeyId: %w", err)
			}
			block.Headers["localKeyId"] = hex.EncodeToString(id)
		}
	}
	var pkcs8 []byte
	switch {
	case bag.ID.Equal(oidCertBag):
		var cb certBag
		if _, err := asn1.Unmarshal(bag.Value.Bytes, &cb); err != nil {
			return nil, false, fmt.Errorf("certificate bag: %w", err)
		}
		if !cb.ID.Equal(oidX509Certificate) {
			return nil, false, nil
		}
		block.Type, block.Bytes = "CERTIFICATE", cb.Data
		return block, isTrusted, nil
	case bag.ID.Equal(oidKeyBag):
		pkcs8 = bag.Value.Bytes
	case bag.ID.Equal(oidShroudedKeyBag):
		var key encryptedPrivateKeyInfo
		if _, err := asn1.Unmarshal(bag.Value.Bytes, &key); err != nil {
			return nil, false, fmt.Errorf("key bag: %w", err)
		}
		if pkcs8, err = decrypt(key.Algorithm, key.EncryptedData, pw); err != nil {
			return nil, false, fmt.Errorf("key bag: %w", err)
		}
	default:
		return nil, false, nil
	}
	key, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return nil, false, fmt.Errorf("key bag: %w", err)
	}
	block.Type = "PRIVATE KEY"
	switch k := key.(type) {
	case *rsa.PrivateKey:
		block.Bytes = x509.MarshalPKCS1PrivateKey(k)
	case *ecdsa.PrivateKey:
		if block.Bytes, err = x509.MarshalECPrivateKey(k); err != nil {
			return nil, false, err
		}
	case ed25519.PrivateKey:
		// Neither PKCS #1 nor SEC 1 holds it: as it came.
		block.Bytes = pkcs8
	default:
		return nil, false, fmt.Errorf("key bag: unsupported key type %T", key)
	}
	return block, false, nil
}

// pbes2Decrypt decrypts PBES2 (PBKDF2, AES-CBC) data with the password as
// UTF-8 (RFC 8018; what Java and Windows write), after checking its key
// derivation is within bounds.
func pbes2Decrypt(alg pkix.AlgorithmIdentifier, ciphertext []byte, password string) ([]byte, error) {
	if !alg.Algorithm.Equal(oidPBES2) {
		return nil, fmt.Errorf("encryption %v is not PBES2", alg.Algorithm)
	}
	if _, err := checkAlgorithm("encryption", alg); err != nil {
		return nil, err
	}
	var params pbes2Params
	if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &params); err != nil {
		return nil, fmt.Errorf("PBES2 parameters: %w", err)
	}
	prf, salt, iterations, _, err := pbkdf2Of(params.Kdf)
	if err != nil {
		return nil, err
	}
	var keyLen int
	switch e := params.EncryptionScheme.Algorithm; {
	case e.Equal(oidAES128CBC):
		keyLen = 16
	case e.Equal(oidAES192CBC):
		keyLen = 24
	case e.Equal(oidAES256CBC):
		keyLen = 32
	default:
		return nil, fmt.Errorf("PBES2 with %v is not supported", e)
	}
	key, err := pbkdf2.Key(prf, password, salt, iterations, keyLen)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	var iv []byte
	if _, err := asn1.Unmarshal(params.EncryptionScheme.Parameters.FullBytes, &iv); err != nil || len(iv) != aes.BlockSize {
		return nil, errors.New("AES-CBC parameters: no 16-byte IV")
	}
	return cbcDecrypt(block, iv, ciphertext)
}
