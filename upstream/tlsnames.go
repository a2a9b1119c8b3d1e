package upstream

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

// openSSLCiphers names Go's TLS 1.2 cipher suites as OpenSSL (and so nginx's
// `proxy_ssl_ciphers`, HAProxy's `ciphers`) names them. The insecure ones
// are listed too, so that naming one is refused as insecure, not unknown.
var openSSLCiphers = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,

	// insecure
	"ECDHE-ECDSA-AES128-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
	"ECDHE-RSA-AES128-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
	"ECDHE-ECDSA-RC4-SHA":       tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA,
	"ECDHE-RSA-RC4-SHA":         tls.TLS_ECDHE_RSA_WITH_RC4_128_SHA,
	"ECDHE-RSA-DES-CBC3-SHA":    tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA,
	"AES128-GCM-SHA256":         tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":         tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA256":             tls.TLS_RSA_WITH_AES_128_CBC_SHA256,
	"AES128-SHA":                tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                tls.TLS_RSA_WITH_AES_256_CBC_SHA,
	"DES-CBC3-SHA":              tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA,
	"RC4-SHA":                   tls.TLS_RSA_WITH_RC4_128_SHA,
}

// cipherSuiteIDs turns cipher suite names into Go's IDs, in their order,
// without repeats. A name is an IANA name as Caddy and Go give it
// (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) or an OpenSSL name as nginx
// users write it (ECDHE-ECDSA-AES128-GCM-SHA256); an argument may hold
// several OpenSSL names joined by `:`, as `proxy_ssl_ciphers` does. Unknown
// and insecure suites are errors naming them, and so are TLS 1.3 suites,
// which Go does not let a config choose.
func cipherSuiteIDs(names []string) ([]uint16, error) {
	var ids []uint16
	for _, arg := range names {
		for name := range strings.SplitSeq(arg, ":") {
			id, err := cipherSuiteID(name)
			if err != nil {
				return nil, err
			}
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

func cipherSuiteID(name string) (uint16, error) {
	for _, cs := range tls.InsecureCipherSuites() {
		if cs.Name == name || openSSLCiphers[name] == cs.ID {
			return 0, fmt.Errorf("cipher suite %q is insecure", name)
		}
	}
	// Go names the ChaCha20 suites with _SHA256; its older constants, and
	// some documents, without.
	if strings.HasSuffix(name, "_CHACHA20_POLY1305") {
		name += "_SHA256"
	}
	for _, cs := range caddytls.SupportedCipherSuites() {
		if cs.Name != name && openSSLCiphers[name] != cs.ID {
			continue
		}
		if !slices.Contains(cs.SupportedVersions, tls.VersionTLS12) {
			return 0, fmt.Errorf("cipher suite %q is a TLS 1.3 suite: Go always offers all three, they cannot be chosen", name)
		}
		return cs.ID, nil
	}
	return 0, fmt.Errorf("unknown cipher suite %q (want a TLS 1.2 suite by its IANA name, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, or its OpenSSL name, ECDHE-ECDSA-AES128-GCM-SHA256)", name)
}

// curveAliases are the other names of curves, as OpenSSL's and Java's
// settings give them.
var curveAliases = map[string]string{
	"p256":       "secp256r1",
	"p384":       "secp384r1",
	"p521":       "secp521r1",
	"prime256v1": "secp256r1",
	"p-256":      "secp256r1",
	"p-384":      "secp384r1",
	"p-521":      "secp521r1",
}

// curveIDs turns curve names (Caddy's caddytls.SupportedCurves: x25519,
// secp256r1, secp384r1, secp521r1, x25519mlkem768; and p256, p384, p521)
// into Go's IDs, in their order, without repeats.
func curveIDs(names []string) ([]tls.CurveID, error) {
	var ids []tls.CurveID
	for _, name := range names {
		key := strings.ToLower(name)
		if alias, ok := curveAliases[key]; ok {
			key = alias
		}
		id, ok := caddytls.SupportedCurves[key]
		if !ok {
			return nil, fmt.Errorf("unknown curve %q (want x25519, secp256r1, secp384r1, secp521r1 or x25519mlkem768)", name)
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// renegotiation maps `renegotiation` to Go's setting.
func renegotiation(level string) (tls.RenegotiationSupport, error) {
	switch level {
	case "never":
		return tls.RenegotiateNever, nil
	case "once":
		return tls.RenegotiateOnceAsClient, nil
	case "freely":
		return tls.RenegotiateFreelyAsClient, nil
	}
	return 0, fmt.Errorf("renegotiation %q: want never, once or freely", level)
}

// tlsVersion maps `tls1.2` or `tls1.3` to Go's version; which names the
// setting in errors.
func tlsVersion(which, name string) (uint16, error) {
	v, ok := caddytls.SupportedProtocols[name]
	if !ok || v < tls.VersionTLS12 {
		return 0, fmt.Errorf("%s %q: want tls1.2 or tls1.3", which, name)
	}
	return v, nil
}
