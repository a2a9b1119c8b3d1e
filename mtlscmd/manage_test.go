package mtlscmd

import (
	"bytes"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// TestAdminAPIRequestErrorText pins the error text of Caddy's
// AdminAPIRequest that parseAdminError reads: an answer with an error
// status becomes an *apiError with the API's message.
func TestAdminAPIRequestErrorText(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/json":
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error":"the certificate is stored already, as client \"alice\": conflict"}` + "\n"))
		case "/text":
			http.Error(w, "plain\nfailure", http.StatusBadGateway)
		default:
			_, _ = w.Write([]byte(`[]`))
		}
	}))
	defer srv.Close()
	c := &adminClient{addr: srv.Listener.Addr().String()}

	_, err := c.call(http.MethodPut, "/json", map[string]string{"certificate": "x"})
	var apiErr *apiError
	if !errors.As(err, &apiErr) || apiErr.Status != 409 || apiErr.Message != `the certificate is stored already, as client "alice": conflict` {
		t.Fatalf("409: %#v", err)
	}
	if err.Error() != `HTTP 409: the certificate is stored already, as client "alice": conflict` {
		t.Fatalf("409's text: %v", err)
	}
	_, err = c.call(http.MethodGet, "/text", nil)
	if !errors.As(err, &apiErr) || apiErr.Status != 502 || apiErr.Message != "plain\nfailure" {
		t.Fatalf("502: %#v", err)
	}
	if body, err := c.call(http.MethodGet, "/list", nil); err != nil || string(body) != "[]" {
		t.Fatalf("200: %q %v", body, err)
	}

	// Nothing listening: not an API error, and it says so.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()
	_, err = (&adminClient{addr: down}).call(http.MethodGet, "/mtls/clients", nil)
	if err == nil || errors.As(err, &apiErr) || !strings.HasPrefix(err.Error(), "admin endpoint "+down+" not reachable: ") {
		t.Fatalf("down: %v", err)
	}
}

func TestTables(t *testing.T) {
	notAfter := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var buf bytes.Buffer
	err := writeClients(&buf, []store.ClientInfo{
		{Alias: "alice", Tier: "gold", Subject: "CN=alice", Fingerprint: strings.Repeat("ab", 32), NotAfter: notAfter, Groups: []string{"a", "b"},
			Certificates: []store.CertificateInfo{{}, {}}},
		{Alias: "a-much-longer-alias", Subject: "CN=evil\n\tname", Fingerprint: "12", NotAfter: notAfter},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"ALIAS                TIER  SUBJECT        FINGERPRINT       NOT_AFTER             GROUPS  CERTS\n" +
		"alice                gold  CN=alice       abababababababab  2030-01-02T03:04:05Z  a,b     2\n" +
		"a-much-longer-alias  -     CN=evil??name  12                2030-01-02T03:04:05Z  -       1\n"
	if buf.String() != want {
		t.Fatalf("clients table:\n%s\nwant:\n%s", buf.String(), want)
	}

	buf.Reset()
	if err := writeKeyPairs(&buf, nil); err != nil || buf.String() != "NAME  KEY_TYPE  SUBJECT  FINGERPRINT  NOT_AFTER\n" {
		t.Fatalf("empty key pairs table: %q %v", buf.String(), err)
	}
}

// TestDescribeUsages: inspect shows basic constraints, key usage and the
// extended key usages, and says which rule refuses.
func TestDescribeUsages(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("inspect CA"))
	server := demopki.Must(ca.Issue(demopki.Options{CommonName: "server", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
	var b strings.Builder
	describe(&b, ca.Cert)
	describe(&b, server.Cert)
	out := b.String()
	for _, want := range []string{"CA:           yes (refused as a leaf under a trust pool: ca_certificate", "keyCertSign", "CA:           no", "serverAuth, (no clientAuth: refused as eku)", "digitalSignature"} {
		if !strings.Contains(out, want) {
			t.Fatalf("inspect output lacks %q:\n%s", want, out)
		}
	}
}
