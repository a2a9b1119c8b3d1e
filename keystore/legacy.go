package keystore

import (
	"bytes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math/bits"
	"unicode/utf16"
)

// This file reads what older tools write, for walkBags: the PKCS#12 MAC
// (RFC 7292 appendix B, or PBMAC1 of RFC 9579) and the PKCS#12
// password-based encryptions pbeWithSHAAnd3-KeyTripleDES-CBC and
// pbeWithSHAAnd128BitRC2-CBC / 40BitRC2-CBC, which `openssl pkcs12 -export
// -legacy`, Java before 11.0.12 (and later ones with
// -Dkeystore.pkcs12.legacy) and Windows write. go-pkcs12 decrypts them too,
// but only inside readers that refuse Java's trusted certificate entries,
// and keeps its KDF and RC2 unexported: the KDF and RC2 here follow
// golang.org/x/crypto/pkcs12's (BSD licence, the Go Authors), decryption
// only.

// The PKCS#12 password-based encryptions (RFC 7292 appendix C) go-pkcs12
// reads too.
var (
	oidPBEWithSHAAnd3KeyTripleDESCBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 3}
	oidPBEWithSHAAnd128BitRC2CBC     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 5}
	oidPBEWithSHAAnd40BitRC2CBC      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 6}
	oidSHA1                          = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256                        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384                        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512                        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
)

// p12Password is a password in the encodings PKCS#12 uses: UTF-8 for PBES2
// and PBMAC1 (RFC 8018, RFC 9579), a zero-terminated big-endian UTF-16
// string for its own KDF (RFC 7292 appendix B.1; UTF-16 code units, as
// Java's char[] gives them).
type p12Password struct {
	utf8 string
	bmp  []byte
}

// newP12Password encodes password both ways.
func newP12Password(password string) p12Password {
	units := utf16.Encode([]rune(password))
	bmp := make([]byte, 0, 2*len(units)+2)
	for _, u := range units {
		bmp = binary.BigEndian.AppendUint16(bmp, u)
	}
	return p12Password{utf8: password, bmp: append(bmp, 0, 0)}
}

// verifyMAC checks the MAC of a PKCS#12 file over its authenticated safe's
// content (the octets), as the password given computes it, and returns
// the password to decrypt with. The empty password is also tried as no
// bytes at all, as some tools write it (go-pkcs12 does the same). A MAC
// that does not match wraps ErrPassword.
func verifyMAC(mac pfxMacData, content []byte, password string) (p12Password, error) {
	pw := newP12Password(password)
	ok, err := macMatches(mac, content, pw)
	if err == nil && !ok && password == "" {
		pw.bmp = nil
		ok, err = macMatches(mac, content, pw)
	}
	switch {
	case err != nil:
		return p12Password{}, fmt.Errorf("MAC: %w", err)
	case !ok:
		return p12Password{}, ErrPassword
	}
	return pw, nil
}

// macMatches reports whether the MAC is the one the password computes.
func macMatches(mac pfxMacData, content []byte, pw p12Password) (bool, error) {
	alg := mac.Mac.Algorithm.Algorithm
	if alg.Equal(oidPBMAC1) {
		var params pbmac1Params
		if _, err := asn1.Unmarshal(mac.Mac.Algorithm.Parameters.FullBytes, &params); err != nil {
			return false, fmt.Errorf("PBMAC1 parameters: %w", err)
		}
		prf, salt, iterations, keyLen, err := pbkdf2Of(params.Kdf)
		if err != nil {
			return false, err
		}
		// RFC 9579 asks for a key length, and one shorter than 20 bytes
		// lets a forged MAC through (OpenSSL's CVE-2026-34181).
		if keyLen < 20 {
			return false, fmt.Errorf("PBMAC1 key length %d: at least 20 bytes wanted", keyLen)
		}
		h, err := hmacHash(params.MacAlg.Algorithm)
		if err != nil {
			return false, err
		}
		key, err := pbkdf2.Key(prf, pw.utf8, salt, iterations, keyLen)
		if err != nil {
			return false, err
		}
		return hmacEqual(h, key, content, mac.Mac.Digest), nil
	}
	var h func() hash.Hash
	switch {
	case alg.Equal(oidSHA1):
		h = sha1.New
	case alg.Equal(oidSHA256):
		h = sha256.New
	case alg.Equal(oidSHA384):
		h = sha512.New384
	case alg.Equal(oidSHA512):
		h = sha512.New
	default:
		return false, fmt.Errorf("digest %v is not supported", alg)
	}
	if err := checkCount("MAC", mac.Iterations); err != nil {
		return false, err
	}
	key := pkcs12KDF(h, 3, pw.bmp, mac.MacSalt, mac.Iterations, h().Size())
	return hmacEqual(h, key, content, mac.Mac.Digest), nil
}

