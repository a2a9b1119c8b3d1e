package keystore

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
)

// MaxIterations bounds the key derivation a PKCS#12 file may ask for
// before its MAC is checked. Tools write 2,000 to 10,000 (OpenSSL 2048,
// Java 10000, Windows 2000); a hostile file can ask for 2^63 and hold a
// config load for good.
const MaxIterations = 10_000_000

// The PFX layout (RFC 7292, with PBMAC1 from RFC 9579) as far as the MAC.
type (
	pfxPDU struct {
		Version  int
		AuthSafe asn1.RawValue
		MacData  pfxMacData `asn1:"optional"`
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
	pbkdf2Params struct {
		Salt       asn1.RawValue
		Iterations int
		KeyLength  int                      `asn1:"optional"`
		Prf        pkix.AlgorithmIdentifier `asn1:"optional"`
	}
)

var (
	oidPBMAC1 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}
	oidPBKDF2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
)

// checkPKCS12Work refuses a PKCS#12 file whose MAC asks for more than
// MaxIterations rounds of key derivation. The MAC is the only derivation
// made before the password is known to be right: every later one (the key
// bags', the encrypted contents') is reached only by a file whose MAC the
// configured password verified, so written by someone who has it. A file
// that does not parse this far is left to the PKCS#12 reader's own errors.
func checkPKCS12Work(data []byte) error {
	var pfx pfxPDU
	if _, err := asn1.Unmarshal(data, &pfx); err != nil {
		return nil
	}
	n := pfx.MacData.Iterations
	if alg := pfx.MacData.Mac.Algorithm; alg.Algorithm.Equal(oidPBMAC1) {
		var params pbmac1Params
		var kdf pbkdf2Params
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &params); err != nil || !params.Kdf.Algorithm.Equal(oidPBKDF2) {
			return nil
		}
		if _, err := asn1.Unmarshal(params.Kdf.Parameters.FullBytes, &kdf); err != nil {
			return nil
		}
		n = kdf.Iterations
	}
	if n > MaxIterations {
		return fmt.Errorf("PKCS#12 MAC asks for %d iterations of key derivation, more than %d: refused", n, MaxIterations)
	}
	return nil
}
