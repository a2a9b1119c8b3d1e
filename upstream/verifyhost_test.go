package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/keystore"
)

// cnOnlyBackend is an HTTPS server on loopback whose certificate, issued by
// its own CA, names the host in its common name only (no SAN), as
// `keytool -genkeypair -dname CN=localhost` makes it; it answers "cn-only".
type cnOnlyBackend struct {
	addr       string // localhost:<port>
	caFile     string // its CA, PEM
	otherCA    string // a CA that did not issue it, PEM
	expiredCA  string // the CA of expired's certificate, PEM
	expiredTo  string // localhost:<port> of a backend whose CN-only certificate has expired
	serverCert *demopki.Cert
}

func startCNOnlyBackend(t *testing.T) *cnOnlyBackend {
	t.Helper()
	dir := t.TempDir()
	start := func(c *demopki.Cert) string {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, "cn-only")
		}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{c.TLSCertificate()}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return net.JoinHostPort("localhost", strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port))
	}
	write := func(name string, c *demopki.Cert) string {
		cert, _, err := c.WriteFiles(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	ca := demopki.Must(demopki.NewCA("CN-only server CA"))
	b := &cnOnlyBackend{serverCert: demopki.Must(ca.Issue(demopki.Options{CommonName: "localhost", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))}
	if len(b.serverCert.Cert.DNSNames) != 0 || len(b.serverCert.Cert.IPAddresses) != 0 {
		t.Fatal("the backend's certificate has a SAN")
	}
	b.addr = start(b.serverCert)
	b.caFile = write("cn-ca", ca)
	b.otherCA = write("other-ca", demopki.Must(demopki.NewCA("someone else")))
	oldCA := demopki.Must(demopki.NewCA("expired server CA"))
	b.expiredCA = write("old-ca", oldCA)
	b.expiredTo = start(demopki.Must(oldCA.Issue(demopki.Options{CommonName: "localhost",
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})))
	return b
}

func trustFile(file string) string {
	return `"trust_pool":{"provider":"file","pem_files":["` + file + `"]}`
}

// TestVerifyHostnameOff: with verify_hostname false a backend whose
// certificate names it only in its common name (which Go refuses otherwise)
// is reached; its chain and validity are still verified, so an untrusted or
// expired one is refused with a handshake error that says why.
func TestVerifyHostnameOff(t *testing.T) {
	b := startCNOnlyBackend(t)
	for _, tc := range []struct {
		name, addr, profile string
		want                func(error) bool
		why                 string
	}{
		{"on by default", b.addr, trustFile(b.caFile), isCommonNameOnly, "legacy Common Name"},
		{"on when said", b.addr, trustFile(b.caFile) + `,"verify_hostname":true`, isCommonNameOnly, "legacy Common Name"},
		{"off", b.addr, trustFile(b.caFile) + `,"verify_hostname":false`, nil, ""},
		{"off, untrusted", b.addr, trustFile(b.otherCA) + `,"verify_hostname":false`, isUnknownAuthority, "unknown authority"},
		{"off, system roots", b.addr, `"verify_hostname":false`, isUnknownAuthority, "unknown authority"},
		{"off, expired", b.expiredTo, trustFile(b.expiredCA) + `,"verify_hostname":false`, isExpired, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := mustTransport(t, `{"profiles":[{"servers":["`+tc.addr+`"],`+tc.profile+`}]}`)
			got, err := proxy(tr, tc.addr, nil)
			if tc.want == nil {
				if err != nil || got != "cn-only" {
					t.Fatalf("%q %v", got, err)
				}
				return
			}
			if err == nil || !tc.want(err) || !isHandshakeError(err) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("%q %v (%T): want a handshake error saying %q", got, err, errors.Unwrap(err), tc.why)
			}
		})
	}
}

// TestVerifyHostnameInherited: the transport's verify_hostname is the
// default of its profiles (a profile may turn it on again) and applies to
// upstreams without a profile, whose chain the base trust pool still
// verifies.
func TestVerifyHostnameInherited(t *testing.T) {
	b := startCNOnlyBackend(t)
	profile := func(extra string) string {
		return `{"servers":["` + b.addr + `"],` + trustFile(b.caFile) + extra + `}`
	}
	base := func(ca string) string { return `"tls":{"ca":{"provider":"file","pem_files":["` + ca + `"]}}` }
	for _, tc := range []struct {
		name, config string
		want         func(error) bool
	}{
		{"profile inherits off", `{"verify_hostname":false,"profiles":[` + profile("") + `]}`, nil},
		{"profile turns it on", `{"verify_hostname":false,"profiles":[` + profile(`,"verify_hostname":true`) + `]}`, isCommonNameOnly},
		{"base off", `{"verify_hostname":false,` + base(b.caFile) + `}`, nil},
		{"base off, untrusted", `{"verify_hostname":false,` + base(b.otherCA) + `}`, isUnknownAuthority},
		{"base on", `{` + base(b.caFile) + `}`, isCommonNameOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := mustTransport(t, tc.config)
			got, err := proxy(tr, b.addr, nil)
			switch {
			case tc.want == nil && (err != nil || got != "cn-only"):
				t.Fatalf("%q %v", got, err)
			case tc.want != nil && (err == nil || !tc.want(err)):
				t.Fatalf("%q %v (%T)", got, err, errors.Unwrap(err))
			}
		})
	}
}

