package adminapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/store"
)

func postKeyPair(a *AdminAPI, name, body string) (*httptest.ResponseRecorder, error) {
	return serveTest(a, httptest.NewRequest(http.MethodPost, "/mtls/keypairs/"+name, bytes.NewReader([]byte(body))))
}

// TestGenerateKeyPairFields: POST /mtls/keypairs/<name> takes the subject
// fields and subject alternative names; bad ones get 400 and store nothing.
func TestGenerateKeyPairFields(t *testing.T) {
	a, s := newTestAPI(t)
	w, err := postKeyPair(a, "full", `{"common_name":"gw","organization":"Acme","organizational_unit":"Payments",
		"country":"LK","province":"Western","locality":"Colombo","dns_names":["gw.example.org"],
		"ip_addresses":["192.0.2.7"],"uris":["spiffe://example.org/gw"],"emails":["ops@example.org"],
		"validity_days":90,"key_type":"p384"}`)
	if err != nil {
		t.Fatal(err)
	}
	var info store.KeyPairInfo
	if err := json.Unmarshal(w.Body.Bytes(), &info); err != nil {
		t.Fatal(err)
	}
	if info.Subject != "CN=gw,OU=Payments,O=Acme,L=Colombo,ST=Western,C=LK" || info.KeyType != "p384" {
		t.Fatalf("info %+v", info)
	}
	kp, err := s.KeyPair(context.Background(), "full")
	if err != nil {
		t.Fatal(err)
	}
	leaf := kp.TLSCertificate().Leaf
	if len(leaf.DNSNames) != 1 || len(leaf.IPAddresses) != 1 || len(leaf.URIs) != 1 || len(leaf.EmailAddresses) != 1 || leaf.IsCA {
		t.Fatalf("SANs %v %v %v %v, CA %v", leaf.DNSNames, leaf.IPAddresses, leaf.URIs, leaf.EmailAddresses, leaf.IsCA)
	}

	ca := demopki.Must(demopki.NewCA("Unit Root 4"))
	c := demopki.Must(ca.Issue(demopki.Options{CommonName: "up"}))
	upload, _ := json.Marshal(map[string]any{"certificate": string(c.CertPEM()), "private_key": string(c.KeyPEM()), "dns_names": []string{"a.example"}})
	for name, body := range map[string]string{
		"country":             `{"common_name":"x","country":"LKA"}`,
		"ip address":          `{"common_name":"x","ip_addresses":["10.0.0.256"]}`,
		"uri":                 `{"common_name":"x","uris":["not a uri"]}`,
		"email":               `{"common_name":"x","emails":["nobody"]}`,
		"dns name":            `{"common_name":"x","dns_names":["-bad-.example"]}`,
		"validity 0 < days":   `{"common_name":"x","validity_days":-5}`,
		"validity > 3650":     `{"common_name":"x","validity_days":3651}`,
		"ip_addresses type":   `{"common_name":"x","ip_addresses":"10.0.0.1"}`,
		"upload and generate": string(upload),
	} {
		_, err := postKeyPair(a, "bad", body)
		var apiErr caddy.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusBadRequest {
			t.Errorf("%s: %v, want 400", name, err)
		}
	}
	if _, err := s.KeyPair(context.Background(), "bad"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused key pair was stored: %v", err)
	}
}

// TestUploadKeyPairDER: the certificate of an upload may be base64 of DER;
// what is not PEM nor base64 of DER certificates gets 400.
func TestUploadKeyPairDER(t *testing.T) {
	a, s := newTestAPI(t)
	ca := demopki.Must(demopki.NewCA("Unit Root 5"))
	c := demopki.Must(ca.Issue(demopki.Options{CommonName: "der"}))
	body, _ := json.Marshal(map[string]string{"certificate": base64.StdEncoding.EncodeToString(c.Cert.Raw), "private_key": string(c.KeyPEM())})
	if _, err := postKeyPair(a, "der", string(body)); err != nil {
		t.Fatal(err)
	}
	w, err := serveTest(a, httptest.NewRequest(http.MethodGet, "/mtls/keypairs/der/certificate", nil))
	if err != nil || w.Body.String() != string(c.CertPEM()) {
		t.Fatalf("downloaded %q, %v", w.Body.String(), err)
	}
	body, _ = json.Marshal(map[string]string{"certificate": "bm90IGEgY2VydGlmaWNhdGU=", "private_key": string(c.KeyPEM())})
	_, err = postKeyPair(a, "bad", string(body))
	var apiErr caddy.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusBadRequest {
		t.Fatalf("base64 of no certificate: %v, want 400", err)
	}
	if _, err := s.KeyPair(context.Background(), "bad"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused key pair was stored: %v", err)
	}
}
