package metrics

import (
	"context"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCounters(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := Register(ctx); err != nil {
		t.Fatalf("registering twice: %v", err)
	}
	before := testutil.ToFloat64(requests.WithLabelValues("rejected", "revoked", "header"))
	RequestCounter("rejected", "revoked", "header").Inc()
	if got := testutil.ToFloat64(requests.WithLabelValues("rejected", "revoked", "header")) - before; got != 1 {
		t.Fatalf("revoked/header moved by %v", got)
	}
	Handshake("a:1", "default", false)
	if got := testutil.ToFloat64(handshakes.WithLabelValues("a:1", "default", "error")); got != 1 {
		t.Fatalf("handshake errors %v", got)
	}
	CRLUpdate("/etc/ca.crl", CRLOlder)
	if got := testutil.ToFloat64(crlUpdates.WithLabelValues("/etc/ca.crl", CRLOlder)); got != 1 {
		t.Fatalf("older CRLs %v", got)
	}
	before = testutil.ToFloat64(ocspAnswers.WithLabelValues(OCSPError))
	OCSPAnswer(OCSPError)
	if got := testutil.ToFloat64(ocspAnswers.WithLabelValues(OCSPError)) - before; got != 1 {
		t.Fatalf("OCSP errors moved by %v", got)
	}
}
