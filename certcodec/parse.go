package certcodec

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// PEMWant says which certificates of a PEM text ParsePEM returns, and what
// else the text may hold. In every case text before the first block (and,
// where other blocks are passed over, between blocks) is passed over, as
// encoding/pem does, and a text without a CERTIFICATE block is an error.
type PEMWant uint8

// What ParsePEM may be asked for.
const (
	// PEMFirst: the first CERTIFICATE block. Blocks of other types (a key
	// kept in the same file) are passed over, and what follows the first
	// certificate is not read. A pinned client's certificate (file).
	PEMFirst PEMWant = iota
	// PEMOne: the one certificate of a text that holds exactly one. The
	// first block must be a CERTIFICATE, and nothing but white space may
	// follow it. A client certificate put through the admin API.
	PEMOne
	// PEMAll: every CERTIFICATE block, in order. Blocks of other types are
	// passed over, as Caddy's trust_pool file does. A certificate or CA
	// file given to `caddy mtls inspect`.
	PEMAll
	// PEMChain: a chain, leaf first. Every block must be a CERTIFICATE (a
	// private key pasted in is refused, so that it cannot be served back)
	// and nothing but white space may follow the last. A key pair's
	// certificate field.
	PEMChain
)

// Errors that ParsePEM wraps, so callers can tell them apart with errors.Is.
var (
	ErrNoPEMCertificate = errors.New("no PEM CERTIFICATE block found")
	ErrPEMMoreThanOne   = errors.New("more than one PEM block")
	ErrPEMNotOnlyCerts  = errors.New("PEM block where only certificates may be")
	ErrPEMTrailingData  = errors.New("data that is not PEM")
)

// ParsePEM parses the certificates of PEM data that want asks for. Errors
// wrap the errors above, or name the certificate that does not parse.
func ParsePEM(data []byte, want PEMWant) ([]*x509.Certificate, error) {
	if want > PEMChain {
		return nil, fmt.Errorf("unknown PEMWant %d", want)
	}
	one := want == PEMFirst || want == PEMOne
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if want == PEMChain && len(bytes.TrimSpace(rest)) > 0 {
				return nil, ErrPEMTrailingData
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			switch want {
			case PEMOne:
				return nil, ErrNoPEMCertificate
			case PEMChain:
				return nil, fmt.Errorf("a %q %w", block.Type, ErrPEMNotOnlyCerts)
			}
			continue
		}
		if want == PEMOne && len(bytes.TrimSpace(rest)) > 0 {
			return nil, ErrPEMMoreThanOne
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			if one {
				return nil, fmt.Errorf("parsing certificate: %w", err)
			}
			return nil, fmt.Errorf("parsing certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
		if one {
			break
		}
	}
	if len(certs) == 0 {
		return nil, ErrNoPEMCertificate
	}
	return certs, nil
}

// HeaderFields names, in errors, the header field that carries the
// certificate and the one that carries its chain.
type HeaderFields struct {
	Cert, Chain string
}

// A HeaderError is an error of ParseHeader: the field whose value does not
// decode, or the certificate that does not parse (Cert counts from 1, the
// leaf, across the certificate field and then the chain's values).
type HeaderError struct {
	Field string
	Cert  int // 0 when decoding failed
	Err   error
}

func (e *HeaderError) Error() string {
	if e.Cert > 0 {
		return fmt.Sprintf("parsing certificate %d of %s: %v", e.Cert, e.Field, e.Err)
	}
	return fmt.Sprintf("decoding %s: %v", e.Field, e.Err)
}

func (e *HeaderError) Unwrap() error { return e.Err }

// ParseHeader decodes and parses a certificate header: value, the field
// that carries the client certificate (see Decode), and chain, the values
// of the chain field (see DecodeChain), each in format f. An empty chain
// value (HAProxy's %[ssl_c_chain_der,base64] when the client sent no
// intermediates) holds no certificate and is passed over; an empty value is
// ErrEmpty. It returns the certificates, leaf first, and the format value
// was found in. At most MaxCerts certificates are taken in all. Errors are
// HeaderErrors, which name the field (by fields) or certificate at fault,
// and wrap the reason (ErrMalformed, ErrTooMany, ...).
//
// A caller that caches verdicts looks the raw values up first and calls
// ParseHeader only on a miss.
func ParseHeader(value string, chain []string, f Format, fields HeaderFields) ([]*x509.Certificate, Format, error) {
	ders, found, err := Decode(value, f)
	if err != nil {
		return nil, found, &HeaderError{Field: fields.Cert, Err: err}
	}
	for _, cv := range chain {
		if len(cv) <= MaxValueLen && trimOWS(cv) == "" {
			continue // no chain
		}
		more, err := DecodeChain(cv, f)
		if err != nil {
			return nil, found, &HeaderError{Field: fields.Chain, Err: err}
		}
		if len(ders)+len(more) > MaxCerts {
			return nil, found, &HeaderError{Field: fields.Chain, Err: ErrTooMany}
		}
		ders = append(ders, more...)
	}
	certs := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, found, &HeaderError{Field: fields.Cert, Cert: i + 1, Err: err}
		}
	}
	return certs, found, nil
}
