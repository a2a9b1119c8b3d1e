// Package testpeer runs the real peers that tests talk to: a Go TLS server
// that requires client certificates, as a gateway's backend.
package testpeer

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// Backend is an HTTPS server on loopback that requires a client certificate
// issued by its client CA and answers "<name> <client common name>", with
// the protocol it was reached over in the X-Backend-Proto header.
type Backend struct {
	Port     int
	Addr     string        // localhost:<port>
	ServerCA *demopki.Cert // the CA of its server certificate (for localhost)
	Server   *demopki.Cert // its server certificate
	healthCN atomic.Value
	open     atomic.Int64 // connections open now
	requests atomic.Int64 // requests answered
}

// StartBackend starts a backend for the test; it stops when the test ends.
func StartBackend(t testing.TB, name string, clientCA *demopki.Cert) *Backend {
	t.Helper()
	b := &Backend{ServerCA: demopki.Must(demopki.NewCA(name + " server CA"))}
	server := demopki.Must(b.ServerCA.Issue(demopki.Options{CommonName: "localhost", DNSNames: []string{"localhost", name + ".internal"}}))
	b.Server = server
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		cn := r.TLS.PeerCertificates[0].Subject.CommonName
		if r.URL.Path == "/health" {
			b.healthCN.Store(cn)
		}
		w.Header().Set("X-Backend-Proto", r.Proto)
		fmt.Fprintf(w, "%s %s", name, cn)
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    demopki.Pool(clientCA),
	}
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			b.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			b.open.Add(-1)
		}
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	b.Port = srv.Listener.Addr().(*net.TCPAddr).Port
	b.Addr = net.JoinHostPort("localhost", strconv.Itoa(b.Port))
	return b
}

// OpenConns returns how many client connections are open now.
func (b *Backend) OpenConns() int { return int(b.open.Load()) }

// Requests returns how many requests it answered.
func (b *Backend) Requests() int { return int(b.requests.Load()) }

// HealthCN returns the client common name of the last request to /health.
func (b *Backend) HealthCN() string {
	cn, _ := b.healthCN.Load().(string)
	return cn
}
