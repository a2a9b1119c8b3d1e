package keystore

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
)

// MaxIterations bounds each key derivation a PKCS#12 file may ask for.
// Tools write 2,000 to 10,000 (OpenSSL 2048, Java 10000, Windows 2000); a
// hostile file can ask for 2^63 and hold a config load for good.
const MaxIterations = 1_000_000

// iterationLimit is MaxIterations, lowered by the fuzz test so that a
// mutated count costs it milliseconds rather than a second.
var iterationLimit = MaxIterations

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
// than MaxIterations (of at most maxKeyLength bytes) in any place readable
// without the password: its MAC, its encrypted contents, the shrouded key
// bags of its plain contents. A file with no MAC, or whose password is
// known, reaches these without any check of the password. Key bags inside
// encrypted contents are readable only with the password, and are not
// checked. A file that does not parse this far is left to the PKCS#12
// reader's own errors.
func checkPKCS12Work(data []byte) error {
	var pfx pfxPDU
	if _, err := asn1.Unmarshal(data, &pfx); err != nil {
		return nil
	}
	if alg := pfx.MacData.Mac.Algorithm; alg.Algorithm.Equal(oidPBMAC1) {
		var params pbmac1Params
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &params); err == nil {
			if err := checkKDF("MAC", params.Kdf); err != nil {
				return err
			}
		}
	} else if err := checkCount("MAC", pfx.MacData.Iterations); err != nil {
		return err
	}
	for i, ci := range pfx.contents() {
		if ci.ContentType.Equal(oidEncryptedData) {
			var ed encryptedData
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err == nil {
				if err := checkAlgorithm(fmt.Sprintf("encrypted contents %d", i+1), ed.EncryptedContentInfo.ContentEncryptionAlgorithm); err != nil {
					return err
				}
			}
			continue
		}
		for j, bag := range ci.plainBags() {
			var key encryptedPrivateKeyInfo
			if !bag.ID.Equal(oidShroudedKeyBag) {
				continue
			}
			if _, err := asn1.Unmarshal(bag.Value.Bytes, &key); err == nil {
				if err := checkAlgorithm(fmt.Sprintf("key %d of contents %d", j+1, i+1), key.Algorithm); err != nil {
					return err
				}
			}
		}
	}
	return nil
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

// checkAlgorithm checks a password-based encryption's key derivation.
func checkAlgorithm(where string, alg pkix.AlgorithmIdentifier) error {
	switch {
	case alg.Algorithm.Equal(oidPBES2):
		var params pbes2Params
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &params); err == nil {
			return checkKDF(where, params.Kdf)
		}
	case len(alg.Algorithm) == len(oidPKCS12PBE)+1 && asn1.ObjectIdentifier(alg.Algorithm[:len(oidPKCS12PBE)]).Equal(oidPKCS12PBE):
		var params pbeParams
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &params); err == nil {
			return checkCount(where, params.Iterations)
		}
	}
	return nil
}

// checkKDF checks a PBKDF2 key derivation's count and key length.
func checkKDF(where string, kdf pkix.AlgorithmIdentifier) error {
	if !kdf.Algorithm.Equal(oidPBKDF2) {
		return nil
	}
	var params pbkdf2Params
	if _, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &params); err != nil {
		return nil
	}
	if params.KeyLength < 0 || params.KeyLength > maxKeyLength {
		return fmt.Errorf("PKCS#12 %s asks for a derived key of %d bytes: refused (%w)", where, params.KeyLength, errTooMuchDerivation)
	}
	return checkCount(where, params.Iterations)
}

// checkCount checks an iteration count.
func checkCount(where string, n int) error {
	if n > iterationLimit {
		return fmt.Errorf("PKCS#12 %s asks for %d iterations of key derivation: refused (%w)", where, n, errTooMuchDerivation)
	}
	return nil
}