func hmacEqual(h func() hash.Hash, key, message, want []byte) bool {
	m := hmac.New(h, key)
	m.Write(message)
	return hmac.Equal(m.Sum(nil), want)
}

// hmacHash returns the hash of an HMAC algorithm identifier.
func hmacHash(alg asn1.ObjectIdentifier) (func() hash.Hash, error) {
	switch {
	case len(alg) == 0 || alg.Equal(oidHMACSHA1):
		return sha1.New, nil
	case alg.Equal(oidHMACSHA224):
		return sha256.New224, nil
	case alg.Equal(oidHMACSHA256):
		return sha256.New, nil
	case alg.Equal(oidHMACSHA384):
		return sha512.New384, nil
	case alg.Equal(oidHMACSHA512):
		return sha512.New, nil
	}
	return nil, fmt.Errorf("HMAC %v is not supported", alg)
}

// pbkdf2Of reads PBKDF2 parameters, within MaxIterations and maxKeyLength.
func pbkdf2Of(kdf pkix.AlgorithmIdentifier) (prf func() hash.Hash, salt []byte, iterations, keyLen int, err error) {
	if !kdf.Algorithm.Equal(oidPBKDF2) {
		return nil, nil, 0, 0, fmt.Errorf("key derivation %v is not PBKDF2", kdf.Algorithm)
	}
	if _, err := checkKDF("key derivation", kdf); err != nil {
		return nil, nil, 0, 0, err
	}
	var params pbkdf2Params
	if _, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &params); err != nil || params.Salt.Tag != asn1.TagOctetString {
		return nil, nil, 0, 0, errors.New("PBKDF2 parameters do not parse")
	}
	if prf, err = hmacHash(params.Prf.Algorithm); err != nil {
		return nil, nil, 0, 0, fmt.Errorf("PBKDF2: %w", err)
	}
	return prf, params.Salt.Bytes, params.Iterations, params.KeyLength, nil
}

// decrypt decrypts a PKCS#12 file's encrypted contents or shrouded key with
// the password: PBES2 (AES-CBC) or one of the PKCS#12 password-based
// encryptions (3DES, RC2), after checking the key derivation is within
// bounds.
func decrypt(alg pkix.AlgorithmIdentifier, ciphertext []byte, pw p12Password) ([]byte, error) {
	switch a := alg.Algorithm; {
	case a.Equal(oidPBES2):
		return pbes2Decrypt(alg, ciphertext, pw.utf8)
	case a.Equal(oidPBEWithSHAAnd3KeyTripleDESCBC), a.Equal(oidPBEWithSHAAnd128BitRC2CBC), a.Equal(oidPBEWithSHAAnd40BitRC2CBC):
		return pbeDecrypt(alg, ciphertext, pw.bmp)
	}
	return nil, fmt.Errorf("encryption %v is not supported", alg.Algorithm)
}

// pbeDecrypt decrypts with a PKCS#12 password-based encryption (RFC 7292
// appendix C): key and IV from the PKCS#12 KDF with SHA-1.
func pbeDecrypt(alg pkix.AlgorithmIdentifier, ciphertext, bmpPassword []byte) ([]byte, error) {
	if _, err := checkAlgorithm("encryption", alg); err != nil {
		return nil, err
	}
	var params pbeParams
	if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &params); err != nil {
		return nil, fmt.Errorf("PBE parameters: %w", err)
	}
	if params.Iterations < 1 {
		return nil, fmt.Errorf("PBE with %d iterations", params.Iterations)
	}
	var keyLen int
	switch a := alg.Algorithm; {
	case a.Equal(oidPBEWithSHAAnd3KeyTripleDESCBC):
		keyLen = 24
	case a.Equal(oidPBEWithSHAAnd128BitRC2CBC):
		keyLen = 16
	default:
		keyLen = 5
	}
	key := pkcs12KDF(sha1.New, 1, bmpPassword, params.Salt, params.Iterations, keyLen)
	iv := pkcs12KDF(sha1.New, 2, bmpPassword, params.Salt, params.Iterations, 8)
	var block cipher.Block
	if keyLen == 24 {
		var err error
		if block, err = des.NewTripleDESCipher(key); err != nil {
			return nil, err
		}
	} else {
		block = newRC2(key, 8*keyLen)
	}
	return cbcDecrypt(block, iv, ciphertext)
}