// TestVerifyHostnameOffKeepsTheRest: with verify_hostname false a backend
// reached by a name its certificate does not carry (127.0.0.1, its
// certificate for localhost) is reached, with the gateway's client
// certificate, and revocation checking still refuses it once revoked.
func TestVerifyHostnameOffKeepsTheRest(t *testing.T) {
	f := newFixture(t)
	_, port, _ := net.SplitHostPort(f.backendA.Addr)
	byIP := net.JoinHostPort("127.0.0.1", port)
	cfg := strings.ReplaceAll(f.config(""), `"`+f.backendA.Addr+`"`, `"`+byIP+`"`)
	var hostErr x509.HostnameError
	if _, err := proxy(mustTransport(t, cfg), byIP, nil); !errors.As(err, &hostErr) {
		t.Fatalf("by IP, name verified: %v", err)
	}
	off := strings.Replace(cfg, `"servers":["`+byIP+`"]`, `"servers":["`+byIP+`"],"verify_hostname":false`, 1)
	if got, err := proxy(mustTransport(t, off), byIP, nil); err != nil || got != "a gateway-for-a" {
		t.Fatalf("by IP, name not verified: %q %v", got, err)
	}
	crl := filepath.Join(f.dir, "backend-a.crl")
	if err := f.backendA.ServerCA.WriteCRL(crl, time.Now().Add(time.Hour), f.backendA.Server); err != nil {
		t.Fatal(err)
	}
	revoked := strings.Replace(off, `"verify_hostname":false`, `"verify_hostname":false,"revocation":{"mode":"strict","crl":["`+crl+`"]}`, 1)
	if _, err := proxy(mustTransport(t, revoked), byIP, nil); err == nil || !strings.Contains(err.Error(), "revocation status revoked") {
		t.Fatalf("revoked backend, name not verified: %v", err)
	}
}

// TestVerifyHostnameProfilesFile: verify_hostname in a JSON profiles file.
func TestVerifyHostnameProfilesFile(t *testing.T) {
	b := startCNOnlyBackend(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		extra string
		ok    bool
	}{{`,"verify_hostname":false`, true}, {``, false}} {
		path := filepath.Join(dir, "profiles.json")
		writeFile(t, path, `{"profiles":[{"servers":["`+b.addr+`"],`+trustFile(b.caFile)+tc.extra+`}]}`)
		tr := mustTransport(t, `{"profiles_file":"`+path+`"}`)
		got, err := proxy(tr, b.addr, nil)
		if ok := err == nil && got == "cn-only"; ok != tc.ok {
			t.Fatalf("profile%s: %q %v", tc.extra, got, err)
		}
	}
}

func isCommonNameOnly(err error) bool {
	var he x509.HostnameError
	return errors.As(err, &he) && strings.Contains(err.Error(), "legacy Common Name")
}

func isUnknownAuthority(err error) bool {
	var ua x509.UnknownAuthorityError
	return errors.As(err, &ua)
}

func isExpired(err error) bool {
	var ci x509.CertificateInvalidError
	return errors.As(err, &ci) && ci.Reason == x509.Expired
}

// TestKeystoreTypeCompat: a PKCS#12 keystore declared JKS (and a JKS
// declared PKCS12) is read as what it is, as Java 9+ does, with a debug
// line naming the file and both types.
func TestKeystoreTypeCompat(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ from, to string }{
		{`"password":"p12pass"`, `"password":"p12pass","type":"jks"`},
		{`{"file":"` + f.files["gwB.p12"] + `","password":"p12pass"}`, `{"file":"` + f.files["clients.jks"] + `","password":"storepass","type":"pkcs12","alias":"gateway"}`},
	} {
		tr := mustTransport(t, strings.Replace(f.config(""), tc.from, tc.to, 1))
		if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
			t.Fatalf("%s: %q %v", tc.to, got, err)
		}
	}

	core, logs := observer.New(zapcore.DebugLevel)
	logTypeCompat(zap.New(core), "/etc/gw.jks", keystore.JKS, keystore.PKCS12)
	logTypeCompat(zap.New(core), "/etc/gw.p12", keystore.PKCS12, keystore.PKCS12)
	logTypeCompat(zap.New(core), "/etc/gw.keystore", keystore.Auto, keystore.JKS)
	entries := logs.All()
	if len(entries) != 1 || entries[0].Level != zapcore.DebugLevel {
		t.Fatalf("%d log lines: %v", len(entries), entries)
	}
	if fields := entries[0].ContextMap(); fields["file"] != "/etc/gw.jks" || fields["declared"] != "jks" || fields["read_as"] != "pkcs12" {
		t.Fatalf("fields %v", fields)
	}
}