// cbcDecrypt decrypts CBC data and removes its PKCS #7 padding; bad
// padding is a wrong key (ErrPassword).
func cbcDecrypt(block cipher.Block, iv, ciphertext []byte) ([]byte, error) {
	size := block.BlockSize()
	if len(iv) != size {
		return nil, fmt.Errorf("no %d-byte IV", size)
	}
	if len(ciphertext) == 0 || len(ciphertext)%size != 0 {
		return nil, errors.New("encrypted data is not whole blocks")
	}
	plain := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ciphertext)
	pad := int(plain[len(plain)-1])
	if pad == 0 || pad > size || !bytes.Equal(plain[len(plain)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, ErrPassword
	}
	return plain[:len(plain)-pad], nil
}

// pkcs12KDF is the key derivation of RFC 7292 appendix B.2: size bytes for
// purpose id (1 key, 2 IV, 3 MAC key) from the password (BMPString, its
// zero terminator included) and salt, iterations times. Its cost is
// bounded by its callers' checkCount and their small sizes.
func pkcs12KDF(h func() hash.Hash, id byte, password, salt []byte, iterations, size int) []byte {
	hf := h()
	u, v := hf.Size(), hf.BlockSize()
	// fill concatenates copies of b to a whole number of v-byte blocks.
	fill := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		n := v * ((len(b) + v - 1) / v)
		return bytes.Repeat(b, (n+len(b)-1)/len(b))[:n]
	}
	d := bytes.Repeat([]byte{id}, v)
	in := append(fill(salt), fill(password)...)
	out := make([]byte, 0, size+u)
	for len(out) < size {
		hf.Reset()
		hf.Write(d)
		hf.Write(in)
		a := hf.Sum(nil)
		for j := 1; j < iterations; j++ {
			hf.Reset()
			hf.Write(a)
			a = hf.Sum(a[:0])
		}
		out = append(out, a...)
		if len(out) >= size {
			break
		}
		// I_j = (I_j + B + 1) mod 2^v for each v-byte block of I, B being
		// copies of a.
		b := bytes.Repeat(a, (v+len(a)-1)/len(a))[:v]
		for j := 0; j < len(in); j += v {
			carry := uint(1)
			for k := v - 1; k >= 0; k-- {
				sum := uint(in[j+k]) + uint(b[k]) + carry
				in[j+k], carry = byte(sum), sum>>8
			}
		}
	}
	return out[:size]
}

// rc2Cipher is RC2 (RFC 2268), decryption only.
type rc2Cipher struct{ k [64]uint16 }

// newRC2 returns RC2 with the key and the effective key length in bits.
func newRC2(key []byte, effectiveBits int) cipher.Block {
	var l [128]byte
	copy(l[:], key)
	t := len(key)
	t8 := (effectiveBits + 7) / 8
	tm := byte(255 % uint(1<<(8+uint(effectiveBits)-8*uint(t8))))
	for i := t; i < 128; i++ {
		l[i] = rc2Pi[l[i-1]+l[uint8(i-t)]]
	}
	l[128-t8] = rc2Pi[l[128-t8]&tm]
	for i := 127 - t8; i >= 0; i-- {
		l[i] = rc2Pi[l[i+1]^l[i+t8]]
	}
	c := new(rc2Cipher)
	for i := range c.k {
		c.k[i] = uint16(l[2*i]) | uint16(l[2*i+1])<<8
	}
	return c
}

func (*rc2Cipher) BlockSize() int { return 8 }

func (*rc2Cipher) Encrypt(dst, src []byte) { panic("keystore: RC2 is decryption only") }

func (c *rc2Cipher) Decrypt(dst, src []byte) {
	var r [4]uint16
	for i := range r {
		r[i] = binary.LittleEndian.Uint16(src[2*i:])
	}
	rot := [4]int{1, 2, 3, 5}
	j := 63
	for round := 15; round >= 0; round-- {
		for i := 3; i >= 0; i-- {
			r[i] = bits.RotateLeft16(r[i], -rot[i])
			r[i] -= c.k[j] + (r[(i+3)%4] & r[(i+2)%4]) + (^r[(i+3)%4] & r[(i+1)%4])
			j--
		}
		if round == 11 || round == 5 { // un-mash after the fifth and the eleventh mixing round
			for i := 3; i >= 0; i-- {
				r[i] -= c.k[r[(i+3)%4]&63]
			}
		}
	}
	for i := range r {
		binary.LittleEndian.PutUint16(dst[2*i:], r[i])
	}
}

// rc2Pi is RC2's PITABLE (RFC 2268 section 2).
var rc2Pi = [256]byte{
	0xd9, 0x78, 0xf9, 0xc4, 0x19, 0xdd, 0xb5, 0xed, 0x28, 0xe9, 0xfd, 0x79, 0x4a, 0xa0, 0xd8, 0x9d,
	0xc6, 0x7e, 0x37, 0x83, 0x2b, 0x76, 0x53, 0x8e, 0x62, 0x4c, 0x64, 0x88, 0x44, 0x8b, 0xfb, 0xa2,
	0x17, 0x9a, 0x59, 0xf5, 0x87, 0xb3, 0x4f, 0x13, 0x61, 0x45, 0x6d, 0x8d, 0x09, 0x81, 0x7d, 0x32,
	0xbd, 0x8f, 0x40, 0xeb, 0x86, 0xb7, 0x7b, 0x0b, 0xf0, 0x95, 0x21, 0x22, 0x5c, 0x6b, 0x4e, 0x82,
	0x54, 0xd6, 0x65, 0x93, 0xce, 0x60, 0xb2, 0x1c, 0x73, 0x56, 0xc0, 0x14, 0xa7, 0x8c, 0xf1, 0xdc,
	0x12, 0x75, 0xca, 0x1f, 0x3b, 0xbe, 0xe4, 0xd1, 0x42, 0x3d, 0xd4, 0x30, 0xa3, 0x3c, 0xb6, 0x26,
	0x6f, 0xbf, 0x0e, 0xda, 0x46, 0x69, 0x07, 0x57, 0x27, 0xf2, 0x1d, 0x9b, 0xbc, 0x94, 0x43, 0x03,
	0xf8, 0x11, 0xc7, 0xf6, 0x90, 0xef, 0x3e, 0xe7, 0x06, 0xc3, 0xd5, 0x2f, 0xc8, 0x66, 0x1e, 0xd7,
	0x08, 0xe8, 0xea, 0xde, 0x80, 0x52, 0xee, 0xf7, 0x84, 0xaa, 0x72, 0xac, 0x35, 0x4d, 0x6a, 0x2a,
	0x96, 0x1a, 0xd2, 0x71, 0x5a, 0x15, 0x49, 0x74, 0x4b, 0x9f, 0xd0, 0x5e, 0x04, 0x18, 0xa4, 0xec,
	0xc2, 0xe0, 0x41, 0x6e, 0x0f, 0x51, 0xcb, 0xcc, 0x24, 0x91, 0xaf, 0x50, 0xa1, 0xf4, 0x70, 0x39,
	0x99, 0x7c, 0x3a, 0x85, 0x23, 0xb8, 0xb4, 0x7a, 0xfc, 0x02, 0x36, 0x5b, 0x25, 0x55, 0x97, 0x31,
	0x2d, 0x5d, 0xfa, 0x98, 0xe3, 0x8a, 0x92, 0xae, 0x05, 0xdf, 0x29, 0x10, 0x67, 0x6c, 0xba, 0xc9,
	0xd3, 0x00, 0xe6, 0xcf, 0xe1, 0x9e, 0xa8, 0x2c, 0x63, 0x16, 0x01, 0x3f, 0x58, 0xe2, 0x89, 0xa9,
	0x0d, 0x38, 0x34, 0x1b, 0xab, 0x33, 0xff, 0xb0, 0xbb, 0x48, 0x0c, 0x5f, 0xb9, 0xb1, 0xcd, 0x2e,
	0xc5, 0xf3, 0xdb, 0x47, 0xe5, 0xa5, 0x9c, 0x77, 0x0a, 0xa6, 0x20, 0x68, 0xfe, 0x7f, 0xc1, 0xad,
}
